//! WalkRunner: executes batches of walks in this process.
//!
//! - Batches from the Scheduler (at most the runner's credit of them at a
//!   time) go straight onto its own [`RunnerThread`]'s queue: the endpoint
//!   the runner makes at start holds the queue, so no hop through this
//!   actor's mailbox, and the thread goes from one batch to the next
//!   without waiting for any task to be scheduled. With a walk timeout they
//!   come as `RunBatch`, and the runner awaits each (see
//!   `run_batch_within`).
//! - The thread runs the batch through the [`BatchPipeline`] (the same one
//!   a cluster node uses), claims it (a batch the Scheduler took back when
//!   the run stopped does not run; one it gave up delivers nothing), sends
//!   `BatchOutcome` to the Collector, then acknowledges it to the Scheduler
//!   itself (`BatchDone`) when nothing is left to do, or sends `Finished` to
//!   this runner (trace lines to write, or a panic). The runner sends the
//!   trace lines to the TraceWriter and waits until they are
//!   written (backpressure: at most the runner's credit of batches of lines
//!   wait), then `BatchDone` (with the batch's live bits) to the Scheduler.
//!   So neither the next epoch, the report nor the trace misses an
//!   acknowledged batch.
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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::actors::LOCAL_REPLY_TIMEOUT;
use crate::actors::collector::CollectorMsg;
use crate::actors::run_supervisor::RunSupervisorMsg;
use crate::actors::scheduler::{BatchJob, Endpoint, SchedulerMsg};
use crate::actors::trace_writer::TraceWriterMsg;
use crate::clock::PauseClock;
use crate::exec::{
    BatchInput, BatchSettings, Block, ErasedOrder, Origin, WALK_TIMEOUT_ACTION, WalkOutcome,
    WalkRecord,
};
use crate::model::dispatch::Done;
use crate::model::epoch::Epoch;
use crate::model::holdings::LiveSet;
use crate::model::outcome::{Counts, FailedWalk};
use crate::model::space::WalkId;
use crate::model::trace::TraceEncoder;
use crate::runner::{BatchPipeline, Job, Next, Queue, Ran, Replace, RunnerThread};
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
    done: Done,
    /// The first panic of an action in the batch.
    panic: Option<String>,
    /// The batch's trace lines, when the run has a log dir.
    trace: Option<TraceLines>,
}

/// A batch's lines for the TraceWriter.
pub(crate) struct TraceLines {
    pub(crate) lines: Vec<u8>,
    pub(crate) records: u64,
    pub(crate) failed_nanos: Vec<(u64, u64)>,
}

/// What a runner needs, fixed for the run.
pub(crate) struct RunnerArgs<S> {
    pub(crate) index: usize,
    pub(crate) order: Arc<dyn ErasedOrder<S>>,
    /// This runner's own copy of the initial state (`S` need not be `Sync`);
    /// moved into the runner's thread at start.
    pub(crate) initial: Option<Origin<S>>,
    pub(crate) store: Arc<StateStore<S>>,
    pub(crate) settings: BatchSettings,
    /// A batch running longer fails its walks (they run one per batch).
    pub(crate) walk_timeout: Option<std::time::Duration>,
    /// Where trace lines go, when the run has a log dir.
    pub(crate) trace: Option<RunnerTrace>,
    pub(crate) scheduler: ActorRef<SchedulerMsg>,
    pub(crate) collector: ActorRef<CollectorMsg<S>>,
    pub(crate) supervisor: ActorRef<RunSupervisorMsg>,
    /// Set at start when batches may go straight to the runner's thread (no
    /// walk timeout): the Scheduler's endpoint for this runner.
    pub(crate) direct: Arc<std::sync::OnceLock<Endpoint>>,
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
    index: usize,
    walk_timeout: Option<std::time::Duration>,
    batches: Arc<Batches<S>>,
    acks: Acks,
    /// The thread's queue; dropping it (with the runner) ends the thread.
    jobs: std::sync::mpsc::Sender<Job<S>>,
    retired: Arc<AtomicBool>,
}

