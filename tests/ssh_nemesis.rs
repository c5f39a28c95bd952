//! A seeded fault campaign against nodes started over SSH (issue 18): a
//! real sshd on 127.0.0.1 (`common::sshd`), a `soak --ssh h1,h2,h3` of the
//! nemesis example's `steady` suite (1,152 walks of about 2 ms that never
//! fail by themselves), and, while it runs, a nemesis (ChaCha8 from
//! `SSH_NEMESIS_SEED`, default 18, printed first) that every 0.3-2 s
//! SIGKILLs a node's ssh client (the coordinator's child `ssh ... hN --
//! ... serve`), SIGKILLs a remote node (sshd's descendant running `serve
//! --name hN`), SIGSTOPs a remote node for 0.5-3 s, does two of these less
//! than 200 ms apart, or does nothing. Each fault is printed (the kill
//! log). Processes are looked up in `/proc` each time (a restarted node has
//! new pids) and signalled only while they are still the process found
//! (pid and start time), and only below the coordinator or the sshd.
//!
//! Then the soak's report and `walks.jsonl` are checked with the rules of
//! `examples/nemesis/check.rs`: every (round, walk) accounted for exactly
//! once across the trace's walks and the report's aborted and unrun
//! ranges (unrun only in the round the duration cut), the totals agree, no
//! walk failed but "its node was lost while running it alone" naming an
//! ssh client of a host the nemesis hit, the soak ended on its duration
//! with the documented exit code, `soak.json` is the printed report, a
//! node was lost and restarted, and every node and ssh client seen is gone
//! once the coordinator has exited. Whatever happens, every process seen
//! is continued and killed by pid (`Reaper`), then sshd.
//!
//! 20 s of faults by default; `SSH_NEMESIS_SECS=300` for a long run. Needs
//! root and sshd; skips with a message elsewhere.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::{RngExt as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

mod common;
#[path = "../examples/nemesis/named.rs"]
mod named;
use common::example;
use common::procs::{descendants, json, signal_if, start, start_time};
use common::sshd::{Hosts, cmdline, node_name, ssh_clients};

/// The hosts: three aliases of the one sshd.
const HOSTS: [&str; 3] = ["h1", "h2", "h3"];
/// Walks per round of `steady` (6 x 4 x 4 x 3 x 4).
const STEADY: u64 = 1152;
/// The default seed and seconds of faults.
const SEED: u64 = 18;
const SECONDS: u64 = 20;

/// `name` from the environment as a number, else `default`.
fn setting(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("{name}={text}: not a number")),
        Err(_) => default,
    }
}

/// One process as found: its pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Found {
    pid: u32,
    start: u64,
}

fn found(pid: u32) -> Option<Found> {
    Some(Found { pid, start: start_time(pid)? })
}

impl Found {
    fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }

    fn signal(&self, name: &str) -> bool {
        signal_if(self.pid, self.start, name)
    }
}

/// Every process found below the coordinator and the sshd (ssh clients,
/// sshd sessions, nodes): continued and killed by pid when dropped, if each
/// is still the process found, even when the test fails.
struct Reaper {
    roots: Vec<u32>,
    seen: Mutex<HashSet<Found>>,
}

impl Reaper {
    /// Notes the processes below the roots now.
    fn sweep(&self) {
        let below = self.roots.iter().flat_map(|&root| descendants(root));
        let found: Vec<Found> = below.filter_map(found).collect();
        self.seen.lock().unwrap().extend(found);
    }

