//! WalkRunner: executes batches of walks.
//!
//! - Receives `RunBatch` from the Scheduler (at most the runner's credit of
//!   them at a time).
//! - Runs the batch on its own OS thread (started with the runner, ended
//!   with it), never on the async executor: user actions may block on I/O.
//!   A thread of its own, rather than tokio's blocking pool, means every
//!   runner's thread exists before the first batch (64 runners start their
//!   first walks together, not one thread creation after another), and a
//!   caller's runtime needs no blocking-pool sizing.
//! - With a log dir, encodes the batch's trace lines on the same runner
//!   thread and sends them to the TraceWriter, one message per batch, and
//!   waits until they are written (backpressure: at most one batch of lines
//!   per runner waits in the writer's mailbox).
//! - Sends `BatchOutcome` to the Collector (and the trace lines to the
//!   TraceWriter), then `BatchDone` to the Scheduler (in that order, so
//!   neither the report nor the trace misses an acknowledged batch).
//! - Supervised by the RunSupervisor. If an action panicked in the batch, the
//!   walk that panicked is already reported failed and the rest of the batch
//!   ran; the runner then fails on purpose, and the supervisor replaces it
//!   with a fresh one (a panic may leave thread-local or captured state of
//!   user code broken). Batches still queued in its mailbox are re-sent to
//!   the replacement by the Scheduler.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::actors::LOCAL_REPLY_TIMEOUT;
use crate::actors::collector::CollectorMsg;
use crate::actors::run_supervisor::RunSupervisorMsg;
use crate::actors::scheduler::{BatchJob, SchedulerMsg};
use crate::actors::trace_writer::TraceWriterMsg;
use crate::exec::{
    BatchInput, BatchSettings, Block, ErasedOrder, QuietPanics, WALK_TIMEOUT_ACTION, WalkOutcome,
    WalkRecord,
};
use crate::model::epoch::Epoch;
use crate::model::outcome::{Counts, FailedWalk};
use crate::model::space::Blocks;
use crate::model::space::WalkId;
use crate::model::trace::TraceEncoder;
use crate::store::StateStore;
use crate::trace::encode_batch;

/// Requests to a WalkRunner.
pub(crate) enum WalkRunnerMsg {
    /// Run this batch, then acknowledge it.
    RunBatch(BatchJob),
}

// Local only: never crosses a node.
impl ractor::Message for WalkRunnerMsg {}

/// What a runner needs, fixed for the run.
pub(crate) struct RunnerArgs<S> {
    pub(crate) index: usize,
    pub(crate) order: Arc<dyn ErasedOrder<S>>,
    /// This runner's own copy of the initial state (`S` need not be `Sync`);
    /// moved into the runner's state at start.
    pub(crate) initial: Option<S>,
    pub(crate) store: Arc<StateStore<S>>,
    pub(crate) blocks: Blocks,
    pub(crate) gather: bool,
    /// A batch running longer fails its walks (they run one per batch).
    pub(crate) walk_timeout: Option<std::time::Duration>,
    /// Where trace lines go, when the run has a log dir.
    pub(crate) trace: Option<RunnerTrace>,
    pub(crate) scheduler: ActorRef<SchedulerMsg>,
    pub(crate) collector: ActorRef<CollectorMsg<S>>,
    pub(crate) supervisor: ActorRef<RunSupervisorMsg>,
}

/// A runner's part of the trace.
pub(crate) struct RunnerTrace {
    pub(crate) encoder: Arc<TraceEncoder>,
    pub(crate) writer: ActorRef<TraceWriterMsg>,
}

pub(crate) struct WalkRunner<S>(std::marker::PhantomData<fn() -> S>);

impl<S> WalkRunner<S> {
    pub(crate) fn new() -> Self {
        WalkRunner(std::marker::PhantomData)
    }
}

pub(crate) struct RunnerState<S> {
    args: RunnerArgs<S>,
    /// The initial state, moved into the runner thread while a batch runs.
    initial: Option<S>,
    thread: RunnerThread,
}

/// A job for the runner thread.
type Job = Box<dyn FnOnce() + Send>;

/// The runner's own OS thread. It runs one job at a time and exits when the
/// runner (holding the sender) is dropped. Its channel is unbounded: safe,
/// because the runner sends a job only while it awaits the previous one.
#[derive(Clone)]
struct RunnerThread {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl RunnerThread {
    fn start(name: String) -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new().name(name).spawn(move || {
            // Every panic here is a walk's outcome, already in the report.
            let _quiet = QuietPanics::on_this_thread();
            for job in queue {
                job();
            }
        })?;
        Ok(RunnerThread { jobs })
    }

