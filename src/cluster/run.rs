//! A run on a cluster: the handshake ([`open_on`], the one place a `Hello`
//! is sent), the remote side of the run ([`ClusterRun`], started by the
//! RunSupervisor through `RemoteWorkers`), and [`run_on_cluster`], which
//! puts them together over a [`Cluster`]'s membership.
//!
//! ClusterRun, per run:
//! - Spawned (linked) by the RunSupervisor; spawns one NodeLink per node the
//!   run was opened on and announces each to the Scheduler (`EndpointUp`).
//! - Registers with the Membership and receives its `MemberEvent`s: a lost
//!   node's link is told `Lost` (it reports to the Scheduler and stops); a
//!   node that dropped the run is treated the same, then reopened; a node
//!   that comes back (restarted, or reachable again) gets the run opened
//!   again (`Hello`, a new run key) and a new slot (`SlotAdded`); a given-up
//!   node is remembered. Log lines of the run are logged here, prefixed with
//!   the node.
//! - From the RunSupervisor: `AllSlotsLost` (when no node is left: it waits
//!   while the membership may bring one back, and answers `GiveUp` once
//!   every node is given up), and `Stopping` (links tell their nodes to
//!   start nothing more; no node is reopened).
//! - Shutdown: on stop, each node still in the run is pinged once more for
//!   its last log lines and told `EndRun`; the run unregisters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::actors::run_supervisor::{
    CREDITS_PER_RUNNER, RemoteContext, RemoteHandle, RemoteNotice, RemoteWorkers, RunSupervisorMsg,
};
use crate::actors::scheduler::{Endpoint, SchedulerMsg};
use crate::cluster::link::{NodeLink, NodeLinkArgs, NodeLinkMsg};
use crate::cluster::membership::{MemberView, MembershipMsg};
use crate::cluster::wire::{
    self, Hello, PROTOCOL_VERSION, Reply, Request, RunKey, RunLogs, Trouble, call,
};
use crate::cluster::{Cluster, ClusterError};
use crate::exec::{ErasedOrder, Runnable};
use crate::model::dispatch::{Loss, SlotSpec};
use crate::model::fixtures::StartKind;
use crate::model::outcome::Report;
use crate::order::{Chain, WalkOrder};
use crate::runtime::{RunError, RunOptions, blocks_for, default_threads, run_on};
use crate::trace::{RunId, option_json};

/// How long a node may take to open a run: the suite's setup runs then.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// What the Membership tells a run.
#[derive(Clone)]
pub(crate) enum MemberEvent {
    /// A node is up (again).
    Up(MemberView),
    /// A node is lost.
    Lost { member: usize, reason: String },
    /// A node answers but no longer has this run key.
    Dropped { member: usize, key: RunKey },
    /// A node is given up for good.
    GaveUp { member: usize, reason: String },
    /// A run's log lines from a node.
    Logs { name: String, logs: RunLogs },
}

/// Requests and events to a ClusterRun.
pub(crate) enum ClusterRunMsg {
    /// From the Membership.
    Member(MemberEvent),
    /// From the RunSupervisor.
    Notice(RemoteNotice),
    /// A reopening of the run on a node ended.
    Opened { view: MemberView, result: Result<(RunKey, usize), String> },
    /// Time to ask whether every node is given up (while none is left).
    CheckGivenUp,
}

// Local only: never crosses a node.
impl ractor::Message for ClusterRunMsg {}

/// The run opened on one node.
#[derive(Clone)]
pub(crate) struct Opened {
    pub(crate) view: MemberView,
    pub(crate) key: RunKey,
    pub(crate) runners: usize,
}

/// Why a run could not be opened on a node.
#[derive(Debug)]
pub(crate) enum NotOpened {
    /// The node answered no (protocol, suite, fingerprint, its limits), or
    /// something no retry changes.
    Refused(String),
    /// The node or its connection went away while opening: a loss, which
    /// the membership handles (the run opens there when it is up again).
    Lost(String),
}

impl NotOpened {
    fn reason(self) -> String {
        match self {
            NotOpened::Refused(reason) | NotOpened::Lost(reason) => reason,
        }
    }
}

