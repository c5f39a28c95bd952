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

use crate::model::epoch::{Epoch, SerialStep};
use crate::model::holdings::LiveSet;
use crate::model::outcome::{Counts, FailedWalk};
use crate::model::space::Blocks;
use crate::model::trace::RoundTag;

/// Bumped whenever a `Request` or `Reply` changes shape or meaning.
pub const PROTOCOL_VERSION: u32 = 5;

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
    /// A coordinator's membership joins the node (once per connection).
    Join { protocol: u32, coordinator: Coordinator },
    /// Open a run of `suite` on the node.
    Hello(Hello),
    /// Run walks `range` of `epoch`.
    RunBatch(BatchRequest),
    /// The rest of a batch result, from byte `offset`.
    Fetch { run: RunKey, batch: u64, offset: u64 },
    /// The membership's heartbeat: renews the leases of `runs` (the runs
    /// this coordinator has open on the node) and collects their log lines.
    Ping { coordinator: Coordinator, runs: Vec<RunKey> },
    /// The run is stopping: start none of its batches not yet started
    /// (they are answered `NotStarted`).
    StopRun { run: RunKey },
    /// The run is over: drop its states and threads.
    EndRun { run: RunKey },
}

/// A coordinator's id: random per membership (per coordinator process, as
/// the CLI holds one), the same over reconnections.
pub type Coordinator = u128;

/// Everything a node needs to take part in a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub suite: String,
    pub fingerprint: String,
    /// This opening of the run on this node (a rejoin uses a new key).
    pub run: RunKey,
    pub coordinator: Coordinator,
    /// Runner threads on the node; `None` for the node's default.
    pub runners: Option<u32>,
    pub blocks: Blocks,
    pub gather: bool,
    pub trace: bool,
    /// A soak round: trace lines carry it.
    pub round: Option<RoundTag>,
    /// Forward the run's log lines up to this level (0 error … 4 trace).
    pub log_level: u8,
    /// The run's lease: run nothing more, and drop the run, when not pinged
    /// for this long (the heartbeat timeout: the coordinator has declared
    /// the node lost, or is gone). At most `MAX_LEASE_MS`.
    pub lease_ms: u64,
    /// Walks in flight per runner thread (async walk orders).
    pub in_flight: u32,
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
    /// the serial action's `Value`), if any. `history`: the branch's
    /// earlier serial steps with their values, which the node applies
    /// (`apply_on_node`) before any walk of the branch if it has not yet.
    Run { value: Option<Vec<u8>>, history: Vec<(SerialStep, Vec<u8>)> },
    /// The serial action failed: fail every live walk with this error.
    FailBranch(String),
}

/// Node to coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// The node took the coordinator's membership in: who it is.
    Joined(Joined),
    /// The node takes part in the run.
    Welcome { runners: u32 },
    /// The node refuses the run (or the join); the reason says why, naming
    /// both sides' versions or fingerprints.
    Refused(String),
    /// A batch ran. `total` is the length of its encoded `BatchResult`, of
    /// which `chunk` is the first part.
    Batch { total: u64, chunk: Vec<u8> },
    /// More of a batch result.
    Chunk(Vec<u8>),
    /// The batch did not start: its run was asked to stop first.
    NotStarted,
    /// The node is there: the runs of the ping it does not have (any more),
    /// and each run's log lines since the last ping.
    Pong { unknown: Vec<RunKey>, logs: Vec<RunLogs> },
    /// The run will start no more batches.
    Stopping,
    /// The run is closed.
    Ended,
    /// The node has no such run (any more): its lease ran out.
    Expired(String),
    /// The request could not be served.
    Error(String),
}

/// Who a node is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Joined {
    /// Its name (`--name`, else its address).
    pub node: String,
    /// Random per node process: a restarted node is a new incarnation.
    pub incarnation: u64,
    /// Its process id (for logs and fault campaigns).
    pub pid: u32,
}

/// A run's log lines from one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunLogs {
    pub run: RunKey,
    /// (level 0 error … 4 trace, text)
    pub lines: Vec<(u8, String)>,
    /// Lines dropped since the last ping (over the per-ping cap).
    pub dropped: u64,
}

/// Longest lease a node grants (a coordinator asking for more is refused).
pub const MAX_LEASE_MS: u64 = 10 * 60 * 1000;

/// What a batch produced on a node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BatchResult {
    pub counts: Counts,
    /// Failed walks (their action names are resolved against the
    /// coordinator's own walk order on arrival).
    pub failed: Vec<FailedWalk>,
    /// Cancelled and pruned walks, as (start, end) id ranges.
    pub neither: Vec<(u64, u64)>,
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

/// Why a call to a node gave no answer to go on with.
#[derive(Debug)]
pub(crate) enum Trouble {
    /// The node or the connection is gone.
    Lost(String),
    /// The node no longer has the run (its lease ran out).
    Expired(String),
    /// The node answered with an error: a bug on one side.
    Broken(String),
}

/// Calls a node's agent with one request (`timeout`: `None` waits as long
/// as the connection lives).
pub(crate) async fn call(
    agent: &ractor::ActorRef<AgentMsg>,
    request: Vec<u8>,
    timeout: Option<std::time::Duration>,
) -> Result<Reply, Trouble> {
    use ractor::rpc::CallResult;
    match agent.call(|port| AgentMsg::Call(request, port), timeout).await {
        Ok(CallResult::Success(bytes)) => match decode::<Reply>(&bytes, "reply") {
            Ok(Reply::Error(error)) => Err(Trouble::Broken(error)),
            Ok(Reply::Expired(why)) => Err(Trouble::Expired(why)),
            Ok(reply) => Ok(reply),
            Err(error) => Err(Trouble::Broken(error)),
        },
        Ok(CallResult::Timeout) => Err(Trouble::Lost(format!(
            "no answer within {}",
            humantime::format_duration(timeout.unwrap_or_default())
        ))),
        Ok(CallResult::SenderError) | Err(_) => Err(Trouble::Lost("connection closed".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_protocol_version_is_named() {
        let mut bytes = encode(&Request::EndRun { run: 1 });
        assert!(matches!(decode::<Request>(&bytes, "request"), Ok(Request::EndRun { run: 1 })));
        bytes[..4].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
        let error = decode::<Request>(&bytes, "request").unwrap_err();
        assert!(error.contains(&format!("peer speaks {}", PROTOCOL_VERSION + 1)), "{error}");
        assert!(error.contains(&format!("this build speaks {PROTOCOL_VERSION}")), "{error}");
        assert!(decode::<Request>(&[1, 0], "request").unwrap_err().starts_with("malformed"));
    }
}
