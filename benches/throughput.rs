//! Throughput, parallelism, memory and startup of combtest, each workload
//! beside a bare hand-written loop measured in the same process run.
//!
//! Run: `cargo bench --bench throughput -- [WORKLOAD...] [--runs N]`
//! (workloads: W1 W1b W2 W3 W4 W5 W6 W7 W8 P1 P2 P3 P4 E1 E1L S1 T1 N1; default all, 5
//! runs each).
//!
//! Prints one JSON line per workload on stdout (the median run, with the
//! min and max walk rates) and a table on stderr. Every run of a workload is
//! a fresh child process (this binary, `--child WORKLOAD`), so peak RSS is
//! the workload's own. See BENCHMARKS.md for results and how to read them.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::Range;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use combtest::{
    Action, ActionResult, AsyncAction, Entries, Halt, Report, RunOptions, SerialAction,
    WalkContext, WalkOrder, fail, run,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

// ---------------------------------------------------------------- workloads

#[path = "throughput/barrier.rs"]
mod barrier;
#[path = "throughput/pruning.rs"]
mod pruning;
#[path = "throughput/sampling.rs"]
mod sampling;
#[path = "throughput/tls.rs"]
mod tls;

/// W1, W4, W5: the walk state is one integer (serde for N1, whose walks
/// run on nodes).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct K {
    k: u64,
}

/// "Add" action: `k += option`. `T` makes each position its own type.
///
/// The new `k` passes through `black_box`, so every add runs in every walk
/// whatever follows: without it the compiler hoists the first adds out of
/// the bare loop's inner loops (a walk's prefix is the same for 10 to 10^5
/// walks), and drops the last add of a walk whose state is dropped unread;
/// either way it would measure the optimizer, not a walk.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Add<const T: u8, const N: u64>(u64);

impl<const T: u8, const N: u64> Action<K> for Add<T, N> {
    fn options() -> Vec<Self> {
        (0..N).map(Self).collect()
    }
    #[inline]
    fn run(&self, s: &mut K) -> ActionResult {
        s.k = std::hint::black_box(s.k + self.0);
        Ok(())
    }
}

/// W4's second action: fails when the first option was 3 and its own is 7
/// (exactly 1% of walks).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct AddOrFail(u64);

impl Action<K> for AddOrFail {
    fn options() -> Vec<Self> {
        (0..10).map(Self).collect()
    }
    #[inline]
    fn run(&self, s: &mut K) -> ActionResult {
        // After the first action, k is the first action's option.
        if s.k == 3 && self.0 == 7 {
            return fail("3 then 7");
        }
        s.k = std::hint::black_box(s.k + self.0);
        Ok(())
    }
}

/// W7's last action: cancels every walk whose own option is 5 (10% of the
/// walks, scattered: one id in ten), fails the one walk whose options are
/// all 0 but its own, 7. Its conditions need one term per entry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct AddCancelOrFail(u64);

impl Action<K> for AddCancelOrFail {
    fn options() -> Vec<Self> {
        (0..10).map(Self).collect()
    }
    #[inline]
    fn run(&self, s: &mut K) -> ActionResult {
        match self.0 {
            5 => return combtest::cancel(),
            7 if s.k == 0 => return fail("all zero then 7"),
            _ => {}
        }
        s.k = std::hint::black_box(s.k + self.0);
        Ok(())
    }
}

/// W2's serial action: hands its option to every walk of its branch.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Mode(u64);

impl SerialAction<K> for Mode {
    type Value = u64;
    fn options() -> Vec<Self> {
        vec![Mode(0), Mode(1)]
    }
    fn run(&self) -> Result<u64, Halt> {
        Ok(self.0)
    }
    #[inline]
    fn apply(&self, value: &u64, s: &mut K) -> ActionResult {
        s.k = std::hint::black_box(s.k + value);
        Ok(())
    }
}

/// W1b: the state carries a 256-byte buffer that every action hashes.
#[derive(Debug, Clone)]
struct Buf {
    k: u64,
    buf: [u8; 256],
}

impl Default for Buf {
    fn default() -> Self {
        Buf { k: 0, buf: std::array::from_fn(|i| i as u8) }
    }
}

/// Hashes the walk's 256-byte buffer three times (about 200 ns of CPU) and
/// folds the option in.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct HashBuf<const T: u8>(u64);

