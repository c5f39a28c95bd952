//! The check at the end of a campaign: what the soak reported and recorded
//! against what must hold after any faults, and the figures of the run.
//!
//! - **Accounting**: the rounds are `totals.rounds` full rounds plus, when
//!   `totals.interrupted_rounds` is 1, the round the duration cut. Every
//!   (round, walk id) of each of them appears exactly once across the lines
//!   of `walks.jsonl`, the `aborted` ranges and the `not_run` ranges (the
//!   latter only in the cut round); the totals agree with what was counted.
//! - **Failures**: no walk fails, but for "its node was lost while running
//!   it alone" with every `local-N (pid P)` it names in the kill log as
//!   node N, pid P, killed or stopped. The suite never cancels or prunes.
//! - **Aborted walks** all have a reason (grouped here by its prefix).
//! - **The ending** is `duration`, stdout's report and `soak.json` agree,
//!   and the exit code is as documented: 0 when no walk failed or was
//!   aborted, else 1 (never 3, never a signal).
//! - **Progress**: walks kept being recorded after every fault (within
//!   [`STALL`]), and never stalled that long while the duration ran.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use combtest::model::sample::{WalkSample, round_seed};

use crate::faults::{Fault, Kind, Sample};
use crate::named;

/// Longest the soak may go without recording a walk while its duration
/// runs (a node restart takes at most its backoff, 5 s, plus a heartbeat).
pub const STALL: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
struct Totals {
    rounds: u64,
    walks: u64,
    passed: u64,
    failed: u64,
    cancelled: u64,
    pruned: u64,
    aborted: u64,
    not_run: u64,
    nodes_lost: u64,
    interrupted_rounds: u64,
}

#[derive(Debug, Deserialize)]
struct IdRange {
    start: u64,
    end: u64,
}

#[derive(Debug, Deserialize)]
struct Group {
    round: u64,
    walks: Vec<IdRange>,
    reason: String,
}

#[derive(Debug, Deserialize)]
struct Failure {
    round: u64,
    walk_id: u64,
}

#[derive(Debug, Deserialize)]
struct Report {
    totals: Totals,
    failures: Vec<Failure>,
    aborted: Vec<Group>,
    not_run: Vec<Group>,
    groups_dropped: u64,
    ending: String,
    ending_reason: Option<String>,
    dir: Option<PathBuf>,
}

/// One walk of `walks.jsonl`, as far as the check reads it.
#[derive(Debug)]
struct Line {
    round: u64,
    walk_id: u64,
    outcome: String,
    error: Option<String>,
}

/// What the campaign saw, for the check.
pub struct Seen<'a> {
    /// Walks per round (the suite's space).
    pub size: u64,
    /// The coordinator's standard output: its JSON report.
    pub stdout: &'a str,
    /// Its exit code (`None`: a signal ended it, or it never ended).
    pub exit: Option<i32>,
    pub faults: &'a [Fault],
    pub samples: &'a [Sample],
    /// Sampled rounds: walks per round and the soak's seed (each round's
    /// walks are `WalkSample::draw(size, K, round_seed(seed, round))`).
    pub sample: Option<(u64, u64)>,
    /// When faults stopped (the soak's duration), since the start.
    pub faults_until: Duration,
    /// When the coordinator exited, since the start.
    pub exited_at: Duration,
}

/// Memory over the run, in KiB.
#[derive(Debug, Clone, Default)]
pub struct Rss {
    pub start: u64,
    pub end: u64,
    pub max: u64,
    /// Least-squares slope after the first minute, KiB/min.
    pub slope: Option<f64>,
}

/// The figures of a campaign.
#[derive(Debug, Default)]
pub struct Figures {
    pub faults: BTreeMap<Kind, u64>,
    /// Faults drawn that could not be done (the node was restarting).
    pub skipped: u64,
    /// Faults after which walks kept being recorded.
    pub survived: u64,
    pub rounds: u64,
    pub cut_round: bool,
    pub accounted: u64,
    pub lines: u64,
    pub passed: u64,
    pub aborted: u64,
    /// Aborted walks by the prefix of their reason: (walks, groups).
    pub aborted_by_reason: BTreeMap<String, (u64, u64)>,
    pub not_run: u64,
    pub failed_with_evidence: u64,
    pub nodes_lost: u64,
    pub exit: Option<i32>,
    pub ending: String,
    pub longest_stall: Duration,
    pub coordinator_rss: Rss,
    pub nodes_rss: Rss,
    pub soak_dir: Option<PathBuf>,
}

