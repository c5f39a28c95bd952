//! DESIGN.md semantics 7: replaying walk N performs exactly what the run
//! did. Every walk of a run is traced; each trace record's outcome, failing
//! or cancelling entry and error must equal the replay's, for the awkward
//! cases too: an action that cancels, fails or panics; a serial action that
//! cancels; a `prune` that panics. Also: a walk state whose `drop` panics is
//! counted once.

mod common;

use combtest::model::trace::TraceOutcome;
use combtest::{
    Action, ActionResult, Entries, Halt, RunDir, RunOptions, SerialAction, WalkOrder, WalkOutcome,
    WalkView, run,
};
use common::{Append, Moody, SerialAppend, Trail};
use serde::{Deserialize, Serialize};

/// A serial action whose option 1 cancels.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct CancelsOnOne(u32);

impl SerialAction<Trail> for CancelsOnOne {
    type Value = ();
    fn options() -> Vec<Self> {
        vec![CancelsOnOne(0), CancelsOnOne(1)]
    }
    fn run(&self) -> Result<(), Halt> {
        if self.0 == 1 { Err(Halt::Cancel) } else { Ok(()) }
    }
}

/// Its `prune` panics when the first entry chose option 2.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct PrunePanics(u32);

impl Action<Trail> for PrunePanics {
    fn options() -> Vec<Self> {
        vec![PrunePanics(0), PrunePanics(1)]
    }
    fn run(&self, trail: &mut Trail) -> ActionResult {
        trail.push((9, self.0));
        Ok(())
    }
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        assert!(walk.option_index(0) != 2, "prune cannot cope with option 2");
        false
    }
}

/// Runs `order` traced, then replays every walk and compares.
fn run_and_replay_agree<C: Entries<Trail>>(order: WalkOrder<Trail, C>) {
    let dir = tempfile::tempdir().unwrap();
    let options = RunOptions::<Trail>::default().threads(3).log_dir(dir.path()).name("agreement");
    let report = run(&order, options).unwrap();
    assert!(report.is_consistent());
    let run_dir = RunDir::open(report.run_dir.as_ref().unwrap()).unwrap();
    let mut seen = 0;
    for record in run_dir.records().unwrap() {
        let (_, record) = record.unwrap();
        seen += 1;
        let replay = order.replay(record.walk_id, Trail::default()).unwrap();
        let replayed = match replay.outcome {
            WalkOutcome::Passed => (TraceOutcome::Passed, None, None),
            WalkOutcome::Pruned => (TraceOutcome::Pruned, None, None),
            WalkOutcome::Cancelled { action_index } => {
                (TraceOutcome::Cancelled, Some(action_index), None)
            }
            WalkOutcome::Failed { action_index, error, .. } => {
                (TraceOutcome::Failed, Some(action_index), Some(error))
            }
        };
        let recorded = (record.outcome, record.action_index, record.error.clone());
        assert_eq!(recorded, replayed, "walk {}", record.walk_id);
    }
    assert_eq!(seen, report.walks);
}

#[test]
fn cancel_fail_and_panic_replay_as_they_ran() {
    run_and_replay_agree(
        WalkOrder::<Trail>::new()
            .then::<Append<1, 2>>()
            .then::<Moody>()
            .serial::<SerialAppend<2, 2>>()
            .then::<Append<3, 2>>(),
    );
}

#[test]
fn a_cancelling_serial_action_fails_its_branch_in_runs_and_replays() {
    let order = WalkOrder::<Trail>::new()
        .then::<Append<1, 2>>()
        .serial::<CancelsOnOne>()
        .then::<Append<3, 2>>();
    let report = run(&order, RunOptions::default()).unwrap();
    assert_eq!((report.counts.passed, report.counts.failed), (4, 4));
    assert!(report.failed_walks.iter().all(|f| f.error == "serial action cancelled its branch"));
    run_and_replay_agree(order);
}

#[test]
fn a_panicking_prune_fails_the_walk_at_the_pruning_entry() {
    let order = WalkOrder::<Trail>::new()
        .then::<Append<1, 3>>()
        .then::<PrunePanics>()
        .then::<Append<3, 2>>();
    let report = run(&order, RunOptions::default()).unwrap();
    assert_eq!((report.counts.passed, report.counts.failed), (8, 4));
    for failure in &report.failed_walks {
        assert_eq!((failure.action_index, failure.action.as_ref()), (1, "PrunePanics"));
        assert!(failure.error.contains("prune cannot cope with option 2"), "{}", failure.error);
    }
    run_and_replay_agree(order);
}

/// A walk state whose `drop` panics once armed.
#[derive(Debug, Clone, Default)]
struct Bomb {
    armed: bool,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        if self.armed && !std::thread::panicking() {
            panic!("the state blew up while being dropped");
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Arm(bool);

impl Action<Bomb> for Arm {
    fn options() -> Vec<Self> {
        vec![Arm(false), Arm(true)]
    }
    fn run(&self, bomb: &mut Bomb) -> ActionResult {
        bomb.armed = self.0;
        Ok(())
    }
}

#[test]
fn a_state_that_panics_on_drop_is_counted_once() {
    let order = WalkOrder::<Bomb>::new().then::<Arm>().then::<Arm>();
    let report = run(&order, RunOptions::default().threads(2)).unwrap();
    // The armed walks (second Arm = true) fail when their state is dropped;
    // each walk is counted once.
    assert!(report.is_consistent());
    assert_eq!((report.walks, report.counts.passed, report.counts.failed), (4, 2, 2));
    for failure in &report.failed_walks {
        assert_eq!(failure.action, "(walk state)");
        assert!(failure.error.contains("blew up"), "{}", failure.error);
    }
}

/// A panic payload whose own `drop` panics.
struct NastyPayload;

impl Drop for NastyPayload {
    fn drop(&mut self) {
        panic!("the panic payload panicked while dropped");
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct PanicsNastily(u32);

impl Action<Trail> for PanicsNastily {
    fn options() -> Vec<Self> {
        vec![PanicsNastily(0), PanicsNastily(1)]
    }
    fn run(&self, _: &mut Trail) -> ActionResult {
        if self.0 == 1 {
            std::panic::panic_any(NastyPayload);
        }
        Ok(())
    }
}

#[test]
fn a_panic_payload_that_panics_when_dropped_fails_only_its_walk() {
    let order = WalkOrder::<Trail>::new().then::<Append<1, 3>>().then::<PanicsNastily>();
    let report = run(&order, RunOptions::default().threads(2)).unwrap();
    assert!(report.is_consistent());
    assert_eq!((report.counts.passed, report.counts.failed), (3, 3));
    for failure in &report.failed_walks {
        assert_eq!((failure.action_index, failure.action.as_ref()), (1, "PanicsNastily"));
        assert_eq!(failure.error, "panicked: non-string panic payload");
    }
    let replay = order.replay(1, Trail::default()).unwrap();
    assert!(matches!(replay.outcome, WalkOutcome::Failed { action_index: 1, .. }));
}
