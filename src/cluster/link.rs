//! NodeLink: the coordinator's end of one run on one node, in place of the
//! WalkRunners of an in-process run. One per slot; a rejoined node gets a
//! new link and slot.
//!
//! - Receives `RunBatch` from the Scheduler (through its `Endpoint`): claims
//!   the batch (one the Scheduler took back is not sent), encodes the
//!   epoch's serial value once per epoch, and calls `RunBatch` on the node
//!   from a task of its own, so batches overlap. `Finished` comes back from
//!   that task.
//! - On a result, does what a WalkRunner does: the outcome to the Collector,
//!   the lines to the TraceWriter (a call), `BatchDone` (with the live bits)
//!   to the Scheduler. `NotStarted` (the run was stopping) is acknowledged as
//!   such. It is the one sender of both results and losses for its slot:
//!   once it has reported its node lost it stops, and later results die
//!   with its mailbox.
//! - Receives `Lost` from the ClusterRun (the membership lost the node, or
//!   the node dropped the run) and reports `NodeLost` to the Scheduler. A
//!   batch past the walk timeout (measured on the pause clock) is a loss of
//!   its own: its walks fail, and the membership is asked to give the node
//!   up (a local one is killed and restarted). A batch call that finds the
//!   node gone asks the membership to decide.
//! - `StopRun` from the ClusterRun: the node is told to start nothing more.
//! - Supervised by the ClusterRun; a link that fails ends the run.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::actors::collector::CollectorMsg;
use crate::actors::run_supervisor::RunSupervisorMsg;
use crate::actors::scheduler::{BatchJob, SchedulerMsg};
use crate::actors::trace_writer::TraceWriterMsg;
use crate::actors::walk_runner::{TraceLines, write_lines};
use crate::clock::PauseClock;
use crate::cluster::membership::MembershipMsg;
use crate::cluster::wire::{
    self, AgentMsg, BatchRequest, BatchResult, Reply, Request, RunKey, Trouble, WireInstruction,
    call,
};
use crate::exec::{ErasedOrder, Instruction, WALK_STATE_ACTION};
use crate::model::dispatch::{Done, Loss};
use crate::model::epoch::{EpochId, SerialStep};
use crate::model::outcome::FailedWalk;
use crate::model::space::WalkId;
use crate::order::SerialValue;

/// Largest serial value sent to nodes: it travels with every batch of its
/// epoch, and every request must stay well under ractor_cluster's 16 MiB
/// frame limit.
const MAX_VALUE: usize = 4 << 20;

/// Requests to a NodeLink, and what its own tasks report back.
pub(crate) enum NodeLinkMsg {
    /// Run this batch on the node, then acknowledge it.
    RunBatch(BatchJob),
    /// A batch task finished.
    Finished(BatchJob, Box<Result<Answer, Trouble>>),
    /// A batch ran past the walk timeout.
    TimedOut(BatchJob, Duration),
    /// The node is lost (or dropped the run).
    Lost { reason: String, loss: Loss },
    /// The run is stopping: tell the node to start nothing more.
    StopRun,
}

// Local only: never crosses a node.
impl ractor::Message for NodeLinkMsg {}

/// What a batch call brought back.
pub(crate) enum Answer {
    Ran(Box<BatchResult>),
    NotStarted,
}

/// What a NodeLink needs, fixed for the run.
pub(crate) struct NodeLinkArgs<S> {
    pub(crate) slot: usize,
    pub(crate) member: usize,
    /// The member's connection this run was opened over.
    pub(crate) attempt: u32,
    /// The node's name and pid, for reasons and logs.
    pub(crate) label: String,
    pub(crate) agent: ActorRef<AgentMsg>,
    pub(crate) run: RunKey,
    pub(crate) order: Arc<dyn ErasedOrder<S>>,
    /// Decodes a gathered walk state (postcard).
    pub(crate) decode_state: crate::cluster::run::DecodeState<S>,
    /// A batch (one walk) running longer fails, and the node is given up.
    pub(crate) walk_timeout: Option<Duration>,
    pub(crate) scheduler: ActorRef<SchedulerMsg>,
    pub(crate) collector: ActorRef<CollectorMsg<S>>,
    pub(crate) writer: Option<ActorRef<TraceWriterMsg>>,
    pub(crate) supervisor: ActorRef<RunSupervisorMsg>,
    pub(crate) membership: ActorRef<MembershipMsg>,
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
    lost: bool,
}

