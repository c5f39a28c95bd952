//! The walk space of a walk order: its size, the walk-id numbering, segments,
//! branches and state blocks. Pure arithmetic over option counts.
//!
//! # Numbering
//! A walk id is a mixed-radix number whose digits are the chosen option
//! indices. The serial entries are the most significant digits (in walk-order
//! order), then the plain entries (in walk-order order); the last plain entry
//! is the least significant. So every branch — the walks sharing their first
//! k serial options — is one contiguous id range, and work can move as ranges.

use std::fmt;
use std::ops::Range;

use thiserror::Error;

/// The stable id of a walk: its index in the walk space.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct WalkId(pub u64);

impl From<u64> for WalkId {
    fn from(id: u64) -> Self {
        WalkId(id)
    }
}

impl From<WalkId> for u64 {
    fn from(id: WalkId) -> Self {
        id.0
    }
}

impl fmt::Display for WalkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether an entry of the walk order is a plain action or a serial action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Runs inside each walk, in parallel with other walks.
    Plain = 0,
    /// Runs once per branch at a global barrier.
    Serial = 1,
}

/// One entry of a walk order, as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// The action's type name, without its module path.
    pub name: &'static str,
    /// Plain or serial.
    pub kind: EntryKind,
    /// The `Debug` text of each option, in order.
    pub options: Vec<String>,
}

/// A walk order that cannot be run.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OrderError {
    /// The walk order has no entries.
    #[error("the walk order is empty: add at least one action with `then` or `serial`")]
    Empty,
    /// An entry returned no options, which would make the space empty.
    #[error(
        "action {name} (entry {position}) has no options: `options()` must return at least one"
    )]
    NoOptions {
        /// Position of the entry in the walk order.
        position: usize,
        /// Type name of the entry.
        name: &'static str,
    },
    /// An entry has more options than a walk id digit can hold.
    #[error(
        "action {name} (entry {position}) has {count} options; at most {} are supported",
        u32::MAX
    )]
    TooManyOptions {
        /// Position of the entry in the walk order.
        position: usize,
        /// Type name of the entry.
        name: &'static str,
        /// How many options it returned.
        count: usize,
    },
    /// The product of the option counts does not fit in a `u64` walk id.
    #[error(
        "the walk space overflows a u64 walk id (more than 18446744073709551615 walks): split the walk order"
    )]
    Overflow,
}

/// A walk id outside the space.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("walk id {id} is not in the space: valid ids are 0..{size}")]
pub struct IdOutOfRange {
    /// The id asked for.
    pub id: u64,
    /// The size of the space.
    pub size: u64,
}

/// The shape of a walk space. Built once per walk order; every query is O(walk
/// order length) or better.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    entries: Vec<EntryInfo>,
    radix: Vec<u32>,
    weight: Vec<u64>,
    /// Positions from least to most significant digit.
    step_order: Vec<usize>,
    /// Positions of the serial entries, in walk order.
    serials: Vec<usize>,
    size: u64,
    /// The [`Reads`](super::walk::Reads) bits after which the next walk
    /// differs: every position, and the least significant digit if it
    /// changes at all.
    next_differs: u64,
    /// The digits that change (option count above 1), least significant
    /// first, for [`Space::seek`].
    carries: Vec<Carry>,
}

/// One digit of [`Space::seek`]'s addition, with a reciprocal of its radix.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Carry {
    position: usize,
    radix: u64,
    /// `ceil(2^64 / radix)`: for `n < 2^32`, `n / radix` is the high half
    /// of `n * reciprocal` (Lemire, Kaser, Kurz, "Faster remainder by
    /// direct computation", 2019), a multiplication instead of a division.
    reciprocal: u64,
    /// `ceil(2^64 / (weight * radix))`, the reciprocal of the next digit's
    /// weight: for an id below 2^32, the id over that weight is one
    /// multiplication (0 when the weight is 2^32 or more, as it should be).
    above: u64,
}

