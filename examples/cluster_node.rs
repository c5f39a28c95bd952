//! A user's node binary for cluster runs: the built-in suites plus `relay`,
//! whose walks carry a serial action's value in their state and take a
//! couple of milliseconds each, like calls to a real system. The same
//! binary is the coordinator and the nodes.
//!
//! Run it on two local nodes (child processes on 127.0.0.1):
//! `cargo run --example cluster_node -- run --suite relay --local-nodes 2`
//!
//! or start the nodes yourself and point the coordinator at them:
//! `cargo run --example cluster_node -- serve --listen 127.0.0.1:7878 --cookie s3cret`
//! `cargo run --example cluster_node -- run --suite relay --nodes 127.0.0.1:7878 --cookie s3cret`
//!
//! `chaos` misbehaves on a few walks, for soaks:
//! `CHAOS_ABORT=1 cargo run --example cluster_node -- soak --suite chaos
//! --local-nodes 2 --walk-timeout 1s --rounds 3`
//!
//! The cluster tests use it too: a node prints `relay: busy` on stdout once
//! it has run 20 first hops, and `relay: late` after 10 hops after the mode
//! switch (the moments the tests kill it), and
//! `CLUSTER_NODE_VARIANT=1` gives `relay` one more option, as a node built
//! from a different version of the suite would.
//!
//! `dead` has a branch none of whose walks is left when its serial action
//! comes (they are all pruned): that serial action is skipped.
//!
//! `ticks` is an async walk order (its actions await a timer).
//!
//! `steps` checks per-node serial steps from inside its walks: each node
//! records, in a fixture, the branches whose `apply_on_node` step it
//! applied (and prints `steps: applied [..]` on stdout), and every walk
//! fails unless its node's last applied step is its own branch and each
//! step of the branch was applied there exactly once. Its walk state holds
//! an open file (from a factory: one file per walk in the run's temp dir),
//! so it is neither serde nor `Clone`. With `STEPS_RESUME=PATH`, the
//! coordinator's `Phase=2` waits (at most 60 s) until PATH exists before
//! it runs (the test restarts a node meanwhile); with `STEPS_FAIL=1`, a
//! node's `Phase=1` step fails, and the setup prints `steps: opened` on
//! stdout (the run opened on this process).

use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use combtest::suites::{Fixture, builtin, opaque_suite, suite};
use combtest::{
    Action, ActionResult, AsyncAction, Halt, SerialAction, SerialContext, WalkContext, WalkId,
    WalkOrder,
};
use serde::{Deserialize, Serialize};

/// A walk's state: the hops it made and the mode its branch runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Relay {
    hops: Vec<u32>,
    mode: u32,
}

/// Hops run by this process: first hops (before the mode switch), second.
static FIRST_HOPS: AtomicU64 = AtomicU64::new(0);
static SECOND_HOPS: AtomicU64 = AtomicU64::new(0);

/// Prints `line` on stdout when `counter` reaches `at`.
fn mark(counter: &AtomicU64, at: u64, line: &str) {
    if counter.fetch_add(1, Ordering::Relaxed) + 1 == at {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// One call to the system: takes 2 ms.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hop(u32);

impl Action<Relay> for Hop {
    fn options() -> Vec<Self> {
        let count =
            if std::env::var("CLUSTER_NODE_VARIANT").is_ok_and(|v| v == "1") { 11 } else { 10 };
        (0..count).map(Hop).collect()
    }
    fn run(&self, relay: &mut Relay) -> ActionResult {
        std::thread::sleep(Duration::from_millis(2));
        match relay.hops.len() {
            0 => mark(&FIRST_HOPS, 20, "relay: busy"),
            _ => mark(&SECOND_HOPS, 10, "relay: late"),
        }
        relay.hops.push(self.0 + relay.mode);
        Ok(())
    }
}

/// A global switch: the branch's hops are offset by its value.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Mode(u32);

impl SerialAction<Relay> for Mode {
    type Value = u32;
    fn options() -> Vec<Self> {
        vec![Mode(0), Mode(1)]
    }
    fn run(&self) -> Result<u32, Halt> {
        Ok(self.0 * 100)
    }
    fn apply(&self, offset: &u32, relay: &mut Relay) -> ActionResult {
        relay.mode = *offset;
        Ok(())
    }
}

/// `chaos`: a system that misbehaves on a few walks, for soaks. The first
/// action picks a target; the second pokes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Target(u32);

impl Action<Vec<u32>> for Target {
    fn options() -> Vec<Self> {
        (0..20).map(Target).collect()
    }
    fn run(&self, path: &mut Vec<u32>) -> ActionResult {
        path.push(self.0);
        Ok(())
    }
}

/// Pokes the target: 2 of the 200 walks panic (1%), one hangs for a minute
/// (a walk timeout catches it) and, with `CHAOS_ABORT=1`, one aborts the
/// whole process (run that only on nodes: `soak --local-nodes`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Poke(u32);

impl Action<Vec<u32>> for Poke {
    fn options() -> Vec<Self> {
        (0..10).map(Poke).collect()
    }
    fn run(&self, path: &mut Vec<u32>) -> ActionResult {
        let target = path.first().copied().unwrap_or(0);
        path.push(self.0);
        match (target, self.0) {
            (3, 7) | (11, 2) => panic!("chaos: the target fell over"),
            (5, 5) => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "chaos: hanging");
                let _ = out.flush();
                drop(out);
                std::thread::sleep(Duration::from_secs(60));
            }
            (13, 1) if std::env::var("CHAOS_ABORT").is_ok_and(|v| v == "1") => {
                std::process::abort()
            }
            _ => {}
        }
        Ok(())
    }
}

