//! Soak runs: a suite run round after round for hours, through failing
//! walks, panics, hung walks and crashed node processes, with bounded
//! memory and results written as they happen.
//!
//! A soak is a loop of rounds. Each round is an ordinary run of the suite
//! (every semantic: serial actions at their barriers), over the whole space
//! or over a sample of walk ids drawn from a seeded RNG: round `r` draws
//! with `round_seed(seed, r)`, so the same seed replays the same rounds.
//! Between rounds the loop reports statistics, restarts lost local nodes
//! (with backoff) and stops when the time or the rounds are up, when asked
//! to ([`SoakStop`]), or when nodes restart more often than the restart
//! intensity allows.
//!
//! Memory stays flat: a round's report is folded into running totals and
//! dropped; only the first [`KEPT_FAILURES`] failures are kept (every one is
//! in `walks.jsonl` with a log dir).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::actors::collector::Progress;
use crate::cluster::{ClusterOptions, LocalNodes, Respawn};
use crate::model::outcome::{AbortedWalks, Report};
use crate::model::sample::{WalkSample, round_seed};
use crate::model::trace::RoundTag;
use crate::runtime::{RoundTrace, RunError};
use crate::suites::{Suite, SuiteError, SuiteOptions};

/// Failures kept in memory (the trace has them all).
pub const KEPT_FAILURES: usize = 100;

/// When a soak ends, besides a stop request.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct SoakLimit {
    /// Wall time: no round starts after it.
    pub duration: Option<Duration>,
    /// Rounds to run.
    pub rounds: Option<u64>,
}

/// How a soak runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SoakOptions {
    /// When to stop.
    pub limit: SoakLimit,
    /// The seed of the rounds' samples.
    pub seed: u64,
    /// Walks per round, drawn at random; `None`: the whole space each round.
    pub sample: Option<u64>,
    /// Threads, batch size, walk timeout, `--nodes`: as for a run.
    pub run: SuiteOptions,
    /// Start this many local nodes for the soak and restart them when lost.
    pub local_nodes: usize,
    /// The program local nodes run (default: this one).
    pub program: Option<PathBuf>,
    /// Append every walk's record to `DIR/<soak-id>/walks.jsonl` and keep
    /// `soak.json` there up to date.
    pub log_dir: Option<PathBuf>,
    /// How often to report statistics (between rounds).
    pub stats_every: Duration,
    /// Restart intensity: more node restarts than this within `window`
    /// stops the soak.
    pub max_restarts: usize,
    /// The restart intensity's window.
    pub window: Duration,
}

impl SoakOptions {
    /// A soak that stops at `limit`, with a random seed, full rounds, stats
    /// every 30 s and at most 10 node restarts a minute.
    pub fn new(limit: SoakLimit) -> Self {
        SoakOptions {
            limit,
            seed: rand::random(),
            sample: None,
            run: SuiteOptions::default(),
            local_nodes: 0,
            program: None,
            log_dir: None,
            stats_every: Duration::from_secs(30),
            max_restarts: 10,
            window: Duration::from_secs(60),
        }
    }
}

/// Asks a soak to stop: no batch is dispatched after the request; the
/// walks in flight finish, the round's results are kept, and the soak ends.
#[derive(Debug, Clone, Default)]
pub struct SoakStop {
    requests: Arc<AtomicU8>,
    /// Read by the round's Scheduler (also set when the duration is up).
    halt: Arc<AtomicBool>,
}

impl SoakStop {
    /// Another request (Ctrl-C): returns how many there have been.
    pub fn request(&self) -> u8 {
        self.halt.store(true, Ordering::SeqCst);
        self.requests.fetch_add(1, Ordering::SeqCst).saturating_add(1)
    }