impl Carry {
    /// Digit `position`, of `radix` options and weight `weight`.
    fn new(position: usize, radix: u32, weight: u64) -> Self {
        debug_assert!(radix > 1);
        let radix = u64::from(radix);
        // At most the space's size, so no overflow; at least 2.
        let next_weight = weight * radix;
        Carry {
            position,
            radix,
            reciprocal: u64::MAX / radix + 1,
            above: u64::MAX / next_weight + 1,
        }
    }

    /// `n / (weight * radix)`, for `n < 2^32`.
    #[inline(always)]
    fn above(&self, n: u64) -> u64 {
        ((u128::from(self.above) * u128::from(n)) >> 64) as u64
    }

    /// `n / radix` and `n % radix`.
    #[inline]
    fn div_rem(&self, n: u64) -> (u64, u64) {
        let quotient = if n >> 32 == 0 {
            ((u128::from(self.reciprocal) * u128::from(n)) >> 64) as u64
        } else {
            n / self.radix
        };
        (quotient, n - quotient * self.radix)
    }
}

impl Space {
    /// Builds the space of the given entries.
    pub fn new(entries: Vec<EntryInfo>) -> Result<Self, OrderError> {
        if entries.is_empty() {
            return Err(OrderError::Empty);
        }
        let mut radix = Vec::with_capacity(entries.len());
        for (position, entry) in entries.iter().enumerate() {
            let count = entry.options.len();
            if count == 0 {
                return Err(OrderError::NoOptions { position, name: entry.name });
            }
            let count = u32::try_from(count).map_err(|_| OrderError::TooManyOptions {
                position,
                name: entry.name,
                count,
            })?;
            radix.push(count);
        }
        let serials: Vec<usize> =
            (0..entries.len()).filter(|&p| entries[p].kind == EntryKind::Serial).collect();
        let plains = (0..entries.len()).filter(|&p| entries[p].kind == EntryKind::Plain);
        let most_to_least: Vec<usize> = serials.iter().copied().chain(plains).collect();
        let step_order: Vec<usize> = most_to_least.iter().rev().copied().collect();
        let mut weight = vec![0u64; entries.len()];
        let mut acc: u64 = 1;
        for &p in &step_order {
            weight[p] = acc;
            acc = acc.checked_mul(u64::from(radix[p])).ok_or(OrderError::Overflow)?;
        }
        let fast = step_order[0];
        let fast_bit = if fast < 63 && radix[fast] > 1 { 1 << fast } else { 0 };
        let next_differs = super::walk::Reads::ALL | fast_bit;
        let carries = step_order
            .iter()
            .filter(|&&p| radix[p] > 1)
            .map(|&p| Carry::new(p, radix[p], weight[p]))
            .collect();
        Ok(Space { entries, radix, weight, step_order, serials, size: acc, next_differs, carries })
    }

    /// Number of walks in the space.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The entries of the walk order.
    pub fn entries(&self) -> &[EntryInfo] {
        &self.entries
    }

    /// Number of entries in the walk order.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a space has at least one entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Option count of each entry, in walk order.
    pub fn option_counts(&self) -> &[u32] {
        &self.radix
    }

    /// Positions of the serial entries, in walk order.
    pub fn serial_positions(&self) -> &[usize] {
        &self.serials
    }

    /// Whether the walk order starts with a plain action (then every walk has
    /// a level-0 segment that no serial action precedes).
    pub fn has_leading_segment(&self) -> bool {
        self.entries[0].kind == EntryKind::Plain
    }

    /// Segments per walk: one per serial action, plus one if the walk order
    /// starts with a plain action.
    pub fn segments_per_walk(&self) -> usize {
        self.serials.len() + usize::from(self.has_leading_segment())
    }

    /// The option indices (one per entry, in walk order) of walk `id`.
    pub fn digits(&self, id: u64) -> Result<Vec<u32>, IdOutOfRange> {
        let mut digits = vec![0; self.len()];
        self.decode_into(id, &mut digits)?;
        Ok(digits)
    }

