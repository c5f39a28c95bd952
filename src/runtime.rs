//! Running a walk order: [`run`] (blocking) and [`run_async`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::Actor;
use thiserror::Error;
use tokio::sync::oneshot;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::actors::collector::Progress;
use crate::actors::node_link::{Trouble, call, log_node_lines};
use crate::actors::run_supervisor::{NodeWorkers, Rejoin, RunContext, RunSupervisor, Workers};
use crate::cluster::connect::Connection;
use crate::cluster::wire::{self, Hello, PROTOCOL_VERSION, Reply, Request};
use crate::cluster::{ClusterError, ClusterOptions, LocalNodes, RemoteNode};
use crate::exec::{ErasedOrder, Runnable};
use crate::model::outcome::Report;
use crate::model::sample::{SampleError, WalkSample};
use crate::model::space::Blocks;
use crate::model::space::OrderError;
use crate::model::trace::{RoundTag, TraceEncoder};
use crate::order::{Chain, WalkOrder};
use crate::trace::{RunId, TraceError, TraceTarget, option_json};

/// How to run a walk order.
#[derive(Debug, Clone)]
pub struct RunOptions<S> {
    initial: S,
    threads: Option<usize>,
    gather_states: bool,
    log_dir: Option<PathBuf>,
    run_id: Option<RunId>,
    name: Option<String>,
    max_batch: Option<u64>,
    sample: Option<WalkSample>,
    walk_timeout: Option<Duration>,
    append: Option<RoundTrace>,
    interrupt: Option<Arc<std::sync::atomic::AtomicBool>>,
    progress: Option<Arc<Progress>>,
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

impl<S: Default> Default for RunOptions<S> {
    fn default() -> Self {
        RunOptions::new(S::default())
    }
}

impl<S> RunOptions<S> {
    /// Every walk starts from a clone of `initial`.
    pub fn new(initial: S) -> Self {
        RunOptions {
            initial,
            threads: None,
            gather_states: false,
            log_dir: None,
            run_id: None,
            name: None,
            max_batch: None,
            sample: None,
            walk_timeout: None,
            append: None,
            interrupt: None,
            progress: None,
        }
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

    /// The runner threads this run will use.
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

    /// Stops dispatching when `flag` is set; the run then ends with
    /// [`RunError::Interrupted`] once the walks in flight are done.
    pub(crate) fn interrupt(mut self, flag: Option<Arc<std::sync::atomic::AtomicBool>>) -> Self {
        self.interrupt = flag;
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
    /// The run was interrupted (a soak's Ctrl-C or deadline): no batch was
    /// dispatched after that; `report` counts the walks that ended.
    #[error("the run was interrupted")]
    Interrupted {
        /// The walks that ended before the interrupt (not every walk).
        report: Box<Report>,
    },
    /// A cluster run could not start: a node is unreachable, has another
    /// cookie, or refused the run.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Every node of a cluster run was lost; `report` has what was
    /// accounted for until then (it does not cover every walk).
    #[error("{reason}; the run is incomplete")]
    AllNodesLost {
        /// Which node went last, and why.
        reason: String,
        /// The walks accounted for before that.
        report: Option<Box<Report>>,
    },
}

/// Runs every walk of `order`, blocking until the report is ready. Creates
/// its own async runtime; from async code, use [`run_async`].
pub fn run<S, C>(order: &WalkOrder<S, C>, options: RunOptions<S>) -> Result<Report<S>, RunError>
where
    S: Clone + Send + 'static,
    C: Chain<S>,
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
pub async fn run_async<S, C>(
    order: &WalkOrder<S, C>,
    options: RunOptions<S>,
) -> Result<Report<S>, RunError>
where
    S: Clone + Send + 'static,
    C: Chain<S>,
{
    let started = Instant::now();
    let threads = options.effective_threads();
    if threads == 0 || threads > MAX_THREADS {
        return Err(RunError::InvalidThreads(threads));
    }
    let runnable: Arc<dyn ErasedOrder<S>> = Arc::new(Runnable::new(order.clone())?);
    let space = runnable.space().clone();
    let values = match options.log_dir.is_some() || options.append.is_some() {
        true => Some(option_json(order, &space)?),
        false => None,
    };
    let blocks = blocks_for(&space, threads, &options);
    run_erased(runnable, values, options, Workers::Threads(threads), blocks, started).await
}

/// A run on any workers: the part shared by in-process and cluster runs.
async fn run_erased<S: Clone + Send + 'static>(
    runnable: Arc<dyn ErasedOrder<S>>,
    values: Option<crate::model::trace::OptionJson>,
    options: RunOptions<S>,
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
    let (reply, report) = oneshot::channel();
    let context = RunContext {
        order: runnable,
        initial: options.initial,
        workers,
        blocks,
        // One walk per batch: a timeout then blames one walk.
        max_batch: if options.walk_timeout.is_some() { Some(1) } else { options.max_batch },
        interrupt: options.interrupt.clone(),
        progress: options.progress.clone(),
        sample: options.sample,
        walk_timeout: options.walk_timeout,
        gather: options.gather_states,
        trace,
        reply,
    };
    let (supervisor, handle) = Actor::spawn(None, RunSupervisor::new(), context)
        .await
        .map_err(|e| RunError::Internal(format!("could not start the run: {e}")))?;
    // If this future is dropped mid-run, stop the actors with it.
    let guard = StopOnDrop(Some(supervisor.get_cell()));
    let result = report.await.unwrap_or_else(|_| {
        Err(RunError::Internal("the run supervisor stopped without a report".to_string()))
    });
    drop(guard);
    let _ = handle.await;
    let (mut report, totals) = result?;
    if !report.is_consistent() {
        // Never hand over a report that loses or double-counts a walk.
        return Err(RunError::Internal(format!(
            "the report does not account for every walk exactly once: {} walks, {} passed, \
             {} failed ({} listed), {} cancelled, {} pruned, {} aborted",
            report.walks,
            report.passed,
            report.failed,
            report.failed_walks.len(),
            report.cancelled,
            report.pruned,
            report.aborted
        )));
    }
    report.elapsed = started.elapsed();
    tracing::info!(
        walks = report.walks,
        passed = report.passed,
        failed = report.failed,
        aborted = report.aborted,
        elapsed_s = report.elapsed.as_secs_f64(),
        "run ends"
    );
    if session.is_some() || append {
        let totals = totals.unwrap_or_default();
        if totals.records != report.walks - report.aborted {
            return Err(RunError::Internal(format!(
                "the trace holds {} records for {} walks that ended",
                totals.records,
                report.walks - report.aborted
            )));
        }
        if let Some(session) = session {
            report.run_dir = Some(session.finish(&report, &space, &totals)?);
        }
    }
    Ok(report)
}

/// Runs `order` on the nodes of `cluster`, each of which serves `suite`
/// (the same build: the handshake compares walk-order fingerprints). Each
/// node builds its own initial state with the suite's setup; `options`'
/// initial state is not used. Blocking, like [`run`].
pub(crate) fn run_cluster<S, C>(
    order: &WalkOrder<S, C>,
    options: RunOptions<S>,
    cluster: &ClusterOptions,
    suite: &str,
) -> Result<Report<S>, RunError>
where
    S: Clone + Send + Serialize + DeserializeOwned + 'static,
    C: Chain<S>,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(RunError::InsideRuntime);
    }
    let started = Instant::now();
    let runnable: Arc<dyn ErasedOrder<S>> = Arc::new(Runnable::new(order.clone())?);
    let space = runnable.space().clone();
    let values = option_json(order, &space)?;
    let fingerprint = crate::model::trace::fingerprint(&space, &values);
    // Local nodes first: they are processes, started and awaited here.
    let program = match &cluster.program {
        Some(program) => program.clone(),
        None => std::env::current_exe()
            .map_err(|e| ClusterError::Local(format!("cannot find this program: {e}")))?,
    };
    let mut addresses = cluster.nodes.clone();
    let cookie = crate::cluster::effective_cookie(cluster.cookie.as_deref(), &addresses)?;
    let local = match cluster.local_nodes {
        0 => None,
        count => Some(LocalNodes::spawn(count, program, &cookie, cluster.node_threads)?),
    };
    if let Some(local) = &local {
        addresses.extend(local.addresses().iter().cloned());
    }
    if addresses.is_empty() {
        return Err(ClusterError::Local("a cluster run needs at least one node".to_string()).into());
    }
    let runtime = actor_runtime()?;
    let result = runtime.block_on(async {
        let connection = Arc::new(Connection::open(&addresses, &cookie).await?);
        let run_id = options.run_id.unwrap_or_else(RunId::new);
        let options = options.run_id(run_id);
        let run = run_id.as_u128();
        let per_node = cluster.node_threads.unwrap_or_else(default_threads);
        let blocks = blocks_for(&space, per_node * connection.nodes.len(), &options);
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            suite: suite.to_string(),
            fingerprint,
            run,
            runners: cluster.node_threads.map(|t| t as u32),
            blocks,
            gather: options.gather_states,
            trace: options.log_dir.is_some() || options.append.is_some(),
            round: options.append.as_ref().map(|a| a.tag),
            log_level: crate::cluster::logs::current_level(),
            lease_ms: cluster.heartbeat_timeout.as_millis() as u64,
            // Until the links start pinging: every node opens the run first.
            grace_ms: (OPEN_TIMEOUT * 2).as_millis() as u64,
        };
        let (nodes, refused) = handshake(&connection, &hello).await;
        let result = match refused {
            Some(error) => Err(error.into()),
            None => {
                let workers = Workers::Nodes(Box::new(NodeWorkers {
                    nodes: nodes.clone(),
                    run,
                    decode_state: decode_postcard::<S>,
                    heartbeat_timeout: cluster.heartbeat_timeout,
                    rejoin: cluster.respawn.as_ref().map(|respawn| Rejoin {
                        respawn: Arc::clone(respawn),
                        connection: Arc::clone(&connection),
                        hello: hello.clone(),
                    }),
                }));
                let traced = options.log_dir.is_some() || options.append.is_some();
                let values = traced.then_some(values);
                run_erased(runnable, values, options, workers, blocks, started).await
            }
        };
        // Collect the nodes' last log lines, and tell them the run is over
        // (they also drop it on their own once the coordinator goes silent).
        let last = Some(Duration::from_secs(5));
        let ping = wire::encode(&Request::Ping { run });
        let end = wire::encode(&Request::EndRun { run });
        for (node, _) in &nodes {
            if let Ok(Reply::Pong { logs, dropped }) = call(&node.agent, ping.clone(), last).await {
                log_node_lines(&node.name, logs, dropped);
            }
            let _ = call(&node.agent, end.clone(), last).await;
        }
        connection.close().await;
        result
    });
    // Let the cluster layer's actors finish stopping: the next run (a soak's
    // next round) must not meet this one's leftovers.
    runtime.shutdown_timeout(Duration::from_secs(2));
    drop(local);
    result
}

