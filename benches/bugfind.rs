//! Bugs found: how soon combtest (every walk of a walk order) and
//! proptest-state-machine (random sequences, default shrinking) find each
//! of five bugs planted one at a time in a small key-value store
//! (`bugfind/model.rs`), drawing from the same operation alphabet
//! (`Op::options()`, `Mode::options()`) up to the same sequence length.
//!
//! Run: `cargo bench --bench bugfind -- [--seeds N] [--cap SECONDS]
//! [--total-cap SECONDS] [--runs N]` (defaults: 10 proptest seeds per bug,
//! each capped at 60 s; 5 combtest runs per bug and thread count; the whole
//! bench capped at 600 s: a seed that would pass the total cap gets only
//! what is left, and is reported as cut).
//!
//! Per bug: combtest's whole-run elapsed time (median of `--runs`, on 2
//! threads and on 1), the walks it ran and the first failing walk id,
//! beside a hand-written loop over the same space (the same-run reference,
//! runs alternating) and combtest stopped at its first failure; proptest's cases and time to its first failing case and to the end of
//! shrinking, over the seeds. One JSON line per bug on stdout, a table on
//! stderr. See BENCHMARKS.md ("Bug finding against random stateful
//! testing").

#[path = "bugfind/model.rs"]
mod model;

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use combtest::{Action, RunOptions, SerialAction, run};
use model::{Bug, MAX_OPS, Mode, Model, Op, Store, World, check, order};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};
use serde_json::json;

/// The bug planted in proptest's stores (an index into `Bug::ALL`, or none).
static PLANTED: AtomicUsize = AtomicUsize::new(usize::MAX);

fn planted() -> Option<Bug> {
    Bug::ALL.get(PLANTED.load(Ordering::Relaxed)).copied()
}

/// proptest's reference machine: the model, its initial state and its
/// transitions drawn from combtest's option lists.
struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        prop::sample::select(<Mode as SerialAction<World>>::options()).prop_map(Model::new).boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Op> {
        prop::sample::select(<Op as Action<World>>::options()).boxed()
    }

    fn apply(mut state: Model, op: &Op) -> Model {
        state.apply(*op);
        state
    }
}

/// proptest's test: the store, checked after every transition by the same
/// `check` combtest's `Op` runs.
struct StoreTest;

impl StateMachineTest for StoreTest {
    type SystemUnderTest = Store;
    type Reference = Reference;

    fn init_test(model: &Model) -> Store {
        Store::new(planted(), model.mode)
    }

    fn apply(mut store: Store, model: &Model, op: Op) -> Store {
        if let Err(error) = check(&mut store, model, op) {
            panic!("{error}");
        }
        store
    }
}