/// Opens the run on `view`'s node under a fresh key: `Welcome` gives its
/// runner threads; anything else is why not.
pub(crate) async fn open_on(view: &MemberView, hello: &Hello) -> Result<Opened, NotOpened> {
    let mut hello = hello.clone();
    hello.run = uuid::Uuid::new_v4().as_u128();
    let request = wire::encode(&Request::Hello(hello.clone()));
    match call(&view.agent, request, Some(OPEN_TIMEOUT)).await {
        Ok(Reply::Welcome { runners }) => {
            Ok(Opened { view: view.clone(), key: hello.run, runners: runners as usize })
        }
        Ok(Reply::Refused(reason)) => Err(NotOpened::Refused(reason)),
        Ok(other) => {
            Err(NotOpened::Refused(format!("unexpected answer to the handshake: {other:?}")))
        }
        Err(Trouble::Lost(why) | Trouble::Expired(why)) => {
            Err(NotOpened::Lost(format!("lost while opening the run: {why}")))
        }
        Err(Trouble::Broken(why)) => Err(NotOpened::Refused(why)),
    }
}

/// Batches in flight on a node of `runners` threads. With a walk timeout
/// (soaks), one per thread and none queued: when the node crashes or hangs,
/// the walks it was running are exactly the ones in flight.
fn node_credits(runners: usize, isolate: bool) -> usize {
    if isolate { runners } else { CREDITS_PER_RUNNER * runners }
}

/// Decodes a walk's final state sent back by a node.
pub(crate) type DecodeState<S> = fn(&[u8]) -> postcard::Result<S>;

/// Runs `order` on the nodes of `cluster`, each of which serves `suite`
/// (the same build: the handshake compares walk-order fingerprints). Each
/// node builds its own walk states and fixtures with the suite's setup;
/// `options`' fixtures are the coordinator's, for its serial actions.
/// `decode_state` reads the final states nodes send back (`None` when the
/// state is not serde: gathering states is then refused). Blocking, like
/// [`crate::run`].
pub(crate) fn run_on_cluster<S, C, K>(
    cluster: &Cluster,
    order: &WalkOrder<S, C>,
    options: RunOptions<S, K>,
    suite: &str,
    node_threads: Option<usize>,
    decode_state: Option<DecodeState<S>>,
) -> Result<Report<S>, ClusterError>
where
    S: Send + 'static,
    C: Chain<S>,
    K: StartKind<S>,
{
    let decode_state = match (decode_state, options.gather_states) {
        (Some(decode), _) => decode,
        (None, false) => no_states::<S>,
        (None, true) => {
            return Err(ClusterError::Local(format!(
                "suite {suite} keeps its walk states on the nodes (they are not serde): its final \
                 states cannot be gathered"
            )));
        }
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(RunError::InsideRuntime.into());
    }
    let started = Instant::now();
    let runnable: Arc<dyn ErasedOrder<S>> =
        Arc::new(Runnable::<S, C, K>::new(order.clone()).map_err(RunError::from)?);
    let space = runnable.space().clone();
    let values = option_json(order, &space).map_err(RunError::from)?;
    let fingerprint = crate::model::trace::fingerprint(&space, &values);
    let membership = cluster.membership().clone();
    let heartbeat_timeout = cluster.heartbeat_timeout();
    let coordinator = cluster.coordinator();
    cluster.block_on(async move {
        let views = members_up(&membership).await?;
        let run_id = options.run_id.unwrap_or_else(RunId::new);
        let options = options.run_id(run_id);
        let per_node = node_threads.unwrap_or_else(default_threads);
        let blocks = blocks_for(&space, per_node * views.len(), &options);
        let traced = options.log_dir.is_some() || options.append.is_some();
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            suite: suite.to_string(),
            fingerprint,
            run: 0,
            coordinator,
            runners: node_threads.map(|t| t as u32),
            blocks,
            gather: options.gather_states,
            trace: traced,
            round: options.append.as_ref().map(|a| a.tag),
            log_level: crate::cluster::logs::current_level(),
            lease_ms: heartbeat_timeout.as_millis() as u64,
            in_flight: options.in_flight.unwrap_or(crate::exec::DEFAULT_IN_FLIGHT) as u32,
        };
        // Every node at once; any refusal ends the run before it starts. A
        // node lost while opening is a loss like any other: the run goes on
        // without it and opens there when the membership has it up again.
        let answers = futures::future::join_all(views.iter().map(|v| open_on(v, &hello))).await;
        let mut opened = Vec::new();
        let mut refusal = None;
        for (view, answer) in views.iter().zip(answers) {
            match answer {
                Ok(node) => opened.push(node),
                Err(NotOpened::Lost(reason)) => {
                    tracing::warn!(node = %view.label, %reason, "node lost as the run opened");
                }
                Err(NotOpened::Refused(reason)) => {
                    refusal
                        .get_or_insert(ClusterError::Refused { node: view.label.clone(), reason });
                }
            }
        }
        if let Some(refusal) = refusal {
            end_runs(opened.iter().map(|o| (o.view.clone(), o.key))).await;
            return Err(refusal);
        }
        let workers = ClusterWorkers {
            opened,
            hello,
            membership,
            decode_state,
            walk_timeout: options.walk_timeout,
        };
        let values = traced.then_some(values);
        let workers = crate::actors::run_supervisor::Workers::Remote(Box::new(workers));
        Ok(run_on(runnable, values, options, workers, blocks, started).await?)
    })
}

