//! Accounting property: whatever the actions do (pass, cancel, fail, panic,
//! prune) and however many runners there are, the report matches a plain
//! sequential interpreter walk by walk, and passed + failed + cancelled +
//! pruned + aborted equals the size of the space (or of the sample, for a
//! run over a sample of it).

use std::collections::BTreeSet;
use std::sync::Arc;

use combtest::model::sample::WalkSample;
use combtest::{Action, ActionResult, Halt, RunOptions, SerialAction, WalkOrder, WalkView, run};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

const OK: u8 = 0;
const CANCEL: u8 = 1;
const FAIL: u8 = 2;
const PANIC: u8 = 3;

/// Per walk: what each (position, option) does, drawn by proptest, and
/// the options the walk's actions ran with so far.
#[derive(Debug, Clone, Default)]
struct Scripted {
    behaviour: Arc<Vec<Vec<u8>>>,
    trail: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Act<const POS: usize, const N: u32>(u32);

impl<const POS: usize, const N: u32> Action<Scripted> for Act<POS, N> {
    fn options() -> Vec<Self> {
        (0..N).map(Self).collect()
    }
    fn run(&self, state: &mut Scripted) -> ActionResult {
        state.trail.push(self.0);
        match state.behaviour[POS][self.0 as usize] {
            CANCEL => Err(Halt::Cancel),
            FAIL => Err(Halt::fail("scripted failure")),
            PANIC => panic!("scripted panic"),
            _ => Ok(()),
        }
    }
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        // Fixed rule: entry 0 at option 2 with this entry at option 1.
        POS == 3 && walk.option_index(0) == 2 && self.0 == 1
    }
}

/// Serial action whose option 2 fails.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Gate(u32);

impl SerialAction<Scripted> for Gate {
    type Value = ();
    fn options() -> Vec<Self> {
        (0..3).map(Gate).collect()
    }
    fn run(&self) -> Result<(), Halt> {
        if self.0 == 2 { Err(Halt::fail("gate 2 is broken")) } else { Ok(()) }
    }
}

/// Expected outcome of one walk, by a sequential interpreter.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Expect {
    Passed,
    Cancelled,
    Failed,
    Pruned,
}

fn interpret(digits: &[u32], behaviour: &[Vec<u8>]) -> Expect {
    if digits[0] == 2 && digits[3] == 1 {
        return Expect::Pruned;
    }
    for (position, &option) in digits.iter().enumerate() {
        if position == 2 {
            if option == 2 {
                return Expect::Failed;
            }
            continue;
        }
        match behaviour[position][option as usize] {
            CANCEL => return Expect::Cancelled,
            FAIL | PANIC => return Expect::Failed,
            _ => {}
        }
    }
    Expect::Passed
}

/// The walk order both properties run: 288 walks, a serial entry in the
/// middle.
fn scripted_order() -> WalkOrder<Scripted, impl combtest::Entries<Scripted>> {
    WalkOrder::<Scripted>::new()
        .then::<Act<0, 3>>()
        .then::<Act<1, 4>>()
        .serial::<Gate>()
        .then::<Act<3, 2>>()
        .then::<Act<4, 4>>()
}

