//! The files of a traced run, as data: the lines of `walks.jsonl`
//! ([`TraceLine`]: [`TraceRecord`], [`BatchRecord`], [`SampleRecord`]),
//! `run.json` ([`RunMeta`]), the walk order's fingerprint, and the checks a
//! line must pass when it is read back. Reading and writing the files is
//! `crate::trace`'s job; here is only what they contain.
//!
//! # `walks.jsonl`, format 2
//! One JSON object per line, in the order batches ended (not by id). A
//! walk's actions are a pure function of its id and the walk order, whose
//! options `run.json` records once (`options`), so only the walks that did
//! not pass carry a record of their own:
//!
//! - a **walk record** ([`TraceRecord`]) for each walk that failed or was
//!   cancelled, with its own duration (see [`TraceRecord::duration_ns`]):
//!
//!   ```text
//!   {"suite":"demo","walk_id":27,"branch":[1],"outcome":"failed",
//!    "actions":[{"type":"Login","option":1,"value":"Bob"}, ...],
//!    "action_index":3,"error":"charged 360 cents ...","duration_ns":5120,"runner":"local/0"}
//!   ```
//!
//! - a **batch record** ([`BatchRecord`]) per batch: its passing and pruned
//!   walks as id ranges (`[start, end)`), and the batch's time on its
//!   runner. Passing walks have no duration of their own: it is the
//!   batch's.
//!
//!   ```text
//!   {"suite":"demo","passed":[[0,1],[2,7]],"pruned":[[1,2]],"batch_ns":81200,"runner":"local/0"}
//!   ```
//!
//! - in a soak's file, a **sample record** ([`SampleRecord`]) after each
//!   sampled round: its seed, the sampler's version
//!   (`model::sample::SAMPLER_VERSION`) and the walks it did not finish.
//!   The round's batch records then count its passing walks
//!   (`passed_count`) instead of listing them: they are the sample drawn
//!   from the seed less every other walk of the round.
//!
//! `branch` holds the walk's serial options; `actions` every entry of the
//! walk order, serial ones included, with the option's index and its serde
//! JSON. `action_index` is the failing or cancelling entry; `error` is set
//! for failed walks only.
//!
//! # Format 1
//! One walk record per walk, passing and pruned ones included (each with
//! its own duration); `run.json` without `options`. Still read.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::failures::GroupSummary;
use super::outcome::{AbortedWalks, FailedWalk, Report};
use super::space::{EntryKind, Space};

/// Version of the trace format this build writes, stored in `run.json`.
pub const TRACE_FORMAT: u32 = 2;

/// The trace formats this build reads.
pub const FORMATS_READ: [u32; 2] = [1, 2];

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
    /// Time the walk took. In format 2, for a failed or cancelled walk:
    /// from the executor's last clock reading before it ended to its end.
    /// The executor reads the clock at least once per
    /// `exec::TIMED_STRIDE_NS` of walks and at the start of every walk
    /// slower than that, so this is the walk's own time (its segments'
    /// summed, when its walks are that slow), plus at most that much of the
    /// passing walks just before it. For a passing or pruned walk read back
    /// from a batch record: 0 (see `batch_ns`). In format 1: every walk's
    /// own time.
    pub duration_ns: u64,
    /// Where it ran: `local/<runner index>`, or the node's name.
    pub runner: String,
    /// In a soak, the round the walk ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u64>,
    /// In a soak's sampled round, the seed its sample was drawn with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Format 2, a passing or pruned walk read back from its batch's
    /// record: the time of that whole batch (durations of passing walks are
    /// batch-level). Never written in a walk record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_ns: Option<u64>,
}

/// A format-2 line for a batch: its passing and pruned walks as id ranges
/// (`[start, end)`, each walk in one range of one batch record), and its
/// time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// The suite.
    pub suite: String,
    /// The walks that passed, as id ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passed: Vec<[u64; 2]>,
    /// In a sampled soak round: how many walks passed (their ids follow from
    /// the round's sample; see [`SampleRecord`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed_count: Option<u64>,
    /// The walks pruned, as id ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<[u64; 2]>,
    /// The batch's time on its runner, every walk of it included.
    pub batch_ns: u64,
    /// Where it ran.
    pub runner: String,
    /// In a soak, the round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u64>,
    /// In a soak's sampled round, its seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl BatchRecord {
    /// Walks it records.
    pub fn walks(&self) -> u64 {
        let span = |r: &[u64; 2]| r[1].saturating_sub(r[0]);
        self.passed.iter().map(span).sum::<u64>()
            + self.passed_count.unwrap_or(0)
            + self.pruned.iter().map(span).sum::<u64>()
    }
}

/// A format-2 line of a soak's file, after a sampled round: what lets a
/// reader list the round's passing walks (the sample the seed draws, less
/// every walk recorded otherwise and the round's unfinished walks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// The suite.
    pub suite: String,
    /// The round.
    pub round: u64,
    /// The seed its sample was drawn with.
    pub seed: u64,
    /// The version of the sampler that drew it
    /// (`model::sample::SAMPLER_VERSION`).
    pub sampler: u32,
    /// Walks in the space it was drawn from.
    pub walks: u64,
    /// Walks asked for.
    pub sample: u64,
    /// Sampled walks the round did not finish (aborted or not run), as id
    /// ranges: they have no record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unfinished: Vec<[u64; 2]>,
}

/// One line of `walks.jsonl`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TraceLine {
    /// A walk of its own (format 1: every walk; format 2: failed and
    /// cancelled ones).
    Walk(TraceRecord),
    /// Format 2: a batch's passing and pruned walks.
    Batch(BatchRecord),
    /// Format 2, in a soak's file: a sampled round's seed.
    Sample(SampleRecord),
}

impl TraceLine {
    /// The suite it names.
    pub fn suite(&self) -> &str {
        match self {
            TraceLine::Walk(r) => &r.suite,
            TraceLine::Batch(b) => &b.suite,
            TraceLine::Sample(s) => &s.suite,
        }
    }
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

