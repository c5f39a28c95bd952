//! Outcomes of walks and the run report. A failing walk is data here, not an
//! `Err`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::failures::{FailureGroup, GroupSummary, SHOWN_GROUPS, render_groups};
use super::space::WalkId;

/// A walk that failed: which action, and why. The one failed-walk type of
/// the report, `run --json` and `run.json` (`failed_walks`), a soak's
/// report (with its round) and the wire between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedWalk {
    /// The walk's id.
    pub walk_id: WalkId,
    /// Position of the failing action in the walk order.
    pub action_index: usize,
    /// Type name of the failing action (borrowed from the walk order in a
    /// run; owned when read back from JSON).
    pub action: std::borrow::Cow<'static, str>,
    /// The error text (for a panic: "panicked: " and the panic message).
    pub error: String,
}

/// Walks that could not be finished, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedWalks {
    /// The walks, as ranges of ids.
    pub walks: Vec<Range<u64>>,
    /// Why they could not be finished.
    pub reason: String,
}

impl AbortedWalks {
    /// How many walks this covers.
    pub fn count(&self) -> u64 {
        self.walks.iter().map(|r| r.end - r.start).sum()
    }
}

/// Why a run stopped before every walk ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "reason")]
#[non_exhaustive]
pub enum StopReason {
    /// Ctrl-C (or a caller's stop request).
    Interrupted,
    /// A soak's `--duration` (or `--rounds`) was up: a normal ending.
    DurationEnded,
    /// Nodes restarted more often than the restart intensity allows.
    RestartLimit(String),
    /// Every node was lost and none could be brought back.
    AllNodesLost(String),
    /// As many walks failed as the run allowed
    /// ([`RunOptions::max_failures`](crate::RunOptions::max_failures)):
    /// the walks not yet started are left `not_run`.
    FailureLimit(u64),
}

impl StopReason {
    /// How the walks that did not finish count: a normal ending leaves them
    /// `not_run`; any other stop aborts them.
    pub fn fate(&self) -> Fate {
        match self {
            StopReason::DurationEnded | StopReason::FailureLimit(_) => Fate::NotRun,
            _ => Fate::Aborted,
        }
    }

    /// What happened, for reasons: "the run was interrupted".
    pub fn phrase(&self) -> String {
        match self {
            StopReason::Interrupted => "the run was interrupted".to_string(),
            StopReason::DurationEnded => "the duration ended".to_string(),
            StopReason::RestartLimit(why) => format!("the restart limit was reached ({why})"),
            StopReason::AllNodesLost(why) => format!("every node was lost ({why})"),
            StopReason::FailureLimit(1) => "a walk failed (the failure limit is 1)".to_string(),
            StopReason::FailureLimit(n) => format!("{n} walks failed (the failure limit)"),
        }
    }

    /// The name of the ending in JSON.
    pub fn name(&self) -> &'static str {
        match self {
            StopReason::Interrupted => "interrupted",
            StopReason::DurationEnded => "duration",
            StopReason::RestartLimit(_) => "restart_limit",
            StopReason::AllNodesLost(_) => "all_nodes_lost",
            StopReason::FailureLimit(_) => "failure_limit",
        }
    }
}

/// How walks that did not finish are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fate {
    /// Counted apart (`not_run`): the run ended as planned before them.
    NotRun,
    /// Counted as aborted: something went wrong.
    Aborted,
}

/// How a run ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// Every walk ended.
    #[default]
    Completed,
    /// It was stopped; the walks that did not finish are `not_run` or
    /// `aborted`, with their reasons.
    Stopped(StopReason),
}

impl Ending {
    /// The ending's name in JSON: `completed`, `duration`, `interrupted`,
    /// `restart_limit`, `all_nodes_lost`.
    pub fn name(&self) -> &'static str {
        match self {
            Ending::Completed => "completed",
            Ending::Stopped(reason) => reason.name(),
        }
    }

    /// Whether the run ended as planned (completed, or its duration was up).
    pub fn is_normal(&self) -> bool {
        matches!(self, Ending::Completed | Ending::Stopped(StopReason::DurationEnded))
    }
}