    /// Decodes walk `id` into `digits` (one per entry).
    pub fn decode_into(&self, id: u64, digits: &mut [u32]) -> Result<(), IdOutOfRange> {
        if id >= self.size {
            return Err(IdOutOfRange { id, size: self.size });
        }
        for (p, d) in digits.iter_mut().enumerate() {
            // The quotient modulo a u32 radix always fits in u32.
            *d = ((id / self.weight[p]) % u64::from(self.radix[p])) as u32;
        }
        Ok(())
    }

    /// Decodes walk `id` into `kept`, which hold the digits of walk
    /// `from`, and into `digits` too (the batch loop's working copy, which
    /// its odometer then steps): incrementally when `id` is not below
    /// `from`, by adding `id - from` to `kept` digit by digit, least
    /// significant first, and stopping when nothing carries. Ids close
    /// together (a sorted sample's) share their more significant digits,
    /// which it does not touch; a carry smaller than the digit's radix
    /// (most of them) costs no division, and one below 2^32 a
    /// multiplication. Below `from`, it decodes from scratch
    /// ([`Space::decode_into`]).
    ///
    /// An id below 2^32 more than one step away is decoded whole instead,
    /// with no branch on the data ([`Space::decode_small`]): the carries'
    /// tests are what a sample's scattered ids mispredict. Its digits are
    /// stored to both buffers as they are made: copying them from one
    /// buffer to the other just after (a wide load of narrow stores, which
    /// the CPU cannot forward) stalled the loop on every sampled walk.
    #[inline]
    pub(crate) fn seek(
        &self,
        from: u64,
        id: u64,
        kept: &mut [u32],
        digits: &mut [u32],
    ) -> Result<(), IdOutOfRange> {
        if id >> 32 == 0 && id != from + 1 && id < self.size {
            self.decode_small(id, kept, digits);
            return Ok(());
        }
        if id < from || id >= self.size {
            self.decode_into(id, kept)?;
        } else {
            debug_assert_eq!(self.id_of(kept), Some(from), "the digits are `from`'s");
            let mut carry = id - from;
            for step in &self.carries {
                if carry == 0 {
                    break;
                }
                let (quotient, rest) =
                    if carry < step.radix { (0, carry) } else { step.div_rem(carry) };
                // Both terms are below the radix, a u32.
                let sum = u64::from(kept[step.position]) + rest;
                if sum >= step.radix {
                    kept[step.position] = (sum - step.radix) as u32;
                    carry = quotient + 1;
                } else {
                    kept[step.position] = sum as u32;
                    carry = quotient;
                }
            }
        }
        digits.copy_from_slice(kept);
        Ok(())
    }

    /// Decodes `id` (below 2^32 and the space's size) into the digits of
    /// the entries with more than one option (the others stay 0), in `a`
    /// and `b` alike: each digit is the id over its weight less the id over
    /// the next weight times its radix, every quotient one multiplication
    /// by a reciprocal, none depending on another.
    #[inline]
    fn decode_small(&self, id: u64, a: &mut [u32], b: &mut [u32]) {
        debug_assert!(id >> 32 == 0 && id < self.size);
        // The id over the weight of the digit at hand: 1 for the first.
        let mut lower = id;
        for step in &self.carries {
            let upper = step.above(id);
            let digit = (lower - upper * step.radix) as u32;
            a[step.position] = digit;
            b[step.position] = digit;
            lower = upper;
        }
    }

    /// The walk with id `id`: its chosen option of every entry.
    pub fn walk(&self, id: u64) -> Result<super::walk::Walk, IdOutOfRange> {
        let digits = self.digits(id)?;
        Ok(super::walk::Walk::from_digits(self, id, &digits))
    }

    /// The walk id of the given option indices, or `None` if there is not one
    /// index per entry or an index is out of range.
    pub fn id_of(&self, digits: &[u32]) -> Option<u64> {
        if digits.len() != self.len() {
            return None;
        }
        let mut id = 0u64;
        for (p, &d) in digits.iter().enumerate() {
            if d >= self.radix[p] {
                return None;
            }
            id += u64::from(d) * self.weight[p];
        }
        Some(id)
    }

