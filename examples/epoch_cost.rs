//! What one serial epoch costs around the walk loop: a walk order
//! `A(2) *S(N) A(2)` whose serial action does nothing, so the time per
//! epoch is the barrier's (planner, the live-walk check, the serial step,
//! the scheduler, the runners and back). Prints the median, min and max
//! over 7 runs, in microseconds per epoch.
//!
//! Run: `cargo run --release --example epoch_cost -- [EPOCHS]` (default 2000).

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

/// A serial action that does nothing, with as many options as epochs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick(u32);

static EPOCHS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

impl SerialAction<u64> for Tick {
    type Value = ();
    fn options() -> Vec<Self> {
        (0..*EPOCHS.get().expect("set in main")).map(Tick).collect()
    }
    fn run(&self) -> Result<(), Halt> {
        Ok(())
    }
}

fn main() {
    let epochs: u32 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 2000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: epoch_cost [EPOCHS > 0]");
            std::process::exit(2);
        }
    };
    EPOCHS.set(epochs).expect("set once");
    let order = WalkOrder::<u64>::new().then::<Add>().serial::<Tick>().then::<Add>();
    let mut micros = Vec::new();
    for _ in 0..7 {
        let started = std::time::Instant::now();
        let report = run(&order, RunOptions::new(0).threads(2)).expect("a valid walk order");
        assert_eq!(report.serial_actions, u64::from(epochs));
        micros.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(epochs));
    }
    micros.sort_by(f64::total_cmp);
    println!(
        "{epochs} epochs: {:.1} us per epoch (min {:.1}, max {:.1})",
        micros[3], micros[0], micros[6]
    );
}
