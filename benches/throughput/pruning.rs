//! The pruning workloads (issue 17): a space of 10^9 (P1, P2) or 10^12
//! (P4) walks whose rule keeps 10^5, each beside a run of the kept walks
//! alone (the same actions, in an order without the rule) in the same child;
//! P3 prunes by the fastest digit (asked for every walk) beside W1.

use combtest::{Action, ActionResult, RunOptions, WalkOrder, WalkView};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Add, K, result, run_order, timed, w1_order};

/// A first entry that keeps only the walks whose first `ZEROS` entries
/// (itself included) chose option 0, reading the slowest first: P1, P4.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Slowest<const ZEROS: usize>(u64);

impl<const ZEROS: usize> Action<K> for Slowest<ZEROS> {
    fn options() -> Vec<Self> {
        (0..10).map(Self).collect()
    }
    fn run(&self, s: &mut K) -> ActionResult {
        s.k = std::hint::black_box(s.k + self.0);
        Ok(())
    }
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        self.0 != 0 || (1..ZEROS).any(|p| walk.option_index(p) != 0)
    }
}

/// P2's second entry (100 options): keeps only the walks where it and the
/// next entry (100 options too) chose option 0: a middle pair.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct MiddlePair(u64);

impl Action<K> for MiddlePair {
    fn options() -> Vec<Self> {
        (0..100).map(Self).collect()
    }
    fn run(&self, s: &mut K) -> ActionResult {
        s.k = std::hint::black_box(s.k + self.0);
        Ok(())
    }
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        self.0 != 0 || walk.option_index(2) != 0
    }
}

/// P3's last entry: prunes its own option 9 (a tenth of the walks, one id
/// in ten): a rule asked for every walk.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Fastest(u64);

impl Action<K> for Fastest {
    fn options() -> Vec<Self> {
        (0..10).map(Self).collect()
    }
    fn run(&self, s: &mut K) -> ActionResult {
        s.k = std::hint::black_box(s.k + self.0);
        Ok(())
    }
    fn prune(&self, _: &WalkView<'_>) -> bool {
        self.0 == 9
    }
}

/// The kept walks of P1 and P4 alone: 5 entries of 10 options.
fn kept_alone() -> WalkOrder<K, impl combtest::Entries<K>> {
    WalkOrder::new()
        .then::<Add<21, 10>>()
        .then::<Add<22, 10>>()
        .then::<Add<23, 10>>()
        .then::<Add<24, 10>>()
        .then::<Add<25, 10>>()
}

/// A pruned run against its kept walks alone, in one child: elapsed times,
/// and the ratio the target is on.
fn against_kept(workload: &str, size: u64, pruned: f64, kept: f64, threads: usize) -> Out {
    let mut out = result(workload, size, threads, pruned, None);
    out.insert("kept_alone_s".into(), json!(kept));
    out.insert("ratio_vs_kept".into(), json!(pruned / kept));
    out
}

type Out = serde_json::Map<String, Value>;

/// Runs workload `name` (P1 to P4), or `None` if it is not one of them.
pub(super) fn child(name: &str) -> Option<Out> {
    // The kept walks alone, run twice: the first run of a process pays for
    // what the process caches (the CPU quota, the async runtime's threads),
    // which the pruned run after it does not.
    let kept = || {
        let mut elapsed = 0.0;
        for _ in 0..2 {
            let order = kept_alone();
            let ((report, _), time) = timed(|| run_order(&order, RunOptions::default()));
            assert_eq!(report.counts.passed, 100_000);
            elapsed = time;
        }
        elapsed
    };
    Some(match name {
        "P1" => {
            let order = WalkOrder::new()
                .then::<Slowest<4>>()
                .then::<Add<1, 10>>()
                .then::<Add<2, 10>>()
                .then::<Add<3, 10>>()
                .then::<Add<4, 10>>()
                .then::<Add<5, 10>>()
                .then::<Add<6, 10>>()
                .then::<Add<7, 10>>()
                .then::<Add<8, 10>>();
            let alone = kept();
            let ((report, threads), elapsed) = timed(|| run_order(&order, RunOptions::default()));
            assert_eq!((report.walks, report.counts.passed), (1_000_000_000, 100_000));
            against_kept(name, report.walks, elapsed, alone, threads)
        }
        "P2" => {
            let order = WalkOrder::new()
                .then::<Add<1, 10>>()
                .then::<MiddlePair>()
                .then::<Add<3, 100>>()
                .then::<Add<4, 10>>()
                .then::<Add<5, 10>>()
                .then::<Add<6, 10>>()
                .then::<Add<7, 10>>();
            let alone = kept();
            let ((report, threads), elapsed) = timed(|| run_order(&order, RunOptions::default()));
            assert_eq!((report.walks, report.counts.passed), (1_000_000_000, 100_000));
            against_kept(name, report.walks, elapsed, alone, threads)
        }
        "P3" => {
            let order = WalkOrder::new()
                .then::<Add<1, 10>>()
                .then::<Add<2, 10>>()
                .then::<Add<3, 10>>()
                .then::<Add<4, 10>>()
                .then::<Add<5, 10>>()
                .then::<Fastest>();
            // W1 twice, for the same reason as `kept`.
            let w1_once = || timed(|| run_order(&w1_order(), RunOptions::default())).1;
            let w1 = (w1_once(), w1_once()).1;
            let ((report, threads), elapsed) = timed(|| run_order(&order, RunOptions::default()));
            assert_eq!((report.counts.passed, report.counts.pruned), (900_000, 100_000));
            let mut out = result(name, report.walks, threads, elapsed, None);
            out.insert("w1_s".into(), json!(w1));
            out.insert("ratio_vs_w1".into(), json!(w1 / elapsed));
            out
        }
        "P4" => {
            let order = WalkOrder::new()
                .then::<Slowest<7>>()
                .then::<Add<1, 10>>()
                .then::<Add<2, 10>>()
                .then::<Add<3, 10>>()
                .then::<Add<4, 10>>()
                .then::<Add<5, 10>>()
                .then::<Add<6, 10>>()
                .then::<Add<7, 10>>()
                .then::<Add<8, 10>>()
                .then::<Add<9, 10>>()
                .then::<Add<10, 10>>()
                .then::<Add<11, 10>>();
            let alone = kept();
            let ((report, threads), elapsed) = timed(|| run_order(&order, RunOptions::default()));
            assert_eq!((report.walks, report.counts.passed), (1_000_000_000_000, 100_000));
            against_kept(name, report.walks, elapsed, alone, threads)
        }
        _ => return None,
    })
}