    /// Advances `digits` to the next walk id, in id order. Returns false
    /// (leaving all digits zero) when it wraps past the last walk.
    #[inline]
    pub fn step(&self, digits: &mut [u32]) -> bool {
        for &p in &self.step_order {
            digits[p] += 1;
            if digits[p] < self.radix[p] {
                return true;
            }
            digits[p] = 0;
        }
        false
    }

    /// The first walk id after `id` whose option differs from `id`'s at one
    /// of the positions in `read` (a [`Reads`](super::walk::Reads) mask:
    /// bit `p` for position `p`, bit 63 for every position), or the
    /// space's size if none does. The walks in between agree with `id` on
    /// every read option, so a pure pruning rule that read only those
    /// decides them all as it decided `id`.
    ///
    /// They form an aligned block: the read digit of least weight `w`
    /// changes first, every `w` ids, and no more significant digit changes
    /// before it does.
    #[inline]
    pub(crate) fn same_until(&self, id: u64, read: u64) -> u64 {
        if read & self.next_differs != 0 {
            // The fastest digit (or every one) was read: the next walk
            // differs, and no division is needed to say so.
            return (id + 1).min(self.size);
        }
        // The least weight among the read digits that change at all.
        let mut weight = self.size;
        let mut bits = read;
        while bits != 0 {
            let position = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if self.radix.get(position).is_some_and(|&r| r > 1) {
                weight = weight.min(self.weight[position]);
            }
        }
        (id / weight + 1).saturating_mul(weight).min(self.size)
    }

    /// The position of the least significant digit (the last plain entry, or
    /// the last serial entry if there is no plain one).
    pub fn least_significant(&self) -> usize {
        self.step_order[0]
    }

    /// The positions of the digits, least significant first.
    pub(crate) fn significance(&self) -> &[usize] {
        &self.step_order
    }

    /// Epochs with a serial action strictly below a branch at `level`: the
    /// ones a dead branch's skip leaves out.
    pub fn serial_epochs_below(&self, level: usize) -> u64 {
        let mut count = 0u64;
        let mut branches = 1u64;
        for &position in self.serials.iter().skip(level) {
            branches = branches.saturating_mul(u64::from(self.radix[position]));
            count = count.saturating_add(branches);
        }
        count
    }

    /// The branch of a walk at level `level`: its first `level` serial options.
    pub fn branch_of(&self, digits: &[u32], level: usize) -> Vec<u32> {
        self.serials[..level].iter().map(|&p| digits[p]).collect()
    }

    /// The id range of a branch: the walks whose first serial options are
    /// `branch`. The empty branch is the whole space.
    pub fn branch_range(&self, branch: &[u32]) -> Range<u64> {
        let mut start = 0;
        let mut len = self.size;
        for (&p, &d) in self.serials.iter().zip(branch) {
            len = self.weight[p];
            start += u64::from(d) * len;
        }
        start..start + len
    }

    /// Walks in one deepest branch (all serial options fixed): the product of
    /// the plain option counts.
    pub fn deepest_branch_len(&self) -> u64 {
        match self.serials.last() {
            Some(&p) => self.weight[p],
            None => self.size,
        }
    }

    /// The plain positions of segment `level`, and the serial position that
    /// opens it (none for the leading segment, level 0).
    pub fn segment(&self, level: usize) -> (Option<usize>, Range<usize>) {
        let end = self.serials.get(level).copied().unwrap_or(self.len());
        if level == 0 {
            (None, 0..end)
        } else {
            let serial = self.serials[level - 1];
            (Some(serial), serial + 1..end)
        }
    }

    /// Number of epochs: the leading segment's, plus one per branch at each
    /// serial level. Computed, not enumerated (it can exceed any walk count
    /// the run could finish).
    pub fn epoch_count(&self) -> u128 {
        let mut branches: u128 = 1;
        let mut epochs = u128::from(self.has_leading_segment());
        for &p in &self.serials {
            branches = branches.saturating_mul(u128::from(self.radix[p]));
            epochs = epochs.saturating_add(branches);
        }
        epochs
    }

