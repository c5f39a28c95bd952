//! Async actions (issue 16): a walk order with an `AsyncAction` gives the
//! same outcomes as its synchronous twin (serial values, failures, cancels,
//! panics, pruning, held states), keeps many walks in flight on one runner
//! thread, and replays a walk alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use combtest::prelude::*;
use serde::{Deserialize, Serialize};

/// A walk's trail: (position, option or value) per step.
type Trail = Vec<(usize, u32)>;

/// What `Call` does, by option: answer, cancel, fail, panic.
fn outcome(option: u32, trail: &Trail) -> ActionResult {
    match (option, trail.first().map(|s| s.1)) {
        (3, Some(0)) => cancel(),
        (3, Some(1)) => fail("the server said 503"),
        (3, Some(2)) => panic!("the client crashed"),
        _ => Ok(()),
    }
}

/// The async call: waits on a timer, then records itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Call(u32);

impl AsyncAction<Trail> for Call {
    fn options() -> Vec<Self> {
        (0..4).map(Call).collect()
    }
    async fn run(&self, trail: &mut Trail, cx: WalkContext<'_>) -> ActionResult {
        tokio::time::sleep(Duration::from_millis(1)).await;
        trail.push((cx.position(), self.0));
        outcome(self.0, trail)
    }
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        walk.get_at::<Step>(0).is_some_and(|s| s.0 == 2) && self.0 == 0
    }
}

/// The synchronous twin of `Call`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SyncCall(u32);

