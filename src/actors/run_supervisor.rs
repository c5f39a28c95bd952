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
//!   the Scheduler is told (`EndpointUp`) so it re-sends the batches that were
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
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use crate::actors::LOCAL_REPLY_TIMEOUT;
use crate::actors::collector::{Collector, CollectorMsg, Progress};
use crate::actors::node_link::{NodeLink, NodeLinkArgs};
use crate::actors::node_link::{Trouble, call};
use crate::actors::planner::Planner;
use crate::actors::scheduler::{
    CREDITS_PER_RUNNER, Endpoint, Outcomes, Scheduler, SchedulerArgs, SchedulerMsg, SlotSpec,
};
use crate::actors::serial_barrier::{SerialBarrier, SerialBarrierArgs, SerialBarrierMsg};
use crate::actors::trace_writer::{TraceWriter, TraceWriterMsg};
use crate::actors::walk_runner::failed_walks;
use crate::actors::walk_runner::{RunnerArgs, RunnerTrace, WalkRunner, WalkRunnerMsg};
use crate::cluster::connect::Connection;
use crate::cluster::wire::{self, Hello, Reply, Request, RunKey};
use crate::cluster::{RemoteNode, Respawn};
use crate::exec::ErasedOrder;
use crate::model::epoch::Epoch;
use crate::model::outcome::AbortedWalks;
use crate::model::outcome::Report;
use crate::model::sample::WalkSample;
use crate::model::space::Blocks;
use crate::model::trace::TraceEncoder;
use crate::runtime::RunError;
use crate::store::StateStore;
use crate::trace::encode_batch;
use crate::trace::{TraceTotals, WalksFile};

/// What the caller gets: the report, and what the TraceWriter wrote.
pub(crate) type RunResult<S> = Result<(Report<S>, Option<TraceTotals>), RunError>;

/// Events to the RunSupervisor.
pub(crate) enum RunSupervisorMsg {
    /// The Planner has no more epochs and the last one is done.
    EpochsDone,
    /// A child found the run broken beyond repair.
    Fatal(String),
    /// A node replaced a runner thread after an action panicked (NodeLink).
    RunnerRestarted,
    /// The Scheduler lost its last node: the run ends with what it has
    /// (unless a lost node is rejoining).
    AllNodesLost(String),
    /// A restarted node is back (soaks with local nodes).
    NodeJoined(RemoteNode, usize),
    /// A lost node could not be brought back.
    RejoinFailed(String),
    /// The Scheduler stopped dispatching (interrupt) and nothing runs.
    Interrupted,
}

// Local only: never crosses a node.
impl ractor::Message for RunSupervisorMsg {}

/// Where the walks of a run execute.
pub(crate) enum Workers<S> {
    /// WalkRunners in this process, one thread each.
    Threads(usize),
    /// Cluster nodes, one NodeLink each.
    Nodes(Box<NodeWorkers<S>>),
}

/// The nodes of a cluster run, after the handshake.
pub(crate) struct NodeWorkers<S> {
    /// Each node and its runner threads.
    pub(crate) nodes: Vec<(RemoteNode, usize)>,
    pub(crate) run: RunKey,
    pub(crate) decode_state: fn(&[u8]) -> postcard::Result<S>,
    pub(crate) heartbeat_timeout: Duration,
    /// Lost nodes are restarted and rejoin the run (soaks with local nodes).
    pub(crate) rejoin: Option<Rejoin>,
}

/// What it takes for a restarted node to rejoin a run.
#[derive(Clone)]
pub(crate) struct Rejoin {
    pub(crate) respawn: Arc<dyn Respawn>,
    pub(crate) connection: Arc<Connection>,
    pub(crate) hello: Hello,
}

/// How to spawn a NodeLink for a node that joins mid-run.
struct LinkSpawn<S> {
    run: RunKey,
    decode_state: fn(&[u8]) -> postcard::Result<S>,
    heartbeat_timeout: Duration,
    rejoin: Option<Rejoin>,
    /// The next slot's index.
    next_slot: usize,
    /// Node names by slot.
    names: HashMap<usize, String>,
    /// Links running, and rejoins under way.
    live: usize,
    pending: usize,
    /// Every node was lost; waiting for a rejoin before giving up.
    all_lost: Option<String>,
}

impl<S> Workers<S> {
    /// Runner threads in all.
    pub(crate) fn runners(&self) -> usize {
        match self {
            Workers::Threads(threads) => *threads,
            Workers::Nodes(nodes) => nodes.nodes.iter().map(|(_, r)| r).sum(),
        }
    }
}