impl<const T: u8> Action<Buf> for HashBuf<T> {
    fn options() -> Vec<Self> {
        (0..10).map(Self).collect()
    }
    #[inline]
    fn run(&self, s: &mut Buf) -> ActionResult {
        s.k = hash_buf(s) ^ self.0;
        Ok(())
    }
}

/// Never inlined, so that the work is the same machine code in the bare
/// loop and in combtest's batch loop. Left to the inliner, LLVM inlined it
/// into the small bare loop but called it from the larger batch loop, and
/// the inlined copy ran about 13% fewer instructions per walk (12,300
/// against 14,200, callgrind): W1b then measured the inliner, not how the
/// same work spreads over the runners.
#[inline(never)]
fn hash_buf(s: &Buf) -> u64 {
    let mut hasher = DefaultHasher::new();
    s.k.hash(&mut hasher);
    for _ in 0..3 {
        s.buf.hash(&mut hasher);
    }
    hasher.finish()
}

/// Time spent inside W3's actions, summed over every runner.
static BUSY_NANOS: AtomicU64 = AtomicU64::new(0);

/// W3: waits 1 ms, as an action blocked on I/O would.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Wait<const T: u8>(u64);

impl<const T: u8> Action<K> for Wait<T> {
    fn options() -> Vec<Self> {
        (0..8).map(Self).collect()
    }
    fn run(&self, s: &mut K) -> ActionResult {
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(1));
        s.k += self.0;
        BUSY_NANOS.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// W8's action: awaits a 1 ms timer (an I/O wait that blocks no thread).
/// `T` makes each position its own type.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct AsyncWait<const T: u8>(u64);

impl<const T: u8> AsyncAction<K> for AsyncWait<T> {
    fn options() -> Vec<Self> {
        (0..47).map(Self).collect()
    }
    async fn run(&self, s: &mut K, _: WalkContext<'_>) -> ActionResult {
        tokio::time::sleep(Duration::from_millis(1)).await;
        s.k += self.0;
        Ok(())
    }
}

// ------------------------------------------------------------ bare loops

/// W0 for W1 and W4: what a user writes by hand. Nested loops over the
/// options of each action type, a clone of the initial state per walk, each
/// chosen option's `run`, stopping the walk at its first error.
fn bare_adds(with_failures: bool) -> (u64, u64) {
    bare_adds_part(with_failures, 0..10)
}

/// [`bare_adds`] for the walks whose first option is in `first`.
fn bare_adds_part(with_failures: bool, first: Range<usize>) -> (u64, u64) {
    let initial = K::default();
    let a1: Vec<Add<1, 10>> = Add::options();
    let a2: Vec<Add<2, 10>> = Add::options();
    let f2: Vec<AddOrFail> = AddOrFail::options();
    let a3: Vec<Add<3, 10>> = Add::options();
    let a4: Vec<Add<4, 10>> = Add::options();
    let a5: Vec<Add<5, 10>> = Add::options();
    let a6: Vec<Add<6, 10>> = Add::options();
    let (mut passed, mut failed) = (0, 0);
    for o1 in &a1[first] {
        for (o2, f2) in a2.iter().zip(&f2) {
            for o3 in &a3 {
                for o4 in &a4 {
                    for o5 in &a5 {
                        for o6 in &a6 {
                            let mut s = initial.clone();
                            let mut walk = || -> ActionResult {
                                o1.run(&mut s)?;
                                if with_failures {
                                    f2.run(&mut s)?
                                } else {
                                    o2.run(&mut s)?
                                }
                                o3.run(&mut s)?;
                                o4.run(&mut s)?;
                                o5.run(&mut s)?;
                                o6.run(&mut s)
                            };
                            match walk() {
                                Ok(()) => passed += 1,
                                Err(_) => failed += 1,
                            }
                            std::hint::black_box(&s);
                        }
                    }
                }
            }
        }
    }
    (passed, failed)
}

/// W0 for W1b.
fn bare_hash() -> u64 {
    bare_hash_part(0..10)
}

/// [`bare_hash`] for the walks whose first option is in `first`.
fn bare_hash_part(first: Range<usize>) -> u64 {
    let initial = Buf::default();
    let (h1, h2, h3): (Vec<HashBuf<1>>, Vec<HashBuf<2>>, Vec<HashBuf<3>>) =
        (HashBuf::options(), HashBuf::options(), HashBuf::options());
    let (h4, h5, h6): (Vec<HashBuf<4>>, Vec<HashBuf<5>>, Vec<HashBuf<6>>) =
        (HashBuf::options(), HashBuf::options(), HashBuf::options());
    let mut n = 0;
    for o1 in &h1[first] {
        for o2 in &h2 {
            for o3 in &h3 {
                for o4 in &h4 {
                    for o5 in &h5 {
                        for o6 in &h6 {
                            let mut s = initial.clone();
                            let mut walk = || -> ActionResult {
                                o1.run(&mut s)?;
                                o2.run(&mut s)?;
                                o3.run(&mut s)?;
                                o4.run(&mut s)?;
                                o5.run(&mut s)?;
                                o6.run(&mut s)
                            };
                            walk().expect("hashing never fails");
                            std::hint::black_box(&s);
                            n += 1;
                        }
                    }
                }
            }
        }
    }
    n
}

/// W0 for W2: the serial action runs once per branch, its value applied to
/// every walk of the branch.
fn bare_serial() -> u64 {
    let initial = K::default();
    let a1: Vec<Add<1, 10>> = Add::options();
    let a2: Vec<Add<2, 10>> = Add::options();
    let a3: Vec<Add<3, 10>> = Add::options();
    let a4: Vec<Add<4, 5>> = Add::options();
    let a5: Vec<Add<5, 100>> = Add::options();
    let mut n = 0;
    for mode in Mode::options() {
        let value = mode.run().expect("mode never fails");
        for o1 in &a1 {
            for o2 in &a2 {
                for o3 in &a3 {
                    for o4 in &a4 {
                        for o5 in &a5 {
                            let mut s = initial.clone();
                            let mut walk = || -> ActionResult {
                                o1.run(&mut s)?;
                                o2.run(&mut s)?;
                                mode.apply(&value, &mut s)?;
                                o3.run(&mut s)?;
                                o4.run(&mut s)?;
                                o5.run(&mut s)
                            };
                            walk().expect("adding never fails");
                            std::hint::black_box(&s);
                            n += 1;
                        }
                    }
                }
            }
        }
    }
    n
}

/// The semantics' own cost for W2, written by hand: segment 0 of every
/// walk runs before the serial action's first run (it must see the system as
/// no serial action has changed it), so every walk's state is held across
/// the barrier, packed in one `Vec`, as a careful user would hold it.
fn bare_held() -> u64 {
    let initial = K::default();
    let a1: Vec<Add<1, 10>> = Add::options();
    let a2: Vec<Add<2, 10>> = Add::options();
    let a3: Vec<Add<3, 10>> = Add::options();
    let a4: Vec<Add<4, 5>> = Add::options();
    let a5: Vec<Add<5, 100>> = Add::options();
    let modes = Mode::options();
    // Walks per (mode, o1, o2) prefix: the options after the serial action.
    let tail = a3.len() * a4.len() * a5.len();
    let mut held: Vec<K> = Vec::with_capacity(modes.len() * a1.len() * a2.len() * tail);
    for _ in &modes {
        for o1 in &a1 {
            for o2 in &a2 {
                for _ in 0..tail {
                    let mut s = initial.clone();
                    let mut segment = || -> ActionResult {
                        o1.run(&mut s)?;
                        o2.run(&mut s)
                    };
                    segment().expect("adding never fails");
                    held.push(s);
                }
            }
        }
    }
    let mut held = held.into_iter();
    let mut n = 0;
    for mode in &modes {
        let value = mode.run().expect("mode never fails");
        for _ in 0..a1.len() * a2.len() {
            for o3 in &a3 {
                for o4 in &a4 {
                    for o5 in &a5 {
                        let mut s = held.next().expect("one held state per walk");
                        let mut segment = || -> ActionResult {
                            mode.apply(&value, &mut s)?;
                            o3.run(&mut s)?;
                            o4.run(&mut s)?;
                            o5.run(&mut s)
                        };
                        segment().expect("adding never fails");
                        std::hint::black_box(&s);
                        n += 1;
                    }
                }
            }
        }
    }
    n
}

/// Runs `part` on `threads` plain threads, each on its share of the first
/// action's 10 options; returns the sum of what they return. The best any
/// parallel runner can do on this machine at this moment.
fn split<T: std::iter::Sum<T> + Send>(
    threads: usize,
    part: impl Fn(Range<usize>) -> T + Sync,
) -> T {
    std::thread::scope(|scope| {
        let part = &part;
        let handles: Vec<_> = (0..threads)
            .map(|t| scope.spawn(move || part(t * 10 / threads..(t + 1) * 10 / threads)))
            .collect();
        handles.into_iter().map(|h| h.join().expect("a bare part never panics")).sum()
    })
}

/// W0 for W3.
fn bare_wait() -> u64 {
    let initial = K::default();
    let (w1, w2, w3): (Vec<Wait<1>>, Vec<Wait<2>>, Vec<Wait<3>>) =
        (Wait::options(), Wait::options(), Wait::options());
    let mut n = 0;
    for o1 in &w1 {
        for o2 in &w2 {
            for o3 in &w3 {
                let mut s = initial.clone();
                o1.run(&mut s).and_then(|()| o2.run(&mut s)).and_then(|()| o3.run(&mut s)).unwrap();
                std::hint::black_box(&s);
                n += 1;
            }
        }
    }
    n
}

// -------------------------------------------------------------- measuring

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed().as_secs_f64())
}

