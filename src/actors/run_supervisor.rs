//! RunSupervisor: the supervision root of one run.
//!
//! - Spawned by `run_async`; spawns and links the Collector, Planner,
//!   SerialBarrier, Scheduler, the WalkRunners and, when the run has a log
//!   dir, the TraceWriter; then starts the barrier.
//! - Receives `EpochsDone` from the SerialBarrier: asks the Collector for the
//!   report and the TraceWriter (if any) to flush, hands both to the caller,
//!   stops its children and itself.
//!   Receives `Fatal` from any child that detects a broken invariant: the run
//!   ends with an internal error.
//!
//! # Supervision
//! - A WalkRunner that fails (it does so on purpose after a batch in which an
//!   action panicked) is replaced by a fresh runner with the same index, and
//!   the Scheduler is told (`RunnerUp`) so it re-sends the batches that were
//!   queued in the dead runner's mailbox. Each replacement is counted in the
//!   report's `runner_restarts`.
//! - Any other child failing or stopping early ends the run with an internal
//!   error: their state (the epoch cursor, the counts) cannot be rebuilt.
//!
//! # Shutdown
//! Once the report is handed over, the supervisor stops itself; `post_stop`
//! stops every child and waits for them (`Stop`, not `Kill`: nothing is
//! running by then). If the caller drops the run future, the supervisor is
//! stopped the same way.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use crate::actors::LOCAL_REPLY_TIMEOUT;
use crate::actors::collector::{Collector, CollectorMsg};
use crate::actors::planner::Planner;
use crate::actors::scheduler::{Scheduler, SchedulerArgs, SchedulerMsg};
use crate::actors::serial_barrier::{SerialBarrier, SerialBarrierArgs, SerialBarrierMsg};
use crate::actors::trace_writer::{TraceWriter, TraceWriterMsg};
use crate::actors::walk_runner::{RunnerArgs, RunnerTrace, WalkRunner, WalkRunnerMsg};
use crate::exec::ErasedOrder;
use crate::model::outcome::Report;
use crate::model::space::Blocks;
use crate::model::trace::TraceEncoder;
use crate::runtime::RunError;
use crate::store::StateStore;
use crate::trace::{TraceTotals, WalksFile};

/// What the caller gets: the report, and what the TraceWriter wrote.
pub(crate) type RunResult<S> = Result<(Report<S>, Option<TraceTotals>), RunError>;

/// Events to the RunSupervisor.
pub(crate) enum RunSupervisorMsg {
    /// The Planner has no more epochs and the last one is done.
    EpochsDone,
    /// A child found the run broken beyond repair.
    Fatal(String),
}

/// Everything a run needs, fixed at its start.
pub(crate) struct RunContext<S> {
    pub(crate) order: Arc<dyn ErasedOrder<S>>,
    pub(crate) initial: S,
    pub(crate) runners: usize,
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
    Planner,
    Barrier,
    Scheduler,
    Collector,
    TraceWriter,
}

pub(crate) struct SupervisorState<S> {
    order: Arc<dyn ErasedOrder<S>>,
    initial: S,
    gather: bool,
    blocks: Blocks,
    store: Arc<StateStore<S>>,
    reply: Option<oneshot::Sender<RunResult<S>>>,
    roles: HashMap<ActorId, Role>,
    collector: ActorRef<CollectorMsg<S>>,
    /// The trace encoder (shared with runners) and writer, with a log dir.
    trace: Option<(Arc<TraceEncoder>, ActorRef<TraceWriterMsg>)>,
    scheduler: ActorRef<SchedulerMsg>,
    restarts: u64,
}

