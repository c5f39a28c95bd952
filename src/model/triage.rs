//! Failures a person can act on: failed walks grouped by what failed and
//! how, the simplest walk of each group, and the options that induce it.
//!
//! - **Signature**: the failing entry (position and type) and the error
//!   text with its volatile parts normalised ([`normalise`]: numbers, hex,
//!   UUIDs, temporary paths).
//! - **Minimal walk** of a group: the walk with the fewest non-zero option
//!   indices, then the lowest id (all of a group's walks failed at the same
//!   entry, so they ran the same number of actions).
//! - **Conditions**: one conjunction of at most [`MAX_TERMS`] terms
//!   (entry ∈ option set), over entries at or before the failing one, that
//!   every walk of the group satisfies and no *counter-walk* does. A
//!   counter-walk ran past the failing entry without this failure: it
//!   passed, or it failed later or otherwise. Cancelled and pruned walks
//!   count as neither, and so do walks that failed before the entry. The
//!   search is greedy (each step adds the term that leaves the fewest
//!   counter-walks, then terms that turn out unneeded are dropped), so the
//!   conjunction is small but not guaranteed minimal.
//!
//! Counting counter-walks needs no per-walk memory: passing walks are the
//! *universe* (the space, or a soak round's sample) minus the walks that
//! did not pass, and those are either failed (listed in the report anyway)
//! or kept as id ranges ([`Neither`]: cancelled and pruned; aborted and not
//! run). The number of walks of a range that satisfy a conjunction is
//! computed from its digits, in O(entries). So the memory grows with the
//! failures and with the runs of cancelled or pruned ids, never with the
//! walks that passed; the result depends only on the walks' outcomes, not
//! on threads or the order batches arrived in.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

pub use super::failures::{
    Condition, Conditions, ConditionsSummary, FailureGroup, GroupSummary, MinimalWalk,
    SHOWN_GROUPS, Signature, StepSummary, normalise, render_groups, steps_line,
};
use super::outcome::{AbortedWalks, FailedWalk};
use super::sample::WalkSample;
use super::space::Space;
use super::walk::Walk;

/// Most terms in a group's conditions.
pub const MAX_TERMS: usize = 4;

/// Walk ids kept per group (the lowest ones).
pub const SAMPLE_IDS: usize = 5;

/// Groups whose conditions are searched (the largest ones); the others say
/// they were not analysed.
pub const ANALYSED_GROUPS: usize = 50;

/// Ranges of cancelled or pruned walks a run keeps for the conditions (1
/// MiB of them). When more than half of this many remain after merging
/// neighbours, they are all dropped and the search counts those walks as
/// passing: its conditions still hold, and say so
/// ([`Conditions::Found`]'s `conservative`). So the triage's memory has a
/// bound that does not depend on the number of walks.
pub const MAX_NEITHER_RANGES: usize = 1 << 16;

impl Signature {
    /// The signature of a failed walk.
    pub fn of(failed: &FailedWalk) -> Self {
        Signature {
            action_index: failed.action_index,
            action: failed.action.to_string(),
            error: normalise(&failed.error),
        }
    }
}

/// Ranges of walk ids that count neither for nor against a failure's
/// conditions, or that did not pass: cancelled and pruned walks, kept by
/// the collector as batches report them.
#[derive(Debug, Clone, Default)]
pub struct Neither {
    ranges: Vec<Range<u64>>,
    merged_len: usize,
    overflowed: bool,
}

impl Neither {
    /// Appends `id` to `ranges`, extending the last range when adjacent
    /// (what a batch's loop calls per cancelled or pruned walk).
    #[inline]
    pub fn push_id(ranges: &mut Vec<Range<u64>>, id: u64) {
        Self::push_range(ranges, id..id + 1);
    }

    /// Appends the walks `walks` (a pruned subtree), as
    /// [`push_id`](Self::push_id) does one.
    #[inline]
    pub fn push_range(ranges: &mut Vec<Range<u64>>, walks: Range<u64>) {
        match ranges.last_mut() {
            Some(last) if last.end == walks.start => last.end = walks.end,
            _ => ranges.push(walks),
        }
    }