fn behaviour() -> impl Strategy<Value = Vec<Vec<u8>>> {
    // Mostly passing options, some of every other kind.
    let code = prop_oneof![6 => Just(OK), 1 => Just(CANCEL), 1 => Just(FAIL), 1 => Just(PANIC)];
    prop::collection::vec(prop::collection::vec(code, 4), 5)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn reports_match_a_sequential_interpreter(
        behaviour in behaviour(),
        threads in 1usize..7,
        sample in prop::option::of(prop::collection::btree_set(0u64..288, 1..40)),
    ) {
        quiet_scripted_panics();
        let order = scripted_order();
        let initial = Scripted { behaviour: Arc::new(behaviour.clone()), trail: Vec::new() };
        let size = order.size().unwrap();
        prop_assert_eq!(size, 288);
        let mut options = RunOptions::new(initial).threads(threads).gather_states(true);
        let ids: Vec<u64> = match &sample {
            // A sampled run accounts for its sample only, with the same
            // outcome per walk as a full run.
            Some(ids) => {
                let sample = WalkSample::new(ids.iter().copied().collect(), size).unwrap();
                options = options.sample(sample);
                ids.iter().copied().collect()
            }
            None => (0..size).collect(),
        };
        let report = run(&order, options).unwrap();
        prop_assert_eq!(report.walks, ids.len() as u64);
        // Gate runs once per branch that has a walk of the run still live
        // after the first segment (not pruned, and entries 0 and 1 passed);
        // every other branch of the run's walks skips its Gate (DESIGN §8).
        let live_after_first = |digits: &[u32]| {
            !(digits[0] == 2 && digits[3] == 1)
                && (0..2).all(|p| behaviour[p][digits[p] as usize] == OK)
        };
        let all: BTreeSet<u32> =
            ids.iter().map(|&id| order.walk(id).unwrap().option_indices()[2]).collect();
        let live: BTreeSet<u32> = ids
            .iter()
            .map(|&id| order.walk(id).unwrap().option_indices())
            .filter(|d| live_after_first(d))
            .map(|d| d[2])
            .collect();
        prop_assert_eq!(report.serial_actions, live.len() as u64);
        // (A sample's branches without a walk are not epochs at all.)
        prop_assert_eq!(report.serial_skipped, (all.len() - live.len()) as u64);
        let mut expected = [0u64; 4];
        let mut expected_failed = BTreeSet::new();
        let mut passed = Vec::new();
        for id in ids {
            let digits = order.walk(id).unwrap().option_indices();
            let outcome = interpret(&digits, &behaviour);
            expected[outcome as usize] += 1;
            if outcome == Expect::Failed {
                expected_failed.insert(id);
            }
            if outcome == Expect::Passed {
                passed.push(id);
            }
        }
        prop_assert!(report.is_consistent());
        prop_assert_eq!(report.counts.passed + report.counts.failed + report.counts.cancelled + report.counts.pruned
            + report.counts.aborted, report.walks);
        prop_assert_eq!(
            [report.counts.passed, report.counts.cancelled, report.counts.failed, report.counts.pruned],
            expected
        );
        let failed: BTreeSet<u64> = report.failed_walks.iter().map(|f| f.walk_id.0).collect();
        prop_assert_eq!(failed, expected_failed);
        prop_assert_eq!(report.counts.aborted, 0);
        // Each final state is its own walk's: it ran that walk's options,
        // in order (all of them if the walk passed), whatever ended the
        // walks held beside it.
        for (id, state) in &report.states {
            let digits = order.walk(id.0).unwrap().option_indices();
            let plain = [digits[0], digits[1], digits[3], digits[4]];
            prop_assert!(plain.starts_with(&state.trail), "walk {}: ran {:?}", id.0, state.trail);
        }
        for &id in &passed {
            let state = report.states.get(&combtest::WalkId(id));
            prop_assert_eq!(state.map(|s| s.trail.len()), Some(4), "passed walk {}", id);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// A failure limit (`RunOptions::max_failures`) stops the run without
    /// losing a walk: every walk is still accounted for once (those never
    /// started as `not_run`), only walks that fail are reported failed, and
    /// at least `limit` are when the space holds that many; under the
    /// limit, the run is the full one.
    #[test]
    fn a_failure_limit_loses_no_walk(
        behaviour in behaviour(),
        threads in 1usize..5,
        limit in 1u64..8,
        batch in prop::option::of(1u64..20),
    ) {
        use combtest::{Ending, StopReason};
        quiet_scripted_panics();
        let order = scripted_order();
        let initial = Scripted { behaviour: Arc::new(behaviour.clone()), trail: Vec::new() };
        let mut options = RunOptions::new(initial).threads(threads).max_failures(limit);
        if let Some(batch) = batch {
            options = options.max_batch(batch);
        }
        let report = run(&order, options).unwrap();
        let mut expected = [0u64; 4];
        let mut expected_failed = BTreeSet::new();
        for id in 0..report.walks {
            let outcome = interpret(&order.walk(id).unwrap().option_indices(), &behaviour);
            expected[outcome as usize] += 1;
            if outcome == Expect::Failed {
                expected_failed.insert(id);
            }
        }
        prop_assert!(report.is_consistent(), "{:?}", report);
        prop_assert_eq!(report.counts.aborted, 0);
        let failed: BTreeSet<u64> = report.failed_walks.iter().map(|f| f.walk_id.0).collect();
        prop_assert!(failed.is_subset(&expected_failed), "{:?} not all failing walks", failed);
        let seen = [report.counts.passed, report.counts.cancelled, report.counts.failed, report.counts.pruned];
        prop_assert!(seen.iter().zip(&expected).all(|(s, e)| s <= e), "{:?} > {:?}", seen, expected);
        if (expected_failed.len() as u64) < limit {
            prop_assert_eq!(&report.ending, &Ending::Completed);
            prop_assert_eq!(seen, expected);
            prop_assert_eq!(report.not_run, 0);
        } else {
            prop_assert!(report.counts.failed >= limit, "{:?}", report.counts);
            // Stopped at the limit, or every walk had started by then.
            let stopped = report.ending == Ending::Stopped(StopReason::FailureLimit(limit));
            prop_assert!(stopped || (report.ending == Ending::Completed && seen == expected),
                "{:?}", report.ending);
        }
    }
}

/// Scripted panics are expected here: keep them out of the test output.
fn quiet_scripted_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&"scripted panic") {
                default(info);
            }
        }));
    });
}
