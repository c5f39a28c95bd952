//! RunSupervisor: the supervision root of one run.
//!
//! - Spawned by `runtime::run_on`; spawns and links the Collector, Planner,
//!   SerialBarrier, Scheduler, the workers (WalkRunners, or the remote side
//!   of a cluster run through [`RemoteWorkers`]) and, when the run has a log
//!   dir, the TraceWriter; then starts the barrier.
//! - Receives `EpochsDone` from the SerialBarrier: asks the Collector for the
//!   report and the TraceWriter (if any) to flush, hands both to the caller,
//!   stops its children and itself. Receives `Stop` from the run's
//!   `RunStop` (Ctrl-C, a soak's deadline) and passes it to the Scheduler
//!   (and the remote side); `Stopped` from the Scheduler once a stopped run
//!   has accounted for every walk, and ends the run the same way, with the
//!   stop as its ending. `AllSlotsLost` from the Scheduler goes to the
//!   remote side, which answers `GiveUp` when no node can come back.
//!   `Fatal` from any child that detects a broken invariant ends the run
//!   with an internal error.
//!
//! # Supervision
//! - A WalkRunner that fails (it does so on purpose after a batch in which an
//!   action panicked) is replaced by a fresh runner with the same index, and
//!   the Scheduler is told (`EndpointUp`) so it re-sends the batches that were
//!   queued in the dead runner's mailbox. Each replacement is counted in the
//!   report's `runner_restarts`.
//! - Any other child failing or stopping early ends the run with an internal
//!   error: their state (the epoch cursor, the counts) cannot be rebuilt.
//!
//! # Shutdown
//! Once the report is handed over, the supervisor stops itself; `post_stop`
//! stops every child and waits for them (`Stop`, not `Kill`: nothing is
//! running by then, but a hung runner thread, which is abandoned). If the
//! caller drops the run future, the supervisor is stopped the same way.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use crate::actors::LOCAL_REPLY_TIMEOUT;
use crate::actors::collector::{Collector, CollectorMsg, Progress, StopRun};
use crate::actors::planner::Planner;
use crate::actors::scheduler::{Endpoint, Outcomes, Scheduler, SchedulerArgs, SchedulerMsg};
use crate::actors::serial_barrier::{SerialBarrier, SerialBarrierArgs, SerialBarrierMsg};
use crate::actors::trace_writer::{TraceWriter, TraceWriterMsg};
use crate::actors::walk_runner::{
    RunnerArgs, RunnerTrace, WalkRunner, WalkRunnerMsg, failed_walks,
};
use crate::exec::{BatchSettings, ErasedOrder, Origin};
use crate::model::dispatch::{Config, MAX_BATCH, SlotSpec, StopKind};
use crate::model::epoch::Epoch;
use crate::model::outcome::{AbortedWalks, Ending, Fate, Report, StopReason};
use crate::model::sample::WalkSample;
use crate::model::space::Blocks;
use crate::model::trace::TraceEncoder;
use crate::model::triage::Triage;
use crate::store::StateStore;
use crate::trace::encode_batch;
use crate::trace::{TraceTotals, WalksFile};

/// Batches in flight per runner: one running, one waiting in its queue.
pub(crate) const CREDITS_PER_RUNNER: usize = 2;

/// What the caller gets: the report, and what the TraceWriter wrote.
pub(crate) type RunResult<S> = Result<(Report<S>, Option<TraceTotals>), RunFailure>;

/// Why a run ended without a report (the runtime makes these `RunError`s).
#[derive(Debug)]
pub(crate) enum RunFailure {
    /// An actor broke an invariant: a bug in combtest.
    Internal(String),
    /// `walks.jsonl` could not be written.
    TraceWrite(String),
}

