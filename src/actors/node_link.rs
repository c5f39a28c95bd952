//! NodeLink: the coordinator's end of one cluster node, for one run. To the
//! Scheduler it is one endpoint with `2 × runners` credits, like a very
//! wide WalkRunner whose walk states stay on its node.
//!
//! - Receives `RunBatch` from the Scheduler. Encodes it (the epoch's serial
//!   value once per epoch) and calls the node's agent in a task of its own,
//!   so batches overlap; a result bigger than one chunk is fetched chunk by
//!   chunk. The task hands the decoded result back as `Finished`.
//! - On `Finished`: sends `BatchOutcome` to the Collector, the trace lines
//!   to the TraceWriter (a call: written before the batch is acknowledged),
//!   `RunnerRestarted` to the RunSupervisor if an action panicked on the
//!   node, then `BatchDone` (with the walks still live) to the Scheduler.
//! - Heartbeat: every third of the heartbeat timeout it pings the node (one
//!   ping at a time, each with the timeout) and logs the node's log lines
//!   that come back, prefixed with the node's name. ractor_cluster does not
//!   notice a hung peer (a stopped process keeps its TCP connection); the
//!   heartbeat does.
//! - A ping that times out, or a call that fails because the session is
//!   gone, makes the node lost: it sends `NodeLost` to the Scheduler, closes
//!   the session (so a node that wakes up finds its coordinator gone) and
//!   stops. Results that arrive later are dropped with its mailbox: the
//!   Scheduler has already re-planned those walks.
//! - A node that answers with an error (a malformed request, a lost block)
//!   reveals a bug, not a failure of the node: the run ends (`Fatal`).
//! - Supervised by the RunSupervisor; stopping after a loss is expected.

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::actors::LOCAL_REPLY_TIMEOUT;
use crate::actors::collector::CollectorMsg;
use crate::actors::run_supervisor::RunSupervisorMsg;
use crate::actors::scheduler::{BatchId, BatchJob, SchedulerMsg};
use crate::actors::trace_writer::TraceWriterMsg;
use crate::actors::walk_runner::timeout_error;
use crate::cluster::RemoteNode;
use crate::cluster::wire::{
    self, AgentMsg, BatchRequest, BatchResult, Reply, Request, RunKey, WireInstruction,
};
use crate::exec::{ErasedOrder, Instruction, WALK_STATE_ACTION};
use crate::model::epoch::EpochId;
use crate::model::outcome::FailedWalk;
use crate::model::space::WalkId;

/// Largest serial value sent to nodes: it travels with every batch of its
/// epoch, and every request must stay well under ractor_cluster's 16 MiB
/// frame limit.
const MAX_VALUE: usize = 4 << 20;

/// Requests to a NodeLink, and what its own tasks report back.
pub(crate) enum NodeLinkMsg {
    /// Run this batch on the node, then acknowledge it.
    RunBatch(BatchJob),
    /// A batch task finished: the node's result, or why there is none.
    Finished(BatchJob, Box<Result<BatchResult, Trouble>>),
    /// Time to check on the node.
    Beat,
    /// A ping came back with the node's log lines.
    Pong(Vec<(u8, String)>, u64),
    /// The node is lost.
    Lost(String),
}

// Local only: never crosses a node.
impl ractor::Message for NodeLinkMsg {}

/// Why a call to a node gave no result.
#[derive(Debug)]
pub(crate) enum Trouble {
    /// The node or the connection is gone.
    Lost(String),
    /// The node answered with an error: a bug on one side.
    Broken(String),
    /// A batch ran past the walk timeout.
    TimedOut(Duration),
}

