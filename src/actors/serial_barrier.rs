//! SerialBarrier: the global pinch point. It walks the epochs one at a time:
//! asks the Planner for the next epoch, waits until the previous epoch is
//! done everywhere, runs the epoch's serial action exactly once, then
//! releases the epoch to the Scheduler.
//!
//! - Receives `Start` from the RunSupervisor and `EpochDone` from the
//!   Scheduler (sent only when every batch of the epoch is acknowledged and
//!   none is outstanding, so when this actor runs a serial action no segment
//!   of any walk is running anywhere).
//! - Calls the Planner (`NextEpoch`), for the epoch after the one it just
//!   released, while that one runs (asked ahead: `EpochDone` finds it
//!   there); sends `SerialRan` to the Collector, `RunEpoch` and `Probe` to
//!   the Scheduler, `EpochsDone` to the RunSupervisor.
//! - Runs each serial action on the run's serial thread (`SerialThread`: a
//!   plain thread of its own, kept awake a little between serial runs, so a
//!   short serial action costs no thread start and usually no wake-up; never
//!   the async executor, where a blocking or `block_on` action would stall
//!   or panic).
//! - In-process, the serial action's per-node step (`apply_on_node`) runs
//!   right after it, on the same thread, with the run's fixtures
//!   (the process is the run's one node); it failing fails the branch as
//!   the serial action failing would. In a cluster run, nodes run it (see
//!   `cluster::node_run`): the barrier hands each epoch the branch's
//!   earlier steps and their values (`History`), for nodes that missed
//!   them.
//! - A serial action that fails (or panics) turns its epoch into a
//!   `FailBranch` instruction: every live walk of the branch fails with the
//!   serial action's error, and the Planner skips the branch's subtree.
//! - A branch with no live walk left (DESIGN §8): before the serial action
//!   of an epoch whose walks already ran a segment, it needs to know
//!   whether any is live: the `Probe` it sent with the epoch asked for
//!   ahead comes back in `EpochDone`, or (when the probe came too late) it
//!   asks the Scheduler (`AnyLive`); both between epochs, so the answer is
//!   final. With none, the
//!   serial action does not run, the epoch is not released, the Planner
//!   skips the subtree, and the Collector counts them (`SerialSkipped`).
//! - Supervised by the RunSupervisor; its failure ends the run.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::actors::LOCAL_REPLY_TIMEOUT;
use crate::actors::collector::CollectorMsg;
use crate::actors::planner::PlannerMsg;
use crate::actors::run_supervisor::RunSupervisorMsg;
use crate::actors::scheduler::SchedulerMsg;
use crate::exec::{ErasedOrder, Instruction};
use crate::model::barrier::LiveCheck;
use crate::model::epoch::{Epoch, EpochId, SerialStep};
use crate::model::fixtures::Fixtures;
use crate::order::SerialValue;
use crate::runner::SerialThread;

/// Events to the SerialBarrier.
pub(crate) enum SerialBarrierMsg {
    /// Begin with the first epoch, releasing epochs to this Scheduler.
    Start(ActorRef<SchedulerMsg>),
    /// Every walk of this epoch has been acknowledged; nothing runs. `live`:
    /// the answer to the `Probe` for the epoch asked for ahead (whether its
    /// branch has a live walk), if the probe came while this one ran.
    EpochDone { id: EpochId, live: Option<bool> },
}

// Local only: never crosses a node.
impl ractor::Message for SerialBarrierMsg {}

pub(crate) struct SerialBarrierArgs<S> {
    pub(crate) order: Arc<dyn ErasedOrder<S>>,
    pub(crate) planner: ActorRef<PlannerMsg>,
    pub(crate) collector: ActorRef<CollectorMsg<S>>,
    pub(crate) supervisor: ActorRef<RunSupervisorMsg>,
    /// The fixtures serial actions run with (this process's).
    pub(crate) fixtures: Arc<Fixtures>,
    /// Run each serial action's per-node step here (in-process runs).
    pub(crate) node_steps_here: bool,
}

pub(crate) struct SerialBarrier<S>(std::marker::PhantomData<fn() -> S>);

impl<S> SerialBarrier<S> {
    pub(crate) fn new() -> Self {
        SerialBarrier(std::marker::PhantomData)
    }
}

pub(crate) struct BarrierState<S> {
    args: SerialBarrierArgs<S>,
    /// Set by `Start`: the Scheduler is spawned after the barrier it reports to.
    scheduler: Option<ActorRef<SchedulerMsg>>,
    /// The epoch released to the Scheduler and not yet done.
    running: Option<EpochId>,
    /// Whether the last epoch's subtree is skipped (its serial action
    /// failed, or its branch had no live walk).
    skip_subtree: bool,
    /// The serial steps of the current branch, by level, with their values.
    path: Vec<(SerialStep, SerialValue)>,
    /// The epoch after the running one, asked for ahead (`Some(None)`: the
    /// Planner has no more).
    ahead: Option<Option<Epoch>>,
    /// Where serial actions run.
    serial: SerialThread,
}

impl<S: Send + 'static> Actor for SerialBarrier<S> {
    type Msg = SerialBarrierMsg;
    type State = BarrierState<S>;
    type Arguments = SerialBarrierArgs<S>;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        args: SerialBarrierArgs<S>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(BarrierState {
            args,
            scheduler: None,
            running: None,
            skip_subtree: false,
            path: Vec::new(),
            ahead: None,
            serial: SerialThread::spawn()?,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SerialBarrierMsg::Start(scheduler) if state.scheduler.is_none() => {
                state.scheduler = Some(scheduler);
                state.advance(None).await
            }
            SerialBarrierMsg::EpochDone { id, live } if state.running == Some(id) => {
                state.running = None;
                state.advance(live).await
            }
            SerialBarrierMsg::Start(_) => Err("the barrier was started twice".into()),
            SerialBarrierMsg::EpochDone { id, .. } => {
                Err(format!("epoch {id:?} reported done, but {:?} is running", state.running)
                    .into())
            }
        }
    }
}

