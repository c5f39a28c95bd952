//! Where held walk states live in a cluster run, and which of them are
//! still live.
//!
//! In a run with serial actions a walk's state stays on the node that ran
//! its first segment (sticky routing): every later segment must run there.
//! The coordinator records, per id range, the node ("home") holding it and
//! a bit per walk saying whether the walk is still going (it has neither
//! ended nor been aborted). From that it routes each later epoch's walks to
//! their homes ([`Holdings::pieces`]) and, when a node is lost, names the
//! walks whose state went with it ([`Holdings::lose`]).
//!
//! Memory is one bit per held walk, only in cluster runs, only while the
//! walk is held.

use std::collections::BTreeMap;
use std::ops::Range;

/// One bit per walk of a range: set while the walk is live.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct LiveSet {
    len: u64,
    words: Vec<u64>,
}

impl LiveSet {
    /// `len` walks, all live.
    pub fn all(len: u64) -> Self {
        LiveSet::from_bits((0..len).map(|_| true))
    }

    /// `len` walks, none live.
    pub fn none(len: u64) -> Self {
        LiveSet { len, words: vec![0; len.div_ceil(64) as usize] }
    }

    /// From one bit per walk, in order.
    pub fn from_bits(bits: impl IntoIterator<Item = bool>) -> Self {
        let mut set = LiveSet::default();
        for bit in bits {
            if set.len % 64 == 0 {
                set.words.push(0);
            }
            if bit {
                *set.words.last_mut().expect("pushed above") |= 1 << (set.len % 64);
            }
            set.len += 1;
        }
        set
    }

    /// Walks covered.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it covers no walk.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether walk `offset` (from the start of the range) is live.
    #[inline]
    pub fn get(&self, offset: u64) -> bool {
        offset < self.len && self.words[(offset / 64) as usize] >> (offset % 64) & 1 == 1
    }

    /// Marks walk `offset` live.
    ///
    /// # Panics
    /// If `offset` is not below [`len`](Self::len).
    #[inline]
    pub fn set(&mut self, offset: u64) {
        assert!(offset < self.len, "walk offset {offset} outside a set of {}", self.len);
        self.words[(offset / 64) as usize] |= 1 << (offset % 64);
    }

    /// Appends `other`'s walks after this set's.
    pub fn extend(&mut self, other: &LiveSet) {
        if self.len.is_multiple_of(64) {
            // Word-aligned: the words carry over as they are.
            self.words.truncate((self.len / 64) as usize);
            self.words.extend_from_slice(&other.words);
            self.len += other.len;
        } else {
            for offset in 0..other.len {
                if self.len.is_multiple_of(64) {
                    self.words.push(0);
                }
                if other.get(offset) {
                    self.words[(self.len / 64) as usize] |= 1 << (self.len % 64);
                }
                self.len += 1;
            }
        }
    }

    /// Live walks.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The bits of `offsets` (word by word: batches of held walks record
    /// their bits once per batch, and a run may hold millions).
    pub fn slice(&self, offsets: Range<u64>) -> LiveSet {
        let len = offsets.end.saturating_sub(offsets.start);
        if offsets.start == 0 && len == self.len {
            return self.clone();
        }
        let shift = offsets.start % 64;
        let first = (offsets.start / 64) as usize;
        let words = len.div_ceil(64) as usize;
        let mut out = Vec::with_capacity(words);
        for i in 0..words {
            let low = self.words.get(first + i).copied().unwrap_or(0) >> shift;
            let high = match shift {
                0 => 0,
                _ => self.words.get(first + i + 1).copied().unwrap_or(0) << (64 - shift),
            };
            out.push(low | high);
        }
        if !len.is_multiple_of(64)
            && let Some(last) = out.last_mut()
        {
            *last &= (1u64 << (len % 64)) - 1;
        }
        LiveSet { len, words: out }
    }

