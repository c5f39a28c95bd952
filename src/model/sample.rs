//! A run over part of the walk space: a set of walk ids, drawn from a seeded
//! RNG (soak rounds) or given. A sampled run keeps every semantic of a full
//! run (serial actions at their barriers, once per epoch that has a sampled
//! walk); it only skips the walks outside the sample, and the epochs with
//! none.

use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use super::pieces::Pieces;
use super::space::Blocks;

/// Which ids a seed draws ([`WalkSample::draw`]): a soak trace records a
/// sampled round as its seed (plus its exceptions), so its readers redraw
/// it and the sampler is part of the trace format; bump this whenever a
/// seed would draw other ids, and keep the old sampler for the traces it
/// drew ([`Sampler`]). Version 1 was `rand::seq::index::sample` over
/// ChaCha8; version 2 draws with repeats, radix-sorts, deduplicates and
/// tops up ([`distinct_sorted`]); version 3 keeps each id with a fixed
/// chance, by geometric skips over 64 segments of the space each drawn
/// from its own stream (in parallel), then trims to the count
/// ([`bernoulli_sorted`]). Above half the space, versions 2 and 3 draw the
/// ids left out.
pub(crate) const SAMPLER_VERSION: u32 = Sampler::CURRENT.version();

/// A sampler this build can draw with: its own ([`Sampler::CURRENT`]) and
/// the ones before it whose traces it still reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sampler {
    /// Sort, deduplicate, top up: one thread.
    V2,
    /// Geometric skips over fixed segments, then a trim: threads.
    V3,
}

impl Sampler {
    /// The one this build records.
    pub(crate) const CURRENT: Sampler = Sampler::V3;

    /// The sampler of a recorded version, if this build has it.
    pub(crate) fn of_version(version: u32) -> Option<Sampler> {
        match version {
            2 => Some(Sampler::V2),
            3 => Some(Sampler::V3),
            _ => None,
        }
    }