/// The members up now.
async fn members_up(membership: &ActorRef<MembershipMsg>) -> Result<Vec<MemberView>, ClusterError> {
    let views = membership
        .call(MembershipMsg::Views, Some(Duration::from_secs(10)))
        .await
        .map_err(|_| ClusterError::Local("the cluster's membership is gone".to_string()))?;
    match views {
        ractor::rpc::CallResult::Success(views) => Ok(views),
        _ => Err(ClusterError::Local("the cluster's membership did not answer".to_string())),
    }
}

/// Tells nodes their runs are over (a refused start).
async fn end_runs(runs: impl Iterator<Item = (MemberView, RunKey)>) {
    let ends = runs.map(|(view, key)| async move {
        let request = wire::encode(&Request::EndRun { run: key });
        let _ = call(&view.agent, request, Some(Duration::from_secs(5))).await;
    });
    futures::future::join_all(ends).await;
}

/// The decoder of a run whose states never leave their node (none is sent
/// back when states are not gathered).
fn no_states<S>(_: &[u8]) -> postcard::Result<S> {
    Err(postcard::Error::DeserializeBadEncoding)
}

/// The remote side of a cluster run, before it starts.
pub(crate) struct ClusterWorkers<S> {
    opened: Vec<Opened>,
    hello: Hello,
    membership: ActorRef<MembershipMsg>,
    decode_state: DecodeState<S>,
    walk_timeout: Option<Duration>,
}

impl<S: Send + 'static> RemoteWorkers<S> for ClusterWorkers<S> {
    fn slots(&self) -> Vec<SlotSpec> {
        let isolate = self.walk_timeout.is_some();
        (0..self.opened.len())
            .map(|home| SlotSpec {
                credits: node_credits(self.opened[home].runners, isolate),
                home,
            })
            .collect()
    }

    fn runners(&self) -> usize {
        self.opened.iter().map(|o| o.runners).sum()
    }

    fn start(
        self: Box<Self>,
        ctx: RemoteContext<S>,
    ) -> BoxFuture<'static, Result<RemoteHandle, ActorProcessingErr>> {
        Box::pin(async move {
            let supervisor = ctx.supervisor.get_cell();
            let args = ClusterRunArgs { workers: *self, ctx };
            let (run, _) = Actor::spawn_linked(None, ClusterRun::new(), args, supervisor).await?;
            let notify = run.clone();
            Ok(RemoteHandle {
                cell: run.get_cell(),
                notify: Box::new(move |notice| {
                    let _ = notify.cast(ClusterRunMsg::Notice(notice));
                }),
            })
        })
    }
}

pub(crate) struct ClusterRunArgs<S> {
    workers: ClusterWorkers<S>,
    ctx: RemoteContext<S>,
}

pub(crate) struct ClusterRun<S>(std::marker::PhantomData<fn() -> S>);

impl<S> ClusterRun<S> {
    fn new() -> Self {
        ClusterRun(std::marker::PhantomData)
    }
}

/// The run on one node.
struct OnNode {
    name: String,
    agent: ActorRef<crate::cluster::wire::AgentMsg>,
    key: RunKey,
    link: ActorRef<NodeLinkMsg>,
}