/// Events to the RunSupervisor.
pub(crate) enum RunSupervisorMsg {
    /// The Planner has no more epochs and the last one is done.
    EpochsDone,
    /// A child found the run broken beyond repair.
    Fatal(String),
    /// A node replaced a runner thread after an action panicked (remote).
    RunnerRestarted,
    /// The Scheduler has no slot left (remote runs: the remote side decides
    /// whether one may come back).
    AllSlotsLost,
    /// No node can come back (from the remote side): the run stops.
    GiveUp(String),
    /// Stop the run (its `RunStop`).
    Stop { kind: StopKind, reason: StopReason },
    /// The Scheduler has accounted for every walk of a stopped run.
    Stopped,
}

// Local only: never crosses a node.
impl ractor::Message for RunSupervisorMsg {}

/// What the remote side of a run is told.
#[derive(Debug, Clone)]
pub(crate) enum RemoteNotice {
    /// The Scheduler has no slot left.
    AllSlotsLost,
    /// The run is stopping: nodes should start nothing more.
    Stopping(StopKind),
}

/// The remote side of a run once started: its root actor (linked to the
/// supervisor) and how to tell it things.
pub(crate) struct RemoteHandle {
    pub(crate) cell: ActorCell,
    pub(crate) notify: Box<dyn Fn(RemoteNotice) + Send + Sync>,
}

/// What the remote side of a run gets from the supervisor.
pub(crate) struct RemoteContext<S> {
    pub(crate) supervisor: ActorRef<RunSupervisorMsg>,
    pub(crate) scheduler: ActorRef<SchedulerMsg>,
    pub(crate) collector: ActorRef<CollectorMsg<S>>,
    pub(crate) writer: Option<ActorRef<TraceWriterMsg>>,
    pub(crate) order: Arc<dyn ErasedOrder<S>>,
}

/// Walks run somewhere else (cluster nodes): the seam through which the
/// core runtime reaches them without knowing of the cluster.
pub(crate) trait RemoteWorkers<S>: Send {
    /// The slots at the start, in slot order.
    fn slots(&self) -> Vec<SlotSpec>;
    /// Runner threads over every slot (batch sizing).
    fn runners(&self) -> usize;
    /// Starts the remote side, linked to `ctx.supervisor`; it announces each
    /// slot's endpoint to the Scheduler (`EndpointUp`), and later slots with
    /// `SlotAdded`.
    fn start(
        self: Box<Self>,
        ctx: RemoteContext<S>,
    ) -> BoxFuture<'static, Result<RemoteHandle, ActorProcessingErr>>;
}

/// Where the walks of a run execute.
pub(crate) enum Workers<S> {
    /// WalkRunners in this process, one thread each.
    Threads(usize),
    /// Elsewhere.
    Remote(Box<dyn RemoteWorkers<S>>),
}

impl<S> Workers<S> {
    /// Runner threads in all.
    pub(crate) fn runners(&self) -> usize {
        match self {
            Workers::Threads(threads) => *threads,
            Workers::Remote(remote) => remote.runners(),
        }
    }
}

/// Everything a run needs, fixed at its start.
pub(crate) struct RunContext<S> {
    pub(crate) order: Arc<dyn ErasedOrder<S>>,
    pub(crate) origin: Origin<S>,
    pub(crate) workers: Workers<S>,
    pub(crate) blocks: Blocks,
    pub(crate) max_batch: Option<u64>,
    /// Counts as they come (a soak's status lines).
    pub(crate) progress: Option<Arc<Progress>>,
    /// Run only these walks (a soak round's sample).
    pub(crate) sample: Option<WalkSample>,
    /// A walk running longer fails (and its runner or node is replaced).
    pub(crate) walk_timeout: Option<Duration>,
    /// Stop (drain) the run once this many walks have failed.
    pub(crate) max_failures: Option<u64>,
    /// Walks in flight per runner (async walk orders).
    pub(crate) in_flight: usize,
    pub(crate) gather: bool,
    /// The trace encoder and `walks.jsonl`, when the run has a log dir.
    pub(crate) trace: Option<(Arc<TraceEncoder>, WalksFile)>,
    pub(crate) reply: oneshot::Sender<RunResult<S>>,
}