/// Counts of outcomes, merged per batch (never per walk through shared
/// memory).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Walks that ran every segment without failing or cancelling.
    pub passed: u64,
    /// Walks that failed (error or panic in an action, or their serial action
    /// failed).
    pub failed: u64,
    /// Walks an action cancelled.
    pub cancelled: u64,
    /// Walks pruned before they ran.
    pub pruned: u64,
    /// Walks that could not be finished.
    pub aborted: u64,
    /// Segments run (one per walk per epoch it took part in).
    pub segments: u64,
}

impl Counts {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        self.pruned += other.pruned;
        self.aborted += other.aborted;
        self.segments += other.segments;
    }

    /// Walks with a final outcome.
    pub fn ended(&self) -> u64 {
        self.passed + self.failed + self.cancelled + self.pruned + self.aborted
    }
}

/// The result of a run: every walk id is accounted for exactly once.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Report<S = ()> {
    /// Walks in the space.
    pub walks: u64,
    /// How the walks ended: passed, failed, cancelled, pruned, aborted, and
    /// the segments run.
    pub counts: Counts,
    /// Walks left unrun because the run ended as planned before them (a
    /// soak's duration; see `not_run_walks`).
    pub not_run: u64,
    /// Serial actions run (once per epoch that has one).
    pub serial_actions: u64,
    /// Serial actions not run because no walk of their branch was left
    /// live (all cancelled, failed, pruned or aborted before them); their
    /// epochs are skipped too.
    pub serial_skipped: u64,
    /// Walk runners restarted by their supervisor after a panic.
    pub runner_restarts: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Every failed walk, by id.
    pub failed_walks: Vec<FailedWalk>,
    /// The failed walks grouped by signature (failing entry, normalised
    /// error), largest first, each with its minimal walk and the options
    /// that induce it (see `model::triage`).
    pub failure_groups: Vec<FailureGroup>,
    /// Every aborted walk, grouped by reason.
    pub aborted_walks: Vec<AbortedWalks>,
    /// Every walk left unrun, grouped by reason.
    pub not_run_walks: Vec<AbortedWalks>,
    /// How the run ended.
    pub ending: Ending,
    /// Final state of every walk that ran, by id, when gathering was asked
    /// for (pruned walks have none).
    pub states: BTreeMap<WalkId, S>,
    /// The run directory (`walks.jsonl`, `run.json`, `junit.xml`), when the
    /// run was given a log dir.
    pub run_dir: Option<PathBuf>,
    /// Cluster nodes lost during the run (by name), in the order lost.
    pub lost_nodes: Vec<String>,
}

impl<S> Report<S> {
    /// Whether every walk id is accounted for exactly once.
    pub fn is_consistent(&self) -> bool {
        self.counts.passed
            + self.counts.failed
            + self.counts.cancelled
            + self.counts.pruned
            + self.counts.aborted
            + self.not_run
            == self.walks
            && self.failed_walks.len() as u64 == self.counts.failed
            && self.aborted_walks.iter().map(AbortedWalks::count).sum::<u64>()
                == self.counts.aborted
            && self.not_run_walks.iter().map(AbortedWalks::count).sum::<u64>() == self.not_run
    }

    /// Whether no walk failed or was aborted and the run ended as planned.
    pub fn success(&self) -> bool {
        self.counts.failed == 0 && self.counts.aborted == 0 && self.ending.is_normal()
    }

    /// The report without its gathered states.
    pub fn without_states(self) -> Report<()> {
        self.map_states(|_, _| Ok::<_, std::convert::Infallible>(())).unwrap_or_else(|e| match e {})
    }

