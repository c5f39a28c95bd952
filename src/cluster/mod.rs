//! Cluster runs: the same walks on `combtest-node serve` processes, reached
//! through ractor_cluster, with the semantics of an in-process run.
//!
//! - [`Cluster`]: a coordinator's membership, opened once
//!   ([`Cluster::open`]) and borrowed by every run and soak round
//!   (`SuiteOptions::cluster`, in the `suites` module): one session per node,
//!   heartbeats, reconnection, restarts of local nodes.
//! - [`serve`]: a node. It accepts connections (with an authentication
//!   deadline and a cap on unauthenticated ones), authenticates coordinators
//!   by cookie, and runs batches of the suites it was built with.
//! - [`Tls`]: mutual TLS between a coordinator and its nodes
//!   ([`ClusterOptions::tls`], [`ServeOptions::tls`]).
//!
//! The core runtime does not import this module: a run reaches its nodes
//! through `RemoteWorkers` (implemented in `run`). ARCHITECTURE.md ("Cluster
//! runs") has the protocol.

mod agent;
pub mod launcher;
mod link;
pub(crate) mod logs;
mod membership;
pub(crate) mod node_run;
pub(crate) mod run;
pub mod ssh;
mod tls;
mod transport;
#[doc(hidden)]
pub mod wire;

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};

use crate::cluster::agent::{AgentArgs, Limits, NodeAgent, Sessions};
use crate::cluster::membership::{MembershipArgs, MembershipMsg};
use crate::cluster::transport::{Gate, kill_tree};
use crate::cluster::wire::PROTOCOL_VERSION;
use crate::model::membership::MemberSettings;
use crate::model::space::{OrderError, Space};

pub use launcher::{Launcher, LocalLauncher, Started};
pub use node_run::{NodeRun, NodeRunSpec};
pub use tls::{Tls, TlsError};

/// Default heartbeat timeout: a node silent this long is lost.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a node needs of a suite: its name and walk space, the fingerprint
/// coordinators compare, and a run of it on this node. Every
/// `Suite` (the `suites` module, built on this one) is one.
#[doc(hidden)]
pub trait NodeSuite: Send + Sync {
    /// The name to run it by.
    fn name(&self) -> &str;
    /// Its walk space.
    fn space(&self) -> Result<&Space, OrderError>;
    /// The walk order's fingerprint (what cluster nodes compare).
    fn fingerprint(&self) -> Result<String, String>;
    /// Sets up a run of this suite on a cluster node.
    fn open_node_run(&self, spec: &NodeRunSpec) -> Result<Box<dyn NodeRun>, String>;
}

/// How a coordinator's cluster is made up.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// Nodes to connect to, `HOST:PORT`.
    pub nodes: Vec<String>,
    /// Child nodes to start on 127.0.0.1 (and stop when the cluster closes).
    pub local_nodes: usize,
    /// Shared secret; `None`: the per-user cookie file
    /// ([`crate::config::cookie`]).
    pub cookie: Option<String>,
    /// A node that does not answer a heartbeat within this is lost.
    pub heartbeat_timeout: Duration,
    /// The binary local nodes run (default: this process's own).
    pub program: Option<PathBuf>,
    /// Runner threads per node (default: each node's own default).
    pub node_threads: Option<usize>,
    /// Restart intensity of local nodes: more restarts than this within
    /// `restart_window` and the node is given up.
    pub max_restarts: usize,
    /// The restart intensity's window.
    pub restart_window: Duration,
    /// Nodes to start over SSH (and stop when the cluster closes), instead
    /// of local ones.
    pub ssh: Option<ssh::SshNodes>,
    /// Mutual TLS with the nodes (`--tls-*`); nodes this cluster starts on
    /// loopback (`local_nodes`) are reached in plain TCP.
    pub tls: Option<Tls>,
}

impl ClusterOptions {
    /// Run on the nodes at these addresses.
    pub fn nodes<I: IntoIterator<Item = T>, T: Into<String>>(addresses: I) -> Self {
        ClusterOptions {
            nodes: addresses.into_iter().map(Into::into).collect(),
            local_nodes: 0,
            cookie: None,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            program: None,
            node_threads: None,
            max_restarts: 10,
            restart_window: Duration::from_secs(60),
            ssh: None,
            tls: None,
        }
    }

    /// Run on `count` child nodes started on 127.0.0.1.
    pub fn local(count: usize) -> Self {
        ClusterOptions { local_nodes: count, ..ClusterOptions::nodes(Vec::<String>::new()) }
    }

