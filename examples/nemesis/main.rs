//! A fault campaign (issue 14): a soak on three local nodes while a seeded
//! nemesis kills and stops the nodes and stops the coordinator, then a
//! check that every walk of every round was accounted for exactly once and
//! that nothing failed without evidence.
//!
//! Run: `cargo run --release --example nemesis -- --minutes 30 [--seed S] [--keep]`
//!
//! This binary is also the coordinator and the nodes: given a combtest-node
//! command (`soak`, `serve`, `run`, `list`, ...) it is `combtest::cli::main`
//! with the built-in suites and `steady`. Without one, it runs the campaign:
//!
//! 1. It starts itself as the coordinator, `soak --suite steady` (or
//!    `steady-serial-first`, with `--serial-first`) `--local-nodes 3
//!    --duration N --log-dir TMP/logs --json --heartbeat-timeout 1s
//!    --max-restarts 1000 --stats-every 10s`, with
//!    `COMBTEST_COOKIE_FILE` in its temp dir and `COMBTEST_LOG=info`
//!    (its stderr, and its nodes', go to `TMP/coordinator.log`). No walk
//!    timeout: a stopped node would time walks out, which is not their
//!    fault.
//! 2. Once the first walks are recorded, the nemesis (ChaCha8 from the
//!    seed) waits 0.3–3 s, then SIGKILLs a node, SIGSTOPs a node for
//!    0.5–4 s, SIGSTOPs the coordinator for 1–4 s (longer than the
//!    heartbeat: the nodes drop its runs), or does nothing; again until
//!    the duration is up. Nodes are the coordinator's children running
//!    `serve --name local-N`, looked up in `/proc` each time (a restarted
//!    node has a new pid); nothing else is ever signalled. Each fault is
//!    printed (`fault ...`): that is the kill log.
//! 3. Every 2 s it samples the resident memory of the coordinator and the
//!    nodes, and the size of `walks.jsonl`.
//! 4. When the soak has ended, `check` reads its report (stdout and
//!    `soak.json`) and `walks.jsonl`; see `check.rs` for every rule. The
//!    summary names each violation; the exit code is 0 if there is none,
//!    1 if there is any (the temp dir is then kept), 2 on bad arguments.

mod check;
mod faults;
mod named;
mod procs;

use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use combtest::suites::{Fixture, builtin, suite};
use combtest::{
    Action, ActionResult, Halt, SerialAction, SerialContext, WalkContext, WalkOrder, fail,
};
use rand::SeedableRng as _;
use serde::{Deserialize, Serialize};

use crate::faults::{Kind, Shared};

// ---------------------------------------------------------------------------
// The suite.

/// How long each plain action works (sleeps, like a call to a system):
/// four of them make a walk of about 1.5–2 ms.
const WORK: Duration = Duration::from_micros(400);

/// A walk's state: the entries it posted and the rate its branch settled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Ledger {
    entries: Vec<u32>,
    rate: Option<u32>,
}

macro_rules! plain {
    ($name:ident, $count:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Serialize, Deserialize)]
        struct $name(u32);

        impl Action<Ledger> for $name {
            fn options() -> Vec<Self> {
                (0..$count).map($name).collect()
            }
            fn run(&self, ledger: &mut Ledger) -> ActionResult {
                std::thread::sleep(WORK);
                ledger.entries.push(self.0);
                Ok(())
            }
        }
    };
}

plain!(Open, 6, "Opens the ledger with an entry.");
plain!(Post, 4, "Posts an entry.");
plain!(Hold, 4, "Holds an entry.");

/// A global rate change: run once per branch, its value reaches every walk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rate(u32);

impl SerialAction<Ledger> for Rate {
    type Value = u32;
    fn options() -> Vec<Self> {
        (0..3).map(Rate).collect()
    }
    fn run(&self) -> Result<u32, Halt> {
        Ok(100 + self.0)
    }
    /// Each node records the rates it applied (its per-node step).
    fn apply_on_node(&self, _: &u32, cx: &SerialContext<'_>) -> ActionResult {
        cx.fixture::<RateSteps>()?.0.lock().unwrap().push(self.0);
        Ok(())
    }
    fn apply(&self, rate: &u32, ledger: &mut Ledger) -> ActionResult {
        ledger.rate = Some(*rate);
        Ok(())
    }
}