    /// Its version, as traces record it.
    pub(crate) const fn version(self) -> u32 {
        match self {
            Sampler::V2 => 2,
            Sampler::V3 => 3,
        }
    }
}

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
    /// More walks than a sample holds.
    #[error("a sample of {count} walks is more than a sample holds ({max} walks)")]
    TooLarge {
        /// The walks asked for.
        count: u64,
        /// The most a sample holds.
        max: u64,
    },
    /// A sampler this build does not have.
    #[error("sampler version {version} is not one this build has (it has versions 2 and 3)")]
    Sampler {
        /// The version asked for.
        version: u32,
    },
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

    /// `count` distinct ids of a space of `size` walks, drawn uniformly by
    /// ChaCha8 RNGs seeded from `seed` (sampler [`SAMPLER_VERSION`]): the
    /// same seed gives the same sample on every machine and build, whatever
    /// its number of threads. Asking for at least `size` gives them all.
    ///
    /// Each id of the space is kept with the same chance, a little above
    /// `count / size`, found by geometric skips from kept id to kept id
    /// (no sort, no hash set); the space is cut into 64 segments, each
    /// drawn from its own stream, so large samples are drawn on every CPU.
    /// Then as many of the kept ids as are over `count` are dropped,
    /// chosen uniformly: the sample is uniform among the sets of `count`
    /// ids. Above half the space, the ids left out are drawn that way and
    /// the sample is the rest.
    pub fn draw(size: u64, count: u64, seed: u64) -> Result<Self, SampleError> {
        WalkSample::draw_by(SAMPLER_VERSION, size, count, seed)
    }

    /// What [`WalkSample::draw`] drew with sampler `version` (as a trace
    /// records it): this build's and the one before it.
    pub fn draw_by(version: u32, size: u64, count: u64, seed: u64) -> Result<Self, SampleError> {
        let sampler = Sampler::of_version(version).ok_or(SampleError::Sampler { version })?;
        if count.min(size) > MAX_SAMPLE {
            return Err(SampleError::TooLarge { count: count.min(size), max: MAX_SAMPLE });
        }
        if count >= size {
            return WalkSample::new((0..size).collect(), size);
        }
        if count == 0 {
            return Err(SampleError::Empty);
        }
        let draw = |count| match sampler {
            Sampler::V2 => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                if size <= 1 << 32 {
                    // The same ids, sorted as `u32`s: half the bytes for the
                    // radix sort to move (0.8x the time of the whole draw).
                    let ids = distinct_sorted(&mut rng, size, count, |id| id as u32);
                    ids.into_iter().map(u64::from).collect()
                } else {
                    distinct_sorted(&mut rng, size, count, |id| id).into()
                }
            }
            Sampler::V3 => {
                let (segments, threads) =
                    if count >= PARALLEL_FROM { (SEGMENTS, threads()) } else { (1, 1) };
                bernoulli_sorted(size, count, seed, Cuts { segments, threads, margin: MARGIN })
            }
        };
        let ids: Arc<[u64]> = if count <= size / 2 {
            draw(count)
        } else {
            let out = draw(size - count);
            let mut ids = Vec::with_capacity(count as usize);
            let mut next = 0;
            for &left_out in out.iter().chain([&size]) {
                ids.extend(next..left_out);
                next = left_out.saturating_add(1);
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

/// Segments of the space, each drawn from its own ChaCha8 stream by
/// sampler version 3 (so that threads can share them out, with the same
/// ids whatever their number), for a sample of [`PARALLEL_FROM`] ids or
/// more; a smaller one is one segment.
const SEGMENTS: u64 = 64;

/// The stream that chooses which kept ids are dropped (after the
/// segments').
const TRIM_STREAM: u64 = SEGMENTS;

/// Standard deviations of the number of kept ids that the chance of
/// keeping one allows for above the count: with 6, a draw falls short (and
/// is made again from the next seed) about once in 10^9.
const MARGIN: f64 = 6.0;

/// Samples of at least this many ids are drawn in [`SEGMENTS`] segments,
/// on threads (below it, a thread costs more than it saves).
const PARALLEL_FROM: u64 = 1 << 16;

/// The most walks a sample holds (2^32 - 1 on 64-bit targets: 32 GiB of
/// ids), so that a count past any memory is an error, not an abort.
const MAX_SAMPLE: u64 = if usize::BITS >= 64 { u32::MAX as u64 } else { (isize::MAX as u64) / 8 };

/// Past this many ids per kept id, sampler version 3 draws the ids
/// themselves (version 2's way, from its own stream): there a skip's
/// floating-point steps (about `2^-53` of the mean gap) would be a
/// visible fraction of an id.
const SPARSE_GAP: f64 = (1u64 << 32) as f64;

/// The stream of a sparse draw (after the trim's).
const SPARSE_STREAM: u64 = TRIM_STREAM + 1;

/// Threads to draw on: the CPUs, at most one per segment.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(SEGMENTS as usize)
}

/// `count` distinct ids below `size` (`count` at most half of it), sorted:
/// sampler version 3.
///
/// Every id is kept with chance `p`, a little above `count / size`, so
/// that at least `count` are kept but for about once in 10^9 (then the
/// next attempt's seed draws again). The kept ids of a segment follow
/// from its stream: from one kept id to the next is `1 + floor(E / l)`
/// ids, `E` an exponential draw and `l = -ln(1 - p)`, which makes the gaps
/// geometric, as keeping each id with chance `p` does. Then as many of the
/// kept ids as are over `count` are dropped, chosen uniformly by the trim
/// stream: a uniform set of `count` among a uniform set of kept ids.
/// The segments are drawn on threads; the ids do not depend on how many.
/// Where the kept ids would be more than [`SPARSE_GAP`] apart, the ids are
/// drawn, sorted and deduplicated instead (they rarely repeat there).
fn bernoulli_sorted(size: u64, count: u64, seed: u64, cuts: Cuts) -> Arc<[u64]> {
    // The kept ids aimed at: `margin` standard deviations above the count,
    // and 16.
    let wanted = count as f64 + cuts.margin * (count as f64).sqrt() + 16.0;
    if size as f64 / wanted > SPARSE_GAP {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(SPARSE_STREAM);
        return distinct_sorted(&mut rng, size, count, |id| id).into();
    }
    if size.div_ceil(cuts.segments) <= 1 << 32 {
        bernoulli_as::<u32>(size, count, seed, cuts, wanted)
    } else {
        bernoulli_as::<u64>(size, count, seed, cuts, wanted)
    }
}

/// [`bernoulli_sorted`], the kept ids held as `K` offsets from their
/// segment's start, `wanted` of them on average.
fn bernoulli_as<K: Offset>(
    size: u64,
    count: u64,
    seed: u64,
    cuts: Cuts,
    wanted: f64,
) -> Arc<[u64]> {
    let Cuts { segments, threads, .. } = cuts;
    let chance = wanted / size as f64;
    // Past 1 (tiny spaces), every id is kept: skips of zero.
    let per_unit_e = if chance >= 1.0 { 0.0 } else { 1.0 / rate(chance) };
    assert!(per_unit_e.is_finite() && per_unit_e >= 0.0, "a skip's scale: {per_unit_e}");
    let segment_len = size.div_ceil(segments);
    let capacity = ((wanted / segments as f64 * 1.05) as usize).saturating_add(16);
    for attempt in 0.. {
        let attempt_seed = round_seed(seed, attempt);
        let parts = on_threads(threads, (0..segments).collect(), |segment| {
            let mut rng = ChaCha8Rng::seed_from_u64(attempt_seed);
            rng.set_stream(segment);
            let start = segment.saturating_mul(segment_len).min(size);
            let range = start..(segment + 1).saturating_mul(segment_len).min(size);
            let mut kept: Vec<K> = Vec::with_capacity(if range.is_empty() { 0 } else { capacity });
            kept_ids(&mut rng, range.clone(), per_unit_e, &mut kept);
            (range.start, kept)
        });
        let kept: usize = parts.iter().map(|(_, part)| part.len()).sum();
        if (kept as u64) < count {
            continue;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(attempt_seed);
        rng.set_stream(TRIM_STREAM);
        return trim(&parts, count as usize, &mut rng, threads);
    }
    unreachable!("attempts go on until one keeps enough ids")
}

/// How sampler version 3 cuts a draw: into `segments` (each its own
/// stream), drawn on `threads`, keeping each id with a chance that leaves
/// `margin` standard deviations of kept ids above the count.
#[derive(Debug, Clone, Copy)]
struct Cuts {
    segments: u64,
    threads: usize,
    margin: f64,
}

/// A kept id as a segment holds it until the trim: its offset from the
/// segment's start, a `u32` where segments have at most 2^32 ids (half the
/// memory to fill and copy), else a `u64`.
trait Offset: Copy + Send + Sync {
    fn of(offset: u64) -> Self;
    fn get(self) -> u64;
}

impl Offset for u32 {
    fn of(offset: u64) -> Self {
        offset as u32
    }
    fn get(self) -> u64 {
        u64::from(self)
    }
}

impl Offset for u64 {
    fn of(offset: u64) -> Self {
        offset
    }
    fn get(self) -> u64 {
        self
    }
}

/// Appends to `out` the kept ids of `range`: from its start, each skip of
/// `floor(E * per_unit_e)` ids (`E` exponential) lands on one.
fn kept_ids<K: Offset>(rng: &mut ChaCha8Rng, range: Range<u64>, per_unit_e: f64, out: &mut Vec<K>) {
    // Skips are made 32 at a time, apart from where they land: the
    // exponentials of a batch do not wait for each other.
    let mut skips = [0u64; 32];
    let mut at = range.start;
    loop {
        for skip in &mut skips {
            // `as` saturates: a skip past u64::MAX ends the range below.
            *skip = (exponential(rng.next_u64()) * per_unit_e) as u64;
        }
        for &skip in &skips {
            match at.checked_add(skip) {
                Some(id) if id < range.end => {
                    out.push(K::of(id - range.start));
                    at = id + 1;
                }
                _ => return,
            }
        }
    }
}

/// The kept ids of `parts` (in order) less `kept - count` of them chosen
/// uniformly by `rng`, as the sample: each part copied (on `threads`
/// threads) into its own stretch of the sample.
fn trim<K: Offset>(
    parts: &[(u64, Vec<K>)],
    count: usize,
    rng: &mut ChaCha8Rng,
    threads: usize,
) -> Arc<[u64]> {
    let kept: usize = parts.iter().map(|(_, part)| part.len()).sum();
    let dropped = kept - count;
    // Positions among the kept ids: those dropped, or (when fewer stay
    // than go) those that stay.
    let stay = dropped > kept / 2;
    let chosen = if stay { count } else { dropped };
    let positions = distinct_sorted(rng, kept as u64, chosen as u64, |p| p);
    let mut ids: Arc<[MaybeUninit<u64>]> = Arc::new_uninit_slice(count);
    let mut slots = &mut Arc::get_mut(&mut ids).expect("not shared yet")[..];
    let (mut positions, mut first) = (&positions[..], 0);
    let mut shares = Vec::with_capacity(parts.len());
    for (base, part) in parts {
        let end = first + part.len() as u64;
        let (mine, later) = positions.split_at(positions.partition_point(|&p| p < end));
        let len = if stay { mine.len() } else { part.len() - mine.len() };
        let (slot, rest) = std::mem::take(&mut slots).split_at_mut(len);
        let at = move |&p: &u64| (p - first) as usize;
        shares.push(Share { part, base: *base, positions: mine.iter().map(at), slot });
        (positions, slots, first) = (later, rest, end);
    }
    assert!(slots.is_empty(), "the parts' shares cover the sample");
    on_threads(threads, shares, |share| share.fill(stay));
    // SAFETY: the shares' slots cover the sample without overlap (split
    // from it, none left: asserted above), and `Share::fill` writes every
    // slot of its share (asserted there); a share that panics ends
    // `on_threads` with its panic, before this.
    unsafe { ids.assume_init() }
}

/// A part of the kept ids (offsets from `base`), its positions among them
/// that are dropped (or stay), and the stretch of the sample its ids go to.
struct Share<'a, K, P> {
    part: &'a [K],
    base: u64,
    positions: P,
    slot: &'a mut [MaybeUninit<u64>],
}

impl<K: Offset, P: Iterator<Item = usize>> Share<'_, K, P> {
    /// Writes every slot: the part's ids at the positions (`stay`), or
    /// those at no position.
    fn fill(self, stay: bool) {
        let Share { part, base, positions, slot } = self;
        let mut written = 0;
        if stay {
            for (slot, p) in slot.iter_mut().zip(positions) {
                slot.write(base + part[p].get());
                written += 1;
            }
        } else {
            let mut from = 0;
            for p in positions.chain([part.len()]) {
                let run = &part[from..p];
                for (slot, &id) in slot[written..].iter_mut().zip(run) {
                    slot.write(base + id.get());
                }
                written += run.len();
                from = p + 1;
            }
        }
        assert_eq!(written, slot.len(), "a share writes every slot of its stretch");
    }
}