impl<S> Drop for RunnerState<S> {
    fn drop(&mut self) {
        // A batch still queued on the thread must not start: the Scheduler
        // re-sends it to the replacement.
        self.retired.store(true, Ordering::Release);
    }
}

/// Where a runner acknowledges its batches (`Sync`, unlike the runner's
/// arguments, so it may be held across an await).
struct Acks {
    index: usize,
    writer: Option<ActorRef<TraceWriterMsg>>,
    scheduler: ActorRef<SchedulerMsg>,
    supervisor: ActorRef<RunSupervisorMsg>,
}

/// What the runner thread needs, fixed for the run.
struct Batches<S> {
    pipeline: BatchPipeline<S>,
    collector: ActorRef<CollectorMsg<S>>,
    supervisor: ActorRef<RunSupervisorMsg>,
    /// The runner itself, which the thread tells when a batch is done.
    runner: ActorRef<WalkRunnerMsg>,
    /// Where the thread acknowledges a batch itself (no trace lines, no
    /// panic), and the runner's slot there.
    scheduler: ActorRef<SchedulerMsg>,
    index: usize,
}

impl<S: Send + 'static> Batches<S> {
    /// The batch's input; a held block that is not there ends the run
    /// (`Fatal`): a report without its walks would be wrong.
    fn input(&self, job: &BatchJob) -> Option<BatchInput<S>> {
        match self.pipeline.input(&job.epoch, &job.pieces) {
            Ok(input) => Some(input),
            Err(start) => {
                let reason = format!("walk states of block starting at walk {start} were lost");
                let _ = self.supervisor.cast(RunSupervisorMsg::Fatal(reason));
                None
            }
        }
    }

    /// Sends a delivered batch's outcome to the Collector (before the batch
    /// is acknowledged, so neither the next epoch nor the report can miss
    /// it) and returns what is left to acknowledge.
    fn settle(&self, job: BatchJob, ran: Ran<S>) -> Finished {
        let trace = self.pipeline.encoder.as_ref().map(|_| TraceLines {
            lines: ran.lines,
            records: ran.records,
            failed_nanos: ran.failed_nanos,
        });
        // A Collector that is gone means the run is ending already.
        let _ = self.collector.cast(CollectorMsg::BatchOutcome {
            counts: ran.counts,
            failed: ran.failed,
            neither: ran.neither,
            finals: ran.finals,
        });
        let done = Done { walks: ran.walks, nanos: ran.nanos, live: ran.live, not_started: false };
        Finished { job, done, panic: ran.panic, trace }
    }

    /// On the runner's thread, once a batch is settled: acknowledges it to
    /// the Scheduler at once when nothing is left to do (no trace lines to
    /// write, no panic to fail the runner for), or hands it to the runner.
    fn finish(&self, finished: Finished) {
        if finished.trace.is_some() || finished.panic.is_some() {
            let _ = self.runner.cast(WalkRunnerMsg::Finished(Box::new(finished)));
            return;
        }
        let Finished { job, done, .. } = finished;
        let done = SchedulerMsg::BatchDone { slot: self.index, batch: job.id, done };
        if let Err(error) = self.scheduler.cast(done) {
            // As when the runner cannot acknowledge: the run ends.
            let reason = format!("runner {} cannot acknowledge: {error}", self.index);
            let _ = self.supervisor.cast(RunSupervisorMsg::Fatal(reason));
        }
    }
}

