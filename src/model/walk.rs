//! A walk seen from outside: [`WalkView`] (what pruning sees) and [`Walk`]
//! (an owned description built from a walk id).

use std::any::{Any, TypeId};
use std::fmt;

use super::space::{EntryKind, Space, WalkId};

/// Typed access to the options of a walk order, by position.
pub(crate) trait OptionLookup: Send + Sync {
    /// The option value at `position`, index `option`.
    fn option_any(&self, position: usize, option: u32) -> &dyn Any;
    /// The type of the entry at `position`.
    fn entry_type(&self, position: usize) -> TypeId;
}

/// The options chosen by one walk, as [`crate::Action::prune`] sees them.
#[derive(Clone, Copy)]
pub struct WalkView<'a> {
    id: u64,
    digits: &'a [u32],
    lookup: &'a dyn OptionLookup,
    /// The entry whose `prune` is asked (`usize::MAX` outside one).
    entry: usize,
}

impl<'a> WalkView<'a> {
    pub(crate) fn new(id: u64, digits: &'a [u32], lookup: &'a dyn OptionLookup) -> Self {
        WalkView { id, digits, lookup, entry: usize::MAX }
    }

    /// The same view, as the entry at `position` sees it.
    #[inline(always)]
    pub(crate) fn at_entry(&self, position: usize) -> Self {
        WalkView { entry: position, ..*self }
    }

    /// The position in the walk order of the entry whose
    /// [`prune`](crate::Action::prune) is asked: what tells apart the
    /// entries of an action type used at more than one position.
    ///
    /// # Panics
    /// Outside a `prune` call (a view handed out otherwise has no entry).
    pub fn position(&self) -> usize {
        assert!(self.entry != usize::MAX, "WalkView::position is only known inside prune");
        self.entry
    }

    /// The walk's id.
    pub fn id(&self) -> WalkId {
        WalkId(self.id)
    }

    /// Number of entries in the walk order.
    pub fn len(&self) -> usize {
        self.digits.len()
    }

    /// Always false: a walk order has at least one entry.
    pub fn is_empty(&self) -> bool {
        self.digits.is_empty()
    }

    /// The option index chosen at `position`.
    ///
    /// # Panics
    /// If `position` is not below [`len`](Self::len); inside `prune` that
    /// panic fails the walk, at the pruning entry.
    pub fn option_index(&self, position: usize) -> u32 {
        self.digits[position]
    }

    /// The option index at `position`, or `u32::MAX` (no option) past the
    /// end; never panics, so unused lookups fold away in the hot loop.
    #[inline(always)]
    pub(crate) fn option_at(&self, position: usize) -> u32 {
        self.digits.get(position).copied().unwrap_or(u32::MAX)
    }

    /// The option chosen for the *first* entry of type `T`, if the walk
    /// order has one. With a type used at several positions, use
    /// [`get_at`](Self::get_at) with the position you mean (inside `prune`,
    /// [`position`](Self::position) is the asking entry's own).
    pub fn get<T: 'static>(&self) -> Option<&'a T> {
        let wanted = TypeId::of::<T>();
        let position = (0..self.digits.len()).find(|&p| self.lookup.entry_type(p) == wanted)?;
        self.get_at(position)
    }

    /// The option chosen at `position`, if that entry has type `T`.
    pub fn get_at<T: 'static>(&self, position: usize) -> Option<&'a T> {
        let digit = *self.digits.get(position)?;
        self.lookup.option_any(position, digit).downcast_ref()
    }
}

impl fmt::Debug for WalkView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalkView").field("id", &self.id).field("digits", &self.digits).finish()
    }
}

/// One step of a [`Walk`]: an entry of the walk order and its chosen option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkStep {
    /// Position in the walk order.
    pub position: usize,
    /// The action's type name.
    pub name: &'static str,
    /// Plain or serial.
    pub kind: EntryKind,
    /// Index of the chosen option.
    pub option: u32,
    /// `Debug` text of the chosen option.
    pub label: String,
}

/// A walk built from its id, without enumerating the space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    /// The walk's id.
    pub id: WalkId,
    /// One step per entry of the walk order.
    pub steps: Vec<WalkStep>,
}

impl Walk {
    pub(crate) fn from_digits(space: &Space, id: u64, digits: &[u32]) -> Self {
        let steps = space
            .entries()
            .iter()
            .zip(digits)
            .enumerate()
            .map(|(position, (entry, &option))| WalkStep {
                position,
                name: entry.name,
                kind: entry.kind,
                option,
                label: entry.options[option as usize].clone(),
            })
            .collect();
        Walk { id: WalkId(id), steps }
    }

    /// The chosen option indices, one per entry.
    pub fn option_indices(&self) -> Vec<u32> {
        self.steps.iter().map(|s| s.option).collect()
    }
}

impl fmt::Display for Walk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "walk {}: [", self.id)?;
        for (i, step) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let serial = step.kind == EntryKind::Serial;
            f.write_str(&super::option_text(step.name, &step.label, serial))?;
        }
        f.write_str("]")
    }
}