    /// Whether any walk of `offsets` is live (word by word).
    pub fn any_in(&self, offsets: Range<u64>) -> bool {
        let end = offsets.end.min(self.len);
        let mut at = offsets.start;
        while at < end {
            let word = self.words[(at / 64) as usize] >> (at % 64);
            let bits = (64 - at % 64).min(end - at);
            let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
            if word & mask != 0 {
                return true;
            }
            at += bits;
        }
        false
    }

    /// The live walks as id ranges, the set starting at walk `start`.
    pub fn ranges(&self, start: u64) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for offset in (0..self.len).filter(|&o| self.get(o)) {
            let id = start + offset;
            match out.last_mut() {
                Some(last) if last.end == id => last.end += 1,
                _ => out.push(id..id + 1),
            }
        }
        out
    }
}

/// A held range: its home and its live walks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    end: u64,
    home: usize,
    live: LiveSet,
}

/// Held ranges by first walk id. Ranges never overlap.
#[derive(Debug, Clone, Default)]
pub struct Holdings {
    entries: BTreeMap<u64, Held>,
}

impl Holdings {
    /// Nothing held.
    pub fn new() -> Self {
        Holdings::default()
    }

    /// After a batch at `home` over `range` whose walks go on to a later
    /// segment: the range is held there, with these live walks
    /// (`live.len()` must be the range's length).
    pub fn record(&mut self, range: Range<u64>, home: usize, live: LiveSet) {
        debug_assert_eq!(live.len(), range.end - range.start, "one bit per walk of the range");
        self.carve(range.clone());
        if !range.is_empty() {
            self.entries.insert(range.start, Held { end: range.end, home, live });
        }
    }

    /// After the last segment of `range`: nothing there is held any more.
    pub fn release(&mut self, range: Range<u64>) {
        self.carve(range);
    }

    /// The held parts of `range` that still have a live walk, clipped to
    /// it, with their homes, in id order. Adjacent parts at the same home
    /// are merged.
    pub fn pieces(&self, range: Range<u64>) -> Vec<(Range<u64>, usize)> {
        let mut out: Vec<(Range<u64>, usize)> = Vec::new();
        for (&start, held) in self.overlapping(&range) {
            let from = start.max(range.start);
            let to = held.end.min(range.end);
            if !held.live.any_in(from - start..to - start) {
                continue;
            }
            match out.last_mut() {
                Some((last, home)) if last.end == from && *home == held.home => last.end = to,
                _ => out.push((from..to, held.home)),
            }
        }
        out
    }

    /// `home` is gone: forgets everything held there and returns the walks
    /// that were still live, as id ranges.
    pub fn lose(&mut self, home: usize) -> Vec<Range<u64>> {
        let lost: Vec<u64> =
            self.entries.iter().filter(|(_, h)| h.home == home).map(|(&s, _)| s).collect();
        let mut out: Vec<Range<u64>> = Vec::new();
        for start in lost {
            let held = self.entries.remove(&start).expect("listed above");
            for range in held.live.ranges(start) {
                match out.last_mut() {
                    Some(last) if last.end == range.start => last.end = range.end,
                    _ => out.push(range),
                }
            }
        }
        out
    }

    /// The live walks of `range`.
    pub fn live_in(&self, range: Range<u64>) -> Vec<u64> {
        let mut out = Vec::new();
        for (&start, held) in self.overlapping(&range) {
            let from = start.max(range.start);
            let to = held.end.min(range.end);
            out.extend((from..to).filter(|id| held.live.get(id - start)));
        }
        out
    }

    /// Whether any walk of `range` is held and live.
    pub fn any_live_in(&self, range: Range<u64>) -> bool {
        self.overlapping(&range).any(|(&start, held)| {
            let from = start.max(range.start);
            let to = held.end.min(range.end);
            from < to && held.live.any_in(from - start..to - start)
        })
    }