    /// Adds a batch's ranges; merges neighbours when the list has doubled,
    /// and drops them all past [`MAX_NEITHER_RANGES`].
    pub fn extend(&mut self, ranges: impl IntoIterator<Item = Range<u64>>) {
        if self.overflowed {
            return;
        }
        self.ranges.extend(ranges);
        let len = self.ranges.len();
        if len > 2 * self.merged_len.max(1024) || len > MAX_NEITHER_RANGES {
            self.merge();
            // Over half the cap even merged: the next merges would come
            // ever sooner; give up keeping them.
            if self.ranges.len() > MAX_NEITHER_RANGES / 2 {
                self.ranges = Vec::new();
                self.overflowed = true;
            }
        }
    }

    fn merge(&mut self) {
        self.ranges = merge_ranges(std::mem::take(&mut self.ranges));
        self.merged_len = self.ranges.len();
    }
}

/// Sorts ranges and merges those that touch or overlap.
fn merge_ranges(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_unstable_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// Groups the failures of a run as walks end: which signatures were seen
/// (for live progress) and the ranges that count as neither; then, at the
/// end, the groups with their minimal walks and conditions.
#[derive(Debug, Clone)]
pub struct Triage {
    space: Space,
    /// The walks that ran or were to run, when a sample: its ids (made
    /// into ranges only if a failure is grouped). `None`: the space.
    sample: Option<Arc<[u64]>>,
    neither: Neither,
    seen: HashSet<Signature>,
}

impl Triage {
    /// A triage of a run over `space`; of the walks of `sample` only, when
    /// the run ran a sample.
    pub fn new(space: Space, sample: Option<&[u64]>) -> Self {
        Self::over(space, sample.map(Arc::from))
    }

    /// [`Triage::new`] over a run's [`WalkSample`] (its ids are shared, not
    /// copied: a run that fails nothing never looks at them).
    pub(crate) fn of_run(space: Space, sample: Option<&WalkSample>) -> Self {
        Self::over(space, sample.map(WalkSample::shared_ids))
    }

    fn over(space: Space, sample: Option<Arc<[u64]>>) -> Self {
        Triage { space, sample, neither: Neither::default(), seen: HashSet::new() }
    }

    /// The walks that ran or were to run, as ranges.
    fn universe(&self) -> Vec<Range<u64>> {
        let Some(ids) = &self.sample else {
            return std::iter::once(0..self.space.size()).collect();
        };
        let mut ranges = Vec::new();
        for &id in ids.iter() {
            Neither::push_id(&mut ranges, id);
        }
        ranges
    }

    /// Notes a batch's failures; returns how many signatures are new.
    pub fn failed(&mut self, failed: &[FailedWalk]) -> u64 {
        let before = self.seen.len();
        let mut last: Option<(usize, &str)> = None;
        for f in failed {
            // Failures of one bug often repeat their text exactly: normalise
            // once per run of the same text.
            let raw = (f.action_index, f.error.as_str());
            if last == Some(raw) {
                continue;
            }
            last = Some(raw);
            let signature = Signature::of(f);
            if !self.seen.contains(&signature) {
                self.seen.insert(signature);
            }
        }
        (self.seen.len() - before) as u64
    }

    /// Notes a batch's cancelled and pruned walks.
    pub fn neither(&mut self, ranges: Vec<Range<u64>>) {
        self.neither.extend(ranges);
    }

    /// The groups of `failed`, largest first (then by entry, then error),
    /// each with its minimal walk and, for the [`ANALYSED_GROUPS`] largest,
    /// its conditions. `unfinished`: the aborted and not-run walks.
    pub fn groups<'a>(
        mut self,
        failed: &[FailedWalk],
        unfinished: impl IntoIterator<Item = &'a AbortedWalks>,
    ) -> Vec<FailureGroup> {
        if failed.is_empty() {
            return Vec::new();
        }
        // Each failure's group: its text normalised once per distinct raw
        // text, not once per failure.
        let mut by_raw: HashMap<(usize, &str), usize> = HashMap::new();
        let mut by_signature: HashMap<Signature, usize> = HashMap::new();
        let mut signatures: Vec<Signature> = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut group_of: Vec<usize> = Vec::with_capacity(failed.len());
        let mut last: Option<((usize, &str), usize)> = None;
        for (i, f) in failed.iter().enumerate() {
            let raw = (f.action_index, f.error.as_str());
            if let Some((last_raw, g)) = last
                && last_raw == raw
            {
                members[g].push(i);
                group_of.push(g);
                continue;
            }
            let g = *by_raw.entry(raw).or_insert_with(|| {
                let signature = Signature::of(f);
                *by_signature.entry(signature.clone()).or_insert_with(|| {
                    signatures.push(signature);
                    members.push(Vec::new());
                    signatures.len() - 1
                })
            });
            last = Some((raw, g));
            members[g].push(i);
            group_of.push(g);
        }
        // Every failed walk's digits, once, flat (`n` per walk; a walk
        // outside the space, which cannot happen, keeps zeros).
        let n = self.space.len();
        let mut digits = vec![0u32; failed.len() * n];
        for (f, d) in failed.iter().zip(digits.chunks_mut(n)) {
            let _ = self.space.decode_into(f.walk_id.0, d);
        }
        let failures = Failures { failed, digits: &digits, n, group_of: &group_of };
        let mut order: Vec<usize> = (0..signatures.len()).collect();
        order.sort_by(|&a, &b| {
            members[b].len().cmp(&members[a].len()).then_with(|| signatures[a].cmp(&signatures[b]))
        });
        let overflowed = self.neither.overflowed;
        let mut excluded = std::mem::take(&mut self.neither.ranges);
        for walks in unfinished {
            excluded.extend(walks.walks.iter().cloned());
        }
        let excluded = merge_ranges(excluded);
        let universe = self.universe();
        let counter = Counter::new(&self.space, &universe, &excluded);
        drop(excluded);
        order
            .into_iter()
            .enumerate()
            .map(|(rank, g)| {
                let mut walks = std::mem::take(&mut members[g]);
                walks.sort_unstable_by_key(|&i| failed[i].walk_id);
                let minimal = *walks
                    .iter()
                    .min_by_key(|&&i| {
                        let nonzero = failures.digits(i).iter().filter(|&&x| x != 0).count();
                        (nonzero, failed[i].walk_id)
                    })
                    .expect("a group has a walk");
                let signature = signatures[g].clone();
                let conditions = if rank >= ANALYSED_GROUPS {
                    Conditions::NotFound {
                        reason: format!(
                            "not searched: only the {ANALYSED_GROUPS} largest groups are analysed"
                        ),
                    }
                } else {
                    self.search(&signature, g, &walks, &failures, &counter, overflowed)
                };
                let minimal_id = failed[minimal].walk_id;
                FailureGroup {
                    count: walks.len() as u64,
                    walk_ids: walks.iter().take(SAMPLE_IDS).map(|&i| failed[i].walk_id).collect(),
                    minimal: self
                        .space
                        .walk(minimal_id.0)
                        .unwrap_or(Walk { id: minimal_id, steps: Vec::new() }),
                    minimal_error: failed[minimal].error.clone(),
                    signature,
                    conditions,
                }
            })
            .collect()
    }

    /// The greedy search for the conditions of group `g` (its failures'
    /// indices in `walks`).
    fn search(
        &self,
        signature: &Signature,
        g: usize,
        walks: &[usize],
        failures: &Failures<'_>,
        counter: &Counter<'_>,
        conservative: bool,
    ) -> Conditions {
        let p = signature.action_index;
        let radix = self.space.option_counts();
        let entries = p.min(self.space.len() - 1) + 1;
        // The options the group takes at each entry up to its own.
        let mut taken: Vec<Vec<bool>> =
            (0..entries).map(|e| vec![false; radix[e] as usize]).collect();
        for &i in walks {
            let d = failures.digits(i);
            for (e, t) in taken.iter_mut().enumerate() {
                t[d[e] as usize] = true;
            }
        }
        // Failed walks that are not counter-walks: this group, and walks that
        // failed before its entry. They did not pass, so they leave the count
        // of walks that passed or went past the entry.
        let not_against: Vec<&[u32]> = (0..failures.failed.len())
            .filter(|&i| failures.group_of[i] == g || failures.failed[i].action_index < p)
            .map(|i| failures.digits(i))
            .collect();
        let count = |terms: &[usize]| -> u64 {
            let allowed = Allowed::new(&self.space, terms, &taken);
            // The universe less the excluded ranges is the walks that passed
            // or failed; less the failed ones that are not counter-walks.
            let not_against_in = not_against.iter().filter(|d| allowed.admits(d)).count() as u64;
            counter.count(&allowed) - not_against_in
        };
        // Only terms that exclude something are candidates.
        let candidates: Vec<usize> =
            (0..entries).filter(|&e| taken[e].iter().any(|&t| !t)).collect();
        let mut terms: Vec<usize> = Vec::new();
        let mut left = count(&terms);
        while left > 0 && terms.len() < MAX_TERMS {
            let best = candidates
                .iter()
                .filter(|e| !terms.contains(e))
                .map(|&e| {
                    let mut with = terms.clone();
                    with.push(e);
                    (count(&with), e)
                })
                .min();
            match best {
                Some((n, e)) if n < left => {
                    terms.push(e);
                    left = n;
                }
                _ => {
                    // No one term helps; all the rest together may (walks
                    // that only a combination excludes), if they fit.
                    let mut all = terms.clone();
                    all.extend(candidates.iter().filter(|e| !terms.contains(e)));
                    if all.len() <= MAX_TERMS {
                        left = count(&all);
                        terms = all;
                    }
                    break;
                }
            }
        }
        if left > 0 {
            let sample =
                if self.sample.is_some() { " among the sampled walks that ran" } else { "" };
            let counted = match conservative {
                true => " (cancelled and pruned walks counted as passing: too many to keep)",
                false => "",
            };
            return Conditions::NotFound {
                reason: format!(
                    "no conjunction of at most {MAX_TERMS} conditions on the entries up to {} separates these failures from the {}{sample} that went past it{counted}",
                    signature.action,
                    super::count(left, "walk")
                ),
            };
        }
        // Drop terms the others make unneeded, earliest added first.
        let mut i = 0;
        while i < terms.len() {
            let mut without = terms.clone();
            without.remove(i);
            if count(&without) == 0 {
                terms = without;
            } else {
                i += 1;
            }
        }
        terms.sort_unstable();
        let entries = self.space.entries();
        let terms = terms
            .into_iter()
            .map(|e| {
                let options: Vec<u32> = (0..radix[e]).filter(|&o| taken[e][o as usize]).collect();
                Condition {
                    position: e,
                    action: entries[e].name.to_string(),
                    repeated: entries.iter().filter(|x| x.name == entries[e].name).count() > 1,
                    labels: options
                        .iter()
                        .map(|&o| entries[e].options[o as usize].clone())
                        .collect(),
                    options,
                }
            })
            .collect();
        Conditions::Found { terms, sampled: self.sample.is_some(), conservative }
    }
}

