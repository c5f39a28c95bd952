//! The coordinator's side of ractor_cluster: a local `NodeServer` (bound to
//! 127.0.0.1, port chosen by the OS: the coordinator only dials out), a
//! client session per node, and each node's agent found in its process
//! group.

use std::net::SocketAddr;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage, NodeSessionMessage};
use tokio::sync::mpsc;

use crate::cluster::wire::{AGENT_GROUP, AgentMsg};
use crate::cluster::{ClusterError, RemoteNode};

/// How long a node may take to accept the connection and authenticate.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A session event from the NodeServer.
#[derive(Debug)]
enum SessionEvent {
    Ready { node_id: u64, peer: String, session: ActorRef<NodeSessionMessage> },
    Closed { peer: String },
    Authenticated { peer: String },
}

/// Forwards NodeServer events into a channel (the subscription's methods
/// are synchronous; the channel is unbounded but sees a handful of events
/// per node).
struct Forward(mpsc::UnboundedSender<SessionEvent>);

impl NodeEventSubscription for Forward {
    fn node_session_opened(&self, _: ractor_cluster::node::NodeServerSessionInformation) {}
    fn node_session_authenticated(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Authenticated { peer: ses.peer_addr });
    }
    fn node_session_disconnected(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Closed { peer: ses.peer_addr });
    }
    fn node_session_ready(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Ready {
            node_id: ses.node_id,
            peer: ses.peer_addr,
            session: ses.actor,
        });
    }
}

/// Connections to the nodes of one run.
pub(crate) struct Connection {
    server: ActorRef<NodeServerMessage>,
    /// Session events, for nodes that join later (a restarted node).
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<SessionEvent>>,
    pub(crate) nodes: Vec<RemoteNode>,
}

impl Connection {
    /// Connects to every address, authenticating with `cookie`, and finds
    /// each node's agent.
    pub(crate) async fn open(addresses: &[String], cookie: &str) -> Result<Self, ClusterError> {
        let name = format!("combtest-coordinator-{}", std::process::id());
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
            .map_err(|e| ClusterError::Local(format!("cannot start the cluster layer: {e}")))?;
        let (events, receiver) = mpsc::unbounded_channel();
        let mut connection =
            Connection { server, events: tokio::sync::Mutex::new(receiver), nodes: Vec::new() };
        connection
            .server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "combtest-coordinator".to_string(),
                subscription: Box::new(Forward(events)),
            })
            .map_err(|e| ClusterError::Local(format!("cannot watch node sessions: {e}")))?;
        for address in addresses {
            let node = connection.join(address).await;
            match node {
                Ok(node) => connection.nodes.push(node),
                Err(error) => {
                    connection.close().await;
                    return Err(error);
                }
            }
        }
        Ok(connection)
    }

    /// Connects to one more node (during a run: a restarted node).
    pub(crate) async fn join(&self, address: &str) -> Result<RemoteNode, ClusterError> {
        let mut events = self.events.lock().await;
        // Events of earlier sessions (a port may be reused) are not this one's.
        while events.try_recv().is_ok() {}
        self.connect(address, &mut events).await
    }

    async fn connect(
        &self,
        address: &str,
        events: &mut mpsc::UnboundedReceiver<SessionEvent>,
    ) -> Result<RemoteNode, ClusterError> {
        let unreachable =
            |reason: String| ClusterError::Unreachable { address: address.to_string(), reason };
        let resolved: SocketAddr = tokio::net::lookup_host(address)
            .await
            .map_err(|e| unreachable(format!("cannot resolve it: {e}")))?
            .next()
            .ok_or_else(|| unreachable("it resolves to no address".to_string()))?;
        let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        tokio::time::timeout_at(deadline, ractor_cluster::client_connect(&self.server, resolved))
            .await
            .map_err(|_| {
                unreachable(format!("no connection within {}s", HANDSHAKE_TIMEOUT.as_secs()))
            })?
            .map_err(|e| unreachable(format!("{e}")))?;
        let peer = resolved.to_string();
        let mut authenticated = false;
        loop {
            let event = tokio::time::timeout_at(deadline, events.recv())
                .await
                .map_err(|_| {
                    unreachable(format!(
                        "no cluster handshake within {}s (is it a `combtest-node serve`?)",
                        HANDSHAKE_TIMEOUT.as_secs()
                    ))
                })?
                .ok_or_else(|| unreachable("the cluster layer stopped".to_string()))?;
            match event {
                SessionEvent::Authenticated { peer: p } if p == peer => authenticated = true,
                SessionEvent::Ready { node_id, peer: p, session } if p == peer => {
                    let agent = ractor::pg::get_members(&AGENT_GROUP.to_string())
                        .into_iter()
                        .find(|cell| !cell.get_id().is_local() && cell.get_id().node() == node_id)
                        .ok_or_else(|| {
                            unreachable(
                                "it runs no combtest agent (not a `combtest-node serve`?)"
                                    .to_string(),
                            )
                        })?;
                    return Ok(RemoteNode {
                        name: address.to_string(),
                        agent: ActorRef::<AgentMsg>::from(agent),
                        session: Some(session),
                    });
                }
                SessionEvent::Closed { peer: p } if p == peer => {
                    return Err(if authenticated {
                        unreachable("it closed the connection".to_string())
                    } else {
                        ClusterError::Rejected { address: address.to_string() }
                    });
                }
                _ => {}
            }
        }
    }

    /// Closes every session and stops the cluster layer.
    pub(crate) async fn close(&self) {
        self.server.stop(None);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server.wait(None)).await;
    }
}
