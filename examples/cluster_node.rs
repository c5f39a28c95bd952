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

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use combtest::suites::{Fixture, builtin, suite};
use combtest::{Action, ActionResult, Halt, SerialAction, WalkOrder};
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
    combtest::cli::main(suites)
}
