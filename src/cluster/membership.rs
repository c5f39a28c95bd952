//! Membership: a coordinator's sessions with its nodes, opened once and
//! shared by every run (and every soak round) of the process.
//!
//! - Its decisions are the pure `model::membership::Members`: it feeds them
//!   `Tick`s (every 50 ms), connection results, pongs and closes, with the
//!   time of the [`PauseClock`] (time this process was stopped does not
//!   count), and carries out the commands: connect, ping, lose, restart, give
//!   up.
//! - **One connection per node at a time**, each with a NodeServer of its
//!   own named `combtest-<coordinator id>-<n>` (unique per connection, so the
//!   node never sees two sessions under one name), over a [`Watched`] TCP
//!   stream. A connection is up once the session is ready, the node's agent
//!   is found among the session's own children, and it answered `Join`.
//! - **Runs subscribe** (`Register`): a run's `ClusterRun` gets a
//!   `MemberEvent` when a node comes up, is lost, drops the run, or is given
//!   up, and the run's log lines; the run keys it registers per node go into
//!   every `Ping`, which renews their leases on the node.
//! - Supervision: spawned by `Cluster::open`, unlinked; `Close` stops every
//!   connection and it. Connection attempts, pings and restarts run in tasks
//!   (or blocking threads) of their own and report back as messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};
use tokio::sync::mpsc;

use crate::clock::PauseClock;
use crate::cluster::ClusterError;
use crate::cluster::launcher::{Launcher, Started};
use crate::cluster::run::{ClusterRunMsg, MemberEvent};
use crate::cluster::transport::{Tcp, Transport, Watch, kill_tree};
use crate::cluster::wire::{
    self, AGENT_GROUP, AgentMsg, Coordinator, Joined, PROTOCOL_VERSION, Reply, Request, RunKey,
    RunLogs, Trouble, call,
};
use crate::model::membership::{
    ConnectFailure, MemberCommand, MemberSettings, MemberState, Members, Origin,
};

/// How long a connection may take to open, authenticate and join.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the membership looks at its members.
const TICK: Duration = Duration::from_millis(50);

/// A node as runs see it.
#[derive(Clone)]
pub(crate) struct MemberView {
    pub(crate) member: usize,
    /// Its name, and its process id when known: `local-1 (pid 812)`.
    pub(crate) label: String,
    /// Its name alone (log prefixes).
    pub(crate) name: String,
    /// The connection it came up on (a later one is another view).
    pub(crate) attempt: u32,
    pub(crate) agent: ActorRef<AgentMsg>,
}

/// A node's connection, once up.
pub(crate) struct Conn {
    server: ActorRef<NodeServerMessage>,
    agent: ActorRef<AgentMsg>,
    joined: Joined,
    watch: Arc<Watch>,
    /// Fires when the session closes.
    closed: mpsc::UnboundedReceiver<SessionEvent>,
}

/// Requests and events to the Membership.
pub(crate) enum MembershipMsg {
    /// Time to look at the members.
    Tick,
    /// A connection attempt ended.
    Connected { member: usize, attempt: u32, result: Result<Box<Conn>, ConnectFailure> },
    /// A connection's session closed.
    Closed { member: usize, attempt: u32 },
    /// A heartbeat came back.
    Pong { member: usize, attempt: u32, unknown: Vec<RunKey>, logs: Vec<RunLogs> },
    /// The launcher restarted a local node (or could not).
    Restarted { member: usize, result: Result<Started, String> },
    /// A run subscribes: the members up now come back.
    Register { run: u64, listener: ActorRef<ClusterRunMsg>, reply: RpcReplyPort<Vec<MemberView>> },
    /// A run's key on a member (`None`: the run is closed there).
    SetKey { run: u64, member: usize, key: Option<RunKey> },
    /// A run is over.
    Unregister { run: u64 },
    /// A run gives up connection `attempt` of a member (a walk timed out on
    /// it, or a call failed); a later connection is not touched.
    Kill { member: usize, attempt: u32, reason: String },
    /// Replies once every member is up or given up (or the join deadline
    /// passed): the first failure, if any.
    WaitJoined(RpcReplyPort<Result<(), ClusterError>>),
    /// The join deadline passed.
    JoinDeadline,
    /// The members up now.
    Views(RpcReplyPort<Vec<MemberView>>),
    /// Whether every member is given up (failed, or down for the give-up
    /// time): the reason, if so.
    AllGivenUp(RpcReplyPort<Option<String>>),
    /// Whether the restart intensity stopped a member (its reason).
    RestartLimit(RpcReplyPort<Option<String>>),
    /// Every member's process id, by member (fault campaigns, tests).
    Pids(RpcReplyPort<Vec<Option<u32>>>),
    /// Close every connection and stop.
    Close(RpcReplyPort<()>),
}

