//! Soak runs: a suite run round after round for hours, through failing
//! walks, panics, hung walks and crashed node processes, with bounded
//! memory and results written as they happen.
//!
//! A soak is a loop of rounds. Each round is an ordinary run of the suite
//! (every semantic: serial actions at their barriers), over the whole space
//! or over a sample of walk ids drawn from a seeded RNG: round `r` draws
//! with `round_seed(seed, r)`, so the same seed replays the same rounds.
//! With nodes, the soak opens one [`Cluster`] for all its rounds: one
//! session per node, lost local nodes restarted (with backoff, within the
//! restart intensity), and every round borrows it.
//!
//! **Every ending is a report.** The soak stops when its rounds or its
//! duration are up (the round in progress is cut: its walks that did not
//! start are `not_run`, a normal ending), on Ctrl-C ([`SoakStop`]: the
//! first drains, the second, or a grace ([`STOP_GRACE`] by default) later, gives up the walks
//! still running as hung), when the restart intensity gives a node up, or
//! when every node is lost for good; walks that did not finish are then
//! aborted with their reason. The report's [`SoakEnding`] says which.
//!
//! Memory stays flat: a round's report is folded into running totals and
//! dropped; only the first [`KEPT_FAILURES`] failures are kept (every one is
//! in `walks.jsonl` with a log dir), and the aborted and unrun walks'
//! ranges up to [`KEPT_GROUPS`] groups. Failures are aggregated across
//! rounds into failure groups (count, first and last round seen, the
//! simplest walk any round found), up to [`KEPT_GROUPS`] groups.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::actors::collector::Progress;
use crate::cluster::{Cluster, ClusterOptions};
use crate::model::outcome::{AbortedWalks, Counts, Ending, FailedWalk, Report, StopReason};
use crate::model::sample::{SAMPLER_VERSION, SampleError, WalkSample, round_seed};
use crate::model::trace::{RoundTag, SampleRecord};
use crate::model::triage::GroupSummary;
use crate::runtime::{RoundTrace, RunError, RunStop};
use crate::suites::{Suite, SuiteError, SuiteOptions};

/// How a round's sample was drawn.
#[derive(Debug, Clone, Copy)]
struct SampleDraw {
    size: u64,
    count: u64,
    seed: u64,
}

/// Failures kept in memory (the trace has them all).
pub const KEPT_FAILURES: usize = 100;
/// Groups of aborted or unrun walks kept (ranges with their reason and
/// round); each fault or stop adds one or two.
pub const KEPT_GROUPS: usize = 10_000;
/// How long a stop waits for the walks running (they may hang) before
/// giving them up.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// When a soak ends, besides a stop request.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct SoakLimit {
    /// Wall time: the round in progress is cut when it is up.
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
    /// Threads, batch size, walk timeout: as for a run (its `cluster` is
    /// the soak's own, from `cluster`).
    pub run: SuiteOptions,
    /// The nodes (`--nodes`, `--local-nodes`): one cluster for the whole
    /// soak, whose lost local nodes are restarted within the restart
    /// intensity set there.
    pub cluster: Option<ClusterOptions>,
    /// Append every walk's record to `DIR/<soak-id>/walks.jsonl` and keep
    /// `soak.json` there up to date.
    pub log_dir: Option<PathBuf>,
    /// How often to report statistics.
    pub stats_every: Duration,
}

impl SoakOptions {
    /// A soak that stops at `limit`, with a random seed, full rounds and
    /// stats every 30 s.
    pub fn new(limit: SoakLimit) -> Self {
        SoakOptions {
            limit,
            seed: rand::random(),
            sample: None,
            run: SuiteOptions::default(),
            cluster: None,
            log_dir: None,
            stats_every: Duration::from_secs(30),
        }
    }
}

/// Asks a soak to stop: the first request drains (no walk starts after it;
/// those running finish, for at most its grace), the second gives up the
/// walks still running at once.
#[derive(Debug, Clone)]
pub struct SoakStop {
    requests: Arc<AtomicU8>,
    run: RunStop,
    grace: Duration,
}

impl Default for SoakStop {
    fn default() -> Self {
        SoakStop::with_grace(STOP_GRACE)
    }
}

impl SoakStop {
    /// A stop whose drain waits at most `grace` for the walks running.
    pub fn with_grace(grace: Duration) -> Self {
        SoakStop { requests: Arc::default(), run: RunStop::default(), grace }
    }