impl<S: Clone + Send + 'static> Actor for RunSupervisor<S> {
    type Msg = RunSupervisorMsg;
    type State = SupervisorState<S>;
    type Arguments = RunContext<S>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: RunContext<S>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let space = ctx.order.space().clone();
        let blocks = Blocks::for_space(&space, ctx.runners);
        let me = myself.get_cell();
        let mut roles = HashMap::new();

        let (collector, _) =
            Actor::spawn_linked(None, Collector::new(), space.size(), me.clone()).await?;
        roles.insert(collector.get_id(), Role::Collector);
        let trace = match ctx.trace {
            Some((encoder, file)) => {
                let (writer, _) = Actor::spawn_linked(None, TraceWriter, file, me.clone()).await?;
                roles.insert(writer.get_id(), Role::TraceWriter);
                Some((encoder, writer))
            }
            None => None,
        };
        let (planner, _) = Actor::spawn_linked(None, Planner, space, me.clone()).await?;
        roles.insert(planner.get_id(), Role::Planner);
        let barrier_args = SerialBarrierArgs {
            order: Arc::clone(&ctx.order),
            planner: planner.clone(),
            collector: collector.clone(),
            supervisor: myself.clone(),
        };
        let (barrier, _) =
            Actor::spawn_linked(None, SerialBarrier::new(), barrier_args, me.clone()).await?;
        roles.insert(barrier.get_id(), Role::Barrier);
        let scheduler_args =
            SchedulerArgs { runners: ctx.runners, blocks, barrier: barrier.clone() };
        let (scheduler, _) =
            Actor::spawn_linked(None, Scheduler, scheduler_args, me.clone()).await?;
        roles.insert(scheduler.get_id(), Role::Scheduler);

        let mut state = SupervisorState {
            order: ctx.order,
            initial: ctx.initial,
            gather: ctx.gather,
            blocks,
            store: Arc::new(StateStore::new()),
            reply: Some(ctx.reply),
            roles,
            collector,
            trace,
            scheduler: scheduler.clone(),
            restarts: 0,
        };
        // The first epoch may start before the runners: the Scheduler hands
        // out batches as each runner announces itself.
        barrier.cast(SerialBarrierMsg::Start(scheduler))?;
        state.spawn_runners(&myself, 0..ctx.runners).await?;
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
                let report =
                    state.collector.call(CollectorMsg::Finish, Some(LOCAL_REPLY_TIMEOUT)).await?;
                let result = match report {
                    ractor::rpc::CallResult::Success(mut report) => {
                        report.runner_restarts = state.restarts;
                        let writer = state.trace.as_ref().map(|(_, writer)| writer.clone());
                        finish_trace(writer).await.map(|totals| (report, totals))
                    }
                    ractor::rpc::CallResult::Timeout => Err(RunError::Internal(
                        "the collector did not hand over the report in time".to_string(),
                    )),
                    ractor::rpc::CallResult::SenderError => Err(RunError::Internal(
                        "the collector stopped before handing over the report".to_string(),
                    )),
                };
                state.finish(&myself, result);
            }
            RunSupervisorMsg::Fatal(reason) => {
                state.finish(&myself, Err(RunError::Internal(reason)));
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
                if let Err(error) = state.spawn_runner(&myself, index).await {
                    let reason = format!("could not replace walk runner {index}: {error}");
                    state.finish(&myself, Err(RunError::Internal(reason)));
                }
            }
            Some(role) => {
                let reason = format!("the {role:?} actor stopped unexpectedly: {why}");
                state.finish(&myself, Err(RunError::Internal(reason)));
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
            let _ = reply.send(Err(RunError::Internal("the run was stopped".to_string())));
        }
        myself.stop_children_and_wait(None, Some(LOCAL_REPLY_TIMEOUT)).await;
        Ok(())
    }
}

impl<S: Clone + Send + 'static> SupervisorState<S> {
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
            let supervisor: ActorCell = myself.get_cell();
            let scheduler = self.scheduler.clone();
            async move {
                let (runner, _) =
                    Actor::spawn_linked(None, WalkRunner::new(), args, supervisor).await?;
                // Announced at once: it takes work while others still start.
                scheduler.cast(SchedulerMsg::RunnerUp { index, runner: runner.clone() })?;
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

    async fn spawn_runner(
        &mut self,
        myself: &ActorRef<RunSupervisorMsg>,
        index: usize,
    ) -> Result<(), ActorProcessingErr> {
        self.spawn_runners(myself, index..index + 1).await
    }

    fn runner_args(&self, myself: &ActorRef<RunSupervisorMsg>, index: usize) -> RunnerArgs<S> {
        RunnerArgs {
            index,
            order: Arc::clone(&self.order),
            initial: Some(self.initial.clone()),
            store: Arc::clone(&self.store),
            blocks: self.blocks,
            gather: self.gather,
            trace: self.trace.as_ref().map(|(encoder, writer)| RunnerTrace {
                encoder: Arc::clone(encoder),
                writer: writer.clone(),
            }),
            scheduler: self.scheduler.clone(),
            collector: self.collector.clone(),
            supervisor: myself.clone(),
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

/// Asks the TraceWriter, if any, to flush what it has: every batch's
/// lines are in its mailbox by now.
async fn finish_trace(
    writer: Option<ActorRef<TraceWriterMsg>>,
) -> Result<Option<TraceTotals>, RunError> {
    let Some(writer) = writer else {
        return Ok(None);
    };
    let reply = writer
        .call(TraceWriterMsg::Finish, Some(LOCAL_REPLY_TIMEOUT))
        .await
        .map_err(|e| RunError::Internal(format!("cannot reach the trace writer: {e}")))?;
    match reply {
        ractor::rpc::CallResult::Success(Ok(totals)) => Ok(Some(totals)),
        ractor::rpc::CallResult::Success(Err(error)) => {
            Err(RunError::TraceWrite(format!("walks.jsonl: {error}")))
        }
        _ => Err(RunError::Internal("the trace writer did not finish in time".to_string())),
    }
}
