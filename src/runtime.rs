//! Running a walk order: [`run`] (blocking) and [`run_async`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::Actor;
use thiserror::Error;
use tokio::sync::oneshot;

use crate::actors::collector::Progress;
use crate::actors::run_supervisor::{
    RunContext, RunFailure, RunSupervisor, RunSupervisorMsg, Workers,
};
use crate::exec::{ErasedOrder, Origin, Runnable};
use crate::model::action::Halt;
use crate::model::dispatch::StopKind;
use crate::model::fixtures::{Built, Cloned, Factory, Fixtures, StartKind};
use crate::model::outcome::{Report, StopReason};
use crate::model::sample::{SampleError, WalkSample};
use crate::model::space::OrderError;
use crate::model::space::{Blocks, WalkId};
use crate::model::trace::{RoundTag, TraceEncoder};
use crate::order::{Entries, WalkOrder};
use crate::trace::{RunId, TraceError, TraceTarget, option_json};

/// How to run a walk order. `K` is how walks start: [`Cloned`] (from
/// [`RunOptions::new`]) or [`Built`] (from [`RunOptions::factory`]); it is
/// inferred, and names of `RunOptions<S>` mean the default, `Cloned`.
pub struct RunOptions<S, K: StartKind<S> = Cloned> {
    pub(crate) start: K::Start,
    pub(crate) fixtures: Arc<Fixtures>,
    pub(crate) threads: Option<usize>,
    pub(crate) gather_states: bool,
    pub(crate) log_dir: Option<PathBuf>,
    pub(crate) run_id: Option<RunId>,
    pub(crate) name: Option<String>,
    pub(crate) max_batch: Option<u64>,
    pub(crate) sample: Option<WalkSample>,
    pub(crate) walk_timeout: Option<Duration>,
    pub(crate) in_flight: Option<usize>,
    pub(crate) append: Option<RoundTrace>,
    pub(crate) stop: Option<RunStop>,
    pub(crate) max_failures: Option<u64>,
    pub(crate) progress: Option<Arc<Progress>>,
}

/// Where a soak round's trace lines go: appended to the soak's
/// `walks.jsonl`, each tagged with the round.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct RoundTrace {
    /// The soak's `walks.jsonl`, opened for appending.
    pub file: Arc<std::fs::File>,
    /// The round (and sample seed) each line is tagged with.
    pub tag: RoundTag,
}

impl<S: Default + Clone + Send + 'static> Default for RunOptions<S> {
    fn default() -> Self {
        RunOptions::new(S::default())
    }
}

impl<S: Clone + Send + 'static, K: StartKind<S>> Clone for RunOptions<S, K> {
    fn clone(&self) -> Self {
        RunOptions {
            start: self.start.clone(),
            fixtures: Arc::clone(&self.fixtures),
            threads: self.threads,
            gather_states: self.gather_states,
            log_dir: self.log_dir.clone(),
            run_id: self.run_id,
            name: self.name.clone(),
            max_batch: self.max_batch,
            sample: self.sample.clone(),
            walk_timeout: self.walk_timeout,
            in_flight: self.in_flight,
            append: self.append.clone(),
            stop: self.stop.clone(),
            max_failures: self.max_failures,
            progress: self.progress.clone(),
        }
    }
}

impl<S, K: StartKind<S>> std::fmt::Debug for RunOptions<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("fixtures", &self.fixtures)
            .field("threads", &self.threads)
            .field("gather_states", &self.gather_states)
            .field("log_dir", &self.log_dir)
            .field("max_batch", &self.max_batch)
            .field("walk_timeout", &self.walk_timeout)
            .finish_non_exhaustive()
    }
}

impl<S: Clone + Send + 'static> RunOptions<S> {
    /// Every walk starts from a clone of `initial`.
    pub fn new(initial: S) -> Self {
        RunOptions::starting(initial)
    }
}

impl<S: Send + 'static> RunOptions<S, Built> {
    /// Every walk starts from what `factory` builds for it, from the run's
    /// fixtures and its id (see [`Built`]); the state need not be `Clone`.
    pub fn factory(
        factory: impl Fn(&Fixtures, WalkId) -> Result<S, Halt> + Send + Sync + 'static,
    ) -> Self {
        let factory: Arc<Factory<S>> = Arc::new(factory);
        RunOptions::starting(factory)
    }
}

