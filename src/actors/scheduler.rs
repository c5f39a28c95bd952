//! Scheduler: fans the walks of one epoch out to the runners (in-process
//! WalkRunners, or a cluster's NodeLinks) in batches, with credit-based flow
//! control, and reports when the epoch is done. Its decisions are the pure
//! `model::dispatch::Dispatch`; this actor turns messages into calls on it
//! and carries out the commands it returns.
//!
//! - Receives `RunEpoch` from the SerialBarrier (one epoch at a time: the
//!   barrier sends the next only after `EpochDone`), and with it `Probe`
//!   (whether the next epoch's branch has a live walk, answered in the
//!   `EpochDone`) or `AnyLive` (a call, between epochs), `BatchDone` from
//!   runners (their threads, in-process), links, `EndpointUp` from the RunSupervisor (a runner or link
//!   started, or a runner was replaced), `SlotAdded` from the remote side (a
//!   node rejoined), `NodeLost` from a NodeLink, `Stop` from the
//!   RunSupervisor.
//! - Sends `RunBatch` to its endpoints, `EpochDone` to the SerialBarrier once
//!   every batch of the epoch is acknowledged and none is outstanding (at
//!   that moment no segment runs anywhere), failures and unfinished walks to
//!   the Collector (through `Outcomes`), and `AllSlotsLost` / `Stopped` to
//!   the RunSupervisor.
//! - Supervised by the RunSupervisor; its failure ends the run.
//!
//! Each batch carries a [`Claim`]: when the run stops, the Scheduler claims
//! its outstanding batches, taking back those not started and (when forced)
//! giving up those still running, so a batch is accounted for once, by the
//! runner that delivers it or by the Scheduler.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::actors::run_supervisor::RunSupervisorMsg;
use crate::actors::serial_barrier::SerialBarrierMsg;
use crate::exec::{Instruction, NODE_LOST_ACTION, WALK_TIMEOUT_ACTION};
use crate::model::dispatch::{
    BatchId, Claimed, Command, Config, Dispatch, Done, FailCause, Loss, SlotSpec, StopKind,
};
use crate::model::epoch::{Epoch, EpochId};
use crate::model::outcome::{AbortedWalks, Fate, StopReason};
use crate::model::pieces::Pieces;
use crate::runner::Claim;

/// A batch as sent to a runner: walks of one epoch, as id ranges (usually
/// one; several when held pieces meet) or a window into the run's sample,
/// what to do with them, and its claim.
#[derive(Debug, Clone)]
pub(crate) struct BatchJob {
    pub(crate) id: BatchId,
    pub(crate) epoch: Arc<Epoch>,
    pub(crate) instruction: Arc<Instruction>,
    /// Shared: the job is kept for re-sending, and the runner reads them.
    pub(crate) pieces: Pieces,
    pub(crate) claim: Claim,
}

impl BatchJob {
    /// Walks in the batch.
    pub(crate) fn walks(&self) -> u64 {
        self.pieces.walks()
    }
}

/// Where batches go: a local WalkRunner, or the NodeLink of a cluster node.
/// Returns false if the endpoint is gone.
#[derive(Clone)]
pub(crate) struct Endpoint(pub(crate) Arc<dyn Fn(BatchJob) -> bool + Send + Sync>);

/// Outcomes only the Scheduler knows of.
pub(crate) trait Outcomes: Send {
    /// Walks that will not end (their node was lost, or the run stopped).
    fn unfinished(&self, walks: AbortedWalks, fate: Fate) -> Result<(), String>;
    /// A node was lost.
    fn lost(&self, node: String) -> Result<(), String>;
    /// Walks `ids` of `epoch` failed with `error` (blaming `action`), in no
    /// batch: they are counted and traced here.
    fn failed(
        &self,
        epoch: &Epoch,
        ids: &[u64],
        action: &'static str,
        error: &str,
    ) -> Result<(), String>;
}

