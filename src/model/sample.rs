//! A run over part of the walk space: a set of walk ids, drawn from a seeded
//! RNG (soak rounds) or given. A sampled run keeps every semantic of a full
//! run (serial actions at their barriers, once per epoch that has a sampled
//! walk); it only skips the walks outside the sample, and the epochs with
//! none.

use std::ops::Range;
use std::sync::Arc;

use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;

use super::space::Blocks;

/// Version of the sampler ([`WalkSample::draw`]): a soak trace records a
/// sampled round as its seed, so its readers redraw it; bump this whenever a
/// seed would draw other ids.
pub(crate) const SAMPLER_VERSION: u32 = 1;

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
    /// ChaCha8 RNG seeded with `seed`: the same seed gives the same sample
    /// on every machine and build. Asking for at least `size` gives them all.
    pub fn draw(size: u64, count: u64, seed: u64) -> Result<Self, SampleError> {
        if count >= size {
            return WalkSample::new((0..size).collect(), size);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ids: Vec<u64> = if size <= usize::MAX as u64 {
            rand::seq::index::sample(&mut rng, size as usize, count as usize)
                .into_iter()
                .map(|i| i as u64)
                .collect()
        } else {
            unreachable!("a u64 space fits a 64-bit usize")
        };
        WalkSample::new(ids, size)
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

    /// The sampled ids within `range`.
    fn within(&self, range: &Range<u64>) -> &[u64] {
        let from = self.ids.partition_point(|&id| id < range.start);
        let to = self.ids.partition_point(|&id| id < range.end);
        &self.ids[from..to]
    }

    /// How many sampled walks lie in `range`.
    pub fn count_in(&self, range: &Range<u64>) -> u64 {
        self.within(range).len() as u64
    }

    /// The sampled walks of `range` as id ranges: runs of consecutive ids,
    /// cut at block boundaries (so each is stored and taken whole).
    pub fn pieces(&self, range: &Range<u64>, blocks: &Blocks) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for &id in self.within(range) {
            match out.last_mut() {
                Some(last) if last.end == id && blocks.block_of(id).start < id => last.end += 1,
                _ => out.push(id..id + 1),
            }
        }
        out
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