/// What a NodeLink needs, fixed for the run.
pub(crate) struct NodeLinkArgs<S> {
    pub(crate) slot: usize,
    pub(crate) node: RemoteNode,
    pub(crate) run: RunKey,
    pub(crate) order: Arc<dyn ErasedOrder<S>>,
    /// Decodes a gathered walk state (postcard).
    pub(crate) decode_state: fn(&[u8]) -> postcard::Result<S>,
    pub(crate) heartbeat_timeout: Duration,
    /// A batch (one walk) running longer fails, and the node is given up.
    pub(crate) walk_timeout: Option<Duration>,
    pub(crate) scheduler: ActorRef<SchedulerMsg>,
    pub(crate) collector: ActorRef<CollectorMsg<S>>,
    pub(crate) writer: Option<ActorRef<TraceWriterMsg>>,
    pub(crate) supervisor: ActorRef<RunSupervisorMsg>,
}

pub(crate) struct NodeLink<S>(std::marker::PhantomData<fn() -> S>);

impl<S> NodeLink<S> {
    pub(crate) fn new() -> Self {
        NodeLink(std::marker::PhantomData)
    }
}

pub(crate) struct LinkState<S> {
    args: NodeLinkArgs<S>,
    /// The wire form of the current epoch's instruction.
    instruction: Option<(EpochId, Arc<WireInstruction>)>,
    ping_in_flight: bool,
    lost: bool,
    beat: Option<ractor::concurrency::JoinHandle<()>>,
}

