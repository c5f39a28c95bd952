//! A run over part of the walk space: a set of walk ids, drawn from a seeded
//! RNG (soak rounds) or given. A sampled run keeps every semantic of a full
//! run (serial actions at their barriers, once per epoch that has a sampled
//! walk); it only skips the walks outside the sample, and the epochs with
//! none.

use std::ops::Range;
use std::sync::Arc;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use super::pieces::Pieces;
use super::space::Blocks;

/// Which ids a seed draws ([`WalkSample::draw`]): a soak trace records a
/// sampled round as its seed (plus its exceptions), so its readers redraw
/// it and the sampler is part of the trace format; bump this whenever a
/// seed would draw other ids. Version 1 was `rand::seq::index::sample` over
/// ChaCha8; version 2 draws with repeats, radix-sorts, deduplicates and
/// tops up (`distinct_sorted`), and above half the space draws the ids left
/// out.
pub(crate) const SAMPLER_VERSION: u32 = 2;

/// Walk ids, sorted and unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkSample {
    ids: Arc<[u64]>,
}

/// Why a sample does not fit a space.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SampleError {
    /// An id is outside the space.
    #[error("walk {id} is outside the walk space of {}", super::count(*.size, "walk"))]
    Outside {
        /// The id.
        id: u64,
        /// The space's size.
        size: u64,
    },
    /// Nothing to run.
    #[error("the sample is empty")]
    Empty,
    /// A run directory covers a whole space.
    #[error("a sampled run cannot be traced into a run directory (soak runs trace their rounds)")]
    NotTraceable,
}

impl WalkSample {
    /// The given ids (in any order, duplicates ignored), checked against a
    /// space of `size` walks.
    pub fn new(mut ids: Vec<u64>, size: u64) -> Result<Self, SampleError> {
        ids.sort_unstable();
        ids.dedup();
        if let Some(&id) = ids.last().filter(|&&id| id >= size) {
            return Err(SampleError::Outside { id, size });
        }
        if ids.is_empty() {
            return Err(SampleError::Empty);
        }
        Ok(WalkSample { ids: ids.into() })
    }