    /// Run on nodes started over SSH (with `program`, or this process's
    /// executable, as the local node binary).
    pub fn ssh(mut self, nodes: ssh::SshNodes) -> Self {
        self.ssh = Some(nodes);
        self
    }

    /// Sets the cookie.
    pub fn cookie(mut self, cookie: impl Into<String>) -> Self {
        self.cookie = Some(cookie.into());
        self
    }

    /// Sets the heartbeat timeout.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    /// Sets the binary local nodes run.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Sets the runner threads per node.
    pub fn node_threads(mut self, threads: usize) -> Self {
        self.node_threads = Some(threads);
        self
    }

    /// Connects to the nodes with mutual TLS.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the restart intensity of local nodes.
    pub fn restart_intensity(mut self, max_restarts: usize, window: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.restart_window = window;
        self
    }
}

/// Why a cluster could not open, a run on it could not start, or a node
/// could not serve.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A node could not be reached (after retrying for the handshake's
    /// time).
    #[error("{reason}")]
    Unreachable {
        /// The node's address.
        address: String,
        /// What went wrong, naming the node.
        reason: String,
    },
    /// A node refused the connection for good: another cookie, another
    /// protocol, not a combtest node.
    #[error("{reason}")]
    Rejected {
        /// The node's address.
        address: String,
        /// Why, naming the node.
        reason: String,
    },
    /// A node refused the run (protocol, suite or fingerprint mismatch, its
    /// limits).
    #[error("node {node} refused the run: {reason}")]
    Refused {
        /// The node.
        node: String,
        /// Its reason, naming both sides' versions or fingerprints.
        reason: String,
    },
    /// No cookie could be had.
    #[error("{0}")]
    Cookie(String),
    /// Every node is lost and none can come back (a run cannot start).
    #[error("every node was lost ({0})")]
    NoNode(String),
    /// The node cannot listen.
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The address.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// A node could not be started over SSH.
    #[error("host {host}: {reason}")]
    Ssh {
        /// The host (as given, `#N` for the Nth node on it).
        host: String,
        /// What failed: unreachable, authentication refused, binary missing.
        reason: String,
    },
    /// Something on this machine failed (starting local nodes, the cluster
    /// layer).
    #[error("{0}")]
    Local(String),
    /// The run failed.
    #[error(transparent)]
    Run(Arc<crate::RunError>),
}

impl From<crate::RunError> for ClusterError {
    fn from(error: crate::RunError) -> Self {
        ClusterError::Run(Arc::new(error))
    }
}

/// A coordinator's cluster: the membership of its nodes, opened once and
/// shared by every run and soak round (clone the handle freely). Closing
/// it (or dropping the last handle) ends every session and stops the nodes
/// it started.
#[derive(Clone)]
pub struct Cluster(Arc<Inner>);

struct Inner {
    runtime: std::sync::Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    membership: ActorRef<MembershipMsg>,
    coordinator: wire::Coordinator,
    heartbeat_timeout: Duration,
    node_threads: Option<usize>,
    launcher: Option<Arc<dyn Launcher>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("coordinator", &format!("{:032x}", self.0.coordinator))
            .finish()
    }
}

impl Cluster {
    /// Opens the cluster: starts the local nodes (if any), connects to every
    /// node and waits until each has joined (retrying for the handshake's
    /// time). An error names the node and what failed.
    pub fn open(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let cookie = match &options.cookie {
            Some(cookie) if !cookie.is_empty() => cookie.clone(),
            _ => {
                let home = std::env::var_os("HOME");
                let path =
                    crate::config::cookie::default_path(home.as_deref()).ok_or_else(|| {
                        ClusterError::Cookie(crate::config::cookie::CookieError::NoHome.to_string())
                    })?;
                let cookie = crate::config::cookie::load_or_create(&path)
                    .map_err(|e| ClusterError::Cookie(e.to_string()))?;
                cookie.expose().to_string()
            }
        };
        let program = || match &options.program {
            Some(program) => Ok(program.clone()),
            None => std::env::current_exe()
                .map_err(|e| ClusterError::Local(format!("cannot find this program: {e}"))),
        };
        let threads = options.node_threads;
        let launcher: Option<Arc<dyn Launcher>> = match (&options.ssh, options.local_nodes) {
            (Some(nodes), _) => {
                let tls = options.tls.as_ref();
                Some(Arc::new(ssh::launcher(nodes.clone(), program()?, &cookie, threads, tls)))
            }
            (None, 0) => None,
            (None, count) => {
                Some(Arc::new(LocalLauncher::new(count, program()?, &cookie, threads)))
            }
        };
        Cluster::open_with(options, cookie, launcher)
    }