impl<S: Send + 'static> Actor for NodeLink<S> {
    type Msg = NodeLinkMsg;
    type State = LinkState<S>;
    type Arguments = NodeLinkArgs<S>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        args: NodeLinkArgs<S>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(LinkState { args, instruction: None, lost: false })
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
                Ok(answer) => state.finished(job, answer).await,
                Err(Trouble::Expired(why)) => {
                    let reason = format!("the node dropped the run: {why}");
                    state.lose(&myself, reason, Loss::Dropped)
                }
                Err(Trouble::Lost(why)) => {
                    // The membership decides whether the node is lost; this
                    // batch's result is gone either way.
                    let (member, attempt) = (state.args.member, state.args.attempt);
                    let kill = MembershipMsg::Kill { member, attempt, reason: why };
                    state.args.membership.cast(kill)?;
                    Ok(())
                }
                Err(Trouble::Broken(why)) => {
                    let reason = format!("node {} failed a batch: {why}", state.args.label);
                    state.args.supervisor.cast(RunSupervisorMsg::Fatal(reason))?;
                    Ok(())
                }
            },
            NodeLinkMsg::TimedOut(job, timeout) => {
                // The node is stuck in a walk: the walk fails, the node is
                // given up (a local one is killed and restarted).
                let reason =
                    format!("a walk {}", crate::actors::walk_runner::timeout_error(timeout));
                let (member, attempt) = (state.args.member, state.args.attempt);
                let kill = MembershipMsg::Kill { member, attempt, reason: reason.clone() };
                state.args.membership.cast(kill)?;
                state.lose(&myself, reason, Loss::TimedOut { batch: job.id, timeout })
            }
            NodeLinkMsg::Lost { reason, loss } => state.lose(&myself, reason, loss),
            NodeLinkMsg::StopRun => {
                let agent = state.args.agent.clone();
                let request = wire::encode(&Request::StopRun { run: state.args.run });
                tokio::spawn(async move {
                    let _ = call(&agent, request, Some(Duration::from_secs(10))).await;
                });
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
            (Instruction::Run(value, history), serial) => {
                let value = match (value, serial) {
                    (Some(value), Some(step)) => Some(self.encode_value(step, value)?),
                    _ => None,
                };
                let history = history
                    .iter()
                    .map(|(step, value)| Ok((*step, self.encode_value(*step, value)?)))
                    .collect::<Result<_, String>>()?;
                WireInstruction::Run { value, history }
            }
            (Instruction::FailBranch(error), _) => WireInstruction::FailBranch(error.clone()),
        };
        let wire = Arc::new(wire);
        self.instruction = Some((job.epoch.id, Arc::clone(&wire)));
        Ok(wire)
    }

    /// A serial value as bytes for the wire, refused when too big.
    fn encode_value(&self, step: SerialStep, value: &SerialValue) -> Result<Vec<u8>, String> {
        let bytes = self.args.order.encode_value(step, value)?;
        if bytes.len() > MAX_VALUE {
            return Err(format!(
                "the value of the serial action at position {} is {} bytes; a value sent to \
                 cluster nodes must stay under {MAX_VALUE} bytes (it travels with every batch)",
                step.position,
                bytes.len()
            ));
        }
        Ok(bytes)
    }

    fn send_batch(
        &mut self,
        myself: &ActorRef<NodeLinkMsg>,
        job: BatchJob,
    ) -> Result<(), ActorProcessingErr> {
        if !job.claim.start() {
            return Ok(()); // Taken back: the run stops.
        }
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
            ranges: job.pieces.ranges().into_owned(),
        });
        let agent = self.args.agent.clone();
        let run = self.args.run;
        let myself = myself.clone();
        let walk_timeout = self.args.walk_timeout;
        tokio::spawn(async move {
            let fetch = fetch_batch(&agent, run, job.id.0, wire::encode(&request));
            let message = match walk_timeout {
                None => NodeLinkMsg::Finished(job, Box::new(fetch.await)),
                Some(timeout) => tokio::select! {
                    result = fetch => NodeLinkMsg::Finished(job, Box::new(result)),
                    () = PauseClock::sleep(timeout) => NodeLinkMsg::TimedOut(job, timeout),
                },
            };
            // If the link is gone, the Scheduler has re-planned this batch.
            let _ = myself.cast(message);
        });
        Ok(())
    }

    async fn finished(&mut self, job: BatchJob, answer: Answer) -> Result<(), ActorProcessingErr> {
        let args = &self.args;
        if !job.claim.deliver() {
            return Ok(()); // Given up: the run has stopped.
        }
        let result = match answer {
            Answer::Ran(result) => *result,
            Answer::NotStarted => {
                let done = Done { walks: job.walks(), not_started: true, ..Done::default() };
                let batch = job.id;
                args.scheduler.cast(SchedulerMsg::BatchDone { slot: args.slot, batch, done })?;
                return Ok(());
            }
        };
        let mut finals = Vec::with_capacity(result.finals.len());
        for (walk, bytes) in &result.finals {
            match (args.decode_state)(bytes) {
                Ok(state) => finals.push((WalkId(*walk), state)),
                Err(error) => {
                    let reason = format!(
                        "node {} sent a walk state that does not decode (walk {walk}): {error}",
                        args.label
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
                // Same fingerprint, same names; anything else is the state.
                action: match entries.get(f.action_index) {
                    Some(entry) if entry.name == f.action => entry.name.into(),
                    _ => WALK_STATE_ACTION.into(),
                },
                ..f
            })
            .collect();
        args.collector.cast(CollectorMsg::BatchOutcome {
            counts: result.counts,
            failed,
            neither: result.neither.into_iter().map(|(start, end)| start..end).collect(),
            finals,
        })?;
        if let Some(writer) = &args.writer {
            let trace = TraceLines {
                lines: result.lines,
                records: result.records,
                failed_nanos: result.failed_nanos,
            };
            if !write_lines(writer, trace, &args.supervisor).await? {
                return Ok(());
            }
        }
        if result.restarted {
            args.supervisor.cast(RunSupervisorMsg::RunnerRestarted)?;
        }
        let done = Done {
            walks: result.walks,
            nanos: result.nanos,
            live: result.live,
            not_started: false,
        };
        args.scheduler.cast(SchedulerMsg::BatchDone { slot: args.slot, batch: job.id, done })?;
        Ok(())
    }

    fn lose(
        &mut self,
        myself: &ActorRef<NodeLinkMsg>,
        reason: String,
        loss: Loss,
    ) -> Result<(), ActorProcessingErr> {
        self.lost = true;
        self.args.scheduler.cast(SchedulerMsg::NodeLost {
            slot: self.args.slot,
            node: self.args.label.clone(),
            reason,
            loss,
        })?;
        myself.stop(Some("node lost".to_string()));
        Ok(())
    }
}

/// Runs a batch on the node and fetches its whole result.
pub(crate) async fn fetch_batch(
    agent: &ActorRef<AgentMsg>,
    run: RunKey,
    batch: u64,
    request: Vec<u8>,
) -> Result<Answer, Trouble> {
    // No timeout: a batch may run for as long as its walks do. A dead or
    // hung node is found by the membership's heartbeat, which closes the
    // session and so ends this call.
    let (total, mut bytes) = match call(agent, request, None).await? {
        Reply::Batch { total, chunk } => (total, chunk),
        Reply::NotStarted => return Ok(Answer::NotStarted),
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
    wire::decode(&bytes, "batch result").map(|r| Answer::Ran(Box::new(r))).map_err(Trouble::Broken)
}