    /// `count` distinct ids of a space of `size` walks, drawn uniformly by a
    /// ChaCha8 RNG seeded with `seed` (sampler [`SAMPLER_VERSION`]): the
    /// same seed gives the same sample on every machine and build. Asking
    /// for at least `size` gives them all.
    ///
    /// Up to half the space, the ids are drawn (with repeats), radix-sorted
    /// and deduplicated, and the repeats are made up by further draws until
    /// `count` are distinct; above half, the ids left out are drawn that
    /// way and the sample is the rest. No hash set: the cost is a few
    /// nanoseconds per id, sparse or dense.
    pub fn draw(size: u64, count: u64, seed: u64) -> Result<Self, SampleError> {
        if count >= size {
            return WalkSample::new((0..size).collect(), size);
        }
        if count == 0 {
            return Err(SampleError::Empty);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ids: Arc<[u64]> = if count <= size / 2 {
            if size <= 1 << 32 {
                // The same ids, sorted as `u32`s: half the bytes for the
                // radix sort to move (0.8x the time of the whole draw).
                let ids = distinct_sorted(&mut rng, size, count, |id| id as u32);
                ids.into_iter().map(u64::from).collect()
            } else {
                distinct_sorted(&mut rng, size, count, |id| id).into()
            }
        } else {
            let out = distinct_sorted(&mut rng, size, size - count, |id| id);
            let mut ids = Vec::with_capacity(count as usize);
            let mut next = 0;
            for left_out in out.into_iter().chain([size]) {
                ids.extend(next..left_out);
                next = left_out + 1;
            }
            ids.into()
        };
        debug_assert_eq!(ids.len() as u64, count);
        Ok(WalkSample { ids })
    }

    /// Walks in the sample.
    pub fn len(&self) -> u64 {
        self.ids.len() as u64
    }

    /// Whether it is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids, ascending.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// The ids, shared.
    pub(crate) fn shared_ids(&self) -> Arc<[u64]> {
        Arc::clone(&self.ids)
    }

    /// How many sampled walks lie in `range`.
    pub fn count_in(&self, range: &Range<u64>) -> u64 {
        self.cursor(range).left() as u64
    }

    /// The sampled walks of `range` as id ranges: runs of consecutive ids,
    /// cut at block boundaries (so each is stored and taken whole).
    pub fn pieces(&self, range: &Range<u64>, blocks: &Blocks) -> Vec<Range<u64>> {
        let mut cursor = self.cursor(range);
        // A piece per id, at most (a sparse sample's ids are all apart).
        let mut out: Vec<Range<u64>> = Vec::with_capacity(cursor.left());
        self.take_pieces(&mut cursor, u64::MAX, blocks, &mut out);
        out
    }

    /// The sampled walks of `range`, to be taken a few at a time
    /// ([`WalkSample::take_pieces`]).
    pub(crate) fn cursor(&self, range: &Range<u64>) -> SampleCursor {
        let next = self.ids.partition_point(|&id| id < range.start);
        let end = self.ids.partition_point(|&id| id < range.end);
        SampleCursor { next, end }
    }

    /// Appends to `out` the next pieces of `cursor` (as
    /// [`WalkSample::pieces`] makes them) until they hold at least `walks`
    /// walks or none is left; returns the walks taken.
    pub(crate) fn take_pieces(
        &self,
        cursor: &mut SampleCursor,
        walks: u64,
        blocks: &Blocks,
        out: &mut Vec<Range<u64>>,
    ) -> u64 {
        let ids = &self.ids[cursor.next..cursor.end];
        let mut taken = 0;
        let mut last: Option<Range<u64>> = None;
        for &id in ids {
            match &mut last {
                Some(piece) if piece.end == id && blocks.block_of(id).start < id => piece.end += 1,
                _ => {
                    if taken >= walks {
                        break;
                    }
                    out.extend(last.replace(id..id + 1));
                }
            }
            taken += 1;
        }
        out.extend(last);
        cursor.next += taken as usize;
        taken
    }

    /// The next `walks` sampled walks of `cursor` (fewer if fewer are
    /// left) as a window into the sample: a piece per walk, made by no one
    /// until something needs them as ranges. For walks whose states are
    /// never stored (they start and end in one epoch), so blocks do not
    /// matter.
    pub(crate) fn take_window(&self, cursor: &mut SampleCursor, walks: u64) -> Pieces {
        let end = cursor.end.min(cursor.next.saturating_add(walks as usize));
        let window = cursor.next..end;
        cursor.next = end;
        Pieces::Sampled { ids: Arc::clone(&self.ids), window }
    }
}

/// Where [`WalkSample::take_pieces`] goes on from: the sampled walks of a
/// range not taken yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SampleCursor {
    next: usize,
    end: usize,
}

impl SampleCursor {
    /// Sampled walks not taken.
    pub(crate) fn left(&self) -> usize {
        self.end - self.next
    }
}

/// `count` distinct ids below `size` (`count` at most half of it), sorted:
/// `count` draws, sorted and deduplicated, then as many more draws as ids
/// were repeated, merged in, until none is missing. The ids and their
/// order of drawing are part of [`SAMPLER_VERSION`].
/// The ids are held as `K`, each draw made one by `narrow` (a `u32` for
/// a space of at most 2^32 walks: the same ids).
fn distinct_sorted<K: radsort::Key + Ord + Copy + Default>(
    rng: &mut ChaCha8Rng,
    size: u64,
    count: u64,
    narrow: impl Fn(u64) -> K,
) -> Vec<K> {
    let below = Below::new(size);
    let mut ids: Vec<K> = (0..count).map(|_| narrow(below.draw(rng))).collect();
    radsort::sort(&mut ids);
    ids.dedup();
    while (ids.len() as u64) < count {
        let missing = count - ids.len() as u64;
        let mut more: Vec<K> = (0..missing).map(|_| narrow(below.draw(rng))).collect();
        radsort::sort(&mut more);
        more.dedup();
        more.retain(|id| ids.binary_search(id).is_err());
        merge_into(&mut ids, &more);
    }
    ids
}

/// Merges `more` (sorted, none in `ids`) into `ids` (sorted), in place:
/// from the back, so each id moves once.
fn merge_into<K: Ord + Copy + Default>(ids: &mut Vec<K>, more: &[K]) {
    let old = ids.len();
    ids.resize(old + more.len(), K::default());
    let (mut i, mut j, mut k) = (old, more.len(), ids.len());
    while j > 0 {
        k -= 1;
        if i > 0 && ids[i - 1] > more[j - 1] {
            i -= 1;
            ids[k] = ids[i];
        } else {
            j -= 1;
            ids[k] = more[j];
        }
    }
}

