//! What one serial epoch costs around the walk loop: a walk order
//! `A(2) *S(N) A(2)` whose serial action does nothing, so the time per
//! epoch is the barrier's (planner, the live-walk check, the serial step,
//! the scheduler, the runners and back). Prints the median, min and max
//! over 7 runs, in microseconds per epoch.
//!
//! Run: `cargo run --release --example epoch_cost -- [EPOCHS]` (default
//! 2000), in this process; or `... -- --local-nodes N` on N local nodes
//! (this binary is their `combtest-node`, serving the suites `epochs-2000`
//! and `epochs-500`): each run is a `run --suite ... --local-nodes N` child
//! process, and the cost per epoch is the slope between the two suites'
//! median run times, so the nodes' start and the process's are left out.

use std::process::{Command, ExitCode, Stdio};

use combtest::suites::{Fixture, builtin, suite};
use combtest::{Action, ActionResult, Halt, RunOptions, SerialAction, WalkOrder, run};
use serde::{Deserialize, Serialize};

/// Adds its option to the walk's sum.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Add(u32);

impl Action<u64> for Add {
    fn options() -> Vec<Self> {
        (0..2).map(Add).collect()
    }
    fn run(&self, sum: &mut u64) -> ActionResult {
        *sum += u64::from(self.0);
        Ok(())
    }
}

/// A serial action that does nothing, with as many options as epochs
/// (`EPOCHS`, or with `N = 0` the count given on the command line).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick<const N: u32>(u32);

static EPOCHS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

impl<const N: u32> SerialAction<u64> for Tick<N> {
    type Value = ();
    fn options() -> Vec<Self> {
        let epochs = if N > 0 { N } else { *EPOCHS.get().expect("set in main") };
        (0..epochs).map(Tick).collect()
    }
    fn run(&self) -> Result<(), Halt> {
        Ok(())
    }
}

/// The walk order with `N` serial epochs.
fn order<const N: u32>() -> WalkOrder<u64, impl combtest::Entries<u64>> {
    WalkOrder::<u64>::new().then::<Add>().serial::<Tick<N>>().then::<Add>()
}

const COMMANDS: &[&str] = &["list", "run", "serve", "soak", "show", "replay", "config", "help"];

/// Median, min and max of seven samples.
fn spread(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[0], samples[samples.len() - 1])
}

/// Seconds a `run --suite NAME --local-nodes NODES` child takes.
fn timed_node_run(suite: &str, nodes: &str) -> Result<f64, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let status = Command::new(me)
        .args(["run", "--suite", suite, "--local-nodes", nodes])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("run --suite {suite} --local-nodes {nodes}: {status}"));
    }
    Ok(started.elapsed().as_secs_f64())
}

fn on_nodes(nodes: &str) -> Result<(), String> {
    let (mut long, mut short) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        long.push(timed_node_run("epochs-2000", nodes)?);
        short.push(timed_node_run("epochs-500", nodes)?);
    }
    let (long, short) = (spread(long), spread(short));
    let per_epoch = |l: f64, s: f64| (l - s) * 1e6 / 1500.0;
    println!(
        "{nodes} local nodes: {:.1} us per epoch (slope of medians; runs of 2000 epochs \
         {:.3} s ({:.3}-{:.3}), of 500 epochs {:.3} s ({:.3}-{:.3}))",
        per_epoch(long.0, short.0),
        long.0,
        long.1,
        long.2,
        short.0,
        short.1,
        short.2
    );
    Ok(())
}

fn main() -> ExitCode {
    let first = std::env::args().nth(1).unwrap_or_default();
    if COMMANDS.contains(&first.as_str()) {
        let mut suites = builtin();
        let fixture = || Ok(Fixture::new(0u64));
        suites.push(suite(
            "epochs-2000",
            "2000 serial epochs of 2 walks",
            order::<2000>(),
            fixture,
        ));
        suites.push(suite("epochs-500", "500 serial epochs of 2 walks", order::<500>(), fixture));
        return combtest::cli::main(suites);
    }
    if first == "--local-nodes" {
        let nodes = std::env::args().nth(2).unwrap_or_else(|| "2".to_string());
        return match on_nodes(&nodes) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("epoch_cost: {error}");
                ExitCode::from(1)
            }
        };
    }
    let epochs: u32 = match first.parse() {
        _ if first.is_empty() => 2000,
        Ok(n) if n > 0 => n,
        _ => {
            eprintln!("usage: epoch_cost [EPOCHS > 0 | --local-nodes N]");
            return ExitCode::from(2);
        }
    };
    EPOCHS.set(epochs).expect("set once");
    let order = order::<0>();
    let mut micros = Vec::new();
    for _ in 0..7 {
        let started = std::time::Instant::now();
        let report = run(&order, RunOptions::new(0).threads(2)).expect("a valid walk order");
        assert_eq!(report.serial_actions, u64::from(epochs));
        micros.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(epochs));
    }
    let (median, min, max) = spread(micros);
    println!("{epochs} epochs: {median:.1} us per epoch (min {min:.1}, max {max:.1})");
    ExitCode::SUCCESS
}