    /// Requests so far.
    pub fn requested(&self) -> u8 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Running totals of a soak.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakTotals {
    /// Seconds since the start.
    pub elapsed_s: f64,
    /// Rounds finished.
    pub rounds: u64,
    /// Walks run (or accounted) over all rounds.
    pub walks: u64,
    /// Walks per second since the previous statistics.
    pub walks_per_s: f64,
    /// Outcomes over all rounds.
    pub passed: u64,
    /// Failed walks.
    pub failed: u64,
    /// Cancelled walks.
    pub cancelled: u64,
    /// Pruned walks.
    pub pruned: u64,
    /// Aborted walks.
    pub aborted: u64,
    /// Runner restarts (after an action panicked or a walk timed out).
    pub runner_restarts: u64,
    /// Local node processes restarted.
    pub node_restarts: u64,
    /// Rounds that could not complete because every node was lost (the
    /// walks that ended in them are counted).
    pub broken_rounds: u64,
    /// Rounds cut short by a stop or the end of the duration (the walks
    /// that ended in them are counted; the others did not run).
    pub interrupted_rounds: u64,
    /// This process's resident memory, in KiB (0 where unknown).
    pub rss_kib: u64,
}

/// A failed walk of a soak.
#[derive(Debug, Clone, Serialize)]
pub struct SoakFailure {
    /// The round.
    pub round: u64,
    /// The walk.
    pub walk_id: u64,
    /// The failing action.
    pub action: String,
    /// Its error.
    pub error: String,
}

/// Why a soak ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum SoakEnd {
    /// Its time or rounds were up.
    Done,
    /// It was asked to stop.
    Stopped,
    /// Nodes restarted more often than the restart intensity allows.
    TooManyRestarts(String),
    /// A round could not run for a reason a restart cannot fix.
    Broken(String),
}

/// What a soak did.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// The suite.
    pub suite: String,
    /// The seed of its samples.
    pub seed: u64,
    /// Walks per sampled round (`None`: whole space).
    pub sample: Option<u64>,
    /// Totals.
    pub totals: SoakTotals,
    /// The first failures.
    pub failures: Vec<SoakFailure>,
    /// Aborted walks, by round.
    pub aborted: Vec<(u64, AbortedWalks)>,
    /// Why it ended.
    pub end: SoakEnd,
    /// `DIR/<soak-id>`, with a log dir.
    pub dir: Option<PathBuf>,
}

impl SoakReport {
    /// Whether no walk failed or was aborted, no round broke, and the soak
    /// ended as planned.
    pub fn success(&self) -> bool {
        self.totals.failed == 0
            && self.totals.aborted == 0
            && self.totals.broken_rounds == 0
            && matches!(self.end, SoakEnd::Done | SoakEnd::Stopped)
    }
}

/// A soak in progress.
struct Soak<'a> {
    suite: &'a dyn Suite,
    options: &'a SoakOptions,
    started: Instant,
    report: SoakReport,
    nodes: Option<Arc<NodeKeeper>>,
    walks_file: Option<Arc<std::fs::File>>,
    last_stats: (Instant, u64),
}