/// Uniform draws below `n` from 64-bit words (Lemire's multiply-shift with
/// rejection, "Fast random integer generation in an interval", 2019):
/// unbiased, one word per draw but for a rejection once in 2^64 / `n`
/// words, and defined here rather than by `rand`'s range sampling, whose
/// algorithm may change between its versions.
struct Below {
    n: u64,
    /// Low halves below this are rejected: `2^64 mod n`.
    threshold: u64,
}

impl Below {
    fn new(n: u64) -> Self {
        debug_assert!(n > 0);
        Below { n, threshold: n.wrapping_neg() % n }
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> u64 {
        loop {
            let wide = u128::from(rng.next_u64()) * u128::from(self.n);
            if wide as u64 >= self.threshold {
                return (wide >> 64) as u64;
            }
        }
    }
}

/// The seed of round `round` of a soak seeded with `seed` (SplitMix64 of
/// their sum): each round's sample is reproducible on its own.
pub fn round_seed(seed: u64, round: u64) -> u64 {
    let mut z = seed.wrapping_add(round.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_distinct_in_range_and_repeatable() {
        let a = WalkSample::draw(1_000_000, 500, 7).unwrap();
        assert_eq!(a.len(), 500);
        assert!(a.ids().windows(2).all(|w| w[0] < w[1]));
        assert!(a.ids().iter().all(|&id| id < 1_000_000));
        assert_eq!(a, WalkSample::draw(1_000_000, 500, 7).unwrap());
        assert_ne!(a, WalkSample::draw(1_000_000, 500, 8).unwrap());
        assert_eq!(WalkSample::draw(10, 50, 1).unwrap().len(), 10);
        assert_ne!(round_seed(1, 0), round_seed(1, 1));
    }

    /// Sampler version 2's ids for a fixed seed, committed: a change of
    /// the draw (or of ChaCha8's stream) changes which walks a soak trace's
    /// seed names, and must come with a new [`SAMPLER_VERSION`].
    #[test]
    fn a_seed_draws_the_same_ids_as_committed() {
        assert_eq!(SAMPLER_VERSION, 2);
        let sparse = WalkSample::draw(1_000_000_000, 1_000, 42).unwrap();
        assert_eq!(&sparse.ids()[..8], &SPARSE_PREFIX);
        // Ids above 2^32 (sorted as u64s; below, as u32s).
        let wide = WalkSample::draw(1 << 40, 1_000, 42).unwrap();
        assert_eq!(&wide.ids()[..4], &WIDE_PREFIX);
        let dense = WalkSample::draw(1_000, 990, 42).unwrap();
        let left_out: Vec<u64> =
            (0..1_000).filter(|id| dense.ids().binary_search(id).is_err()).collect();
        assert_eq!(left_out, DENSE_LEFT_OUT);
    }

    const SPARSE_PREFIX: [u64; 8] =
        [614_616, 1_532_996, 4_170_553, 6_231_255, 6_508_467, 6_528_518, 8_088_679, 10_923_677];
    const WIDE_PREFIX: [u64; 4] = [675_778_112, 1_685_547_591, 4_585_571_914, 6_851_338_015];
    const DENSE_LEFT_OUT: [u64; 10] = [149, 238, 288, 308, 427, 627, 681, 771, 803, 950];

    /// Dense draws (the ids left out drawn) and sparse ones with many
    /// repeats (topped up): `count` distinct ids, sorted, in range.
    #[test]
    fn dense_and_crowded_draws_have_count_distinct_ids() {
        for (size, count) in [(20, 10), (20, 11), (20, 19), (3, 1), (3, 2), (2, 1), (1_000, 999)] {
            for seed in 0..50 {
                let ids = WalkSample::draw(size, count, seed).unwrap();
                assert_eq!(ids.len(), count, "{count} of {size}, seed {seed}");
                assert!(ids.ids().windows(2).all(|w| w[0] < w[1]));
                assert!(ids.ids().iter().all(|&id| id < size));
            }
        }
        assert_eq!(WalkSample::draw(10, 0, 1), Err(SampleError::Empty));
        assert_eq!(WalkSample::draw(0, 5, 1), Err(SampleError::Empty));
    }

    /// Every id is drawn about equally often over many seeds, sparse (3 of
    /// 10) and dense (7 of 10): 3,000 draws each, so each id's count is
    /// 900 or 2,100 give or take 25 (one standard deviation); a bias of a
    /// tenth on one id (an off-by-one at either end) is 90 off.
    #[test]
    fn every_id_is_drawn_about_equally_often() {
        for count in [3, 7] {
            let mut hits = [0u32; 10];
            for seed in 0..3_000 {
                for &id in WalkSample::draw(10, count, seed).unwrap().ids() {
                    hits[id as usize] += 1;
                }
            }
            let expected = 300 * count as u32;
            assert!(hits.iter().all(|&h| h.abs_diff(expected) < 100), "{count} of 10: {hits:?}");
        }
    }

    /// Held as `u32`s or as `u64`s, the draws give the same ids (up to a
    /// space of 2^32 walks; crowded draws topped up too).
    #[test]
    fn narrow_and_wide_draws_give_the_same_ids() {
        for (size, count) in [(1 << 32, 5_000), ((1 << 32) - 1, 3), (1_000, 500), (64, 32)] {
            for seed in 0..20 {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let narrow = distinct_sorted(&mut rng, size, count, |id| id as u32);
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let wide = distinct_sorted(&mut rng, size, count, |id| id);
                assert!(narrow.iter().map(|&id| u64::from(id)).eq(wide.iter().copied()));
                assert_eq!(wide.len() as u64, count, "{count} of {size}, seed {seed}");
            }
        }
    }

    #[test]
    fn merging_keeps_ids_sorted() {
        let mut ids = vec![2, 5, 9];
        merge_into(&mut ids, &[0, 3, 4, 10]);
        assert_eq!(ids, vec![0, 2, 3, 4, 5, 9, 10]);
        merge_into(&mut ids, &[]);
        assert_eq!(ids.len(), 7);
        let mut empty = Vec::new();
        merge_into(&mut empty, &[1]);
        assert_eq!(empty, vec![1]);
    }

    /// Pieces taken a few walks at a time (as batches take them) are the
    /// pieces of the whole range, each whole, and the takes hold at least
    /// the walks asked for unless the range ran out.
    #[test]
    fn pieces_taken_a_few_walks_at_a_time_are_the_pieces() {
        let sample = WalkSample::draw(400, 150, 3).unwrap();
        let blocks = Blocks::new(400, 8);
        for range in [0..400, 17..333, 100..101] {
            let all = sample.pieces(&range, &blocks);
            for walks in [1, 2, 5, 64] {
                let mut cursor = sample.cursor(&range);
                let (mut taken, mut pieces) = (0, Vec::new());
                while cursor.left() > 0 {
                    let before = pieces.len();
                    let got = sample.take_pieces(&mut cursor, walks, &blocks, &mut pieces);
                    let span: u64 = pieces[before..].iter().map(|p| p.end - p.start).sum();
                    assert_eq!(got, span);
                    assert!(got >= walks || cursor.left() == 0, "{got} of {walks}");
                    taken += got;
                }
                assert_eq!(pieces, all, "{range:?}, {walks} at a time");
                assert_eq!(taken, sample.count_in(&range));
            }
        }
    }

    /// Windows taken a few walks at a time are the range's sampled ids, in
    /// order, each once.
    #[test]
    fn windows_taken_a_few_walks_at_a_time_are_the_sampled_ids() {
        let sample = WalkSample::draw(400, 150, 3).unwrap();
        for range in [0..400, 17..333, 100..101] {
            let all: Vec<u64> =
                sample.ids().iter().copied().filter(|id| range.contains(id)).collect();
            for walks in [1, 2, 64] {
                let mut cursor = sample.cursor(&range);
                let mut taken: Vec<u64> = Vec::new();
                while cursor.left() > 0 {
                    let window = sample.take_window(&mut cursor, walks);
                    assert!(window.walks() == walks || cursor.left() == 0);
                    taken.extend(window.sampled_ids().expect("a window"));
                }
                assert_eq!(taken, all, "{range:?}, {walks} at a time");
            }
        }
    }

    #[test]
    fn pieces_are_consecutive_runs_within_blocks() {
        let sample = WalkSample::new(vec![9, 3, 4, 5, 8, 3], 20).unwrap();
        assert_eq!(sample.ids(), &[3, 4, 5, 8, 9]);
        let blocks = Blocks::new(20, 4); // blocks 0..4, 4..8, 8..12, ...
        assert_eq!(sample.pieces(&(0..20), &blocks), vec![3..4, 4..6, 8..10]);
        assert_eq!(sample.pieces(&(4..9), &blocks), vec![4..6, 8..9]);
        assert_eq!(sample.count_in(&(4..9)), 3);
        assert_eq!(WalkSample::new(vec![20], 20), Err(SampleError::Outside { id: 20, size: 20 }));
    }
}