    /// Appends the batch record of a batch's passing and pruned walks
    /// (nothing if it has none): ranges, or in a sampled round the count
    /// of passing walks. Returns the walks it records.
    pub fn encode_batch(
        &self,
        out: &mut Vec<u8>,
        passed: &[Range<u64>],
        pruned: &[Range<u64>],
        nanos: u64,
        runner: &str,
    ) -> u64 {
        let span = |r: &Range<u64>| r.end - r.start;
        let (passing, pruning) =
            (passed.iter().map(span).sum::<u64>(), pruned.iter().map(span).sum::<u64>());
        if passing + pruning == 0 {
            return 0;
        }
        let pairs = |ranges: &[Range<u64>]| ranges.iter().map(|r| [r.start, r.end]).collect();
        let sampled = self.round.is_some_and(|r| r.seed.is_some());
        let line = BatchRecord {
            suite: self.suite.clone(),
            passed: if sampled { Vec::new() } else { pairs(passed) },
            passed_count: (sampled && passing > 0).then_some(passing),
            pruned: pairs(pruned),
            batch_ns: nanos,
            runner: runner.to_string(),
            round: self.round.map(|r| r.round),
            seed: self.round.and_then(|r| r.seed),
        };
        serde_json::to_writer(&mut *out, &line).expect("a trace line serializes");
        out.push(b'\n');
        passing + pruning
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
    /// Serial actions skipped: no walk of their branch was left live.
    #[serde(default)]
    pub serial_skipped: u64,
    /// Runner restarts.
    pub runner_restarts: u64,
    /// Wall time, in seconds.
    pub elapsed_s: f64,
    /// Every failed walk.
    pub failed_walks: Vec<FailedWalk>,
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
    /// The failed walks grouped by signature, largest first, each with its
    /// minimal walk and conditions.
    #[serde(default)]
    pub failure_groups: Vec<GroupSummary>,
}

fn completed() -> String {
    "completed".to_string()
}

impl Summary {
    /// The summary of a report.
    pub fn of<S>(report: &Report<S>) -> Self {
        Summary {
            walks: report.walks,
            passed: report.counts.passed,
            failed: report.counts.failed,
            cancelled: report.counts.cancelled,
            pruned: report.counts.pruned,
            aborted: report.counts.aborted,
            segments: report.counts.segments,
            serial_actions: report.serial_actions,
            serial_skipped: report.serial_skipped,
            runner_restarts: report.runner_restarts,
            elapsed_s: report.elapsed.as_secs_f64(),
            failed_walks: report.failed_walks.clone(),
            aborted_walks: report.aborted_walks.clone(),
            not_run: report.not_run,
            not_run_walks: report.not_run_walks.clone(),
            ending: report.ending.name().to_string(),
            ending_reason: match &report.ending {
                super::outcome::Ending::Stopped(reason) => Some(reason.phrase()),
                super::outcome::Ending::Completed => None,
            },
            failure_groups: report
                .failure_groups
                .iter()
                .map(|g| GroupSummary::of(g, None))
                .collect(),
        }
    }

    /// The summary with the command that replays each group's minimal walk.
    pub fn with_replay(mut self, replay: impl Fn(u64) -> String) -> Self {
        for group in &mut self.failure_groups {
            group.minimal_walk.replay = Some(replay(group.minimal_walk.walk_id));
        }
        self
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
    /// Format 2: every option of every entry, as serde JSON (one list per
    /// entry of `walk_order`): what a walk recorded only by its id ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<Vec<serde_json::Value>>>,
    /// Walks in the space.
    pub walks: u64,
    /// Runner threads.
    pub threads: usize,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// When it ended; absent while it runs (or if it crashed).
    #[serde(default)]
    pub ended_at: Option<String>,
    /// Walks recorded in `walks.jsonl` (format 1: its lines; format 2: the
    /// walks of its walk and batch records).
    #[serde(default)]
    pub records: Option<u64>,
    /// The final summary; absent while it runs (or if it crashed).
    #[serde(default)]
    pub summary: Option<Summary>,
}

/// Why a `run.json` cannot be read back: see [`RecordCheck::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// The walk order has no entry.
    #[error("its walk order is empty")]
    NoEntries,
    /// An entry of the walk order has no option.
    #[error("entry {position} ({action}) of its walk order has no options")]
    NoOptions {
        /// The entry.
        position: usize,
        /// Its type name.
        action: String,
    },
    /// `walks` is not the size of the walk order's space.
    #[error("it counts {}, but its walk order's option counts make {}", super::count(*.walks, "walk"), product_text(.counts, *.space))]
    WrongSize {
        /// The `walks` field.
        walks: u64,
        /// The option count of each entry.
        counts: Vec<u32>,
        /// Their product, or `None` if it overflows a `u64`.
        space: Option<u64>,
    },
    /// The run ended, but `run.json` does not say how many records it wrote.
    #[error(
        "it has an ended_at but no records count (a finished run states how many lines it wrote)"
    )]
    NoRecordCount,
    /// A format-2 `run.json` without the options of each entry, or with
    /// another number of them than `walk_order` counts.
    #[error(
        "its options do not match its walk order (format 2 records every option of every entry): {0}"
    )]
    Options(String),
    /// More records than walks.
    #[error("it counts {}, more than its {}", super::count(*.records, "record"), super::count(*.walks, "walk"))]
    TooManyRecords {
        /// The `records` field.
        records: u64,
        /// The `walks` field.
        walks: u64,
    },
}

/// `2 × 3 = 6`, or `2 × 3 × ... = more than 18446744073709551615`.
fn product_text(counts: &[u32], space: Option<u64>) -> String {
    let factors: Vec<String> = counts.iter().map(u32::to_string).collect();
    match space {
        Some(space) => format!("{} = {space}", factors.join(" × ")),
        None => format!("{} = more than {}", factors.join(" × "), u64::MAX),
    }
}

/// The checks every record of a run's `walks.jsonl` must pass against the
/// run's `run.json`: its walk id lies in the space, it has one action per
/// entry of the walk order, each of the entry's type and within its option
/// count, and its options and branch are those of its walk id (the
/// numbering of [`Space`]). Built once per run directory, from a `run.json`
/// that it checks first.
#[derive(Debug, Clone)]
pub struct RecordCheck {
    walks: u64,
    format: u32,
    suite: String,
    entries: Vec<EntryMeta>,
    /// Format 2: every option's JSON, to describe walks recorded by id.
    options: Vec<Vec<serde_json::Value>>,
    /// The weight of each entry's option index in a walk id.
    weights: Vec<u64>,
    /// Positions of the serial entries, in walk order.
    serials: Vec<usize>,
}