/// `dead`'s first action: prunes every walk whose `Switch` is 2.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Prep(u32);

impl Action<Vec<u32>> for Prep {
    fn options() -> Vec<Self> {
        (0..2).map(Prep).collect()
    }
    fn prune(&self, walk: &combtest::WalkView<'_>) -> bool {
        walk.get::<Switch>().is_some_and(|s| s.0 == 2)
    }
    fn run(&self, path: &mut Vec<u32>) -> ActionResult {
        path.push(self.0);
        Ok(())
    }
}

/// `dead`'s serial action (3 options).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Switch(u32);

impl SerialAction<Vec<u32>> for Switch {
    type Value = u32;
    fn options() -> Vec<Self> {
        (0..3).map(Switch).collect()
    }
    fn run(&self) -> Result<u32, Halt> {
        Ok(self.0)
    }
    fn apply(&self, value: &u32, path: &mut Vec<u32>) -> ActionResult {
        path.push(*value);
        Ok(())
    }
}

/// `steps`' fixture: the branches whose per-node step this process
/// applied, in order.
#[derive(Default)]
struct Applied(Mutex<Vec<Vec<u32>>>);

impl Applied {
    /// Records a step (and says so on stdout, on a node).
    fn record(&self, cx: &SerialContext<'_>) {
        self.0.lock().unwrap().push(cx.branch().to_vec());
        if cx.node().is_some() {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "steps: applied {:?}", cx.branch());
            let _ = out.flush();
        }
    }

    /// Fails unless the last step applied here is `branch`'s and every
    /// step of `branch` was applied here exactly once.
    fn check(&self, branch: &[u32]) -> ActionResult {
        let applied = self.0.lock().unwrap();
        if applied.last().map(Vec::as_slice) != Some(branch) {
            return Err(Halt::fail(format!(
                "branch {branch:?} runs here, but the last step applied here is {:?}",
                applied.last()
            )));
        }
        for level in 1..=branch.len() {
            let times = applied.iter().filter(|b| b.as_slice() == &branch[..level]).count();
            if times != 1 {
                return Err(Halt::fail(format!(
                    "the step of {:?} was applied {times} times here",
                    &branch[..level]
                )));
            }
        }
        Ok(())
    }
}

/// `steps`' fixture: where walks keep their files.
struct Scratch(tempfile::TempDir);

/// `steps`' walk state: its branch so far and its own open file.
#[derive(Debug)]
struct Probe {
    walk: WalkId,
    branch: Vec<u32>,
    file: std::fs::File,
}

/// Builds a walk's probe: a file of its own in the run's scratch dir.
fn probe(fixtures: &combtest::Fixtures, walk: WalkId) -> Result<Probe, Halt> {
    let dir = fixtures.require::<Scratch>()?;
    let file = std::fs::File::create(dir.0.path().join(format!("walk-{walk}")))?;
    Ok(Probe { walk, branch: Vec::new(), file })
}

/// `steps`' leading serial action; its per-node step is recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Phase(u32);