impl<S: Send + 'static> Actor for WalkRunner<S> {
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
            pipeline: BatchPipeline {
                order: Arc::clone(&args.order),
                store: Arc::clone(&args.store),
                settings: args.settings,
                encoder,
                name: format!("local/{}", args.index),
            },
            collector: args.collector.clone(),
            supervisor: args.supervisor.clone(),
            runner: myself.clone(),
            scheduler: args.scheduler.clone(),
            index: args.index,
        });
        let acks = Acks {
            index: args.index,
            writer: args.trace.as_ref().map(|t| t.writer.clone()),
            scheduler: args.scheduler.clone(),
            supervisor: args.supervisor.clone(),
        };
        let (jobs, queue) = std::sync::mpsc::channel::<Job<S>>();
        let queue: Queue<S> = Arc::new(std::sync::Mutex::new(queue));
        let retired = Arc::new(AtomicBool::new(false));
        let me = myself.clone();
        let replace = Replace::ByOwner(Box::new(move |message| {
            let _ = me.cast(WalkRunnerMsg::ThreadDied(message));
        }));
        let name = format!("combtest-runner-{}", args.index);
        RunnerThread::spawn(name, initial, queue, Arc::clone(&retired), Arc::new(replace))?;
        if args.walk_timeout.is_none() {
            let (jobs, batches) = (jobs.clone(), Arc::clone(&batches));
            let endpoint = Endpoint(Arc::new(move |job| queue_batch(&jobs, &batches, job)));
            let _ = args.direct.set(endpoint);
        }
        Ok(RunnerState {
            index: args.index,
            walk_timeout: args.walk_timeout,
            batches,
            acks,
            jobs,
            retired,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WalkRunnerMsg::RunBatch(job) => match state.walk_timeout {
                None => {
                    if !queue_batch(&state.jobs, &state.batches, job) {
                        // The thread stopped after a panic (its `Finished`
                        // is on the way and fails this runner): the batch
                        // stays outstanding, and the Scheduler re-sends it
                        // to the replacement.
                        tracing::debug!(runner = state.index, "runner thread gone; batch left");
                    }
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
/// batch before it is done, settles it and acknowledges it (or hands it to
/// the runner, see `Batches::finish`). False if the thread is gone.
fn queue_batch<S: Send + 'static>(
    jobs: &std::sync::mpsc::Sender<Job<S>>,
    batches: &Arc<Batches<S>>,
    job: BatchJob,
) -> bool {
    let batches = Arc::clone(batches);
    jobs.send(Box::new(move |initial: Option<&Origin<S>>| {
        // Retired (the runner is being replaced), or taken back (the run
        // stops): the batch does not run here.
        let Some(initial) = initial else { return Next::Go };
        if !job.claim.start() {
            return Next::Go;
        }
        let Some(input) = batches.input(&job) else { return Next::Go };
        let walks = job.walks();
        let ran = batches.pipeline.run(&job.epoch, &job.instruction, walks, input, initial);
        let next = if ran.panic.is_some() { Next::Stop } else { Next::Go };
        if job.claim.deliver() {
            batches.finish(batches.settle(job, ran));
        }
        next
    }))
    .is_ok()
}

/// Runs one batch (one walk, with a walk timeout) on the runner's thread
/// and waits for it at most `timeout` (of the pause clock: time this
/// process was stopped does not count). A batch stuck past it has its walks
/// failed and the runner replaced (the thread, stuck in user code, is
/// abandoned); nothing was queued behind it.
async fn run_batch_within<S: Send + 'static>(
    state: &mut RunnerState<S>,
    job: BatchJob,
    timeout: std::time::Duration,
) -> Result<(), ActorProcessingErr> {
    if !job.claim.start() {
        return Ok(()); // Taken back: the run stops.
    }
    let Some(input) = state.batches.input(&job) else { return Ok(()) };
    // The batch's live walks: those that time out if it is stuck.
    let live: Vec<u64> = match &input {
        BatchInput::Fresh(pieces) => pieces.iter().flatten().collect(),
        BatchInput::Held(blocks) => blocks.iter().flat_map(Block::live_ids).collect(),
    };
    let (reply, result) = tokio::sync::oneshot::channel();
    let batches = Arc::clone(&state.batches);
    let ran_job = job.clone();
    let sent = state.jobs.send(Box::new(move |initial: Option<&Origin<S>>| {
        let Some(initial) = initial else { return Next::Go };
        let walks = ran_job.walks();
        let ran = batches.pipeline.run(&ran_job.epoch, &ran_job.instruction, walks, input, initial);
        let next = if ran.panic.is_some() { Next::Stop } else { Next::Go };
        let _ = reply.send(ran);
        next
    }));
    if sent.is_err() {
        return Err("the runner thread has exited".into());
    }
    let ran = tokio::select! {
        ran = result => match ran {
            Ok(ran) => ran,
            Err(_) => return Err("the runner thread died running a batch".into()),
        },
        () = PauseClock::sleep(timeout) => {
            if !job.claim.deliver() {
                return Ok(()); // Given up: the run has stopped.
            }
            let stuck = Stuck { index: state.index, batches: &state.batches, acks: &state.acks };
            stuck.report(&job, &live, timeout).await?;
            return Err(format!(
                "a walk timed out after {}; replacing runner",
                humantime::format_duration(timeout)
            )
            .into());
        }
    };
    if !job.claim.deliver() {
        return Ok(());
    }
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
    let Finished { job, done, panic, trace } = finished;
    if let (Some(writer), Some(trace)) = (&args.writer, trace)
        && !write_lines(writer, trace, &args.supervisor).await?
    {
        return Ok(None);
    }
    tracing::trace!(runner = args.index, batch = ?job.id, walks = done.walks, "batch done");
    args.scheduler.cast(SchedulerMsg::BatchDone { slot: args.index, batch: job.id, done })?;
    Ok(panic)
}

/// Sends a batch's lines to the TraceWriter and waits until they are
/// written: each runner has at most its credit of batches of lines
/// waiting, and a writer slower than the runners slows them down instead
/// of piling lines up in memory. False (after telling the supervisor) if
/// the writer did not take them in time.
pub(crate) async fn write_lines(
    writer: &ActorRef<TraceWriterMsg>,
    trace: TraceLines,
    supervisor: &ActorRef<RunSupervisorMsg>,
) -> Result<bool, ActorProcessingErr> {
    let TraceLines { lines, records, failed_nanos } = trace;
    let written = writer
        .call(
            |written| TraceWriterMsg::Batch { lines, records, failed_nanos, written },
            Some(LOCAL_REPLY_TIMEOUT),
        )
        .await?;
    if !matches!(written, ractor::rpc::CallResult::Success(())) {
        let reason = "the trace writer did not take a batch in time".to_string();
        supervisor.cast(RunSupervisorMsg::Fatal(reason))?;
        return Ok(false);
    }
    Ok(true)
}

/// The failure a walk timeout gives.
pub(crate) fn timeout_error(timeout: std::time::Duration) -> String {
    format!("timed out after {}", humantime::format_duration(timeout))
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
        .map(|&id| FailedWalk {
            walk_id: WalkId(id),
            action_index,
            action: action.into(),
            error: error.clone(),
        })
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
struct Stuck<'a, S> {
    index: usize,
    batches: &'a Batches<S>,
    acks: &'a Acks,
}

impl<S: Send + 'static> Stuck<'_, S> {
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
        let pipeline = &self.batches.pipeline;
        if !job.epoch.last {
            let tombstones = job
                .pieces
                .iter()
                .flat_map(|r| pipeline.settings.blocks.split(r))
                .map(Block::tombstone)
                .collect();
            pipeline.store.put(tombstones);
        }
        let error = timeout_error(timeout);
        let (counts, failed, records) =
            failed_walks(&job.epoch, live, WALK_TIMEOUT_ACTION, &error, timeout);
        self.batches.collector.cast(CollectorMsg::BatchOutcome {
            counts,
            failed,
            neither: Vec::new(),
            finals: Vec::new(),
        })?;
        if let (Some(encoder), Some(writer)) = (&pipeline.encoder, &self.acks.writer) {
            let mut lines = Vec::new();
            encode_batch(encoder, &records, &pipeline.name, &mut lines);
            let failed_nanos = records.iter().map(|r| (r.id.0, r.nanos)).collect();
            let trace = TraceLines { lines, records: records.len() as u64, failed_nanos };
            if !write_lines(writer, trace, &self.acks.supervisor).await? {
                return Ok(());
            }
        }
        // Every walk of the batch has ended: none goes on.
        let live = (!job.epoch.last).then(|| LiveSet::none(job.walks()));
        let nanos = timeout.as_nanos() as u64;
        let done = Done { walks: job.walks(), nanos, live, not_started: false };
        self.acks.scheduler.cast(SchedulerMsg::BatchDone {
            slot: self.acks.index,
            batch: job.id,
            done,
        })?;
        Ok(())
    }
}
