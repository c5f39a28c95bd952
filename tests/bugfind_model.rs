//! The bug-finding benchmark's model is right: with no bug planted every
//! walk of the benchmark's walk order passes, and each planted bug, switched
//! on alone, fails walks, first at the operation count BENCHMARKS.md gives
//! for its shortest trigger (never sooner), in the branch it needs.
//!
//! Run: `cargo test --test bugfind_model`.

#[path = "../benches/bugfind/model.rs"]
mod model;

use combtest::{Report, RunOptions, run};
use model::{Bug, MAX_OPS, Op, World, order};

fn run_with(bug: Option<Bug>) -> Report<World> {
    run(&order(), RunOptions::new(World::new(bug))).expect("the walk order is valid")
}

#[test]
fn the_clean_store_passes_every_walk() {
    let report = run_with(None);
    let ops = <Op as combtest::Action<World>>::options().len() as u64;
    assert_eq!(report.walks, 2 * ops.pow(MAX_OPS as u32));
    assert!(report.success(), "{report}");
    assert_eq!(report.counts.passed, report.walks);
}

#[test]
fn each_planted_bug_alone_is_found_at_its_shortest_trigger() {
    for bug in Bug::ALL {
        let report = run_with(Some(bug));
        assert!(report.counts.failed > 0, "{bug:?} was not found");
        assert_eq!(report.counts.aborted, 0);
        // Entry 0 is the serial Mode; operation n is entry n.
        let earliest = report.failed_walks.iter().map(|w| w.action_index).min();
        assert_eq!(earliest, Some(bug.min_ops()), "{bug:?}: {report}");
        // Only the stale cache needs the cache: its walks are all in the
        // second branch (Mode is the most significant digit).
        let half = report.walks / 2;
        let in_cache_branch = report.failed_walks.iter().all(|w| u64::from(w.walk_id) >= half);
        assert_eq!(in_cache_branch, bug == Bug::StaleCache, "{bug:?}");
    }
}