/// Peak resident set size of this process, in MiB (Linux).
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn run_order<S: Clone + Send + 'static, C: Entries<S>>(
    order: &WalkOrder<S, C>,
    options: RunOptions<S>,
) -> (Report<S>, usize) {
    let threads = options.effective_threads();
    let report = run(order, options).expect("benchmark walk orders are valid");
    assert!(report.is_consistent(), "accounting broken: {:?}", report.without_states());
    (report, threads)
}

/// The common fields of a workload's result.
fn result(
    workload: &str,
    walks: u64,
    threads: usize,
    elapsed: f64,
    bare_elapsed: Option<f64>,
) -> serde_json::Map<String, Value> {
    let walks_per_s = walks as f64 / elapsed;
    let mut out = serde_json::Map::new();
    out.insert("workload".into(), json!(workload));
    out.insert("walks".into(), json!(walks));
    out.insert("threads".into(), json!(threads));
    out.insert("elapsed_s".into(), json!(elapsed));
    out.insert("walks_per_s".into(), json!(walks_per_s));
    out.insert(
        "ratio_vs_bare".into(),
        bare_elapsed.map_or(Value::Null, |bare| json!(bare / elapsed)),
    );
    if let Some(bare) = bare_elapsed {
        out.insert("bare_walks_per_s".into(), json!(walks as f64 / bare));
    }
    out
}

