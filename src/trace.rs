//! Traced runs on disk. A run given a log dir writes `DIR/<run-id>/`:
//! `run.json` (at the start, and again at the end with the summary),
//! `walks.jsonl` (format 2: a record per failed or cancelled walk and one
//! per batch for its passing and pruned walks, appended batch by batch by
//! the `TraceWriter` actor as outcomes arrive) and `junit.xml` (at the
//! end). [`RunDir`] reads such a directory back, in format 2 or 1: it
//! checks `run.json`, every line against it, and the whole file (no walk
//! twice, a finished run's record count), and skips the cut-off last line a
//! crash leaves ([`TornTail`]). [`read_soak`] reads a soak's `walks.jsonl`.
//! The formats and the checks themselves (no I/O) are in `model::trace`
//! and `model::junit`.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::exec::{BatchTrace, WalkOutcome};
use crate::model::junit::{self, JunitGroup, JunitRun};
use crate::model::outcome::Report;
use crate::model::space::{Space, WalkId};
use crate::model::trace::{
    EntryMeta, FORMATS_READ, LineError, OptionJson, RecordCheck, RunMeta, SoakTally,
    SoakTraceError, SoakWalks, Summary, TRACE_FORMAT, TallyError, TraceEncoder, TraceEnd,
    TraceLine, TraceOutcome, TraceRecord, TraceTally, fingerprint, parse_any_line,
};
use crate::order::{Chain, WalkOrder};

/// The name of the trace of each walk, in a run directory.
pub const WALKS_FILE: &str = "walks.jsonl";
/// The name of the run's metadata and summary, in a run directory.
pub const RUN_FILE: &str = "run.json";
/// The name of the JUnit report, in a run directory.
pub const JUNIT_FILE: &str = "junit.xml";
/// The name of the log the command line writes, in a run directory.
pub const LOG_FILE: &str = "combtest.log";

/// The id of a run: a random UUID (v4), also its directory's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunId(uuid::Uuid);

impl RunId {
    /// A fresh random run id.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        RunId(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a run directory cannot be written or read. Every message names the
/// file, and the line or walk where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The run directory does not exist.
    #[error("run directory {} does not exist: pass a directory that `run --log-dir` created (DIR/<run-id>)", .path.display())]
    MissingDir {
        /// The directory.
        path: PathBuf,
    },
    /// A file was given where the run directory was expected.
    #[error("{} is a file: pass its run directory, {}", .path.display(), .dir.display())]
    FileNotDir {
        /// The file.
        path: PathBuf,
        /// The directory that holds it.
        dir: PathBuf,
    },
    /// A file of the run directory is missing.
    #[error("{} is missing: not a complete run directory", .path.display())]
    MissingFile {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `run.json` is not valid.
    #[error("{} is not a valid run.json: {reason}", .path.display())]
    BadMeta {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `walks.jsonl` has no line at all.
    #[error("{} is empty: the run recorded no walk", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// One line of `walks.jsonl` cannot be used.
    #[error("{} line {line} {error}", .path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// Its line number, from 1.
        line: u64,
        /// What is wrong with it.
        error: LineError,
    },
    /// A walk has two records.
    #[error("{} has two records of walk {walk}, on lines {first} and {second}", .path.display())]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The walk.
        walk: u64,
        /// Line of the first record.
        first: u64,
        /// Line of the second.
        second: u64,
    },
    /// The walk id is outside the run's space.
    #[error("walk {walk} is not in the space of the run in {}: valid ids are 0..{walks}", .dir.display())]
    NotInSpace {
        /// The run directory.
        dir: PathBuf,
        /// The walk asked for.
        walk: u64,
        /// Walks in the run's space.
        walks: u64,
    },
    /// The walk id is in the space, but the trace has no record of it.
    #[error(
        "walk {walk} is in the run's space but not in {}: {}",
        .path.display(),
        if *.finished {
            "the run aborted it (run.json's summary says why)"
        } else {
            "the run stopped before it ended"
        }
    )]
    Absent {
        /// The file.
        path: PathBuf,
        /// The walk.
        walk: u64,
        /// Whether the run finished (then the walk was aborted).
        finished: bool,
    },
    /// A finished run's trace holds another number of records than
    /// `run.json` counts.
    #[error(
        "{} has {}, but run.json says the run finished with {expected}: {}",
        .path.display(),
        crate::model::count(*.found, "record"),
        count_gap(*.found, *.expected, *.first_missing, *.torn_line)
    )]
    RecordCount {
        /// The file.
        path: PathBuf,
        /// Whole records in it.
        found: u64,
        /// The `records` of `run.json`.
        expected: u64,
        /// The smallest walk id neither recorded nor aborted, if any.
        first_missing: Option<u64>,
        /// Its cut-off last line, if it has one.
        torn_line: Option<u64>,
    },
    /// A soak's trace whose sampled rounds cannot be listed.
    #[error("{}: {error}", .path.display())]
    Soak {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: SoakTraceError,
    },
    /// An option cannot be serialized to JSON.
    #[error("cannot trace option {option} of {action} (entry {position}): {reason}")]
    Serialize {
        /// The entry.
        position: usize,
        /// Its type name.
        action: &'static str,
        /// The option's index.
        option: u32,
        /// The serde error.
        reason: String,
    },
}