impl RecordCheck {
    /// The checks of the records of a run described by `meta`, after
    /// checking `meta` itself: a non-empty walk order whose option counts
    /// multiply to `walks`, and, for a finished run, a record count no
    /// greater than `walks`.
    pub fn new(meta: &RunMeta) -> Result<Self, MetaError> {
        let entries = &meta.walk_order;
        if entries.is_empty() {
            return Err(MetaError::NoEntries);
        }
        if let Some(position) = entries.iter().position(|e| e.options == 0) {
            let action = entries[position].type_name.clone();
            return Err(MetaError::NoOptions { position, action });
        }
        // The numbering of `Space`: serial entries are the most significant
        // digits, then plain ones, each group in walk order.
        let serials: Vec<usize> =
            (0..entries.len()).filter(|&p| entries[p].kind == EntryKind::Serial).collect();
        let plains = (0..entries.len()).filter(|&p| entries[p].kind == EntryKind::Plain);
        let most_to_least: Vec<usize> = serials.iter().copied().chain(plains).collect();
        let mut weights = vec![0u64; entries.len()];
        let mut size = Some(1u64);
        for &p in most_to_least.iter().rev() {
            weights[p] = size.unwrap_or(0);
            size = size.and_then(|s| s.checked_mul(u64::from(entries[p].options)));
        }
        if size != Some(meta.walks) {
            let counts = entries.iter().map(|e| e.options).collect();
            return Err(MetaError::WrongSize { walks: meta.walks, counts, space: size });
        }
        if meta.ended_at.is_some() {
            match meta.records {
                None => return Err(MetaError::NoRecordCount),
                Some(records) if records > meta.walks => {
                    return Err(MetaError::TooManyRecords { records, walks: meta.walks });
                }
                Some(_) => {}
            }
        }
        let options = match (&meta.options, meta.format >= 2) {
            (Some(options), _) => {
                let counts = entries.iter().map(|e| e.options as usize);
                if options.len() != entries.len()
                    || options.iter().zip(counts).any(|(o, n)| o.len() != n)
                {
                    let found: Vec<usize> = options.iter().map(Vec::len).collect();
                    return Err(MetaError::Options(format!(
                        "it lists {found:?} options per entry"
                    )));
                }
                options.clone()
            }
            (None, true) => return Err(MetaError::Options("it has none".to_string())),
            (None, false) => Vec::new(),
        };
        Ok(RecordCheck {
            walks: meta.walks,
            format: meta.format,
            suite: meta.suite.clone(),
            entries: entries.clone(),
            options,
            weights,
            serials,
        })
    }

    /// Checks a line against the run: a walk record as
    /// [`check`](Self::check) does; a batch record's ranges non-empty and
    /// inside the space; no batch or sample record in a format-1 trace, no
    /// sample record in a run's.
    pub fn check_line(&self, line: &TraceLine) -> Result<(), LineError> {
        if line.suite() != self.suite {
            let (found, expected) = (line.suite().to_string(), self.suite.clone());
            return Err(LineError::OtherSuite { found, expected });
        }
        match line {
            TraceLine::Walk(record) => self.check(record),
            TraceLine::Batch(_) if self.format < 2 => {
                Err(LineError::NotJson("a format-2 batch record in a format-1 trace".to_string()))
            }
            TraceLine::Batch(batch) => {
                for range in batch.passed.iter().chain(&batch.pruned) {
                    check_range(range, self.walks)?;
                }
                if batch.passed_count.is_some() {
                    return Err(LineError::NotJson(
                        "a sampled round's batch record in a run's trace".to_string(),
                    ));
                }
                Ok(())
            }
            TraceLine::Sample(_) => {
                Err(LineError::NotJson("a soak's sample record in a run's trace".to_string()))
            }
        }
    }

    /// The record of walk `walk` (inside the space), as a batch record
    /// gives it: its actions from `run.json`'s options, no duration of its
    /// own.
    pub fn record_of(&self, walk: u64, outcome: TraceOutcome, batch: &BatchRecord) -> TraceRecord {
        let option =
            |p: usize| ((walk / self.weights[p]) % u64::from(self.entries[p].options)) as u32;
        let actions = self
            .entries
            .iter()
            .enumerate()
            .map(|(p, e)| {
                let o = option(p);
                TraceAction {
                    type_name: e.type_name.clone(),
                    option: o,
                    value: self
                        .options
                        .get(p)
                        .and_then(|v| v.get(o as usize))
                        .cloned()
                        .unwrap_or_default(),
                }
            })
            .collect();
        TraceRecord {
            suite: self.suite.clone(),
            walk_id: walk,
            branch: self.serials.iter().map(|&p| option(p)).collect(),
            outcome,
            actions,
            action_index: None,
            error: None,
            duration_ns: 0,
            runner: batch.runner.clone(),
            round: batch.round,
            seed: batch.seed,
            batch_ns: Some(batch.batch_ns),
        }
    }

    /// Checks one record against the run.
    pub fn check(&self, record: &TraceRecord) -> Result<(), LineError> {
        let walk = record.walk_id;
        if walk >= self.walks {
            return Err(LineError::OutsideSpace { walk, walks: self.walks });
        }
        if record.actions.len() != self.entries.len() {
            let (found, expected) = (record.actions.len(), self.entries.len());
            return Err(LineError::ActionCount { walk, found, expected });
        }
        let mut id = 0u64;
        for (position, (action, entry)) in record.actions.iter().zip(&self.entries).enumerate() {
            if action.type_name != entry.type_name {
                return Err(LineError::OtherAction {
                    walk,
                    position,
                    found: action.type_name.clone(),
                    expected: entry.type_name.clone(),
                });
            }
            if action.option >= entry.options {
                return Err(LineError::OptionOutOfRange {
                    walk,
                    position,
                    action: entry.type_name.clone(),
                    option: action.option,
                    options: entry.options,
                });
            }
            // At most `walks - 1` in all: every option is below its count.
            id += u64::from(action.option) * self.weights[position];
        }
        if id != walk {
            return Err(LineError::OtherWalk { walk, options_of: id });
        }
        let branch: Vec<u32> = self.serials.iter().map(|&p| record.actions[p].option).collect();
        if record.branch != branch {
            return Err(LineError::OtherBranch {
                walk,
                found: record.branch.clone(),
                expected: branch,
            });
        }
        Ok(())
    }
}