/// The ceiling: the same hand-written loop on as many plain threads as
/// combtest has runners (the parallel ratio this machine allows), timed
/// before and after combtest's run (`before`, `after`: elapsed seconds); a
/// host that slowed down for one of them shows as a lower ceiling there.
/// `ceiling` is the better of the two, and `ratio_vs_ceiling` combtest's
/// rate against it (1.0: combtest scales as well as plain threads did at
/// their best in this run).
fn ceilings(
    out: &mut serde_json::Map<String, Value>,
    bare: f64,
    before: f64,
    after: f64,
    elapsed: f64,
) {
    let best = before.min(after);
    out.insert("ceiling".into(), json!(bare / best));
    out.insert("ceiling_before".into(), json!(bare / before));
    out.insert("ceiling_after".into(), json!(bare / after));
    out.insert("ratio_vs_ceiling".into(), json!(best / elapsed));
}

fn w1_order() -> WalkOrder<K, impl Entries<K>> {
    WalkOrder::new()
        .then::<Add<1, 10>>()
        .then::<Add<2, 10>>()
        .then::<Add<3, 10>>()
        .then::<Add<4, 10>>()
        .then::<Add<5, 10>>()
        .then::<Add<6, 10>>()
}

fn child(workload: &str) -> serde_json::Map<String, Value> {
    match workload {
        "W1" => {
            let order = w1_order();
            let threads = RunOptions::<K>::default().effective_threads();
            let parallel = || {
                let (passed, time) =
                    timed(|| split(threads, |first| bare_adds_part(false, first).0));
                assert_eq!(passed, 1_000_000);
                time
            };
            let before = parallel();
            let ((_, threads), elapsed) = timed(|| run_order(&order, RunOptions::default()));
            let rss = peak_rss_mb();
            let ((passed, _), bare) = timed(|| bare_adds(false));
            assert_eq!(passed, 1_000_000);
            let after = parallel();
            let mut out = result(workload, 1_000_000, threads, elapsed, Some(bare));
            // CPU the framework adds per walk, beyond the actions themselves.
            let framework_ns = (elapsed * threads as f64 - bare) / 1e6 * 1e9;
            out.insert("framework_ns_per_walk".into(), json!(framework_ns));
            ceilings(&mut out, bare, before, after, elapsed);
            out.insert("peak_rss_mb".into(), json!(rss));
            out
        }
        "W1b" => {
            let order = WalkOrder::<Buf>::new()
                .then::<HashBuf<1>>()
                .then::<HashBuf<2>>()
                .then::<HashBuf<3>>()
                .then::<HashBuf<4>>()
                .then::<HashBuf<5>>()
                .then::<HashBuf<6>>();
            let threads = RunOptions::<Buf>::default().effective_threads();
            let parallel = || {
                let (n, time) = timed(|| split(threads, bare_hash_part));
                assert_eq!(n, 1_000_000);
                time
            };
            let before = parallel();
            let ((_, threads), elapsed) = timed(|| run_order(&order, RunOptions::default()));
            let rss = peak_rss_mb();
            let (n, bare) = timed(bare_hash);
            assert_eq!(n, 1_000_000);
            let after = parallel();
            let mut out = result(workload, 1_000_000, threads, elapsed, Some(bare));
            out.insert("action_ns".into(), json!(bare / 6e6 * 1e9));
            ceilings(&mut out, bare, before, after, elapsed);
            out.insert("peak_rss_mb".into(), json!(rss));
            out
        }
        "W2" => {
            let order = WalkOrder::<K>::new()
                .then::<Add<1, 10>>()
                .then::<Add<2, 10>>()
                .serial::<Mode>()
                .then::<Add<3, 10>>()
                .then::<Add<4, 5>>()
                .then::<Add<5, 100>>();
            let ((report, threads), elapsed) = timed(|| run_order(&order, RunOptions::default()));
            let rss = peak_rss_mb();
            assert_eq!((report.counts.passed, report.serial_actions), (1_000_000, 2));
            let (n, bare) = timed(bare_serial);
            assert_eq!(n, 1_000_000);
            let (n, held) = timed(bare_held);
            assert_eq!(n, 1_000_000);
            // W1 in the same process, for the W2/W1 ratio the target names,
            // and its bare loop, for what holding states costs by hand.
            let w1 = w1_order();
            let (_, w1_elapsed) = timed(|| run_order(&w1, RunOptions::default()));
            let (_, w1_bare) = timed(|| bare_adds(false));
            let mut out = result(workload, 1_000_000, threads, elapsed, Some(bare));
            out.insert("ratio_vs_w1".into(), json!(w1_elapsed / elapsed));
            out.insert("ratio_vs_held_bare".into(), json!(held / elapsed));
            out.insert("held_bare_vs_w1_bare".into(), json!(w1_bare / held));
            out.insert("peak_rss_mb".into(), json!(rss));
            out
        }
        "W3" => {
            let order = WalkOrder::<K>::new().then::<Wait<1>>().then::<Wait<2>>().then::<Wait<3>>();
            BUSY_NANOS.store(0, Ordering::Relaxed);
            let ((_, threads), elapsed) =
                timed(|| run_order(&order, RunOptions::default().threads(64)));
            let busy = BUSY_NANOS.load(Ordering::Relaxed) as f64 / 1e9;
            let (n, bare) = timed(bare_wait);
            assert_eq!(n, 512);
            let mut out = result(workload, 512, threads, elapsed, Some(bare));
            out.insert("parallelism".into(), json!(busy / elapsed));
            out
        }
        "W4" => {
            let order = WalkOrder::<K>::new()
                .then::<Add<1, 10>>()
                .then::<AddOrFail>()
                .then::<Add<3, 10>>()
                .then::<Add<4, 10>>()
                .then::<Add<5, 10>>()
                .then::<Add<6, 10>>();
            let ((report, threads), elapsed) = timed(|| run_order(&order, RunOptions::default()));
            let ((passed, failed), bare) = timed(|| bare_adds(true));
            let expected: BTreeSet<u64> = (0..10_000).map(|x| 370_000 + x).collect();
            let got: BTreeSet<u64> = report.failed_walks.iter().map(|f| f.walk_id.0).collect();
            let exact = report.counts.failed == 10_000 && got == expected && failed == 10_000;
            assert!(exact, "W4: {} failures, bare {failed}", report.counts.failed);
            assert_eq!(report.counts.passed, passed);
            // One group, whose conditions are exactly the planted bug.
            let groups = &report.failure_groups;
            let conditions = groups.first().map(|g| g.conditions.to_string());
            let expected = "fails whenever Add<1, 10>=Add(3) and AddOrFail=AddOrFail(7), whatever the other entries";
            assert!(
                groups.len() == 1 && conditions.as_deref() == Some(expected),
                "W4 groups: {conditions:?}"
            );
            let mut out = result(workload, 1_000_000, threads, elapsed, Some(bare));
            out.insert("failures".into(), json!(report.counts.failed));
            out.insert("failures_exact".into(), json!(exact));
            out.insert("groups".into(), json!(groups.len()));
            out
        }
        "W5big" | "W5small" => {
            let big = workload == "W5big";
            let order = WalkOrder::<K>::new()
                .then::<Add<1, 10>>()
                .then::<Add<2, 10>>()
                .then::<Add<3, 10>>()
                .then::<Add<4, 10>>();
            let (walks, threads, elapsed) = if big {
                let order = order.then::<Add<5, 10>>().then::<Add<6, 10>>().then::<Add<7, 10>>();
                let ((report, threads), elapsed) =
                    timed(|| run_order(&order, RunOptions::default()));
                (report.walks, threads, elapsed)
            } else {
                let ((report, threads), elapsed) =
                    timed(|| run_order(&order, RunOptions::default()));
                (report.walks, threads, elapsed)
            };
            result(workload, walks, threads, elapsed, None)
        }
        "W7big" | "W7small" => {
            // W5's orders, the last action replaced: 10% of walks cancelled
            // one id in ten (the worst case of the triage's cancelled
            // ranges: one range per cancelled walk) and one failure, whose
            // conditions are searched at the end.
            let big = workload == "W7big";
            let order = WalkOrder::<K>::new()
                .then::<Add<1, 10>>()
                .then::<Add<2, 10>>()
                .then::<Add<3, 10>>();
            let (report, threads, elapsed) = if big {
                let order = order
                    .then::<Add<4, 10>>()
                    .then::<Add<5, 10>>()
                    .then::<Add<6, 10>>()
                    .then::<AddCancelOrFail>();
                let ((report, threads), elapsed) =
                    timed(|| run_order(&order, RunOptions::default()));
                (report, threads, elapsed)
            } else {
                let order = order.then::<AddCancelOrFail>();
                let ((report, threads), elapsed) =
                    timed(|| run_order(&order, RunOptions::default()));
                (report, threads, elapsed)
            };
            assert_eq!((report.counts.failed, report.counts.cancelled), (1, report.walks / 10));
            // The failure needs every option of the walk: 4 terms in the
            // small space, 7 (more than a conjunction may have) in the big.
            let found = report
                .failure_groups
                .first()
                .map(|g| matches!(g.conditions, combtest::model::triage::Conditions::Found { .. }));
            assert_eq!(found, Some(!big), "W7 groups: {:?}", report.failure_groups);
            result(workload, report.walks, threads, elapsed, None)
        }
        "W6" => {
            let node = env!("CARGO_BIN_EXE_combtest-node");
            let (status, elapsed) =
                timed(|| Command::new(node).args(["run", "--suite", "smoke"]).output());
            let status = status.expect("combtest-node starts").status;
            assert!(status.success(), "combtest-node run --suite smoke: {status}");
            let mut out = result(workload, 9, combtest::default_threads(), elapsed, None);
            out.insert("startup_ms".into(), json!(elapsed * 1e3));
            out
        }
        "W8" => {
            // 47^3 walks of 3 async actions, each awaiting 1 ms: W3's
            // I/O-bound shape on 2 runner threads with up to 4,096 walks
            // in flight each. `parallelism` is (actions x 1 ms) / elapsed.
            let order = WalkOrder::<K>::new()
                .then_async::<AsyncWait<1>>()
                .then_async::<AsyncWait<2>>()
                .then_async::<AsyncWait<3>>();
            let options = RunOptions::default().threads(2).in_flight(4096);
            let ((report, threads), elapsed) = timed(|| run_order(&order, options));
            assert_eq!(report.counts.passed, 47 * 47 * 47);
            let actions = 3.0 * report.walks as f64;
            let mut out = result(workload, report.walks, threads, elapsed, None);
            out.insert("parallelism".into(), json!(actions * 1e-3 / elapsed));
            out
        }
        "T1" => {
            // W1 traced (`log_dir`: run.json, walks.jsonl, junit.xml) against
            // W1 untraced, alternated in this one child: U T U T U T U.
            let order = w1_order();
            let logs = tempfile::tempdir().expect("a temp dir");
            let mut untraced = Vec::new();
            let mut traced = Vec::new();
            let mut bytes = 0;
            let mut threads = 0;
            for round in 0..7 {
                if round % 2 == 0 {
                    let ((_, t), elapsed) = timed(|| run_order(&order, RunOptions::default()));
                    (threads, untraced) = (t, [untraced, vec![elapsed]].concat());
                    continue;
                }
                let options = RunOptions::default().log_dir(logs.path());
                let ((report, _), elapsed) = timed(|| run_order(&order, options));
                traced.push(elapsed);
                let dir = report.run_dir.expect("a traced run has its directory");
                bytes = std::fs::metadata(dir.join("walks.jsonl")).expect("walks.jsonl").len();
            }
            let mid = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (u, t) = (mid(untraced), mid(traced));
            let mut out = result(workload, 1_000_000, threads, t, None);
            out.insert("untraced_s".into(), json!(u));
            out.insert("ratio_vs_untraced".into(), json!(u / t));
            out.insert("bytes_per_walk".into(), json!(bytes as f64 / 1e6));
            out
        }
        other if let Some(out) = pruning::child(other) => out,
        other if let Some(out) = barrier::child(other) => out,
        other if let Some(out) = sampling::child(other) => out,
        other if let Some(out) = tls::child(other) => out,
        other => {
            eprintln!(
                "unknown workload {other}: use W1 W1b W2 W3 W4 W5 W6 W7 W8 P1 P2 P3 P4 E1 E1L S1 T1 N1"
            );
            std::process::exit(2);
        }
    }
}

