//! Planner: owns the walk order's epoch cursor and hands out epochs, one at a
//! time, on demand. Memory is one branch path, whatever the size of the
//! space.
//!
//! - Receives `NextEpoch` from the SerialBarrier (the only caller).
//! - Supervised by the RunSupervisor; it holds no state worth restarting
//!   with, so its failure ends the run.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::model::epoch::{Epoch, EpochCursor};
use crate::model::sample::WalkSample;
use crate::model::space::Space;

/// Requests to the Planner.
pub(crate) enum PlannerMsg {
    /// The next epoch, depth-first, or `None` when the space is done. With
    /// `skip_subtree`, the branch of the previous epoch is not descended into
    /// (its serial action failed).
    NextEpoch { skip_subtree: bool, reply: RpcReplyPort<Option<Epoch>> },
}

// Local only: never crosses a node.
impl ractor::Message for PlannerMsg {}

pub(crate) struct Planner;

pub(crate) struct PlannerState {
    cursor: EpochCursor,
    /// In a sampled run, epochs with no sampled walk are skipped (and so is
    /// their subtree: it holds no sampled walk either).
    sample: Option<WalkSample>,
}

impl Actor for Planner {
    type Msg = PlannerMsg;
    type State = PlannerState;
    type Arguments = (Space, Option<WalkSample>);

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        (space, sample): (Space, Option<WalkSample>),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(PlannerState { cursor: EpochCursor::new(space), sample })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PlannerMsg::NextEpoch { skip_subtree, reply } => {
                let mut next = state.cursor.next_epoch(skip_subtree);
                if let Some(sample) = &state.sample {
                    while next.as_ref().is_some_and(|e| sample.count_in(&e.walks) == 0) {
                        next = state.cursor.next_epoch(true);
                    }
                }
                // The barrier may have given up waiting; nothing to do then.
                let _ = reply.send(next);
            }
        }
        Ok(())
    }
}