impl<S: Send + 'static> Actor for NodeLink<S> {
    type Msg = NodeLinkMsg;
    type State = LinkState<S>;
    type Arguments = NodeLinkArgs<S>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: NodeLinkArgs<S>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let period = (args.heartbeat_timeout / 3).max(Duration::from_millis(10));
        let beat = myself.send_interval(period, || NodeLinkMsg::Beat);
        Ok(LinkState {
            args,
            instruction: None,
            ping_in_flight: false,
            lost: false,
            beat: Some(beat),
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(beat) = state.beat.take() {
            beat.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.lost {
            return Ok(()); // Stopping: the Scheduler has re-planned.
        }
        match message {
            NodeLinkMsg::RunBatch(job) => state.send_batch(&myself, job),
            NodeLinkMsg::Finished(job, result) => match *result {
                Ok(result) => state.finished(job, result).await,
                Err(Trouble::Lost(reason)) => state.lose(&myself, reason, None),
                Err(Trouble::TimedOut(timeout)) => {
                    // The node is stuck in a walk: it is cut off (and, for a
                    // local node in a soak, killed and restarted).
                    let reason = format!("a walk {}", timeout_error(timeout));
                    state.lose(&myself, reason, Some((job.id, timeout)))
                }
                Err(Trouble::Broken(reason)) => {
                    let reason = format!("node {} failed a batch: {reason}", state.args.node.name);
                    state.args.supervisor.cast(RunSupervisorMsg::Fatal(reason))?;
                    Ok(())
                }
            },
            NodeLinkMsg::Lost(reason) => state.lose(&myself, reason, None),
            NodeLinkMsg::Beat => {
                state.ping(&myself);
                Ok(())
            }
            NodeLinkMsg::Pong(lines, dropped) => {
                state.ping_in_flight = false;
                log_node_lines(&state.args.node.name, lines, dropped);
                Ok(())
            }
        }
    }
}

impl<S: Send + 'static> LinkState<S> {
    fn wire_instruction(&mut self, job: &BatchJob) -> Result<Arc<WireInstruction>, String> {
        if let Some((epoch, wire)) = &self.instruction
            && *epoch == job.epoch.id
        {
            return Ok(Arc::clone(wire));
        }
        let wire = match (&*job.instruction, job.epoch.serial) {
            (Instruction::Run(Some(value)), Some(step)) => {
                let bytes = self.args.order.encode_value(step, value)?;
                if bytes.len() > MAX_VALUE {
                    return Err(format!(
                        "the value of the serial action at position {} is {} bytes; a value sent \
                         to cluster nodes must stay under {MAX_VALUE} bytes (it travels with \
                         every batch)",
                        step.position,
                        bytes.len()
                    ));
                }
                WireInstruction::Run(Some(bytes))
            }
            (Instruction::Run(_), _) => WireInstruction::Run(None),
            (Instruction::FailBranch(error), _) => WireInstruction::FailBranch(error.clone()),
        };
        let wire = Arc::new(wire);
        self.instruction = Some((job.epoch.id, Arc::clone(&wire)));
        Ok(wire)
    }

    fn send_batch(
        &mut self,
        myself: &ActorRef<NodeLinkMsg>,
        job: BatchJob,
    ) -> Result<(), ActorProcessingErr> {
        let instruction = match self.wire_instruction(&job) {
            Ok(wire) => wire,
            Err(reason) => {
                self.args.supervisor.cast(RunSupervisorMsg::Fatal(reason))?;
                return Ok(());
            }
        };
        let request = Request::RunBatch(BatchRequest {
            run: self.args.run,
            batch: job.id.0,
            epoch: (*job.epoch).clone(),
            instruction: (*instruction).clone(),
            ranges: job.ranges.clone(),
        });
        let agent = self.args.node.agent.clone();
        let run = self.args.run;
        let myself = myself.clone();
        let walk_timeout = self.args.walk_timeout;
        tokio::spawn(async move {
            let fetch = fetch_batch(&agent, run, job.id.0, wire::encode(&request));
            let result = match walk_timeout {
                None => fetch.await,
                Some(timeout) => tokio::time::timeout(timeout, fetch)
                    .await
                    .unwrap_or(Err(Trouble::TimedOut(timeout))),
            };
            // If the link is gone, the Scheduler has re-planned this batch.
            let _ = myself.cast(NodeLinkMsg::Finished(job, Box::new(result)));
        });
        Ok(())
    }

    async fn finished(
        &mut self,
        job: BatchJob,
        result: BatchResult,
    ) -> Result<(), ActorProcessingErr> {
        let args = &self.args;
        let mut finals = Vec::with_capacity(result.finals.len());
        for (walk, bytes) in &result.finals {
            match (args.decode_state)(bytes) {
                Ok(state) => finals.push((WalkId(*walk), state)),
                Err(error) => {
                    let reason = format!(
                        "node {} sent a walk state that does not decode (walk {walk}): {error}",
                        args.node.name
                    );
                    args.supervisor.cast(RunSupervisorMsg::Fatal(reason))?;
                    return Ok(());
                }
            }
        }
        let entries = args.order.space().entries();
        let failed = result
            .failed
            .into_iter()
            .map(|f| FailedWalk {
                walk_id: WalkId(f.walk),
                action_index: f.action_index,
                // Same fingerprint, same names; anything else is the state.
                action: match entries.get(f.action_index) {
                    Some(entry) if entry.name == f.action => entry.name,
                    _ => WALK_STATE_ACTION,
                },
                error: f.error,
            })
            .collect();
        args.collector.cast(CollectorMsg::BatchOutcome {
            counts: result.counts,
            failed,
            finals,
        })?;
        if let Some(writer) = &args.writer {
            let (lines, records, failed_nanos) =
                (result.lines, result.records, result.failed_nanos);
            let written = writer
                .call(
                    |written| TraceWriterMsg::Batch { lines, records, failed_nanos, written },
                    Some(LOCAL_REPLY_TIMEOUT),
                )
                .await?;
            if !matches!(written, CallResult::Success(())) {
                let reason = "the trace writer did not take a batch in time".to_string();
                args.supervisor.cast(RunSupervisorMsg::Fatal(reason))?;
                return Ok(());
            }
        }
        if result.restarted {
            args.supervisor.cast(RunSupervisorMsg::RunnerRestarted)?;
        }
        args.scheduler.cast(SchedulerMsg::BatchDone {
            slot: args.slot,
            batch: job.id,
            walks: result.walks,
            nanos: result.nanos,
            live: result.live,
        })?;
        Ok(())
    }

    fn ping(&mut self, myself: &ActorRef<NodeLinkMsg>) {
        if self.ping_in_flight {
            return; // Its own timeout decides.
        }
        self.ping_in_flight = true;
        let agent = self.args.node.agent.clone();
        let request = wire::encode(&Request::Ping { run: self.args.run });
        let timeout = self.args.heartbeat_timeout;
        let myself = myself.clone();
        tokio::spawn(async move {
            let message = match call(&agent, request, Some(timeout)).await {
                Ok(Reply::Pong { logs, dropped }) => NodeLinkMsg::Pong(logs, dropped),
                Ok(other) => {
                    NodeLinkMsg::Lost(format!("unexpected answer to a heartbeat: {other:?}"))
                }
                Err(Trouble::Lost(reason) | Trouble::Broken(reason)) => NodeLinkMsg::Lost(reason),
                Err(Trouble::TimedOut(_)) => NodeLinkMsg::Lost("no answer to a heartbeat".into()),
            };
            let _ = myself.cast(message);
        });
    }

    fn lose(
        &mut self,
        myself: &ActorRef<NodeLinkMsg>,
        reason: String,
        timed_out: Option<(BatchId, Duration)>,
    ) -> Result<(), ActorProcessingErr> {
        self.lost = true;
        let node = self.args.node.name.clone();
        self.args.scheduler.cast(SchedulerMsg::NodeLost {
            slot: self.args.slot,
            node,
            reason,
            timed_out,
        })?;
        // Cut the connection: a hung node that wakes up finds its coordinator
        // gone and drops the run.
        if let Some(session) = &self.args.node.session {
            session.stop(Some("combtest: node lost".to_string()));
        }
        myself.stop(Some("node lost".to_string()));
        Ok(())
    }
}