    /// The first level a walk has a segment at.
    pub fn first_level(&self) -> usize {
        usize::from(!self.has_leading_segment())
    }

    /// The last level (the level of every walk's last segment).
    pub fn last_level(&self) -> usize {
        self.serials.len()
    }
}

/// How walk states are grouped while held between epochs: each deepest branch
/// is cut into blocks of at most `block_len` walks. Blocks never straddle a
/// branch, so every epoch's range is a whole number of blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Blocks {
    branch_len: u64,
    block_len: u64,
}

impl Blocks {
    /// Blocks of at most `block_len` walks within branches of `branch_len`.
    pub fn new(branch_len: u64, block_len: u64) -> Self {
        let block_len = block_len.clamp(1, branch_len.max(1));
        Blocks { branch_len: branch_len.max(1), block_len }
    }

    /// Chooses the block length for a space run by `runners` runners: small
    /// enough that one deepest branch spreads over every runner, at most 1024.
    pub fn for_space(space: &Space, runners: usize) -> Self {
        let branch_len = space.deepest_branch_len();
        let spread = branch_len.div_ceil(4 * runners.max(1) as u64);
        Blocks::new(branch_len, spread.clamp(1, 1024))
    }

    /// Walks per block (the last block of a branch may be shorter).
    pub fn block_len(&self) -> u64 {
        self.block_len
    }

    /// Whether these are blocks of `space` (as [`Blocks::for_space`] makes
    /// them, for any runner count): checked on nodes, which get them from a
    /// coordinator.
    pub fn fits(&self, space: &Space) -> bool {
        self.branch_len == space.deepest_branch_len()
            && (1..=self.branch_len).contains(&self.block_len)
    }

    /// The block holding walk `id`.
    pub fn block_of(&self, id: u64) -> Range<u64> {
        let branch_start = id - id % self.branch_len;
        let start = branch_start + (id - branch_start) / self.block_len * self.block_len;
        let end = (start + self.block_len).min(branch_start + self.branch_len);
        start..end
    }

    /// Rounds `end` up to the end of the block holding `end - 1`.
    pub fn round_up(&self, end: u64) -> u64 {
        if end == 0 { 0 } else { self.block_of(end - 1).end }
    }