/// The violations found (empty: the campaign passed) and the figures.
pub fn check(seen: &Seen) -> (Vec<String>, Figures) {
    let mut violations = Vec::new();
    let mut figures = Figures { exit: seen.exit, ..Figures::default() };
    count_faults(seen, &mut figures, &mut violations);
    figures.coordinator_rss = coordinator_rss(seen.samples);
    figures.nodes_rss = nodes_rss(seen.samples);

    let text = seen.stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            violations.push(format!("the coordinator printed no JSON report ({e}): {text:?}"));
            return (violations, figures);
        }
    };
    let report: Report = match serde_json::from_value(value.clone()) {
        Ok(report) => report,
        Err(e) => {
            violations.push(format!("the coordinator's report is not a soak report: {e}"));
            return (violations, figures);
        }
    };
    figures.ending = report.ending.clone();
    figures.nodes_lost = report.totals.nodes_lost;
    figures.soak_dir = report.dir.clone();
    ending(seen, &report, &value, &mut violations);
    accounting(seen, &report, &mut figures, &mut violations);
    (violations, figures)
}

fn count_faults(seen: &Seen, figures: &mut Figures, violations: &mut Vec<String>) {
    for fault in seen.faults {
        if fault.note.is_some() {
            figures.skipped += 1;
        }
        *figures.faults.entry(fault.kind).or_default() += 1;
    }
    // Progress: after each fault, a walk recorded within STALL (or the soak
    // ended first).
    let bytes_at = |at: Duration| {
        seen.samples.iter().take_while(|s| s.at <= at).last().map_or(0, |s| s.walks_bytes)
    };
    for fault in seen.faults.iter().filter(|f| f.kind != Kind::Nothing) {
        let before = bytes_at(fault.ended);
        let grew = seen
            .samples
            .iter()
            .any(|s| s.at > fault.ended && s.at <= fault.ended + STALL && s.walks_bytes > before);
        if grew || seen.exited_at <= fault.ended + STALL {
            figures.survived += 1;
        } else {
            violations.push(format!(
                "no walk was recorded within {}s after fault at {:.3}s ({})",
                STALL.as_secs(),
                fault.at.as_secs_f64(),
                fault
            ));
        }
    }
    // Stalls while the duration ran, from the first walk recorded.
    let mut last_growth: Option<(Duration, u64)> = None;
    for s in seen.samples.iter().filter(|s| s.at <= seen.faults_until) {
        match last_growth {
            None if s.walks_bytes > 0 => last_growth = Some((s.at, s.walks_bytes)),
            Some((_, bytes)) if s.walks_bytes > bytes => last_growth = Some((s.at, s.walks_bytes)),
            Some((at, _)) => figures.longest_stall = figures.longest_stall.max(s.at - at),
            None => {}
        }
    }
    if figures.longest_stall > STALL {
        violations.push(format!(
            "no walk was recorded for {:.1}s while the soak's duration ran (a hang?)",
            figures.longest_stall.as_secs_f64()
        ));
    }
}

fn ending(seen: &Seen, report: &Report, value: &serde_json::Value, violations: &mut Vec<String>) {
    if report.ending != "duration" {
        violations.push(format!(
            "the soak ended by {:?} ({}), not by its duration",
            report.ending,
            report.ending_reason.as_deref().unwrap_or("no reason given")
        ));
    }
    let t = &report.totals;
    let expected = if t.failed == 0 && t.aborted == 0 { 0 } else { 1 };
    match seen.exit {
        Some(code) if code == expected => {}
        Some(code) => violations.push(format!(
            "the coordinator exited with {code}, but with {} failed and {} aborted the \
             documented exit code is {expected}",
            t.failed, t.aborted
        )),
        None => violations.push("the coordinator did not exit by itself".to_string()),
    }
    if report.groups_dropped > 0 {
        violations.push(format!(
            "the report dropped {} groups of aborted or unrun walks: they cannot be accounted",
            report.groups_dropped
        ));
    }
    match &report.dir {
        None => violations.push("the report names no soak directory".to_string()),
        Some(dir) => match std::fs::read_to_string(dir.join("soak.json")) {
            Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(meta) if &meta == value => {}
                Ok(_) => violations.push(format!(
                    "{} differs from the report on stdout",
                    dir.join("soak.json").display()
                )),
                Err(e) => violations.push(format!("{}: {e}", dir.join("soak.json").display())),
            },
            Err(e) => violations.push(format!("{}: {e}", dir.join("soak.json").display())),
        },
    }
}