    /// The node and ssh-client processes seen that still run.
    fn left(&self) -> Vec<(u32, Vec<String>)> {
        let seen = self.seen.lock().unwrap().clone();
        seen.into_iter()
            .filter(Found::alive)
            .map(|f| (f.pid, cmdline(f.pid)))
            .filter(|(_, args)| {
                args.first().is_some_and(|a| a == "ssh")
                    || args.get(1).is_some_and(|a| a == "serve")
            })
            .collect()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.sweep();
        for f in self.seen.lock().unwrap().iter() {
            f.signal("CONT");
            f.signal("KILL");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    /// SIGKILL the host's ssh client.
    KillClient,
    /// SIGKILL the host's remote node.
    KillNode,
    /// SIGSTOP the host's remote node, SIGCONT it later.
    StopNode,
    Nothing,
}

/// One entry of the kill log.
#[derive(Debug, Clone)]
struct Fault {
    /// Since the coordinator started.
    at: Duration,
    kind: Kind,
    host: &'static str,
    /// The host's ssh client and node when the fault was done.
    client: Option<u32>,
    node: Option<u32>,
    held: Option<Duration>,
    /// The second of two faults less than 200 ms apart.
    second: bool,
    /// Why it was not done (the process was not up).
    missed: Option<&'static str>,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:8.3}s {:?} {}", self.at.as_secs_f64(), self.kind, self.host)?;
        if let Some(pid) = self.client {
            write!(f, " client {pid}")?;
        }
        if let Some(pid) = self.node {
            write!(f, " node {pid}")?;
        }
        if let Some(held) = self.held {
            write!(f, " for {:.2}s", held.as_secs_f64())?;
        }
        if self.second {
            write!(f, " (right after)")?;
        }
        if let Some(why) = self.missed {
            write!(f, " (not done: {why})")?;
        }
        Ok(())
    }
}

/// The nemesis: its random draws, what it holds stopped, its log.
struct Nemesis<'a> {
    rng: ChaCha8Rng,
    coordinator: u32,
    sshd: u32,
    reaper: &'a Reaper,
    started: Instant,
    until: Duration,
    /// Set once the coordinator has exited.
    ended: &'a AtomicBool,
    held: Vec<(Found, Instant)>,
    log: Vec<Fault>,
}

impl Nemesis<'_> {
    fn going(&self) -> bool {
        !self.ended.load(Ordering::SeqCst) && self.started.elapsed() < self.until
    }

    /// Continues the nodes whose time is up (all with `all`).
    fn release(&mut self, all: bool) {
        let now = Instant::now();
        self.held.retain(|(node, until)| {
            let keep = !all && *until > now;
            if !keep {
                node.signal("CONT");
            }
            keep
        });
    }

    /// Waits `length` in small steps, continuing nodes on time; false once
    /// the run is over.
    fn pause(&mut self, length: Duration) -> bool {
        let until = Instant::now() + length;
        while Instant::now() < until && self.going() {
            self.release(false);
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(10)));
        }
        self.release(false);
        self.going()
    }

    /// `host`'s ssh client and its newest remote node now.
    fn targets(&self, host: &str) -> (Option<Found>, Option<Found>) {
        self.reaper.sweep();
        let client = ssh_clients(self.coordinator, host).into_iter().find_map(found);
        let node = descendants(self.sshd)
            .into_iter()
            .filter(|&p| {
                cmdline(p).get(1).is_some_and(|w| w == "serve")
                    && node_name(p).as_deref() == Some(host)
            })
            .filter_map(found)
            .filter(|n| !self.held.iter().any(|(h, _)| h == n))
            .max_by_key(|n| n.start);
        (client, node)
    }

    /// Does `kind` to a host: the first, from a random one on, whose
    /// process it hits is up (a host is down while its node restarts);
    /// logs and prints it.
    fn strike(&mut self, kind: Kind, second: bool) {
        let first = self.rng.random_range(0..HOSTS.len());
        let hold = Duration::from_millis(self.rng.random_range(500..=3000));
        let at = self.started.elapsed();
        let hosts = (0..HOSTS.len()).map(|i| HOSTS[(first + i) % HOSTS.len()]);
        let candidates: Vec<_> = hosts.map(|h| (h, self.targets(h))).collect();
        let up = |(_, (client, node)): &&(&str, (Option<Found>, Option<Found>))| match kind {
            Kind::KillClient => client.is_some(),
            Kind::KillNode | Kind::StopNode => node.is_some(),
            Kind::Nothing => true,
        };
        let (host, (client, node)) = *candidates.iter().find(up).unwrap_or(&candidates[0]);
        let mut fault = Fault {
            at,
            kind,
            host,
            client: client.map(|c| c.pid),
            node: node.map(|n| n.pid),
            held: None,
            second,
            missed: None,
        };
        let done = match kind {
            Kind::KillClient => client.is_some_and(|c| c.signal("KILL")),
            Kind::KillNode => node.is_some_and(|n| n.signal("KILL")),
            Kind::StopNode => {
                let stopped = node.is_some_and(|n| n.signal("STOP"));
                if let (true, Some(node)) = (stopped, node) {
                    self.held.push((node, Instant::now() + hold));
                    fault.held = Some(hold);
                }
                stopped
            }
            Kind::Nothing => true,
        };
        if !done {
            fault.missed = Some(if kind == Kind::KillClient { "no client" } else { "no node" });
        }
        println!("fault {fault}");
        self.log.push(fault);
    }

    /// The faults, until the duration is up or the coordinator exits.
    fn run(&mut self, walks: impl Fn() -> bool) {
        // Faults begin once walks are recorded (at most a minute).
        while !walks() {
            if !self.pause(Duration::from_millis(50)) || self.started.elapsed().as_secs() > 60 {
                return;
            }
        }
        let singles = [Kind::KillClient, Kind::KillNode, Kind::StopNode];
        loop {
            let wait = Duration::from_millis(self.rng.random_range(300..=2000));
            if !self.pause(wait) {
                break;
            }
            match self.rng.random_range(0..5) {
                0 => self.strike(Kind::Nothing, false),
                draw @ 1..=3 => self.strike(singles[draw - 1], false),
                _ => {
                    let first = singles[self.rng.random_range(0..3)];
                    let second = singles[self.rng.random_range(0..3)];
                    let gap = Duration::from_millis(self.rng.random_range(0..200));
                    self.strike(first, false);
                    std::thread::sleep(gap);
                    self.strike(second, true);
                }
            }
        }
        self.release(true);
    }
}