/// Runs a soak of `suite`, calling `on_round` after every round with the
/// report so far and whether it is time for statistics (every
/// `stats_every`; also during a round that lasts longer, with the walks
/// that ended so far). Ends when `options.limit` is reached or `stop` is
/// requested (no walk starts after that; those running finish).
pub fn soak(
    suite: &dyn Suite,
    options: &SoakOptions,
    stop: &SoakStop,
    on_round: &(dyn Fn(&SoakReport, bool) + Sync),
) -> Result<SoakReport, SuiteError> {
    let size = suite.space().map_err(RunError::from)?.size();
    let mut soak = Soak {
        suite,
        options,
        started: Instant::now(),
        report: SoakReport {
            suite: suite.name().to_string(),
            seed: options.seed,
            sample: options.sample,
            totals: SoakTotals::default(),
            failures: Vec::new(),
            aborted: Vec::new(),
            end: SoakEnd::Done,
            dir: None,
        },
        nodes: None,
        walks_file: None,
        last_stats: (Instant::now(), 0),
    };
    soak.open_log_dir()?;
    // The duration ends the round in progress too: no batch is dispatched
    // after it.
    if let Some(duration) = options.limit.duration {
        let halt = Arc::downgrade(&stop.halt);
        std::thread::spawn(move || {
            std::thread::sleep(duration);
            if let Some(halt) = halt.upgrade() {
                halt.store(true, Ordering::SeqCst);
            }
        });
    }
    if options.local_nodes > 0 {
        let nodes = soak.start_nodes()?;
        soak.nodes = Some(Arc::new(NodeKeeper {
            nodes: std::sync::Mutex::new(nodes),
            restarts: std::sync::Mutex::new(Vec::new()),
            max: options.max_restarts,
            window: options.window,
            count: std::sync::atomic::AtomicU64::new(0),
            exceeded: std::sync::Mutex::new(None),
            busy: std::sync::Mutex::new(0),
            idle: std::sync::Condvar::new(),
        }));
    }
    let mut round = 0;
    loop {
        if stop.requested() > 0 {
            soak.report.end = SoakEnd::Stopped;
            break;
        }
        if options.limit.rounds.is_some_and(|r| round >= r)
            || options.limit.duration.is_some_and(|d| soak.started.elapsed() >= d)
        {
            break;
        }
        let end = soak.round(round, size, &stop.halt, on_round);
        round += 1;
        let stats = soak.last_stats.0.elapsed() >= options.stats_every;
        if stats {
            soak.stats();
            soak.write_meta();
        }
        on_round(&soak.report, stats);
        if let Some(end) = end {
            soak.report.end = end;
            break;
        }
    }
    soak.stats();
    soak.write_meta();
    Ok(soak.report)
}