/// `f` of each item, in order: the items taken one by one by this thread
/// and up to `threads - 1` more (fewer if the system gives fewer).
fn on_threads<T: Send, R: Send>(
    threads: usize,
    items: Vec<T>,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let helpers = items.len().min(threads).saturating_sub(1);
    let queue = Mutex::new(items.into_iter().enumerate());
    let work = || {
        let mut done = Vec::new();
        loop {
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
            let Some((n, item)) = next else { return done };
            done.push((n, f(item)));
        }
    };
    let mut done = std::thread::scope(|scope| {
        let helpers: Vec<_> = (0..helpers)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("combtest-draw".into())
                    .spawn_scoped(scope, work)
                    .ok()
            })
            .collect();
        let mut done = work();
        for helper in helpers {
            done.extend(helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        done
    });
    done.sort_unstable_by_key(|&(n, _)| n);
    done.into_iter().map(|(_, r)| r).collect()
}

/// An exponential draw (mean 1) from 64 random bits: `-ln(u)` for
/// `u = bits / 2^64` (to 53 significant bits). Computed with IEEE-754
/// additions, multiplications and divisions only, never a platform's
/// `ln` (which may differ in the last bit): the same bits give the same
/// draw on every machine, and so the same sample.
fn exponential(bits: u64) -> f64 {
    // u = 2^-(zeros + 1) * m, with m in [1, 2) made of the bits after the
    // leading one (u = 2^-64 when no bit is set).
    let zeros = bits.leading_zeros().min(63);
    let fraction = bits.checked_shl(zeros + 1).unwrap_or(0);
    let m = f64::from_bits(1f64.to_bits() | fraction >> 12);
    let (inverse, ln_center) = LN_TABLE[(fraction >> 56) as usize];
    // ln m = ln c + ln(m / c), c the center of m's 1/256 of [1, 2), where
    // |m / c - 1| < 2^-9: five terms of ln(1 + x) leave out less than
    // x^6 / 6 < 2^-56.
    let x = m * inverse - 1.0;
    let ln_rest = x * (1.0 + x * (-0.5 + x * (1.0 / 3.0 + x * (-0.25 + x * 0.2))));
    f64::from(zeros + 1) * std::f64::consts::LN_2 - (ln_center + ln_rest)
}

