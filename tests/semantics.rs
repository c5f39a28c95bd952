//! DESIGN.md's execution semantics, point by point: pruning, cancel,
//! failures and panics, failing serial actions, serial actions off the async
//! executor, replay.

mod common;

use combtest::{
    Action, ActionResult, Halt, RunOptions, SerialAction, WalkOrder, WalkOutcome, WalkView, run,
};
use common::{Append, Moody, SerialAppend, Trail, expected_trail};
use serde::{Deserialize, Serialize};

/// Prunes every walk whose first entry chose option 0 and whose own option
/// is 1.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Picky(u32);

impl Action<Trail> for Picky {
    fn options() -> Vec<Self> {
        (0..3).map(Picky).collect()
    }
    fn run(&self, trail: &mut Trail) -> ActionResult {
        trail.push((9, self.0));
        Ok(())
    }
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        let first = walk.get::<Append<1, 4>>().expect("Append<1, 4> is in the walk order");
        first.0 == 0 && self.0 == 1
    }
}

#[test]
fn pruned_walks_never_run() {
    let order = WalkOrder::<Trail>::new()
        .then::<Append<1, 4>>()
        .serial::<SerialAppend<2, 2>>()
        .then::<Picky>();
    let report = run(&order, RunOptions::default().gather_states(true).threads(2)).unwrap();
    // 2 serial options x (first = 0, Picky = 1) = 2 pruned walks.
    assert_eq!((report.walks, report.counts.pruned, report.counts.passed), (24, 2, 22));
    assert!(report.is_consistent());
    for id in 0..24u64 {
        let walk = order.walk(id).unwrap();
        let options = walk.option_indices();
        let pruned = options[0] == 0 && options[2] == 1;
        // A pruned walk has no state: it never ran, not even its first segment.
        assert_eq!(report.states.contains_key(&combtest::WalkId(id)), !pruned, "walk {id}");
        if pruned {
            assert_eq!(order.replay(id, Vec::new()).unwrap().outcome, WalkOutcome::Pruned);
        }
    }
    // Pruned walks run no segment: 22 walks x 2 segments.
    assert_eq!(report.counts.segments, 44);
}

#[test]
fn cancel_fail_and_panic_end_only_their_walk() {
    let order = WalkOrder::<Trail>::new()
        .then::<Append<1, 2>>()
        .then::<Moody>()
        .serial::<SerialAppend<2, 2>>()
        .then::<Append<3, 2>>();
    let report = run(&order, RunOptions::default().gather_states(true).threads(2)).unwrap();
    // 32 walks; Moody's option picks the outcome for a quarter each.
    assert_eq!(report.walks, 32);
    assert_eq!((report.counts.cancelled, report.counts.failed, report.counts.passed), (8, 16, 8));
    assert!(report.is_consistent());
    assert!(report.runner_restarts >= 1, "a panic replaces its runner");
    for failure in &report.failed_walks {
        let walk = order.walk(failure.walk_id.0).unwrap();
        assert_eq!((failure.action_index, failure.action.as_ref()), (1, "Moody"));
        match walk.steps[1].option {
            1 => assert_eq!(failure.error, "moody refuses"),
            2 => assert_eq!(failure.error, "panicked: moody panics"),
            other => panic!("walk with Moody({other}) should not fail"),
        }
    }
    // Segment 1 (after the serial action) ran only for walks still alive:
    // 32 first segments + 8 second segments.
    assert_eq!(report.counts.segments, 40);
    for (id, trail) in &report.states {
        let options = order.walk(id.0).unwrap().option_indices();
        if options[1] == 3 {
            assert_eq!(trail, &expected_trail(&[1, 8, 2, 3], &options));
        } else {
            // Stopped at Moody: nothing after it ran.
            assert_eq!(trail, &expected_trail(&[1, 8], &options[..2]));
        }
    }
}

/// A serial action whose option 1 fails.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct FlakyConfig(u32);