/// The walk ids of a trace's records, with their line numbers: finds a walk
/// recorded twice, and the records a finished run's trace lacks. Holds 24
/// bytes per walk record or range of a batch record.
#[derive(Debug, Clone, Default)]
pub struct TraceTally {
    /// (first walk, end, line) of every record or range.
    seen: Vec<(u64, u64, u64)>,
    /// Walks recorded.
    walks: u64,
}

/// What [`TraceTally::finish`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TallyError {
    /// A walk has two records.
    #[error("has two records of walk {walk}, on lines {first} and {second}")]
    Duplicate {
        /// The walk.
        walk: u64,
        /// Line of the first record.
        first: u64,
        /// Line of the second.
        second: u64,
    },
    /// A finished run's trace holds another number of records than
    /// `run.json` counts.
    #[error("has {}, but run.json says the run finished with {expected}", super::count(*.found, "record"))]
    Count {
        /// Records read.
        found: u64,
        /// The `records` field of `run.json`.
        expected: u64,
        /// The smallest walk id neither recorded nor aborted, when records
        /// are missing.
        first_missing: Option<u64>,
    },
}

impl TraceTally {
    /// Notes the record of walk `walk` on line `line`.
    pub fn add(&mut self, walk: u64, line: u64) {
        self.add_range(walk..walk + 1, line);
    }

    /// Notes the walks `walks`, recorded on line `line`.
    pub fn add_range(&mut self, walks: Range<u64>, line: u64) {
        self.walks += walks.end - walks.start;
        self.seen.push((walks.start, walks.end, line));
    }

    /// Notes every walk a line records.
    pub fn add_line(&mut self, record: &TraceLine, line: u64) {
        match record {
            TraceLine::Walk(r) => self.add(r.walk_id, line),
            TraceLine::Batch(b) => {
                for r in b.passed.iter().chain(&b.pruned) {
                    self.add_range(r[0]..r[1], line);
                }
            }
            TraceLine::Sample(_) => {}
        }
    }

    /// Walks recorded so far.
    pub fn records(&self) -> u64 {
        self.walks
    }

    /// Checks the records noted against `meta`: no walk twice and, if the
    /// run finished, as many records as `run.json` counts. Returns the
    /// number of records.
    pub fn finish(mut self, meta: &RunMeta) -> Result<u64, TallyError> {
        self.seen.sort_unstable();
        if let Some(pair) = self.seen.windows(2).find(|p| p[1].0 < p[0].1) {
            // Sorted by start: the second starts inside the first.
            let (walk, mut first, mut second) = (pair[1].0, pair[0].2, pair[1].2);
            if first > second {
                std::mem::swap(&mut first, &mut second);
            }
            return Err(TallyError::Duplicate { walk, first, second });
        }
        let found = self.records();
        match meta.records {
            Some(expected) if meta.ended_at.is_some() && found != expected => {
                let first_missing = (found < expected).then(|| {
                    let mut covered: Vec<Range<u64>> =
                        self.seen.iter().map(|&(start, end, _)| start..end).collect();
                    covered.extend(
                        meta.summary
                            .iter()
                            .flat_map(|s| s.aborted_walks.iter().chain(&s.not_run_walks))
                            .flat_map(|a| a.walks.iter().cloned()),
                    );
                    covered.sort_unstable_by_key(|r| r.start);
                    first_unrecorded(&covered, meta.walks)
                });
                Err(TallyError::Count { found, expected, first_missing: first_missing.flatten() })
            }
            _ => Ok(found),
        }
    }
}

/// The smallest walk id below `walks` in none of the ranges `covered`
/// (sorted by start).
fn first_unrecorded(covered: &[Range<u64>], walks: u64) -> Option<u64> {
    let mut next = 0u64;
    for range in covered {
        if range.start > next {
            break;
        }
        next = next.max(range.end);
    }
    (next < walks).then_some(next)
}

/// A range of a batch or sample record: `start < end <= walks`.
pub fn check_range(range: &[u64; 2], walks: u64) -> Result<(), LineError> {
    let [start, end] = *range;
    if start >= end {
        return Err(LineError::EmptyRange { start, end });
    }
    if end > walks {
        return Err(LineError::OutsideSpace { walk: end - 1, walks });
    }
    Ok(())
}

/// Why one line of `walks.jsonl` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// The line has no final newline: the run stopped while writing it.
    /// Readers (`crate::trace::RunDir`) skip such a last line as the torn
    /// tail of a crashed run rather than failing on it.
    #[error("is truncated (no newline at its end): the run stopped while writing it")]
    Truncated,
    /// The line ends before its record does, yet has its newline: only
    /// the last line can be cut off by a crash, and that one has none.
    #[error(
        "is cut off (its record ends early) but is not the unfinished last line a crash leaves: the file was damaged"
    )]
    CutOff,
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
    /// A range of a batch record holds no walk.
    #[error("records the walks [{start}, {end}), a range that holds none")]
    EmptyRange {
        /// Its start.
        start: u64,
        /// Its end.
        end: u64,
    },
    /// The record's walk id is outside the run's space.
    #[error("records walk {walk}, which is not in the space of the run: valid ids are 0..{walks}")]
    OutsideSpace {
        /// The record's walk id.
        walk: u64,
        /// Walks in the run's space.
        walks: u64,
    },
    /// The record has another number of actions than the walk order entries.
    #[error(
        "records walk {walk} with {}, but the run's walk order has {}",
        super::count(*.found as u64, "action"),
        super::count(*.expected as u64, "entry")
    )]
    ActionCount {
        /// The record's walk id.
        walk: u64,
        /// Actions in the record.
        found: usize,
        /// Entries in the run's walk order.
        expected: usize,
    },
    /// An action's type is not the one of its entry of the walk order.
    #[error(
        "records walk {walk} with {found} at entry {position}, but the run's walk order has {expected} there"
    )]
    OtherAction {
        /// The record's walk id.
        walk: u64,
        /// The entry.
        position: usize,
        /// The record's type name.
        found: String,
        /// The walk order's.
        expected: String,
    },
    /// An action's option index is not below its entry's option count.
    #[error(
        "records walk {walk} with option {option} of {action} (entry {position}), which has {}",
        super::count(*.options, "option")
    )]
    OptionOutOfRange {
        /// The record's walk id.
        walk: u64,
        /// The entry.
        position: usize,
        /// Its type name.
        action: String,
        /// The recorded option index.
        option: u32,
        /// The entry's option count.
        options: u32,
    },
    /// The record's options are those of another walk id.
    #[error("records walk {walk}, but its actions' options are those of walk {options_of}")]
    OtherWalk {
        /// The record's walk id.
        walk: u64,
        /// The walk id its options make.
        options_of: u64,
    },
    /// The record's branch is not its serial actions' options.
    #[error(
        "records walk {walk} with branch {found:?}, but its serial actions' options are {expected:?}"
    )]
    OtherBranch {
        /// The record's walk id.
        walk: u64,
        /// The recorded branch.
        found: Vec<u32>,
        /// The options of its serial actions.
        expected: Vec<u32>,
    },
}

