//! A walk seen from outside: [`WalkView`] (what pruning sees, and which of
//! the walk's options a `prune` call read: [`Reads`]) and [`Walk`] (an owned
//! description built from a walk id).

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::fmt;

use super::space::{EntryKind, Space, WalkId};

/// Typed access to the options of a walk order, by position.
pub(crate) trait OptionLookup: Send + Sync {
    /// The option value at `position`, index `option`.
    fn option_any(&self, position: usize, option: u32) -> &dyn Any;
    /// The type of the entry at `position`.
    fn entry_type(&self, position: usize) -> TypeId;
}

/// Which entries' options a pruning decision depended on: the options read
/// through a [`WalkView`], and the own option of every entry whose `prune`
/// is not the default (an entry's `prune` is a method of its option). A
/// pure rule gives the same answer for every walk that agrees on these, so
/// the batch loop asks once per such subtree ([`Space::same_until`]).
///
/// Atomics with relaxed loads and stores (never read-modify-write): one
/// thread writes them, and [`WalkView`] stays `Send + Sync`.
///
/// [`Space::same_until`]: super::space::Space::same_until
#[derive(Debug, Default)]
pub(crate) struct Reads {
    /// Bit `p` (below 63): position `p` was read; bit 63: every position.
    mask: Cell<u64>,
    /// Set by the default `prune` bodies: the entry asked declined to look.
    declined: Cell<bool>,
}

/// [`Reads`]'s bit for position `p`: positions past 62 share the bit that
/// means "every position".
const fn read_bit(position: usize) -> u64 {
    if position < 63 { 1 << position } else { Reads::ALL }
}

impl Reads {
    /// Every position was read (the walk's id was).
    pub(crate) const ALL: u64 = 1 << 63;

    /// Starts a new decision.
    #[inline(always)]
    pub(crate) fn clear(&self) {
        self.mask.set(0);
    }

    /// The positions read since [`clear`](Self::clear).
    #[inline(always)]
    pub(crate) fn mask(&self) -> u64 {
        self.mask.get()
    }

    #[inline(always)]
    fn add(&self, bits: u64) {
        self.mask.set(self.mask.get() | bits);
    }
}

/// The options chosen by one walk, as [`crate::Action::prune`] sees them.
#[derive(Clone, Copy)]
pub struct WalkView<'a> {
    id: u64,
    digits: &'a [u32],
    lookup: &'a dyn OptionLookup,
    /// The entry whose `prune` is asked (`usize::MAX` outside one).
    entry: usize,
    /// What this view was asked.
    reads: &'a Reads,
}

impl<'a> WalkView<'a> {
    pub(crate) fn new(
        id: u64,
        digits: &'a [u32],
        lookup: &'a dyn OptionLookup,
        reads: &'a Reads,
    ) -> Self {
        WalkView { id, digits, lookup, entry: usize::MAX, reads }
    }

    /// Asks the entry at `position` through `prune` (its own `prune`
    /// called with this view seen from that entry), noting its own option
    /// as read unless its `prune` is the default one.
    #[inline(always)]
    pub(crate) fn ask(&self, position: usize, prune: impl FnOnce(&WalkView<'a>) -> bool) -> bool {
        self.reads.declined.set(false);
        let pruned = prune(&self.at_entry(position));
        if !self.reads.declined.get() {
            self.reads.add(read_bit(position));
        }
        pruned
    }

    /// Called by the default `prune` bodies: this entry's option plays no
    /// part in the decision.
    #[inline(always)]
    pub(crate) fn decline(&self) {
        self.reads.declined.set(true);
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

    /// The walk's id. A rule that reads it is asked for every walk: an id
    /// tells every option apart (see [`crate::Action::prune`]).
    pub fn id(&self) -> WalkId {
        self.reads.add(Reads::ALL);
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
        self.reads.add(read_bit(position));
        self.digits[position]
    }

    /// The option index at `position`, or `u32::MAX` (no option) past the
    /// end; never panics, so unused lookups fold away in the hot loop. Not a
    /// read: the chain uses it for an entry's own option, which
    /// [`ask`](Self::ask) accounts for.
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
        self.reads.add(read_bit(position));
        self.lookup.option_any(position, digit).downcast_ref()
    }
}

impl fmt::Debug for WalkView<'_> {
    /// Shows every option: counts as reading them all.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.reads.add(Reads::ALL);
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