/// How a trace's record count differs from `run.json`'s, for
/// [`TraceError::RecordCount`].
fn count_gap(found: u64, expected: u64, first_missing: Option<u64>, torn: Option<u64>) -> String {
    if found > expected {
        return format!("{} more than it wrote: the file was damaged", found - expected);
    }
    let mut text = format!("{} missing", expected - found);
    if let Some(walk) = first_missing {
        text += &format!(", the first is walk {walk}");
    }
    if let Some(line) = torn {
        text += &format!(", and line {line} is cut off");
    }
    text + ": the file was damaged after the run"
}

impl TraceError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            TraceError::MissingFile { path: path.to_path_buf() }
        } else {
            TraceError::Io { path: path.to_path_buf(), source }
        }
    }
}

/// The JSON of every option of `order`, computed once.
pub(crate) fn option_json<S: 'static, C: Chain<S>>(
    order: &WalkOrder<S, C>,
    space: &Space,
) -> Result<OptionJson, TraceError> {
    let chain = order.chain();
    (0..space.len())
        .map(|position| {
            (0..space.option_counts()[position])
                .map(|option| {
                    chain.option_json(position, option).map_err(|e| TraceError::Serialize {
                        position,
                        action: space.entries()[position].name,
                        option,
                        reason: e.to_string(),
                    })
                })
                .collect()
        })
        .collect()
}

/// The fingerprint of a walk order: see [`fingerprint`].
pub(crate) fn order_fingerprint<S: 'static, C: Chain<S>>(
    order: &WalkOrder<S, C>,
    space: &Space,
) -> Result<String, TraceError> {
    Ok(fingerprint(space, &option_json(order, space)?))
}

/// Where a run's trace goes, from `RunOptions`.
#[derive(Debug, Clone)]
pub(crate) struct TraceTarget {
    pub(crate) log_dir: PathBuf,
    pub(crate) run_id: RunId,
    pub(crate) suite: String,
}

/// A run directory being written.
#[derive(Debug)]
pub(crate) struct TraceSession {
    pub(crate) dir: PathBuf,
    pub(crate) meta: RunMeta,
}

