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
//! The cluster tests use it too: a node prints `relay: busy` on stdout once
//! it has run 20 first hops, and `relay: late` after 10 hops after the mode
//! switch (the moments the tests kill it), and
//! `CLUSTER_NODE_VARIANT=1` gives `relay` one more option, as a node built
//! from a different version of the suite would.

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

fn main() -> std::process::ExitCode {
    let relay = WalkOrder::new().then::<Hop>().serial::<Mode>().then::<Hop>();
    let mut suites = builtin();
    suites.push(suite(
        "relay",
        "hops of 2 ms around a serial mode switch whose value reaches every walk",
        relay,
        || Ok(Fixture::new(Relay::default())),
    ));
    combtest::cli::main(suites)
}