    /// The live walks of `range`, as id ranges.
    pub fn live_ranges_in(&self, range: Range<u64>) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for (&start, held) in self.overlapping(&range) {
            let from = start.max(range.start);
            let to = held.end.min(range.end);
            for live in held.live.slice(from - start..to - start).ranges(from) {
                match out.last_mut() {
                    Some(last) if last.end == live.start => last.end = live.end,
                    _ => out.push(live),
                }
            }
        }
        out
    }

    /// Every live walk held anywhere, as id ranges.
    pub fn live_ranges(&self) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for (&start, held) in &self.entries {
            for live in held.live.ranges(start) {
                match out.last_mut() {
                    Some(last) if last.end == live.start => last.end = live.end,
                    _ => out.push(live),
                }
            }
        }
        out
    }

    /// Live walks held anywhere.
    pub fn live(&self) -> u64 {
        self.entries.values().map(|h| h.live.count()).sum()
    }

    fn overlapping<'a>(&'a self, range: &Range<u64>) -> impl Iterator<Item = (&'a u64, &'a Held)> {
        // The entry starting before `range` may reach into it; others start
        // inside it.
        let before =
            self.entries.range(..range.start).next_back().filter(|(_, h)| h.end > range.start);
        before.into_iter().chain(self.entries.range(range.start..range.end.max(range.start)))
    }

    /// Removes `range` from every entry, keeping what lies outside it.
    fn carve(&mut self, range: Range<u64>) {
        // Nothing held (a run without serial actions releases every
        // batch's walks, one range per sampled piece).
        if range.is_empty() || self.entries.is_empty() {
            return;
        }
        let hit: Vec<u64> = self.overlapping(&range).map(|(&s, _)| s).collect();
        for start in hit {
            let held = self.entries.remove(&start).expect("listed above");
            if start < range.start {
                let live = held.live.slice(0..range.start - start);
                self.entries.insert(start, Held { end: range.start, home: held.home, live });
            }
            if held.end > range.end {
                let live = held.live.slice(range.end - start..held.end - start);
                self.entries.insert(range.end, Held { end: held.end, home: held.home, live });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_sets_round_trip() {
        let set = LiveSet::from_bits((0..130).map(|i| i % 3 != 0 || i == 129));
        assert_eq!(set.len(), 130);
        assert!(!set.get(0) && set.get(1) && set.get(129) && !set.get(130));
        assert_eq!(set.count(), (0..130).filter(|i| i % 3 != 0 || *i == 129).count() as u64);
        assert_eq!(LiveSet::all(3).ranges(10), vec![10..13]);
        assert_eq!(LiveSet::from_bits([true, false, true, true]).ranges(0), vec![0..1, 2..4]);
    }

    #[test]
    fn slices_and_any_in_agree_with_the_bits() {
        let bits: Vec<bool> = (0..300).map(|i| (i * 7 + i / 5) % 3 == 0).collect();
        let set = LiveSet::from_bits(bits.iter().copied());
        for (from, to) in
            [(0, 300), (0, 64), (1, 65), (63, 200), (64, 128), (130, 131), (299, 300), (5, 5)]
        {
            let slice = set.slice(from..to);
            assert_eq!(slice, LiveSet::from_bits(bits[from as usize..to as usize].iter().copied()));
            assert_eq!(set.any_in(from..to), bits[from as usize..to as usize].iter().any(|&b| b));
        }
    }

    #[test]
    fn pieces_follow_homes_and_skip_dead_walks() {
        let mut holdings = Holdings::new();
        holdings.record(0..4, 0, LiveSet::all(4));
        holdings.record(4..8, 1, LiveSet::from_bits([false; 4]));
        holdings.record(8..12, 1, LiveSet::all(4));
        holdings.record(12..16, 1, LiveSet::all(4));
        assert_eq!(holdings.pieces(2..14), vec![(2..4, 0), (8..14, 1)]);
        // A later batch over part of a range replaces its bits.
        holdings.record(0..2, 0, LiveSet::from_bits([false, true]));
        assert_eq!(holdings.lose(0), vec![1..4]);
        assert_eq!(holdings.pieces(0..16), vec![(8..16, 1)]);
        holdings.release(8..12);
        assert_eq!(holdings.live(), 4);
    }
}
