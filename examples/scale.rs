//! Runs a walk space of 10^N walks (N = 4, 6 or 7: N action types of 10
//! trivial "add" options each, no serial action) and prints the report, the
//! walk rate, a bare single-threaded loop's rate on the same actions, and
//! the process's peak RSS.
//!
//! Run: `cargo run --release --example scale -- 7`
//! (`tests/examples.rs` runs it with N = 4.)

use std::time::Instant;

use combtest::{Action, ActionResult, Entries, RunOptions, WalkOrder, run};
use serde::{Deserialize, Serialize};

/// The walk state: one integer.
#[derive(Debug, Clone, Default)]
struct Sum(u64);

/// Adds its option to the sum; `T` makes each position its own type.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Add<const T: u8>(u64);

impl<const T: u8> Action<Sum> for Add<T> {
    fn options() -> Vec<Self> {
        (0..10).map(Self).collect()
    }
    fn run(&self, sum: &mut Sum) -> ActionResult {
        sum.0 += self.0;
        Ok(())
    }
}

fn measure<C: Entries<Sum>>(order: WalkOrder<Sum, C>, bare: impl FnOnce() -> u64) {
    let report = run(&order, RunOptions::default()).expect("the run completes");
    let rate = report.walks as f64 / report.elapsed.as_secs_f64();
    let started = Instant::now();
    let checksum = bare();
    let bare_rate = report.walks as f64 / started.elapsed().as_secs_f64();
    println!(
        "{{\"walks\": {}, \"passed\": {}, \"elapsed_s\": {:.3}, \"walks_per_s\": {rate:.0}, \
         \"bare_walks_per_s\": {bare_rate:.0}, \"ratio_vs_bare\": {:.2}, \"peak_rss_mb\": {:.1}, \
         \"checksum\": {checksum}}}",
        report.walks,
        report.counts.passed,
        report.elapsed.as_secs_f64(),
        rate / bare_rate,
        peak_rss_mb()
    );
    assert!(report.is_consistent() && report.counts.passed == report.walks);
}

/// A hand-written loop over the same space: clone the state, run each
/// chosen option.
fn bare(entries: u32) -> u64 {
    let options: Vec<Add<0>> = Add::<0>::options();
    let mut digits = vec![0usize; entries as usize];
    let mut checksum = 0;
    'walks: loop {
        let mut state = Sum::default();
        for &d in &digits {
            options[d].run(&mut state).expect("add never fails");
        }
        checksum += std::hint::black_box(state).0;
        for d in digits.iter_mut().rev() {
            *d += 1;
            if *d < 10 {
                continue 'walks;
            }
            *d = 0;
        }
        break checksum;
    }
}

/// Peak resident set size of this process (Linux), in MiB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let n: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(4);
    let order = WalkOrder::<Sum>::new().then::<Add<1>>().then::<Add<2>>().then::<Add<3>>();
    match n {
        4 => measure(order.then::<Add<4>>(), || bare(4)),
        6 => measure(order.then::<Add<4>>().then::<Add<5>>().then::<Add<6>>(), || bare(6)),
        7 => measure(
            order.then::<Add<4>>().then::<Add<5>>().then::<Add<6>>().then::<Add<7>>(),
            || bare(7),
        ),
        other => {
            eprintln!("usage: scale [4|6|7]  (10^N walks; got {other})");
            std::process::exit(2);
        }
    }
}
