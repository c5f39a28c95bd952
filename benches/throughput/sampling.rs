//! The sampled-round workload (issue 17): S1, one soak round of
//! K = 10^6 walks drawn from a space of 10^9 trivial walks (9 entries of
//! 10 options), the draw included in its time: nanoseconds per sampled
//! walk. Its same-run reference is W1's full run (10^6 walks of the same
//! actions, run twice, the second timed) in the same child: how much more
//! a sampled walk costs than a walk of a full run. The round's draw and
//! run are reported apart too, and three later rounds (other seeds: a
//! soak's next rounds, on memory the process already has) as their median;
//! then a draw alone, and the draws of sampler versions 2 (sorted,
//! one thread) and 1 (`rand::seq::index::sample`), are timed.

use combtest::RunOptions;
use combtest::model::sample::WalkSample;
use rand::SeedableRng as _;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::{Add, result, run_order, timed, w1_order};

/// Walks in S1's space.
const SIZE: u64 = 1_000_000_000;
/// Walks in S1's round.
const SAMPLED: u64 = 1_000_000;
/// The round's seed.
const SEED: u64 = 17;

type Out = serde_json::Map<String, Value>;

/// Runs workload `name` (S1), or `None` if it is not one.
pub(super) fn child(name: &str) -> Option<Out> {
    if name != "S1" {
        return None;
    }
    // W1's order and three more entries of the same actions.
    let order = w1_order().then::<Add<7, 10>>().then::<Add<8, 10>>().then::<Add<9, 10>>();
    // W1 twice: the first run of a process pays for what the process
    // caches (the CPU quota, the async runtime's threads).
    let w1_once = || timed(|| run_order(&w1_order(), RunOptions::default())).1;
    let w1 = (w1_once(), w1_once()).1;
    // A round: its draw and its run, each timed (the two together are the
    // round's time). The first is the workload's figure; the next ones (a
    // soak's later rounds, on memory the process already has) are reported
    // as `later_*`: the median of three.
    let round = |seed: u64| {
        let (sample, draw) =
            timed(|| WalkSample::draw(SIZE, SAMPLED, seed).expect("S1's sample fits its space"));
        let ((report, threads), run) =
            timed(|| run_order(&order, RunOptions::default().sample(sample)));
        assert_eq!((report.walks, report.counts.passed), (SAMPLED, SAMPLED));
        (draw, run, threads)
    };
    let (round_draw, round_run, threads) = round(SEED);
    let elapsed = round_draw + round_run;
    let mut later: Vec<(f64, f64)> =
        (1..=3).map(|n| round(SEED + n)).map(|(draw, run, _)| (draw + run, draw)).collect();
    later.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (later_round, later_draw) = later[1];
    let (sample, draw) = timed(|| WalkSample::draw(SIZE, SAMPLED, SEED));
    assert_eq!(sample.map(|s| s.len()), Ok(SAMPLED));
    let (v2, v2_draw) = timed(|| WalkSample::draw_by(2, SIZE, SAMPLED, SEED));
    assert_eq!(v2.map(|s| s.len()), Ok(SAMPLED));
    let (old, old_draw) = timed(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let mut ids: Vec<u64> = rand::seq::index::sample(&mut rng, SIZE as usize, SAMPLED as usize)
            .into_iter()
            .map(|i| i as u64)
            .collect();
        ids.sort_unstable();
        ids
    });
    assert_eq!(old.len() as u64, SAMPLED);
    let per_walk = |seconds: f64| seconds / SAMPLED as f64 * 1e9;
    let mut out = result(name, SAMPLED, threads, elapsed, None);
    out.insert("ns_per_sampled_walk".into(), json!(per_walk(elapsed)));
    out.insert("w1_ns_per_walk".into(), json!(per_walk(w1)));
    out.insert("ratio_vs_w1_walk".into(), json!(elapsed / w1));
    out.insert("round_draw_ns_per_walk".into(), json!(per_walk(round_draw)));
    out.insert("round_run_ns_per_walk".into(), json!(per_walk(round_run)));
    out.insert("later_ns_per_sampled_walk".into(), json!(per_walk(later_round)));
    out.insert("later_draw_ns_per_walk".into(), json!(per_walk(later_draw)));
    out.insert("draw_ns_per_walk".into(), json!(per_walk(draw)));
    out.insert("v2_draw_ns_per_walk".into(), json!(per_walk(v2_draw)));
    out.insert("v1_draw_ns_per_walk".into(), json!(per_walk(old_draw)));
    Some(out)
}