/// The rates a node applied in this run (`Rate::apply_on_node`), in order.
#[derive(Default)]
struct RateSteps(Mutex<Vec<u32>>);

/// Settles the ledger at the branch's rate. It fails only if combtest broke
/// the walk: its state lost an entry or never got the serial value.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Settle(u32);

impl Action<Ledger> for Settle {
    fn options() -> Vec<Self> {
        (0..4).map(Settle).collect()
    }
    fn run_in(&self, ledger: &mut Ledger, cx: &WalkContext<'_>) -> ActionResult {
        std::thread::sleep(WORK);
        if ledger.entries.len() != 3 || ledger.rate.is_none() {
            return fail(format!("combtest broke the walk's state: {ledger:?}"));
        }
        // The node applied this branch's rate once, and no other since.
        let rate = ledger.rate.unwrap_or(0).saturating_sub(100);
        let applied = cx.fixture::<RateSteps>()?.0.lock().unwrap().clone();
        let times = applied.iter().filter(|&&r| r == rate).count();
        if applied.last() != Some(&rate) || times != 1 {
            return fail(format!("combtest broke the per-node steps: rate {rate}, {applied:?}"));
        }
        ledger.entries.push(self.0);
        Ok(())
    }
}

/// `steady`: 6 x 4 x 4 x 3 x 4 = 1,152 walks that never fail, panic or
/// cancel by themselves.
fn steady() -> WalkOrder<Ledger, impl combtest::Entries<Ledger>> {
    WalkOrder::new().then::<Open>().then::<Post>().then::<Hold>().serial::<Rate>().then::<Settle>()
}

/// `steady-serial-first`: the same walks with the rate change first, so a
/// walk starts and ends in one epoch and holds no state between epochs (a
/// sampled round's batches are then windows into the sample).
fn steady_serial_first() -> WalkOrder<Ledger, impl combtest::Entries<Ledger>> {
    WalkOrder::new().serial::<Rate>().then::<Open>().then::<Post>().then::<Hold>().then::<Settle>()
}

// ---------------------------------------------------------------------------
// The campaign.

/// The combtest-node commands: a first argument among them runs the CLI.
const COMMANDS: &[&str] = &["list", "run", "serve", "soak", "show", "replay", "config", "help"];

/// A fault campaign against a soak on three local nodes.
#[derive(Debug, Parser)]
#[command(name = "nemesis")]
struct Args {
    /// Minutes of faults (the soak's duration).
    #[arg(long, required_unless_present = "seconds", conflicts_with = "seconds")]
    minutes: Option<u64>,
    /// The duration in seconds (for CI).
    #[arg(long, hide = true)]
    seconds: Option<u64>,
    /// The nemesis's seed [default: random, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the temp dir (logs, walks.jsonl) even when the campaign passes.
    #[arg(long)]
    keep: bool,
    /// Sampled rounds: each round runs K of the suite's 1,152 walks, drawn
    /// from a seed the nemesis's seed gives (the check redraws them).
    #[arg(long, value_name = "K")]
    sample: Option<u64>,
    /// Run the suite with its serial action first (`steady-serial-first`):
    /// no walk state is held between epochs, and a sampled round's batches
    /// are windows into its sample.
    #[arg(long)]
    serial_first: bool,
}