/// What the `TraceWriter` wrote, handed over when it finishes.
#[derive(Debug, Clone, Default)]
pub(crate) struct TraceTotals {
    /// Lines written to `walks.jsonl`.
    pub(crate) records: u64,
    /// Duration of each failed walk, for the JUnit file.
    pub(crate) failed_nanos: Vec<(u64, u64)>,
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Creates the run directory and writes the first `run.json`. Returns the
/// session, the encoder for the runners and `walks.jsonl`, opened.
pub(crate) fn start(
    target: &TraceTarget,
    space: &Space,
    values: OptionJson,
    threads: usize,
) -> Result<(TraceSession, TraceEncoder, File), TraceError> {
    let dir = target.log_dir.join(target.run_id.to_string());
    std::fs::create_dir_all(&dir).map_err(|e| TraceError::io(&dir, e))?;
    let options = values
        .iter()
        .map(|entry| {
            entry
                .iter()
                .map(|v| serde_json::from_str(v.get()).expect("option JSON parses back"))
                .collect()
        })
        .collect();
    let meta = RunMeta {
        format: TRACE_FORMAT,
        run_id: target.run_id.to_string(),
        suite: target.suite.clone(),
        fingerprint: fingerprint(space, &values),
        library_version: env!("CARGO_PKG_VERSION").to_string(),
        walk_order: EntryMeta::of(space),
        options: Some(options),
        walks: space.size(),
        threads,
        started_at: now(),
        ended_at: None,
        records: None,
        summary: None,
    };
    let session = TraceSession { dir, meta };
    session.write_meta()?;
    let path = session.dir.join(WALKS_FILE);
    let walks = File::create(&path).map_err(|e| TraceError::io(&path, e))?;
    let encoder = TraceEncoder::new(target.suite.clone(), space.clone(), values);
    Ok((session, encoder, walks))
}

impl TraceSession {
    /// Writes `run.json` (through a temporary file, so a reader never sees
    /// half of it).
    fn write_meta(&self) -> Result<(), TraceError> {
        let path = self.dir.join(RUN_FILE);
        let temp = self.dir.join("run.json.tmp");
        let text = serde_json::to_string_pretty(&self.meta).expect("run metadata serializes");
        std::fs::write(&temp, text + "\n").map_err(|e| TraceError::io(&temp, e))?;
        std::fs::rename(&temp, &path).map_err(|e| TraceError::io(&path, e))
    }