    /// The blocks making up `range`, which must start on a block boundary.
    pub fn split(&self, range: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let mut next = range.start;
        std::iter::from_fn(move || {
            if next >= range.end {
                return None;
            }
            let block = self.block_of(next);
            let block = block.start.max(next)..block.end.min(range.end);
            next = block.end;
            Some(block)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn space_of(kinds: &[(EntryKind, u32)]) -> Space {
        let entries = kinds
            .iter()
            .map(|&(kind, n)| EntryInfo {
                name: "E",
                kind,
                options: (0..n).map(|i| i.to_string()).collect(),
            })
            .collect();
        Space::new(entries).unwrap()
    }

    use EntryKind::{Plain as P, Serial as S};

    #[test]
    fn reference_sizes_and_segments() {
        let s = space_of(&[(P, 3), (P, 3), (S, 2), (P, 3), (P, 3), (S, 2), (P, 3)]);
        assert_eq!((s.size(), s.segments_per_walk()), (972, 3));
        let s = space_of(&[(S, 2), (P, 3), (P, 3), (P, 3), (S, 2)]);
        assert_eq!((s.size(), s.segments_per_walk()), (108, 2));
        let s = space_of(&[(P, 3); 4]);
        assert_eq!((s.size(), s.segments_per_walk()), (81, 1));
    }

    /// `same_until` against walking the ids one by one, on a space with
    /// serial entries (whose digits are the most significant), every read
    /// mask of its 5 positions and every id.
    #[test]
    fn same_until_is_the_first_id_that_changes_a_read_option() {
        let s = space_of(&[(P, 3), (S, 2), (P, 1), (S, 3), (P, 2)]);
        for read in (0u64..32).chain([super::super::walk::Reads::ALL]) {
            for id in 0..s.size() {
                let d = s.digits(id).unwrap();
                let same = |other: u64| {
                    let e = s.digits(other).unwrap();
                    (0..5).all(|p| (read >> p) & 1 == 0 || d[p] == e[p]) && read < 1 << 63
                };
                let expected = (id + 1..s.size()).find(|&o| !same(o)).unwrap_or(s.size());
                assert_eq!(s.same_until(id, read), expected, "id {id}, read {read:#b}");
            }
        }
    }

    /// `Carry::div_rem` against `/` and `%`, on both sides of its 32-bit
    /// fast path.
    #[test]
    fn reciprocals_divide_exactly() {
        for radix in [2, 3, 7, 10, 1000, 65_535, 1 << 31, u32::MAX - 1, u32::MAX] {
            let carry = Carry::new(0, radix, 1);
            let radix = u64::from(radix);
            let edges = [0, 1, radix - 1, radix, radix + 1, 3 * radix - 1];
            let wide = [(1 << 32) - 1, 1 << 32, u64::MAX - 1, u64::MAX];
            for n in edges.into_iter().chain(wide).chain((0..2000).map(|i| i * 2_147_483 + 11)) {
                assert_eq!(carry.div_rem(n), (n / radix, n % radix), "{n} / {radix}");
            }
        }
    }

    /// `seek` against `decode_into` for every pair of ids of a small space
    /// with serial entries and an entry of one option.
    #[test]
    fn seek_decodes_every_pair_as_decode_into() {
        let s = space_of(&[(P, 3), (S, 2), (P, 1), (S, 3), (P, 4)]);
        for from in 0..s.size() {
            for id in 0..s.size() {
                let (mut kept, mut digits) = (s.digits(from).unwrap(), s.digits(from).unwrap());
                s.seek(from, id, &mut kept, &mut digits).unwrap();
                assert_eq!(kept, s.digits(id).unwrap(), "from {from} to {id}");
                assert_eq!(digits, kept);
            }
        }
        let (mut kept, mut digits) = (s.digits(0).unwrap(), s.digits(0).unwrap());
        let beyond = s.seek(0, s.size(), &mut kept, &mut digits);
        assert_eq!(beyond, Err(IdOutOfRange { id: 72, size: 72 }));
    }

    /// Near 2^32, where `seek` changes from the whole decode by
    /// reciprocals to the carries: weights of 2^32 and more, a digit's
    /// next weight just below, at and just above it.
    #[test]
    fn seek_decodes_ids_on_both_sides_of_two_to_the_32() {
        let top = 1u64 << 32;
        for kinds in [
            vec![(P, 65_536), (P, 65_536), (P, 3)],
            vec![(P, 65_537), (S, 65_535), (P, 1), (P, 7)],
            vec![(P, 2), (P, 65_536), (P, 32_768), (S, 5)],
            vec![(P, 3), (P, 65_536), (P, 21_846), (P, 2)],
        ] {
            let s = space_of(&kinds);
            let ids = [0, 1, 2, top - 3, top - 2, top - 1, top, top + 1, top + 70_000];
            let (mut from, mut kept, mut digits) = (0, vec![0; s.len()], vec![0; s.len()]);
            for id in ids.into_iter().filter(|&id| id < s.size()) {
                s.seek(from, id, &mut kept, &mut digits).unwrap();
                assert_eq!(kept, s.digits(id).unwrap(), "{kinds:?}: from {from} to {id}");
                assert_eq!(digits, kept);
                from = id;
            }
            for id in ids.into_iter().rev().filter(|&id| id < s.size()) {
                s.seek(from, id, &mut kept, &mut digits).unwrap();
                assert_eq!(kept, s.digits(id).unwrap(), "{kinds:?}: from {from} back to {id}");
                assert_eq!(digits, kept);
                from = id;
            }
        }
    }

    proptest::proptest! {
        /// `seek` against `decode_into` on random spaces (up to 2^64 walks,
        /// option counts from 1 to 5,000) and sorted id lists, near
        /// together or far apart, each id decoded from the one before, as
        /// the batch loop decodes its units' first walks.
        #[test]
        fn seek_follows_sorted_ids(
            counts in proptest::collection::vec((proptest::bool::ANY, proptest::prop_oneof![1u32..4, 1u32..12, 1u32..5_000]), 1..8),
            picks in proptest::collection::vec((proptest::num::u64::ANY, 0u64..40), 1..60),
            near in proptest::bool::ANY,
        ) {
            // Entries while the size fits a u64.
            let mut size: u64 = 1;
            let kinds: Vec<(EntryKind, u32)> = counts
                .into_iter()
                .map(|(serial, n)| (if serial { S } else { P }, n))
                .take_while(|&(_, n)| size.checked_mul(u64::from(n)).map(|m| size = m).is_some())
                .collect();
            let s = space_of(&kinds);
            let mut ids: Vec<u64> = if near {
                let mut at = picks[0].0 % s.size();
                picks.iter().map(|&(_, gap)| { at = (at + gap).min(s.size() - 1); at }).collect()
            } else {
                picks.iter().map(|&(pick, _)| pick % s.size()).collect()
            };
            ids.sort_unstable();
            let (mut from, mut kept) = (0, vec![0; s.len()]);
            for id in ids {
                // The working copy: another walk's digits, where the
                // loop's odometer stepped to since `from`.
                let mut digits = s.digits(s.size() - 1 - id / 2).unwrap();
                s.seek(from, id, &mut kept, &mut digits).unwrap();
                proptest::prop_assert_eq!(&kept, &s.digits(id).unwrap(), "from {} to {}", from, id);
                proptest::prop_assert_eq!(&digits, &kept);
                from = id;
            }
        }
    }

    #[test]
    fn branches_are_contiguous() {
        let s = space_of(&[(P, 3), (S, 2), (P, 2), (S, 3)]);
        assert_eq!(s.branch_range(&[]), 0..36);
        assert_eq!(s.branch_range(&[1]), 18..36);
        assert_eq!(s.branch_range(&[1, 2]), 30..36);
        for id in 30..36 {
            assert_eq!(s.branch_of(&s.digits(id).unwrap(), 2), vec![1, 2]);
        }
    }

    #[test]
    fn errors_are_reported() {
        assert_eq!(Space::new(vec![]), Err(OrderError::Empty));
        let empty = EntryInfo { name: "X", kind: P, options: vec![] };
        assert!(matches!(Space::new(vec![empty]), Err(OrderError::NoOptions { position: 0, .. })));
        let big = EntryInfo { name: "B", kind: P, options: vec![String::new(); 1 << 16] };
        assert_eq!(Space::new(vec![big; 4]), Err(OrderError::Overflow));
        let s = space_of(&[(P, 2)]);
        assert_eq!(s.digits(2), Err(IdOutOfRange { id: 2, size: 2 }));
        assert_eq!(s.id_of(&[2]), None);
    }

    #[test]
    fn walk_ids_convert_to_and_from_u64() {
        for n in [0, 1, 41, u64::MAX] {
            let id = WalkId::from(n);
            assert_eq!(id, WalkId(n));
            assert_eq!(u64::from(id), n);
            let back: u64 = id.into();
            assert_eq!(WalkId::from(back), id);
            assert_eq!(id.to_string(), n.to_string());
        }
        // Where a walk id goes in, either form does.
        let s = space_of(&[(P, 3), (P, 2)]);
        let id: WalkId = 5.into();
        assert_eq!(s.digits(id.into()), s.digits(5));
    }

    #[test]
    fn blocks_stay_inside_branches() {
        let b = Blocks::new(10, 4);
        assert_eq!(b.block_of(9), 8..10);
        assert_eq!(b.block_of(10), 10..14);
        let parts: Vec<_> = b.split(0..20).collect();
        assert_eq!(parts, vec![0..4, 4..8, 8..10, 10..14, 14..18, 18..20]);
        assert_eq!(b.round_up(11), 14);
    }
}
