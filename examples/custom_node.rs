//! A user's own `combtest-node`: the same command line (`list`, `run`,
//! `replay`, `show`), over the user's suites: `main` hands them to
//! `combtest::cli::main`.
//!
//! Run: `cargo run --example custom_node -- run --suite counter`
//! (or `--suite bumpy`, where 3 walks fail).

use combtest::suites::{Fixture, suite};
use combtest::{Action, ActionResult, Halt, SerialAction, WalkOrder, fail};
use serde::{Deserialize, Serialize};

/// The system under test: a counter with a configurable step.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Counter {
    value: u32,
    step: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bump(u32);

impl Action<Counter> for Bump {
    fn options() -> Vec<Self> {
        (1..=3).map(Bump).collect()
    }
    fn run(&self, counter: &mut Counter) -> ActionResult {
        counter.value += self.0 * counter.step.max(1);
        Ok(())
    }
}

/// A global configuration change, run once per branch.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SetStep(u32);

impl SerialAction<Counter> for SetStep {
    type Value = u32;
    fn options() -> Vec<Self> {
        vec![SetStep(1), SetStep(10)]
    }
    fn run(&self) -> Result<u32, Halt> {
        Ok(self.0)
    }
    fn apply(&self, step: &u32, counter: &mut Counter) -> ActionResult {
        counter.step = *step;
        Ok(())
    }
}

/// Checks the counter against a limit the system under test promises.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AtMost(u32);

impl Action<Counter> for AtMost {
    fn options() -> Vec<Self> {
        vec![AtMost(25)]
    }
    fn run(&self, counter: &mut Counter) -> ActionResult {
        if counter.value > self.0 {
            return fail(format!("counter reached {}, over {}", counter.value, self.0));
        }
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    let order = WalkOrder::new().then::<Bump>().serial::<SetStep>().then::<Bump>();
    let bumpy = order.clone().then::<AtMost>();
    let fresh = || Ok(Fixture::new(Counter::default()));
    combtest::cli::main(vec![
        suite("counter", "a counter with a step", order, fresh),
        suite("bumpy", "the counter against a limit: 3 walks overshoot it", bumpy, fresh),
    ])
}