pub(crate) struct RunSupervisor<S>(std::marker::PhantomData<fn() -> S>);

impl<S> RunSupervisor<S> {
    pub(crate) fn new() -> Self {
        RunSupervisor(std::marker::PhantomData)
    }
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Runner(usize),
    Remote,
    Planner,
    Barrier,
    Scheduler,
    Collector,
    TraceWriter,
}

pub(crate) struct SupervisorState<S> {
    order: Arc<dyn ErasedOrder<S>>,
    origin: Origin<S>,
    settings: BatchSettings,
    walk_timeout: Option<Duration>,
    store: Arc<StateStore<S>>,
    reply: Option<oneshot::Sender<RunResult<S>>>,
    roles: HashMap<ActorId, Role>,
    collector: ActorRef<CollectorMsg<S>>,
    /// The trace encoder (shared with runners) and writer, with a log dir.
    trace: Option<(Arc<TraceEncoder>, ActorRef<TraceWriterMsg>)>,
    scheduler: ActorRef<SchedulerMsg>,
    restarts: u64,
    remote: Option<RemoteHandle>,
    /// Why the run was stopped, once it was.
    stopped: Option<StopReason>,
}

impl<S: Send + 'static> Actor for RunSupervisor<S> {
    type Msg = RunSupervisorMsg;
    type State = SupervisorState<S>;
    type Arguments = RunContext<S>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: RunContext<S>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let space = ctx.order.space().clone();
        let blocks = ctx.blocks;
        let me = myself.get_cell();
        let mut roles = HashMap::new();

        let walks = ctx.sample.as_ref().map_or(space.size(), WalkSample::len);
        let triage = Triage::of_run(space.clone(), ctx.sample.as_ref());
        // The Collector counts failures: at the limit, it stops the run
        // through this supervisor as a `RunStop` would.
        let limit = ctx.max_failures.map(|limit| {
            let supervisor = myself.clone();
            let stop: StopRun = Box::new(move || {
                let reason = StopReason::FailureLimit(limit);
                let _ = supervisor.cast(RunSupervisorMsg::Stop { kind: StopKind::Drain, reason });
            });
            (limit, stop)
        });
        let (collector, _) = Actor::spawn_linked(
            None,
            Collector::new(),
            (walks, ctx.progress.clone(), triage, limit),
            me.clone(),
        )
        .await?;
        roles.insert(collector.get_id(), Role::Collector);
        let trace = match ctx.trace {
            Some((encoder, file)) => {
                let (writer, _) = Actor::spawn_linked(None, TraceWriter, file, me.clone()).await?;
                roles.insert(writer.get_id(), Role::TraceWriter);
                Some((encoder, writer))
            }
            None => None,
        };
        let (planner, _) =
            Actor::spawn_linked(None, Planner, (space.clone(), ctx.sample.clone()), me.clone())
                .await?;
        roles.insert(planner.get_id(), Role::Planner);
        let barrier_args = SerialBarrierArgs {
            order: Arc::clone(&ctx.order),
            planner: planner.clone(),
            collector: collector.clone(),
            supervisor: myself.clone(),
            fixtures: Arc::clone(&ctx.origin.fixtures),
            node_steps_here: matches!(ctx.workers, Workers::Threads(_)),
        };
        let (barrier, _) =
            Actor::spawn_linked(None, SerialBarrier::new(), barrier_args, me.clone()).await?;
        roles.insert(barrier.get_id(), Role::Barrier);
        let slots = match &ctx.workers {
            Workers::Threads(threads) => {
                vec![SlotSpec { credits: CREDITS_PER_RUNNER, home: 0 }; *threads]
            }
            Workers::Remote(remote) => remote.slots(),
        };
        let outcomes = CollectorOutcomes {
            collector: collector.clone(),
            trace: trace.as_ref().map(|(encoder, writer)| (Arc::clone(encoder), writer.clone())),
        };
        let config = Config {
            blocks,
            // A traced batch of async walks records every walk it ends (a
            // pruned subtree too), so its length keeps the bound of batches
            // that hold states; a sync batch records its passing and pruned
            // walks as ranges, and needs no such bound.
            max_batch: match trace {
                Some(_) if ctx.order.is_async() => {
                    Some(ctx.max_batch.map_or(MAX_BATCH, |max| max.min(MAX_BATCH)))
                }
                _ => ctx.max_batch,
            },
            runners: ctx.workers.runners(),
            sample: ctx.sample.clone(),
            sticky: matches!(ctx.workers, Workers::Remote(_)),
            size: space.size(),
            min_batch: if ctx.order.is_async() { ctx.in_flight as u64 } else { 1 },
        };
        let scheduler_args = SchedulerArgs {
            config,
            slots,
            barrier: barrier.clone(),
            outcomes: Box::new(outcomes),
            supervisor: myself.clone(),
        };
        let (scheduler, _) =
            Actor::spawn_linked(None, Scheduler, scheduler_args, me.clone()).await?;
        roles.insert(scheduler.get_id(), Role::Scheduler);

        let mut state = SupervisorState {
            order: ctx.order,
            origin: ctx.origin,
            settings: BatchSettings {
                blocks,
                gather: ctx.gather,
                trace: trace.is_some(),
                in_flight: ctx.in_flight,
            },
            walk_timeout: ctx.walk_timeout,
            store: Arc::new(StateStore::new()),
            reply: Some(ctx.reply),
            roles,
            collector,
            trace,
            scheduler: scheduler.clone(),
            restarts: 0,
            remote: None,
            stopped: None,
        };
        // The first epoch may start before the runners: the Scheduler hands
        // out batches as each runner announces itself.
        barrier.cast(SerialBarrierMsg::Start(scheduler))?;
        match ctx.workers {
            Workers::Threads(threads) => state.spawn_runners(&myself, 0..threads).await?,
            Workers::Remote(remote) => {
                let ctx = RemoteContext {
                    supervisor: myself.clone(),
                    scheduler: state.scheduler.clone(),
                    collector: state.collector.clone(),
                    writer: state.trace.as_ref().map(|(_, writer)| writer.clone()),
                    order: Arc::clone(&state.order),
                };
                let handle = remote.start(ctx).await?;
                state.roles.insert(handle.cell.get_id(), Role::Remote);
                state.remote = Some(handle);
            }
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RunSupervisorMsg::EpochsDone => {
                let result = state.collect(Ending::Completed).await;
                state.finish(&myself, result);
            }
            RunSupervisorMsg::Fatal(reason) => {
                state.finish(&myself, Err(RunFailure::Internal(reason)));
            }
            RunSupervisorMsg::RunnerRestarted => state.restarts += 1,
            RunSupervisorMsg::AllSlotsLost => {
                if let Some(remote) = &state.remote {
                    (remote.notify)(RemoteNotice::AllSlotsLost);
                }
            }
            RunSupervisorMsg::GiveUp(why) => {
                let reason = StopReason::AllNodesLost(why);
                state.stop(StopKind::Drain, reason)?;
            }
            RunSupervisorMsg::Stop { kind, reason } => state.stop(kind, reason)?,
            RunSupervisorMsg::Stopped => {
                let reason = state.stopped.clone().unwrap_or(StopReason::Interrupted);
                let result = state.collect(Ending::Stopped(reason)).await;
                state.finish(&myself, result);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".to_string()))
            }
            _ => return Ok(()),
        };
        if state.reply.is_none() {
            return Ok(()); // Shutting down: children stop as told.
        }
        match state.roles.remove(&cell.get_id()) {
            Some(Role::Runner(index)) => {
                tracing::debug!(runner = index, %why, "replacing walk runner");
                state.restarts += 1;
                if let Err(error) = state.spawn_runners(&myself, index..index + 1).await {
                    let reason = format!("could not replace walk runner {index}: {error}");
                    state.finish(&myself, Err(RunFailure::Internal(reason)));
                }
            }
            Some(role) => {
                let reason = format!("the {role:?} actor stopped unexpectedly: {why}");
                state.finish(&myself, Err(RunFailure::Internal(reason)));
            }
            None => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(reply) = state.reply.take() {
            let _ = reply.send(Err(RunFailure::Internal("the run was stopped".to_string())));
        }
        // Nothing runs by then but a hung walk's runner (its thread is
        // abandoned) or a walk timeout's wait: give them a moment, then kill.
        myself.stop_children_and_wait(None, Some(Duration::from_secs(5))).await;
        for child in myself.get_children() {
            child.kill();
        }
        Ok(())
    }
}