/// `DIR/soak-*/walks.jsonl`, once the coordinator has created it.
fn walks_file(logs: &Path) -> Option<PathBuf> {
    let dir = std::fs::read_dir(logs)
        .ok()?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("soak-")))?;
    Some(dir.path().join("walks.jsonl"))
}

/// Whether a failure is a node lost while running the walk alone, naming
/// only ssh clients of hosts the nemesis hit (as those hosts' clients).
fn evidence(error: &str, log: &[Fault]) -> Result<(), String> {
    named::evidence(error, |name, pid| {
        log.iter().any(|f| {
            f.kind != Kind::Nothing && f.missed.is_none() && f.host == name && f.client == Some(pid)
        })
    })
}

/// The figures of the run, for the summary.
#[derive(Debug, Default)]
struct Figures {
    rounds: u64,
    cut: bool,
    walks: u64,
    passed: u64,
    failed: u64,
    aborted: u64,
    not_run: u64,
    nodes_lost: u64,
    restarts: usize,
}

/// The checks of the report, `soak.json` and `walks.jsonl`; the violations.
fn check(
    code: Option<i32>,
    out: &str,
    err: &str,
    log: &[Fault],
    figures: &mut Figures,
) -> Vec<String> {
    let mut violations = Vec::new();
    let report = json(out);
    let number = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let totals = &report["totals"];
    let total = |name: &str| number(&totals[name]);
    figures.nodes_lost = total("nodes_lost");
    figures.restarts = err.matches("restarting a lost node").count();
    if report["ending"] != "duration" {
        violations.push(format!(
            "the soak ended by {} ({}), not by its duration",
            report["ending"], report["ending_reason"]
        ));
    }
    let expected = if total("failed") == 0 && total("aborted") == 0 { 0 } else { 1 };
    if code != Some(expected) {
        violations.push(format!("exit code {code:?}, documented {expected} for this report"));
    }
    if figures.nodes_lost == 0 || figures.restarts == 0 {
        violations.push(format!(
            "{} nodes lost and {} restarts: the faults did not take",
            figures.nodes_lost, figures.restarts
        ));
    }
    if number(&report["groups_dropped"]) > 0 {
        violations.push("the report dropped groups: they cannot be accounted".to_string());
    }
    let Some(dir) = report["dir"].as_str().map(PathBuf::from) else {
        violations.push("the report names no soak directory".to_string());
        return violations;
    };
    match std::fs::read_to_string(dir.join("soak.json")) {
        Ok(text)
            if serde_json::from_str::<serde_json::Value>(&text).ok() == Some(report.clone()) => {}
        _ => violations.push("soak.json is not the report printed".to_string()),
    }

    // Accounting: every (round, walk) of the full rounds and the cut one.
    let cut = total("interrupted_rounds");
    if cut > 1 {
        violations.push(format!("{cut} rounds were cut short; at most 1 may be"));
    }
    figures.rounds = total("rounds");
    figures.cut = cut > 0;
    let rounds = figures.rounds + cut.min(1);
    let mut counts: HashMap<(u64, u64), [u32; 3]> = HashMap::new();
    let mut outside = 0;
    let mut count = |source: usize, round: u64, walk: u64| {
        if round >= rounds || walk >= STEADY {
            outside += 1;
        } else {
            counts.entry((round, walk)).or_default()[source] += 1;
        }
    };
    match combtest::trace::read_soak(dir.join("walks.jsonl")) {
        Err(e) => violations.push(format!("walks.jsonl: {e}")),
        Ok(trace) => {
            if let Some(torn) = &trace.torn_tail {
                violations.push(format!("{torn}: the coordinator was never killed"));
            }
            if let Some((round, n)) = trace.walks.unlisted.first() {
                violations.push(format!("round {round}'s {n} passing walks cannot be listed"));
            }
            for walk in &trace.walks.walks {
                count(0, walk.round, walk.walk_id);
                let outcome = serde_json::to_value(walk.outcome).unwrap_or_default();
                match outcome.as_str().unwrap_or("?") {
                    "passed" => figures.passed += 1,
                    "failed" => {
                        figures.failed += 1;
                        let error = walk.error.clone().unwrap_or_default();
                        if let Err(why) = evidence(&error, log) {
                            violations.push(format!(
                                "round {} walk {} failed without evidence ({why}): {error}",
                                walk.round, walk.walk_id
                            ));
                        }
                    }
                    other => violations.push(format!(
                        "round {} walk {} ended {other}: steady never does by itself",
                        walk.round, walk.walk_id
                    )),
                }
            }
        }
    }
    for (source, key) in [(1, "aborted"), (2, "not_run")] {
        for group in report[key].as_array().into_iter().flatten() {
            let round = number(&group["round"]);
            if source == 1 && group["reason"].as_str().unwrap_or("").trim().is_empty() {
                violations.push(format!("round {round}: walks aborted without a reason"));
            }
            if source == 2 && !(figures.cut && round == figures.rounds) {
                violations.push(format!("round {round}: walks not run in a round not cut"));
            }
            for range in group["walks"].as_array().into_iter().flatten() {
                for walk in number(&range["start"])..number(&range["end"]) {
                    count(source, round, walk);
                    *[&mut figures.aborted, &mut figures.not_run][source - 1] += 1;
                }
            }
        }
    }
    if outside > 0 {
        violations.push(format!("{outside} walks counted outside the {rounds} rounds"));
    }
    let mut wrong = 0;
    for round in 0..rounds {
        for walk in 0..STEADY {
            let [l, a, n] = counts.get(&(round, walk)).copied().unwrap_or_default();
            if l + a + n != 1 {
                wrong += 1;
                if wrong <= 10 {
                    violations.push(format!(
                        "round {round} walk {walk}: counted {} times (trace {l}, aborted {a}, \
                         not run {n})",
                        l + a + n
                    ));
                }
            }
        }
    }
    if wrong > 10 {
        violations.push(format!("{wrong} (round, walk) pairs in all are not counted once"));
    }
    figures.walks = rounds * STEADY;
    for (name, counted) in [
        ("walks", figures.walks),
        ("passed", figures.passed),
        ("failed", figures.failed),
        ("aborted", figures.aborted),
        ("not_run", figures.not_run),
        ("cancelled", 0),
        ("pruned", 0),
    ] {
        if total(name) != counted {
            violations
                .push(format!("totals.{name} is {}, but {counted} were counted", total(name)));
        }
    }
    violations
}

