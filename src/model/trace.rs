//! The files of a traced run, as data: a `walks.jsonl` line
//! ([`TraceRecord`]), `run.json` ([`RunMeta`]), the walk order's
//! fingerprint, and the checks a line must pass when it is read back.
//! Reading and writing the files is `crate::trace`'s job; here is only what
//! they contain.
//!
//! # `walks.jsonl`
//! One JSON object per line, one line per walk id, in the order the walks
//! ended (not by id):
//!
//! ```text
//! {"suite":"demo","walk_id":27,"branch":[1],"outcome":"failed",
//!  "actions":[{"type":"Login","option":1,"value":"Bob"}, ...],
//!  "action_index":3,"error":"charged 360 cents ...","duration_ns":5120,"runner":"local/0"}
//! ```
//!
//! `branch` holds the walk's serial options; `actions` every entry of the
//! walk order, serial ones included, with the option's index and its serde
//! JSON. `action_index` is the failing or cancelling entry; `error` is set
//! for failed walks only.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::outcome::{AbortedWalks, Report};
use super::space::{EntryKind, Space};

/// Version of the trace format, stored in `run.json`.
pub const TRACE_FORMAT: u32 = 1;

/// How a walk ended, as the trace spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceOutcome {
    /// Every segment ran.
    Passed,
    /// An action or serial action failed (or panicked).
    Failed,
    /// An action cancelled the walk.
    Cancelled,
    /// An action pruned the walk: it never ran.
    Pruned,
    /// The walk could not be finished.
    Aborted,
}

/// One entry of a recorded walk: the action's type, the chosen option's index
/// and its serde JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceAction {
    /// The action's type name.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Index of the chosen option.
    pub option: u32,
    /// The option, as serde JSON.
    pub value: serde_json::Value,
}

/// One line of `walks.jsonl`: how one walk ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// The suite (or the name given to a library run) the walk belongs to.
    pub suite: String,
    /// The walk's id.
    pub walk_id: u64,
    /// The walk's serial options (its deepest branch).
    pub branch: Vec<u32>,
    /// How it ended.
    pub outcome: TraceOutcome,
    /// Every entry of the walk, in walk order.
    pub actions: Vec<TraceAction>,
    /// The failing or cancelling entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_index: Option<usize>,
    /// The error, for a failed walk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Time its segments took, summed.
    pub duration_ns: u64,
    /// Where it ran: `local/<runner index>`, or the node's name.
    pub runner: String,
    /// In a soak, the round the walk ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u64>,
    /// In a soak's sampled round, the seed its sample was drawn with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// How a walk ended, handed to [`TraceEncoder::encode`].
#[derive(Debug, Clone, Copy)]
pub struct TraceEnd<'a> {
    /// The outcome.
    pub outcome: TraceOutcome,
    /// The failing or cancelling entry.
    pub action_index: Option<usize>,
    /// The error, for a failed walk.
    pub error: Option<&'a str>,
}

/// A `walks.jsonl` line, borrowing the precomputed option JSON.
#[derive(Serialize)]
struct LineOut<'a> {
    suite: &'a str,
    walk_id: u64,
    branch: Vec<u32>,
    outcome: TraceOutcome,
    actions: Vec<ActionOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    duration_ns: u64,
    runner: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    round: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
}

#[derive(Serialize)]
struct ActionOut<'a> {
    #[serde(rename = "type")]
    type_name: &'a str,
    option: u32,
    value: &'a RawValue,
}

/// The JSON of every option of every entry, serialized once per run.
pub type OptionJson = Vec<Vec<Box<RawValue>>>;

/// Turns walk ends into `walks.jsonl` lines. Built once per run; every
/// option's JSON is serialized once, up front, never per walk.
#[derive(Debug)]
pub struct TraceEncoder {
    suite: String,
    space: Space,
    values: OptionJson,
    round: Option<RoundTag>,
}

/// What a soak adds to each line of a round: the round and, for a sampled
/// round, its seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundTag {
    /// The round.
    pub round: u64,
    /// The sample's seed.
    pub seed: Option<u64>,
}

impl TraceEncoder {
    /// An encoder for the walks of `space`, whose option JSON is `values`
    /// (one list per entry, one value per option).
    pub fn new(suite: String, space: Space, values: OptionJson) -> Self {
        TraceEncoder { suite, space, values, round: None }
    }

    /// Tags every line with a soak round.
    pub fn with_round(mut self, round: Option<RoundTag>) -> Self {
        self.round = round;
        self
    }

    /// Appends the line of walk `id` (newline included) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>, id: u64, end: TraceEnd<'_>, nanos: u64, runner: &str) {
        let digits = self.space.digits(id).expect("trace records lie inside the space");
        let branch = self.space.serial_positions().iter().map(|&p| digits[p]).collect();
        let actions = self
            .space
            .entries()
            .iter()
            .zip(&digits)
            .enumerate()
            .map(|(p, (entry, &option))| ActionOut {
                type_name: entry.name,
                option,
                value: &self.values[p][option as usize],
            })
            .collect();
        let line = LineOut {
            suite: &self.suite,
            walk_id: id,
            branch,
            outcome: end.outcome,
            actions,
            action_index: end.action_index,
            error: end.error,
            duration_ns: nanos,
            runner,
            round: self.round.map(|r| r.round),
            seed: self.round.and_then(|r| r.seed),
        };
        serde_json::to_writer(&mut *out, &line).expect("a trace line serializes");
        out.push(b'\n');
    }
}