/// Where each (round, walk) was counted: lines, aborted, not run.
struct Tally {
    size: u64,
    rounds: u64,
    counts: [Vec<u8>; 3],
}

impl Tally {
    fn add(&mut self, source: usize, round: u64, walk: u64) -> Result<(), String> {
        if round >= self.rounds || walk >= self.size {
            return Err(format!(
                "round {round} walk {walk} lies outside the {} rounds of {} walks",
                self.rounds, self.size
            ));
        }
        let slot = &mut self.counts[source][(round * self.size + walk) as usize];
        *slot = slot.saturating_add(1);
        Ok(())
    }
}

fn accounting(seen: &Seen, report: &Report, figures: &mut Figures, violations: &mut Vec<String>) {
    let t = &report.totals;
    if t.interrupted_rounds > 1 {
        violations
            .push(format!("{} rounds were cut short; at most 1 may be", t.interrupted_rounds));
    }
    let rounds = t.rounds + t.interrupted_rounds.min(1);
    figures.rounds = t.rounds;
    figures.cut_round = t.interrupted_rounds > 0;
    let cells = rounds * seen.size;
    if cells > 4_000_000_000 {
        violations.push(format!("{rounds} rounds: too many to account here"));
        return;
    }
    let mut tally =
        Tally { size: seen.size, rounds, counts: std::array::from_fn(|_| vec![0; cells as usize]) };
    let mut outside = Vec::new();

    // The lines.
    let Some(dir) = &report.dir else { return };
    let path = dir.join("walks.jsonl");
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed_lines: HashMap<(u64, u64), String> = HashMap::new();
    match read_lines(&path, |number, line| {
        *outcomes.entry(line.outcome.clone()).or_default() += 1;
        if let Err(e) = tally.add(0, line.round, line.walk_id) {
            outside.push(format!("{} line {number}: {e}", path.display()));
        }
        match line.outcome.as_str() {
            "passed" => {}
            "failed" => {
                let error = line.error.clone().unwrap_or_default();
                match evidence(&error, seen.faults) {
                    Ok(()) => figures.failed_with_evidence += 1,
                    Err(why) => violations.push(format!(
                        "round {} walk {} failed without evidence ({why}): {error}",
                        line.round, line.walk_id
                    )),
                }
                failed_lines.insert((line.round, line.walk_id), error);
            }
            other => violations.push(format!(
                "round {} walk {} ended {other}: the suite never cancels, prunes or aborts a \
                 walk by itself ({} line {number})",
                line.round,
                line.walk_id,
                path.display()
            )),
        }
    }) {
        Ok(count) => figures.lines = count,
        Err(e) => violations.push(e),
    }
    figures.passed = outcomes.get("passed").copied().unwrap_or(0);

    // The aborted and unrun ranges.
    for (source, groups) in [(1, &report.aborted), (2, &report.not_run)] {
        for group in groups {
            let walks: u64 = group.walks.iter().map(|r| r.end.saturating_sub(r.start)).sum();
            if source == 1 {
                figures.aborted += walks;
                if group.reason.trim().is_empty() {
                    violations.push(format!(
                        "round {}: {walks} walks aborted without a reason",
                        group.round
                    ));
                }
                let entry = figures.aborted_by_reason.entry(reason_prefix(&group.reason));
                let (w, g) = entry.or_default();
                *w += walks;
                *g += 1;
            } else {
                figures.not_run += walks;
                if !(figures.cut_round && group.round == t.rounds) {
                    violations.push(format!(
                        "round {}: {walks} walks not run, in a round the duration did not cut",
                        group.round
                    ));
                }
            }
            for range in &group.walks {
                for walk in range.start..range.end {
                    if let Err(e) = tally.add(source, group.round, walk) {
                        outside.push(format!(
                            "{} ({}): {e}",
                            group.reason,
                            ["", "aborted", "not run"][source]
                        ));
                        break;
                    }
                }
            }
        }
    }
    for e in outside.iter().take(10) {
        violations.push(e.clone());
    }
    if outside.len() > 10 {
        violations.push(format!("... and {} more outside the rounds", outside.len() - 10));
    }

    // Exactly once: every walk of a full round, every sampled walk of a
    // sampled one (and no other).
    let in_run = match in_rounds(seen, rounds) {
        Ok(in_run) => in_run,
        Err(e) => {
            violations.push(e);
            return;
        }
    };
    let mut wrong = 0u64;
    for cell in 0..cells as usize {
        let [l, a, n] = [0, 1, 2].map(|s| tally.counts[s][cell]);
        let total = u32::from(l) + u32::from(a) + u32::from(n);
        let expected = u32::from(in_run.as_ref().is_none_or(|cells| cells[cell]));
        if total == expected {
            figures.accounted += u64::from(expected);
            continue;
        }
        wrong += 1;
        if wrong <= 20 {
            let (round, walk) = (cell as u64 / seen.size, cell as u64 % seen.size);
            let how = match total {
                0 => "missing".to_string(),
                _ if expected == 0 => format!("counted {total} times, not in the round's sample"),
                _ => format!("counted {total} times"),
            };
            violations.push(format!(
                "round {round} walk {walk}: {how} (lines {l}, aborted {a}, not run {n})"
            ));
        }
    }
    if wrong > 20 {
        violations.push(format!("... {wrong} (round, walk) pairs in all are not counted once"));
    }

    // The totals agree with what was counted.
    let mut agree = |what: &str, reported: u64, counted: u64| {
        if reported != counted {
            violations.push(format!("totals.{what} is {reported}, but {counted} were counted"));
        }
    };
    agree(
        "walks",
        t.walks,
        in_run.as_ref().map_or(cells, |c| c.iter().filter(|&&i| i).count() as u64),
    );
    agree("passed", t.passed, figures.passed);
    agree("failed", t.failed, outcomes.get("failed").copied().unwrap_or(0));
    agree("cancelled", t.cancelled, outcomes.get("cancelled").copied().unwrap_or(0));
    agree("pruned", t.pruned, outcomes.get("pruned").copied().unwrap_or(0));
    agree("aborted", t.aborted, figures.aborted);
    agree("not_run", t.not_run, figures.not_run);
    for failure in &report.failures {
        if !failed_lines.contains_key(&(failure.round, failure.walk_id)) {
            violations.push(format!(
                "the report lists round {} walk {} as failed, but walks.jsonl does not",
                failure.round, failure.walk_id
            ));
        }
    }
}