// --------------------------------------------------------------- reporting

/// Runs one child process for `workload` and returns its JSON result.
fn run_child(workload: &str) -> serde_json::Map<String, Value> {
    let exe = std::env::current_exe().expect("the bench knows its own path");
    let output = Command::new(exe).args(["--child", workload]).output().expect("child starts");
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!("workload {workload} failed: {}", output.status);
    }
    let line = String::from_utf8(output.stdout).expect("utf-8");
    match serde_json::from_str(line.trim()) {
        Ok(Value::Object(map)) => map,
        _ => panic!("workload {workload} printed {line:?}"),
    }
}

fn number(map: &serde_json::Map<String, Value>, key: &str) -> f64 {
    map.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// Every number is the median of that number over the runs (so a ratio is
/// the median of the ratios, each taken within one run), with the min and
/// max of the walk rate and of the ratios added.
fn median(runs: Vec<serde_json::Map<String, Value>>) -> serde_json::Map<String, Value> {
    let mut out = runs[0].clone();
    for (key, value) in out.iter_mut() {
        if value.is_f64() {
            let mut all: Vec<f64> = runs.iter().map(|r| number(r, key)).collect();
            all.sort_by(f64::total_cmp);
            *value = json!(all[all.len() / 2]);
        }
    }
    for key in RANGED {
        let all: Vec<f64> = runs.iter().map(|r| number(r, key)).filter(|v| !v.is_nan()).collect();
        if let (Some(min), Some(max)) =
            (all.iter().copied().min_by(f64::total_cmp), all.iter().copied().max_by(f64::total_cmp))
        {
            out.insert(format!("min_{key}"), json!(min));
            out.insert(format!("max_{key}"), json!(max));
        }
    }
    out.insert("runs".into(), json!(runs.len()));
    out
}

/// The numbers whose min and max over the runs are reported too.
const RANGED: [&str; 13] = [
    "walks_per_s",
    "tls_vs_plain",
    "ratio_vs_untraced",
    "ratio_vs_bare",
    "ratio_vs_w1",
    "ceiling",
    "parallelism",
    "ratio_vs_kept",
    "ratio_vs_ceiling",
    "us_per_serial",
    "cpu_us_per_serial",
    "ns_per_sampled_walk",
    "ratio_vs_w1_walk",
];

fn measure(workload: &str, runs: usize) -> serde_json::Map<String, Value> {
    if workload == "W5" || workload == "W7" {
        let big = median((0..runs).map(|_| run_child(&format!("{workload}big"))).collect());
        let small = median((0..runs).map(|_| run_child(&format!("{workload}small"))).collect());
        let mut out = big.clone();
        out.insert("workload".into(), json!(workload));
        out.insert("peak_rss_mb".into(), big["peak_rss_mb"].clone());
        out.insert("small_walks".into(), small["walks"].clone());
        out.insert("small_peak_rss_mb".into(), small["peak_rss_mb"].clone());
        out.insert(
            "rss_ratio_big_vs_small".into(),
            json!(number(&big, "peak_rss_mb") / number(&small, "peak_rss_mb")),
        );
        return out;
    }
    median((0..runs).map(|_| run_child(workload)).collect())
}

fn table_row(r: &serde_json::Map<String, Value>) -> String {
    let notes: Vec<String> = [
        "framework_ns_per_walk",
        "action_ns",
        "ceiling",
        "ceiling_before",
        "ceiling_after",
        "ratio_vs_ceiling",
        "ratio_vs_w1",
        "ratio_vs_held_bare",
        "held_bare_vs_w1_bare",
        "parallelism",
        "failures",
        "small_peak_rss_mb",
        "startup_ms",
        "ratio_vs_kept",
        "kept_alone_s",
        "us_per_serial",
        "cpu_us_per_serial",
        "round_trip_us",
        "round_trip_cpu_us",
        "ns_per_sampled_walk",
        "w1_ns_per_walk",
        "ratio_vs_w1_walk",
        "draw_ns_per_walk",
        "v1_draw_ns_per_walk",
        "ratio_vs_untraced",
        "bytes_per_walk",
        "plain_s",
        "tls_vs_plain",
        "tls_vs_plain_min",
        "tls_vs_plain_max",
        "open_plain_ms",
        "open_tls_ms",
        "trace_mb",
    ]
    .iter()
    .filter_map(|k| r.get(*k).and_then(Value::as_f64).map(|v| format!("{k}={v:.2}")))
    .collect();
    format!(
        "{:<4} {:>9} {:>4} {:>11.0} ({:.0}-{:.0}) {:>5.2} ({:.2}-{:.2}) {:>6.1}  {}",
        r["workload"].as_str().unwrap_or("?"),
        number(r, "walks"),
        number(r, "threads"),
        number(r, "walks_per_s"),
        number(r, "min_walks_per_s"),
        number(r, "max_walks_per_s"),
        number(r, "ratio_vs_bare"),
        number(r, "min_ratio_vs_bare"),
        number(r, "max_ratio_vs_bare"),
        number(r, "peak_rss_mb"),
        notes.join(" ")
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("--node") {
        tls::node(&args[1..]);
        return;
    }
    if args.first().map(String::as_str) == Some("--child") {
        let workload = args.get(1).expect("--child WORKLOAD");
        let mut out = child(workload);
        // Workloads that run a baseline after combtest record the peak
        // before it.
        out.entry("peak_rss_mb").or_insert_with(|| json!(peak_rss_mb()));
        println!("{}", Value::Object(out));
        return;
    }
    let mut runs = 5;
    let mut workloads = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => {
                runs =
                    it.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0).unwrap_or_else(|| {
                        eprintln!("--runs takes a positive number");
                        std::process::exit(2)
                    })
            }
            name => workloads.push(name.to_string()),
        }
    }
    if workloads.is_empty() {
        workloads = [
            "W1", "W1b", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "P1", "P2", "P3", "P4", "E1",
            "E1L", "S1", "T1", "N1",
        ]
        .map(String::from)
        .to_vec();
    }
    eprintln!(
        "{:<4} {:>9} {:>4} {:>11} {:>13} {:>5} {:>11} {:>6}  notes (medians)",
        "", "walks", "thr", "walks/s", "(min-max)", "×bare", "(min-max)", "RSS MiB"
    );
    for workload in &workloads {
        let result = measure(workload, runs);
        eprintln!("{}", table_row(&result));
        println!("{}", Value::Object(result));
    }
}