    /// Runs `work` on the thread and waits for its result. If the thread is
    /// gone (`work` panicked outside the executor's own panic handling), the
    /// runner fails and its supervisor replaces it.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ActorProcessingErr> {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = reply.send(work());
            }))
            .map_err(|_| "the runner thread has exited")?;
        Ok(result.await.map_err(|_| "the runner thread died running a batch")?)
    }
}

impl<S: Clone + Send + 'static> Actor for WalkRunner<S> {
    type Msg = WalkRunnerMsg;
    type State = RunnerState<S>;
    type Arguments = RunnerArgs<S>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        mut args: RunnerArgs<S>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let initial = args.initial.take();
        let thread = RunnerThread::start(format!("combtest-runner-{}", args.index))?;
        Ok(RunnerState { args, initial, thread })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WalkRunnerMsg::RunBatch(job) => run_batch(state, job).await,
        }
    }
}

async fn run_batch<S: Clone + Send + 'static>(
    state: &mut RunnerState<S>,
    job: BatchJob,
) -> Result<(), ActorProcessingErr> {
    // No borrow of `state` may live across the await below: `S` need not be
    // `Sync`.
    let args = &state.args;
    let input = if job.epoch.first {
        BatchInput::Fresh(job.ranges.clone())
    } else {
        match args.store.take_all(&job.ranges, args.blocks) {
            Ok(blocks) => BatchInput::Held(blocks),
            Err(start) => {
                let reason = format!("walk states of block starting at walk {start} were lost");
                args.supervisor.cast(RunSupervisorMsg::Fatal(reason))?;
                return Ok(());
            }
        }
    };
    let order = Arc::clone(&args.order);
    let initial = state.initial.take().expect("the initial state is back after every batch");
    let encoder = args.trace.as_ref().map(|t| Arc::clone(&t.encoder));
    let settings =
        BatchSettings { blocks: args.blocks, gather: args.gather, trace: encoder.is_some() };
    let epoch = Arc::clone(&job.epoch);
    let instruction = Arc::clone(&job.instruction);
    let runner = format!("local/{}", args.index);
    let thread = state.thread.clone();
    // With a walk timeout, which walks of the batch are live (for a stuck
    // batch, those are the ones that time out).
    let live: Vec<u64> = match (&args.walk_timeout, &input) {
        (None, _) => Vec::new(),
        (Some(_), BatchInput::Fresh(ranges)) => ranges.iter().flat_map(|r| r.clone()).collect(),
        (Some(_), BatchInput::Held(blocks)) => blocks.iter().flat_map(Block::live_ids).collect(),
    };
    // What a timeout needs, owned: no borrow of `state` crosses an await.
    let on_timeout = Stuck {
        index: args.index,
        blocks: args.blocks,
        store: Arc::clone(&args.store),
        collector: args.collector.clone(),
        trace: args.trace.as_ref().map(|t| (Arc::clone(&t.encoder), t.writer.clone())),
        scheduler: args.scheduler.clone(),
    };
    let work = thread.run(move || {
        let out = order.execute(&epoch, &instruction, input, &initial, settings);
        let mut out = out;
        let mut lines = Vec::new();
        if let Some(encoder) = encoder {
            let started = std::time::Instant::now();
            encode_batch(&encoder, &out.records, &runner, &mut lines);
            // Batch sizing sees the whole per-walk cost, encoding included.
            out.nanos += started.elapsed().as_nanos() as u64;
        }
        (initial, out, lines)
    });
    let finished = match args.walk_timeout {
        None => work.await?,
        Some(timeout) => match tokio::time::timeout(timeout, work).await {
            Ok(finished) => finished?,
            Err(_) => {
                // The thread is stuck in user code: report its walks failed,
                // free their place in the store, and let the supervisor
                // replace this runner (the thread is abandoned).
                on_timeout.report(&job, &live, timeout).await?;
                return Err(format!(
                    "a walk timed out after {}; replacing runner",
                    humantime::format_duration(timeout)
                )
                .into());
            }
        },
    };
    let (initial, mut out, lines) = finished;
    state.initial = Some(initial);
    let args = &state.args;
    if !out.held.is_empty() {
        args.store.put(out.held);
    }
    args.collector.cast(CollectorMsg::BatchOutcome {
        counts: out.counts,
        failed: out.failed,
        finals: out.finals,
    })?;
    if let Some(writer) = args.trace.as_ref().map(|t| t.writer.clone()) {
        let supervisor = args.supervisor.clone();
        let failed_nanos = out
            .records
            .iter()
            .filter(|r| matches!(r.outcome, WalkOutcome::Failed { .. }))
            .map(|r| (r.id.0, r.nanos))
            .collect();
        let records = std::mem::take(&mut out.records).len() as u64;
        // Wait until the lines are written: each runner has at most one
        // batch of lines in the writer's mailbox, and a writer slower than
        // the runners slows them down instead of piling lines up in memory.
        let written = writer
            .call(
                |written| TraceWriterMsg::Batch { lines, records, failed_nanos, written },
                Some(LOCAL_REPLY_TIMEOUT),
            )
            .await?;
        if !matches!(written, ractor::rpc::CallResult::Success(())) {
            let reason = "the trace writer did not take a batch in time".to_string();
            supervisor.cast(RunSupervisorMsg::Fatal(reason))?;
            return Ok(());
        }
    }
    let args = &state.args;
    tracing::trace!(
        runner = args.index,
        batch = ?job.id,
        walks = out.walks,
        micros = out.nanos / 1000,
        "batch done"
    );
    args.scheduler.cast(SchedulerMsg::BatchDone {
        slot: args.index,
        batch: job.id,
        walks: out.walks,
        nanos: out.nanos,
        live: None,
    })?;
    match out.panic {
        Some(message) => Err(format!("an action panicked ({message}); replacing runner").into()),
        None => Ok(()),
    }
}