/// Logs a node's lines here, prefixed with its name, at their own levels.
pub(crate) fn log_node_lines(node: &str, lines: Vec<(u8, String)>, dropped: u64) {
    for (level, line) in lines {
        match level {
            0 => tracing::error!(target: "combtest::node", "[{node}] {line}"),
            1 => tracing::warn!(target: "combtest::node", "[{node}] {line}"),
            2 => tracing::info!(target: "combtest::node", "[{node}] {line}"),
            3 => tracing::debug!(target: "combtest::node", "[{node}] {line}"),
            _ => tracing::trace!(target: "combtest::node", "[{node}] {line}"),
        }
    }
    if dropped > 0 {
        tracing::warn!(
            target: "combtest::node",
            "[{node}] {dropped} log lines dropped (the node logged faster than it was pinged)"
        );
    }
}

/// Calls the node's agent with one request.
pub(crate) async fn call(
    agent: &ActorRef<AgentMsg>,
    request: Vec<u8>,
    timeout: Option<Duration>,
) -> Result<Reply, Trouble> {
    match agent.call(|port| AgentMsg::Call(request, port), timeout).await {
        Ok(CallResult::Success(bytes)) => match wire::decode::<Reply>(&bytes, "reply") {
            Ok(Reply::Error(error)) => Err(Trouble::Broken(error)),
            Ok(Reply::Expired(why)) => {
                Err(Trouble::Lost(format!("the node dropped the run: {why}")))
            }
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

/// Runs a batch on the node and fetches its whole result.
pub(crate) async fn fetch_batch(
    agent: &ActorRef<AgentMsg>,
    run: RunKey,
    batch: u64,
    request: Vec<u8>,
) -> Result<BatchResult, Trouble> {
    // No timeout: a batch may run for as long as its walks do. A dead or
    // hung node is found by the heartbeat, which closes the session and so
    // ends this call.
    let (total, mut bytes) = match call(agent, request, None).await? {
        Reply::Batch { total, chunk } => (total, chunk),
        other => return Err(Trouble::Broken(format!("unexpected answer to a batch: {other:?}"))),
    };
    while (bytes.len() as u64) < total {
        let fetch = wire::encode(&Request::Fetch { run, batch, offset: bytes.len() as u64 });
        match call(agent, fetch, None).await? {
            Reply::Chunk(chunk) if !chunk.is_empty() => bytes.extend_from_slice(&chunk),
            other => {
                return Err(Trouble::Broken(format!("unexpected answer to a fetch: {other:?}")));
            }
        }
    }
    wire::decode(&bytes, "batch result").map_err(Trouble::Broken)
}