    /// Another request (Ctrl-C): returns how many there have been.
    pub fn request(&self) -> u8 {
        let count = self.requests.fetch_add(1, Ordering::SeqCst).saturating_add(1);
        if count == 1 {
            self.run.drain(StopReason::Interrupted);
            self.force_later(StopReason::Interrupted);
        } else {
            self.run.force(StopReason::Interrupted);
        }
        count
    }

    /// Requests so far.
    pub fn requested(&self) -> u8 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stops for `reason` (draining), and gives up what still runs after
    /// the grace.
    fn stop(&self, reason: StopReason) {
        self.run.drain(reason.clone());
        self.force_later(reason);
    }

    fn force_later(&self, reason: StopReason) {
        let (run, grace) = (self.run.clone(), self.grace);
        std::thread::spawn(move || {
            std::thread::sleep(grace);
            run.force(reason);
        });
    }
}

/// Running totals of a soak.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakTotals {
    /// Seconds since the start.
    pub elapsed_s: f64,
    /// Rounds finished.
    pub rounds: u64,
    /// Walks accounted for over all rounds (ended, aborted or not run).
    pub walks: u64,
    /// Walks per second since the previous statistics; in the final
    /// report, over the whole soak.
    pub walks_per_s: f64,
    /// Outcomes over all rounds (in JSON, flat: `passed`, `failed`, ...).
    #[serde(flatten)]
    pub counts: Counts,
    /// Walks of the round cut by the end of the duration that did not run.
    pub not_run: u64,
    /// Runner restarts (after an action panicked or a walk timed out).
    pub runner_restarts: u64,
    /// Nodes lost (and, for local nodes, restarted).
    pub nodes_lost: u64,
    /// Rounds cut short (by a stop or the end of the duration).
    pub interrupted_rounds: u64,
    /// This process's resident memory, in KiB (0 where unknown).
    pub rss_kib: u64,
}

/// A failed walk of a soak, with its round.
#[derive(Debug, Clone, Serialize)]
pub struct SoakFailure {
    /// The round.
    pub round: u64,
    /// The walk, its failing action and error.
    #[serde(flatten)]
    pub walk: FailedWalk,
}

/// How a soak ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SoakEnding {
    /// Its rounds were done.
    Completed,
    /// Its duration was up (the round in progress was cut).
    Duration,
    /// It was stopped (Ctrl-C).
    Interrupted,
    /// A local node restarted more often than the restart intensity allows.
    RestartLimit,
    /// Every node was lost for good.
    AllNodesLost,
    /// A round could not run for a reason a restart cannot fix.
    Broken,
    /// As many walks failed, over its rounds, as its failure limit
    /// allows (`--max-failures`, `--fail-fast`: `SuiteOptions::max_failures`
    /// of its `run` options); the round in progress was cut.
    FailureLimit,
}

/// Walks of a round, with their reason.
#[derive(Debug, Clone, Serialize)]
pub struct RoundWalks {
    /// The round.
    pub round: u64,
    /// The walks (id ranges) and why.
    #[serde(flatten)]
    pub walks: AbortedWalks,
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
    /// The failures of every round grouped by signature, largest first:
    /// count over the rounds, first and last round seen, the simplest
    /// walk any round found, and the conditions of the round that first
    /// saw the group (in sampled rounds, of its sampled walks).
    pub failure_groups: Vec<GroupSummary>,
    /// Failure groups not kept (over [`KEPT_GROUPS`]); their walks still
    /// count in `totals.failed`.
    pub failure_groups_dropped: u64,
    /// Aborted walks, by round and reason.
    pub aborted: Vec<RoundWalks>,
    /// Walks not run (the round the duration cut), by round and reason.
    pub not_run: Vec<RoundWalks>,
    /// Groups of aborted or unrun walks not kept (over [`KEPT_GROUPS`]).
    pub groups_dropped: u64,
    /// How it ended.
    pub ending: SoakEnding,
    /// Why, for the endings that have a reason.
    pub ending_reason: Option<String>,
    /// `DIR/<soak-id>`, with a log dir.
    pub dir: Option<PathBuf>,
}