/// The failed walks of a run, with their digits and groups.
struct Failures<'a> {
    failed: &'a [FailedWalk],
    /// `n` digits per failed walk, in order.
    digits: &'a [u32],
    n: usize,
    group_of: &'a [usize],
}

impl Failures<'_> {
    fn digits(&self, i: usize) -> &[u32] {
        &self.digits[i * self.n..(i + 1) * self.n]
    }
}

/// A conjunction: for each entry, whether each option is allowed (all are,
/// for entries without a term).
struct Allowed {
    /// Per entry: `None` when unconstrained, else how many options below
    /// each index are allowed (`radix + 1` prefix counts).
    below: Vec<Option<Vec<u32>>>,
}

impl Allowed {
    fn new(space: &Space, terms: &[usize], taken: &[Vec<bool>]) -> Self {
        let mut below = vec![None; space.len()];
        for &e in terms {
            let mut prefix = Vec::with_capacity(taken[e].len() + 1);
            let mut n = 0;
            prefix.push(0);
            for &t in &taken[e] {
                n += u32::from(t);
                prefix.push(n);
            }
            below[e] = Some(prefix);
        }
        Allowed { below }
    }

    fn admits<D: Copy + Into<u32>>(&self, digits: &[D]) -> bool {
        self.below.iter().zip(digits).all(|(b, &d)| self.allows_in(b, d.into()))
    }

