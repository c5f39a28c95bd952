//! What an action knows and reaches (issue 16), in-process: its walk's id
//! and its own position, the run's fixtures (from actions, serial actions
//! and their per-node step, dropped when the run ends), starting states
//! from a factory (once per walk that is not pruned; a failure ends the
//! walk before its first action), and clear failures for an action that
//! implements neither run function or asks for a fixture that is not there.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use combtest::prelude::*;
use serde::{Deserialize, Serialize};

/// A walk's trail: (walk id, position, option or value) per step.
type Trail = Vec<(u64, usize, u32)>;

/// Used at two positions: each entry records where it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Mark(u32);

impl Action<Trail> for Mark {
    fn options() -> Vec<Self> {
        (0..3).map(Mark).collect()
    }
    fn run_in(&self, trail: &mut Trail, cx: &WalkContext<'_>) -> ActionResult {
        trail.push((cx.id().0, cx.position(), self.0));
        Ok(())
    }
}

/// Counts its runs and its per-node steps in the run's fixtures.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flip(u32);

/// The fixture `Flip` counts in.
#[derive(Default)]
struct Steps {
    runs: AtomicU64,
    on_node: Mutex<Vec<(Vec<u32>, Option<String>)>>,
}

impl SerialAction<Trail> for Flip {
    type Value = u32;
    fn options() -> Vec<Self> {
        (0..2).map(Flip).collect()
    }
    fn run_in(&self, cx: &SerialContext<'_>) -> Result<u32, Halt> {
        cx.fixture::<Steps>()?.runs.fetch_add(1, Ordering::SeqCst);
        Ok(100 + self.0)
    }
    fn apply_on_node(&self, value: &u32, cx: &SerialContext<'_>) -> ActionResult {
        assert_eq!(*value, 100 + self.0);
        let steps = cx.fixture::<Steps>()?;
        steps.on_node.lock().unwrap().push((cx.branch().to_vec(), cx.node().map(String::from)));
        Ok(())
    }
    fn apply_in(&self, value: &u32, trail: &mut Trail, cx: &WalkContext<'_>) -> ActionResult {
        trail.push((cx.id().0, cx.position(), *value));
        Ok(())
    }
}

/// Set when the fixture holding it is dropped.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn marks() -> WalkOrder<Trail, impl Entries<Trail>> {
    WalkOrder::new().then::<Mark>().serial::<Flip>().then::<Mark>()
}

#[test]
fn an_action_knows_its_walk_and_its_own_position() {
    let order = marks();
    let fixtures = Fixtures::new().with(Steps::default());
    let options = RunOptions::new(Vec::new()).fixtures(fixtures).gather_states(true).threads(2);
    let report = run(&order, options).unwrap();
    assert_eq!(report.walks, 18);
    assert_eq!(report.counts.passed, 18);
    assert_eq!(report.states.len(), 18);
    for (id, trail) in &report.states {
        // Mark at 0, Flip at 1 (its value), Mark at 2: one type, two
        // positions, each entry knows which it is.
        let digits = order.walk(*id).unwrap().option_indices();
        let expected = vec![(id.0, 0, digits[0]), (id.0, 1, 100 + digits[1]), (id.0, 2, digits[2])];
        assert_eq!(trail, &expected, "walk {id}");
    }
}

