//! Walk states held between epochs, block by block.
//!
//! In a run with serial actions a walk's state outlives its segment: it waits
//! in the store of the node that ran the walk until the walk's next segment
//! (sticky routing). In-process there is one store, shared by every runner of
//! the process and owned by the run, not by a runner, so a runner restarted
//! after a panic loses nothing. Runners take and put whole blocks, so the
//! lock is touched twice per batch, never per walk.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use crate::exec::Block;

/// Held walk states, keyed by the first walk id of their block.
#[derive(Debug)]
pub(crate) struct StateStore<S> {
    blocks: Mutex<HashMap<u64, Block<S>>>,
}

impl<S> StateStore<S> {
    pub(crate) fn new() -> Self {
        StateStore { blocks: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Block<S>>> {
        // A poisoned lock only means a holder panicked between two map
        // operations, which cannot leave the map half-updated.
        self.blocks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the blocks making up `range` (a tombstone comes back as a block
    /// with no live walk). Errors with the first walk id from which `range`
    /// is not held as whole blocks.
    ///
    /// The blocks are the ones stored, wherever they start: a block of the
    /// space may be held as several pieces (walks rerun after a node loss
    /// come back in pieces of their own), and the coordinator asks for
    /// adjacent pieces held here as one range.
    pub(crate) fn take(&self, range: Range<u64>) -> Result<Vec<Block<S>>, u64> {
        let mut map = self.lock();
        let mut out = Vec::new();
        let mut at = range.start;
        while at < range.end {
            match map.remove(&at) {
                Some(block) if block.range().end > at && block.range().end <= range.end => {
                    at = block.range().end;
                    out.push(block);
                }
                wrong => {
                    if let Some(held) = wrong {
                        map.insert(at, held);
                    }
                    // Put back what was taken: the caller reports the loss.
                    drop(map);
                    self.put_back(out);
                    return Err(at);
                }
            }
        }
        Ok(out)
    }

    /// [`take`](Self::take) for several ranges: all of them, or none.
    pub(crate) fn take_all(&self, ranges: &[Range<u64>]) -> Result<Vec<Block<S>>, u64> {
        let mut out = Vec::new();
        for range in ranges {
            match self.take(range.clone()) {
                Ok(mut taken) => out.append(&mut taken),
                Err(start) => {
                    self.put_back(out);
                    return Err(start);
                }
            }
        }
        Ok(out)
    }

    /// Stores blocks. A block whose walks have all ended is kept as a
    /// tombstone (its live bits, no state), so a block that is missing later
    /// really was lost.
    pub(crate) fn put(&self, held: Vec<Block<S>>) {
        let mut map = self.lock();
        for mut block in held {
            if block.states.is_empty() {
                block.nanos = Vec::new();
            }
            map.insert(block.start, block);
        }
    }

    /// Returns taken blocks unchanged.
    fn put_back(&self, taken: Vec<Block<S>>) {
        let mut map = self.lock();
        for block in taken {
            map.insert(block.start, block);
        }
    }

    /// Number of held walk states.
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.lock().values().map(|block| block.states.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::holdings::LiveSet;

    #[test]
    fn dead_blocks_are_dropped_and_missing_ones_reported() {
        let store = StateStore::new();
        store.put(vec![
            Block {
                start: 0,
                live: LiveSet::from_bits([true, false]),
                states: vec![1],
                nanos: vec![],
            },
            Block::tombstone(2..4),
        ]);
        assert_eq!(store.live(), 1);
        // Block 2..4 holds no live walk: it is a tombstone and comes back
        // as one; a block never stored is an error that takes nothing.
        let taken = store.take(0..4).unwrap();
        assert_eq!((taken[0].range(), taken[0].states.clone()), (0..2, vec![1]));
        assert_eq!(taken[0].live_ids().collect::<Vec<_>>(), vec![0]);
        assert_eq!((taken[1].range(), taken[1].states.len()), (2..4, 0));
        assert_eq!(store.live(), 0);
        store.put(taken);
        assert_eq!(store.take(0..6).unwrap_err(), 4);
        assert_eq!(store.live(), 1);
    }

    /// Regression (found by `tests/ssh_nemesis.rs`, seed 1: two nodes
    /// killed 100 ms apart broke the soak with "the walk states of the
    /// block starting at walk 32 are not on this node"): walks rerun after
    /// a loss are held as pieces of a block, and the coordinator asks a
    /// node for adjacent pieces it holds as one range.
    #[test]
    fn a_block_held_in_pieces_is_taken_whole() {
        let store = StateStore::new();
        let piece = |start: u64, bits: &[bool], states: Vec<u32>| Block {
            start,
            live: LiveSet::from_bits(bits.iter().copied()),
            states,
            nanos: vec![],
        };
        // Block 0..4 of the space, held as 0..1 (a rerun walk) and 1..4.
        store.put(vec![piece(0, &[true], vec![10]), piece(1, &[true, false, true], vec![11, 13])]);
        let taken = store.take(0..4).unwrap();
        let ranges: Vec<Range<u64>> = taken.iter().map(Block::range).collect();
        assert_eq!(ranges, vec![0..1, 1..4]);
        let ids: Vec<u64> = taken.iter().flat_map(|b| b.live_ids().collect::<Vec<_>>()).collect();
        assert_eq!(ids, vec![0, 1, 3]);
        assert_eq!(store.live(), 0);
        // A range that ends inside a stored piece is not held whole: nothing
        // is taken.
        store.put(taken);
        assert_eq!(store.take(0..2).unwrap_err(), 1);
        assert_eq!(store.live(), 3);
    }
}