impl Soak<'_> {
    fn open_log_dir(&mut self) -> Result<(), SuiteError> {
        let Some(dir) = &self.options.log_dir else {
            return Ok(());
        };
        let dir = dir.join(format!("soak-{}", crate::trace::RunId::new()));
        let opened = std::fs::create_dir_all(&dir).and_then(|()| {
            std::fs::OpenOptions::new().create(true).append(true).open(dir.join("walks.jsonl"))
        });
        let file = opened
            .map_err(|e| RunError::TraceWrite(format!("cannot create {}: {e}", dir.display())))?;
        self.walks_file = Some(Arc::new(file));
        self.report.dir = Some(dir);
        Ok(())
    }

    fn start_nodes(&self) -> Result<LocalNodes, SuiteError> {
        let program = self.program()?;
        let cookie = crate::cluster::LOOPBACK_COOKIE;
        Ok(LocalNodes::spawn(self.options.local_nodes, program, cookie, self.options.run.threads)
            .map_err(RunError::from)?)
    }

    fn program(&self) -> Result<PathBuf, SuiteError> {
        match &self.options.program {
            Some(program) => Ok(program.clone()),
            None => Ok(std::env::current_exe().map_err(|e| {
                RunError::Cluster(crate::cluster::ClusterError::Local(format!(
                    "cannot find this program: {e}"
                )))
            })?),
        }
    }

    /// Runs round `round`; `Some` if the soak must end.
    fn round(
        &mut self,
        round: u64,
        size: u64,
        halt: &Arc<AtomicBool>,
        on_round: &(dyn Fn(&SoakReport, bool) + Sync),
    ) -> Option<SoakEnd> {
        let mut options = self.options.run.clone();
        options.interrupt = Some(Arc::clone(halt));
        let progress = Arc::new(Progress::default());
        options.progress = Some(Arc::clone(&progress));
        let seed = self.options.sample.map(|_| round_seed(self.options.seed, round));
        if let (Some(count), Some(seed)) = (self.options.sample, seed) {
            match WalkSample::draw(size, count, seed) {
                Ok(sample) => options.sample = Some(sample),
                Err(error) => return Some(SoakEnd::Broken(error.to_string())),
            }
        }
        options.round_trace = self
            .walks_file
            .as_ref()
            .map(|file| RoundTrace { file: Arc::clone(file), tag: RoundTag { round, seed } });
        if let Some(keeper) = &self.nodes {
            let addresses = keeper.lock().addresses().to_vec();
            let mut cluster = ClusterOptions::nodes(addresses).heartbeat_timeout(
                self.options
                    .run
                    .cluster
                    .as_ref()
                    .map_or(crate::cluster::DEFAULT_HEARTBEAT_TIMEOUT, |c| c.heartbeat_timeout),
            );
            // A lost node is restarted and rejoins the round in progress.
            let respawn: Arc<dyn Respawn> = keeper.clone();
            cluster.respawn = Some(respawn);
            options.cluster = Some(cluster);
        }
        // Status lines keep coming during a long round: a ticker adds the
        // round's progress to the totals so far. It waits on the round's
        // end, not on a clock, between lines.
        let (ended, round_over) = std::sync::mpsc::channel::<()>();
        let base = self.report.clone();
        let (started, every, mut last) = (self.started, self.options.stats_every, self.last_stats);
        let suite = self.suite;
        let (result, last) = std::thread::scope(|scope| {
            let ticker = scope.spawn(move || {
                loop {
                    let next = (last.0 + every).saturating_duration_since(Instant::now());
                    match round_over.recv_timeout(next) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return last,
                    }
                    let mut snapshot = base.clone();
                    let totals = &mut snapshot.totals;
                    totals.walks += progress.ended.load(Ordering::Relaxed);
                    totals.failed += progress.failed.load(Ordering::Relaxed);
                    totals.cancelled += progress.cancelled.load(Ordering::Relaxed);
                    totals.aborted += progress.aborted.load(Ordering::Relaxed);
                    totals.elapsed_s = started.elapsed().as_secs_f64();
                    let secs = last.0.elapsed().as_secs_f64();
                    totals.walks_per_s = (totals.walks - last.1) as f64 / secs.max(1e-9);
                    totals.rss_kib = rss_kib();
                    last = (Instant::now(), totals.walks);
                    on_round(&snapshot, true);
                }
            });
            let result = suite.run(&options);
            drop(ended);
            (result, ticker.join().unwrap_or(last))
        });
        self.last_stats = last;
        match result {
            Ok(report) => self.fold(round, report),
            Err(SuiteError::Run(RunError::Interrupted { report })) => {
                // Stopped (Ctrl-C, or the duration is up) mid-round: what
                // ran is kept; the rest of the round did not run.
                self.fold(round, *report);
                self.report.totals.rounds -= 1;
                self.report.totals.interrupted_rounds += 1;
            }
            Err(SuiteError::Run(RunError::AllNodesLost { reason, report })) => {
                tracing::warn!(round, %reason, "round broken: every node was lost");
                self.report.totals.broken_rounds += 1;
                // What the round did account for (its records are written).
                if let Some(partial) = report {
                    self.fold(round, *partial);
                    self.report.totals.rounds -= 1; // Not a finished round.
                }
            }
            Err(error) => return Some(SoakEnd::Broken(error.to_string())),
        }
        self.restart_exited()
    }

    /// Adds a round's report to the totals.
    fn fold(&mut self, round: u64, report: Report) {
        let totals = &mut self.report.totals;
        totals.rounds += 1;
        // The walks that ended (all of the round's, unless it was cut short).
        totals.walks +=
            report.passed + report.failed + report.cancelled + report.pruned + report.aborted;
        totals.passed += report.passed;
        totals.failed += report.failed;
        totals.cancelled += report.cancelled;
        totals.pruned += report.pruned;
        totals.aborted += report.aborted;
        totals.runner_restarts += report.runner_restarts;
        let room = KEPT_FAILURES.saturating_sub(self.report.failures.len());
        self.report.failures.extend(report.failed_walks.into_iter().take(room).map(|f| {
            SoakFailure {
                round,
                walk_id: f.walk_id.0,
                action: f.action.to_string(),
                error: f.error,
            }
        }));
        if self.report.aborted.len() < KEPT_FAILURES {
            self.report.aborted.extend(report.aborted_walks.into_iter().map(|a| (round, a)));
        }
    }

    /// Restarts local nodes that exited between rounds; `Some` when the
    /// restart intensity is exceeded (here or during the round).
    fn restart_exited(&mut self) -> Option<SoakEnd> {
        let keeper = self.nodes.as_ref()?;
        // A restart the round started may still be under way (its run is
        // over): let it finish, so it cannot kill a node of the next round.
        keeper.settle(Duration::from_secs(60));
        let exited = keeper.lock().exited();
        for index in exited {
            if let Err(why) = keeper.respawn(&format!("local-{index}")) {
                tracing::warn!(%why, "cannot restart a local node");
            }
        }
        self.report.totals.node_restarts = keeper.count.load(Ordering::Relaxed);
        let exceeded = keeper.exceeded.lock().unwrap_or_else(|p| p.into_inner()).clone();
        exceeded.map(SoakEnd::TooManyRestarts)
    }

    fn stats(&mut self) {
        let totals = &mut self.report.totals;
        totals.elapsed_s = self.started.elapsed().as_secs_f64();
        let (at, walks) = self.last_stats;
        let secs = at.elapsed().as_secs_f64();
        totals.walks_per_s = if secs > 0.0 { (totals.walks - walks) as f64 / secs } else { 0.0 };
        totals.rss_kib = rss_kib();
        self.last_stats = (Instant::now(), totals.walks);
    }

    fn write_meta(&self) {
        write_meta(&self.report);
    }
}

