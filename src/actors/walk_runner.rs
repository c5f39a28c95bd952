//! WalkRunner: executes batches of walks.
//!
//! - Receives `RunBatch` from the Scheduler (at most the runner's credit of
//!   them at a time) and queues it on its own OS thread at once, so the
//!   thread goes from one batch to the next without waiting for this
//!   actor's task to be scheduled.
//! - The thread (started with the runner, ended with it) runs batches, never
//!   the async executor: user actions may block on I/O. A thread of its
//!   own, rather than tokio's blocking pool, means every runner's thread
//!   exists before the first batch (64 runners start their first walks
//!   together, not one thread creation after another), and a caller's
//!   runtime needs no blocking-pool sizing.
//! - Per batch, the thread takes the held states from the store, runs the
//!   walks, encodes the trace lines (with a log dir), puts the states that
//!   go on back into the store, sends `BatchOutcome` to the Collector, then
//!   `Finished` to this runner. The runner sends the trace lines to the
//!   TraceWriter and waits until they are written (backpressure: at most
//!   the runner's credit of batches of lines wait), then `BatchDone` to the
//!   Scheduler. So neither the next epoch, the report nor the trace misses
//!   an acknowledged batch.
//! - Supervised by the RunSupervisor. If an action panicked in the batch, the
//!   walk that panicked is already reported failed and the rest of the batch
//!   ran; the thread stops taking batches and the runner fails on purpose,
//!   and the supervisor replaces it with a fresh one and a new thread (a
//!   panic may leave thread-local or captured state of user code broken).
//!   Batches still queued in its mailbox or its thread's queue never
//!   started; the Scheduler re-sends them to the replacement.
//! - The runner fails only when its thread can no longer be running a
//!   batch (after a panic, or when the thread died): a replacement must
//!   never run a batch the old thread is still running. Any other trouble
//!   (the writer or the Scheduler gone) ends the run (`Fatal`) instead.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::actors::LOCAL_REPLY_TIMEOUT;
use crate::actors::collector::CollectorMsg;
use crate::actors::run_supervisor::RunSupervisorMsg;
use crate::actors::scheduler::{BatchJob, SchedulerMsg};
use crate::actors::trace_writer::TraceWriterMsg;
use crate::exec::{
    BatchInput, BatchOutput, BatchSettings, Block, ErasedOrder, QuietPanics, WALK_TIMEOUT_ACTION,
    WalkOutcome, WalkRecord, panic_message,
};
use crate::model::epoch::Epoch;
use crate::model::outcome::{Counts, FailedWalk};
use crate::model::space::Blocks;
use crate::model::space::WalkId;
use crate::model::trace::TraceEncoder;
use crate::store::StateStore;
use crate::trace::encode_batch;

/// Requests to a WalkRunner, and its thread's answers.
pub(crate) enum WalkRunnerMsg {
    /// Run this batch, then acknowledge it (from the Scheduler).
    RunBatch(BatchJob),
    /// The runner's thread ran a batch, stored the states that go on and
    /// sent the outcome to the Collector: acknowledge it.
    Finished(Box<Finished>),
    /// The runner's thread ended on a panic outside the executor's own
    /// handling (a combtest bug): the runner fails and is replaced.
    ThreadDied(String),
}

// Local only: never crosses a node.
impl ractor::Message for WalkRunnerMsg {}

/// What is left to do for a batch once its outcome is with the Collector.
pub(crate) struct Finished {
    job: BatchJob,
    walks: u64,
    nanos: u64,
    /// The first panic of an action in the batch.
    panic: Option<String>,
    /// The batch's trace lines, when the run has a log dir.
    trace: Option<TraceLines>,
}

/// A batch's lines for the TraceWriter.
struct TraceLines {
    lines: Vec<u8>,
    records: u64,
    failed_nanos: Vec<(u64, u64)>,
}

/// What a runner needs, fixed for the run.
pub(crate) struct RunnerArgs<S> {
    pub(crate) index: usize,
    pub(crate) order: Arc<dyn ErasedOrder<S>>,
    /// This runner's own copy of the initial state (`S` need not be `Sync`);
    /// moved into the runner's thread at start.
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
    batches: Arc<Batches<S>>,
    acks: Acks,
    thread: RunnerThread<S>,
}

