//! Per-node serial steps, as a node decides them (`model::node_steps`),
//! over random serial trees, batch counts per epoch, node restarts and
//! failing steps: a node applies each step of a branch at most once per
//! incarnation, runs a batch only with the branch's whole history applied
//! (and nothing else after it), and fails a batch exactly when a step of
//! its branch failed there, with the shallowest failure's error.

use std::collections::{BTreeSet, HashMap};

use combtest::model::epoch::SerialStep;
use combtest::model::node_steps::{AppliedSteps, StepPlan};
use proptest::prelude::*;

/// Every branch of a serial tree with `options[level]` options per level,
/// depth-first (a parent before its children), as option paths.
fn depth_first(options: &[u32]) -> Vec<Vec<u32>> {
    fn visit(options: &[u32], path: &mut Vec<u32>, out: &mut Vec<Vec<u32>>) {
        if path.len() == options.len() {
            return;
        }
        for option in 0..options[path.len()] {
            path.push(option);
            out.push(path.clone());
            visit(options, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    visit(options, &mut Vec::new(), &mut out);
    out
}

/// The serial steps of a branch: serial action `level` sits at position
/// `2 * level` of the walk order.
fn steps(path: &[u32]) -> Vec<SerialStep> {
    path.iter()
        .enumerate()
        .map(|(level, &option)| SerialStep { position: 2 * level, option })
        .collect()
}

#[derive(Debug, Clone)]
struct Schedule {
    options: Vec<u32>,
    /// Per epoch (depth-first): batches the node gets (0: none), and
    /// whether the node restarts before it.
    epochs: Vec<(u8, bool)>,
    /// Branches whose step fails on this node.
    failing: BTreeSet<Vec<u32>>,
}

fn schedules() -> impl Strategy<Value = Schedule> {
    prop::collection::vec(1u32..=3, 1..=4).prop_flat_map(|options| {
        let branches = depth_first(&options);
        let n = branches.len();
        (
            Just(options),
            prop::collection::vec((0u8..=3, prop::bool::weighted(0.1)), n),
            prop::collection::vec(prop::bool::weighted(0.1), n),
        )
            .prop_map(move |(options, epochs, fails)| {
                let failing = branches
                    .iter()
                    .zip(fails)
                    .filter(|(_, f)| *f)
                    .map(|(b, _)| b.clone())
                    .collect();
                Schedule { options, epochs, failing }
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn a_node_applies_each_step_once_and_runs_walks_after_their_history(
        schedule in schedules()
    ) {
        let branches = depth_first(&schedule.options);
        let mut applied = AppliedSteps::default();
        let mut incarnation = 0u32;
        let mut applies: HashMap<(u32, Vec<u32>), u32> = HashMap::new();
        for (branch, &(batches, restart)) in branches.iter().zip(&schedule.epochs) {
            if restart {
                applied = AppliedSteps::default();
                incarnation += 1;
            }
            let path = steps(branch);
            let first_failure = (1..=branch.len())
                .find(|&level| schedule.failing.contains(&branch[..level]))
                .map(|level| format!("step {:?} failed", &branch[..level]));
            for _ in 0..batches {
                let failed = match applied.plan(&path) {
                    StepPlan::Failed(error) => Some(error),
                    StepPlan::ApplyFrom(from) => {
                        let mut failed = None;
                        for level in from..path.len() {
                            let prefix = branch[..=level].to_vec();
                            *applies.entry((incarnation, prefix.clone())).or_default() += 1;
                            let outcome = match schedule.failing.contains(&prefix) {
                                true => Err(format!("step {prefix:?} failed")),
                                false => Ok(()),
                            };
                            applied.record(path[level], outcome.clone());
                            if let Err(error) = outcome {
                                failed = Some(error);
                                break;
                            }
                        }
                        failed
                    }
                };
                prop_assert_eq!(&failed, &first_failure, "branch {:?}", branch);
                if failed.is_none() {
                    // The walks run with exactly their branch's history.
                    prop_assert_eq!(applied.steps().collect::<Vec<_>>(), path.clone());
                }
            }
        }
        for ((incarnation, prefix), times) in applies {
            prop_assert_eq!(times, 1, "{:?} applied {} times in incarnation {}", prefix, times, incarnation);
        }
    }
}