/// For each 1/256 of [1, 2): `1 / c` and `ln c` at its center `c`, made
/// when the crate is compiled (IEEE-754 arithmetic, the same everywhere).
const LN_TABLE: [(f64, f64); 256] = {
    let mut table = [(0.0, 0.0); 256];
    let mut j = 0;
    while j < 256 {
        let c = 1.0 + (j as f64 + 0.5) / 256.0;
        table[j] = (1.0 / c, ln_series(c));
        j += 1;
    }
    table
};

/// `ln x` for `x` in [1, 2), as `2 atanh((x - 1) / (x + 1))`.
const fn ln_series(x: f64) -> f64 {
    two_atanh((x - 1.0) / (x + 1.0))
}

/// `2 atanh s` for `s` in [0, 1/3], by its series: 40 terms are past
/// f64's precision.
const fn two_atanh(s: f64) -> f64 {
    let (mut sum, mut power, mut k) = (0.0, s, 0);
    while k < 40 {
        sum += power / (2 * k + 1) as f64;
        power *= s * s;
        k += 1;
    }
    2.0 * sum
}

/// `-ln(1 - p)` for `p` in (0, 1): the rate whose exponential draws,
/// floored, are the gaps of keeping each id with chance `p`. Up to one
/// half, as `2 atanh(p / (2 - p))`, never forming `1 - p` (which rounds to
/// 1 below 2^-53, and loses `p`'s digits well before); above, `1 - p` is
/// exact, and its logarithm is taken as [`exponential`] takes it.
fn rate(p: f64) -> f64 {
    if p <= 0.5 {
        return two_atanh(p / (2.0 - p));
    }
    let bits = (1.0 - p).to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1023;
    let m = f64::from_bits(1f64.to_bits() | bits & ((1 << 52) - 1));
    -(f64::from(exponent) * std::f64::consts::LN_2 + ln_series(m))
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

    /// Each sampler's ids for a fixed seed, committed: a change of the draw
    /// (or of ChaCha8's stream) changes which walks a soak trace's seed
    /// names, and must come with a new [`SAMPLER_VERSION`] (the old
    /// sampler kept, for the traces it drew).
    #[test]
    fn a_seed_draws_the_same_ids_as_committed() {
        assert_eq!(SAMPLER_VERSION, 3);
        let draw = |version, size, count| WalkSample::draw_by(version, size, count, 42).unwrap();
        let left_out = |sample: WalkSample| -> Vec<u64> {
            (0..1_000).filter(|id| sample.ids().binary_search(id).is_err()).collect()
        };
        // Version 2.
        assert_eq!(&draw(2, 1_000_000_000, 1_000).ids()[..8], &V2_SPARSE_PREFIX);
        // Ids above 2^32 (sorted as u64s; below, as u32s).
        assert_eq!(&draw(2, 1 << 40, 1_000).ids()[..4], &V2_WIDE_PREFIX);
        assert_eq!(left_out(draw(2, 1_000, 990)), V2_DENSE_LEFT_OUT);
        // Version 3, below and above the size drawn on threads, and
        // trimmed both ways (most kept ids dropped, or a few).
        assert_eq!(&draw(3, 1_000_000_000, 1_000).ids()[..8], &V3_SPARSE_PREFIX);
        assert_eq!(&draw(3, 1 << 40, 100_000).ids()[..4], &V3_WIDE_PREFIX);
        assert_eq!(left_out(draw(3, 1_000, 990)), V3_DENSE_LEFT_OUT);
        assert_eq!(WalkSample::draw(1 << 40, 100_000, 42), Ok(draw(3, 1 << 40, 100_000)));
        // The whole of a sample drawn in segments, not only its start.
        assert_eq!(digest(draw(3, 1 << 40, 100_000).ids()), V3_WIDE_DIGEST);
        assert_eq!(
            WalkSample::draw_by(4, 10, 5, 42),
            Err(SampleError::Sampler { version: 4 }),
            "an unknown sampler is refused by name"
        );
    }

    const V2_SPARSE_PREFIX: [u64; 8] =
        [614_616, 1_532_996, 4_170_553, 6_231_255, 6_508_467, 6_528_518, 8_088_679, 10_923_677];
    const V2_WIDE_PREFIX: [u64; 4] = [675_778_112, 1_685_547_591, 4_585_571_914, 6_851_338_015];
    const V2_DENSE_LEFT_OUT: [u64; 10] = [149, 238, 288, 308, 427, 627, 681, 771, 803, 950];
    const V3_SPARSE_PREFIX: [u64; 8] =
        [577_530, 644_502, 988_199, 1_811_271, 2_490_766, 3_488_375, 4_565_602, 5_593_656];
    const V3_WIDE_PREFIX: [u64; 4] = [7_512_706, 8_383_895, 12_854_818, 18_694_292];
    const V3_DENSE_LEFT_OUT: [u64; 10] = [15, 17, 49, 506, 543, 619, 658, 835, 911, 980];

    /// Dense draws (the ids left out drawn) and sparse ones with many
    /// repeats (v2: topped up) or few kept ids (v3: trimmed to most of
    /// them): `count` distinct ids, sorted, in range.
    #[test]
    fn dense_and_crowded_draws_have_count_distinct_ids() {
        for version in [2, 3] {
            let cases = [(20, 10), (20, 11), (20, 19), (3, 1), (3, 2), (2, 1), (1_000, 999)];
            for (size, count) in cases {
                for seed in 0..50 {
                    let ids = WalkSample::draw_by(version, size, count, seed).unwrap();
                    assert_eq!(ids.len(), count, "v{version}: {count} of {size}, seed {seed}");
                    assert!(ids.ids().windows(2).all(|w| w[0] < w[1]));
                    assert!(ids.ids().iter().all(|&id| id < size));
                }
            }
            assert_eq!(WalkSample::draw_by(version, 10, 0, 1), Err(SampleError::Empty));
            assert_eq!(WalkSample::draw_by(version, 0, 5, 1), Err(SampleError::Empty));
        }
    }

    /// Every id is drawn about equally often over many seeds, sparse (3 of
    /// 10) and dense (7 of 10): 3,000 draws each, so each id's count is
    /// 900 or 2,100 give or take 25 (one standard deviation); a bias of a
    /// tenth on one id (an off-by-one at either end) is 90 off.
    #[test]
    fn every_id_is_drawn_about_equally_often() {
        for version in [2, 3] {
            for count in [3, 7] {
                let mut hits = [0u32; 10];
                for seed in 0..3_000 {
                    for &id in WalkSample::draw_by(version, 10, count, seed).unwrap().ids() {
                        hits[id as usize] += 1;
                    }
                }
                let expected = 300 * count as u32;
                let near = hits.iter().all(|&h| h.abs_diff(expected) < 100);
                assert!(near, "v{version}, {count} of 10: {hits:?}");
            }
        }
    }

    /// Sampler version 3 over many seeds: every id as often as any other,
    /// and pairs of ids together as often as a uniform set of `count` has
    /// them (within a segment, across two, far apart), whether the trim
    /// keeps a few of the kept ids or drops a few, and when most attempts
    /// fall short and are made again (a negative margin).
    #[test]
    fn version_3_draws_uniform_sets_of_ids() {
        // (size, count, margin), in 64 segments: 20 of 200 keeps about 20
        // of 63 kept ids (segments of 4 ids); 400 of 1,000 drops about 136
        // of 536; with a margin of -2, about two draws in three fall
        // short.
        for (size, count, margin) in
            [(200u64, 20u64, MARGIN), (1_000, 400, MARGIN), (1_000, 100, -2.0)]
        {
            let draws = env_or("SAMPLER_DRAWS", 4_000);
            let mut hits = vec![0u32; size as usize];
            let pairs = [(0, 1), (3, 4), (0, size - 1), (size / 2 - 1, size / 2)];
            let mut together = [0u32; 4];
            for seed in 0..draws {
                let cuts = Cuts { segments: SEGMENTS, threads: 1, margin };
                let ids = bernoulli_sorted(size, count, seed, cuts);
                assert_eq!(ids.len() as u64, count);
                assert!(ids.windows(2).all(|w| w[0] < w[1]) && ids[ids.len() - 1] < size);
                ids.iter().for_each(|&id| hits[id as usize] += 1);
                for (n, (a, b)) in pairs.iter().enumerate() {
                    together[n] +=
                        u32::from(ids.binary_search(a).is_ok() && ids.binary_search(b).is_ok());
                }
            }
            // Five standard deviations of a binomial count.
            let near = |found: u32, chance: f64| {
                let mean = draws as f64 * chance;
                (f64::from(found) - mean).abs() < 5.0 * (mean * (1.0 - chance)).sqrt()
            };
            let one = count as f64 / size as f64;
            let off: Vec<(usize, u32)> =
                hits.iter().copied().enumerate().filter(|&(_, h)| !near(h, one)).collect();
            assert!(off.is_empty(), "{count} of {size}: ids drawn unevenly: {off:?}");
            let two = one * (count - 1) as f64 / (size - 1) as f64;
            for (n, pair) in pairs.iter().enumerate() {
                assert!(near(together[n], two), "{count} of {size}: {pair:?} {}", together[n]);
            }
        }
    }

    /// A count from the environment (a long run of a statistical test),
    /// or `default`.
    fn env_or(name: &str, default: u64) -> u64 {
        std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
    }

    /// Large samples (drawn in 64 segments, on threads) spread evenly over
    /// the space: 100,000 of 10^7, the space cut into 640 stretches (10 per
    /// segment), whose counts over all draws pass a chi-square test at six
    /// standard deviations; every id once at most per draw, in order.
    /// `SAMPLER_LARGE_DRAWS` sets the draws (seeds 0..).
    #[test]
    fn large_version_3_draws_cover_the_space_evenly() {
        let (size, count, stretches) = (10_000_000u64, 100_000u64, 640u64);
        let draws = env_or("SAMPLER_LARGE_DRAWS", 4);
        let mut hits = vec![0u64; stretches as usize];
        for seed in 0..draws {
            let sample = WalkSample::draw(size, count, seed).unwrap();
            assert_eq!(sample.len(), count);
            assert!(sample.ids().windows(2).all(|w| w[0] < w[1]));
            sample.ids().iter().for_each(|&id| hits[(id * stretches / size) as usize] += 1);
        }
        let expected = (draws * count) as f64 / stretches as f64;
        let chi2: f64 = hits.iter().map(|&h| (h as f64 - expected).powi(2) / expected).sum();
        // Chi-square with 639 degrees of freedom: mean 639, deviation 35.7.
        let dof = (stretches - 1) as f64;
        assert!(chi2 < dof + 6.0 * (2.0 * dof).sqrt(), "chi-square {chi2:.0} over {draws} draws");
    }

    /// Spaces up to 2^64 ids: a few ids of a huge space (drawn, sorted and
    /// deduplicated, past `SPARSE_GAP`), many (in segments), or more than a
    /// sample holds (refused in one line, by both samplers).
    #[test]
    fn extreme_spaces_draw_or_refuse() {
        for (size, count) in [(u64::MAX, 1), (u64::MAX, 1_000), (1 << 59, 1), (u64::MAX, 1 << 20)] {
            let sample = WalkSample::draw(size, count, 3).unwrap();
            assert_eq!(sample.len(), count, "{count} of {size}");
            assert!(sample.ids().windows(2).all(|w| w[0] < w[1]));
        }
        assert_eq!(
            digest(WalkSample::draw(u64::MAX, 1_000, 42).unwrap().ids()),
            V3_SPARSE_DIGEST,
            "a sparse draw's ids, committed"
        );
        for version in [2, 3] {
            for (size, count) in
                [(u64::MAX, u64::MAX / 2), (u64::MAX, u64::MAX), (1 << 61, (1 << 61) - 10)]
            {
                let refused = WalkSample::draw_by(version, size, count, 1).unwrap_err();
                let count = count.min(size);
                assert_eq!(refused, SampleError::TooLarge { count, max: MAX_SAMPLE });
            }
        }
    }

    /// A sample's ids folded into one number (FNV-1a over the ids).
    fn digest(ids: &[u64]) -> u64 {
        ids.iter().fold(0xcbf2_9ce4_8422_2325, |h, &id| (h ^ id).wrapping_mul(0x100_0000_01b3))
    }

    const V3_SPARSE_DIGEST: u64 = 17_672_322_391_738_720_839;
    const V3_WIDE_DIGEST: u64 = 704_310_439_198_134_472;

    /// Version 3 draws the same ids on any number of threads, with its
    /// segments' kept ids held as `u32` offsets (segments of at most 2^32
    /// ids) or as `u64`s.
    #[test]
    fn version_3_ids_do_not_depend_on_the_threads() {
        let narrow_and_wide = [(1u64 << 38, PARALLEL_FROM), ((1 << 38) + 1, PARALLEL_FROM)];
        for (size, count) in
            [(1_000_000, 70_000), (10_000, 5_000), (130, 60)].into_iter().chain(narrow_and_wide)
        {
            let cuts = |threads| Cuts { segments: SEGMENTS, threads, margin: MARGIN };
            let one = bernoulli_sorted(size, count, 5, cuts(1));
            for threads in [2, 5, 64] {
                assert_eq!(
                    one,
                    bernoulli_sorted(size, count, 5, cuts(threads)),
                    "{threads} threads"
                );
            }
        }
    }

    /// The exponential draws and the logarithm they are made with, against
    /// the platform's `ln`: within a few units of the last place, at both
    /// ends of the bits and in between; and their mean is 1.
    #[test]
    fn exponential_draws_are_minus_the_log_of_their_bits() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let some = (0..100_000).map(|_| rng.next_u64());
        let ends = [0, 1, 2, 3, 1 << 11, 1 << 63, (1 << 63) + 1, u64::MAX - 1, u64::MAX];
        for bits in some.chain(ends) {
            let u = if bits == 0 {
                2f64.powi(-64)
            } else {
                (bits >> bits.trailing_zeros().min(11)) as f64
            };
            let u = if bits == 0 {
                u
            } else {
                u * 2f64.powi(bits.trailing_zeros().min(11) as i32 - 64)
            };
            let expected = -u.ln();
            let drawn = exponential(bits);
            assert!(
                (drawn - expected).abs() <= 1e-15 * expected.max(1.0),
                "{bits:#x}: {drawn} against {expected}"
            );
        }
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mean = (0..1_000_000).map(|_| exponential(rng.next_u64())).sum::<f64>() / 1e6;
        assert!((mean - 1.0).abs() < 0.005, "mean {mean}");
        // The rate of a chance, to f64's precision however small the
        // chance (`1 - p` is never formed below one half).
        for p in [1e-300, 2f64.powi(-60), 1e-12, 1e-6, 1e-3, 0.25, 0.5, 0.75, 0.999] {
            let expected = -(-p).ln_1p();
            assert!((rate(p) - expected).abs() <= 1e-15 * expected, "{p}: {}", rate(p));
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