/// A stable fingerprint of a walk order: SHA-256, hex, over each entry's
/// kind, type name and every option's JSON. Two builds that produce the same
/// fingerprint number and run their walks the same way.
///
/// SHA-256 (the `sha2` crate) rather than a short hand-written hash: the
/// fingerprint is stored on disk and compared across builds and machines,
/// so it must never change with the Rust version (unlike `DefaultHasher`),
/// and a well-kept crate costs less to trust than our own code.
pub fn fingerprint(space: &Space, values: &OptionJson) -> String {
    let mut hash = Sha256::new();
    hash.update(b"combtest walk order v1\n");
    for (entry, options) in space.entries().iter().zip(values) {
        let kind: &[u8] = match entry.kind {
            EntryKind::Plain => b"plain",
            EntryKind::Serial => b"serial",
        };
        // Length-prefixed fields: no two orders hash the same bytes.
        for field in [kind, entry.name.as_bytes()] {
            hash.update((field.len() as u64).to_le_bytes());
            hash.update(field);
        }
        hash.update((options.len() as u64).to_le_bytes());
        for value in options {
            hash.update((value.get().len() as u64).to_le_bytes());
            hash.update(value.get().as_bytes());
        }
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// One entry of the walk order, in `run.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// The action's type name.
    #[serde(rename = "type")]
    pub type_name: String,
    /// `plain` or `serial`.
    pub kind: EntryKind,
    /// Number of options.
    pub options: u32,
}

impl EntryMeta {
    /// The entries of a space.
    pub fn of(space: &Space) -> Vec<EntryMeta> {
        space
            .entries()
            .iter()
            .zip(space.option_counts())
            .map(|(e, &n)| EntryMeta { type_name: e.name.to_string(), kind: e.kind, options: n })
            .collect()
    }
}

/// A run's summary: the same keys as `combtest-node run --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Walks in the space.
    pub walks: u64,
    /// Walks that passed.
    pub passed: u64,
    /// Walks that failed.
    pub failed: u64,
    /// Walks cancelled.
    pub cancelled: u64,
    /// Walks pruned.
    pub pruned: u64,
    /// Walks aborted.
    pub aborted: u64,
    /// Segments run.
    pub segments: u64,
    /// Serial actions run.
    pub serial_actions: u64,
    /// Runner restarts.
    pub runner_restarts: u64,
    /// Wall time, in seconds.
    pub elapsed_s: f64,
    /// Every failed walk.
    pub failed_walks: Vec<SummaryFailure>,
    /// Every aborted walk (as id ranges), grouped by reason.
    #[serde(default)]
    pub aborted_walks: Vec<AbortedWalks>,
    /// Walks left unrun because the run ended as planned before them.
    #[serde(default)]
    pub not_run: u64,
    /// They, as id ranges, grouped by reason.
    #[serde(default)]
    pub not_run_walks: Vec<AbortedWalks>,
    /// How the run ended: `completed`, `duration`, `interrupted`,
    /// `restart_limit` or `all_nodes_lost`.
    #[serde(default = "completed")]
    pub ending: String,
    /// Why it was stopped, if it was.
    #[serde(default)]
    pub ending_reason: Option<String>,
}

fn completed() -> String {
    "completed".to_string()
}

/// A failed walk in a [`Summary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryFailure {
    /// The walk's id.
    pub walk_id: u64,
    /// The failing action's type name.
    pub action: String,
    /// The error.
    pub error: String,
}

impl Summary {
    /// The summary of a report.
    pub fn of<S>(report: &Report<S>) -> Self {
        Summary {
            walks: report.walks,
            passed: report.passed,
            failed: report.failed,
            cancelled: report.cancelled,
            pruned: report.pruned,
            aborted: report.aborted,
            segments: report.segments,
            serial_actions: report.serial_actions,
            runner_restarts: report.runner_restarts,
            elapsed_s: report.elapsed.as_secs_f64(),
            failed_walks: report
                .failed_walks
                .iter()
                .map(|f| SummaryFailure {
                    walk_id: f.walk_id.0,
                    action: f.action.to_string(),
                    error: f.error.clone(),
                })
                .collect(),
            aborted_walks: report.aborted_walks.clone(),
            not_run: report.not_run,
            not_run_walks: report.not_run_walks.clone(),
            ending: report.ending.name().to_string(),
            ending_reason: match &report.ending {
                super::outcome::Ending::Stopped(reason) => Some(reason.phrase()),
                super::outcome::Ending::Completed => None,
            },
        }
    }
}