impl SoakReport {
    /// Whether no walk failed or was aborted and the soak ended as planned
    /// (its rounds or duration were up, or it was stopped with nothing
    /// unfinished).
    pub fn success(&self) -> bool {
        self.totals.counts.failed == 0
            && self.totals.counts.aborted == 0
            && matches!(
                self.ending,
                SoakEnding::Completed | SoakEnding::Duration | SoakEnding::Interrupted
            )
    }

    /// Whether the soak broke (restart limit, every node lost, a round that
    /// cannot run).
    pub fn broke(&self) -> bool {
        matches!(
            self.ending,
            SoakEnding::RestartLimit | SoakEnding::AllNodesLost | SoakEnding::Broken
        )
    }
}

/// A soak in progress.
struct Soak<'a> {
    suite: &'a dyn Suite,
    options: &'a SoakOptions,
    started: Instant,
    report: SoakReport,
    cluster: Option<Cluster>,
    walks_file: Option<Arc<std::fs::File>>,
    last_stats: (Instant, u64),
    /// The next round's sample, drawn on a thread while this round runs.
    next_sample: Option<NextSample>,
}

/// Samples of at least this many walks are drawn a round ahead
/// ([`NextSample`]); smaller ones cost less than the thread.
const DRAW_AHEAD_FROM: u64 = 4_096;

/// Round `round`'s sample, being drawn on a thread of its own while the
/// round before it runs: a round's draw (about 20 ns per walk, on one
/// thread) then costs the soak nothing but a core's share.
struct NextSample {
    round: u64,
    draw: std::thread::JoinHandle<Result<WalkSample, SampleError>>,
}