impl SerialAction<Trail> for FlakyConfig {
    type Value = u32;
    fn options() -> Vec<Self> {
        (0..2).map(FlakyConfig).collect()
    }
    fn run(&self) -> Result<u32, Halt> {
        if self.0 == 1 { Err(Halt::fail("config 1 cannot be applied")) } else { Ok(self.0) }
    }
    fn apply(&self, value: &u32, trail: &mut Trail) -> ActionResult {
        trail.push((7, *value));
        Ok(())
    }
}

#[test]
fn a_failing_serial_action_fails_only_its_branch() {
    let order = WalkOrder::<Trail>::new()
        .then::<Append<1, 3>>()
        .serial::<FlakyConfig>()
        .then::<Append<2, 2>>()
        .serial::<SerialAppend<3, 2>>()
        .then::<Append<4, 2>>();
    let report = run(&order, RunOptions::default().gather_states(true).threads(2)).unwrap();
    // 48 walks: branch FlakyConfig=0 (ids 0..24) passes, branch 1 fails.
    assert_eq!((report.walks, report.counts.passed, report.counts.failed), (48, 24, 24));
    assert!(report.is_consistent());
    for failure in &report.failed_walks {
        assert!((24..48).contains(&failure.walk_id.0));
        assert_eq!((failure.action_index, failure.action.as_ref()), (1, "FlakyConfig"));
        assert_eq!(failure.error, "config 1 cannot be applied");
    }
    // Serial actions: FlakyConfig x2, then SerialAppend x2 under branch 0
    // only; branch 1's later epochs are skipped, and counted.
    assert_eq!((report.serial_actions, report.serial_skipped), (4, 2));
    // Failed walks keep the state they had: only their first segment ran.
    for id in 24..48u64 {
        let trail = &report.states[&combtest::WalkId(id)];
        assert_eq!(trail.len(), 1, "walk {id}");
    }
    let replay = order.replay(24, Vec::new()).unwrap();
    assert_eq!(
        replay.outcome,
        WalkOutcome::Failed {
            action_index: 1,
            action: "FlakyConfig",
            error: "config 1 cannot be applied".into()
        }
    );
}

#[test]
fn replay_runs_the_same_actions_as_the_run() {
    let order = WalkOrder::<Trail>::new()
        .then::<Append<1, 2>>()
        .then::<Moody>()
        .serial::<SerialAppend<2, 2>>()
        .then::<Append<3, 2>>();
    let report = run(&order, RunOptions::default().gather_states(true).threads(2)).unwrap();
    for id in 0..report.walks {
        let replay = order.replay(id, Vec::new()).unwrap();
        if let Some(state) = report.states.get(&combtest::WalkId(id)) {
            assert_eq!(&replay.state, state, "walk {id}");
        }
        let failed = report.failed_walks.iter().find(|f| f.walk_id.0 == id);
        match (&replay.outcome, failed) {
            (WalkOutcome::Failed { error, action_index, .. }, Some(f)) => {
                assert_eq!((error, *action_index), (&f.error, f.action_index));
            }
            (WalkOutcome::Failed { .. }, None) => panic!("walk {id} failed only in replay"),
            (_, Some(_)) => panic!("walk {id} failed only in the run"),
            _ => {}
        }
    }
}