/// The failure a walk timeout gives.
pub(crate) fn timeout_error(timeout: std::time::Duration) -> String {
    format!("timed out after {}", humantime::format_duration(timeout))
}

/// The walks `ids` of `epoch` timed out: their failures and trace records.
pub(crate) fn timed_out_walks(
    epoch: &Epoch,
    ids: &[u64],
    timeout: std::time::Duration,
) -> (Counts, Vec<FailedWalk>, Vec<WalkRecord>) {
    failed_walks(epoch, ids, WALK_TIMEOUT_ACTION, &timeout_error(timeout), timeout)
}

/// The walks `ids` of `epoch` failed outside the executor (a timeout, a
/// crashed node): their failures and trace records, blaming `action`.
pub(crate) fn failed_walks(
    epoch: &Epoch,
    ids: &[u64],
    action: &'static str,
    error: &str,
    took: std::time::Duration,
) -> (Counts, Vec<FailedWalk>, Vec<WalkRecord>) {
    let action_index = epoch.serial.map_or(epoch.plain.start, |s| s.position);
    let error = error.to_string();
    let counts =
        Counts { failed: ids.len() as u64, segments: ids.len() as u64, ..Counts::default() };
    let failed = ids
        .iter()
        .map(|&id| FailedWalk { walk_id: WalkId(id), action_index, action, error: error.clone() })
        .collect();
    let records = ids
        .iter()
        .map(|&id| WalkRecord {
            id: WalkId(id),
            outcome: WalkOutcome::Failed { action_index, action, error: error.clone() },
            nanos: took.as_nanos() as u64,
        })
        .collect();
    (counts, failed, records)
}

/// A runner's outlets, for a batch stuck past its walk timeout.
struct Stuck<S> {
    index: usize,
    blocks: crate::model::space::Blocks,
    store: Arc<StateStore<S>>,
    collector: ActorRef<CollectorMsg<S>>,
    trace: Option<(Arc<TraceEncoder>, ActorRef<TraceWriterMsg>)>,
    scheduler: ActorRef<SchedulerMsg>,
}

impl<S: Send + 'static> Stuck<S> {
    /// Reports a stuck batch: its live walks failed, tombstones where their
    /// held states were (later epochs skip them), the trace lines, then the
    /// acknowledgement.
    async fn report(
        &self,
        job: &BatchJob,
        live: &[u64],
        timeout: std::time::Duration,
    ) -> Result<(), ActorProcessingErr> {
        tracing::warn!(runner = self.index, walks = ?live, "{}", timeout_error(timeout));
        if !job.epoch.last {
            let tombstones = job
                .ranges
                .iter()
                .flat_map(|r| self.blocks.split(r.clone()))
                .map(Block::tombstone)
                .collect();
            self.store.put(tombstones);
        }
        let (counts, failed, records) = timed_out_walks(&job.epoch, live, timeout);
        self.collector.cast(CollectorMsg::BatchOutcome { counts, failed, finals: Vec::new() })?;
        if let Some((encoder, writer)) = &self.trace {
            let mut lines = Vec::new();
            encode_batch(encoder, &records, &format!("local/{}", self.index), &mut lines);
            let failed_nanos = records.iter().map(|r| (r.id.0, r.nanos)).collect();
            let records = records.len() as u64;
            writer
                .call(
                    |written| TraceWriterMsg::Batch { lines, records, failed_nanos, written },
                    Some(LOCAL_REPLY_TIMEOUT),
                )
                .await?;
        }
        self.scheduler.cast(SchedulerMsg::BatchDone {
            slot: self.index,
            batch: job.id,
            walks: job.walks(),
            nanos: timeout.as_nanos() as u64,
            live: None,
        })?;
        Ok(())
    }
}