#[test]
fn fixtures_reach_serial_steps_and_are_dropped_when_the_run_ends() {
    let dropped = Arc::new(AtomicBool::new(false));
    let steps = Arc::new(Steps::default());
    // The fixture is an Arc so the test can read it after the run.
    struct Shared(Arc<Steps>);
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Tally(u32);
    impl SerialAction<Trail> for Tally {
        type Value = ();
        fn options() -> Vec<Self> {
            (0..2).map(Tally).collect()
        }
        fn run_in(&self, cx: &SerialContext<'_>) -> Result<(), Halt> {
            cx.fixture::<Shared>()?.0.runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn apply_on_node(&self, _: &(), cx: &SerialContext<'_>) -> ActionResult {
            let shared = cx.fixture::<Shared>()?;
            shared.0.on_node.lock().unwrap().push((cx.branch().to_vec(), None));
            assert_eq!(cx.node(), None, "in-process, the process is the one node");
            Ok(())
        }
    }
    let order = WalkOrder::new().then::<Mark>().serial::<Tally>().then::<Mark>().serial::<Tally>();
    let fixtures =
        Fixtures::new().with(Dropped(Arc::clone(&dropped))).with(Shared(Arc::clone(&steps)));
    let report = run(&order, RunOptions::new(Vec::new()).fixtures(fixtures)).unwrap();
    assert_eq!(report.counts.passed, 36);
    // 2 + 4 serial epochs: each ran once, and its per-node step once, in
    // depth-first order, right after it.
    assert_eq!(report.serial_actions, 6);
    assert_eq!(steps.runs.load(Ordering::SeqCst), 6);
    let on_node: Vec<Vec<u32>> =
        steps.on_node.lock().unwrap().iter().map(|(b, _)| b.clone()).collect();
    assert_eq!(on_node, [vec![0], vec![0, 0], vec![0, 1], vec![1], vec![1, 0], vec![1, 1]]);
    assert!(dropped.load(Ordering::SeqCst), "the run's fixtures are dropped when it ends");
}

#[test]
fn a_failing_per_node_step_fails_its_branch_in_process() {
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Restart(u32);
    impl SerialAction<Trail> for Restart {
        type Value = ();
        fn options() -> Vec<Self> {
            (0..2).map(Restart).collect()
        }
        fn run(&self) -> Result<(), Halt> {
            Ok(())
        }
        fn apply_on_node(&self, _: &(), _: &SerialContext<'_>) -> ActionResult {
            if self.0 == 1 { fail("the server did not come back") } else { Ok(()) }
        }
    }
    let order = WalkOrder::new().then::<Mark>().serial::<Restart>().then::<Mark>();
    let report = run(&order, RunOptions::new(Vec::new())).unwrap();
    assert_eq!((report.counts.passed, report.counts.failed), (9, 9));
    for failed in &report.failed_walks {
        assert_eq!(order.walk(failed.walk_id).unwrap().option_indices()[1], 1);
        assert_eq!(failed.error, "the server did not come back");
        assert_eq!(failed.action_index, 1);
    }
}

/// A connection to a system: neither `Clone` nor serde.
#[derive(Debug)]
struct Conn {
    walk: u64,
    sent: Vec<u32>,
}

/// Counts the connections a run opened.
#[derive(Default)]
struct Opened(AtomicU64);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Put(u32);

impl Action<Conn> for Put {
    fn options() -> Vec<Self> {
        (0..4).map(Put).collect()
    }
    fn run(&self, conn: &mut Conn) -> ActionResult {
        conn.sent.push(self.0);
        Ok(())
    }
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        // Two sends of 3 in a row make no sense.
        walk.position() == 1 && self.0 == 3 && walk.get_at::<Put>(0).is_some_and(|s| s.0 == 3)
    }
}

fn open(fixtures: &Fixtures, walk: WalkId) -> Result<Conn, Halt> {
    fixtures.require::<Opened>()?.0.fetch_add(1, Ordering::SeqCst);
    match walk.0 {
        5 => Err(Halt::fail("connection refused")),
        6 => Err(Halt::Cancel),
        _ => Ok(Conn { walk: walk.0, sent: Vec::new() }),
    }
}