/// Requests and events to the Scheduler.
pub(crate) enum SchedulerMsg {
    /// Run this epoch's segment (or fail its branch) on every walk of it.
    RunEpoch { epoch: Arc<Epoch>, instruction: Arc<Instruction> },
    /// Slot `slot` finished a batch (its outcome is already with the
    /// Collector).
    BatchDone { slot: usize, batch: BatchId, done: Done },
    /// Slot `slot` is (again) available at `endpoint`. Batches outstanding on
    /// its previous incarnation are re-sent to it.
    EndpointUp { slot: usize, endpoint: Endpoint },
    /// A new slot (a node rejoining), which must be the next index.
    SlotAdded { slot: usize, spec: SlotSpec, endpoint: Endpoint },
    /// The node behind slot `slot` is lost.
    NodeLost { slot: usize, node: String, reason: String, loss: Loss },
    /// Stop dispatching (see `Dispatch::stop`).
    Stop { kind: StopKind, reason: StopReason },
    /// Whether any walk of the range is still live (from the SerialBarrier,
    /// between epochs: nothing runs, so the answer is final).
    AnyLive { walks: Range<u64>, reply: RpcReplyPort<bool> },
    /// When epoch `after` is done, say in its `EpochDone` whether any walk
    /// of `walks` is still live (from the SerialBarrier, for the epoch it
    /// asked for ahead). Dropped if `after` is not under way any more: the
    /// barrier then asks `AnyLive`.
    Probe { after: EpochId, walks: Range<u64> },
}

// Local only: never crosses a node.
impl ractor::Message for SchedulerMsg {}

pub(crate) struct SchedulerArgs {
    pub(crate) config: Config,
    pub(crate) slots: Vec<SlotSpec>,
    pub(crate) barrier: ActorRef<SerialBarrierMsg>,
    /// Where the Scheduler's own outcomes go (the Collector, whose message
    /// type carries the walk state's type, which the Scheduler does not
    /// know; and the trace).
    pub(crate) outcomes: Box<dyn Outcomes>,
    pub(crate) supervisor: ActorRef<RunSupervisorMsg>,
}

pub(crate) struct Scheduler;

pub(crate) struct SchedulerState {
    model: Dispatch,
    endpoints: Vec<Option<Endpoint>>,
    /// The current epoch's instruction.
    instruction: Option<Arc<Instruction>>,
    /// The barrier's probe for the epoch after the current one: answered
    /// in the current one's `EpochDone`.
    probe: Option<Range<u64>>,
    /// Outstanding batches, as sent (a replaced runner gets them again,
    /// with the same claim).
    jobs: HashMap<BatchId, BatchJob>,
    barrier: ActorRef<SerialBarrierMsg>,
    outcomes: Box<dyn Outcomes>,
    supervisor: ActorRef<RunSupervisorMsg>,
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = SchedulerArgs;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        args: SchedulerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SchedulerState {
            model: Dispatch::new(args.config, &args.slots),
            endpoints: vec![None; args.slots.len()],
            instruction: None,
            probe: None,
            jobs: HashMap::new(),
            barrier: args.barrier,
            outcomes: args.outcomes,
            supervisor: args.supervisor,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let commands = match message {
            SchedulerMsg::RunEpoch { epoch, instruction } => {
                let fail_branch = matches!(*instruction, Instruction::FailBranch(_));
                state.instruction = Some(instruction);
                state.model.start_epoch(epoch, fail_branch)?
            }
            SchedulerMsg::BatchDone { slot, batch, done } => {
                state.jobs.remove(&batch);
                state.model.batch_done(slot, batch, done)?
            }
            SchedulerMsg::EndpointUp { slot, endpoint } => {
                if slot >= state.endpoints.len() {
                    return Err(format!("endpoint for unknown slot {slot}").into());
                }
                state.endpoints[slot] = Some(endpoint);
                state.model.endpoint_up(slot)
            }
            SchedulerMsg::SlotAdded { slot, spec, endpoint } => {
                if slot != state.endpoints.len() {
                    return Err(format!(
                        "slot {slot} added where {} was next",
                        state.endpoints.len()
                    )
                    .into());
                }
                state.endpoints.push(Some(endpoint));
                state.model.slot_added(spec).1
            }
            SchedulerMsg::NodeLost { slot, node, reason, loss } => {
                if let Some(endpoint) = state.endpoints.get_mut(slot) {
                    *endpoint = None;
                }
                let commands = state.model.slot_lost(slot, &node, &reason, loss);
                // The lost node's batches are re-planned under new ids.
                let model = &state.model;
                state.jobs.retain(|id, _| model.is_outstanding(*id));
                commands
            }
            SchedulerMsg::Stop { kind, reason } => state.model.stop(kind, reason),
            SchedulerMsg::AnyLive { walks, reply } => {
                let _ = reply.send(state.model.any_live(walks));
                return Ok(());
            }
            SchedulerMsg::Probe { after, walks } => {
                if state.model.current_epoch() == Some(after) {
                    state.probe = Some(walks);
                }
                return Ok(());
            }
        };
        state.carry_out(commands)
    }
}