impl<S, K: StartKind<S>> RunOptions<S, K> {
    pub(crate) fn starting(start: K::Start) -> Self {
        RunOptions {
            start,
            fixtures: Arc::default(),
            threads: None,
            gather_states: false,
            log_dir: None,
            run_id: None,
            name: None,
            max_batch: None,
            sample: None,
            walk_timeout: None,
            in_flight: None,
            append: None,
            stop: None,
            max_failures: None,
            progress: None,
        }
    }

    /// The run's fixtures, reached by every action, serial action and
    /// state factory through its context; dropped when the run ends.
    pub fn fixtures(mut self, fixtures: Fixtures) -> Self {
        self.fixtures = Arc::new(fixtures);
        self
    }

    /// Number of runner threads: walks running at once. Defaults to the
    /// available parallelism; set it far higher for actions that wait on I/O.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Keep the final state of every walk in the report (memory grows with
    /// the number of walks).
    pub fn gather_states(mut self, gather: bool) -> Self {
        self.gather_states = gather;
        self
    }

    /// Trace the run into `DIR/<run-id>/`: `walks.jsonl` (one line per walk,
    /// written as outcomes arrive), `run.json` and `junit.xml`. The report's
    /// `run_dir` names the directory. Without a log dir, tracing costs
    /// nothing per walk.
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// The run's id (default: a fresh one), e.g. to open a log file in the
    /// run directory before the run starts.
    pub fn run_id(mut self, id: RunId) -> Self {
        self.run_id = Some(id);
        self
    }

    /// The name the trace records for this walk order (a suite's name;
    /// default `default`). Replaying from a run directory checks it.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Caps batches at `walks` walks (default: sized adaptively to about
    /// 4 ms of work each). Smaller batches balance slow, uneven walks
    /// better; larger ones cost fewer round trips.
    pub fn max_batch(mut self, walks: u64) -> Self {
        self.max_batch = Some(walks.max(1));
        self
    }

    /// Runs only the walks of `sample` (with every serial action they need,
    /// at its barrier; epochs without a sampled walk are skipped). The
    /// report covers the sample: `walks` is its size.
    pub fn sample(mut self, sample: WalkSample) -> Self {
        self.sample = Some(sample);
        self
    }

    /// A walk segment that runs longer than `timeout` fails ("timed out
    /// after ..."), and its runner is replaced; the stuck thread is
    /// abandoned (it cannot be stopped from outside). Batches then hold one
    /// walk each, so the timeout is per walk segment.
    pub fn walk_timeout(mut self, timeout: Duration) -> Self {
        self.walk_timeout = Some(timeout);
        self.max_batch = Some(1);
        self
    }

    /// Walks in flight at once on one runner thread when the walk order
    /// has an async action ([`AsyncAction`](crate::AsyncAction)); 1,024 by
    /// default. With `threads` runners, up to `threads × in_flight` walks
    /// run at once. Ignored by walk orders without async actions.
    pub fn in_flight(mut self, walks: usize) -> Self {
        self.in_flight = Some(walks.max(1));
        self
    }

    /// Lets `stop` stop the run: the report then accounts for the walks
    /// that did not finish (see [`RunStop`]) and says how the run ended.
    pub fn stop(mut self, stop: RunStop) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Stops the run once `walks` walks (at least 1) have failed, as
    /// `pytest -x` does: no walk starts after that; walks already running
    /// end (a failure among them is reported too, so the report may hold
    /// a few more); the walks never started are counted `not_run`, and the
    /// report's ending is [`StopReason::FailureLimit`]. For finding a bug
    /// soon in a large space, rather than every walk a bug fails.
    pub fn max_failures(mut self, walks: u64) -> Self {
        self.max_failures = Some(walks.max(1));
        self
    }

    /// Counts walks as they end into `progress` (a soak's status lines).
    pub(crate) fn progress(mut self, progress: Option<Arc<Progress>>) -> Self {
        self.progress = progress;
        self
    }

    /// Appends the trace to a soak's file, tagged with the round.
    pub(crate) fn round_trace(mut self, trace: Option<RoundTrace>) -> Self {
        self.append = trace;
        self
    }