    /// Writes the final `run.json` and `junit.xml`.
    pub(crate) fn finish<S>(
        mut self,
        report: &Report<S>,
        totals: &TraceTotals,
    ) -> Result<PathBuf, TraceError> {
        self.meta.ended_at = Some(now());
        self.meta.records = Some(totals.records);
        let program = program_name();
        let summary = Summary::of(report).with_replay(|id| replay_command(&program, &self.dir, id));
        let nanos: std::collections::HashMap<u64, u64> =
            totals.failed_nanos.iter().copied().collect();
        let groups = summary
            .failure_groups
            .iter()
            .map(|g| JunitGroup {
                group: g.clone(),
                seconds: nanos.get(&g.minimal_walk.walk_id).map_or(0.0, |&n| n as f64 / 1e9),
            })
            .collect();
        self.meta.summary = Some(summary);
        self.write_meta()?;
        let run = JunitRun {
            suite: self.meta.suite.clone(),
            run_id: self.meta.run_id.clone(),
            timestamp: self.meta.started_at.clone(),
            seconds: report.elapsed.as_secs_f64(),
            counts: format!(
                "{} walks: passed {} failed {} cancelled {} pruned {} aborted {}",
                report.walks,
                report.counts.passed,
                report.counts.failed,
                report.counts.cancelled,
                report.counts.pruned,
                report.counts.aborted
            ),
            aborted: report.counts.aborted,
            groups,
        };
        let path = self.dir.join(JUNIT_FILE);
        std::fs::write(&path, junit::render(&run)).map_err(|e| TraceError::io(&path, e))?;
        Ok(self.dir)
    }
}

/// The name this process was started as (a user's own node binary is not
/// `combtest-node`), for the replay commands the trace records.
pub(crate) fn program_name() -> String {
    std::env::args_os()
        .next()
        .as_deref()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map_or_else(|| "combtest-node".to_string(), |n| n.to_string_lossy().into_owned())
}

/// The command that replays walk `walk` of the run in `dir`.
pub fn replay_command(program: &str, dir: &Path, walk: u64) -> String {
    format!("{program} replay --run {} --walk {walk}", dir.display())
}

/// Appends the lines of a batch's records to `out`: a walk record per
/// failed or cancelled walk (a passing or pruned one, if any comes as a
/// record, joins the batch record), then the batch record. Returns the
/// walks recorded.
pub(crate) fn encode_batch<B: BatchTrace + ?Sized>(
    encoder: &TraceEncoder,
    batch: &B,
    runner: &str,
    out: &mut Vec<u8>,
) -> u64 {
    let mut passed = Vec::new();
    let mut pruned = Vec::new();
    let mut walks = 0;
    for record in batch.walk_records() {
        match record.outcome {
            WalkOutcome::Passed => crate::model::triage::Neither::push_id(&mut passed, record.id.0),
            WalkOutcome::Pruned => crate::model::triage::Neither::push_id(&mut pruned, record.id.0),
            _ => {
                encoder.encode(out, record.id.0, trace_end(&record.outcome), record.nanos, runner);
                walks += 1;
            }
        }
    }
    let (passed, pruned) = match passed.is_empty() && pruned.is_empty() {
        true => (batch.passed(), batch.pruned()),
        false => {
            passed.extend_from_slice(batch.passed());
            pruned.extend_from_slice(batch.pruned());
            passed.sort_unstable_by_key(|r| r.start);
            pruned.sort_unstable_by_key(|r| r.start);
            (&passed[..], &pruned[..])
        }
    };
    walks + encoder.encode_batch(out, passed, pruned, batch.batch_nanos(), runner)
}

/// A walk outcome as the trace spells it.
pub(crate) fn trace_end(outcome: &WalkOutcome) -> TraceEnd<'_> {
    match outcome {
        WalkOutcome::Passed => {
            TraceEnd { outcome: TraceOutcome::Passed, action_index: None, error: None }
        }
        WalkOutcome::Cancelled { action_index } => TraceEnd {
            outcome: TraceOutcome::Cancelled,
            action_index: Some(*action_index),
            error: None,
        },
        WalkOutcome::Failed { action_index, error, .. } => TraceEnd {
            outcome: TraceOutcome::Failed,
            action_index: Some(*action_index),
            error: Some(error),
        },
        WalkOutcome::Pruned => {
            TraceEnd { outcome: TraceOutcome::Pruned, action_index: None, error: None }
        }
    }
}

/// A run directory, read back: its `run.json` (checked when opened), and
/// its `walks.jsonl` line by line, each line checked against `run.json`.
///
/// A crash leaves `walks.jsonl` with a last line cut off (no newline at its
/// end). Readers skip that line and report it apart as a [`TornTail`], so
/// every whole record of a crashed run can be shown and replayed; any other
/// bad line is an error. [`check`](Self::check), [`trace`](Self::trace) and
/// [`find`](Self::find) read the whole file and also refuse a walk recorded
/// twice and, for a finished run, a record count other than `run.json`'s.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
    meta: RunMeta,
    check: RecordCheck,
}

/// The last line of a `walks.jsonl` that a crash cut off (it has no
/// newline): readers skip it and report it, for a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The file.
    pub path: PathBuf,
    /// The line's number, from 1.
    pub line: u64,
}

impl fmt::Display for TornTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} line {} is cut off (the run stopped while writing it); it is skipped",
            self.path.display(),
            self.line
        )
    }
}

/// What a pass over a whole `walks.jsonl` found, besides the records: see
/// [`RunDir::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TraceCheck {
    /// Whole records read (the torn tail is not one).
    pub records: u64,
    /// The cut-off last line, skipped.
    pub torn_tail: Option<TornTail>,
    /// Whether the run finished (`run.json` has its `ended_at`); only then
    /// is the record count checked.
    pub finished: bool,
}

/// Every record of a run directory, checked: see [`RunDir::trace`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Trace {
    /// The records, sorted by walk id.
    pub records: Vec<TraceRecord>,
    /// What the pass found besides them.
    pub check: TraceCheck,
}