/// Which (round, walk) cells a sampled soak ran (`None`: every one): each
/// round's sample drawn again from the soak's seed.
fn in_rounds(seen: &Seen, rounds: u64) -> Result<Option<Vec<bool>>, String> {
    let Some((count, seed)) = seen.sample else { return Ok(None) };
    let mut cells = vec![false; (rounds * seen.size) as usize];
    for round in 0..rounds {
        let sample = WalkSample::draw(seen.size, count, round_seed(seed, round))
            .map_err(|e| format!("round {round}'s sample: {e}"))?;
        for &walk in sample.ids() {
            cells[(round * seen.size + walk) as usize] = true;
        }
    }
    Ok(Some(cells))
}

/// Reads `walks.jsonl` (trace format 2: walk records, batch records and
/// sampled rounds' seeds, listed walk by walk by `combtest::trace::read_soak`),
/// calling `each` with the number of the line that records each walk and
/// the walk; returns how many walks there were. A line that is not a whole
/// record is an error (the coordinator was never killed: none may be cut
/// off), and so is a round whose passing walks cannot be listed.
fn read_lines(path: &Path, mut each: impl FnMut(u64, &Line)) -> Result<u64, String> {
    let trace = combtest::trace::read_soak(path).map_err(|e| e.to_string())?;
    if let Some(torn) = &trace.torn_tail {
        return Err(format!("{torn}: the coordinator was never killed"));
    }
    if let Some((round, count)) = trace.walks.unlisted.first() {
        return Err(format!(
            "{}: round {round}'s {count} passing walks cannot be listed (no sample record)",
            path.display()
        ));
    }
    for walk in &trace.walks.walks {
        let outcome = serde_json::to_value(walk.outcome).map_err(|e| e.to_string())?;
        let line = Line {
            round: walk.round,
            walk_id: walk.walk_id,
            outcome: outcome.as_str().unwrap_or("?").to_string(),
            error: walk.error.clone(),
        };
        each(walk.line, &line);
    }
    Ok(trace.walks.walks.len() as u64)
}