    /// The report with each gathered state converted by `convert`; the
    /// first error ends the conversion.
    pub fn map_states<T, E>(
        self,
        mut convert: impl FnMut(WalkId, S) -> Result<T, E>,
    ) -> Result<Report<T>, E> {
        let states = self
            .states
            .into_iter()
            .map(|(id, state)| convert(id, state).map(|t| (id, t)))
            .collect::<Result<BTreeMap<_, _>, E>>()?;
        Ok(Report {
            walks: self.walks,
            counts: self.counts,
            not_run: self.not_run,
            serial_actions: self.serial_actions,
            serial_skipped: self.serial_skipped,
            runner_restarts: self.runner_restarts,
            elapsed: self.elapsed,
            failed_walks: self.failed_walks,
            failure_groups: self.failure_groups,
            aborted_walks: self.aborted_walks,
            not_run_walks: self.not_run_walks,
            ending: self.ending,
            states,
            run_dir: self.run_dir,
            lost_nodes: self.lost_nodes,
        })
    }

    pub(crate) fn from_parts(
        walks: u64,
        counts: Counts,
        serial_actions: u64,
        mut failed_walks: Vec<FailedWalk>,
        aborted_walks: Vec<AbortedWalks>,
        not_run_walks: Vec<AbortedWalks>,
        states: BTreeMap<WalkId, S>,
    ) -> Self {
        failed_walks.sort_unstable_by_key(|f| f.walk_id); // Ids are unique.
        Report {
            walks,
            counts,
            not_run: not_run_walks.iter().map(AbortedWalks::count).sum(),
            serial_actions,
            serial_skipped: 0,
            runner_restarts: 0,
            elapsed: Duration::ZERO,
            failed_walks,
            failure_groups: Vec::new(),
            aborted_walks,
            not_run_walks,
            ending: Ending::Completed,
            states,
            run_dir: None,
            lost_nodes: Vec::new(),
        }
    }
}

/// Aborted or unrun walk groups shown in a report's text.
const SHOWN_UNFINISHED: usize = 10;

/// Failed walks listed one by one in a report's text, after the groups.
const SHOWN_FAILED: usize = 10;

impl<S> Report<S> {
    /// The report as text: the verdict, the counts, the failure groups
    /// (largest first, each with its minimal walk and conditions, and with
    /// `replay(id)` under its minimal walk when given), the first failed
    /// walks by id (each with its failing action and exact error, and
    /// `replay(id)` under it when given), then the aborted and unrun walks
    /// by reason. What [`Display`](fmt::Display) prints, without replay
    /// lines.
    pub fn render(&self, replay: Option<&dyn Fn(WalkId) -> String>) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let verdict = match &self.ending {
            Ending::Stopped(StopReason::AllNodesLost(_)) => "INCOMPLETE",
            _ if self.success() => "PASS",
            _ if self.counts.failed == 0 && self.counts.aborted == 0 => "STOPPED",
            _ => "FAIL",
        };
        let how = match &self.ending {
            Ending::Completed => "completed".to_string(),
            Ending::Stopped(reason) => format!("stopped: {}", reason.phrase()),
        };
        let _ = writeln!(
            s,
            "{verdict}: {} of {} failed, {} aborted ({how}, {:.3} s)",
            self.counts.failed,
            super::count(self.walks, "walk"),
            self.counts.aborted,
            self.elapsed.as_secs_f64()
        );
        let not_run = match self.not_run {
            0 => String::new(),
            n => format!(", not run {n}"),
        };
        let _ = writeln!(
            s,
            "  passed {}, failed {}, cancelled {}, pruned {}, aborted {}{not_run}",
            self.counts.passed,
            self.counts.failed,
            self.counts.cancelled,
            self.counts.pruned,
            self.counts.aborted
        );
        let groups: Vec<GroupSummary> =
            self.failure_groups.iter().map(|g| GroupSummary::of(g, replay)).collect();
        s.push_str(&render_groups(&groups, SHOWN_GROUPS, " (see Report::failure_groups)"));
        s.push_str(&render_failed_walks(&self.failed_walks, SHOWN_FAILED, replay));
        let unfinished = self
            .aborted_walks
            .iter()
            .map(|a| ("aborted", a))
            .chain(self.not_run_walks.iter().map(|a| ("not run", a)));
        for (shown, (what, walks)) in unfinished.enumerate() {
            if shown == SHOWN_UNFINISHED {
                let _ = writeln!(s, "  ... and more (see Report::aborted_walks, not_run_walks)");
                break;
            }
            let first =
                walks.walks.first().map_or(String::new(), |r| format!(", from walk {}", r.start));
            let n = super::count(walks.count(), "walk");
            let _ = writeln!(s, "{what}: {n}{first}: {}", walks.reason);
        }
        s
    }
}