impl Action<Trail> for SyncCall {
    fn options() -> Vec<Self> {
        (0..4).map(SyncCall).collect()
    }
    fn run_in(&self, trail: &mut Trail, cx: &WalkContext<'_>) -> ActionResult {
        trail.push((cx.position(), self.0));
        outcome(self.0, trail)
    }
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        walk.get_at::<Step>(0).is_some_and(|s| s.0 == 2) && self.0 == 0
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step(u32);

impl Action<Trail> for Step {
    fn options() -> Vec<Self> {
        (0..3).map(Step).collect()
    }
    fn run_in(&self, trail: &mut Trail, cx: &WalkContext<'_>) -> ActionResult {
        trail.push((cx.position(), self.0));
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Mode(u32);

impl SerialAction<Trail> for Mode {
    type Value = u32;
    fn options() -> Vec<Self> {
        (0..2).map(Mode).collect()
    }
    fn run(&self) -> Result<u32, Halt> {
        Ok(10 + self.0)
    }
    fn apply_in(&self, value: &u32, trail: &mut Trail, cx: &WalkContext<'_>) -> ActionResult {
        trail.push((cx.position(), *value));
        Ok(())
    }
}

fn counts(report: &Report<Trail>) -> (u64, u64, u64, u64, u64, u64) {
    let c = &report.counts;
    (report.walks, c.passed, c.failed, c.cancelled, c.pruned, c.segments)
}

#[test]
fn an_async_walk_order_gives_its_synchronous_twins_outcomes() {
    let asynchronous =
        WalkOrder::new().then::<Step>().serial::<Mode>().then_async::<Call>().then::<Step>();
    let synchronous =
        WalkOrder::new().then::<Step>().serial::<Mode>().then::<SyncCall>().then::<Step>();
    let options = || RunOptions::new(Vec::new()).gather_states(true).threads(2);
    let a = run(&asynchronous, options()).unwrap();
    let s = run(&synchronous, options()).unwrap();
    assert_eq!(counts(&a), counts(&s));
    assert_eq!(a.walks, 72);
    assert!(a.counts.failed > 0 && a.counts.cancelled > 0 && a.counts.pruned > 0);
    assert_eq!(a.serial_actions, s.serial_actions);
    assert_eq!(a.states, s.states, "the same final states");
    let errors = |r: &Report<Trail>| {
        r.failed_walks
            .iter()
            .map(|f| (f.walk_id, f.action_index, f.error.clone()))
            .collect::<Vec<_>>()
    };
    let mut async_errors = errors(&a);
    let mut sync_errors = errors(&s);
    async_errors.sort();
    sync_errors.sort();
    assert_eq!(async_errors, sync_errors);
    assert!(async_errors.iter().any(|e| e.2 == "panicked: the client crashed"));
    // A replay of an async walk blocks on it, alone, and agrees.
    for failed in &a.failed_walks {
        let replay = asynchronous.replay(failed.walk_id, Vec::new()).unwrap();
        assert!(matches!(replay.outcome, WalkOutcome::Failed { .. }), "{replay:?}");
    }
    let (id, state) = a.states.iter().next().unwrap();
    assert_eq!(&asynchronous.replay(*id, Vec::new()).unwrap().state, state);
}

#[test]
fn one_runner_thread_keeps_many_walks_in_flight() {
    let seen = Arc::new(AtomicUsize::new(0));
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Wait(u32);
    struct Most(Arc<AtomicUsize>, AtomicUsize);
    impl AsyncAction<Trail> for Wait {
        fn options() -> Vec<Self> {
            (0..50).map(Wait).collect()
        }
        async fn run(&self, _: &mut Trail, cx: WalkContext<'_>) -> ActionResult {
            let most = cx.fixture::<Most>()?;
            let now = most.1.fetch_add(1, Ordering::SeqCst) + 1;
            most.0.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            most.1.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }
    let order = WalkOrder::new().then_async::<Wait>().then_async::<Wait>();
    let fixtures = Fixtures::new().with(Most(Arc::clone(&seen), AtomicUsize::new(0)));
    let options = RunOptions::new(Vec::new()).threads(1).in_flight(64).fixtures(fixtures);
    let report = run(&order, options).unwrap();
    assert_eq!(report.counts.passed, 2500);
    let most = seen.load(Ordering::SeqCst);
    assert!((2..=64).contains(&most), "walks in flight at once on one thread: {most}");
}

/// A walk state holding a runtime resource: a tokio interval made in the
/// walk's first segment.
#[derive(Debug, Default)]
struct Timer {
    interval: Option<tokio::time::Interval>,
    ticks: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Arm(u32);

impl AsyncAction<Timer> for Arm {
    fn options() -> Vec<Self> {
        (0..40).map(Arm).collect()
    }
    async fn run(&self, timer: &mut Timer, _: WalkContext<'_>) -> ActionResult {
        let mut interval = tokio::time::interval(Duration::from_millis(1));
        interval.tick().await; // The first tick is immediate.
        timer.interval = Some(interval);
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Barrier(u32);

impl SerialAction<Timer> for Barrier {
    type Value = ();
    fn options() -> Vec<Self> {
        (0..2).map(Barrier).collect()
    }
    fn run(&self) -> Result<(), Halt> {
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wait(u32);

impl AsyncAction<Timer> for Wait {
    fn options() -> Vec<Self> {
        (0..10).map(Wait).collect()
    }
    async fn run(&self, timer: &mut Timer, _: WalkContext<'_>) -> ActionResult {
        let interval = timer.interval.as_mut().ok_or_else(|| Halt::fail("no interval"))?;
        let tick = tokio::time::timeout(Duration::from_secs(5), interval.tick()).await;
        tick.map_err(|_| Halt::fail("the walk's timer never fired after the serial action"))?;
        timer.ticks += 1;
        Ok(())
    }
}

#[test]
fn runtime_resources_of_a_walk_work_on_whichever_runner_takes_it_after_a_barrier() {
    // The interval is registered while one runner runs the walk's first
    // segment; after the serial action any runner may take the walk up.
    let order = WalkOrder::new().then_async::<Arm>().serial::<Barrier>().then_async::<Wait>();
    let options = RunOptions::factory(|_: &Fixtures, _| Ok(Timer::default()))
        .threads(4)
        .in_flight(8)
        .gather_states(true);
    let report = run(&order, options).unwrap();
    assert_eq!(report.walks, 800);
    assert_eq!(report.counts.passed, 800, "{:?}", report.failed_walks.first());
    assert!(report.states.values().all(|t| t.ticks == 1));
}