impl SerialAction<Probe> for Phase {
    type Value = u32;
    fn options() -> Vec<Self> {
        (0..3).map(Phase).collect()
    }
    fn run_in(&self, cx: &SerialContext<'_>) -> Result<u32, Halt> {
        // On the coordinator, with the coordinator's own fixtures.
        cx.fixture::<Scratch>()?;
        if cx.node().is_some() {
            return Err(Halt::fail("run_in ran on a node"));
        }
        if let (2, Ok(path)) = (self.0, std::env::var("STEPS_RESUME")) {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !std::path::Path::new(&path).exists() {
                if Instant::now() > deadline {
                    return Err(Halt::fail(format!("{path} did not appear within 60 s")));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(self.0)
    }
    fn apply_on_node(&self, _: &u32, cx: &SerialContext<'_>) -> ActionResult {
        cx.fixture::<Applied>()?.record(cx);
        if self.0 == 1 && cx.node().is_some() && std::env::var("STEPS_FAIL").is_ok_and(|v| v == "1")
        {
            return Err(Halt::fail("the node refuses phase 1"));
        }
        Ok(())
    }
    fn apply(&self, value: &u32, probe: &mut Probe) -> ActionResult {
        probe.branch.push(*value);
        Ok(())
    }
}

/// `steps`' second serial action.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tilt(u32);

impl SerialAction<Probe> for Tilt {
    type Value = u32;
    fn options() -> Vec<Self> {
        (0..2).map(Tilt).collect()
    }
    fn run(&self) -> Result<u32, Halt> {
        Ok(self.0)
    }
    fn apply_on_node(&self, _: &u32, cx: &SerialContext<'_>) -> ActionResult {
        cx.fixture::<Applied>()?.record(cx);
        Ok(())
    }
    fn apply(&self, value: &u32, probe: &mut Probe) -> ActionResult {
        probe.branch.push(*value);
        Ok(())
    }
}

/// `steps`' work: checks its node's steps, writes to its file, takes 2 ms.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work(u32);

impl Action<Probe> for Work {
    fn options() -> Vec<Self> {
        (0..6).map(Work).collect()
    }
    fn run_in(&self, probe: &mut Probe, cx: &WalkContext<'_>) -> ActionResult {
        cx.fixture::<Applied>()?.check(&probe.branch)?;
        // Work stands at positions 1 and 3, in the walk the factory built
        // this state for.
        if cx.id() != probe.walk || ![1, 3].contains(&cx.position()) {
            let (id, position) = (cx.id(), cx.position());
            return Err(Halt::fail(format!("context says walk {id} at {position}: {probe:?}")));
        }
        writeln!(probe.file, "walk {} ran {self:?} at position {}", cx.id(), cx.position())?;
        std::thread::sleep(Duration::from_millis(2));
        Ok(())
    }
}

/// Ticks run by this process (`TICKS_SLOW`).
static TICKS: AtomicU64 = AtomicU64::new(0);

/// `ticks`' async action: awaits a 1 ms timer, then records its option;
/// fails after `Switch=2` when its option is 4.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick(u32);

impl AsyncAction<Vec<u32>> for Tick {
    fn options() -> Vec<Self> {
        (0..5).map(Tick).collect()
    }
    async fn run(&self, path: &mut Vec<u32>, _: WalkContext<'_>) -> ActionResult {
        // TICKS_SLOW=1: 30 ms per tick, and `ticks: busy` on stdout after
        // 10 ticks (the moment a test kills the node).
        let slow = std::env::var("TICKS_SLOW").is_ok_and(|v| v == "1");
        tokio::time::sleep(Duration::from_millis(if slow { 30 } else { 1 })).await;
        if slow {
            mark(&TICKS, 10, "ticks: busy");
        }
        if self.0 == 4 && path.last() == Some(&2) {
            return Err(Halt::fail("tick 4 after switch 2"));
        }
        path.push(self.0);
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    let relay = WalkOrder::new().then::<Hop>().serial::<Mode>().then::<Hop>();
    let mut suites = builtin();
    suites.push(suite(
        "relay",
        "hops of 2 ms around a serial mode switch whose value reaches every walk",
        relay,
        || Ok(Fixture::new(Relay::default())),
    ));
    suites.push(suite(
        "chaos",
        "200 walks, of which 2 panic, 1 hangs and (with CHAOS_ABORT=1) 1 aborts the process",
        WalkOrder::new().then::<Target>().then::<Poke>(),
        || Ok(Fixture::new(Vec::new())),
    ));
    suites.push(suite(
        "dead",
        "12 walks; the branch Switch=2 is all pruned, so its serial action is skipped",
        WalkOrder::new().then::<Prep>().serial::<Switch>().then::<Prep>(),
        || Ok(Fixture::new(Vec::new())),
    ));
    suites.push(suite(
        "ticks",
        "75 walks of async actions around a serial switch; 5 fail",
        WalkOrder::new().then_async::<Tick>().serial::<Switch>().then_async::<Tick>(),
        || Ok(Fixture::new(Vec::new())),
    ));
    suites.push(opaque_suite(
        "steps",
        "216 walks that check their node's per-node serial steps; states hold open files",
        WalkOrder::new().serial::<Phase>().then::<Work>().serial::<Tilt>().then::<Work>(),
        || {
            if std::env::var("STEPS_RESUME").is_ok() {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "steps: opened");
                let _ = out.flush();
            }
            let scratch = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
            Ok(Fixture::factory(probe).with(Scratch(scratch)).with(Applied::default()))
        },
    ));
    combtest::cli::main(suites)
}