// Local only: never crosses a node.
impl ractor::Message for MembershipMsg {}

pub(crate) struct MembershipArgs {
    pub(crate) coordinator: Coordinator,
    pub(crate) cookie: String,
    pub(crate) settings: MemberSettings,
    /// Remote members' addresses.
    pub(crate) remote: Vec<String>,
    /// Local members, already started.
    pub(crate) local: Vec<Started>,
    pub(crate) launcher: Option<Arc<dyn Launcher>>,
    pub(crate) transport: Arc<dyn Transport>,
}

pub(crate) struct Membership;

struct Member {
    address: String,
    /// Index in the launcher, for local members.
    local: Option<usize>,
    conn: Option<Conn>,
    /// The last failure to connect, for the join report.
    failure: Option<(String, bool)>,
    pid: Option<u32>,
    /// The name it last joined with (a host, `local-N`): it names the
    /// member in logs after its connection is gone.
    name: Option<String>,
}

pub(crate) struct MembershipState {
    args: MembershipArgs,
    model: Members,
    members: Vec<Member>,
    runs: HashMap<u64, RunReg>,
    /// NodeServers started so far (each name is unique).
    servers: u64,
    waiting: Vec<RpcReplyPort<Result<(), ClusterError>>>,
    join_deadline_passed: bool,
    restart_limit: Option<String>,
    tick: Option<ractor::concurrency::JoinHandle<()>>,
}

struct RunReg {
    listener: ActorRef<ClusterRunMsg>,
    keys: HashMap<usize, RunKey>,
}

fn now_ms() -> u64 {
    PauseClock::now().as_millis() as u64
}