/// Where a runner acknowledges its batches (`Sync`, unlike the runner's
/// arguments, so it may be held across an await).
struct Acks {
    index: usize,
    writer: Option<ActorRef<TraceWriterMsg>>,
    scheduler: ActorRef<SchedulerMsg>,
    supervisor: ActorRef<RunSupervisorMsg>,
}

/// A job for the runner thread, given the initial state the thread owns.
type Job<S> = Box<dyn FnOnce(&S) -> Next + Send>;

/// Whether the runner thread takes another job.
enum Next {
    Go,
    /// An action panicked: the runner is about to be replaced, so a batch
    /// queued behind this one must not start here (the Scheduler re-sends
    /// it to the replacement).
    Stop,
}

/// The runner's own OS thread. It runs its jobs in order, back to back,
/// and ends when the runner is gone (or after a job says `Stop`). Its
/// channel is unbounded: safe, because the runner is sent at most its
/// credit of batches at a time.
struct RunnerThread<S> {
    jobs: std::sync::mpsc::Sender<Job<S>>,
    /// Set when the runner is dropped: the thread then starts nothing more,
    /// even a job already queued.
    retired: Arc<AtomicBool>,
}

impl<S: Send + 'static> RunnerThread<S> {
    fn start(name: String, initial: S, runner: ActorRef<WalkRunnerMsg>) -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job<S>>();
        let retired = Arc::new(AtomicBool::new(false));
        let gone = Arc::clone(&retired);
        std::thread::Builder::new().name(name).spawn(move || {
            // Every panic here is a walk's outcome, already in the report.
            let _quiet = QuietPanics::on_this_thread();
            for job in queue {
                if gone.load(Ordering::Acquire) {
                    break;
                }
                match catch_unwind(AssertUnwindSafe(|| job(&initial))) {
                    Ok(Next::Go) => {}
                    Ok(Next::Stop) => break,
                    Err(payload) => {
                        let _ = runner.cast(WalkRunnerMsg::ThreadDied(panic_message(payload)));
                        break;
                    }
                }
            }
        })?;
        Ok(RunnerThread { jobs, retired })
    }

    /// Queues a job; false if the thread has ended.
    fn send(&self, job: Job<S>) -> bool {
        self.jobs.send(job).is_ok()
    }
}

impl<S> Drop for RunnerThread<S> {
    fn drop(&mut self) {
        self.retired.store(true, Ordering::Release);
    }
}

/// What the runner thread needs to run batches, fixed for the run.
struct Batches<S> {
    /// The runner's name in trace lines (`local/<index>`).
    name: String,
    order: Arc<dyn ErasedOrder<S>>,
    store: Arc<StateStore<S>>,
    settings: BatchSettings,
    encoder: Option<Arc<TraceEncoder>>,
    collector: ActorRef<CollectorMsg<S>>,
    supervisor: ActorRef<RunSupervisorMsg>,
    /// The runner itself, which the thread tells when a batch is done.
    runner: ActorRef<WalkRunnerMsg>,
}

