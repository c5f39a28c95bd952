//! Epochs: the depth-first order in which serial actions and segments run.
//!
//! An epoch is (level k, branch b): serial action k with option b_k, run
//! once, then segment k of every walk of branch b. The level-0 epoch (only
//! when the walk order starts with a plain action) is the leading segment of
//! every walk. [`EpochCursor`] yields them lazily, holding one branch path:
//! memory does not grow with the space.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::space::Space;

/// Sequence number of an epoch within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EpochId(pub u64);

/// The serial action that opens an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialStep {
    /// Position of the serial action in the walk order.
    pub position: usize,
    /// The option to run.
    pub option: u32,
}

/// One epoch: what runs, and on which walks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    /// Sequence number within the run.
    pub id: EpochId,
    /// Serial level: how many serial options the branch fixes.
    pub level: usize,
    /// The branch: the options of the first `level` serial actions.
    pub branch: Vec<u32>,
    /// The walks of the branch.
    pub walks: Range<u64>,
    /// The serial action run once before the segment, if any.
    pub serial: Option<SerialStep>,
    /// Positions of the plain actions of the segment.
    pub plain: Range<usize>,
    /// Whether this is the first segment of every walk it covers (walks are
    /// pruned and their state cloned from the initial state here).
    pub first: bool,
    /// Whether this is the last segment of every walk it covers (walks that
    /// finish it pass).
    pub last: bool,
}

/// Yields the epochs of a space depth-first: the leading segment, then
/// S1=o1 and the level-1 segments of branch (o1), then S2=p1 and the level-2
/// segments of (o1, p1), and so on.
#[derive(Debug, Clone)]
pub struct EpochCursor {
    space: Space,
    /// Branch of the epoch last yielded; `None` before the first.
    path: Option<Vec<u32>>,
    next_id: u64,
    done: bool,
}

impl EpochCursor {
    /// A cursor at the start of the space.
    pub fn new(space: Space) -> Self {
        EpochCursor { space, path: None, next_id: 0, done: false }
    }

    /// The next epoch. With `skip_subtree`, the branch of the epoch last
    /// yielded is not descended into (its serial action failed).
    pub fn next_epoch(&mut self, skip_subtree: bool) -> Option<Epoch> {
        if self.done {
            return None;
        }
        let depth = self.space.serial_positions().len();
        let next_path = match self.path.take() {
            None if self.space.has_leading_segment() => Some(Vec::new()),
            None => Some(vec![0]),
            Some(mut path) => {
                if !skip_subtree && path.len() < depth {
                    path.push(0);
                    Some(path)
                } else {
                    self.advance(path)
                }
            }
        };
        let Some(path) = next_path else {
            self.done = true;
            return None;
        };
        let epoch = self.epoch_at(&path);
        self.path = Some(path);
        Some(epoch)
    }

    /// Moves to the next sibling of `path`, or of its nearest ancestor that
    /// has one.
    fn advance(&self, mut path: Vec<u32>) -> Option<Vec<u32>> {
        let serials = self.space.serial_positions();
        while let Some(last) = path.pop() {
            let level = path.len();
            let count = self.space.option_counts()[serials[level]];
            if last + 1 < count {
                path.push(last + 1);
                return Some(path);
            }
        }
        None
    }

    fn epoch_at(&mut self, path: &[u32]) -> Epoch {
        let level = path.len();
        let (serial, plain) = self.space.segment(level);
        let id = EpochId(self.next_id);
        self.next_id += 1;
        Epoch {
            id,
            level,
            branch: path.to_vec(),
            walks: self.space.branch_range(path),
            serial: serial.map(|position| SerialStep { position, option: path[level - 1] }),
            plain,
            first: level == self.space.first_level(),
            last: level == self.space.last_level(),
        }
    }
}

impl Iterator for EpochCursor {
    type Item = Epoch;

    fn next(&mut self) -> Option<Epoch> {
        self.next_epoch(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::space::{EntryInfo, EntryKind};

    fn space(kinds: &[(EntryKind, u32)]) -> Space {
        let entries = kinds
            .iter()
            .map(|&(kind, n)| EntryInfo {
                name: "E",
                kind,
                options: vec![String::new(); n as usize],
            })
            .collect();
        Space::new(entries).unwrap()
    }

    use EntryKind::{Plain as P, Serial as S};

    #[test]
    fn depth_first_order() {
        let s = space(&[(P, 2), (S, 2), (P, 1), (S, 2)]);
        let branches: Vec<Vec<u32>> = EpochCursor::new(s).map(|e| e.branch).collect();
        let expected: Vec<Vec<u32>> =
            vec![vec![], vec![0], vec![0, 0], vec![0, 1], vec![1], vec![1, 0], vec![1, 1]];
        assert_eq!(branches, expected);
    }

    #[test]
    fn leading_serial_has_no_level_zero() {
        let s = space(&[(S, 3), (P, 2)]);
        let epochs: Vec<Epoch> = EpochCursor::new(s).collect();
        assert_eq!(epochs.len(), 3);
        assert!(epochs.iter().all(|e| e.first && e.last && e.serial.is_some()));
        assert_eq!(epochs[2].walks, 4..6);
    }

    #[test]
    fn skipping_a_failed_branch() {
        let s = space(&[(P, 2), (S, 2), (P, 1), (S, 2)]);
        let mut cursor = EpochCursor::new(s);
        assert_eq!(cursor.next_epoch(false).unwrap().branch, Vec::<u32>::new());
        assert_eq!(cursor.next_epoch(false).unwrap().branch, vec![0]);
        // S1=0 failed: its children are skipped.
        assert_eq!(cursor.next_epoch(true).unwrap().branch, vec![1]);
        assert_eq!(cursor.next_epoch(false).unwrap().branch, vec![1, 0]);
    }
}