/// Everything a run needs, fixed at its start.
pub(crate) struct RunContext<S> {
    pub(crate) order: Arc<dyn ErasedOrder<S>>,
    pub(crate) initial: S,
    pub(crate) workers: Workers<S>,
    pub(crate) blocks: Blocks,
    pub(crate) max_batch: Option<u64>,
    /// Stop dispatching when set (see `SchedulerArgs::interrupt`).
    pub(crate) interrupt: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Counts as they come (a soak's status lines).
    pub(crate) progress: Option<Arc<Progress>>,
    /// Run only these walks (a soak round's sample).
    pub(crate) sample: Option<WalkSample>,
    /// A walk running longer fails (and its runner or node is replaced).
    pub(crate) walk_timeout: Option<Duration>,
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

/// How a child ended.
#[derive(Debug, Clone, Copy)]
enum EventKind {
    Failed,
    Stopped,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Runner(usize),
    Link(usize),
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
    walk_timeout: Option<Duration>,
    blocks: Blocks,
    store: Arc<StateStore<S>>,
    reply: Option<oneshot::Sender<RunResult<S>>>,
    roles: HashMap<ActorId, Role>,
    collector: ActorRef<CollectorMsg<S>>,
    /// The trace encoder (shared with runners) and writer, with a log dir.
    trace: Option<(Arc<TraceEncoder>, ActorRef<TraceWriterMsg>)>,
    scheduler: ActorRef<SchedulerMsg>,
    restarts: u64,
    /// Cluster runs: how to add links.
    links: Option<LinkSpawn<S>>,
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
        let blocks = ctx.blocks;
        let me = myself.get_cell();
        let mut roles = HashMap::new();

        let walks = ctx.sample.as_ref().map_or(space.size(), WalkSample::len);
        let (collector, _) =
            Actor::spawn_linked(None, Collector::new(), (walks, ctx.progress.clone()), me.clone())
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
            Actor::spawn_linked(None, Planner, (space, ctx.sample.clone()), me.clone()).await?;
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
        let slots = match &ctx.workers {
            Workers::Threads(threads) => {
                vec![SlotSpec { credits: CREDITS_PER_RUNNER, home: 0 }; *threads]
            }
            Workers::Nodes(nodes) => (0..nodes.nodes.len())
                .map(|home| SlotSpec {
                    credits: node_credits(nodes.nodes[home].1, ctx.walk_timeout.is_some()),
                    home,
                })
                .collect(),
        };
        let outcomes = CollectorOutcomes {
            collector: collector.clone(),
            trace: trace.as_ref().map(|(encoder, writer)| (Arc::clone(encoder), writer.clone())),
        };
        let scheduler_args = SchedulerArgs {
            slots,
            runners: ctx.workers.runners(),
            blocks,
            max_batch: ctx.max_batch,
            sample: ctx.sample.clone(),
            sticky: matches!(ctx.workers, Workers::Nodes(_)),
            barrier: barrier.clone(),
            outcomes: Box::new(outcomes),
            supervisor: myself.clone(),
            interrupt: ctx.interrupt.clone(),
        };
        let (scheduler, _) =
            Actor::spawn_linked(None, Scheduler, scheduler_args, me.clone()).await?;
        roles.insert(scheduler.get_id(), Role::Scheduler);

        let mut state = SupervisorState {
            order: ctx.order,
            initial: ctx.initial,
            gather: ctx.gather,
            walk_timeout: ctx.walk_timeout,
            blocks,
            store: Arc::new(StateStore::new()),
            reply: Some(ctx.reply),
            roles,
            collector,
            trace,
            scheduler: scheduler.clone(),
            restarts: 0,
            links: None,
        };
        // The first epoch may start before the runners: the Scheduler hands
        // out batches as each runner announces itself.
        barrier.cast(SerialBarrierMsg::Start(scheduler))?;
        match ctx.workers {
            Workers::Threads(threads) => state.spawn_runners(&myself, 0..threads).await?,
            Workers::Nodes(nodes) => state.spawn_links(&myself, *nodes).await?,
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
                let result = state.collect().await;
                state.finish(&myself, result);
            }
            RunSupervisorMsg::Fatal(reason) => {
                state.finish(&myself, Err(RunError::Internal(reason)));
            }
            RunSupervisorMsg::RunnerRestarted => state.restarts += 1,
            RunSupervisorMsg::AllNodesLost(reason)
                if state
                    .links
                    .as_ref()
                    .is_some_and(|l| l.rejoin.is_some() && (l.pending > 0 || l.live > 0)) =>
            {
                // A lost node is on its way back (or its link's end, which
                // starts the rejoin, is still to come): wait for it.
                if let Some(links) = &mut state.links {
                    links.all_lost = Some(reason);
                }
            }
            RunSupervisorMsg::NodeJoined(node, runners) => {
                if let Some(links) = &mut state.links {
                    links.pending -= 1;
                    links.all_lost = None;
                }
                let slot = state.links.as_ref().map_or(0, |l| l.next_slot);
                tracing::info!(node = %node.name, slot, "a restarted node rejoins the run");
                state.spawn_link(&myself, slot, node, runners, true).await?;
            }
            RunSupervisorMsg::RejoinFailed(why) => {
                tracing::warn!(%why, "a lost node did not come back");
                let gone = state.links.as_mut().and_then(|links| {
                    links.pending -= 1;
                    (links.live == 0 && links.pending == 0).then(|| {
                        links
                            .all_lost
                            .take()
                            .unwrap_or_else(|| format!("every node was lost ({why})"))
                    })
                });
                if let Some(reason) = gone {
                    myself.cast(RunSupervisorMsg::AllNodesLost(reason))?;
                }
            }
            RunSupervisorMsg::Interrupted => {
                // The report counts the walks that ended; their lines are
                // written.
                let result = state.collect().await.and_then(|(report, _)| {
                    Err(RunError::Interrupted { report: Box::new(report.without_states()) })
                });
                state.finish(&myself, result);
            }
            RunSupervisorMsg::AllNodesLost(reason) => {
                let report = state.collect().await.ok().map(|(r, _)| Box::new(r.without_states()));
                state.finish(&myself, Err(RunError::AllNodesLost { reason, report }));
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
        let (cell, why, event_kind) = match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                (cell, error.to_string(), EventKind::Failed)
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".to_string()), EventKind::Stopped)
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
            Some(Role::Link(slot)) => {
                // A link stops on its own when its node is lost (and has told
                // the Scheduler); one that fails is a bug, and its node may
                // still be running walks: end the run.
                if matches!(event_kind, EventKind::Failed) {
                    let reason = format!("the link to node {slot} failed: {why}");
                    state.finish(&myself, Err(RunError::Internal(reason)));
                } else {
                    state.rejoin(&myself, slot);
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
    /// The report so far (with the restart count) and what the TraceWriter
    /// wrote, once it has flushed.
    async fn collect(&mut self) -> RunResult<S> {
        let report = self
            .collector
            .call(CollectorMsg::Finish, Some(LOCAL_REPLY_TIMEOUT))
            .await
            .map_err(|e| RunError::Internal(format!("cannot reach the collector: {e}")))?;
        match report {
            ractor::rpc::CallResult::Success(mut report) => {
                report.runner_restarts = self.restarts;
                let writer = self.trace.as_ref().map(|(_, writer)| writer.clone());
                finish_trace(writer).await.map(|totals| (report, totals))
            }
            ractor::rpc::CallResult::Timeout => Err(RunError::Internal(
                "the collector did not hand over the report in time".to_string(),
            )),
            ractor::rpc::CallResult::SenderError => Err(RunError::Internal(
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
            let supervisor: ActorCell = myself.get_cell();
            let scheduler = self.scheduler.clone();
            async move {
                let (runner, _) =
                    Actor::spawn_linked(None, WalkRunner::new(), args, supervisor).await?;
                // Announced at once: it takes work while others still start.
                let endpoint = Endpoint::Runner(runner.clone());
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

    async fn spawn_runner(
        &mut self,
        myself: &ActorRef<RunSupervisorMsg>,
        index: usize,
    ) -> Result<(), ActorProcessingErr> {
        self.spawn_runners(myself, index..index + 1).await
    }

    /// Spawns one NodeLink per node and announces each to the Scheduler.
    async fn spawn_links(
        &mut self,
        myself: &ActorRef<RunSupervisorMsg>,
        nodes: NodeWorkers<S>,
    ) -> Result<(), ActorProcessingErr> {
        self.links = Some(LinkSpawn {
            run: nodes.run,
            decode_state: nodes.decode_state,
            heartbeat_timeout: nodes.heartbeat_timeout,
            rejoin: nodes.rejoin,
            next_slot: 0,
            names: HashMap::new(),
            live: 0,
            pending: 0,
            all_lost: None,
        });
        for (slot, (node, runners)) in nodes.nodes.into_iter().enumerate() {
            self.spawn_link(myself, slot, node, runners, false).await?;
        }
        Ok(())
    }

    /// Spawns the NodeLink of slot `slot` (a new slot when `added`).
    async fn spawn_link(
        &mut self,
        myself: &ActorRef<RunSupervisorMsg>,
        slot: usize,
        node: RemoteNode,
        runners: usize,
        added: bool,
    ) -> Result<(), ActorProcessingErr> {
        let links = self.links.as_mut().expect("cluster runs have links");
        links.next_slot = links.next_slot.max(slot + 1);
        links.live += 1;
        links.names.insert(slot, node.name.clone());
        let args = NodeLinkArgs {
            slot,
            node,
            run: links.run,
            order: Arc::clone(&self.order),
            decode_state: links.decode_state,
            heartbeat_timeout: links.heartbeat_timeout,
            walk_timeout: self.walk_timeout,
            scheduler: self.scheduler.clone(),
            collector: self.collector.clone(),
            writer: self.trace.as_ref().map(|(_, writer)| writer.clone()),
            supervisor: myself.clone(),
        };
        let (link, _) = Actor::spawn_linked(None, NodeLink::new(), args, myself.get_cell()).await?;
        self.roles.insert(link.get_id(), Role::Link(slot));
        let endpoint = Endpoint::Node(link);
        if added {
            let credits = node_credits(runners, self.walk_timeout.is_some());
            let spec = SlotSpec { credits, home: slot };
            self.scheduler.cast(SchedulerMsg::SlotAdded { spec, endpoint })?;
        } else {
            self.scheduler.cast(SchedulerMsg::EndpointUp { slot, endpoint })?;
        }
        Ok(())
    }

    /// The link of `slot` stopped: its node was lost. With a respawner, the
    /// node is restarted and rejoins (in a task: restarting takes time).
    fn rejoin(&mut self, myself: &ActorRef<RunSupervisorMsg>, slot: usize) {
        let Some(links) = self.links.as_mut() else { return };
        links.live = links.live.saturating_sub(1);
        let (Some(rejoin), Some(name)) = (links.rejoin.clone(), links.names.get(&slot).cloned())
        else {
            // No rejoin: if every node is gone, the run ends now.
            if links.live == 0
                && links.pending == 0
                && let Some(reason) = links.all_lost.take()
            {
                let _ = myself.cast(RunSupervisorMsg::AllNodesLost(reason));
            }
            return;
        };
        links.pending += 1;
        let myself = myself.clone();
        tokio::spawn(async move {
            let message = match rejoin_node(&rejoin, &name).await {
                Ok((node, runners)) => RunSupervisorMsg::NodeJoined(node, runners),
                Err(why) => RunSupervisorMsg::RejoinFailed(format!("{name}: {why}")),
            };
            let _ = myself.cast(message);
        });
    }

    fn runner_args(&self, myself: &ActorRef<RunSupervisorMsg>, index: usize) -> RunnerArgs<S> {
        RunnerArgs {
            index,
            order: Arc::clone(&self.order),
            initial: Some(self.initial.clone()),
            store: Arc::clone(&self.store),
            blocks: self.blocks,
            gather: self.gather,
            walk_timeout: self.walk_timeout,
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

/// Batches in flight on a node of `runners` threads. With a walk timeout
/// (soaks), one per thread and none queued: when the node crashes or hangs,
/// the walks it was running are exactly the ones in flight, so the blame
/// falls on them alone.
fn node_credits(runners: usize, isolate: bool) -> usize {
    if isolate { runners } else { CREDITS_PER_RUNNER * runners }
}

/// Restarts node `name`, connects to it and opens the run on it.
async fn rejoin_node(rejoin: &Rejoin, name: &str) -> Result<(RemoteNode, usize), String> {
    let respawn = Arc::clone(&rejoin.respawn);
    let owned = name.to_string();
    let address = tokio::task::spawn_blocking(move || respawn.respawn(&owned))
        .await
        .map_err(|e| e.to_string())??;
    let node = rejoin.connection.join(&address).await.map_err(|e| e.to_string())?;
    let hello = wire::encode(&Request::Hello(rejoin.hello.clone()));
    match call(&node.agent, hello, Some(Duration::from_secs(60))).await {
        Ok(Reply::Welcome { node: name, runners }) => {
            let mut node = node;
            node.name = name;
            Ok((node, runners as usize))
        }
        Ok(other) => Err(format!("it answered {other:?}")),
        Err(Trouble::Lost(why) | Trouble::Broken(why)) => Err(why),
        Err(Trouble::TimedOut(_)) => Err("no answer".to_string()),
    }
}

/// The Scheduler's outcomes, delivered to the Collector and the trace.
struct CollectorOutcomes<S> {
    collector: ActorRef<CollectorMsg<S>>,
    trace: Option<(Arc<TraceEncoder>, ActorRef<TraceWriterMsg>)>,
}

impl<S: Send + 'static> Outcomes for CollectorOutcomes<S> {
    fn aborted(&self, walks: AbortedWalks) -> Result<(), String> {
        self.collector.cast(CollectorMsg::Aborted(walks)).map_err(|e| e.to_string())
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
            .cast(CollectorMsg::BatchOutcome { counts, failed, finals: Vec::new() })
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
