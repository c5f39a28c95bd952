//! Cluster runs: the same walks on `combtest-node serve` processes, reached
//! through ractor_cluster, with the semantics of an in-process run.
//!
//! - [`serve`]: a node. It listens, authenticates coordinators by cookie,
//!   and runs batches of the suites it was built with.
//! - [`ClusterOptions`]: how a coordinator finds its nodes (addresses, or
//!   `local_nodes` child processes); handed to a suite's run through
//!   [`crate::suites::SuiteOptions`].
//!
//! ARCHITECTURE.md ("Cluster runs") has the protocol.

pub(crate) mod connect;
pub mod cookie;
pub mod local;
pub(crate) mod logs;
#[doc(hidden)]
pub mod node;
#[doc(hidden)]
pub mod wire;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage, NodeSessionMessage};

use crate::actors::node_agent::{AgentArgs, NodeAgent};
use crate::cluster::wire::{AgentMsg, PROTOCOL_VERSION};
use crate::suites::Suite;

pub use local::LocalNodes;

/// The cookie both sides use when none is set; only ever accepted on
/// loopback addresses.
pub(crate) const LOOPBACK_COOKIE: &str = "combtest-loopback";

/// Default heartbeat timeout: a node silent this long is lost.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a run's walks go when they leave the process.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// Nodes to connect to, `HOST:PORT`.
    pub nodes: Vec<String>,
    /// Child nodes to start on 127.0.0.1 for the run (and stop after it).
    pub local_nodes: usize,
    /// Shared secret; `None` is allowed only when every node is on loopback.
    pub cookie: Option<String>,
    /// A node that does not answer a heartbeat within this is lost.
    pub heartbeat_timeout: Duration,
    /// The binary local nodes run (default: this process's own).
    pub program: Option<PathBuf>,
    /// Runner threads per node (default: each node's own default).
    pub node_threads: Option<usize>,
    /// Restarts a lost node and returns its new address; the node then
    /// rejoins the run in progress (soaks with local nodes).
    #[doc(hidden)]
    pub respawn: Option<Arc<dyn Respawn>>,
}

/// Restarts lost nodes during a run (a soak's local nodes).
#[doc(hidden)]
pub trait Respawn: Send + Sync + std::fmt::Debug {
    /// Restarts node `name` (blocking; with backoff, within the restart
    /// intensity) and returns its new address, or why it will not be.
    fn respawn(&self, name: &str) -> Result<String, String>;
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
            respawn: None,
        }
    }

    /// Run on `count` child nodes started on 127.0.0.1.
    pub fn local(count: usize) -> Self {
        ClusterOptions { local_nodes: count, ..ClusterOptions::nodes(Vec::<String>::new()) }
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
}

/// Why a cluster run could not start, or a node could not serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A node could not be reached.
    #[error("cannot reach node {address}: {reason}")]
    Unreachable {
        /// The node's address.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// A node closed the connection before authenticating.
    #[error(
        "node {address} closed the connection during authentication: the cookies differ \
         (give both sides the same --cookie or COMBTEST_COOKIE)"
    )]
    Rejected {
        /// The node's address.
        address: String,
    },
    /// A node refused the run (protocol, suite or fingerprint mismatch).
    #[error("node {node} refused the run: {reason}")]
    Refused {
        /// The node.
        node: String,
        /// Its reason, naming both sides' versions or fingerprints.
        reason: String,
    },
    /// A cookie is needed for this address.
    #[error("{0}: a cookie is required off loopback (--cookie or COMBTEST_COOKIE)")]
    CookieRequired(String),
    /// The node cannot listen.
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The address.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// Something on this machine failed (starting local nodes, the cluster
    /// layer).
    #[error("{0}")]
    Local(String),
}

/// A connected node, as a run's NodeLink sees it.
#[derive(Clone)]
pub(crate) struct RemoteNode {
    pub(crate) name: String,
    pub(crate) agent: ActorRef<AgentMsg>,
    /// The coordinator's session with it, closed when the node is lost.
    pub(crate) session: Option<ActorRef<NodeSessionMessage>>,
}

/// The cookie to use: the one given, or the loopback default when every
/// address is on loopback.
pub(crate) fn effective_cookie(
    cookie: Option<&str>,
    addresses: &[String],
) -> Result<String, ClusterError> {
    match cookie {
        Some(cookie) if !cookie.is_empty() => Ok(cookie.to_string()),
        _ => match addresses.iter().find(|a| !is_loopback(a)) {
            Some(address) => Err(ClusterError::CookieRequired(format!("node {address}"))),
            None => Ok(LOOPBACK_COOKIE.to_string()),
        },
    }
}

fn is_loopback(address: &str) -> bool {
    address.to_socket_addrs().is_ok_and(|mut addrs| addrs.all(|a| a.ip().is_loopback()))
}