pub(crate) struct ClusterRunState<S> {
    run: u64,
    hello: Hello,
    membership: ActorRef<MembershipMsg>,
    decode_state: DecodeState<S>,
    walk_timeout: Option<Duration>,
    ctx: RemoteContext<S>,
    /// The run on each node it is open on, by member.
    nodes: HashMap<usize, OnNode>,
    links: HashMap<ActorId, usize>,
    /// Members up, as the membership last said.
    up: HashMap<usize, MemberView>,
    /// Members the run is being reopened on.
    opening: Vec<usize>,
    /// Members that refused to reopen the run, with why: not asked again
    /// until they come back anew.
    refused: HashMap<usize, String>,
    /// Members given up for good.
    gave_up: HashMap<usize, String>,
    next_slot: usize,
    stopping: bool,
    /// No slot is left: waiting for a node to come back.
    all_lost: bool,
}

/// Ids of the runs of this process, for the membership.
static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl<S: Send + 'static> Actor for ClusterRun<S> {
    type Msg = ClusterRunMsg;
    type State = ClusterRunState<S>;
    type Arguments = ClusterRunArgs<S>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ClusterRunArgs<S>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ClusterRunArgs { workers, ctx } = args;
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let up = workers
            .membership
            .call(
                |reply| MembershipMsg::Register { run, listener: myself.clone(), reply },
                Some(Duration::from_secs(10)),
            )
            .await?;
        let up = match up {
            ractor::rpc::CallResult::Success(up) => up,
            _ => return Err("the cluster's membership did not answer".into()),
        };
        let mut state = ClusterRunState {
            run,
            hello: workers.hello,
            membership: workers.membership,
            decode_state: workers.decode_state,
            walk_timeout: workers.walk_timeout,
            ctx,
            nodes: HashMap::new(),
            links: HashMap::new(),
            up: up.iter().map(|v| (v.member, v.clone())).collect(),
            opening: Vec::new(),
            refused: HashMap::new(),
            gave_up: HashMap::new(),
            next_slot: workers.opened.len(),
            stopping: false,
            all_lost: false,
        };
        for (slot, opened) in workers.opened.into_iter().enumerate() {
            let member = opened.view.member;
            state.membership.cast(MembershipMsg::SetKey { run, member, key: Some(opened.key) })?;
            let link = state.spawn_link(&myself, slot, &opened).await?;
            state
                .ctx
                .scheduler
                .cast(SchedulerMsg::EndpointUp { slot, endpoint: endpoint(&link) })?;
            // Lost (or restarted) between the handshake and now: the
            // membership's view says so, and the run on it is gone.
            let same = up
                .iter()
                .any(|v| v.member == member && v.agent.get_id() == opened.view.agent.get_id());
            if !same {
                let reason = "lost while the run started".to_string();
                state.forget(member)?;
                let _ = link.cast(NodeLinkMsg::Lost { reason, loss: Loss::Crash });
            }
        }
        state.fill(&myself);
        Ok(state)
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The nodes' last log lines, and the end of the run there (they drop
        // it on their own too once the membership stops renewing it).
        let last = Some(Duration::from_secs(5));
        let coordinator = state.hello.coordinator;
        let ends = state.nodes.values().map(|node| {
            let agent = node.agent.clone();
            let (key, label) = (node.key, node.name.clone());
            async move {
                let ping = wire::encode(&Request::Ping { coordinator, runs: vec![key] });
                if let Ok(Reply::Pong { logs, .. }) = call(&agent, ping, last).await {
                    for logs in logs.into_iter().filter(|l| l.run == key) {
                        log_node_lines(&label, logs);
                    }
                }
                let _ = call(&agent, wire::encode(&Request::EndRun { run: key }), last).await;
            }
        });
        futures::future::join_all(ends).await;
        let _ = state.membership.cast(MembershipMsg::Unregister { run: state.run });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ClusterRunMsg::Member(event) => state.member_event(&myself, event)?,
            ClusterRunMsg::Notice(RemoteNotice::AllSlotsLost) => {
                state.all_lost = true;
                myself.cast(ClusterRunMsg::CheckGivenUp)?;
            }
            ClusterRunMsg::Notice(RemoteNotice::Stopping(_kind)) => {
                state.stopping = true;
                for node in state.nodes.values() {
                    let _ = node.link.cast(NodeLinkMsg::StopRun);
                }
            }
            ClusterRunMsg::Opened { view, result } => {
                state.opening.retain(|&m| m != view.member);
                let current = state.up.get(&view.member).map(|v| v.attempt);
                match result {
                    // Still the same connection, and the run goes on.
                    Ok((key, runners)) if !state.stopping && current == Some(view.attempt) => {
                        let opened = Opened { view, key, runners };
                        state.join(&myself, opened).await?;
                    }
                    Ok((key, _)) => end_runs(std::iter::once((view, key))).await,
                    Err(reason) => {
                        tracing::warn!(node = %view.label, %reason, "cannot reopen the run on a node");
                        state.refused.insert(view.member, reason);
                        myself.cast(ClusterRunMsg::CheckGivenUp)?;
                    }
                }
                state.fill(&myself);
            }
            ClusterRunMsg::CheckGivenUp => state.check_given_up(&myself).await?,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error)
                if state.links.remove(&cell.get_id()).is_some() =>
            {
                // A link that fails is a bug; its node may still be running
                // walks: end the run.
                let reason = format!("a node link failed: {error}");
                state.ctx.supervisor.cast(RunSupervisorMsg::Fatal(reason))?;
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                // A link stops once its node is lost (it told the Scheduler).
                if let Some(member) = state.links.remove(&cell.get_id())
                    && state.nodes.get(&member).is_some_and(|n| n.link.get_id() == cell.get_id())
                {
                    state.forget(member)?;
                }
                // A node that is still up (it dropped the run, or a batch
                // call failed while its connection lived) gets it again.
                state.fill(&myself);
            }
            _ => {}
        }
        Ok(())
    }
}