fn main() -> ExitCode {
    let first = std::env::args().nth(1).unwrap_or_default();
    if COMMANDS.contains(&first.as_str()) {
        let mut suites = builtin();
        suites.push(suite(
            "steady",
            "1,152 walks of about 2 ms around a serial rate change; none fails by itself",
            steady(),
            || Ok(Fixture::new(Ledger::default()).with(RateSteps::default())),
        ));
        suites.push(suite(
            "steady-serial-first",
            "steady's 1,152 walks with the rate change first: no state held between epochs",
            steady_serial_first(),
            || Ok(Fixture::new(Ledger::default()).with(RateSteps::default())),
        ));
        return combtest::cli::main(suites);
    }
    let args = Args::parse();
    match campaign(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("nemesis: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Runs the campaign; true if it passed.
fn campaign(args: &Args) -> anyhow::Result<bool> {
    let seconds = args.seconds.unwrap_or_else(|| args.minutes.unwrap_or(0) * 60);
    anyhow::ensure!(seconds > 0, "the duration must be at least a second");
    let duration = Duration::from_secs(seconds);
    let seed = args.seed.unwrap_or_else(rand::random);
    let size = steady().size()?;
    anyhow::ensure!(steady_serial_first().size()? == size, "both orders have the same walks");
    let suite_name = if args.serial_first { "steady-serial-first" } else { "steady" };
    // Ctrl-C and SIGTERM end the campaign, not the processes it holds
    // stopped: it continues and kills them first.
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let temp = tempfile::Builder::new().prefix("nemesis-").tempdir()?;
    let dir = temp.path().to_path_buf();
    let logs = dir.join("logs");
    println!("nemesis: seed {seed}, {} of faults; files in {}", humantime(duration), dir.display());

    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["soak", "--suite", suite_name, "--local-nodes", "3"])
        .args(["--duration", &format!("{seconds}s"), "--json"])
        .arg("--log-dir")
        .arg(&logs)
        .args(["--heartbeat-timeout", "1s", "--max-restarts", "1000", "--stats-every", "10s"]);
    // The soak's own seed: sampled rounds draw from it.
    let soak_seed = combtest::model::sample::round_seed(seed, u64::MAX);
    if let Some(count) = args.sample {
        anyhow::ensure!(count > 0, "--sample must be at least 1");
        command.args(["--sample", &count.to_string(), "--seed", &soak_seed.to_string()]);
    }
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COMBTEST_") {
            command.env_remove(name);
        }
    }
    command
        .env("COMBTEST_COOKIE_FILE", dir.join("cookie"))
        .env("COMBTEST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("coordinator.json"))?)
        .stderr(std::fs::File::create(dir.join("coordinator.log"))?);
    // Its own process group: a Ctrl-C at the terminal is the campaign's to
    // handle (it may hold the coordinator stopped).
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn()?;
    let started = Instant::now();
    let coordinator = procs::find(child.id())
        .ok_or_else(|| anyhow::anyhow!("the coordinator (pid {}) vanished", child.id()))?;
    println!("nemesis: coordinator pid {}", coordinator.pid);
    let shared = Arc::new(Shared {
        started,
        coordinator,
        seen: Mutex::default(),
        exited: AtomicBool::new(false),
        interrupted: AtomicBool::new(false),
        logs,
    });

    // The coordinator's exit: watched here; everyone else stops on it.
    let watcher = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            loop {
                if INTERRUPTED.load(Ordering::SeqCst) {
                    shared.interrupted.store(true, Ordering::SeqCst);
                }
                // Bounded: the duration, the stop grace (30 s), the close.
                let bound = duration + Duration::from_secs(120);
                if shared.interrupted.load(Ordering::SeqCst) || started.elapsed() > bound {
                    // Not reaped yet: its pid is still ours to kill.
                    let target = procs::Target::coordinator(&shared.coordinator);
                    faults::kill_all(&shared, target.as_ref());
                    let status = child.wait().ok();
                    shared.exited.store(true, Ordering::SeqCst);
                    return (status.and_then(|s| s.code()), started.elapsed(), false);
                }
                if let Ok(Some(status)) = child.try_wait() {
                    shared.exited.store(true, Ordering::SeqCst);
                    return (status.code(), started.elapsed(), true);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let walking = faults::wait_for_walks(&shared, Duration::from_secs(60));
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop_sampling));
        std::thread::spawn(move || faults::sample(&shared, Duration::from_secs(2), &stop))
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let log = if walking { faults::nemesis(&shared, &mut rng, duration) } else { Vec::new() };
    let faults_until = started.elapsed().min(duration);
    let (exit, exited_at, by_itself) = watcher.join().expect("the watcher does not panic");
    stop_sampling.store(true, Ordering::SeqCst);
    let samples = sampler.join().expect("the sampler does not panic");
    // The nodes die with their coordinator (their stdin lifeline); any that
    // did not are killed now.
    faults::kill_all(&shared, None);

    let stdout = std::fs::read_to_string(dir.join("coordinator.json")).unwrap_or_default();
    let (mut violations, figures) = check::check(&check::Seen {
        size,
        stdout: &stdout,
        exit: if by_itself { exit } else { None },
        faults: &log,
        samples: &samples,
        sample: args.sample.map(|count| (count, soak_seed)),
        faults_until,
        exited_at,
    });
    if !walking {
        violations.insert(0, "the soak recorded no walk within 60 s of its start".to_string());
    }
    if shared.interrupted.load(Ordering::SeqCst) {
        violations.insert(0, "the campaign was interrupted".to_string());
    } else if !by_itself {
        violations.insert(
            0,
            format!(
                "the coordinator had not exited {}s after its duration: killed (a hang)",
                (exited_at.saturating_sub(duration)).as_secs()
            ),
        );
    }
    summary(seed, duration, &figures, &violations);
    let passed = violations.is_empty();
    if passed && !args.keep {
        temp.close()?;
    } else {
        let kept = temp.keep();
        println!("nemesis: kept {} (coordinator.log, coordinator.json, logs/)", kept.display());
    }
    Ok(passed)
}

fn humantime(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs.is_multiple_of(60) { format!("{} min", secs / 60) } else { format!("{secs} s") }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn rss_line(what: &str, rss: &check::Rss) -> String {
    let slope =
        rss.slope.map_or("n/a (under a minute)".to_string(), |s| format!("{s:+.1} KiB/min"));
    format!(
        "rss {what}: start {}, end {}, max {}, slope after the first minute {slope}",
        mib(rss.start),
        mib(rss.end),
        mib(rss.max)
    )
}

/// Prints the result summary.
fn summary(seed: u64, duration: Duration, f: &check::Figures, violations: &[String]) {
    println!("nemesis: result");
    println!("seed {seed}, {} of faults", humantime(duration));
    let done: u64 = f.faults.iter().filter(|(k, _)| **k != Kind::Nothing).map(|(_, n)| n).sum();
    let by_kind: Vec<String> = f
        .faults
        .iter()
        .filter(|(k, _)| **k != Kind::Nothing)
        .map(|(k, n)| format!("{} {n}", k.label()))
        .collect();
    println!(
        "faults {done} ({}); nothing {} (of which {} drawn on a node not up); survived {} of {done}",
        by_kind.join(", "),
        f.faults.get(&Kind::Nothing).copied().unwrap_or(0),
        f.skipped,
        f.survived
    );
    println!(
        "rounds {} full{}; nodes lost {}",
        f.rounds,
        if f.cut_round { " + 1 cut by the duration" } else { "" },
        f.nodes_lost
    );
    println!(
        "walks accounted once {}: lines {} (passed {}, failed {}), aborted {}, not run {}",
        f.accounted,
        f.lines,
        f.passed,
        f.lines - f.passed,
        f.aborted,
        f.not_run
    );
    for (reason, (walks, groups)) in &f.aborted_by_reason {
        println!("  aborted {walks} in {groups} groups: {reason}");
    }
    println!(
        "failed with evidence {} (every named pid killed or stopped by the nemesis)",
        f.failed_with_evidence
    );
    println!("{}", rss_line("coordinator", &f.coordinator_rss));
    println!(
        "{} (mean over nodes; slope within each node process)",
        rss_line("nodes", &f.nodes_rss)
    );
    println!(
        "longest stall {:.1}s; ending {:?}; exit code {}",
        f.longest_stall.as_secs_f64(),
        f.ending,
        f.exit.map_or("none".to_string(), |c| c.to_string())
    );
    if let Some(dir) = &f.soak_dir {
        println!("soak directory {}", dir.display());
    }
    if violations.is_empty() {
        println!("nemesis: PASS");
    } else {
        for v in violations {
            println!("VIOLATION: {v}");
        }
        println!("nemesis: FAIL ({} violations)", violations.len());
    }
}