#[test]
fn a_soak_on_ssh_nodes_under_a_seeded_nemesis_accounts_for_every_walk() {
    let seed = setting("SSH_NEMESIS_SEED", SEED);
    let seconds = setting("SSH_NEMESIS_SECS", SECONDS).max(1);
    println!(
        "ssh nemesis: seed {seed}, {seconds} s of faults (SSH_NEMESIS_SEED, SSH_NEMESIS_SECS)"
    );
    let aliases: Vec<(&str, &str)> = HOSTS.iter().map(|&h| (h, "id")).collect();
    let Some(hosts) = Hosts::start(&aliases) else { return };
    let logs = tempfile::tempdir().unwrap();
    let mut command = Command::new(example("nemesis"));
    command
        .args(["soak", "--suite", "steady", "--ssh", &HOSTS.join(",")])
        .args(["--duration", &format!("{seconds}s"), "--json", "--threads", "2"])
        .arg("--log-dir")
        .arg(logs.path())
        .args(["--heartbeat-timeout", "1s", "--max-restarts", "1000", "--stats-every", "10s"])
        .env("COMBTEST_SSH_OPTIONS", hosts.options());
    let coordinator = start(command);
    let started = Instant::now();
    let reaper = Reaper { roots: vec![coordinator.pid, hosts.sshd.pid()], seen: Mutex::default() };
    let ended = AtomicBool::new(false);
    let mut nemesis = Nemesis {
        rng: ChaCha8Rng::seed_from_u64(seed),
        coordinator: coordinator.pid,
        sshd: hosts.sshd.pid(),
        reaper: &reaper,
        started,
        until: Duration::from_secs(seconds),
        ended: &ended,
        held: Vec::new(),
        log: Vec::new(),
    };
    // The coordinator is waited for here (its duration, the stop grace,
    // the close); the nemesis runs beside it.
    let bound = Duration::from_secs(seconds + 150);
    let (code, out, err) = std::thread::scope(|scope| {
        let faults = scope.spawn(|| {
            let walks = || {
                walks_file(logs.path())
                    .and_then(|p| std::fs::metadata(p).ok())
                    .is_some_and(|m| m.len() > 0)
            };
            nemesis.run(walks);
        });
        let result = coordinator.finish_within(bound);
        ended.store(true, Ordering::SeqCst);
        faults.join().expect("the nemesis does not panic");
        result
    });
    let log = &nemesis.log;
    let mut figures = Figures::default();
    let mut violations = check(code, &out, &err, log, &mut figures);

    // The coordinator has exited: its ssh sessions ended, so every node and
    // client seen ends (bounded); the reaper kills any that does not.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reaper.left().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = reaper.left();
    if !left.is_empty() {
        violations.push(format!("processes left 30 s after the coordinator exited: {left:?}"));
    }

    let mut kinds: BTreeMap<Kind, usize> = BTreeMap::new();
    for fault in log.iter().filter(|f| f.missed.is_none()) {
        *kinds.entry(fault.kind).or_default() += 1;
    }
    let done = log.iter().filter(|f| f.kind != Kind::Nothing && f.missed.is_none()).count();
    let doubles = log.iter().filter(|f| f.second).count();
    let missed = log.iter().filter(|f| f.missed.is_some()).count();
    let f = &figures;
    println!(
        "ssh nemesis: seed {seed}, {seconds} s; faults {done} {kinds:?} (doubles {doubles}, not done {missed})"
    );
    println!(
        "ssh nemesis: rounds {}{}, walks {} (passed {}, failed {}, aborted {}, not run {}); nodes \
         lost {}, restarts {}; ran {:.1} s",
        f.rounds,
        if f.cut { " + 1 cut" } else { "" },
        f.walks,
        f.passed,
        f.failed,
        f.aborted,
        f.not_run,
        f.nodes_lost,
        f.restarts,
        started.elapsed().as_secs_f64()
    );
    assert!(done > 0, "the nemesis did no fault (seed {seed})");
    if !violations.is_empty() {
        // Kept for a post-mortem: the soak's directory and the
        // coordinator's stderr (its nodes' lines too).
        let _ = std::fs::write(logs.path().join("coordinator.log"), &err);
        violations.push(format!("kept {} (coordinator.log, soak-*/)", logs.keep().display()));
    }
    assert!(
        violations.is_empty(),
        "seed {seed}: {} violations:\n{}\n--- coordinator stderr (tail) ---\n{}",
        violations.len(),
        violations.join("\n"),
        err.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("ssh nemesis: PASS");
}