/// The first `shown` failed walks (the report keeps them by id), one each:
/// the walk, its failing action (name and position) and its error text as
/// it was, not normalised; `replay(id)` under each when given; then how
/// many more there are.
fn render_failed_walks(
    failed: &[FailedWalk],
    shown: usize,
    replay: Option<&dyn Fn(WalkId) -> String>,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if failed.is_empty() {
        return s;
    }
    let _ = writeln!(s, "failed walks: {}", failed.len());
    for f in failed.iter().take(shown) {
        let _ = writeln!(
            s,
            "  walk {}: {} (entry {}) failed: {}",
            f.walk_id, f.action, f.action_index, f.error
        );
        if let Some(replay) = replay {
            let _ = writeln!(s, "    replay: {}", replay(f.walk_id));
        }
    }
    if failed.len() > shown {
        let _ = writeln!(s, "  ... and {} more (see Report::failed_walks)", failed.len() - shown);
    }
    s
}

impl<S> fmt::Display for Report<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(id: u64) -> FailedWalk {
        FailedWalk {
            walk_id: WalkId(id),
            action_index: 1,
            action: "Push".into(),
            error: format!("full at {id}"),
        }
    }

    fn report(failures: u64, aborted: Vec<AbortedWalks>) -> Report {
        let aborted_count: u64 = aborted.iter().map(AbortedWalks::count).sum();
        let counts = Counts {
            passed: 100 - failures - aborted_count,
            failed: failures,
            cancelled: 0,
            pruned: 0,
            aborted: aborted_count,
            segments: 100,
        };
        let failed_walks = (0..failures).rev().map(|i| failed(i * 3)).collect();
        let report =
            Report::from_parts(100, counts, 0, failed_walks, aborted, Vec::new(), BTreeMap::new());
        assert!(report.is_consistent());
        report
    }

    #[test]
    fn a_passing_report_is_two_lines() {
        assert_eq!(
            report(0, Vec::new()).to_string(),
            "PASS: 0 of 100 walks failed, 0 aborted (completed, 0.000 s)\n\
             \x20 passed 100, failed 0, cancelled 0, pruned 0, aborted 0\n"
        );
    }

    #[test]
    fn failed_walks_are_listed_by_id_with_their_action_and_error() {
        let aborted =
            vec![AbortedWalks { walks: vec![90..92, 95..96], reason: "node lost".to_string() }];
        let report = report(2, aborted);
        assert_eq!(
            report.to_string(),
            "FAIL: 2 of 100 walks failed, 3 aborted (completed, 0.000 s)\n\
             \x20 passed 95, failed 2, cancelled 0, pruned 0, aborted 3\n\
             failed walks: 2\n\
             \x20 walk 0: Push (entry 1) failed: full at 0\n\
             \x20 walk 3: Push (entry 1) failed: full at 3\n\
             aborted: 3 walks, from walk 90: node lost\n"
        );
        let replay = |id: WalkId| format!("order.replay({id}, initial)");
        let text = report.render(Some(&replay));
        assert!(text.contains(
            "  walk 3: Push (entry 1) failed: full at 3\n    replay: order.replay(3, initial)\n"
        ));
    }

    #[test]
    fn failed_walks_past_the_first_ten_are_counted_not_listed() {
        let text = report(25, Vec::new()).to_string();
        assert!(text.contains("failed walks: 25\n  walk 0: "));
        assert!(text.contains("  walk 27: Push (entry 1) failed: full at 27\n"));
        assert!(!text.contains("walk 30:"));
        assert!(text.ends_with("  ... and 15 more (see Report::failed_walks)\n"));
        assert_eq!(text.lines().filter(|l| l.starts_with("  walk ")).count(), 10);
    }
}
