//! What crosses between a coordinator and a node: one remote message type,
//! [`AgentMsg`], whose payloads are postcard bytes of [`Request`] and
//! [`Reply`].
//!
//! The bytes are decoded by this crate, not by ractor_cluster's message
//! machinery, so a malformed request is an error reply, never a panic in an
//! actor. A batch result is sent in chunks of at most [`CHUNK`] bytes
//! (`Reply::Batch` carries the first, `Request::Fetch` gets the rest), so no
//! frame comes near ractor_cluster's 16 MiB limit whatever the batch size.

use std::ops::Range;

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::model::epoch::Epoch;
use crate::model::holdings::LiveSet;
use crate::model::outcome::Counts;
use crate::model::space::Blocks;
use crate::model::trace::RoundTag;

/// Bumped whenever a `Request` or `Reply` changes shape or meaning.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest piece of a batch result in one reply.
pub const CHUNK: usize = 1 << 20;

/// The process group a node's agent joins, and where coordinators find it.
pub const AGENT_GROUP: &str = "combtest.agents";

/// The one message a node's agent takes from a coordinator: a postcard
/// [`Request`], answered with a postcard [`Reply`].
#[derive(RactorClusterMessage)]
pub enum AgentMsg {
    /// A request and where its reply goes.
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// Time to drop runs whose lease ran out (the agent's own timer; from
    /// a peer it is harmless).
    Sweep,
}

/// A run's id on the wire (a UUID's bits).
pub type RunKey = u128;

/// Coordinator to node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Open a run of `suite` on the node.
    Hello(Hello),
    /// Run walks `range` of `epoch`.
    RunBatch(BatchRequest),
    /// The rest of a batch result, from byte `offset`.
    Fetch { run: RunKey, batch: u64, offset: u64 },
    /// Are you there? Answered with the node's pending log lines.
    Ping { run: RunKey },
    /// The run is over: drop its states and threads.
    EndRun { run: RunKey },
}

/// Everything a node needs to take part in a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub suite: String,
    pub fingerprint: String,
    pub run: RunKey,
    /// Runner threads on the node; `None` for the node's default.
    pub runners: Option<u32>,
    pub blocks: Blocks,
    pub gather: bool,
    pub trace: bool,
    /// A soak round: trace lines carry it.
    pub round: Option<RoundTag>,
    /// Forward the node's log lines up to this level (0 error … 4 trace).
    pub log_level: u8,
    /// The run's lease: run nothing more, and drop the run, when not pinged
    /// for this long (the heartbeat timeout: the coordinator has declared
    /// the node lost, or is gone).
    pub lease_ms: u64,
    /// The lease before the first ping (the coordinator may still be
    /// opening the run on other nodes).
    pub grace_ms: u64,
}

/// A batch of walks to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchRequest {
    pub run: RunKey,
    pub batch: u64,
    pub epoch: Epoch,
    pub instruction: WireInstruction,
    /// The walks, as id ranges within the epoch's.
    pub ranges: Vec<Range<u64>>,
}

/// What to do with the walks of an epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireInstruction {
    /// Run the segment, after applying the serial value (postcard bytes of
    /// the serial action's `Value`), if any.
    Run(Option<Vec<u8>>),
    /// The serial action failed: fail every live walk with this error.
    FailBranch(String),
}

/// Node to coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// The node takes part in the run.
    Welcome { node: String, runners: u32 },
    /// The node refuses the run; the reason says why, naming both sides'
    /// versions or fingerprints.
    Refused(String),
    /// A batch ran. `total` is the length of its encoded `BatchResult`, of
    /// which `chunk` is the first part.
    Batch { total: u64, chunk: Vec<u8> },
    /// More of a batch result.
    Chunk(Vec<u8>),
    /// The node is there; log lines (level 0 error … 4 trace, text) since
    /// the last ping, and how many were dropped because the buffer was full.
    Pong { logs: Vec<(u8, String)>, dropped: u64 },
    /// The run is closed.
    Ended,
    /// The node has no such run (any more): its lease ran out.
    Expired(String),
    /// The request could not be served.
    Error(String),
}

/// What a batch produced on a node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BatchResult {
    pub counts: Counts,
    pub failed: Vec<WireFailure>,
    /// Final states of walks that ended, when gathering (postcard of `S`).
    pub finals: Vec<(u64, Vec<u8>)>,
    /// `walks.jsonl` lines, when tracing.
    pub lines: Vec<u8>,
    pub records: u64,
    /// (walk id, nanoseconds) of failed walks, for `junit.xml`.
    pub failed_nanos: Vec<(u64, u64)>,
    /// Which walks of the range go on to a later segment (held on the node).
    pub live: Option<LiveSet>,
    pub walks: u64,
    pub nanos: u64,
    /// An action panicked: the runner thread was replaced.
    pub restarted: bool,
}

/// A failed walk on the wire (the action's name is resolved against the
/// coordinator's own walk order).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireFailure {
    pub walk: u64,
    pub action_index: usize,
    pub action: String,
    pub error: String,
}

/// Encodes a request or reply: the protocol version (4 bytes, little
/// endian), then postcard. The version comes first so that a peer of
/// another version is named as such, whatever its messages look like.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let bytes = PROTOCOL_VERSION.to_le_bytes().to_vec();
    // Serializing these plain data types into a Vec cannot fail.
    postcard::to_extend(value, bytes).expect("wire types serialize")
}

/// Decodes a request or reply, naming what was expected on failure.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, String> {
    let Some((version, body)) = bytes.split_first_chunk::<4>() else {
        return Err(format!("malformed {what} ({} bytes)", bytes.len()));
    };
    let version = u32::from_le_bytes(*version);
    if version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version mismatch: the peer speaks {version}, this build speaks \
             {PROTOCOL_VERSION}"
        ));
    }
    postcard::from_bytes(body).map_err(|e| format!("malformed {what} ({} bytes): {e}", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_protocol_version_is_named() {
        let mut bytes = encode(&Request::Ping { run: 1 });
        assert!(matches!(decode::<Request>(&bytes, "request"), Ok(Request::Ping { run: 1 })));
        bytes[..4].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
        let error = decode::<Request>(&bytes, "request").unwrap_err();
        assert!(error.contains(&format!("peer speaks {}", PROTOCOL_VERSION + 1)), "{error}");
        assert!(error.contains(&format!("this build speaks {PROTOCOL_VERSION}")), "{error}");
        assert!(decode::<Request>(&[1, 0], "request").unwrap_err().starts_with("malformed"));
    }
}