impl Actor for Membership {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = MembershipArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: MembershipArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut origins = vec![Origin::Remote; args.remote.len()];
        origins.extend(std::iter::repeat_n(Origin::Local, args.local.len()));
        let (model, commands) = Members::new(args.settings, &origins, now_ms());
        let mut members: Vec<Member> = args
            .remote
            .iter()
            .map(|address| Member {
                address: address.clone(),
                local: None,
                conn: None,
                failure: None,
                pid: None,
                name: None,
            })
            .collect();
        members.extend(args.local.iter().enumerate().map(|(index, started)| Member {
            address: started.address.clone(),
            local: Some(index),
            conn: None,
            failure: None,
            pid: Some(started.pid),
            name: None,
        }));
        let tick = myself.send_interval(TICK, || MembershipMsg::Tick);
        let mut state = MembershipState {
            args,
            model,
            members,
            runs: HashMap::new(),
            servers: 0,
            waiting: Vec::new(),
            join_deadline_passed: false,
            restart_limit: None,
            tick: Some(tick),
        };
        myself.send_after(HANDSHAKE_TIMEOUT, || MembershipMsg::JoinDeadline);
        state.carry_out(&myself, commands);
        Ok(state)
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(tick) = state.tick.take() {
            tick.abort();
        }
        for member in &mut state.members {
            if let Some(conn) = member.conn.take() {
                close(conn);
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MembershipMsg::Tick => {
                let commands = state.model.tick(now_ms());
                state.carry_out(&myself, commands);
            }
            MembershipMsg::Connected { member, attempt, result } => {
                state.connected(&myself, member, attempt, result)
            }
            MembershipMsg::Closed { member, attempt } => {
                let commands = state.model.closed(member, attempt, now_ms());
                state.carry_out(&myself, commands);
            }
            MembershipMsg::Pong { member, attempt, unknown, logs } => {
                state.model.pong(member, attempt);
                if state.model.attempt(member) == attempt {
                    state.pong(member, unknown, logs);
                }
            }
            MembershipMsg::Restarted { member, result } => {
                let result = result.map(|started| {
                    state.members[member].address = started.address;
                    state.members[member].pid = Some(started.pid);
                });
                if let Err(why) = &result {
                    tracing::warn!(node = %state.members[member].address, %why, "cannot restart a lost node this coordinator started");
                }
                let commands = state.model.restarted(member, result, now_ms());
                state.carry_out(&myself, commands);
            }
            MembershipMsg::Register { run, listener, reply } => {
                state.runs.insert(run, RunReg { listener, keys: HashMap::new() });
                let _ = reply.send(state.views());
            }
            MembershipMsg::SetKey { run, member, key } => {
                if let Some(reg) = state.runs.get_mut(&run) {
                    match key {
                        Some(key) => reg.keys.insert(member, key),
                        None => reg.keys.remove(&member),
                    };
                }
            }
            MembershipMsg::Unregister { run } => {
                state.runs.remove(&run);
            }
            MembershipMsg::Kill { member, attempt, reason } => {
                if state.model.attempt(member) != attempt {
                    return Ok(());
                }
                let commands = state.model.kill(member, reason, now_ms());
                state.carry_out(&myself, commands);
            }
            MembershipMsg::WaitJoined(reply) => {
                state.waiting.push(reply);
                state.answer_joins();
            }
            MembershipMsg::JoinDeadline => {
                state.join_deadline_passed = true;
                state.answer_joins();
            }
            MembershipMsg::Views(reply) => {
                let _ = reply.send(state.views());
            }
            MembershipMsg::AllGivenUp(reply) => {
                let now = now_ms();
                let all = (0..state.members.len()).all(|m| state.model.given_up(m, now));
                let reason = all.then(|| {
                    let given_up = humantime::format_duration(Duration::from_millis(
                        state.model.settings().give_up,
                    ));
                    (0..state.members.len())
                        .find_map(|m| match state.model.state(m) {
                            MemberState::Failed(reason) => Some(reason.clone()),
                            _ => None,
                        })
                        .unwrap_or_else(|| format!("no node came back within {given_up}"))
                });
                let _ = reply.send(reason);
            }
            MembershipMsg::RestartLimit(reply) => {
                let _ = reply.send(state.restart_limit.clone());
            }
            MembershipMsg::Pids(reply) => {
                let _ = reply.send(state.members.iter().map(|m| m.pid).collect());
            }
            MembershipMsg::Close(reply) => {
                for member in &mut state.members {
                    if let Some(conn) = member.conn.take() {
                        close(conn);
                    }
                }
                let _ = reply.send(());
                myself.stop(None);
            }
        }
        Ok(())
    }
}

impl MembershipState {
    fn carry_out(&mut self, myself: &ActorRef<MembershipMsg>, commands: Vec<MemberCommand>) {
        for command in commands {
            match command {
                MemberCommand::Connect { member, attempt } => self.connect(myself, member, attempt),
                MemberCommand::Ping { member } => self.ping(myself, member),
                MemberCommand::Lost { member, reason } => {
                    let label = self.label(member);
                    tracing::warn!(node = %label, %reason, "node lost");
                    if let Some(conn) = self.members[member].conn.take() {
                        close(conn);
                    }
                    self.tell_runs(&MemberEvent::Lost { member, reason });
                }
                MemberCommand::Restart { member } => self.restart(myself, member),
                MemberCommand::GiveUp { member, reason } => {
                    let label = self.label(member);
                    tracing::warn!(node = %label, %reason, "node given up");
                    if self.members[member].local.is_some() && reason.contains("restarts within") {
                        self.restart_limit.get_or_insert(reason.clone());
                    }
                    self.members[member].failure.get_or_insert((reason.clone(), true));
                    self.tell_runs(&MemberEvent::GaveUp { member, reason });
                    self.answer_joins();
                }
            }
        }
    }

    /// `local-1 (pid 812)`, or the address before a join.
    fn label(&self, member: usize) -> String {
        let m = &self.members[member];
        let name = match (&m.conn, &m.name) {
            (Some(c), _) => c.joined.node.clone(),
            (None, Some(name)) => format!("{name} at {}", m.address),
            (None, None) => m.address.clone(),
        };
        match m.conn.as_ref().map(|c| c.joined.pid).or(m.pid) {
            Some(pid) => format!("{name} (pid {pid})"),
            None => name,
        }
    }