impl<S: Clone + Send + 'static> Batches<S> {
    /// The batch's walks: fresh, or their held states taken from the store.
    /// A block that is not there ends the run (`Fatal`): a report without
    /// its walks would be wrong.
    fn input(&self, job: &BatchJob) -> Option<BatchInput<S>> {
        if job.epoch.first {
            return Some(BatchInput::Fresh(job.ranges.clone()));
        }
        match self.store.take_all(&job.ranges, self.settings.blocks) {
            Ok(blocks) => Some(BatchInput::Held(blocks)),
            Err(start) => {
                let reason = format!("walk states of block starting at walk {start} were lost");
                let _ = self.supervisor.cast(RunSupervisorMsg::Fatal(reason));
                None
            }
        }
    }

    /// Runs the batch on the calling thread and, with a log dir, encodes
    /// its trace lines (on the same thread).
    fn execute(&self, job: &BatchJob, input: BatchInput<S>, initial: &S) -> Ran<S> {
        let mut out =
            self.order.execute(&job.epoch, &job.instruction, input, initial, self.settings);
        let mut lines = Vec::new();
        if let Some(encoder) = &self.encoder {
            let started = std::time::Instant::now();
            encode_batch(encoder, &out.records, &self.name, &mut lines);
            // Batch sizing sees the whole per-walk cost, encoding included.
            out.nanos += started.elapsed().as_nanos() as u64;
        }
        Ran { out, lines }
    }

    /// Puts the states that go on into the store and the outcome to the
    /// Collector (before the batch is acknowledged, so neither the next
    /// epoch nor the report can miss them).
    fn settle(&self, job: BatchJob, ran: Ran<S>) -> Finished {
        let Ran { mut out, lines } = ran;
        if !out.held.is_empty() {
            self.store.put(std::mem::take(&mut out.held));
        }
        let trace = self.encoder.as_ref().map(|_| TraceLines {
            lines,
            records: out.records.len() as u64,
            failed_nanos: out
                .records
                .iter()
                .filter(|r| matches!(r.outcome, WalkOutcome::Failed { .. }))
                .map(|r| (r.id.0, r.nanos))
                .collect(),
        });
        // A Collector that is gone means the run is ending already.
        let _ = self.collector.cast(CollectorMsg::BatchOutcome {
            counts: out.counts,
            failed: out.failed,
            finals: out.finals,
        });
        Finished { job, walks: out.walks, nanos: out.nanos, panic: out.panic, trace }
    }
}

/// A batch that ran, not yet settled.
struct Ran<S> {
    out: BatchOutput<S>,
    lines: Vec<u8>,
}

impl<S: Clone + Send + 'static> Actor for WalkRunner<S> {
    type Msg = WalkRunnerMsg;
    type State = RunnerState<S>;
    type Arguments = RunnerArgs<S>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        mut args: RunnerArgs<S>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let initial = args.initial.take().ok_or("a runner starts with its initial state")?;
        let encoder = args.trace.as_ref().map(|t| Arc::clone(&t.encoder));
        let batches = Arc::new(Batches {
            name: format!("local/{}", args.index),
            order: Arc::clone(&args.order),
            store: Arc::clone(&args.store),
            settings: BatchSettings {
                blocks: args.blocks,
                gather: args.gather,
                trace: encoder.is_some(),
            },
            encoder,
            collector: args.collector.clone(),
            supervisor: args.supervisor.clone(),
            runner: myself.clone(),
        });
        let acks = Acks {
            index: args.index,
            writer: args.trace.as_ref().map(|t| t.writer.clone()),
            scheduler: args.scheduler.clone(),
            supervisor: args.supervisor.clone(),
        };
        let name = format!("combtest-runner-{}", args.index);
        let thread = RunnerThread::start(name, initial, myself)?;
        Ok(RunnerState { args, batches, acks, thread })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WalkRunnerMsg::RunBatch(job) => match state.args.walk_timeout {
                None => {
                    queue_batch(state, job);
                    Ok(())
                }
                Some(timeout) => run_batch_within(state, job, timeout).await,
            },
            WalkRunnerMsg::Finished(finished) => {
                let acks = &state.acks;
                match acknowledge(acks, *finished).await {
                    Ok(None) => Ok(()),
                    Ok(Some(panic)) => {
                        Err(format!("an action panicked ({panic}); replacing runner").into())
                    }
                    // The thread may be running the next batch: this runner
                    // must not be replaced (the batch would run twice), so
                    // the run ends instead.
                    Err(error) => {
                        let reason = format!("runner {} cannot acknowledge: {error}", acks.index);
                        let _ = acks.supervisor.cast(RunSupervisorMsg::Fatal(reason));
                        Ok(())
                    }
                }
            }
            WalkRunnerMsg::ThreadDied(message) => {
                Err(format!("the runner thread died: {message}").into())
            }
        }
    }
}

/// Queues a batch on the runner's thread, which runs it as soon as the
/// batch before it is done, settles it and sends `Finished`.
fn queue_batch<S: Clone + Send + 'static>(state: &RunnerState<S>, job: BatchJob) {
    let batches = Arc::clone(&state.batches);
    let id = job.id;
    let queued = state.thread.send(Box::new(move |initial: &S| {
        let Some(input) = batches.input(&job) else { return Next::Go };
        let ran = batches.execute(&job, input, initial);
        let finished = batches.settle(job, ran);
        let next = if finished.panic.is_some() { Next::Stop } else { Next::Go };
        let _ = batches.runner.cast(WalkRunnerMsg::Finished(Box::new(finished)));
        next
    }));
    if !queued {
        // The thread stopped after a panic (its `Finished` is on the way
        // and fails this runner): the batch stays outstanding, and the
        // Scheduler re-sends it to the replacement.
        tracing::debug!(runner = state.args.index, batch = ?id, "runner thread gone; batch left");
    }
}