impl<S: Send + 'static> BarrierState<S> {
    fn scheduler(&self) -> &ActorRef<SchedulerMsg> {
        self.scheduler.as_ref().expect("advance runs only after Start")
    }

    /// Whether any walk of the epoch's branch is still live.
    async fn any_live(&self, epoch: &Epoch) -> Result<bool, ActorProcessingErr> {
        let walks = epoch.walks.clone();
        match self
            .scheduler()
            .call(|reply| SchedulerMsg::AnyLive { walks, reply }, Some(LOCAL_REPLY_TIMEOUT))
            .await?
        {
            ractor::rpc::CallResult::Success(live) => Ok(live),
            other => Err(format!("the scheduler did not answer: {other:?}").into()),
        }
    }

    /// The Planner's next epoch, skipping the last one's subtree if it was
    /// marked so.
    async fn next_epoch(&mut self) -> Result<Option<Epoch>, ActorProcessingErr> {
        let skip_subtree = std::mem::take(&mut self.skip_subtree);
        match self
            .args
            .planner
            .call(|reply| PlannerMsg::NextEpoch { skip_subtree, reply }, Some(LOCAL_REPLY_TIMEOUT))
            .await?
        {
            ractor::rpc::CallResult::Success(next) => Ok(next),
            other => Err(format!("the planner did not answer: {other:?}").into()),
        }
    }

    /// Moves to the next epoch: runs its serial action, if any, and releases
    /// it; or reports that every epoch is done. `probed`: the answer to the
    /// probe for the epoch asked for ahead, from `EpochDone`.
    async fn advance(&mut self, mut probed: Option<bool>) -> Result<(), ActorProcessingErr> {
        let epoch = loop {
            let next = match self.ahead.take() {
                Some(next) => next,
                None => self.next_epoch().await?,
            };
            let Some(epoch) = next else {
                self.args.supervisor.cast(RunSupervisorMsg::EpochsDone)?;
                return Ok(());
            };
            // The probe answers for the epoch asked for ahead only.
            let live = match LiveCheck::of(&epoch, probed.take()) {
                LiveCheck::None => true,
                LiveCheck::Known(live) => live,
                LiveCheck::Ask => self.any_live(&epoch).await?,
            };
            if live {
                break epoch;
            }
            // No walk of the branch is live: neither this serial action nor
            // any below it runs.
            let skipped = 1 + self.args.order.space().serial_epochs_below(epoch.level);
            tracing::debug!(epoch = epoch.id.0, branch = ?epoch.branch, skipped,
                "no live walk in the branch; its serial actions are skipped");
            self.args.collector.cast(CollectorMsg::SerialSkipped(skipped))?;
            self.skip_subtree = true;
        };
        // The steps above this epoch's level stay on the path.
        self.path.truncate(epoch.level.saturating_sub(1));
        let history = Arc::new(self.path.clone());
        let instruction = match epoch.serial {
            None => Instruction::Run(None, history),
            Some(step) => match self.run_serial(step, &epoch.branch).await? {
                Ok(value) => {
                    self.path.push((step, value.clone()));
                    Instruction::Run(Some(value), history)
                }
                Err(error) => {
                    tracing::warn!(epoch = epoch.id.0, branch = ?epoch.branch, %error,
                        "serial action failed; failing its branch");
                    self.skip_subtree = true;
                    // Its walks fail here: the serial actions below
                    // have no live walk left.
                    let below = self.args.order.space().serial_epochs_below(epoch.level);
                    if below > 0 {
                        self.args.collector.cast(CollectorMsg::SerialSkipped(below))?;
                    }
                    Instruction::FailBranch(error)
                }
            },
        };
        tracing::debug!(epoch = epoch.id.0, level = epoch.level, branch = ?epoch.branch,
            walks = ?epoch.walks, "epoch released");
        let id = epoch.id;
        self.running = Some(id);
        self.scheduler().cast(SchedulerMsg::RunEpoch {
            epoch: Arc::new(epoch),
            instruction: Arc::new(instruction),
        })?;
        // Ask for the next epoch while this one runs, and have the
        // Scheduler check its branch when this one is done.
        let next = self.next_epoch().await?;
        if let Some(next) = &next
            && LiveCheck::needed(next)
        {
            self.scheduler().cast(SchedulerMsg::Probe { after: id, walks: next.walks.clone() })?;
        }
        self.ahead = Some(next);
        Ok(())
    }

    /// Runs `step`'s serial action once (and in-process its per-node step)
    /// on the run's serial thread; tells the Collector it ran.
    async fn run_serial(
        &mut self,
        step: SerialStep,
        branch: &[u32],
    ) -> Result<Result<SerialValue, String>, ActorProcessingErr> {
        let order = Arc::clone(&self.args.order);
        let fixtures = Arc::clone(&self.args.fixtures);
        let here = self.args.node_steps_here;
        let branch = branch.to_vec();
        let result = self
            .serial
            .run(move || {
                let value = order.run_serial(step, &branch, &fixtures)?;
                if here {
                    order.node_step(step, &branch, &value, &fixtures, None)?;
                }
                Ok::<_, String>(value)
            })
            .await?;
        self.args.collector.cast(CollectorMsg::SerialRan)?;
        Ok(result)
    }
}