    fn allows_in(&self, below: &Option<Vec<u32>>, option: u32) -> bool {
        below.as_ref().is_none_or(|p| p[option as usize + 1] > p[option as usize])
    }

    /// Allowed options of entry `e` below `below`.
    fn below(&self, e: usize, below: u32) -> u64 {
        match &self.below[e] {
            None => u64::from(below),
            Some(p) => u64::from(p[below as usize]),
        }
    }

    fn allows(&self, e: usize, option: u32) -> bool {
        self.allows_in(&self.below[e], option)
    }
}

/// Counts the walks of the universe, less the excluded ranges, that a
/// conjunction admits. Ranges of one walk (scattered cancels, a sample's
/// ids) are decoded once and tested digit by digit; longer ranges are
/// counted from the digits of their ends.
struct Counter<'a> {
    space: &'a Space,
    /// Positions, most significant first.
    order: Vec<usize>,
    /// Ranges of more than one walk, and whether each is excluded.
    spans: Vec<(Range<u64>, bool)>,
    /// Single walks: the universe's first, then from `excluded_from` the
    /// excluded ones; their digits, `space.len()` per walk.
    singles: Vec<u16>,
    excluded_from: usize,
    /// Single walks whose digits do not fit `u16` (an entry with more
    /// than 65,536 options), and whether each is excluded.
    wide: Vec<(u64, bool)>,
}

