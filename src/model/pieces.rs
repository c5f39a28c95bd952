//! A batch's walks ([`Pieces`]): id ranges, or a window into a sample's
//! ids. A sampled round's batch of walks that start and end in one epoch
//! is a window: the Scheduler hands out a stretch of the sample's sorted
//! ids without making, copying or releasing a range per walk (its cost is
//! per batch, not per walk), and the runner runs the ids as they are.
//! Everything that needs ranges (a loss, the wire, a node) makes them from
//! the window: `Pieces::ranges`.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// The walks of a batch, in id order.
#[derive(Clone)]
pub enum Pieces {
    /// Id ranges, in id order.
    Ranges(Arc<[Range<u64>]>),
    /// The sampled walks `ids[window]` (sorted, distinct), each a piece of
    /// its own.
    Sampled {
        /// The whole sample, shared.
        ids: Arc<[u64]>,
        /// The batch's stretch of it.
        window: Range<usize>,
    },
}

impl Pieces {
    /// Walks in the batch.
    pub fn walks(&self) -> u64 {
        match self {
            Pieces::Ranges(ranges) => ranges.iter().map(|r| r.end - r.start).sum(),
            Pieces::Sampled { window, .. } => window.len() as u64,
        }
    }

    /// Pieces (ranges) in the batch.
    pub fn len(&self) -> usize {
        match self {
            Pieces::Ranges(ranges) => ranges.len(),
            Pieces::Sampled { window, .. } => window.len(),
        }
    }

    /// No walk at all.
    pub fn is_empty(&self) -> bool {
        self.walks() == 0
    }

    /// The pieces, as id ranges (one walk each for a window), in id order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Range<u64>> + '_ {
        let (ranges, ids): (&[Range<u64>], &[u64]) = match self {
            Pieces::Ranges(ranges) => (ranges, &[]),
            Pieces::Sampled { ids, window } => (&[], &ids[window.clone()]),
        };
        // One of the two is empty: chained, the iterator keeps its length.
        PiecesIter { ranges: ranges.iter(), ids: ids.iter() }
    }

    /// The pieces as a slice of ranges: borrowed, or made for a window.
    pub fn ranges(&self) -> Cow<'_, [Range<u64>]> {
        match self {
            Pieces::Ranges(ranges) => Cow::Borrowed(ranges),
            Pieces::Sampled { .. } => Cow::Owned(self.iter().collect()),
        }
    }

    /// The window's ids, for a window.
    pub fn sampled_ids(&self) -> Option<&[u64]> {
        match self {
            Pieces::Ranges(_) => None,
            Pieces::Sampled { ids, window } => Some(&ids[window.clone()]),
        }
    }
}

/// [`Pieces::iter`]: the ranges, or the window's ids as one-walk ranges.
struct PiecesIter<'a> {
    ranges: std::slice::Iter<'a, Range<u64>>,
    ids: std::slice::Iter<'a, u64>,
}

impl Iterator for PiecesIter<'_> {
    type Item = Range<u64>;

    fn next(&mut self) -> Option<Range<u64>> {
        match self.ranges.next() {
            Some(range) => Some(range.clone()),
            None => self.ids.next().map(|&id| id..id + 1),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let len = self.ranges.len() + self.ids.len();
        (len, Some(len))
    }
}

impl ExactSizeIterator for PiecesIter<'_> {}

impl From<Vec<Range<u64>>> for Pieces {
    fn from(ranges: Vec<Range<u64>>) -> Self {
        Pieces::Ranges(ranges.into())
    }
}

impl From<Range<u64>> for Pieces {
    fn from(range: Range<u64>) -> Self {
        Pieces::Ranges([range].into())
    }
}

impl From<&[Range<u64>]> for Pieces {
    fn from(ranges: &[Range<u64>]) -> Self {
        Pieces::Ranges(ranges.into())
    }
}

impl From<Arc<[Range<u64>]>> for Pieces {
    fn from(ranges: Arc<[Range<u64>]>) -> Self {
        Pieces::Ranges(ranges)
    }
}

/// Pieces are equal when they hold the same walks in the same pieces,
/// however they are held.
impl PartialEq for Pieces {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Pieces {}

impl fmt::Debug for Pieces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pieces::Ranges(ranges) => f.debug_list().entries(ranges.iter()).finish(),
            Pieces::Sampled { ids, window } => match &ids[window.clone()] {
                [] => write!(f, "no sampled walk"),
                [only] => write!(f, "sampled walk {only}"),
                [first, .., last] => {
                    write!(f, "{} sampled walks {first}..={last}", window.len())
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(ids: &[u64], window: Range<usize>) -> Pieces {
        Pieces::Sampled { ids: ids.into(), window }
    }

    #[test]
    fn a_window_is_its_ids_as_one_walk_ranges() {
        let pieces = window(&[2, 3, 9, 40, 41, 77], 1..5);
        assert_eq!(pieces.walks(), 4);
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces.iter().len(), 4);
        assert_eq!(pieces.iter().collect::<Vec<_>>(), vec![3..4, 9..10, 40..41, 41..42]);
        assert_eq!(pieces.ranges().into_owned(), vec![3..4, 9..10, 40..41, 41..42]);
        assert_eq!(pieces.sampled_ids(), Some(&[3, 9, 40, 41][..]));
        assert_eq!(format!("{pieces:?}"), "4 sampled walks 3..=41");
    }

    #[test]
    fn ranges_are_themselves() {
        let pieces = Pieces::from(vec![0..3, 5..6]);
        assert_eq!(pieces.walks(), 4);
        assert_eq!(pieces.len(), 2);
        assert!(matches!(pieces.ranges(), Cow::Borrowed(_)));
        assert_eq!(pieces.sampled_ids(), None);
        assert_eq!(format!("{pieces:?}"), "[0..3, 5..6]");
    }

    #[test]
    fn pieces_compare_by_their_walks_and_cuts() {
        assert_eq!(window(&[1, 5, 8], 0..2), Pieces::from(vec![1..2, 5..6]));
        assert_ne!(window(&[1, 2], 0..2), Pieces::from(1..3));
        assert_ne!(window(&[1, 5, 8], 1..3), window(&[1, 5, 8], 0..2));
        assert!(window(&[1, 5], 1..1).is_empty());
    }
}