impl RunDir {
    /// Opens the run directory `path` and reads its `run.json`, checking it
    /// (see [`RecordCheck::new`]). Reads trace formats 1 and 2.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TraceError> {
        let path = path.as_ref().to_path_buf();
        if path.is_file() {
            let dir = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            return Err(TraceError::FileNotDir { path, dir });
        }
        if !path.is_dir() {
            return Err(TraceError::MissingDir { path });
        }
        let file = path.join(RUN_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| TraceError::io(&file, e))?;
        let meta: RunMeta = serde_json::from_str(&text)
            .map_err(|e| TraceError::BadMeta { path: file.clone(), reason: e.to_string() })?;
        if !FORMATS_READ.contains(&meta.format) {
            let reason = format!(
                "trace format {} is not one this build reads ({:?}): read it with the combtest version that wrote it ({})",
                meta.format, FORMATS_READ, meta.library_version
            );
            return Err(TraceError::BadMeta { path: file, reason });
        }
        let check = RecordCheck::new(&meta)
            .map_err(|e| TraceError::BadMeta { path: file, reason: e.to_string() })?;
        Ok(RunDir { path, meta, check })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its `run.json`.
    pub fn meta(&self) -> &RunMeta {
        &self.meta
    }

    /// Every whole line of `walks.jsonl`, in file order, each with its line
    /// number and checked against `run.json` ([`RecordCheck::check_line`]);
    /// stops at the first line that cannot be used. A cut-off last line is
    /// not yielded: [`Lines::torn_tail`] reports it once the lines are
    /// read. Checks across lines (a walk recorded twice, the record count)
    /// are [`check`](Self::check)'s.
    pub fn lines(&self) -> Result<Lines, TraceError> {
        let path = self.path.join(WALKS_FILE);
        let file = File::open(&path).map_err(|e| TraceError::io(&path, e))?;
        Ok(Lines {
            reader: BufReader::new(file),
            path,
            check: Some(self.check.clone()),
            line: 0,
            buffer: Vec::new(),
            torn_tail: None,
            done: false,
        })
    }

    /// Every walk `walks.jsonl` records, in file order, each with the
    /// number of the line that records it: a walk record as it is, a batch
    /// record's walks one by one ([`RecordCheck::record_of`]). As
    /// [`lines`](Self::lines), line by line.
    pub fn records(&self) -> Result<Records, TraceError> {
        Ok(Records { lines: self.lines()?, check: self.check.clone(), pending: None })
    }

    /// Reads and checks the whole of `walks.jsonl`: every line as
    /// [`lines`](Self::lines) does, no walk recorded twice, and, if the
    /// run finished, as many records as `run.json` counts. The one pass
    /// that [`trace`](Self::trace), [`find`](Self::find) (and so every
    /// replay from a run directory) and the command line's `show` make.
    pub fn check(&self) -> Result<TraceCheck, TraceError> {
        self.scan(|_, _| {})
    }

    /// Every walk of `walks.jsonl`, sorted by walk id, after the checks
    /// of [`check`](Self::check).
    pub fn trace(&self) -> Result<Trace, TraceError> {
        let mut records = Vec::new();
        let check = self.scan(|line, _| match line {
            TraceLine::Walk(record) => records.push(record),
            TraceLine::Batch(batch) => {
                for (ranges, outcome) in
                    [(&batch.passed, TraceOutcome::Passed), (&batch.pruned, TraceOutcome::Pruned)]
                {
                    for r in ranges {
                        records
                            .extend((r[0]..r[1]).map(|w| self.check.record_of(w, outcome, &batch)));
                    }
                }
            }
            TraceLine::Sample(_) => {}
        })?;
        records.sort_unstable_by_key(|r| r.walk_id);
        Ok(Trace { records, check })
    }