#[test]
fn replay_steps_through_every_action_in_order() {
    let order = WalkOrder::<Trail>::new()
        .then::<Append<1, 2>>()
        .serial::<SerialAppend<2, 2>>()
        .then::<Append<3, 2>>();
    let mut seen = Vec::new();
    let replay = order.replay_with(5, Vec::new(), |position| seen.push(position)).unwrap();
    assert_eq!(seen, vec![0, 1, 2]);
    assert_eq!(replay.outcome, WalkOutcome::Passed);
    assert_eq!(replay.state, expected_trail(&[1, 2, 3], &order.walk(5).unwrap().option_indices()));
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let order = WalkOrder::<Trail>::new().then::<Append<1, 2>>();
    assert!(order.walk(2).unwrap_err().to_string().contains("not in the space"));
    assert!(order.id_of(&[0, 0]).is_err());
    let empty = WalkOrder::<Trail>::new();
    assert!(matches!(
        run(&empty, RunOptions::default()),
        Err(combtest::RunError::InvalidOrder(combtest::OrderError::Empty))
    ));
    assert!(matches!(
        run(&order, RunOptions::default().threads(0)),
        Err(combtest::RunError::InvalidThreads(0))
    ));
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NoOptions;

impl Action<Trail> for NoOptions {
    fn options() -> Vec<Self> {
        Vec::new()
    }
    fn run(&self, _: &mut Trail) -> ActionResult {
        Ok(())
    }
}

#[test]
fn an_action_without_options_is_named_in_the_error() {
    let order = WalkOrder::<Trail>::new().then::<Append<1, 2>>().then::<NoOptions>();
    let error = run(&order, RunOptions::default()).unwrap_err().to_string();
    assert!(error.contains("NoOptions") && error.contains("entry 1"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_async_inside_a_runtime() {
    let order = WalkOrder::<Trail>::new().then::<Append<1, 3>>().then::<Append<2, 3>>();
    // The blocking variant refuses to nest runtimes, with a clear error.
    assert!(matches!(run(&order, RunOptions::default()), Err(combtest::RunError::InsideRuntime)));
    let report = combtest::run_async(&order, RunOptions::default().threads(4)).await.unwrap();
    assert_eq!(report.counts.passed, 9);
}

/// Never returns for option 1 (and for option 2 once the walk's trail says
/// the first entry chose 2): a hung call into the system under test.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Hang<const TAG: u8>(u32);

impl<const TAG: u8> Action<Trail> for Hang<TAG> {
    fn options() -> Vec<Self> {
        (0..3).map(Self).collect()
    }
    fn run(&self, trail: &mut Trail) -> ActionResult {
        let first_was_2 = trail.first() == Some(&(1, 2));
        trail.push((TAG, self.0));
        let hangs = match TAG {
            1 => self.0 == 1,
            _ => self.0 == 1 && first_was_2,
        };
        if hangs {
            loop {
                std::thread::park(); // Abandoned with its runner: never woken.
            }
        }
        Ok(())
    }
}

#[test]
fn a_walk_past_its_timeout_fails_and_the_run_goes_on() {
    let order = WalkOrder::<Trail>::new()
        .then::<Hang<1>>()
        .serial::<SerialAppend<2, 2>>()
        .then::<Hang<3>>();
    let timeout = std::time::Duration::from_millis(200);
    let options = RunOptions::default().threads(2).walk_timeout(timeout).gather_states(true);
    let report = run(&order, options).unwrap();
    assert!(report.is_consistent());
    // 3 x 2 x 3 = 18 walks: first = 1 hangs in segment 0 (6 walks); first =
    // 2 with last = 1 hangs after the serial action (2 walks).
    assert_eq!(
        (report.walks, report.counts.failed, report.counts.passed),
        (18, 8, 10),
        "{:?}",
        report.failed_walks
    );
    for failed in &report.failed_walks {
        assert_eq!(failed.error, "timed out after 200ms", "{failed:?}");
        assert_eq!(failed.action, "(walk timeout)");
    }
    // Each stuck runner was replaced.
    assert_eq!(report.runner_restarts, 8);
    // No state for the timed-out walks; the others finished.
    assert_eq!(report.states.len(), 10);
}

/// How many times `Sparse` ran, over the whole test binary (only the test
/// below uses it).
static SPARSE_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts its runs; panics at option 7 when the first entry's option is 3
/// or 11.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Sparse(u32);

impl Action<Trail> for Sparse {
    fn options() -> Vec<Self> {
        (0..10).map(Sparse).collect()
    }
    fn run(&self, trail: &mut Trail) -> ActionResult {
        SPARSE_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.0 == 7 && trail[0].1 % 8 == 3 {
            panic!("sparse panic");
        }
        trail.push((8, self.0));
        Ok(())
    }
}

/// Runner threads queue their next batch while they run one. A batch with
/// a panic replaces its runner; the batch queued behind it must then run
/// once, on the replacement, never also on the old thread.
#[test]
fn batches_queued_behind_a_panic_run_exactly_once() {
    let order = WalkOrder::<Trail>::new()
        .then::<Append<1, 16>>()
        .then::<Sparse>()
        .serial::<SerialAppend<2, 2>>()
        .then::<Append<3, 50>>()
        .then::<Append<4, 10>>();
    let report = run(&order, RunOptions::default().threads(2)).unwrap();
    // 16 x 10 x 2 x 50 x 10 walks; Sparse panics for 2 first options x 1 of
    // its own, in every branch.
    assert_eq!(report.walks, 160_000);
    assert!(report.is_consistent());
    assert_eq!((report.counts.failed, report.counts.passed), (2_000, 158_000));
    assert!(report.runner_restarts >= 1);
    // Every walk ran its first segment exactly once, and the walks that
    // passed it their second.
    assert_eq!(SPARSE_RUNS.load(std::sync::atomic::Ordering::Relaxed), 160_000);
    assert_eq!(report.counts.segments, 160_000 + 158_000);
    for failure in &report.failed_walks {
        assert_eq!(failure.error, "panicked: sparse panic");
    }
}

/// Counts the runs of a serial action, across threads.
static GATE_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A serial action with 3 options that counts its runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Gate(u32);

impl SerialAction<Trail> for Gate {
    type Value = u32;
    fn options() -> Vec<Self> {
        (0..3).map(Gate).collect()
    }
    fn run(&self) -> Result<u32, Halt> {
        GATE_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.0)
    }
    fn apply(&self, value: &u32, trail: &mut Trail) -> ActionResult {
        trail.push((5, *value));
        Ok(())
    }
}

/// Prunes every walk whose Gate is 2, and cancels every walk whose trail
/// holds SerialAppend<1, 2>'s value 1 (applied before it).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Doom(u32);

impl Action<Trail> for Doom {
    fn options() -> Vec<Self> {
        (0..2).map(Doom).collect()
    }
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        walk.get::<Gate>() == Some(&Gate(2))
    }
    fn run(&self, trail: &mut Trail) -> ActionResult {
        if trail.contains(&(1, 1)) {
            return combtest::cancel();
        }
        trail.push((6, self.0));
        Ok(())
    }
}

#[test]
fn a_branch_with_no_live_walk_runs_no_more_serial_actions() {
    // SerialAppend<1, 2> x [Doom] x Gate(3) x [Append]: in branch
    // SerialAppend=1 every walk is cancelled by Doom, and in Gate=2 every
    // walk was pruned: those Gate runs are skipped (DESIGN §8).
    let order = WalkOrder::<Trail>::new()
        .serial::<SerialAppend<1, 2>>()
        .then::<Doom>()
        .serial::<Gate>()
        .then::<Append<7, 2>>();
    for threads in [1, 3] {
        GATE_RUNS.store(0, std::sync::atomic::Ordering::Relaxed);
        let report = run(&order, RunOptions::default().threads(threads)).unwrap();
        assert!(report.is_consistent());
        // 2 x 2 x 3 x 2 = 24 walks: branch 1 (12) cancelled, but its Gate=2
        // walks (4) pruned; branch 0: Gate=2's 4 pruned, 8 pass.
        assert_eq!(report.walks, 24);
        assert_eq!(
            (report.counts.passed, report.counts.cancelled, report.counts.pruned),
            (8, 8, 8)
        );
        // Gate runs only in branch 0, for Gate=0 and 1; skipped: branch 0's
        // Gate=2 (all pruned) and branch 1's three (all cancelled or pruned).
        assert_eq!(GATE_RUNS.load(std::sync::atomic::Ordering::Relaxed), 2, "threads {threads}");
        assert_eq!((report.serial_actions, report.serial_skipped), (2 + 2, 4), "threads {threads}");
    }
}

/// Used at two positions; prunes, at the second, a repeat of the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Step(u32);

impl Action<Trail> for Step {
    fn options() -> Vec<Self> {
        (0..3).map(Step).collect()
    }
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        // `get` returns the first entry of the type; `position` tells the
        // asking entry apart.
        let first = walk.get::<Step>().expect("Step is in the walk order");
        walk.position() == 1 && walk.get_at::<Step>(1) == Some(self) && first == self
    }
    fn run(&self, trail: &mut Trail) -> ActionResult {
        trail.push((3, self.0));
        Ok(())
    }
}

#[test]
fn one_action_type_at_two_positions_knows_which_entry_prunes() {
    let order = WalkOrder::<Trail>::new().then::<Step>().then::<Step>();
    let report = run(&order, RunOptions::default()).unwrap();
    // 9 walks; the 3 with both Steps equal are pruned, by the second entry.
    assert_eq!((report.walks, report.counts.pruned, report.counts.passed), (9, 3, 6));
    for id in [0u64, 4, 8] {
        assert_eq!(order.replay(id, Vec::new()).unwrap().outcome, WalkOutcome::Pruned, "walk {id}");
    }
    assert_eq!(order.replay(1u64, Vec::new()).unwrap().outcome, WalkOutcome::Passed);
}

/// A serial action that drives its own async client: its own tokio
/// runtime, entered with `block_on` (which panics on an async executor's
/// thread).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RestartWithClient(u32);

impl SerialAction<Trail> for RestartWithClient {
    type Value = u32;
    fn options() -> Vec<Self> {
        (0..40).map(RestartWithClient).collect()
    }
    fn run(&self) -> Result<u32, Halt> {
        let client = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| Halt::fail(e.to_string()))?;
        Ok(client.block_on(async { self.0 }))
    }
}