impl<S: Send + 'static> SupervisorState<S> {
    /// Passes a stop to the Scheduler and the remote side.
    fn stop(&mut self, kind: StopKind, reason: StopReason) -> Result<(), ActorProcessingErr> {
        if self.stopped.is_none() {
            tracing::info!(reason = %reason.phrase(), ?kind, "the run stops");
            self.stopped = Some(reason.clone());
        }
        if let Some(remote) = &self.remote {
            (remote.notify)(RemoteNotice::Stopping(kind));
        }
        self.scheduler.cast(SchedulerMsg::Stop { kind, reason })?;
        Ok(())
    }

    /// The report so far (with the restart count and its ending) and what
    /// the TraceWriter wrote, once it has flushed.
    async fn collect(&mut self, ending: Ending) -> RunResult<S> {
        let report = self
            .collector
            .call(CollectorMsg::Finish, Some(LOCAL_REPLY_TIMEOUT))
            .await
            .map_err(|e| RunFailure::Internal(format!("cannot reach the collector: {e}")))?;
        match report {
            ractor::rpc::CallResult::Success(mut report) => {
                report.runner_restarts = self.restarts;
                report.ending = ending;
                let writer = self.trace.as_ref().map(|(_, writer)| writer.clone());
                finish_trace(writer).await.map(|totals| (report, totals))
            }
            ractor::rpc::CallResult::Timeout => Err(RunFailure::Internal(
                "the collector did not hand over the report in time".to_string(),
            )),
            ractor::rpc::CallResult::SenderError => Err(RunFailure::Internal(
                "the collector stopped before handing over the report".to_string(),
            )),
        }
    }

    /// Spawns runners `indices` concurrently (a spawn waits for the runner's
    /// start, tens of microseconds; 64 in a row would delay the run by
    /// milliseconds), links them, and announces each to the Scheduler.
    async fn spawn_runners(
        &mut self,
        myself: &ActorRef<RunSupervisorMsg>,
        indices: std::ops::Range<usize>,
    ) -> Result<(), ActorProcessingErr> {
        let spawns = indices.map(|index| {
            let args = self.runner_args(myself, index);
            let direct = Arc::clone(&args.direct);
            let supervisor: ActorCell = myself.get_cell();
            let scheduler = self.scheduler.clone();
            async move {
                let (runner, _) =
                    Actor::spawn_linked(None, WalkRunner::new(), args, supervisor).await?;
                // Announced at once: it takes work while others still start.
                // Batches go straight to its thread when it allows it (no
                // walk timeout), else through its mailbox.
                let endpoint = match direct.get() {
                    Some(endpoint) => endpoint.clone(),
                    None => {
                        let target = runner.clone();
                        Endpoint(Arc::new(move |job| {
                            target.cast(WalkRunnerMsg::RunBatch(job)).is_ok()
                        }))
                    }
                };
                scheduler.cast(SchedulerMsg::EndpointUp { slot: index, endpoint })?;
                Ok::<_, ActorProcessingErr>((index, runner))
            }
        });
        let spawned: Vec<Result<(usize, ActorRef<WalkRunnerMsg>), _>> =
            futures::future::join_all(spawns).await;
        for result in spawned {
            let (index, runner) = result?;
            // Supervision events are handled only after this returns, so the
            // role is known before any of them.
            self.roles.insert(runner.get_id(), Role::Runner(index));
        }
        Ok(())
    }

    fn runner_args(&self, myself: &ActorRef<RunSupervisorMsg>, index: usize) -> RunnerArgs<S> {
        RunnerArgs {
            index,
            order: Arc::clone(&self.order),
            initial: Some(self.origin.clone()),
            store: Arc::clone(&self.store),
            settings: self.settings,
            walk_timeout: self.walk_timeout,
            trace: self.trace.as_ref().map(|(encoder, writer)| RunnerTrace {
                encoder: Arc::clone(encoder),
                writer: writer.clone(),
            }),
            scheduler: self.scheduler.clone(),
            collector: self.collector.clone(),
            supervisor: myself.clone(),
            direct: Arc::default(),
        }
    }

    /// Hands the result to the caller and stops the run.
    fn finish(&mut self, myself: &ActorRef<RunSupervisorMsg>, result: RunResult<S>) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result);
        }
        myself.stop(None);
    }
}