    /// The record of walk `walk`, after the checks of
    /// [`check`](Self::check): a trace that records any walk twice is
    /// refused, whichever walk is asked for.
    pub fn find(&self, walk: impl Into<WalkId>) -> Result<TraceRecord, TraceError> {
        let walk = walk.into().0;
        if walk >= self.meta.walks {
            let (dir, walks) = (self.path.clone(), self.meta.walks);
            return Err(TraceError::NotInSpace { dir, walk, walks });
        }
        let mut found = None;
        let check = self.scan(|line, _| match line {
            TraceLine::Walk(record) if record.walk_id == walk => found = Some(record),
            TraceLine::Batch(batch) => {
                let within =
                    |ranges: &[[u64; 2]]| ranges.iter().any(|r| r[0] <= walk && walk < r[1]);
                if within(&batch.passed) {
                    found = Some(self.check.record_of(walk, TraceOutcome::Passed, &batch));
                } else if within(&batch.pruned) {
                    found = Some(self.check.record_of(walk, TraceOutcome::Pruned, &batch));
                }
            }
            _ => {}
        })?;
        found.ok_or_else(|| TraceError::Absent {
            path: self.path.join(WALKS_FILE),
            walk,
            finished: check.finished,
        })
    }

    /// The checked pass over `walks.jsonl`, handing each line to `keep`.
    fn scan(&self, mut keep: impl FnMut(TraceLine, u64)) -> Result<TraceCheck, TraceError> {
        let mut lines = self.lines()?;
        let mut tally = TraceTally::default();
        for item in lines.by_ref() {
            let (number, line) = item?;
            tally.add_line(&line, number);
            keep(line, number);
        }
        let torn_tail = lines.torn_tail().cloned();
        let path = lines.path;
        let records = tally.finish(&self.meta).map_err(|error| match error {
            TallyError::Duplicate { walk, first, second } => {
                TraceError::Duplicate { path, walk, first, second }
            }
            TallyError::Count { found, expected, first_missing } => TraceError::RecordCount {
                path,
                found,
                expected,
                first_missing,
                torn_line: torn_tail.as_ref().map(|t| t.line),
            },
        })?;
        Ok(TraceCheck { records, torn_tail, finished: self.meta.ended_at.is_some() })
    }
}

/// The lines of a `walks.jsonl`: see [`RunDir::lines`] and [`read_soak`].
#[derive(Debug)]
pub struct Lines {
    reader: BufReader<File>,
    path: PathBuf,
    /// A run's checks (none for a soak's file).
    check: Option<RecordCheck>,
    line: u64,
    buffer: Vec<u8>,
    torn_tail: Option<TornTail>,
    done: bool,
}

impl Lines {
    /// The cut-off last line, once the iterator has ended (it is skipped).
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_ref()
    }

    /// The line in the buffer (with its newline).
    fn parse(&self) -> Result<TraceLine, LineError> {
        let text = std::str::from_utf8(&self.buffer)
            .map_err(|_| LineError::NotJson("not UTF-8 text".to_string()))?;
        let line = parse_any_line(text)?;
        if let Some(check) = &self.check {
            check.check_line(&line)?;
        }
        Ok(line)
    }
}

impl Iterator for Lines {
    type Item = Result<(u64, TraceLine), TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.buffer.clear();
        // Bytes, not a `String`: a crash may cut a line inside a UTF-8
        // character.
        let result = match self.reader.read_until(b'\n', &mut self.buffer) {
            Ok(0) if self.line == 0 => Err(TraceError::Empty { path: self.path.clone() }),
            Ok(0) => {
                self.done = true;
                return None;
            }
            Ok(_) if !self.buffer.ends_with(b"\n") => {
                // Only the end of the file stops a line without its newline.
                self.torn_tail = Some(TornTail { path: self.path.clone(), line: self.line + 1 });
                self.done = true;
                return None;
            }
            Ok(_) => {
                self.line += 1;
                self.parse().map(|r| (self.line, r)).map_err(|error| TraceError::Line {
                    path: self.path.clone(),
                    line: self.line,
                    error,
                })
            }
            Err(source) => Err(TraceError::Io { path: self.path.clone(), source }),
        };
        self.done = result.is_err();
        Some(result)
    }
}