/// Parses one walk record of `walks.jsonl` (with its newline, if it had
/// one) of a run of suite `suite`. Its checks against the run's walk order
/// are [`RecordCheck::check`]'s.
pub fn parse_line(line: &str, suite: &str) -> Result<TraceRecord, LineError> {
    match parse_any_line(line)? {
        TraceLine::Walk(record) if record.suite != suite => {
            Err(LineError::OtherSuite { found: record.suite, expected: suite.to_string() })
        }
        TraceLine::Walk(record) => Ok(record),
        _ => Err(LineError::NotJson("not a walk record".to_string())),
    }
}

/// Parses one line of `walks.jsonl` (with its newline, if it had one), of
/// any kind. Its checks are [`RecordCheck::check_line`]'s.
pub fn parse_any_line(line: &str) -> Result<TraceLine, LineError> {
    let Some(text) = line.strip_suffix('\n') else {
        return Err(LineError::Truncated);
    };
    // Parsed once as JSON (an unfinished object is a cut-off line), then
    // as one of the kinds of line.
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        if e.is_eof() { LineError::CutOff } else { LineError::NotJson(e.to_string()) }
    })?;
    serde_json::from_value(value).map_err(|_| {
        LineError::NotJson("neither a walk record, a batch record nor a sample record".to_string())
    })
}

/// A walk of a soak, as the soak's `walks.jsonl` records it: see
/// [`SoakTally`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoakWalk {
    /// The round.
    pub round: u64,
    /// The walk.
    pub walk_id: u64,
    /// How it ended.
    pub outcome: TraceOutcome,
    /// The failing or cancelling entry.
    pub action_index: Option<usize>,
    /// The error, for a failed walk.
    pub error: Option<String>,
    /// The line that records it (a batch or sample record for a passing
    /// walk of format 2).
    pub line: u64,
}

/// Why a soak's walks cannot be listed from its trace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SoakTraceError {
    /// A sampled round was drawn by a sampler this build does not have.
    #[error(
        "round {round} was sampled by sampler version {found}, and this build draws with versions 2 to {expected}: read it with the combtest version that wrote it"
    )]
    Sampler {
        /// The round.
        round: u64,
        /// The version recorded.
        found: u32,
        /// This build's (it also redraws the versions before it, from 2).
        expected: u32,
    },
    /// A sample record that does not fit its round.
    #[error("round {round}: {reason}")]
    Sample {
        /// The round.
        round: u64,
        /// What is wrong.
        reason: String,
    },
}

/// What the lines of one soak round record.
#[derive(Debug, Default)]
struct RoundLines {
    walks: Vec<SoakWalk>,
    /// (range, line, pruned)
    ranges: Vec<(Range<u64>, u64, bool)>,
    passed_count: u64,
    sample: Option<(SampleRecord, u64)>,
}

/// A soak's `walks.jsonl` read back (pure: lines in, walks out): every walk
/// of every round that a line records, passing walks of sampled rounds
/// included (redrawn from the round's seed).
#[derive(Debug, Default)]
pub struct SoakTally {
    rounds: std::collections::BTreeMap<u64, RoundLines>,
}

/// The walks of a soak's trace: see [`SoakTally::finish`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SoakWalks {
    /// Every walk listed, by round and walk id.
    pub walks: Vec<SoakWalk>,
    /// Rounds whose passing walks are counted but cannot be listed: a
    /// sampled round with no sample record (the soak stopped during it),
    /// with the number of its passing walks.
    pub unlisted: Vec<(u64, u64)>,
}

impl SoakTally {
    /// Notes line `line`.
    pub fn add(&mut self, record: TraceLine, line: u64) {
        match record {
            TraceLine::Walk(r) => {
                let round = self.rounds.entry(r.round.unwrap_or(0)).or_default();
                round.walks.push(SoakWalk {
                    round: r.round.unwrap_or(0),
                    walk_id: r.walk_id,
                    outcome: r.outcome,
                    action_index: r.action_index,
                    error: r.error,
                    line,
                });
            }
            TraceLine::Batch(b) => {
                let round = self.rounds.entry(b.round.unwrap_or(0)).or_default();
                round.passed_count += b.passed_count.unwrap_or(0);
                let pairs =
                    b.passed.iter().map(|r| (r, false)).chain(b.pruned.iter().map(|r| (r, true)));
                for (r, pruned) in pairs {
                    round.ranges.push((r[0]..r[1], line, pruned));
                }
            }
            TraceLine::Sample(s) => {
                let round = self.rounds.entry(s.round).or_default();
                round.sample = Some((s, line));
            }
        }
    }