    /// The runner threads this run will use.
    pub fn effective_threads(&self) -> usize {
        self.threads.unwrap_or_else(default_threads)
    }
}

/// The default number of runner threads: the machine's available
/// parallelism, read once per process (on Linux, reading it opens and
/// parses the process's cgroup files, tens of microseconds each time, and
/// a run asks for it several times).
pub fn default_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Most runner threads a run accepts.
pub const MAX_THREADS: usize = 4096;

/// Stops a run (or a soak's rounds) from outside: Ctrl-C, a deadline.
///
/// [`drain`](RunStop::drain): nothing new starts (batches queued but not
/// started are taken back; nodes are told to start nothing more), the
/// walks running finish, and the report accounts for the rest: `not_run`
/// when the reason is a normal ending ([`StopReason::DurationEnded`]),
/// `aborted` otherwise, each with its reason ("not run: ...", "not
/// finished: ..."). [`force`](RunStop::force): the walks still running are
/// given up too ("hung when ..."; their threads are abandoned). The report
/// says how the run ended ([`Report::ending`]). A handle stays stopped; a
/// run started with a stopped handle runs nothing.
#[derive(Clone, Default)]
pub struct RunStop(Arc<std::sync::Mutex<StopState>>);

#[derive(Default)]
struct StopState {
    requested: Option<(StopKind, StopReason)>,
    /// The current run's supervisor.
    listener: Option<ractor::ActorRef<RunSupervisorMsg>>,
}

impl std::fmt::Debug for RunStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RunStop").field(&self.requested()).finish()
    }
}

impl RunStop {
    /// Start nothing more; let what runs finish.
    pub fn drain(&self, reason: StopReason) {
        self.request(StopKind::Drain, reason);
    }

    /// Start nothing more; give up what still runs.
    pub fn force(&self, reason: StopReason) {
        self.request(StopKind::Force, reason);
    }

    /// Why the run was stopped, if it was.
    pub fn requested(&self) -> Option<StopReason> {
        self.lock().requested.as_ref().map(|(_, reason)| reason.clone())
    }