#[test]
fn a_factory_builds_each_walks_state_once_and_never_for_a_pruned_walk() {
    let opened = Arc::new(Opened::default());
    struct Count(Arc<Opened>);
    let order = WalkOrder::new().then::<Put>().then::<Put>();
    let options = RunOptions::factory(|fixtures: &Fixtures, walk| {
        let count = fixtures.require::<Count>()?;
        open(&Fixtures::new().with(Opened::default()), walk).inspect(|_| {
            count.0.0.fetch_add(1, Ordering::SeqCst);
        })
    })
    .fixtures(Fixtures::new().with(Count(Arc::clone(&opened))))
    .gather_states(true)
    .threads(2);
    let report = run(&order, options).unwrap();
    // 16 walks, 1 pruned (3, 3), walk 5 fails to start, walk 6 cancels.
    assert_eq!(report.walks, 16);
    assert_eq!(report.counts.pruned, 1);
    assert_eq!(report.counts.cancelled, 1);
    assert_eq!(report.counts.failed, 1);
    assert_eq!(report.counts.passed, 13);
    assert_eq!(opened.0.load(Ordering::SeqCst), 13, "one state per walk that started");
    let failed = &report.failed_walks[0];
    assert_eq!(failed.walk_id, WalkId(5));
    assert_eq!(failed.action, "(walk state)");
    assert_eq!(failed.error, "its starting state failed: connection refused");
    for (id, conn) in &report.states {
        assert_eq!(conn.walk, id.0, "each walk has the state built for it");
        assert_eq!(conn.sent, order.walk(*id).unwrap().option_indices());
    }
    // The failure groups say where: the walk state, for one walk.
    assert_eq!(report.failure_groups.len(), 1);
    assert_eq!(report.failure_groups[0].count, 1);
}

#[test]
fn an_action_implementing_neither_run_fails_saying_so() {
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Lazy;
    impl Action<u32> for Lazy {
        fn options() -> Vec<Self> {
            vec![Lazy]
        }
    }
    let report = run(&WalkOrder::new().then::<Lazy>(), RunOptions::new(0)).unwrap();
    assert_eq!(report.counts.failed, 1);
    assert_eq!(
        report.failed_walks[0].error,
        "Lazy implements neither Action::run nor Action::run_in: implement one of them"
    );
}

#[test]
fn a_missing_fixture_fails_the_walk_naming_its_type() {
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Needs;
    struct Database;
    impl Action<u32> for Needs {
        fn options() -> Vec<Self> {
            vec![Needs]
        }
        fn run_in(&self, _: &mut u32, cx: &WalkContext<'_>) -> ActionResult {
            cx.fixture::<Database>()?;
            Ok(())
        }
    }
    let fixtures = Fixtures::new().with(7u8);
    let report = run(&WalkOrder::new().then::<Needs>(), RunOptions::new(0).fixtures(fixtures));
    let error = &report.unwrap().failed_walks[0].error;
    assert_eq!(
        error,
        "no fixture of type Database (add it in the suite's setup or the run's options; there \
         are: u8)"
    );
}

#[test]
fn a_replay_with_the_fixtures_gives_the_runs_state() {
    let order = marks();
    let fixtures = Fixtures::new().with(Steps::default());
    let report =
        run(&order, RunOptions::new(Vec::new()).gather_states(true).fixtures(fixtures)).unwrap();
    let fixtures = Fixtures::new().with(Steps::default());
    for (id, state) in report.states.iter().step_by(5) {
        let replay = order.replay_in(*id, Vec::new(), &fixtures, |_| {}).unwrap();
        assert_eq!(replay.outcome, WalkOutcome::Passed);
        assert_eq!(&replay.state, state, "walk {id}");
    }
    // Without the fixture, the serial action's run fails, as in a run.
    let bare = order.replay(7, Vec::new()).unwrap();
    assert!(matches!(bare.outcome, WalkOutcome::Failed { action_index: 1, .. }), "{bare:?}");
}

#[test]
fn an_opaque_suites_states_run_everywhere_but_are_never_gathered() {
    use combtest::suites::{Fixture, SuiteOptions, opaque_suite};
    let suite = opaque_suite("conn", "states that hold connections", puts(), || {
        Ok(Fixture::factory(open).with(Opened::default()))
    });
    let report = suite.run(&SuiteOptions::default()).unwrap();
    assert_eq!((report.counts.passed, report.counts.failed), (13, 1));
    let mut gather = SuiteOptions::default();
    gather.gather_states = true;
    let error = suite.run_with_states(&gather).unwrap_err().to_string();
    assert_eq!(
        error,
        "suite conn keeps its walk states where they run (they are not serde): they cannot be \
         gathered"
    );
}

fn puts() -> WalkOrder<Conn, impl Entries<Conn>> {
    WalkOrder::new().then::<Put>().then::<Put>()
}