    /// Every walk recorded, by round and id.
    pub fn finish(self) -> Result<SoakWalks, SoakTraceError> {
        let mut out = SoakWalks::default();
        for (number, round) in self.rounds {
            let RoundLines { mut walks, ranges, passed_count, sample } = round;
            for (range, line, pruned) in &ranges {
                let outcome = if *pruned { TraceOutcome::Pruned } else { TraceOutcome::Passed };
                walks.extend(range.clone().map(|walk_id| SoakWalk {
                    round: number,
                    walk_id,
                    outcome,
                    action_index: None,
                    error: None,
                    line: *line,
                }));
            }
            match sample {
                Some((sample, line)) => {
                    let passed = sampled_passing(number, &sample, &walks, passed_count)?;
                    if passed.len() as u64 != passed_count {
                        return Err(SoakTraceError::Sample {
                            round: number,
                            reason: format!(
                                "its batch records count {passed_count} passing walks, but its sample less its other walks leaves {}",
                                passed.len()
                            ),
                        });
                    }
                    walks.extend(passed.into_iter().map(|walk_id| SoakWalk {
                        round: number,
                        walk_id,
                        outcome: TraceOutcome::Passed,
                        action_index: None,
                        error: None,
                        line,
                    }));
                }
                None if passed_count > 0 => out.unlisted.push((number, passed_count)),
                None => {}
            }
            walks.sort_by_key(|w| w.walk_id);
            out.walks.extend(walks);
        }
        Ok(out)
    }
}