/// Rewrites `soak.json` in the report's directory, if any, with its totals
/// (atomically: a temp file, then a rename).
pub fn write_meta(report: &SoakReport) {
    let Some(dir) = &report.dir else { return };
    let temp = dir.join("soak.json.tmp");
    let written = std::fs::File::create(&temp)
        .and_then(|mut file| {
            let text = serde_json::to_vec_pretty(report).expect("plain data serializes");
            file.write_all(&text)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, dir.join("soak.json")));
    if let Err(error) = written {
        tracing::error!(%error, "cannot write soak.json");
    }
}

/// The soak's local nodes, restarted (with backoff, within the restart
/// intensity) when a round loses one.
#[derive(Debug)]
struct NodeKeeper {
    nodes: std::sync::Mutex<LocalNodes>,
    restarts: std::sync::Mutex<Vec<Instant>>,
    max: usize,
    window: Duration,
    count: std::sync::atomic::AtomicU64,
    exceeded: std::sync::Mutex<Option<String>>,
    /// Restarts under way, and a signal when one ends.
    busy: std::sync::Mutex<usize>,
    idle: std::sync::Condvar,
}

impl NodeKeeper {
    fn lock(&self) -> std::sync::MutexGuard<'_, LocalNodes> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (at most `limit`) until no restart is under way.
    fn settle(&self, limit: Duration) {
        let busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self.idle.wait_timeout_while(busy, limit, |n| *n > 0);
    }
}

/// Marks a restart under way while it lives.
struct Busy<'a>(&'a NodeKeeper);

impl<'a> Busy<'a> {
    fn new(keeper: &'a NodeKeeper) -> Self {
        *keeper.busy.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        Busy(keeper)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.0.idle.notify_all();
    }
}

impl Respawn for NodeKeeper {
    fn respawn(&self, name: &str) -> Result<String, String> {
        let _busy = Busy::new(self);
        let index: usize = name
            .strip_prefix("local-")
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| format!("{name} is not a local node"))?;
        let recent = {
            let mut restarts = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            restarts.retain(|t| now.duration_since(*t) <= self.window);
            if restarts.len() >= self.max {
                let why = format!(
                    "more than {} node restarts within {}",
                    self.max,
                    humantime::format_duration(self.window)
                );
                *self.exceeded.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                return Err(why);
            }
            restarts.push(now);
            restarts.len() as u32
        };
        // Backoff: 100 ms for the first recent restart, doubling, at most 5 s.
        let backoff = Duration::from_millis(100) * 2u32.pow(recent.saturating_sub(1).min(6));
        std::thread::sleep(backoff.min(Duration::from_secs(5)));
        self.count.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(node = name, "restarting a lost local node");
        let mut nodes = self.lock();
        nodes.restart(index).map_err(|e| e.to_string())?;
        Ok(nodes.addresses()[index].clone())
    }
}

/// This process's resident set size, in KiB (Linux; 0 elsewhere).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}
