//! The nemesis: a seeded loop of faults against the coordinator and its
//! nodes, and the kill log it keeps; and the sampler of memory and
//! progress that runs beside it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::RngExt as _;
use rand_chacha::ChaCha8Rng;

use crate::procs::{self, Node, Proc, Target};

/// Nodes the soak runs (`--local-nodes`).
pub const NODES: u32 = 3;

/// What a fault did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// SIGKILL a node.
    KillNode,
    /// SIGSTOP a node, SIGCONT it later.
    StopNode,
    /// SIGSTOP the coordinator, SIGCONT it later.
    StopCoordinator,
    /// Nothing this time (also when the node drawn was not up).
    Nothing,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::KillNode => "kill node",
            Kind::StopNode => "stop node",
            Kind::StopCoordinator => "stop coordinator",
            Kind::Nothing => "nothing",
        }
    }
}

/// One entry of the kill log.
#[derive(Debug, Clone)]
pub struct Fault {
    /// When it began, since the coordinator started.
    pub at: Duration,
    pub kind: Kind,
    /// `coordinator` or the node's name (`local-1`); empty for nothing.
    pub target: String,
    pub pid: Option<u32>,
    /// How long the target was held stopped.
    pub held: Option<Duration>,
    /// When it was over (the SIGCONT, or the signal), since the start.
    pub ended: Duration,
    /// Why nothing was done, when a fault was drawn but could not be.
    pub note: Option<String>,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = format!("{:9.3}s  {:<16}", self.at.as_secs_f64(), self.kind.label());
        if !self.target.is_empty() {
            text += &format!("  {}", self.target);
        }
        if let Some(pid) = self.pid {
            text += &format!(" pid {pid}");
        }
        if let Some(held) = self.held {
            text += &format!(" for {:.2}s", held.as_secs_f64());
        }
        if let Some(note) = &self.note {
            text += &format!("  ({note})");
        }
        f.write_str(text.trim_end())
    }
}

/// A process the nemesis holds stopped: continued when dropped, so that
/// nothing it stopped stays stopped, even on a panic.
struct Held(Target);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.signal(libc::SIGCONT);
    }
}

/// Everything the campaign shares between the nemesis, the sampler and
/// the end.
pub struct Shared {
    pub started: Instant,
    pub coordinator: Proc,
    /// Every node process seen under the coordinator (for the cleanup).
    pub seen: Mutex<HashSet<Node>>,
    /// Set when the coordinator has exited (and is reaped: its pid is no
    /// longer ours to signal).
    pub exited: AtomicBool,
    /// Set on Ctrl-C (or SIGTERM) of the campaign.
    pub interrupted: AtomicBool,
    /// The soak's log directory (`--log-dir`).
    pub logs: PathBuf,
}

impl Shared {
    /// The nodes under the coordinator now (and remembers them).
    pub fn nodes(&self) -> Vec<Node> {
        let nodes = procs::nodes(&self.coordinator);
        self.seen.lock().unwrap().extend(nodes.iter().cloned());
        nodes
    }

    /// Whether to go on: the coordinator runs and no one interrupted.
    fn going(&self) -> bool {
        !self.exited.load(Ordering::SeqCst) && !self.interrupted.load(Ordering::SeqCst)
    }

    /// Sleeps `length`, in small steps, while going; false if it stopped.
    fn pause(&self, length: Duration) -> bool {
        let until = Instant::now() + length;
        while Instant::now() < until {
            if !self.going() {
                return false;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(20)));
        }
        self.going()
    }

    /// `DIR/soak-*/walks.jsonl`, once the coordinator has created it.
    pub fn walks_file(&self) -> Option<PathBuf> {
        let dir = std::fs::read_dir(&self.logs)
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("soak-")))?;
        Some(dir.path().join("walks.jsonl"))
    }
}

fn size_of(path: Option<&Path>) -> u64 {
    path.and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len())
}