    /// Whether a forced stop was asked for.
    pub fn forced(&self) -> bool {
        self.lock().requested.as_ref().is_some_and(|(kind, _)| *kind == StopKind::Force)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StopState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn request(&self, kind: StopKind, reason: StopReason) {
        let mut state = self.lock();
        let reason = match &state.requested {
            // The first reason stands; a second request may only force.
            Some((_, first)) => first.clone(),
            None => reason,
        };
        let kind = state.requested.as_ref().map_or(kind, |(k, _)| kind.max(*k));
        state.requested = Some((kind, reason.clone()));
        if let Some(listener) = &state.listener {
            let _ = listener.cast(RunSupervisorMsg::Stop { kind, reason });
        }
    }

    /// The run of `supervisor` listens from now on (a stop already asked for
    /// reaches it at once).
    fn listen(&self, supervisor: ractor::ActorRef<RunSupervisorMsg>) {
        let mut state = self.lock();
        if let Some((kind, reason)) = &state.requested {
            let _ = supervisor.cast(RunSupervisorMsg::Stop { kind: *kind, reason: reason.clone() });
        }
        state.listener = Some(supervisor);
    }

    fn unlisten(&self) {
        self.lock().listener = None;
    }
}

/// Why a run could not produce a report. Failing walks are not errors: they
/// are in the report.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RunError {
    /// The walk order cannot be run.
    #[error("invalid walk order: {0}")]
    InvalidOrder(#[from] OrderError),
    /// The thread count is out of range.
    #[error("invalid thread count {0}: use 1 to {MAX_THREADS}")]
    InvalidThreads(usize),
    /// `run` was called from inside a tokio runtime.
    #[error("`run` cannot block inside an async runtime: call `run_async(...).await` instead")]
    InsideRuntime,
    /// The runtime could not be built.
    #[error("could not start the async runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The run directory could not be created or written.
    #[error("cannot write the trace: {0}")]
    Trace(#[from] TraceError),
    /// `walks.jsonl` could not be written while the run went on.
    #[error("cannot write the trace: {0}")]
    TraceWrite(String),
    /// The actors of the run broke an invariant: a bug in combtest.
    #[error("internal error (a bug in combtest, please report it): {0}")]
    Internal(String),
    /// The sample does not fit the walk order, or cannot be traced.
    #[error("invalid sample: {0}")]
    Sample(#[from] SampleError),
}

/// Runs every walk of `order` from clones of `initial`, and panics with
/// the report's text unless every walk passed, was cancelled or was
/// pruned: the one call for a `#[test]`. The text ([`Report::render`]) has
/// the failure groups (each with its minimal walk, the options that induce
/// it and how to replay it), then the first failed walks by id, each with
/// its error and the line that replays it: `order.replay(id, initial)`.
///
/// ```should_panic
/// use combtest::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// struct Push(u8);
/// impl Action<Vec<u8>> for Push {
///     fn options() -> Vec<Self> { (0..3).map(Push).collect() }
///     fn run(&self, v: &mut Vec<u8>) -> ActionResult {
///         v.push(self.0);
///         if v == &[2, 2] { return fail("two 2s in a row") }
///         Ok(())
///     }
/// }
///
/// check(&WalkOrder::new().then::<Push>().then::<Push>(), Vec::new());
/// ```
///
/// Returns the report when the check passes. When there is no report
/// (a [`RunError`]: a walk order that cannot run, an invalid thread
/// count, a call from inside an async runtime such as `#[tokio::test]`,
/// where [`run_async`] is the call to make), it panics with one line:
/// `combtest: the walk order could not run: ` and the error.
#[track_caller]
pub fn check<S, C>(order: &WalkOrder<S, C>, initial: S) -> Report<S>
where
    S: Clone + Send + 'static,
    C: Entries<S>,
{
    check_with(order, RunOptions::new(initial))
}

/// [`check`] with options (threads, a log dir, a walk timeout, ...).
#[track_caller]
pub fn check_with<S, C, K>(order: &WalkOrder<S, C>, options: RunOptions<S, K>) -> Report<S>
where
    K: StartKind<S>,
    S: Send + 'static,
    C: Entries<S>,
{
    match run(order, options) {
        Err(error) => panic!("combtest: the walk order could not run: {error}"),
        Ok(report) if report.success() => report,
        Ok(report) => {
            let replay = |id: WalkId| format!("order.replay({id}, initial)");
            panic!("combtest: {}", report.render(Some(&replay)))
        }
    }
}

/// Runs every walk of `order`, blocking until the report is ready. Creates
/// its own async runtime; from async code, use [`run_async`].
pub fn run<S, C, K>(
    order: &WalkOrder<S, C>,
    options: RunOptions<S, K>,
) -> Result<Report<S>, RunError>
where
    K: StartKind<S>,
    S: Send + 'static,
    C: Entries<S>,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(RunError::InsideRuntime);
    }
    let threads = options.effective_threads();
    if threads == 0 || threads > MAX_THREADS {
        return Err(RunError::InvalidThreads(threads));
    }
    let runtime = actor_runtime()?;
    let result = runtime.block_on(run_async(order, options));
    // Every task is done; idle threads exit on their own. Waiting for each
    // would only add to the run's wall time.
    runtime.shutdown_background();
    result
}

/// Runs every walk of `order` from the current tokio runtime (multi-threaded).
/// Walks run on threads of their own, one per runner, never on the runtime's
/// workers; serial actions use its blocking pool, one at a time.
pub async fn run_async<S, C, K: StartKind<S>>(
    order: &WalkOrder<S, C>,
    options: RunOptions<S, K>,
) -> Result<Report<S>, RunError>
where
    S: Send + 'static,
    C: Entries<S>,
{
    let started = Instant::now();
    let threads = options.effective_threads();
    if threads == 0 || threads > MAX_THREADS {
        return Err(RunError::InvalidThreads(threads));
    }
    let runnable: Arc<dyn ErasedOrder<S>> = Arc::new(Runnable::<S, C, K>::new(order.clone())?);
    let space = runnable.space().clone();
    let values = match options.log_dir.is_some() || options.append.is_some() {
        true => Some(option_json(order, &space)?),
        false => None,
    };
    let blocks = blocks_for(&space, threads, &options);
    run_on(runnable, values, options, Workers::Threads(threads), blocks, started).await
}

/// A run on any workers: the part shared by in-process and cluster runs
/// (`cluster::run` calls it with remote workers).
pub(crate) async fn run_on<S: Send + 'static, K: StartKind<S>>(
    runnable: Arc<dyn ErasedOrder<S>>,
    values: Option<crate::model::trace::OptionJson>,
    options: RunOptions<S, K>,
    workers: Workers<S>,
    blocks: Blocks,
    started: Instant,
) -> Result<Report<S>, RunError> {
    let space = runnable.space().clone();
    if let Some(sample) = &options.sample {
        let size = space.size();
        if let Some(&id) = sample.ids().last().filter(|&&id| id >= size) {
            return Err(SampleError::Outside { id, size }.into());
        }
        if options.log_dir.is_some() {
            // A run directory's reader expects every walk of the space.
            return Err(SampleError::NotTraceable.into());
        }
    }
    let threads = workers.runners();
    let mut session = None;
    let mut trace = None;
    let append = options.append.is_some();
    if let (Some(target), Some(values)) = (options.append, values.clone()) {
        // A soak round: lines tagged with the round, appended to the soak's
        // file; no run directory of its own.
        let suite = options.name.clone().unwrap_or_else(|| "default".to_string());
        let encoder = TraceEncoder::new(suite, space.clone(), values).with_round(Some(target.tag));
        let file = target.file.try_clone().map_err(|e| RunError::TraceWrite(e.to_string()))?;
        trace = Some((Arc::new(encoder), crate::trace::WalksFile::new(file)));
    } else if let (Some(log_dir), Some(values)) = (options.log_dir, values) {
        let target = TraceTarget {
            log_dir,
            run_id: options.run_id.unwrap_or_else(RunId::new),
            suite: options.name.unwrap_or_else(|| "default".to_string()),
        };
        let (started, encoder, file) = crate::trace::start(&target, &space, values, threads)?;
        tracing::info!(dir = %started.dir.display(), "tracing the run");
        session = Some(started);
        trace = Some((Arc::new(encoder), crate::trace::WalksFile::new(file)));
    }
    tracing::info!(walks = space.size(), threads, "run starts");
    // The run's fixtures are dropped before it returns: wait (bounded) for
    // the runner threads and actors holding them to let go.
    let mut fixtures = options.fixtures;
    let released = Arc::get_mut(&mut fixtures)
        .filter(|fixtures| !fixtures.is_empty())
        .map(Fixtures::tell_when_dropped);
    let (reply, report) = oneshot::channel();
    let context = RunContext {
        order: runnable,
        origin: Origin::new::<K>(options.start, fixtures),
        workers,
        blocks,
        // One walk per batch: a timeout then blames one walk.
        max_batch: if options.walk_timeout.is_some() { Some(1) } else { options.max_batch },
        progress: options.progress.clone(),
        sample: options.sample,
        walk_timeout: options.walk_timeout,
        max_failures: options.max_failures,
        in_flight: options.in_flight.unwrap_or(crate::exec::DEFAULT_IN_FLIGHT),
        gather: options.gather_states,
        trace,
        reply,
    };
    let (supervisor, handle) = Actor::spawn(None, RunSupervisor::new(), context)
        .await
        .map_err(|e| RunError::Internal(format!("could not start the run: {e}")))?;
    if let Some(stop) = &options.stop {
        stop.listen(supervisor.clone());
    }
    // If this future is dropped mid-run, stop the actors with it.
    let guard = StopOnDrop(Some(supervisor.get_cell()));
    let result = report.await.unwrap_or_else(|_| {
        Err(RunFailure::Internal("the run supervisor stopped without a report".to_string()))
    });
    if let Some(stop) = &options.stop {
        stop.unlisten();
    }
    drop(guard);
    // The actors stop on their own; a hung runner's may take a moment.
    let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
    if let Some(released) = released {
        // A runner thread stuck in a walk (past its walk timeout) keeps
        // them until it returns: give up waiting after 10 s.
        let wait = move || released.recv_timeout(Duration::from_secs(10));
        let _ = tokio::task::spawn_blocking(wait).await;
    }
    let (mut report, totals) = result.map_err(|failure| match failure {
        RunFailure::Internal(reason) => RunError::Internal(reason),
        RunFailure::TraceWrite(reason) => RunError::TraceWrite(reason),
    })?;
    if !report.is_consistent() {
        // Never hand over a report that loses or double-counts a walk.
        return Err(RunError::Internal(format!(
            "the report does not account for every walk exactly once: {} walks, {} passed, \
             {} failed ({} listed), {} cancelled, {} pruned, {} aborted, {} not run",
            report.walks,
            report.counts.passed,
            report.counts.failed,
            report.failed_walks.len(),
            report.counts.cancelled,
            report.counts.pruned,
            report.counts.aborted,
            report.not_run,
        )));
    }
    report.elapsed = started.elapsed();
    tracing::info!(
        walks = report.walks,
        passed = report.counts.passed,
        failed = report.counts.failed,
        aborted = report.counts.aborted,
        not_run = report.not_run,
        ending = report.ending.name(),
        elapsed_s = report.elapsed.as_secs_f64(),
        "run ends"
    );
    if session.is_some() || append {
        let totals = totals.unwrap_or_default();
        let ended = report.walks - report.counts.aborted - report.not_run;
        if totals.records != ended {
            return Err(RunError::Internal(format!(
                "the trace holds {} records for {ended} walks that ended",
                totals.records,
            )));
        }
        if let Some(session) = session {
            report.run_dir = Some(session.finish(&report, &totals)?);
        }
    }
    Ok(report)
}