impl<'a> Counter<'a> {
    fn new(space: &'a Space, universe: &[Range<u64>], excluded: &[Range<u64>]) -> Self {
        let narrow = space.option_counts().iter().all(|&r| r <= 1 << 16);
        let n = space.len();
        let mut counter = Counter {
            space,
            order: space.significance().iter().rev().copied().collect(),
            spans: Vec::new(),
            singles: Vec::new(),
            excluded_from: 0,
            wide: Vec::new(),
        };
        let mut digits = vec![0u32; n];
        for (ranges, out) in [(universe, false), (excluded, true)] {
            if out {
                counter.excluded_from = counter.singles.len() / n.max(1);
            }
            for r in ranges {
                if r.end - r.start != 1 {
                    counter.spans.push((r.clone(), out));
                } else if narrow {
                    space.decode_into(r.start, &mut digits).expect("inside the space");
                    counter.singles.extend(digits.iter().map(|&d| d as u16));
                } else {
                    counter.wide.push((r.start, out));
                }
            }
        }
        counter
    }

    fn count(&self, allowed: &Allowed) -> u64 {
        let order = &self.order;
        let radix = self.space.option_counts();
        // suffix[j]: walks admitted per combination of the digits after the
        // j-th most significant.
        let mut suffix = vec![1u64; order.len() + 1];
        for j in (0..order.len()).rev() {
            suffix[j] = suffix[j + 1] * allowed.below(order[j], radix[order[j]]);
        }
        let mut digits = vec![0u32; self.space.len()];
        let mut below = |x: u64| -> u64 {
            // Admitted walks with ids in [0, x).
            if x >= self.space.size() {
                return suffix[0];
            }
            self.space.decode_into(x, &mut digits).expect("inside the space");
            let mut n = 0;
            for (j, &e) in order.iter().enumerate() {
                n += allowed.below(e, digits[e]) * suffix[j + 1];
                if !allowed.allows(e, digits[e]) {
                    break;
                }
            }
            n
        };
        let (mut total, mut out) = (0u64, 0u64);
        for (r, excluded) in &self.spans {
            let n = below(r.end) - below(r.start);
            if *excluded { out += n } else { total += n }
        }
        for (&id, excluded) in self.wide.iter().map(|(id, e)| (id, e)) {
            let n = below(id + 1) - below(id);
            if *excluded { out += n } else { total += n }
        }
        let n = self.space.len().max(1);
        for (i, d) in self.singles.chunks(n).enumerate() {
            if allowed.admits(d) {
                if i >= self.excluded_from { out += 1 } else { total += 1 }
            }
        }
        total - out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::space::{EntryInfo, EntryKind, WalkId};

    fn space(radix: &[u32]) -> Space {
        let names = ["A", "B", "C", "D", "E", "F"];
        Space::new(
            radix
                .iter()
                .enumerate()
                .map(|(i, &r)| EntryInfo {
                    name: names[i],
                    kind: EntryKind::Plain,
                    options: (0..r).map(|o| format!("{}{o}", names[i])).collect(),
                })
                .collect(),
        )
        .unwrap()
    }

    fn fail(space: &Space, id: u64, at: usize, error: &str) -> FailedWalk {
        FailedWalk {
            walk_id: WalkId(id),
            action_index: at,
            action: space.entries()[at].name.into(),
            error: error.to_string(),
        }
    }

    #[test]
    fn a_two_entry_bug_is_named_exactly() {
        // Fails at C whenever A=1 and B=2, whatever C and D.
        let space = space(&[3, 3, 2, 2]);
        let failed: Vec<FailedWalk> = (0..space.size())
            .filter(|&id| {
                let d = space.digits(id).unwrap();
                d[0] == 1 && d[1] == 2
            })
            .map(|id| fail(&space, id, 2, &format!("broke at {id}")))
            .collect();
        let groups = Triage::new(space.clone(), None).groups(&failed, []);
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!(g.count, 4);
        assert_eq!(g.signature.error, "broke at <n>");
        assert_eq!(g.minimal.option_indices(), vec![1, 2, 0, 0]);
        let Conditions::Found { terms, sampled: false, conservative: false } = &g.conditions else {
            panic!("{:?}", g.conditions)
        };
        let terms: Vec<(usize, Vec<u32>)> =
            terms.iter().map(|t| (t.position, t.options.clone())).collect();
        assert_eq!(terms, vec![(0, vec![1]), (1, vec![2])]);
        assert_eq!(
            g.conditions.to_string(),
            "fails whenever A=A1 and B=B2, whatever the other entries"
        );
    }

    #[test]
    fn too_many_scattered_cancels_are_dropped_and_the_conditions_stay_sound() {
        // 200,000 walks; every odd id cancelled (100,000 one-walk ranges,
        // over the cap); walks with A=1 and an even id fail at C.
        let space = space(&[2, 50_000, 2]);
        let mut triage = Triage::new(space.clone(), None);
        for chunk in (0..space.size()).filter(|id| id % 2 == 1).collect::<Vec<_>>().chunks(1000) {
            triage.neither(chunk.iter().map(|&id| id..id + 1).collect());
        }
        assert!(triage.neither.overflowed && triage.neither.ranges.capacity() == 0);
        let failed: Vec<FailedWalk> =
            (100_000..200_000).step_by(2).map(|id| fail(&space, id, 2, "x")).collect();
        let groups = triage.groups(&failed, []);
        let Conditions::Found { terms, conservative: true, .. } = &groups[0].conditions else {
            panic!("{:?}", groups[0].conditions)
        };
        // Sound: every walk the terms admit failed or was cancelled.
        let terms: Vec<(usize, Vec<u32>)> =
            terms.iter().map(|t| (t.position, t.options.clone())).collect();
        assert_eq!(terms, [(0, vec![1]), (2, vec![0])]);
        assert!(
            groups[0]
                .conditions
                .to_string()
                .ends_with("(cancelled and pruned walks counted as passing: too many to keep)")
        );
    }

    #[test]
    fn no_conjunction_says_so() {
        // A xor B: no conjunction over A and B covers {01, 10} only.
        let space = space(&[2, 2]);
        let failed = vec![fail(&space, 1, 1, "x"), fail(&space, 2, 1, "x")];
        let groups = Triage::new(space, None).groups(&failed, []);
        assert!(
            matches!(&groups[0].conditions, Conditions::NotFound { reason } if reason.contains("no conjunction")),
            "{:?}",
            groups[0].conditions
        );
    }

    #[test]
    fn cancelled_and_pruned_walks_count_as_neither() {
        // Fails at B when A=1, except walks 3 (A=1,B=1) are pruned: still
        // "whenever A=1".
        let space = space(&[2, 2]);
        let failed = vec![fail(&space, 2, 1, "x")];
        let mut triage = Triage::new(space.clone(), None);
        triage.neither(std::iter::once(3..4).collect());
        let groups = triage.groups(&failed, []);
        assert_eq!(
            groups[0].conditions.to_string(),
            "fails whenever A=A1, whatever the other entries"
        );
        // Without knowing walk 3 was pruned, it would be a counter-walk.
        let groups = Triage::new(space, None).groups(&failed, []);
        assert_eq!(
            groups[0].conditions.to_string(),
            "fails whenever A=A1 and B=B0, whatever the other entries"
        );
    }
}