/// The walks of a `walks.jsonl`, one by one: see [`RunDir::records`].
#[derive(Debug)]
pub struct Records {
    lines: Lines,
    check: RecordCheck,
    /// A batch record being listed.
    pending: Option<Listing>,
}

impl Records {
    /// The cut-off last line, once the iterator has ended (it is skipped).
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.lines.torn_tail()
    }
}

impl Iterator for Records {
    type Item = Result<(u64, TraceRecord), TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((line, batch, ranges)) = &mut self.pending {
                if let Some((range, outcome)) = ranges.last_mut() {
                    let (walk, outcome) = (range.start, *outcome);
                    range.start += 1;
                    if range.is_empty() {
                        ranges.pop();
                    }
                    return Some(Ok((*line, self.check.record_of(walk, outcome, batch))));
                }
                self.pending = None;
            }
            match self.lines.next()? {
                Err(error) => return Some(Err(error)),
                Ok((line, TraceLine::Walk(record))) => return Some(Ok((line, record))),
                Ok((line, TraceLine::Batch(batch))) => {
                    let mut ranges: Vec<_> = batch
                        .passed
                        .iter()
                        .map(|r| (r[0]..r[1], TraceOutcome::Passed))
                        .chain(batch.pruned.iter().map(|r| (r[0]..r[1], TraceOutcome::Pruned)))
                        .collect();
                    // Listed by id, taken from the end.
                    ranges.sort_unstable_by_key(|r| std::cmp::Reverse(r.0.start));
                    self.pending = Some((line, batch, ranges));
                }
                Ok((_, TraceLine::Sample(_))) => {}
            }
        }
    }
}

/// A batch record being listed: its line, the record, and the walks left
/// (ranges, the next one last).
type Listing = (u64, crate::model::trace::BatchRecord, Vec<(std::ops::Range<u64>, TraceOutcome)>);

/// A soak's `walks.jsonl` read back: see [`read_soak`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SoakTrace {
    /// Every walk listed, by round and walk id, and the rounds whose
    /// passing walks can only be counted.
    pub walks: SoakWalks,
    /// Lines read (the torn tail is not one).
    pub lines: u64,
    /// The cut-off last line, skipped.
    pub torn_tail: Option<TornTail>,
}

/// Reads a soak's `walks.jsonl` (`DIR/soak-<id>/walks.jsonl`, format 2 or
/// 1): every walk of every round, passing walks of sampled rounds redrawn
/// from their seed. A cut-off last line is skipped and reported
/// ([`SoakTrace::torn_tail`]); any other bad line is an error.
pub fn read_soak(path: impl AsRef<Path>) -> Result<SoakTrace, TraceError> {
    let path = path.as_ref().to_path_buf();
    let file = File::open(&path).map_err(|e| TraceError::io(&path, e))?;
    let mut lines = Lines {
        reader: BufReader::new(file),
        path: path.clone(),
        check: None,
        line: 0,
        buffer: Vec::new(),
        torn_tail: None,
        done: false,
    };
    let mut tally = SoakTally::default();
    let mut count = 0;
    for item in lines.by_ref() {
        let (number, line) = item?;
        tally.add(line, number);
        count += 1;
    }
    let walks = tally.finish().map_err(|error| TraceError::Soak { path, error })?;
    Ok(SoakTrace { walks, lines: count, torn_tail: lines.torn_tail().cloned() })
}

/// Appends batches to `walks.jsonl`: the `TraceWriter` actor's file.
pub(crate) struct WalksFile {
    out: std::io::BufWriter<File>,
}

impl WalksFile {
    pub(crate) fn new(file: File) -> Self {
        WalksFile { out: std::io::BufWriter::with_capacity(64 * 1024, file) }
    }

    /// Appends one batch's lines and flushes them to the file.
    pub(crate) fn append(&mut self, lines: &[u8]) -> std::io::Result<()> {
        self.out.write_all(lines)?;
        self.out.flush()
    }

    /// Flushes and syncs the file.
    pub(crate) fn finish(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }
}