/// How `serve` runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// `HOST:PORT` to listen on; port 0 picks a free one.
    pub listen: String,
    /// Shared secret; required unless `listen` is a loopback address.
    pub cookie: Option<String>,
    /// The node's name in coordinators' reports and logs (default: its
    /// address).
    pub name: Option<String>,
    /// Runner threads per run (default: available parallelism).
    pub threads: Option<usize>,
}

impl ServeOptions {
    /// Listen on `listen`, with no cookie, name or thread count set.
    pub fn new(listen: impl Into<String>) -> Self {
        ServeOptions { listen: listen.into(), cookie: None, name: None, threads: None }
    }
}

/// Logs sessions that end before authenticating: a coordinator with the
/// wrong cookie, or something that is not a coordinator at all.
#[derive(Default)]
struct SessionLog {
    /// Sessions (by NodeServer node id) that authenticated.
    authenticated: std::sync::Mutex<std::collections::HashSet<u64>>,
}

impl NodeEventSubscription for SessionLog {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        tracing::debug!(peer = %ses.peer_addr, "connection opened");
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        tracing::info!(peer = %ses.peer_addr, "coordinator authenticated");
        self.authenticated.lock().unwrap_or_else(|p| p.into_inner()).insert(ses.node_id);
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let was = self.authenticated.lock().unwrap_or_else(|p| p.into_inner()).remove(&ses.node_id);
        if !was {
            tracing::warn!(
                peer = %ses.peer_addr,
                "a connection closed before authenticating: wrong cookie, or not a combtest coordinator"
            );
        } else {
            tracing::info!(peer = %ses.peer_addr, "coordinator disconnected");
        }
    }
}

/// Serves `suites` as a node until the process is stopped. Prints one line
/// on stdout when it listens: `combtest-node serving on ADDRESS as NAME
/// (protocol N)`.
pub fn serve(suites: Vec<Box<dyn Suite>>, options: ServeOptions) -> Result<(), ClusterError> {
    let address = resolve_listen(&options.listen)?;
    let cookie = match options.cookie.as_deref() {
        Some(cookie) if !cookie.is_empty() => cookie.to_string(),
        _ if address.ip().is_loopback() => LOOPBACK_COOKIE.to_string(),
        _ => return Err(ClusterError::CookieRequired(format!("listening on {address}"))),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("combtest-node")
        .enable_all()
        .build()
        .map_err(|e| ClusterError::Local(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(serve_async(suites, options, address, cookie))
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
    suites: Vec<Box<dyn Suite>>,
    options: ServeOptions,
    address: SocketAddr,
    cookie: String,
) -> Result<(), ClusterError> {
    let listen_error =
        |reason: String| ClusterError::Listen { address: address.to_string(), reason };
    let ip: IpAddr = address.ip();
    // ractor_cluster cannot report the port it bound, so a free port is
    // picked here first; should another process take it in between, the
    // bind fails and the next free port is tried.
    let mut attempts = 0;
    let (server, handle, port) = loop {
        let port = match address.port() {
            0 => std::net::TcpListener::bind((ip, 0))
                .and_then(|l| l.local_addr())
                .map_err(|e| listen_error(e.to_string()))?
                .port(),
            port => port,
        };
        let name = options.name.clone().unwrap_or_else(|| SocketAddr::new(ip, port).to_string());
        let server = NodeServer::new(
            port,
            cookie.clone(),
            name,
            ip.to_string(),
            None,
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(ip);
        match Actor::spawn(None, server, ()).await {
            Ok((server, handle)) => break (server, handle, port),
            Err(error) if address.port() == 0 && attempts < 5 => {
                attempts += 1;
                tracing::debug!(%error, "port taken meanwhile; trying another");
            }
            Err(error) => return Err(listen_error(error.to_string())),
        }
    };
    let bound = SocketAddr::new(ip, port);
    let name = options.name.clone().unwrap_or_else(|| bound.to_string());
    let _ = server.cast(NodeServerMessage::SubscribeToEvents {
        id: "combtest-node".to_string(),
        subscription: Box::new(SessionLog::default()),
    });
    let args = AgentArgs {
        name: name.clone(),
        suites: Arc::new(suites),
        runners: options.threads.unwrap_or_else(crate::runtime::default_threads),
        chunk: wire::CHUNK,
    };
    let (_agent, agent_handle) = Actor::spawn(None, NodeAgent, args)
        .await
        .map_err(|e| ClusterError::Local(format!("cannot start the node agent: {e}")))?;
    println!("{} {bound} as {name} (protocol {PROTOCOL_VERSION})", local::READY_PREFIX);
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = handle => Err(ClusterError::Local("the cluster layer stopped".to_string())),
        _ = agent_handle => Err(ClusterError::Local("the node agent stopped".to_string())),
    }
}