/// The runtime for a run's actors. They need little: two workers. Walks
/// run on the runners' own threads and serial actions on the run's serial
/// thread (`runner::SerialThread`); the blocking pool is for the waits
/// that block (a stopping run's, a node's).
pub(crate) fn actor_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .thread_name("combtest")
        .enable_all()
        .build()
}

/// How held states are grouped: by [`Blocks::for_space`], no longer than
/// the batch cap, or one walk per block with a walk timeout (a batch is then
/// one walk, and a timeout blames only it).
pub(crate) fn blocks_for<S, K: StartKind<S>>(
    space: &crate::model::space::Space,
    runners: usize,
    options: &RunOptions<S, K>,
) -> Blocks {
    let blocks = Blocks::for_space(space, runners);
    match (options.walk_timeout, options.max_batch) {
        (Some(_), _) => Blocks::new(space.deepest_branch_len(), 1),
        // Batches of held states are whole blocks: a cap on batches is one
        // on blocks too.
        (None, Some(max)) => Blocks::new(space.deepest_branch_len(), blocks.block_len().min(max)),
        (None, None) => blocks,
    }
}

struct StopOnDrop(Option<ractor::ActorCell>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(cell) = self.0.take() {
            cell.stop(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::space::{EntryInfo, EntryKind, Space};

    #[test]
    fn a_batch_cap_caps_blocks_and_a_walk_timeout_makes_them_single() {
        let entry = |kind, n: u32| EntryInfo {
            name: "E",
            kind,
            options: (0..n).map(|i| i.to_string()).collect(),
        };
        // A serial action, then 4096 walks per branch: blocks of 512 for
        // 2 runners.
        let space =
            Space::new(vec![entry(EntryKind::Serial, 2), entry(EntryKind::Plain, 4096)]).unwrap();
        let options = RunOptions::new(0u32);
        assert_eq!(blocks_for(&space, 2, &options).block_len(), 512);
        assert_eq!(blocks_for(&space, 2, &options.clone().max_batch(16)).block_len(), 16);
        let timed = options.walk_timeout(Duration::from_secs(1));
        assert_eq!(blocks_for(&space, 2, &timed).block_len(), 1);
    }

    fn panic_text(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let panic = std::panic::catch_unwind(f).expect_err("check must panic");
        panic.downcast_ref::<String>().expect("a formatted panic message").clone()
    }

    #[test]
    fn check_panics_with_one_line_when_there_is_no_report() {
        let empty = WalkOrder::<u32>::new();
        assert_eq!(
            panic_text(|| {
                check(&empty, 0);
            }),
            "combtest: the walk order could not run: invalid walk order: the walk order is \
             empty: add at least one action with `then` or `serial`"
        );
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let inside = runtime.block_on(async {
            panic_text(|| {
                check(&crate::suites::smoke::order(), 0);
            })
        });
        assert_eq!(
            inside,
            "combtest: the walk order could not run: `run` cannot block inside an async \
             runtime: call `run_async(...).await` instead"
        );
    }
}