    /// [`open`](Self::open) with a cookie and a launcher of your own (which
    /// starts `options.local_nodes` nodes).
    pub fn open_with(
        options: ClusterOptions,
        cookie: String,
        launcher: Option<Arc<dyn Launcher>>,
    ) -> Result<Cluster, ClusterError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(crate::RunError::InsideRuntime.into());
        }
        // Nodes start at once (an SSH node's start is mostly its ssh
        // handshake); the first failure by index is the error, and the
        // nodes that did start are stopped with the launcher.
        let local = match &launcher {
            Some(launcher) => std::thread::scope(|scope| {
                let starts: Vec<_> = (0..launcher.count())
                    .map(|index| scope.spawn(move || launcher.start(index)))
                    .collect();
                let started: Vec<Result<Started, ClusterError>> = starts
                    .into_iter()
                    .map(|start| {
                        start.join().unwrap_or_else(|_| {
                            Err(ClusterError::Local("starting a node panicked".to_string()))
                        })
                    })
                    .collect();
                started.into_iter().collect::<Result<Vec<_>, _>>()
            })?,
            None => Vec::new(),
        };
        if options.nodes.is_empty() && local.is_empty() {
            return Err(ClusterError::Local("a cluster needs at least one node".to_string()));
        }
        let runtime = crate::runtime::actor_runtime()
            .map_err(|e| ClusterError::Local(format!("cannot start the async runtime: {e}")))?;
        let coordinator: wire::Coordinator = rand::random();
        let mut settings = MemberSettings::new(options.heartbeat_timeout.as_millis() as u64);
        settings.max_restarts = options.max_restarts;
        settings.restart_window = options.restart_window.as_millis() as u64;
        let args = MembershipArgs {
            coordinator,
            cookie,
            settings,
            remote: options.nodes.clone(),
            local,
            launcher: launcher.clone(),
            transport: match options.tls.clone() {
                Some(tls) => Arc::new(transport::TlsTransport(tls)),
                None => Arc::new(transport::Tcp),
            },
        };
        let membership = runtime.block_on(async {
            let (membership, _) = Actor::spawn(None, membership::Membership, args)
                .await
                .map_err(|e| ClusterError::Local(format!("cannot start the membership: {e}")))?;
            Ok::<_, ClusterError>(membership)
        })?;
        let cluster = Cluster(Arc::new(Inner {
            handle: runtime.handle().clone(),
            runtime: std::sync::Mutex::new(Some(runtime)),
            membership,
            coordinator,
            heartbeat_timeout: options.heartbeat_timeout,
            node_threads: options.node_threads,
            launcher,
        }));
        let joined = cluster.block_on(async {
            cluster
                .0
                .membership
                .call(MembershipMsg::WaitJoined, Some(Duration::from_secs(60)))
                .await
        });
        match joined {
            Ok(ractor::rpc::CallResult::Success(Ok(()))) => Ok(cluster),
            Ok(ractor::rpc::CallResult::Success(Err(error))) => Err(error),
            _ => Err(ClusterError::Local("the membership did not answer".to_string())),
        }
    }

    /// Why the restart intensity stopped a local node, if it did.
    pub fn restart_limit(&self) -> Option<String> {
        self.ask(MembershipMsg::RestartLimit).flatten()
    }

    /// Each node's process id, when known (fault campaigns, tests).
    pub fn node_pids(&self) -> Vec<Option<u32>> {
        self.ask(MembershipMsg::Pids).unwrap_or_default()
    }

    /// The launcher's nodes' process ids, by launcher index.
    pub fn local_pids(&self) -> Vec<Option<u32>> {
        match &self.0.launcher {
            Some(launcher) => (0..launcher.count()).map(|i| launcher.pid(i)).collect(),
            None => Vec::new(),
        }
    }

    /// Ends every session and stops the nodes this cluster started.
    pub fn close(&self) {
        let _ = self.ask(MembershipMsg::Close);
        if let Some(launcher) = &self.0.launcher {
            for index in 0..launcher.count() {
                launcher.stop(index);
            }
        }
    }

    fn ask<T: Send + 'static>(
        &self,
        message: impl FnOnce(ractor::RpcReplyPort<T>) -> MembershipMsg,
    ) -> Option<T> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return None;
        }
        let membership = self.0.membership.clone();
        let answer = self
            .block_on(async move { membership.call(message, Some(Duration::from_secs(10))).await });
        match answer {
            Ok(ractor::rpc::CallResult::Success(value)) => Some(value),
            _ => None,
        }
    }

    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.0.handle.block_on(future)
    }

    pub(crate) fn membership(&self) -> &ActorRef<MembershipMsg> {
        &self.0.membership
    }

    pub(crate) fn coordinator(&self) -> wire::Coordinator {
        self.0.coordinator
    }

    pub(crate) fn heartbeat_timeout(&self) -> Duration {
        self.0.heartbeat_timeout
    }

    pub(crate) fn node_threads(&self) -> Option<usize> {
        self.0.node_threads
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.membership.cast(MembershipMsg::Close(ractor::concurrency::oneshot().0.into()));
        if let Some(launcher) = &self.launcher {
            for index in 0..launcher.count() {
                launcher.stop(index);
            }
        }
        let runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(runtime) = runtime {
            if tokio::runtime::Handle::try_current().is_ok() {
                runtime.shutdown_background();
            } else {
                runtime.shutdown_timeout(Duration::from_secs(2));
            }
        }
    }
}