struct Args {
    seeds: u64,
    cap: Duration,
    total_cap: Duration,
    runs: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seeds: 10,
        cap: Duration::from_secs(60),
        total_cap: Duration::from_secs(600),
        runs: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        // `cargo bench` passes `--bench` to every bench target.
        if flag == "--bench" {
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |what: &str| {
            value.parse::<u64>().map_err(|_| format!("{what}: not a whole number: {value}"))
        };
        match flag.as_str() {
            "--seeds" => args.seeds = number("--seeds")?,
            "--cap" => args.cap = Duration::from_secs(number("--cap")?),
            "--total-cap" => args.total_cap = Duration::from_secs(number("--total-cap")?),
            "--runs" => args.runs = number("--runs")?.max(1) as usize,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(args)
}

/// combtest's side for one bug: one whole run.
struct Exhaustive {
    found: bool,
    walks: u64,
    /// Walks that failed: the bug's density in the space.
    failed: u64,
    first_failing: Option<u64>,
    /// Operations in the minimal failing walk's failing prefix.
    minimal_ops: Option<usize>,
    elapsed: Vec<Duration>,
}

fn combtest_side(bug: Bug, threads: usize) -> Exhaustive {
    let started = Instant::now();
    let report = run(&order(), RunOptions::new(World::new(Some(bug))).threads(threads))
        .expect("the walk order is valid");
    let elapsed = started.elapsed();
    Exhaustive {
        found: report.counts.failed > 0,
        walks: report.walks,
        failed: report.counts.failed,
        first_failing: report.failed_walks.iter().map(|w| u64::from(w.walk_id)).min(),
        minimal_ops: report.failed_walks.iter().map(|w| w.action_index).min(),
        elapsed: vec![elapsed],
    }
}

/// combtest with `--fail-fast` (`RunOptions::max_failures(1)`: the run
/// stops at its first failure; the batches running finish): the whole
/// run's time. Returns the run's time.
fn combtest_stopped(bug: Bug) -> Duration {
    let options = RunOptions::new(World::new(Some(bug))).max_failures(1);
    let started = Instant::now();
    let report = run(&order(), options).expect("the walk order is valid");
    let elapsed = started.elapsed();
    assert!(report.counts.failed > 0, "{bug:?}: the stopped run found nothing");
    elapsed
}

/// The same-run reference: every walk of the same space in a hand-written
/// single-thread loop (no combtest), each from a fresh store, stopping a
/// walk at its first failure, as combtest does. Returns the failures
/// counted and the run's time (in a vector, to extend with later runs).
fn bare_loop(bug: Bug) -> (u64, Vec<Duration>) {
    let ops = <Op as Action<World>>::options();
    let walks = ops.len().pow(MAX_OPS as u32);
    let mut failed = 0;
    let started = Instant::now();
    for mode in <Mode as SerialAction<World>>::options() {
        for walk in 0..walks {
            let (mut store, mut model) = (Store::new(Some(bug), mode), Model::new(mode));
            // The walk's operations, most significant digit first.
            let mut digits = [0; MAX_OPS];
            let mut rest = walk;
            for digit in digits.iter_mut().rev() {
                *digit = rest % ops.len();
                rest /= ops.len();
            }
            for digit in digits {
                model.apply(ops[digit]);
                if check(&mut store, &model, ops[digit]).is_err() {
                    failed += 1;
                    break;
                }
            }
        }
    }
    (failed, vec![std::hint::black_box(started.elapsed())])
}

/// One proptest seed's result.
struct Seeded {
    found: bool,
    /// Cut by the total cap rather than by `--cap`.
    cut: bool,
    /// Cases run up to and including the first failing one (or all run).
    cases: u64,
    /// Time to the first failing case (or to the cap).
    first_failure: Duration,
    /// Time to the end of shrinking.
    total: Duration,
    /// Operations in the shrunk sequence.
    shrunk: Option<Vec<Op>>,
    shrunk_mode: Option<Mode>,
}

fn proptest_seed(bug: Bug, seed: u64, cap: Duration) -> Seeded {
    PLANTED.store(Bug::ALL.iter().position(|&b| b == bug).unwrap_or(usize::MAX), Ordering::Relaxed);
    let config = Config {
        cases: u32::MAX,
        failure_persistence: None,
        // The cap rejects one case; that ends the run.
        max_global_rejects: 0,
        ..Config::default()
    };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let strategy = Reference::sequential_strategy(1..=MAX_OPS);
    let cases = Cell::new(0u64);
    let first = Cell::new(None::<Duration>);
    let started = Instant::now();
    let result = runner.run(&strategy, |(model, ops, seen)| {
        if first.get().is_none() {
            if started.elapsed() >= cap {
                return Err(TestCaseError::reject("cap reached"));
            }
            cases.set(cases.get() + 1);
        }
        let config = Config::default();
        let outcome =
            catch_unwind(AssertUnwindSafe(|| StoreTest::test_sequential(config, model, ops, seen)));
        match outcome {
            Ok(()) => Ok(()),
            Err(_) => {
                if first.get().is_none() {
                    first.set(Some(started.elapsed()));
                }
                Err(TestCaseError::fail("the store disagreed with the model"))
            }
        }
    });
    let total = started.elapsed();
    let (found, shrunk, shrunk_mode) = match result {
        Err(TestError::Fail(_, (model, ops, _))) => (true, Some(ops), Some(model.mode)),
        _ => (false, None, None),
    };
    Seeded {
        found,
        cut: false,
        cases: cases.get(),
        first_failure: first.get().unwrap_or(total),
        total,
        shrunk,
        shrunk_mode,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median, min and max of `values` (sorted copy; the upper median of an
/// even count).
fn spread<T: Copy + PartialOrd>(values: &[T]) -> Option<(T, T, T)> {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    Some((*v.get(v.len() / 2)?, *v.first()?, *v.last()?))
}

/// Median, min and max of durations, in milliseconds.
fn ms_spread(durations: &[Duration]) -> (f64, f64, f64) {
    let values: Vec<f64> = durations.iter().map(|&d| ms(d)).collect();
    spread(&values).expect("at least one run")
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bugfind: {e}");
            std::process::exit(2);
        }
    };
    let bench_start = Instant::now();
    let deadline = bench_start + args.total_cap;
    eprintln!(
        "bugfind: {} proptest seeds per bug, each capped at {} s; {} combtest runs per bug and thread count; \
         the whole bench capped at {} s",
        args.seeds,
        args.cap.as_secs(),
        args.runs,
        args.total_cap.as_secs()
    );
    eprintln!(
        "alphabet: {} operations x {} modes, sequences of 1..={MAX_OPS} operations",
        <Op as Action<World>>::options().len(),
        <Mode as SerialAction<World>>::options().len()
    );
    // Failing cases panic inside proptest's runs: keep their messages quiet.
    std::panic::set_hook(Box::new(|_| {}));

    let mut rows = Vec::new();
    for bug in Bug::ALL {
        // The three exhaustive sides alternate run by run, so drift of the
        // shared machine falls on each alike.
        let (mut two, mut one, mut bare) =
            (combtest_side(bug, 2), combtest_side(bug, 1), bare_loop(bug));
        let mut stopped = vec![combtest_stopped(bug)];
        for _ in 1..args.runs {
            stopped.push(combtest_stopped(bug));
            two.elapsed.extend(combtest_side(bug, 2).elapsed);
            one.elapsed.extend(combtest_side(bug, 1).elapsed);
            bare.1.extend(bare_loop(bug).1);
        }
        assert_eq!(bare.0, two.failed, "{bug:?}: the bare loop and combtest disagree");
        let mut seeds = Vec::new();
        for seed in 0..args.seeds {
            let left = deadline.saturating_duration_since(Instant::now());
            let cap = args.cap.min(left);
            let mut result = proptest_seed(bug, seed, cap);
            result.cut = cap < args.cap && !result.found;
            seeds.push(result);
        }
        rows.push((bug, two, one, bare.1, stopped, seeds));
    }
    let _ = std::panic::take_hook();

    eprintln!();
    eprintln!(
        "{:<20} {:>3} | {:>14} {:>20} {:>20} {:>20} {:>18} | {:>5} {:>5} {:>20} {:>22} {:>22} | {:>6}",
        "bug",
        "ops",
        "failed/walks",
        "combtest 2 thr ms",
        "combtest 1 thr ms",
        "bare loop 1 thr ms",
        "stop at 1st ms",
        "found",
        "<=256",
        "proptest cases",
        "proptest 1st fail ms",
        "proptest +shrink ms",
        "speedup"
    );
    for (bug, two, one, bare, stopped, seeds) in &rows {
        let (c2, c2lo, c2hi) = ms_spread(&two.elapsed);
        let (c1, c1lo, c1hi) = ms_spread(&one.elapsed);
        let (b, blo, bhi) = ms_spread(bare);
        let (st, stlo, sthi) = ms_spread(stopped);
        let found = seeds.iter().filter(|s| s.found).count();
        // What `proptest!` finds with its default 256 cases per test.
        let default_cases = Config::default().cases;
        let within_default =
            seeds.iter().filter(|s| s.found && s.cases <= u64::from(default_cases)).count();
        let cut = seeds.iter().filter(|s| s.cut).count();
        let cases = spread(&seeds.iter().map(|s| s.cases).collect::<Vec<_>>());
        let first = spread(&seeds.iter().map(|s| ms(s.first_failure)).collect::<Vec<_>>());
        let total = spread(&seeds.iter().map(|s| ms(s.total)).collect::<Vec<_>>());
        // The median proptest seed against combtest's median whole run;
        // seeds that found nothing count at their cap (so "at least").
        let ratio = first.map(|(m, _, _)| m / c2);
        let fmt3 = |s: Option<(f64, f64, f64)>| match s {
            Some((m, lo, hi)) => format!("{m:.2} ({lo:.2}-{hi:.2})"),
            None => "-".into(),
        };
        let cases_text = match cases {
            Some((m, lo, hi)) => format!("{m} ({lo}-{hi})"),
            None => "-".into(),
        };
        eprintln!(
            "{:<20} {:>3} | {:>14} {:>20} {:>20} {:>20} {:>18} | {:>5} {:>5} {:>20} {:>22} {:>22} | {:>6}",
            bug.label(),
            bug.min_ops(),
            format!("{}/{}", two.failed, two.walks),
            format!("{c2:.1} ({c2lo:.1}-{c2hi:.1})"),
            format!("{c1:.1} ({c1lo:.1}-{c1hi:.1})"),
            format!("{b:.1} ({blo:.1}-{bhi:.1})"),
            format!("{st:.1} ({stlo:.1}-{sthi:.1})"),
            format!("{found}/{}", seeds.len()),
            format!("{within_default}/{}", seeds.len()),
            cases_text,
            fmt3(first),
            fmt3(total),
            ratio.map_or("-".into(), |r| format!("{r:.3}x")),
        );
        let shrunk: Vec<String> = seeds
            .iter()
            .filter_map(|s| Some(format!("{:?} {:?}", s.shrunk_mode?, s.shrunk.as_ref()?)))
            .collect();
        let line = json!({
            "bug": bug.label(),
            "min_ops": bug.min_ops(),
            "combtest": {
                "found": two.found && one.found,
                "walks": two.walks,
                "failed_walks": two.failed,
                "first_failing_walk": two.first_failing,
                "failing_op": two.minimal_ops,
                "runs": args.runs,
                "threads_2_ms": {"median": c2, "min": c2lo, "max": c2hi},
                "threads_1_ms": {"median": c1, "min": c1lo, "max": c1hi},
            },
            "bare_loop_1_thread_ms": {"median": b, "min": blo, "max": bhi},
            "combtest_stopped_at_first_failure_ms": {"median": st, "min": stlo, "max": sthi},
            "proptest": {
                "seeds": seeds.len(),
                "found": found,
                "found_within_default_cases": within_default,
                "default_cases": default_cases,
                "cut_by_total_cap": cut,
                "cap_s": args.cap.as_secs(),
                "cases": cases.map(|(m, lo, hi)| json!({"median": m, "min": lo, "max": hi})),
                "first_failure_ms": first.map(|(m, lo, hi)| json!({"median": m, "min": lo, "max": hi})),
                "with_shrinking_ms": total.map(|(m, lo, hi)| json!({"median": m, "min": lo, "max": hi})),
                "shrunk": shrunk,
            },
            "proptest_first_failure_over_combtest_2_threads": ratio,
        });
        println!("{line}");
    }
    eprintln!(
        "bugfind: took {:.1} s (cap {} s)",
        bench_start.elapsed().as_secs_f64(),
        args.total_cap.as_secs()
    );
}