    fn views(&self) -> Vec<MemberView> {
        (0..self.members.len()).filter_map(|member| self.view(member)).collect()
    }

    fn view(&self, member: usize) -> Option<MemberView> {
        let conn = self.members[member].conn.as_ref()?;
        Some(MemberView {
            member,
            label: self.label(member),
            name: conn.joined.node.clone(),
            attempt: self.model.attempt(member),
            agent: conn.agent.clone(),
        })
    }

    fn tell_runs(&self, event: &MemberEvent) {
        for reg in self.runs.values() {
            let _ = reg.listener.cast(ClusterRunMsg::Member(event.clone()));
        }
    }

    fn connect(&mut self, myself: &ActorRef<MembershipMsg>, member: usize, attempt: u32) {
        self.servers += 1;
        let name = format!("combtest-{:032x}-{}", self.args.coordinator, self.servers);
        let address = self.members[member].address.clone();
        let cookie = self.args.cookie.clone();
        let coordinator = self.args.coordinator;
        // A node this process started on loopback is reached in plain TCP
        // (its traffic never leaves the machine, and it has no
        // certificate), unless its launcher gave it the TLS files (SSH).
        let given_tls = self.args.launcher.as_ref().is_some_and(|l| l.tls());
        let plain = self.members[member].local.is_some() && !given_tls && on_loopback(&address);
        let transport = match plain {
            true => Arc::new(Tcp) as Arc<dyn Transport>,
            false => Arc::clone(&self.args.transport),
        };
        let myself = myself.clone();
        tokio::spawn(async move {
            let opening = open(&*transport, &address, &cookie, name, coordinator);
            let result =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, opening).await.unwrap_or_else(|_| {
                    Err(ConnectFailure::Transient(format!(
                        "cannot reach node {address}: no cluster handshake within {}s (is \
                             it a `combtest-node serve`?)",
                        HANDSHAKE_TIMEOUT.as_secs()
                    )))
                });
            let _ = myself.cast(MembershipMsg::Connected { member, attempt, result });
        });
    }

    fn connected(
        &mut self,
        myself: &ActorRef<MembershipMsg>,
        member: usize,
        attempt: u32,
        result: Result<Box<Conn>, ConnectFailure>,
    ) {
        if self.model.attempt(member) != attempt
            || *self.model.state(member) != MemberState::Connecting
        {
            if let Ok(conn) = result {
                close(*conn); // Too late: a newer attempt is under way.
            }
            return;
        }
        match result {
            Ok(conn) => {
                let mut conn = *conn;
                let mut closed = std::mem::replace(&mut conn.closed, mpsc::unbounded_channel().1);
                let watcher = myself.clone();
                tokio::spawn(async move {
                    if closed.recv().await.is_some() {
                        let _ = watcher.cast(MembershipMsg::Closed { member, attempt });
                    }
                });
                tracing::info!(node = %conn.joined.node, pid = conn.joined.pid, "node joined");
                self.members[member].pid = Some(conn.joined.pid);
                self.members[member].name = Some(conn.joined.node.clone());
                self.members[member].failure = None;
                self.members[member].conn = Some(conn);
                let commands = self.model.connected(member, attempt, now_ms());
                self.carry_out(myself, commands);
                if let Some(view) = self.view(member) {
                    self.tell_runs(&MemberEvent::Up(view));
                }
            }
            Err(failure) => {
                let (text, permanent) = match &failure {
                    ConnectFailure::Transient(text) => (text.clone(), false),
                    ConnectFailure::Permanent(text) => (text.clone(), true),
                };
                tracing::debug!(node = %self.members[member].address, %text, "connection failed");
                self.members[member].failure = Some((text, permanent));
                let commands = self.model.connect_failed(member, attempt, failure, now_ms());
                self.carry_out(myself, commands);
            }
        }
        self.answer_joins();
    }

    fn ping(&mut self, myself: &ActorRef<MembershipMsg>, member: usize) {
        let Some(conn) = &self.members[member].conn else { return };
        let runs: Vec<RunKey> =
            self.runs.values().filter_map(|reg| reg.keys.get(&member).copied()).collect();
        let request = wire::encode(&Request::Ping { coordinator: self.args.coordinator, runs });
        let agent = conn.agent.clone();
        let attempt = self.model.attempt(member);
        let timeout = Duration::from_millis(2 * self.model.settings().heartbeat_timeout);
        let myself = myself.clone();
        tokio::spawn(async move {
            match call(&agent, request, Some(timeout)).await {
                Ok(Reply::Pong { unknown, logs }) => {
                    let _ = myself.cast(MembershipMsg::Pong { member, attempt, unknown, logs });
                }
                Ok(other) => tracing::warn!(?other, "unexpected answer to a heartbeat"),
                // No answer: the model's timeout, or the close, decides.
                Err(Trouble::Lost(_) | Trouble::Expired(_)) => {}
                Err(Trouble::Broken(why)) => tracing::warn!(%why, "a heartbeat failed"),
            }
        });
    }

    fn pong(&mut self, member: usize, unknown: Vec<RunKey>, logs: Vec<RunLogs>) {
        let name = self.members[member]
            .conn
            .as_ref()
            .map_or_else(|| self.members[member].address.clone(), |conn| conn.joined.node.clone());
        for reg in self.runs.values() {
            for (&m, &key) in &reg.keys {
                if m == member && unknown.contains(&key) {
                    let event = MemberEvent::Dropped { member, key };
                    let _ = reg.listener.cast(ClusterRunMsg::Member(event));
                }
            }
        }
        for logs in logs {
            let owner = self.runs.values().find(|reg| reg.keys.get(&member) == Some(&logs.run));
            if let Some(reg) = owner {
                let event = MemberEvent::Logs { name: name.clone(), logs };
                let _ = reg.listener.cast(ClusterRunMsg::Member(event));
            }
        }
    }

    fn restart(&mut self, myself: &ActorRef<MembershipMsg>, member: usize) {
        let (Some(index), Some(launcher)) =
            (self.members[member].local, self.args.launcher.clone())
        else {
            return;
        };
        let myself = myself.clone();
        tracing::warn!(node = %self.label(member), "restarting a lost node this coordinator started");
        tokio::task::spawn_blocking(move || {
            let result = launcher.start(index).map_err(|e| e.to_string());
            let _ = myself.cast(MembershipMsg::Restarted { member, result });
        });
    }

    /// Answers `WaitJoined` once every member is up or given up, or the
    /// deadline passed.
    fn answer_joins(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let settled = (0..self.members.len())
            .all(|m| self.model.is_up(m) || matches!(self.model.state(m), MemberState::Failed(_)));
        if !settled && !self.join_deadline_passed {
            return;
        }
        let failure = (0..self.members.len()).find(|&m| !self.model.is_up(m)).map(|m| {
            let member = &self.members[m];
            let (reason, permanent) = member.failure.clone().unwrap_or_else(|| {
                (format!("no connection within {}s", HANDSHAKE_TIMEOUT.as_secs()), false)
            });
            match permanent {
                true => ClusterError::Rejected { address: member.address.clone(), reason },
                false => ClusterError::Unreachable { address: member.address.clone(), reason },
            }
        });
        for reply in self.waiting.drain(..) {
            let _ = reply.send(match &failure {
                None => Ok(()),
                Some(error) => Err(error.clone()),
            });
        }
    }
}

