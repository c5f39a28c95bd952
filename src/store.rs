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
use crate::model::space::Blocks;

/// A held block: its walk states and, when tracing, the time each walk has
/// run so far.
type Held<S> = (Vec<Option<S>>, Vec<u64>);

/// Held walk states, keyed by the first walk id of their block.
#[derive(Debug)]
pub(crate) struct StateStore<S> {
    blocks: Mutex<HashMap<u64, Held<S>>>,
}

impl<S> StateStore<S> {
    pub(crate) fn new() -> Self {
        StateStore { blocks: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held<S>>> {
        // A poisoned lock only means a holder panicked between two map
        // operations, which cannot leave the map half-updated.
        self.blocks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the blocks making up `range` (a tombstone comes back as a block
    /// of `None`s). Errors with the first walk id of a block that is not held
    /// whole.
    pub(crate) fn take(&self, range: Range<u64>, blocks: Blocks) -> Result<Vec<Block<S>>, u64> {
        let mut map = self.lock();
        let mut out = Vec::new();
        for part in blocks.split(range) {
            match map.remove(&part.start) {
                Some((mut slots, nanos))
                    if slots.is_empty() || slots.len() as u64 == part.end - part.start =>
                {
                    if slots.is_empty() {
                        slots.resize_with((part.end - part.start) as usize, || None);
                    }
                    out.push(Block { start: part.start, slots, nanos })
                }
                wrong => {
                    if let Some(held) = wrong {
                        map.insert(part.start, held);
                    }
                    // Put back what was taken: the caller reports the loss.
                    drop(map);
                    self.put_back(out);
                    return Err(part.start);
                }
            }
        }
        Ok(out)
    }

    /// [`take`](Self::take) for several ranges: all of them, or none.
    pub(crate) fn take_all(
        &self,
        ranges: &[Range<u64>],
        blocks: Blocks,
    ) -> Result<Vec<Block<S>>, u64> {
        let mut out = Vec::new();
        for range in ranges {
            match self.take(range.clone(), blocks) {
                Ok(mut taken) => out.append(&mut taken),
                Err(start) => {
                    self.put_back(out);
                    return Err(start);
                }
            }
        }
        Ok(out)
    }

    /// Stores blocks. A block whose walks have all ended is kept as an empty
    /// tombstone (no allocation), so a block that is missing later really
    /// was lost.
    pub(crate) fn put(&self, held: Vec<Block<S>>) {
        let mut map = self.lock();
        for mut block in held {
            if block.slots.iter().all(Option::is_none) {
                block.slots = Vec::new();
                block.nanos = Vec::new();
            }
            map.insert(block.start, (block.slots, block.nanos));
        }
    }

    /// Returns taken blocks unchanged (tombstones stay tombstones).
    fn put_back(&self, taken: Vec<Block<S>>) {
        let mut map = self.lock();
        for block in taken {
            map.insert(block.start, (block.slots, block.nanos));
        }
    }

    /// Number of held walk states.
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.lock().values().flat_map(|(slots, _)| slots).filter(|s| s.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_blocks_are_dropped_and_missing_ones_reported() {
        let store = StateStore::new();
        let blocks = Blocks::new(4, 2);
        store.put(vec![
            Block { start: 0, slots: vec![Some(1), None], nanos: vec![] },
            Block { start: 2, slots: vec![None, None], nanos: vec![] },
        ]);
        assert_eq!(store.live(), 1);
        // Block 2..4 holds no live walk: it is a tombstone and comes back
        // as Nones; a block never stored is an error that takes nothing.
        let taken = store.take(0..4, blocks).unwrap();
        assert_eq!(taken[0].slots, vec![Some(1), None]);
        assert_eq!(taken[1].slots, vec![None, None]);
        assert_eq!(store.live(), 0);
        store.put(taken);
        assert_eq!(store.take(0..6, Blocks::new(6, 2)).unwrap_err(), 4);
        assert_eq!(store.live(), 1);
    }
}
