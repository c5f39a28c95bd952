//! Which per-node serial steps (`SerialAction::apply_on_node`) a node
//! applies before it runs walks of a branch: the decision, without the
//! steps themselves (`cluster::node_run` carries them out).
//!
//! A node keeps the steps it has applied in the current run, by level,
//! with their outcome. A batch names its branch's serial steps, by level.
//! The node keeps the common prefix, forgets the rest (the depth-first
//! order never returns to a branch it left), and applies the batch's
//! steps past the prefix, in order, stopping at the first that fails. A
//! failed step on the path fails the batch's walks with its error.

use super::epoch::SerialStep;

/// The per-node steps applied on one node in one run.
#[derive(Debug, Clone, Default)]
pub struct AppliedSteps {
    applied: Vec<(SerialStep, Result<(), String>)>,
}

/// What a node does before a batch of a branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepPlan {
    /// Apply the path's steps from this level on (none when it equals the
    /// path's length), recording each outcome, then run the batch unless
    /// one fails.
    ApplyFrom(usize),
    /// A step of the path failed here earlier: fail the batch's walks.
    Failed(String),
}

impl AppliedSteps {
    /// The plan for a batch whose branch has serial steps `path`, by level.
    pub fn plan(&mut self, path: &[SerialStep]) -> StepPlan {
        let kept = self.applied.iter().zip(path).take_while(|((a, _), p)| a == *p).count();
        self.applied.truncate(kept);
        match self.applied.iter().find_map(|(_, outcome)| outcome.as_ref().err()) {
            Some(error) => StepPlan::Failed(error.clone()),
            None => StepPlan::ApplyFrom(kept),
        }
    }

    /// Records that `step` (the next level of the path) was applied.
    pub fn record(&mut self, step: SerialStep, outcome: Result<(), String>) {
        self.applied.push((step, outcome));
    }

    /// The steps applied, by level.
    pub fn steps(&self) -> impl Iterator<Item = SerialStep> + '_ {
        self.applied.iter().map(|(step, _)| *step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(position: usize, option: u32) -> SerialStep {
        SerialStep { position, option }
    }

    #[test]
    fn a_node_applies_only_what_its_branch_adds() {
        let mut applied = AppliedSteps::default();
        let (a0, b0, b1, a1) = (step(0, 0), step(2, 0), step(2, 1), step(0, 1));
        assert_eq!(applied.plan(&[a0, b0]), StepPlan::ApplyFrom(0));
        applied.record(a0, Ok(()));
        applied.record(b0, Ok(()));
        assert_eq!(applied.plan(&[a0, b0]), StepPlan::ApplyFrom(2));
        assert_eq!(applied.plan(&[a0, b1]), StepPlan::ApplyFrom(1));
        applied.record(b1, Err("disk full".into()));
        assert_eq!(applied.plan(&[a0, b1]), StepPlan::Failed("disk full".into()));
        assert_eq!(applied.plan(&[a1]), StepPlan::ApplyFrom(0));
        assert_eq!(applied.steps().count(), 0);
    }
}