/// Closes a connection: the session and its NodeServer.
fn close(conn: Conn) {
    conn.watch.close();
    conn.server.stop(Some("combtest: connection closed".to_string()));
}

/// A session event of one connection's NodeServer.
#[derive(Debug)]
enum SessionEvent {
    Ready(NodeServerSessionInformation),
    Closed,
}

/// Forwards one connection's NodeServer events (the subscription's methods
/// are synchronous; the channel sees a handful of events). A session that
/// dials in is killed: the coordinator only dials out.
struct Forward(mpsc::UnboundedSender<SessionEvent>);

impl NodeEventSubscription for Forward {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        if ses.is_server {
            tracing::warn!(peer = %ses.peer_addr, "refusing a connection to the coordinator");
            kill_tree(&ses.actor.get_cell());
        }
    }
    fn node_session_authenticated(&self, _: NodeServerSessionInformation) {}
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        if !ses.is_server {
            let _ = self.0.send(SessionEvent::Closed);
        }
    }
    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Ready(ses));
    }
}

/// Whether `address` (`HOST:PORT`) is a loopback IP address.
fn on_loopback(address: &str) -> bool {
    address.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
}

/// Opens one connection: a NodeServer named `name`, a watched stream to
/// `address` from the transport, the session, the node's agent, and `Join`.
async fn open(
    transport: &dyn Transport,
    address: &str,
    cookie: &str,
    name: String,
    coordinator: Coordinator,
) -> Result<Box<Conn>, ConnectFailure> {
    let unreachable = |reason: String| {
        ConnectFailure::Transient(format!("cannot reach node {address}: {reason}"))
    };
    let server = NodeServer::new(
        0,
        cookie.to_string(),
        name,
        "127.0.0.1".to_string(),
        None,
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into());
    let (server, _) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| unreachable(format!("cannot start the cluster layer: {e}")))?;
    let (events, mut receiver) = mpsc::unbounded_channel();
    let subscribed = server.cast(NodeServerMessage::SubscribeToEvents {
        id: "combtest-membership".to_string(),
        subscription: Box::new(Forward(events)),
    });
    let opened = async {
        subscribed.map_err(|e| unreachable(format!("cannot watch the session: {e}")))?;
        let connection = transport.connect(address.to_string(), HANDSHAKE_TIMEOUT);
        let (stream, watch) = connection.await?;
        ractor_cluster::client_connect_external(&server, stream)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let session = match receiver.recv().await {
            Some(SessionEvent::Ready(ses)) => ses,
            Some(SessionEvent::Closed) | None => {
                if let Some(refusal) = watch.tls_refusal() {
                    return Err(ConnectFailure::Permanent(format!(
                        "node {address} refused our TLS certificate: {refusal}"
                    )));
                }
                let (reason, permanent) = watch.pre_auth_close().at_coordinator(address);
                return Err(match permanent {
                    true => ConnectFailure::Permanent(reason),
                    false => ConnectFailure::Transient(reason),
                });
            }
        };
        let agent = find_agent(&session).ok_or_else(|| {
            ConnectFailure::Permanent(format!(
                "node {address} runs no combtest agent (not a `combtest-node serve`?)"
            ))
        })?;
        let join = wire::encode(&Request::Join { protocol: PROTOCOL_VERSION, coordinator });
        let joined = match call(&agent, join, Some(HANDSHAKE_TIMEOUT)).await {
            Ok(Reply::Joined(joined)) => joined,
            Ok(Reply::Refused(reason)) => {
                return Err(ConnectFailure::Permanent(format!("node {address} refused: {reason}")));
            }
            Ok(other) => {
                return Err(ConnectFailure::Permanent(format!(
                    "node {address} answered the join with {other:?}"
                )));
            }
            // Another protocol version answers in a form this build cannot
            // read: the decoding error names both versions.
            Err(Trouble::Broken(reason)) => {
                return Err(ConnectFailure::Permanent(format!("node {address}: {reason}")));
            }
            Err(Trouble::Lost(reason) | Trouble::Expired(reason)) => {
                return Err(unreachable(reason));
            }
        };
        Ok((agent, joined, watch))
    };
    match opened.await {
        Ok((agent, joined, watch)) => {
            Ok(Box::new(Conn { server, agent, joined, watch, closed: receiver }))
        }
        Err(failure) => {
            server.stop(None);
            Err(failure)
        }
    }
}

/// The node's agent: the remote child of this session that is in the
/// agents' process group. (Process groups are process-wide and session ids
/// restart at 0 per NodeServer, so another session's agent may share its
/// id; the session's own children cannot be mistaken.)
fn find_agent(session: &NodeServerSessionInformation) -> Option<ActorRef<AgentMsg>> {
    let members: Vec<ractor::ActorId> = ractor::pg::get_members(&AGENT_GROUP.to_string())
        .iter()
        .map(|cell| cell.get_id())
        .collect();
    let remote: Vec<ractor::ActorCell> = session
        .actor
        .get_cell()
        .get_children()
        .into_iter()
        .filter(|child| !child.get_id().is_local())
        .collect();
    let cell = remote
        .iter()
        .find(|child| members.contains(&child.get_id()))
        .or_else(|| remote.first())?
        .clone();
    Some(ActorRef::<AgentMsg>::from(cell))
}