/// Runs a soak of `suite`, calling `on_round` after every round with the
/// report so far and whether it is time for statistics (every
/// `stats_every`; also during a round that lasts longer, with the walks
/// that ended so far). Ends when `options.limit` is reached or `stop` is
/// requested; see the module doc for every ending.
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
            not_run: Vec::new(),
            groups_dropped: 0,
            failure_groups: Vec::new(),
            failure_groups_dropped: 0,
            ending: SoakEnding::Completed,
            ending_reason: None,
            dir: None,
        },
        cluster: None,
        walks_file: None,
        last_stats: (Instant::now(), 0),
        next_sample: None,
    };
    soak.open_log_dir()?;
    if let Some(cluster) = &options.cluster {
        soak.cluster = Some(Cluster::open(cluster.clone())?);
    }
    // The duration cuts the round in progress: no batch is dispatched after
    // it, and what still runs a grace later is given up.
    if let Some(duration) = options.limit.duration {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(duration);
            if stop.run.requested().is_none() {
                stop.stop(StopReason::DurationEnded);
            }
        });
    }
    let mut round = 0;
    loop {
        if let Some(why) = soak.cluster.as_ref().and_then(Cluster::restart_limit) {
            stop.stop(StopReason::RestartLimit(why));
        }
        if let Some(reason) = stop.run.requested() {
            soak.end_with(&reason);
            break;
        }
        if options.limit.rounds.is_some_and(|r| round >= r) {
            break;
        }
        let end = soak.round(round, size, stop, on_round);
        round += 1;
        let stats = soak.last_stats.0.elapsed() >= options.stats_every;
        if stats {
            soak.stats();
            soak.write_meta();
        }
        on_round(&soak.report, stats);
        if end {
            break;
        }
    }
    soak.stats();
    // The final rate is the whole soak's, not the last interval's (which
    // may hold no walk at all).
    let totals = &mut soak.report.totals;
    totals.walks_per_s = totals.walks as f64 / totals.elapsed_s.max(1e-9);
    soak.write_meta();
    if let Some(cluster) = soak.cluster.take() {
        cluster.close();
    }
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

    /// The soak's ending for a stop's reason. Every node lost because the
    /// restart intensity gave them up is the restart limit.
    fn end_with(&mut self, reason: &StopReason) {
        let limit = self.cluster.as_ref().and_then(Cluster::restart_limit);
        let reason = match (reason, limit) {
            (StopReason::AllNodesLost(_), Some(why)) => &StopReason::RestartLimit(why),
            _ => reason,
        };
        let (ending, why) = match reason {
            StopReason::DurationEnded => (SoakEnding::Duration, None),
            StopReason::Interrupted => (SoakEnding::Interrupted, None),
            StopReason::RestartLimit(why) => (SoakEnding::RestartLimit, Some(why.clone())),
            StopReason::AllNodesLost(why) => (SoakEnding::AllNodesLost, Some(why.clone())),
            // A round's limit is what was left of the soak's: name the soak's.
            StopReason::FailureLimit(_) => {
                let limit = self.options.run.max_failures.unwrap_or(1);
                (SoakEnding::FailureLimit, Some(StopReason::FailureLimit(limit).phrase()))
            }
        };
        self.report.ending = ending;
        self.report.ending_reason = why;
    }

    /// Round `round`'s sample of `count` walks: drawn ahead if it was (a
    /// thread that failed is drawn again here), else now. Then the next
    /// round's is started ahead.
    fn sample(&mut self, round: u64, size: u64, count: u64) -> Result<WalkSample, SampleError> {
        let seed = self.options.seed;
        let draw = move |round| WalkSample::draw(size, count, round_seed(seed, round));
        let sample = match self.next_sample.take() {
            Some(next) if next.round == round => next.draw.join().unwrap_or_else(|_| draw(round)),
            _ => draw(round),
        };
        let ahead = round + 1;
        if count >= DRAW_AHEAD_FROM && self.options.limit.rounds.is_none_or(|r| ahead < r) {
            let thread = std::thread::Builder::new().name("combtest-draw".into());
            // No thread (the system's limit): the round draws its own.
            self.next_sample = thread
                .spawn(move || draw(ahead))
                .ok()
                .map(|draw| NextSample { round: ahead, draw });
        }
        sample
    }

    /// Runs round `round`; true if the soak must end.
    fn round(
        &mut self,
        round: u64,
        size: u64,
        stop: &SoakStop,
        on_round: &(dyn Fn(&SoakReport, bool) + Sync),
    ) -> bool {
        let mut options = self.options.run.clone();
        options.stop = Some(stop.run.clone());
        // The soak's failure limit, less the failures of earlier rounds
        // (at least one is left, or the soak has ended).
        options.max_failures = self
            .options
            .run
            .max_failures
            .map(|limit| limit.saturating_sub(self.report.totals.counts.failed).max(1));
        options.cluster = self.cluster.clone();
        let progress = Arc::new(Progress::default());
        options.progress = Some(Arc::clone(&progress));
        let seed = self.options.sample.map(|_| round_seed(self.options.seed, round));
        if let Some(count) = self.options.sample {
            match self.sample(round, size, count) {
                Ok(sample) => options.sample = Some(sample),
                Err(error) => {
                    self.report.ending = SoakEnding::Broken;
                    self.report.ending_reason = Some(error.to_string());
                    return true;
                }
            }
        }
        options.round_trace = self
            .walks_file
            .as_ref()
            .map(|file| RoundTrace { file: Arc::clone(file), tag: RoundTag { round, seed } });
        // Status lines keep coming during a long round: a ticker adds the
        // round's progress to the totals so far. It also watches the
        // cluster's restart intensity, which stops the soak.
        let (ended, round_over) = std::sync::mpsc::channel::<()>();
        let base = self.report.clone();
        let (started, every, mut last) = (self.started, self.options.stats_every, self.last_stats);
        let suite = self.suite;
        let cluster = self.cluster.clone();
        let (result, last) = std::thread::scope(|scope| {
            let ticker = scope.spawn(move || {
                loop {
                    let next = (last.0 + every).saturating_duration_since(Instant::now());
                    match round_over.recv_timeout(next.min(Duration::from_millis(200))) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return last,
                    }
                    if stop.run.requested().is_none()
                        && let Some(why) = cluster.as_ref().and_then(Cluster::restart_limit)
                    {
                        stop.stop(StopReason::RestartLimit(why));
                    }
                    if last.0.elapsed() < every {
                        continue;
                    }
                    let mut snapshot = base.clone();
                    let totals = &mut snapshot.totals;
                    totals.walks += progress.ended.load(Ordering::Relaxed);
                    totals.counts.passed += progress.passed.load(Ordering::Relaxed);
                    totals.counts.failed += progress.failed.load(Ordering::Relaxed);
                    totals.counts.cancelled += progress.cancelled.load(Ordering::Relaxed);
                    totals.counts.pruned += progress.pruned.load(Ordering::Relaxed);
                    totals.counts.aborted += progress.aborted.load(Ordering::Relaxed);
                    totals.not_run += progress.not_run.load(Ordering::Relaxed);
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
            Ok(report) => {
                let ending = report.ending.clone();
                if let (Some(count), Some(seed)) = (self.options.sample, seed) {
                    self.record_sample(round, SampleDraw { size, count, seed }, &report);
                }
                self.fold(round, report);
                let limit = self.options.run.max_failures;
                match ending {
                    // Every walk of the round had started when the limit
                    // was reached: the round is whole, the soak ends.
                    Ending::Completed
                        if limit.is_some_and(|l| self.report.totals.counts.failed >= l) =>
                    {
                        self.end_with(&StopReason::FailureLimit(0));
                        true
                    }
                    Ending::Completed => false,
                    Ending::Stopped(reason) => {
                        self.report.totals.rounds -= 1;
                        self.report.totals.interrupted_rounds += 1;
                        self.end_with(&reason);
                        true
                    }
                }
            }
            Err(SuiteError::Cluster(crate::cluster::ClusterError::NoNode(why))) => {
                self.report.ending = SoakEnding::AllNodesLost;
                self.report.ending_reason = Some(why);
                true
            }
            Err(error) => {
                self.report.ending = SoakEnding::Broken;
                self.report.ending_reason = Some(error.to_string());
                true
            }
        }
    }

    /// Appends a sampled round's sample record to the soak's `walks.jsonl`
    /// (when it has one): its seed and the sampled walks it did not finish,
    /// from which readers list its passing walks.
    fn record_sample(&mut self, round: u64, draw: SampleDraw, report: &Report) {
        let Some(file) = &self.walks_file else { return };
        let unfinished = report
            .aborted_walks
            .iter()
            .chain(&report.not_run_walks)
            .flat_map(|group| group.walks.iter().map(|r| [r.start, r.end]))
            .collect();
        let record = SampleRecord {
            suite: self.suite.name().to_string(),
            round,
            seed: draw.seed,
            sampler: SAMPLER_VERSION,
            walks: draw.size,
            sample: draw.count,
            unfinished,
        };
        let mut line = serde_json::to_vec(&record).expect("a sample record serializes");
        line.push(b'\n');
        if let Err(error) = (&**file).write_all(&line) {
            tracing::error!(%error, round, "cannot write the round's sample record to walks.jsonl");
        }
    }

    /// Adds a round's report to the totals.
    fn fold(&mut self, round: u64, report: Report) {
        let totals = &mut self.report.totals;
        totals.rounds += 1;
        totals.walks += report.walks;
        totals.counts.merge(&report.counts);
        totals.not_run += report.not_run;
        totals.runner_restarts += report.runner_restarts;
        totals.nodes_lost += report.lost_nodes.len() as u64;
        for group in &report.failure_groups {
            self.group(round, GroupSummary::of(group, None));
        }
        // Largest first; a stable sort keeps first-seen order among equals.
        self.report.failure_groups.sort_by_key(|g| std::cmp::Reverse(g.count));
        let room = KEPT_FAILURES.saturating_sub(self.report.failures.len());
        self.report.failures.extend(
            report.failed_walks.into_iter().take(room).map(|walk| SoakFailure { round, walk }),
        );
        for (list, groups) in [
            (&mut self.report.aborted, report.aborted_walks),
            (&mut self.report.not_run, report.not_run_walks),
        ] {
            for walks in groups {
                if list.len() < KEPT_GROUPS {
                    list.push(RoundWalks { round, walks });
                } else {
                    self.report.groups_dropped += 1;
                }
            }
        }
    }

    /// Folds a round's failure group into the soak's.
    fn group(&mut self, round: u64, mut group: GroupSummary) {
        let groups = &mut self.report.failure_groups;
        let full = groups.len() >= KEPT_GROUPS;
        match groups.iter_mut().find(|g| g.signature == group.signature) {
            Some(kept) => {
                kept.count += group.count;
                kept.last_round = Some(round);
                let simplicity = |g: &GroupSummary| {
                    let m = &g.minimal_walk;
                    (m.actions.iter().filter(|a| a.option != 0).count(), m.walk_id)
                };
                if simplicity(&group) < simplicity(kept) {
                    kept.minimal_walk = group.minimal_walk;
                }
                if !kept.conditions.found && group.conditions.found {
                    kept.conditions = group.conditions;
                }
            }
            None if !full => {
                group.first_round = Some(round);
                group.last_round = Some(round);
                groups.push(group);
            }
            None => self.report.failure_groups_dropped += 1,
        }
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