/// `run.json`: what ran, and how it ended. Written when the run starts (with
/// no `ended_at` and no `summary`) and rewritten when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// [`TRACE_FORMAT`].
    pub format: u32,
    /// The run's id (a UUID); also the run directory's name.
    pub run_id: String,
    /// The suite, or the name given to a library run.
    pub suite: String,
    /// [`fingerprint`] of the walk order.
    pub fingerprint: String,
    /// The combtest version that ran it.
    pub library_version: String,
    /// The walk order's entries.
    pub walk_order: Vec<EntryMeta>,
    /// Walks in the space.
    pub walks: u64,
    /// Runner threads.
    pub threads: usize,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// When it ended; absent while it runs (or if it crashed).
    #[serde(default)]
    pub ended_at: Option<String>,
    /// Lines written to `walks.jsonl`.
    #[serde(default)]
    pub records: Option<u64>,
    /// The final summary; absent while it runs (or if it crashed).
    #[serde(default)]
    pub summary: Option<Summary>,
}

/// Why one line of `walks.jsonl` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// The line has no final newline: the run stopped while writing it.
    #[error("is truncated (no newline at its end): the run stopped while writing it")]
    Truncated,
    /// The line is not a JSON trace record.
    #[error("is not a trace record: {0}")]
    NotJson(String),
    /// The record belongs to another suite.
    #[error("is a record of suite '{found}', but this run is of suite '{expected}'")]
    OtherSuite {
        /// The record's suite.
        found: String,
        /// The run's suite.
        expected: String,
    },
}

/// Parses one line of `walks.jsonl` (with its newline, if it had one) of a
/// run of suite `suite`.
pub fn parse_line(line: &str, suite: &str) -> Result<TraceRecord, LineError> {
    let Some(text) = line.strip_suffix('\n') else {
        return Err(LineError::Truncated);
    };
    let record: TraceRecord =
        serde_json::from_str(text).map_err(|e| LineError::NotJson(e.to_string()))?;
    if record.suite != suite {
        return Err(LineError::OtherSuite { found: record.suite, expected: suite.to_string() });
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::space::EntryInfo;

    fn space() -> Space {
        let entry = |name, kind, n: usize| EntryInfo {
            name,
            kind,
            options: (0..n).map(|i| i.to_string()).collect(),
        };
        Space::new(vec![entry("A", EntryKind::Plain, 2), entry("X", EntryKind::Serial, 3)]).unwrap()
    }

    fn values(space: &Space) -> OptionJson {
        space
            .option_counts()
            .iter()
            .map(|&n| {
                (0..n).map(|i| serde_json::value::to_raw_value(&i).unwrap()).collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn encoded_lines_parse_back() {
        let space = space();
        let encoder = TraceEncoder::new("s".into(), space.clone(), values(&space));
        let mut out = Vec::new();
        let end =
            TraceEnd { outcome: TraceOutcome::Failed, action_index: Some(0), error: Some("boom") };
        // Id 3: serial X is the most significant digit: X=1, A=1.
        encoder.encode(&mut out, 3, end, 42, "local/1");
        let line = String::from_utf8(out).unwrap();
        let record = parse_line(&line, "s").unwrap();
        assert_eq!(record.walk_id, 3);
        assert_eq!(record.branch, [1]);
        assert_eq!(record.outcome, TraceOutcome::Failed);
        assert_eq!(record.actions[1].type_name, "X");
        assert_eq!(
            (record.actions[0].option, &record.actions[0].value),
            (1, &serde_json::json!(1))
        );
        assert_eq!((record.action_index, record.error.as_deref()), (Some(0), Some("boom")));
        assert_eq!((record.duration_ns, record.runner.as_str()), (42, "local/1"));
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(parse_line("{\"suite\":", "s"), Err(LineError::Truncated));
        assert!(matches!(parse_line("hello\n", "s"), Err(LineError::NotJson(_))));
        let space = space();
        let encoder = TraceEncoder::new("other".into(), space.clone(), values(&space));
        let mut out = Vec::new();
        let end = TraceEnd { outcome: TraceOutcome::Passed, action_index: None, error: None };
        encoder.encode(&mut out, 0, end, 0, "local/0");
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            parse_line(&line, "s"),
            Err(LineError::OtherSuite { found: "other".into(), expected: "s".into() })
        );
    }

    const PINNED: &str = "9f3e9bcb2228385b2438d6bf4db89d1f02eaa5dad9ecf1fa8a132df698a42da2";

    #[test]
    fn fingerprints_are_stable_and_see_every_change() {
        let space = space();
        let base = fingerprint(&space, &values(&space));
        assert_eq!(base, fingerprint(&space, &values(&space)));
        // Stored on disk and compared across builds: it must never drift.
        assert_eq!(base, PINNED);
        assert_eq!(base.len(), 64);
        let mut changed = values(&space);
        changed[0][1] = serde_json::value::to_raw_value("one").unwrap();
        assert_ne!(base, fingerprint(&space, &changed));
    }
}