/// Whether a failure is "its node was lost while running it alone" with
/// every `NAME (pid P)` it names killed or stopped by the nemesis as that
/// node.
fn evidence(error: &str, faults: &[Fault]) -> Result<(), String> {
    named::evidence(error, |name, pid| {
        faults.iter().any(|f| {
            matches!(f.kind, Kind::KillNode | Kind::StopNode)
                && f.target == name
                && f.pid == Some(pid)
        })
    })
}

/// A reason with its numbers (node indexes, pids, counts, times) as `N`, up
/// to its second `: `: `node local-N (pid N) lost: no heartbeat ...`.
fn reason_prefix(reason: &str) -> String {
    let mut text = String::new();
    let mut digits = false;
    for c in reason.chars() {
        if c.is_ascii_digit() {
            if !digits {
                text.push('N');
            }
            digits = true;
        } else {
            text.push(c);
            digits = false;
        }
    }
    let cut = text.match_indices(": ").nth(1).map_or(text.len(), |(at, _)| at);
    text.truncate(cut);
    text
}

/// Least-squares slope of `points` (seconds, KiB), in KiB/min, pooled
/// within groups (each group its own intercept: a restarted node starts
/// small again, which is no trend).
fn slope<K: std::hash::Hash + Eq>(points: &[(K, f64, f64)]) -> Option<f64> {
    let mut groups: HashMap<&K, Vec<(f64, f64)>> = HashMap::new();
    for (key, t, r) in points {
        groups.entry(key).or_default().push((*t, *r));
    }
    let (mut num, mut den) = (0.0, 0.0);
    for group in groups.values().filter(|g| g.len() >= 2) {
        let n = group.len() as f64;
        let tbar = group.iter().map(|p| p.0).sum::<f64>() / n;
        let rbar = group.iter().map(|p| p.1).sum::<f64>() / n;
        for (t, r) in group {
            num += (t - tbar) * (r - rbar);
            den += (t - tbar) * (t - tbar);
        }
    }
    (den > 0.0).then(|| num / den * 60.0)
}

const FIRST_MINUTE: Duration = Duration::from_secs(60);

fn coordinator_rss(samples: &[Sample]) -> Rss {
    let points: Vec<(Duration, u64)> =
        samples.iter().filter_map(|s| Some((s.at, s.coordinator_kib?))).collect();
    let late: Vec<((), f64, f64)> = points
        .iter()
        .filter(|(at, _)| *at >= FIRST_MINUTE)
        .map(|(at, kib)| ((), at.as_secs_f64(), *kib as f64))
        .collect();
    Rss {
        start: points.first().map_or(0, |p| p.1),
        end: points.last().map_or(0, |p| p.1),
        max: points.iter().map(|p| p.1).max().unwrap_or(0),
        slope: slope(&late),
    }
}

fn nodes_rss(samples: &[Sample]) -> Rss {
    let with_nodes: Vec<&Sample> = samples.iter().filter(|s| !s.nodes.is_empty()).collect();
    let mean = |s: &Sample| s.nodes.iter().map(|n| n.2).sum::<u64>() / s.nodes.len() as u64;
    let late: Vec<(u32, f64, f64)> = with_nodes
        .iter()
        .filter(|s| s.at >= FIRST_MINUTE)
        .flat_map(|s| s.nodes.iter().map(|n| (n.1, s.at.as_secs_f64(), n.2 as f64)))
        .collect();
    Rss {
        start: with_nodes.first().map_or(0, |s| mean(s)),
        end: with_nodes.last().map_or(0, |s| mean(s)),
        max: with_nodes.iter().flat_map(|s| s.nodes.iter().map(|n| n.2)).max().unwrap_or(0),
        slope: slope(&late),
    }
}