/// Runs one batch (one walk, with a walk timeout) on the runner's thread
/// and waits for it at most `timeout`. A batch stuck past it has its walks
/// failed and the runner replaced (the thread, stuck in user code, is
/// abandoned); nothing was queued behind it.
async fn run_batch_within<S: Clone + Send + 'static>(
    state: &mut RunnerState<S>,
    job: BatchJob,
    timeout: std::time::Duration,
) -> Result<(), ActorProcessingErr> {
    let Some(input) = state.batches.input(&job) else { return Ok(()) };
    // The batch's live walks: those that time out if it is stuck.
    let live: Vec<u64> = match &input {
        BatchInput::Fresh(ranges) => ranges.iter().flat_map(|r| r.clone()).collect(),
        BatchInput::Held(blocks) => blocks.iter().flat_map(Block::live_ids).collect(),
    };
    let args = &state.args;
    // What a timeout needs, owned: no borrow of `state` crosses an await.
    let on_timeout = Stuck {
        index: args.index,
        blocks: args.blocks,
        store: Arc::clone(&args.store),
        collector: args.collector.clone(),
        trace: args.trace.as_ref().map(|t| (Arc::clone(&t.encoder), t.writer.clone())),
        scheduler: args.scheduler.clone(),
    };
    let (reply, result) = tokio::sync::oneshot::channel();
    let batches = Arc::clone(&state.batches);
    let ran_job = job.clone();
    let sent = state.thread.send(Box::new(move |initial: &S| {
        let ran = batches.execute(&ran_job, input, initial);
        let next = if ran.out.panic.is_some() { Next::Stop } else { Next::Go };
        let _ = reply.send(ran);
        next
    }));
    if !sent {
        return Err("the runner thread has exited".into());
    }
    let ran = match tokio::time::timeout(timeout, result).await {
        Ok(Ok(ran)) => ran,
        Ok(Err(_)) => return Err("the runner thread died running a batch".into()),
        Err(_) => {
            on_timeout.report(&job, &live, timeout).await?;
            return Err(format!(
                "a walk timed out after {}; replacing runner",
                humantime::format_duration(timeout)
            )
            .into());
        }
    };
    let finished = state.batches.settle(job, ran);
    match acknowledge(&state.acks, finished).await? {
        Some(panic) => Err(format!("an action panicked ({panic}); replacing runner").into()),
        None => Ok(()),
    }
}

/// Acknowledges a settled batch: its trace lines to the TraceWriter
/// (waiting until they are written), then `BatchDone` to the Scheduler.
/// Returns the batch's first panic, if an action panicked (the runner then
/// fails on purpose).
async fn acknowledge(
    args: &Acks,
    finished: Finished,
) -> Result<Option<String>, ActorProcessingErr> {
    let Finished { job, walks, nanos, panic, trace } = finished;
    if let (Some(writer), Some(TraceLines { lines, records, failed_nanos })) = (&args.writer, trace)
    {
        // Wait until the lines are written: each runner has at most its
        // credit of batches of lines waiting, and a writer slower than the
        // runners slows them down instead of piling lines up in memory.
        let written = writer
            .call(
                |written| TraceWriterMsg::Batch { lines, records, failed_nanos, written },
                Some(LOCAL_REPLY_TIMEOUT),
            )
            .await?;
        if !matches!(written, ractor::rpc::CallResult::Success(())) {
            let reason = "the trace writer did not take a batch in time".to_string();
            args.supervisor.cast(RunSupervisorMsg::Fatal(reason))?;
            return Ok(None);
        }
    }
    tracing::trace!(runner = args.index, batch = ?job.id, walks, micros = nanos / 1000, "batch done");
    args.scheduler.cast(SchedulerMsg::BatchDone {
        slot: args.index,
        batch: job.id,
        walks,
        nanos,
        live: None,
    })?;
    Ok(panic)
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