/// How `serve` runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// `HOST:PORT` to listen on; port 0 picks a free one.
    pub listen: String,
    /// Shared secret coordinators must present.
    pub cookie: String,
    /// The node's name in coordinators' reports and logs (default: its
    /// address).
    pub name: Option<String>,
    /// Runner threads per run (default: available parallelism).
    pub threads: Option<usize>,
    /// Runs open at once.
    pub max_runs: usize,
    /// Runner threads over every open run.
    pub max_threads: usize,
    /// Connections waiting to authenticate at once (capped at a quarter of
    /// the open-file limit).
    pub max_pending: usize,
    /// How long a connection may take to authenticate.
    pub auth_timeout: Duration,
    /// How long a run outlives its lease (suspended, waiting for its
    /// coordinator to come back), or its coordinator's last session.
    pub run_grace: Duration,
    /// Mutual TLS: every connection's handshake, under the authentication
    /// deadline.
    pub tls: Option<Tls>,
}

impl ServeOptions {
    /// Listen on `listen` with `cookie`, and the default limits.
    pub fn new(listen: impl Into<String>, cookie: impl Into<String>) -> Self {
        ServeOptions {
            listen: listen.into(),
            cookie: cookie.into(),
            name: None,
            threads: None,
            max_runs: 16,
            max_threads: 256,
            max_pending: 128,
            auth_timeout: Duration::from_secs(5),
            run_grace: agent::SESSION_GRACE,
            tls: None,
        }
    }
}

/// A node's session events: the gate's authentications and closes, the
/// coordinators' sessions, and what a close before authentication meant.
struct NodeSessions {
    gate: Arc<Gate>,
    sessions: Arc<Sessions>,
    /// Authenticated sessions by peer name (a name twice is a duplicate
    /// connection: ractor_cluster keeps one).
    names: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

fn peer_name(ses: &NodeServerSessionInformation) -> String {
    ses.peer_name.as_ref().map_or_else(String::new, |n| n.name.clone())
}

impl NodeEventSubscription for NodeSessions {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        if self.gate.watch(&ses.peer_addr).is_none() {
            // Not through the gate: ractor_cluster's own listener, which no
            // coordinator is told of.
            tracing::warn!(peer = %ses.peer_addr, "refusing a connection on the internal port");
            kill_tree(&ses.actor.get_cell());
        }
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        if let Some(watch) = self.gate.watch(&ses.peer_addr) {
            watch.authenticate();
        }
        let name = peer_name(&ses);
        if let Some(coordinator) = Sessions::coordinator_of(&name) {
            self.sessions.up(coordinator);
        }
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let count = names.entry(name.clone()).or_default();
        *count += 1;
        if *count > 1 {
            tracing::warn!(
                peer = %ses.peer_addr,
                "duplicate connection: a second session authenticated as {name}; one of them is \
                 closed"
            );
        }
        tracing::info!(peer = %ses.peer_addr, coordinator = %name, "coordinator authenticated");
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let Some(watch) = self.gate.forget(&ses.peer_addr) else { return };
        if watch.authenticated.load(std::sync::atomic::Ordering::Acquire) {
            let name = peer_name(&ses);
            let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = names.get_mut(&name) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    names.remove(&name);
                }
            }
            drop(names);
            if let Some(coordinator) = Sessions::coordinator_of(&name) {
                self.sessions.down(coordinator);
            }
            tracing::info!(peer = %ses.peer_addr, coordinator = %name, "coordinator disconnected");
        } else {
            let name = peer_name(&ses);
            let duplicate = !name.is_empty()
                && self.names.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&name);
            let why = match duplicate {
                true => format!(
                    "refused: a session under its name ({name}) is already open (duplicate \
                     connection)"
                ),
                false => watch.pre_auth_close().at_node(self.gate.deadline),
            };
            tracing::warn!(peer = %ses.peer_addr, "a connection closed before authenticating: {why}");
        }
    }
}