/// The Scheduler's outcomes, delivered to the Collector and the trace.
pub(crate) struct CollectorOutcomes<S> {
    pub(crate) collector: ActorRef<CollectorMsg<S>>,
    pub(crate) trace: Option<(Arc<TraceEncoder>, ActorRef<TraceWriterMsg>)>,
}

impl<S: Send + 'static> Outcomes for CollectorOutcomes<S> {
    fn unfinished(&self, walks: AbortedWalks, fate: Fate) -> Result<(), String> {
        self.collector.cast(CollectorMsg::Unfinished(walks, fate)).map_err(|e| e.to_string())
    }

    fn lost(&self, node: String) -> Result<(), String> {
        self.collector.cast(CollectorMsg::NodeLost(node)).map_err(|e| e.to_string())
    }

    fn failed(
        &self,
        epoch: &Epoch,
        ids: &[u64],
        action: &'static str,
        error: &str,
    ) -> Result<(), String> {
        let (counts, failed, records) =
            failed_walks(epoch, ids, action, error, std::time::Duration::ZERO);
        self.collector
            .cast(CollectorMsg::BatchOutcome {
                counts,
                failed,
                neither: Vec::new(),
                finals: Vec::new(),
            })
            .map_err(|e| e.to_string())?;
        if let Some((encoder, writer)) = &self.trace {
            let mut lines = Vec::new();
            encode_batch(encoder, &records, "coordinator", &mut lines);
            let failed_nanos = records.iter().map(|r| (r.id.0, r.nanos)).collect();
            // Nobody waits for this one: the writer's mailbox keeps it ahead
            // of the `Finish` that comes after the epoch.
            let (written, _) = ractor::concurrency::oneshot();
            let records = records.len() as u64;
            writer
                .cast(TraceWriterMsg::Batch {
                    lines,
                    records,
                    failed_nanos,
                    written: written.into(),
                })
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Asks the TraceWriter, if any, to flush what it has: every batch's
/// lines are in its mailbox by now.
async fn finish_trace(
    writer: Option<ActorRef<TraceWriterMsg>>,
) -> Result<Option<TraceTotals>, RunFailure> {
    let Some(writer) = writer else {
        return Ok(None);
    };
    let reply = writer
        .call(TraceWriterMsg::Finish, Some(LOCAL_REPLY_TIMEOUT))
        .await
        .map_err(|e| RunFailure::Internal(format!("cannot reach the trace writer: {e}")))?;
    match reply {
        ractor::rpc::CallResult::Success(Ok(totals)) => Ok(Some(totals)),
        ractor::rpc::CallResult::Success(Err(error)) => {
            Err(RunFailure::TraceWrite(format!("walks.jsonl: {error}")))
        }
        _ => Err(RunFailure::Internal("the trace writer did not finish in time".to_string())),
    }
}