impl SchedulerState {
    /// Carries out the model's commands (a claim's results may bring more).
    fn carry_out(&mut self, commands: Vec<Command>) -> Result<(), ActorProcessingErr> {
        let mut queue: std::collections::VecDeque<Command> = commands.into();
        while let Some(command) = queue.pop_front() {
            match command {
                Command::Send { slot, batch } => self.send(slot, batch)?,
                Command::Fail { epoch, ids, cause, error } => {
                    let action = match cause {
                        FailCause::WalkTimeout => WALK_TIMEOUT_ACTION,
                        FailCause::NodeLost => NODE_LOST_ACTION,
                    };
                    self.outcomes.failed(&epoch, &ids, action, &error)?;
                }
                Command::Unfinished { walks, fate } => {
                    tracing::info!(walks = walks.count(), reason = %walks.reason, "walks left unfinished");
                    self.outcomes.unfinished(walks, fate)?;
                }
                Command::NodeLost(node) => self.outcomes.lost(node)?,
                Command::EpochDone(id) => {
                    self.instruction = None;
                    // Nothing runs now: the answer is final.
                    let live = self.probe.take().map(|walks| self.model.any_live(walks));
                    self.barrier.cast(SerialBarrierMsg::EpochDone { id, live })?;
                }
                Command::Claim { batches, force } => {
                    let results: Vec<(BatchId, Claimed)> = batches
                        .into_iter()
                        .map(|id| {
                            let claimed = self
                                .jobs
                                .get(&id)
                                .map_or(Claimed::Running, |job| job.claim.take_back(force));
                            if claimed != Claimed::Running {
                                self.jobs.remove(&id);
                            }
                            (id, claimed)
                        })
                        .collect();
                    queue.extend(self.model.claimed(results));
                }
                Command::AllSlotsLost => self.supervisor.cast(RunSupervisorMsg::AllSlotsLost)?,
                Command::Ended => self.supervisor.cast(RunSupervisorMsg::Stopped)?,
            }
        }
        Ok(())
    }

    fn send(
        &mut self,
        slot: usize,
        batch: crate::model::dispatch::Batch,
    ) -> Result<(), ActorProcessingErr> {
        let job = match self.jobs.get(&batch.id) {
            Some(job) => job.clone(), // Re-sent: the same claim.
            None => {
                let instruction =
                    self.instruction.clone().ok_or("a batch to send with no epoch under way")?;
                let job = BatchJob {
                    id: batch.id,
                    epoch: batch.epoch,
                    instruction,
                    pieces: batch.pieces,
                    claim: Claim::default(),
                };
                self.jobs.insert(job.id, job.clone());
                job
            }
        };
        let sent = self.endpoints.get(slot).and_then(Option::as_ref).is_some_and(|e| (e.0)(job));
        if !sent {
            // The endpoint is dying (a runner fails after a panic; a node
            // link stops when its node is lost). `EndpointUp` re-sends what
            // is outstanding on a replaced runner; `NodeLost` re-plans what
            // was sent to a lost node.
            if let Some(endpoint) = self.endpoints.get_mut(slot) {
                *endpoint = None;
            }
            self.model.endpoint_down(slot);
        }
        Ok(())
    }
}