/// Serves `suites` as a node until the process is stopped. Prints one line
/// on stdout when it listens: `combtest-node serving on ADDRESS as NAME
/// (protocol N)`.
pub fn serve(suites: Vec<Box<dyn NodeSuite>>, options: ServeOptions) -> Result<(), ClusterError> {
    let address = resolve_listen(&options.listen)?;
    if options.cookie.is_empty() {
        return Err(ClusterError::Cookie("the cookie is empty".to_string()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("combtest-node")
        .enable_all()
        .build()
        .map_err(|e| ClusterError::Local(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(serve_async(suites, options, address))
}

fn resolve_listen(listen: &str) -> Result<SocketAddr, ClusterError> {
    let error = |reason: String| ClusterError::Listen { address: listen.to_string(), reason };
    listen
        .to_socket_addrs()
        .map_err(|e| error(format!("not a HOST:PORT address ({e})")))?
        .next()
        .ok_or_else(|| error("it resolves to no address".to_string()))
}

async fn serve_async(
    suites: Vec<Box<dyn NodeSuite>>,
    options: ServeOptions,
    address: SocketAddr,
) -> Result<(), ClusterError> {
    let listen_error =
        |reason: String| ClusterError::Listen { address: address.to_string(), reason };
    let listener =
        tokio::net::TcpListener::bind(address).await.map_err(|e| listen_error(e.to_string()))?;
    let bound = listener.local_addr().map_err(|e| listen_error(e.to_string()))?;
    if !bound.ip().is_loopback() && options.tls.is_none() {
        tracing::warn!(
            "listening on {bound} without TLS: the cluster's traffic (walks, options, states) is \
             readable on the network (give --tls-cert, --tls-key and --tls-ca)"
        );
    }
    let name = options.name.clone().unwrap_or_else(|| bound.to_string());
    // ractor_cluster binds a listener of its own: on loopback, at a port no
    // one is told; sessions through it are refused (`NodeSessions`).
    let server = NodeServer::new(
        0,
        options.cookie.clone(),
        name.clone(),
        bound.ip().to_string(),
        None,
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into());
    let (server, handle) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| ClusterError::Local(format!("cannot start the cluster layer: {e}")))?;
    let gate = Arc::new(Gate::new(
        transport::pending_cap(options.max_pending),
        options.auth_timeout,
        options.tls.clone(),
    ));
    let sessions = Arc::new(Sessions::default());
    let _ = server.cast(NodeServerMessage::SubscribeToEvents {
        id: "combtest-node".to_string(),
        subscription: Box::new(NodeSessions {
            gate: Arc::clone(&gate),
            sessions: Arc::clone(&sessions),
            names: Default::default(),
        }),
    });
    let args = AgentArgs {
        name: name.clone(),
        suites: Arc::new(suites),
        runners: options.threads.unwrap_or_else(crate::runtime::default_threads),
        limits: Limits {
            max_runs: options.max_runs.max(1),
            max_threads: options.max_threads.max(1),
        },
        chunk: wire::CHUNK,
        sessions,
        grace: options.run_grace,
    };
    let (_agent, agent_handle) = Actor::spawn(None, NodeAgent, args)
        .await
        .map_err(|e| ClusterError::Local(format!("cannot start the node agent: {e}")))?;
    tokio::spawn(Arc::clone(&gate).accept_loop(listener, server));
    println!("{} {bound} as {name} (protocol {PROTOCOL_VERSION})", launcher::READY_PREFIX);
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = handle => Err(ClusterError::Local("the cluster layer stopped".to_string())),
        _ = agent_handle => Err(ClusterError::Local("the node agent stopped".to_string())),
    }
}