/// The passing walks of a sampled round: its sample less the walks
/// recorded otherwise and those it did not finish.
fn sampled_passing(
    round: u64,
    sample: &SampleRecord,
    recorded: &[SoakWalk],
    passed_count: u64,
) -> Result<Vec<u64>, SoakTraceError> {
    use super::sample::{SAMPLER_VERSION, SampleError, WalkSample};
    // Each sampled walk passed, is recorded, or did not finish: a sample
    // larger than that is a damaged record, refused before it is drawn.
    let unfinished: u64 = sample.unfinished.iter().map(|r| r[1].saturating_sub(r[0])).sum();
    let accounted = passed_count.saturating_add(recorded.len() as u64).saturating_add(unfinished);
    if sample.sample > accounted {
        return Err(SoakTraceError::Sample {
            round,
            reason: format!(
                "its sample record names {} walks, more than the {accounted} its other lines account for",
                sample.sample
            ),
        });
    }
    let drawn = WalkSample::draw_by(sample.sampler, sample.walks, sample.sample, sample.seed)
        .map_err(|e| match e {
            SampleError::Sampler { version } => {
                SoakTraceError::Sampler { round, found: version, expected: SAMPLER_VERSION }
            }
            e => SoakTraceError::Sample { round, reason: e.to_string() },
        })?;
    let mut other: Vec<Range<u64>> = recorded.iter().map(|w| w.walk_id..w.walk_id + 1).collect();
    other.extend(sample.unfinished.iter().map(|r| r[0]..r[1]));
    other.sort_unstable_by_key(|r| r.start);
    let mut next = 0;
    Ok(drawn
        .ids()
        .iter()
        .copied()
        .filter(|&id| {
            while next < other.len() && other[next].end <= id {
                next += 1;
            }
            !(next < other.len() && other[next].start <= id)
        })
        .collect())
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

    fn meta(space: &Space) -> RunMeta {
        RunMeta {
            format: TRACE_FORMAT,
            run_id: "r".into(),
            suite: "s".into(),
            fingerprint: fingerprint(space, &values(space)),
            library_version: "0".into(),
            walk_order: EntryMeta::of(space),
            options: Some(
                space
                    .option_counts()
                    .iter()
                    .map(|&n| (0..n).map(|i| serde_json::json!(i)).collect())
                    .collect(),
            ),
            walks: space.size(),
            threads: 1,
            started_at: "t0".into(),
            ended_at: None,
            records: None,
            summary: None,
        }
    }

    fn finished(mut meta: RunMeta, records: u64, aborted: Vec<Range<u64>>) -> RunMeta {
        meta.ended_at = Some("t1".into());
        meta.records = Some(records);
        let reason = "node lost".to_string();
        meta.summary = Some(Summary {
            walks: meta.walks,
            passed: records,
            failed: 0,
            cancelled: 0,
            pruned: 0,
            aborted: meta.walks.saturating_sub(records),
            segments: 0,
            serial_actions: 0,
            serial_skipped: 0,
            runner_restarts: 0,
            elapsed_s: 0.0,
            failed_walks: Vec::new(),
            aborted_walks: vec![AbortedWalks { walks: aborted, reason }],
            not_run: 0,
            not_run_walks: Vec::new(),
            ending: "completed".to_string(),
            ending_reason: None,
            failure_groups: Vec::new(),
        });
        meta
    }

    fn record_of(space: &Space, id: u64) -> TraceRecord {
        let encoder = TraceEncoder::new("s".into(), space.clone(), values(space));
        let mut out = Vec::new();
        let end = TraceEnd { outcome: TraceOutcome::Passed, action_index: None, error: None };
        encoder.encode(&mut out, id, end, 0, "local/0");
        parse_line(std::str::from_utf8(&out).unwrap(), "s").unwrap()
    }

    #[test]
    fn every_encoded_record_passes_the_record_check() {
        // Mixed kinds: the check's numbering must be the space's.
        let entry = |name, kind, n: usize| EntryInfo {
            name,
            kind,
            options: (0..n).map(|i| i.to_string()).collect(),
        };
        let space = Space::new(vec![
            entry("A", EntryKind::Plain, 2),
            entry("X", EntryKind::Serial, 3),
            entry("B", EntryKind::Plain, 4),
            entry("Y", EntryKind::Serial, 2),
        ])
        .unwrap();
        let check = RecordCheck::new(&meta(&space)).unwrap();
        for id in 0..space.size() {
            assert_eq!(check.check(&record_of(&space, id)), Ok(()), "walk {id}");
        }
    }

    #[test]
    fn a_record_that_does_not_fit_its_run_is_named() {
        let space = space();
        let check = RecordCheck::new(&meta(&space)).unwrap();
        let good = record_of(&space, 3);

        let mut short = good.clone();
        short.actions.pop();
        assert_eq!(
            check.check(&short),
            Err(LineError::ActionCount { walk: 3, found: 1, expected: 2 })
        );
        let text = check.check(&short).unwrap_err().to_string();
        assert_eq!(text, "records walk 3 with 1 action, but the run's walk order has 2 entries");

        let mut outside = good.clone();
        outside.walk_id = 6;
        assert_eq!(check.check(&outside), Err(LineError::OutsideSpace { walk: 6, walks: 6 }));

        let mut renamed = good.clone();
        renamed.actions[1].type_name = "Z".into();
        assert!(matches!(
            check.check(&renamed),
            Err(LineError::OtherAction { walk: 3, position: 1, .. })
        ));

        let mut beyond = good.clone();
        beyond.actions[1].option = 3;
        assert!(matches!(
            check.check(&beyond),
            Err(LineError::OptionOutOfRange { walk: 3, position: 1, option: 3, options: 3, .. })
        ));

        // Walk 3 is X=1, A=1; A=0 makes walk 2.
        let mut other = good.clone();
        other.actions[0].option = 0;
        assert_eq!(check.check(&other), Err(LineError::OtherWalk { walk: 3, options_of: 2 }));

        let mut branch = good;
        branch.branch = vec![2];
        assert_eq!(
            check.check(&branch),
            Err(LineError::OtherBranch { walk: 3, found: vec![2], expected: vec![1] })
        );
    }

    #[test]
    fn a_run_json_that_does_not_fit_its_walk_order_is_refused() {
        let space = space();
        let mut big = meta(&space);
        big.walks = 7;
        let error = RecordCheck::new(&big).unwrap_err();
        assert_eq!(error, MetaError::WrongSize { walks: 7, counts: vec![2, 3], space: Some(6) });
        assert_eq!(
            error.to_string(),
            "it counts 7 walks, but its walk order's option counts make 2 × 3 = 6"
        );

        let mut huge = meta(&space);
        huge.walk_order[0].options = u32::MAX;
        huge.walk_order[1].options = u32::MAX;
        huge.walk_order.push(huge.walk_order[0].clone());
        assert!(matches!(RecordCheck::new(&huge), Err(MetaError::WrongSize { space: None, .. })));

        let mut empty = meta(&space);
        empty.walk_order.clear();
        assert_eq!(RecordCheck::new(&empty).unwrap_err(), MetaError::NoEntries);

        let mut none = meta(&space);
        none.walk_order[1].options = 0;
        none.walks = 0;
        assert!(matches!(RecordCheck::new(&none), Err(MetaError::NoOptions { position: 1, .. })));

        let mut uncounted = finished(meta(&space), 6, Vec::new());
        uncounted.records = None;
        assert_eq!(RecordCheck::new(&uncounted).unwrap_err(), MetaError::NoRecordCount);
        let over = finished(meta(&space), 7, Vec::new());
        assert_eq!(
            RecordCheck::new(&over).unwrap_err(),
            MetaError::TooManyRecords { records: 7, walks: 6 }
        );
        assert!(RecordCheck::new(&finished(meta(&space), 6, Vec::new())).is_ok());
    }

    fn tally(walks: &[u64]) -> TraceTally {
        let mut tally = TraceTally::default();
        for (line, &walk) in walks.iter().enumerate() {
            tally.add(walk, line as u64 + 1);
        }
        tally
    }

    #[test]
    fn the_tally_refuses_a_walk_twice_and_a_finished_run_with_records_missing() {
        let space = space();
        let running = meta(&space);
        assert_eq!(tally(&[4, 1, 0]).finish(&running), Ok(3));
        assert_eq!(
            tally(&[4, 1, 5, 1]).finish(&running),
            Err(TallyError::Duplicate { walk: 1, first: 2, second: 4 })
        );

        let done = finished(meta(&space), 6, Vec::new());
        assert_eq!(tally(&[5, 4, 3, 2, 1, 0]).finish(&done), Ok(6));
        assert_eq!(
            tally(&[5, 4, 3, 1, 0]).finish(&done),
            Err(TallyError::Count { found: 5, expected: 6, first_missing: Some(2) })
        );
        assert_eq!(
            tally(&[0, 1, 2, 3, 4, 5, 5]).finish(&done),
            Err(TallyError::Duplicate { walk: 5, first: 6, second: 7 })
        );

        // Aborted walks have no record: walks 1 and 2 were aborted, so the
        // first missing one is 4.
        let aborted = finished(meta(&space), 4, vec![2..3, 1..2]);
        assert_eq!(tally(&[0, 3, 4, 5]).finish(&aborted), Ok(4));
        assert_eq!(
            tally(&[0, 3, 5]).finish(&aborted),
            Err(TallyError::Count { found: 3, expected: 4, first_missing: Some(4) })
        );
        let more = finished(meta(&space), 2, vec![2..4, 4..6]);
        assert_eq!(
            tally(&[0, 1, 2]).finish(&more),
            Err(TallyError::Count { found: 3, expected: 2, first_missing: None })
        );
    }

    #[test]
    fn a_line_cut_off_before_its_newline_is_named_apart_from_other_garbage() {
        let line = serde_json::to_string(&record_of(&space(), 3)).unwrap();
        assert_eq!(
            parse_line(&format!("{}\n", &line[..line.len() / 2]), "s"),
            Err(LineError::CutOff)
        );
        assert_eq!(parse_line(&line[..line.len() / 2], "s"), Err(LineError::Truncated));
        assert!(matches!(parse_line("{\"suite\":1}}\n", "s"), Err(LineError::NotJson(_))));
    }

    #[test]
    fn batch_records_round_trip_and_are_checked_against_the_run() {
        let space = space();
        let encoder = TraceEncoder::new("s".into(), space.clone(), values(&space));
        let mut out = Vec::new();
        assert_eq!(encoder.encode_batch(&mut out, &[], &[], 5, "local/0"), 0);
        assert!(out.is_empty(), "a batch with no passing or pruned walk writes nothing");
        let pruned: Vec<Range<u64>> = std::iter::once(2..3).collect();
        let walks = encoder.encode_batch(&mut out, &[0..2, 3..5], &pruned, 77, "local/0");
        assert_eq!(walks, 5);
        let text = String::from_utf8(out).unwrap();
        let TraceLine::Batch(batch) = parse_any_line(&text).unwrap() else { panic!("{text}") };
        assert_eq!(
            (batch.passed.clone(), batch.pruned.clone()),
            (vec![[0, 2], [3, 5]], vec![[2, 3]])
        );
        assert_eq!((batch.batch_ns, batch.walks()), (77, 5));
        let check = RecordCheck::new(&meta(&space)).unwrap();
        assert_eq!(check.check_line(&TraceLine::Batch(batch.clone())), Ok(()));
        // A walk listed from it is the walk its id makes, with run.json's values.
        let listed = check.record_of(3, TraceOutcome::Passed, &batch);
        assert_eq!(check.check(&listed), Ok(()));
        assert_eq!(
            listed,
            TraceRecord { duration_ns: 0, batch_ns: Some(77), ..record_of(&space, 3) }
        );

        let mut outside = batch.clone();
        outside.pruned = vec![[5, 7]];
        assert_eq!(
            check.check_line(&TraceLine::Batch(outside)),
            Err(LineError::OutsideSpace { walk: 6, walks: 6 })
        );
        let mut empty = batch.clone();
        empty.passed = vec![[4, 4]];
        assert_eq!(
            check.check_line(&TraceLine::Batch(empty)),
            Err(LineError::EmptyRange { start: 4, end: 4 })
        );
        // Format 1 has no batch records, and its run.json no options.
        let mut old = meta(&space);
        (old.format, old.options) = (1, None);
        let check = RecordCheck::new(&old).unwrap();
        assert!(matches!(check.check_line(&TraceLine::Batch(batch)), Err(LineError::NotJson(_))));
        let mut missing = meta(&space);
        missing.options = None;
        assert!(matches!(RecordCheck::new(&missing), Err(MetaError::Options(_))));
    }

    #[test]
    fn the_tally_sees_ranges_that_overlap_and_counts_walks() {
        let space = space();
        let mut tally = TraceTally::default();
        tally.add_range(0..3, 1);
        tally.add(4, 2);
        tally.add_range(2..4, 3);
        assert_eq!(
            tally.finish(&meta(&space)),
            Err(TallyError::Duplicate { walk: 2, first: 1, second: 3 })
        );
        let mut tally = TraceTally::default();
        tally.add_range(3..6, 2);
        tally.add_range(0..2, 1);
        assert_eq!(tally.records(), 5);
        assert_eq!(
            tally.finish(&finished(meta(&space), 6, Vec::new())),
            Err(TallyError::Count { found: 5, expected: 6, first_missing: Some(2) })
        );
    }

    #[test]
    fn a_sampled_round_is_listed_from_its_seed_and_its_exceptions() {
        use crate::model::sample::{SAMPLER_VERSION, WalkSample};
        let (walks, count, seed) = (1000, 20, 7);
        // This build's sampler, and the one before it (traces it wrote).
        for version in [2, SAMPLER_VERSION] {
            let ids = WalkSample::draw_by(version, walks, count, seed).unwrap().ids().to_vec();
            let space = space();
            let encoder = TraceEncoder::new("s".into(), space.clone(), values(&space))
                .with_round(Some(RoundTag { round: 3, seed: Some(seed) }));
            let mut out = Vec::new();
            // Walk ids[0] failed, ids[1] was pruned, ids[2] not finished; the
            // other 17 passed and are only counted.
            let failed = TraceRecord {
                walk_id: ids[0],
                round: Some(3),
                outcome: TraceOutcome::Failed,
                ..record_of(&space, 0)
            };
            out.extend(serde_json::to_vec(&failed).unwrap());
            out.push(b'\n');
            let passed: Vec<Range<u64>> = ids[3..].iter().map(|&i| i..i + 1).collect();
            let pruned: Vec<Range<u64>> = std::iter::once(ids[1]..ids[1] + 1).collect();
            encoder.encode_batch(&mut out, &passed, &pruned, 9, "local/0");
            let sample = SampleRecord {
                suite: "s".into(),
                round: 3,
                seed,
                sampler: version,
                walks,
                sample: count,
                unfinished: vec![[ids[2], ids[2] + 1]],
            };
            out.extend(serde_json::to_vec(&sample).unwrap());
            out.push(b'\n');
            let text = String::from_utf8(out).unwrap();
            assert!(!text.contains("\"passed\":"), "passing walks are not listed: {text}");
            let lines: Vec<TraceLine> =
                text.split_inclusive('\n').map(|l| parse_any_line(l).unwrap()).collect();
            let tally = |lines: &[TraceLine]| {
                let mut tally = SoakTally::default();
                for (n, line) in lines.iter().enumerate() {
                    tally.add(line.clone(), n as u64 + 1);
                }
                tally.finish()
            };
            let listed = tally(&lines).unwrap();
            assert!(listed.unlisted.is_empty());
            let mut expected: Vec<u64> = ids.iter().copied().filter(|&i| i != ids[2]).collect();
            expected.sort_unstable();
            let got: Vec<u64> = listed.walks.iter().map(|w| w.walk_id).collect();
            assert_eq!(got, expected);
            let outcome = |id| listed.walks.iter().find(|w| w.walk_id == id).unwrap().outcome;
            assert_eq!(outcome(ids[0]), TraceOutcome::Failed);
            assert_eq!(outcome(ids[1]), TraceOutcome::Pruned);
            assert_eq!(outcome(ids[5]), TraceOutcome::Passed);

            // Without its sample record: counted, not listed.
            let unlisted = tally(&lines[..2]).unwrap();
            assert_eq!(unlisted.unlisted, vec![(3, 17)]);
            // Another sampler, or a count that does not add up: refused.
            let mut other = lines.clone();
            let TraceLine::Sample(s) = &mut other[2] else { panic!() };
            s.sampler = SAMPLER_VERSION + 1;
            assert!(matches!(tally(&other), Err(SoakTraceError::Sampler { round: 3, .. })));
            // A damaged record naming a huge sample is refused before it
            // is drawn (drawing it would take all memory).
            let mut huge = lines.clone();
            let TraceLine::Sample(s) = &mut huge[2] else { panic!() };
            (s.walks, s.sample) = (u64::MAX, u64::MAX / 4);
            let refused = tally(&huge).unwrap_err().to_string();
            assert!(refused.contains("more than the 20"), "{refused}");
            let mut wrong = lines.clone();
            let TraceLine::Sample(s) = &mut wrong[2] else { panic!() };
            s.unfinished.clear();
            assert!(matches!(tally(&wrong), Err(SoakTraceError::Sample { round: 3, .. })));
        }
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