/// Injects faults until `until` (since the start) or the coordinator exits:
/// every 0.3–3 s one of a node SIGKILLed, a node SIGSTOPped for 0.5–4 s, the
/// coordinator SIGSTOPped for 1–4 s, or nothing. Each fault is printed as it
/// is done and returned in the kill log.
pub fn nemesis(shared: &Shared, rng: &mut ChaCha8Rng, until: Duration) -> Vec<Fault> {
    let mut log = Vec::new();
    let coordinator = Target::coordinator(&shared.coordinator);
    loop {
        let gap = Duration::from_millis(rng.random_range(300..=3000));
        let draw = rng.random_range(0..100u32);
        // Drawn every time, whatever the fault, so the same seed gives the
        // same sequence of draws.
        let node = format!("local-{}", rng.random_range(0..NODES));
        let held = Duration::from_millis(rng.random_range(500..=4000));
        let coordinator_held = Duration::from_millis(rng.random_range(1000..=4000));
        if !shared.pause(gap) || shared.started.elapsed() >= until {
            break;
        }
        let at = shared.started.elapsed();
        let mut fault = Fault {
            at,
            kind: Kind::Nothing,
            target: String::new(),
            pid: None,
            held: None,
            ended: at,
            note: None,
        };
        let kind = match draw {
            0..30 => Kind::KillNode,
            30..60 => Kind::StopNode,
            60..75 => Kind::StopCoordinator,
            _ => Kind::Nothing,
        };
        match kind {
            Kind::KillNode | Kind::StopNode => {
                let found = shared.nodes().into_iter().find(|n| n.name == node);
                let target = found.as_ref().and_then(|n| Target::node(n, &shared.coordinator));
                match target {
                    None => fault.note = Some(format!("{} drawn, {node} not up", kind.label())),
                    Some(target) => {
                        fault.target = node;
                        fault.pid = Some(target.pid());
                        if kind == Kind::KillNode {
                            if target.signal(libc::SIGKILL) {
                                fault.kind = kind;
                            } else {
                                fault.note = Some("it exited first".to_string());
                            }
                        } else if target.signal(libc::SIGSTOP) {
                            fault.kind = kind;
                            let stopped = (Held(target), Instant::now());
                            shared.pause(held);
                            fault.held = Some(stopped.1.elapsed());
                            drop(stopped);
                        } else {
                            fault.note = Some("it exited first".to_string());
                        }
                    }
                }
            }
            Kind::StopCoordinator => {
                if let Some(target) = &coordinator
                    && shared.going()
                    && target.signal(libc::SIGSTOP)
                {
                    fault.kind = kind;
                    fault.target = "coordinator".to_string();
                    fault.pid = Some(target.pid());
                    // Wall time: the coordinator cannot exit while stopped.
                    let began = Instant::now();
                    let until = began + coordinator_held;
                    while Instant::now() < until && !shared.interrupted.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    target.signal(libc::SIGCONT);
                    fault.held = Some(began.elapsed());
                }
            }
            Kind::Nothing => {}
        }
        fault.ended = shared.started.elapsed();
        println!("fault {fault}");
        log.push(fault);
    }
    log
}

/// One sample: memory of the coordinator and of each node, and the size of
/// `walks.jsonl` (the soak's progress).
#[derive(Debug, Clone)]
pub struct Sample {
    /// Since the start.
    pub at: Duration,
    pub coordinator_kib: Option<u64>,
    /// (name, pid, KiB) of each node up.
    pub nodes: Vec<(String, u32, u64)>,
    pub walks_bytes: u64,
}

/// Every `every`, samples until `stop` is set.
pub fn sample(shared: &Shared, every: Duration, stop: &AtomicBool) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut walks = None;
    while !stop.load(Ordering::SeqCst) {
        let at = shared.started.elapsed();
        let coordinator_kib = if shared.exited.load(Ordering::SeqCst) {
            None
        } else {
            procs::rss_kib(&shared.coordinator)
        };
        let nodes = shared
            .nodes()
            .into_iter()
            .filter_map(|n| Some((n.name.clone(), n.proc.pid, procs::rss_kib(&n.proc)?)))
            .collect();
        if walks.is_none() {
            walks = shared.walks_file();
        }
        samples.push(Sample { at, coordinator_kib, nodes, walks_bytes: size_of(walks.as_deref()) });
        let next = shared.started + at + every;
        while Instant::now() < next && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    samples
}

/// Waits until the soak's first walks are recorded (the cluster is open and
/// a round runs), for at most `bound`; false if they never came.
pub fn wait_for_walks(shared: &Shared, bound: Duration) -> bool {
    let until = Instant::now() + bound;
    while Instant::now() < until && shared.going() {
        if size_of(shared.walks_file().as_deref()) > 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Kills whatever is left of the processes the campaign started: the
/// coordinator (if `coordinator` is still unreaped) and every node seen
/// under it that still runs. Continued first, in case they are stopped.
pub fn kill_all(shared: &Shared, coordinator: Option<&Target>) {
    if let Some(target) = coordinator {
        target.signal(libc::SIGCONT);
        target.signal(libc::SIGKILL);
    }
    let seen: Vec<Node> = shared.seen.lock().unwrap().iter().cloned().collect();
    for node in seen {
        if let Some(target) = Target::orphan(&node) {
            target.signal(libc::SIGCONT);
            target.signal(libc::SIGKILL);
        }
    }
}