/// The Scheduler's endpoint for a link.
fn endpoint(link: &ActorRef<NodeLinkMsg>) -> Endpoint {
    let link = link.clone();
    Endpoint(Arc::new(move |job| link.cast(NodeLinkMsg::RunBatch(job)).is_ok()))
}

impl<S: Send + 'static> ClusterRunState<S> {
    async fn spawn_link(
        &mut self,
        myself: &ActorRef<ClusterRunMsg>,
        slot: usize,
        opened: &Opened,
    ) -> Result<ActorRef<NodeLinkMsg>, ActorProcessingErr> {
        let args = NodeLinkArgs {
            slot,
            member: opened.view.member,
            attempt: opened.view.attempt,
            label: opened.view.label.clone(),
            agent: opened.view.agent.clone(),
            run: opened.key,
            order: Arc::clone(&self.ctx.order),
            decode_state: self.decode_state,
            walk_timeout: self.walk_timeout,
            scheduler: self.ctx.scheduler.clone(),
            collector: self.ctx.collector.clone(),
            writer: self.ctx.writer.clone(),
            supervisor: self.ctx.supervisor.clone(),
            membership: self.membership.clone(),
        };
        let (link, _) = Actor::spawn_linked(None, NodeLink::new(), args, myself.get_cell()).await?;
        self.links.insert(link.get_id(), opened.view.member);
        self.nodes.insert(
            opened.view.member,
            OnNode {
                name: opened.view.name.clone(),
                agent: opened.view.agent.clone(),
                key: opened.key,
                link: link.clone(),
            },
        );
        Ok(link)
    }

    /// A reopened node joins the run as a new slot.
    async fn join(
        &mut self,
        myself: &ActorRef<ClusterRunMsg>,
        opened: Opened,
    ) -> Result<(), ActorProcessingErr> {
        let member = opened.view.member;
        let run = self.run;
        self.membership.cast(MembershipMsg::SetKey { run, member, key: Some(opened.key) })?;
        let slot = self.next_slot;
        self.next_slot += 1;
        let link = self.spawn_link(myself, slot, &opened).await?;
        tracing::info!(node = %opened.view.label, slot, "a node rejoins the run");
        let spec = SlotSpec {
            credits: node_credits(opened.runners, self.walk_timeout.is_some()),
            home: slot,
        };
        self.ctx.scheduler.cast(SchedulerMsg::SlotAdded {
            slot,
            spec,
            endpoint: endpoint(&link),
        })?;
        self.all_lost = false;
        Ok(())
    }

    fn member_event(
        &mut self,
        myself: &ActorRef<ClusterRunMsg>,
        event: MemberEvent,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            MemberEvent::Up(view) => {
                // Up anew (a new connection): a refusal before is forgotten.
                self.refused.remove(&view.member);
                self.gave_up.remove(&view.member);
                self.up.insert(view.member, view);
            }
            MemberEvent::Lost { member, reason } => {
                self.up.remove(&member);
                if let Some(node) = self.forget(member)? {
                    let _ = node.link.cast(NodeLinkMsg::Lost { reason, loss: Loss::Crash });
                }
            }
            MemberEvent::Dropped { member, key } => {
                if self.nodes.get(&member).is_some_and(|n| n.key == key)
                    && let Some(node) = self.forget(member)?
                {
                    // It answers: the run is opened there again (`fill`),
                    // under a new key.
                    let reason = "the node dropped the run (its lease ran out)".to_string();
                    let _ = node.link.cast(NodeLinkMsg::Lost { reason, loss: Loss::Dropped });
                }
            }
            MemberEvent::GaveUp { member, reason } => {
                self.up.remove(&member);
                self.gave_up.insert(member, reason);
                myself.cast(ClusterRunMsg::CheckGivenUp)?;
            }
            MemberEvent::Logs { name, logs } => log_node_lines(&name, logs),
        }
        self.fill(myself);
        Ok(())
    }

    /// Opens the run on every node that is up and has neither the run, nor
    /// an opening under way, nor a refusal.
    fn fill(&mut self, myself: &ActorRef<ClusterRunMsg>) {
        if self.stopping {
            return;
        }
        let missing: Vec<MemberView> = self
            .up
            .values()
            .filter(|v| {
                !self.nodes.contains_key(&v.member)
                    && !self.opening.contains(&v.member)
                    && !self.refused.contains_key(&v.member)
            })
            .cloned()
            .collect();
        for view in missing {
            self.reopen(myself, view);
        }
    }

    /// The run is no longer on `member`'s node: its key leaves the pings.
    fn forget(&mut self, member: usize) -> Result<Option<OnNode>, ActorProcessingErr> {
        let node = self.nodes.remove(&member);
        if node.is_some() {
            let run = self.run;
            self.membership.cast(MembershipMsg::SetKey { run, member, key: None })?;
        }
        Ok(node)
    }

    /// Opens the run on a node again (in a task: the node runs the setup).
    fn reopen(&mut self, myself: &ActorRef<ClusterRunMsg>, view: MemberView) {
        if self.stopping
            || self.opening.contains(&view.member)
            || self.nodes.contains_key(&view.member)
        {
            return;
        }
        self.opening.push(view.member);
        let hello = self.hello.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = open_on(&view, &hello).await.map(|o| (o.key, o.runners));
            let result = result.map_err(NotOpened::reason);
            let _ = myself.cast(ClusterRunMsg::Opened { view, result });
        });
    }

    /// With no slot left: ends the run once every node is given up, else
    /// looks again in a moment.
    async fn check_given_up(
        &mut self,
        myself: &ActorRef<ClusterRunMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if !self.all_lost || self.stopping || !self.nodes.is_empty() || !self.opening.is_empty() {
            return Ok(());
        }
        let all =
            self.membership.call(MembershipMsg::AllGivenUp, Some(Duration::from_secs(10))).await?;
        match all {
            ractor::rpc::CallResult::Success(Some(reason)) => {
                let reason = self.gave_up.values().next().cloned().unwrap_or(reason);
                self.ctx.supervisor.cast(RunSupervisorMsg::GiveUp(reason))?;
            }
            _ => {
                myself.send_after(Duration::from_millis(250), || ClusterRunMsg::CheckGivenUp);
            }
        }
        Ok(())
    }
}

/// Logs a node's lines here, prefixed with its name, at their own levels.
pub(crate) fn log_node_lines(node: &str, logs: RunLogs) {
    for (level, line) in logs.lines {
        match level {
            0 => tracing::error!(target: "combtest::node", "[{node}] {line}"),
            1 => tracing::warn!(target: "combtest::node", "[{node}] {line}"),
            2 => tracing::info!(target: "combtest::node", "[{node}] {line}"),
            3 => tracing::debug!(target: "combtest::node", "[{node}] {line}"),
            _ => tracing::trace!(target: "combtest::node", "[{node}] {line}"),
        }
    }
    if logs.dropped > 0 {
        tracing::warn!(
            target: "combtest::node",
            "[{node}] {} log lines dropped (over the per-heartbeat cap)",
            logs.dropped
        );
    }
}