/// The runtime for a run's actors. They need little: two workers. Walks
/// run on the runners' own threads; serial actions on the blocking pool,
/// one at a time.
fn actor_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .thread_name("combtest")
        .enable_all()
        .build()
}

/// How long a node may take to open a run: the suite's setup runs then.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens the run on every node, all at once: the nodes that took it, with
/// their runner threads, and the first refusal, if any (the run must then
/// not start; the nodes that took it are told to end it).
async fn handshake(
    connection: &Connection,
    hello: &Hello,
) -> (Vec<(RemoteNode, usize)>, Option<ClusterError>) {
    let request = wire::encode(&Request::Hello(hello.clone()));
    let answers = futures::future::join_all(
        connection.nodes.iter().map(|node| call(&node.agent, request.clone(), Some(OPEN_TIMEOUT))),
    )
    .await;
    let mut nodes = Vec::new();
    let mut refusal = None;
    for (node, answer) in connection.nodes.iter().zip(answers) {
        let refused = match answer {
            Ok(Reply::Welcome { node: name, runners }) => {
                let mut node = node.clone();
                node.name = name;
                nodes.push((node, runners as usize));
                continue;
            }
            Ok(Reply::Refused(reason)) => ClusterError::Refused { node: node.name.clone(), reason },
            Ok(other) => ClusterError::Refused {
                node: node.name.clone(),
                reason: format!("unexpected answer to the handshake: {other:?}"),
            },
            // A node of another protocol version answers in a form this
            // build cannot read: the decoding error names both versions.
            Err(Trouble::Broken(reason)) => {
                ClusterError::Refused { node: node.name.clone(), reason }
            }
            Err(Trouble::Lost(reason)) => {
                ClusterError::Unreachable { address: node.name.clone(), reason }
            }
            Err(Trouble::TimedOut(_)) => ClusterError::Unreachable {
                address: node.name.clone(),
                reason: "no answer to the handshake in time".to_string(),
            },
        };
        refusal.get_or_insert(refused);
    }
    (nodes, refusal)
}

/// How held states are grouped: by [`Blocks::for_space`], no longer than
/// the batch cap, or one walk per block with a walk timeout (a batch is then
/// one walk, and a timeout blames only it).
fn blocks_for<S>(
    space: &crate::model::space::Space,
    runners: usize,
    options: &RunOptions<S>,
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

/// Decodes a walk state sent by a node.
fn decode_postcard<S: DeserializeOwned>(bytes: &[u8]) -> postcard::Result<S> {
    postcard::from_bytes(bytes)
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
}
