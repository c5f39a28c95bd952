//! Traced runs on disk. A run given a log dir writes `DIR/<run-id>/`:
//! `run.json` (at the start, and again at the end with the summary),
//! `walks.jsonl` (one line per walk, appended batch by batch by the
//! `TraceWriter` actor as outcomes arrive) and `junit.xml` (at the end).
//! [`RunDir`] reads such a directory back and checks every line it hands
//! out. The formats themselves are in `model::trace` and `model::junit`.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::exec::{WalkOutcome, WalkRecord};
use crate::model::junit::{self, JunitFailure, JunitRun};
use crate::model::outcome::Report;
use crate::model::space::Space;
use crate::model::trace::{
    EntryMeta, LineError, OptionJson, RunMeta, Summary, TRACE_FORMAT, TraceEncoder, TraceEnd,
    TraceOutcome, TraceRecord, fingerprint, parse_line,
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
    #[error("walk {walk} is in the run's space but not in {}: the run stopped before it ended", .path.display())]
    Absent {
        /// The file.
        path: PathBuf,
        /// The walk.
        walk: u64,
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
pub fn order_fingerprint<S: 'static, C: Chain<S>>(
    order: &WalkOrder<S, C>,
) -> Result<String, crate::RunError> {
    let space = order.space()?;
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
    let meta = RunMeta {
        format: TRACE_FORMAT,
        run_id: target.run_id.to_string(),
        suite: target.suite.clone(),
        fingerprint: fingerprint(space, &values),
        library_version: env!("CARGO_PKG_VERSION").to_string(),
        walk_order: EntryMeta::of(space),
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
        space: &Space,
        totals: &TraceTotals,
    ) -> Result<PathBuf, TraceError> {
        self.meta.ended_at = Some(now());
        self.meta.records = Some(totals.records);
        self.meta.summary = Some(Summary::of(report));
        self.write_meta()?;
        let nanos: std::collections::HashMap<u64, u64> =
            totals.failed_nanos.iter().copied().collect();
        let failures = report
            .failed_walks
            .iter()
            .map(|f| JunitFailure {
                walk_id: f.walk_id.0,
                action: f.action.to_string(),
                action_index: f.action_index,
                error: f.error.clone(),
                walk: space.walk(f.walk_id.0).map(|w| w.to_string()).unwrap_or_default(),
                replay: replay_command(&program_name(), &self.dir, f.walk_id.0),
                seconds: nanos.get(&f.walk_id.0).map_or(0.0, |&n| n as f64 / 1e9),
            })
            .collect();
        let run = JunitRun {
            suite: self.meta.suite.clone(),
            run_id: self.meta.run_id.clone(),
            timestamp: self.meta.started_at.clone(),
            seconds: report.elapsed.as_secs_f64(),
            counts: format!(
                "{} walks: passed {} failed {} cancelled {} pruned {} aborted {}",
                report.walks,
                report.passed,
                report.failed,
                report.cancelled,
                report.pruned,
                report.aborted
            ),
            aborted: report.aborted,
            failures,
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

/// Appends the lines of a batch's records to `out`.
pub(crate) fn encode_batch(
    encoder: &TraceEncoder,
    records: &[WalkRecord],
    runner: &str,
    out: &mut Vec<u8>,
) {
    for record in records {
        encoder.encode(out, record.id.0, trace_end(&record.outcome), record.nanos, runner);
    }
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

/// A run directory, read back: its `run.json`, and its `walks.jsonl` line by
/// line, each line checked.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
    meta: RunMeta,
}

impl RunDir {
    /// Opens the run directory `path` and reads its `run.json`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TraceError> {
        let path = path.as_ref().to_path_buf();
        if !path.is_dir() {
            return Err(TraceError::MissingDir { path });
        }
        let file = path.join(RUN_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| TraceError::io(&file, e))?;
        let meta: RunMeta = serde_json::from_str(&text)
            .map_err(|e| TraceError::BadMeta { path: file.clone(), reason: e.to_string() })?;
        if meta.format != TRACE_FORMAT {
            let reason = format!(
                "trace format {} is not the format {TRACE_FORMAT} this build reads",
                meta.format
            );
            return Err(TraceError::BadMeta { path: file, reason });
        }
        Ok(RunDir { path, meta })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its `run.json`.
    pub fn meta(&self) -> &RunMeta {
        &self.meta
    }

    /// Every record of `walks.jsonl`, in file order, each with its line
    /// number; stops at the first line that cannot be used.
    pub fn records(&self) -> Result<Records, TraceError> {
        let path = self.path.join(WALKS_FILE);
        let file = File::open(&path).map_err(|e| TraceError::io(&path, e))?;
        Ok(Records {
            reader: BufReader::new(file),
            path,
            suite: self.meta.suite.clone(),
            line: 0,
            buffer: String::new(),
            done: false,
        })
    }

    /// The record of walk `walk`, after checking every line of the file.
    pub fn find(&self, walk: u64) -> Result<TraceRecord, TraceError> {
        if walk >= self.meta.walks {
            let (dir, walks) = (self.path.clone(), self.meta.walks);
            return Err(TraceError::NotInSpace { dir, walk, walks });
        }
        let mut found: Option<(u64, TraceRecord)> = None;
        for item in self.records()? {
            let (line, record) = item?;
            if record.walk_id == walk {
                if let Some((first, _)) = found {
                    let path = self.path.join(WALKS_FILE);
                    return Err(TraceError::Duplicate { path, walk, first, second: line });
                }
                found = Some((line, record));
            }
        }
        found
            .map(|(_, record)| record)
            .ok_or_else(|| TraceError::Absent { path: self.path.join(WALKS_FILE), walk })
    }
}

/// The records of a `walks.jsonl`: see [`RunDir::records`].
#[derive(Debug)]
pub struct Records {
    reader: BufReader<File>,
    path: PathBuf,
    suite: String,
    line: u64,
    buffer: String,
    done: bool,
}

impl Iterator for Records {
    type Item = Result<(u64, TraceRecord), TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.buffer.clear();
        let result = match self.reader.read_line(&mut self.buffer) {
            Ok(0) if self.line == 0 => Err(TraceError::Empty { path: self.path.clone() }),
            Ok(0) => {
                self.done = true;
                return None;
            }
            Ok(_) => {
                self.line += 1;
                parse_line(&self.buffer, &self.suite).map(|r| (self.line, r)).map_err(|error| {
                    TraceError::Line { path: self.path.clone(), line: self.line, error }
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(TraceError::Line {
                path: self.path.clone(),
                line: self.line + 1,
                error: LineError::NotJson("not UTF-8 text".to_string()),
            }),
            Err(source) => Err(TraceError::Io { path: self.path.clone(), source }),
        };
        self.done = result.is_err();
        Some(result)
    }
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