#[test]
fn serial_actions_run_off_the_executor_so_they_may_block_on_their_own_runtime() {
    // Every run, not only the first: 40 serial runs of 2 walks each, on 2
    // runner threads.
    let order = WalkOrder::<Trail>::new()
        .then::<Append<0, 2>>()
        .serial::<RestartWithClient>()
        .then::<Append<1, 1>>();
    let report = run(&order, RunOptions::new(Trail::default()).threads(2)).unwrap();
    assert_eq!(report.counts.failed, 0, "{report}");
    assert_eq!((report.serial_actions, report.counts.passed), (40, 80));
}

/// Fails the walks whose own option ends in 3 (one in ten), from walk 3 on.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Tenth(u32);

impl Action<Trail> for Tenth {
    fn options() -> Vec<Self> {
        (0..1000).map(Tenth).collect()
    }
    fn run(&self, _: &mut Trail) -> ActionResult {
        match self.0 % 10 {
            3 => combtest::fail(format!("tenth {}", self.0)),
            _ => Ok(()),
        }
    }
}

#[test]
fn a_failure_limit_stops_the_run_and_accounts_for_every_walk() {
    use combtest::{Ending, StopReason};
    // 10^6 walks, one in ten failing from walk 3 on.
    let order = WalkOrder::<Trail>::new().then::<Append<1, 1000>>().then::<Tenth>();
    for (limit, threads) in [(1, 1), (1, 2), (5, 2), (40, 3)] {
        let options = RunOptions::default().threads(threads).max_failures(limit);
        let report = run(&order, options).unwrap();
        assert!(report.is_consistent(), "limit {limit}: {report:?}");
        assert_eq!(
            report.ending,
            Ending::Stopped(StopReason::FailureLimit(limit)),
            "limit {limit} threads {threads}: counts {:?} not_run {} walks {}",
            report.counts,
            report.not_run,
            report.walks
        );
        // At least the limit failed; walks already running when it was
        // reached end, so a few more may have.
        assert!(report.counts.failed >= limit, "limit {limit}: {:?}", report.counts);
        // Walks that never started are reported, not lost. How many
        // depends on the build's speed, not on the limit: the batches under
        // way finish, and each is about 4 ms of walks (most of the space in
        // a release build, 12% of it left once; a debug build leaves most).
        assert!(report.not_run > 0, "limit {limit}: {} not run", report.not_run);
        // Every walk reported failed is one that fails.
        let mut ids: Vec<u64> = report.failed_walks.iter().map(|f| f.walk_id.0).collect();
        ids.sort_unstable();
        assert!(ids.iter().all(|id| id % 10 == 3), "{ids:?}");
        assert!(!report.success());
    }
    // Under the limit: the run completes as usual.
    let small = WalkOrder::<Trail>::new().then::<Tenth>();
    let report = run(&small, RunOptions::default().max_failures(101)).unwrap();
    assert_eq!((report.ending, report.counts.failed, report.not_run), (Ending::Completed, 100, 0));
}
