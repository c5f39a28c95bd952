//! NodeAgent: a `combtest-node serve` process's one remote-reachable actor.
//! It joins the process group coordinators look in, answers their requests
//! and owns the node's runs.
//!
//! - Receives `AgentMsg::Call` from coordinators (through ractor_cluster):
//!   postcard `Request`s, each answered with exactly one `Reply` (a reply
//!   port dropped unanswered would leave the coordinator's call waiting).
//!   - `Join`: a coordinator's membership; answered with who this node is
//!     (name, incarnation, pid).
//!   - `Hello`: checks the protocol, the suite and its fingerprint, the
//!     node's limits (runs open, runner threads, the lease) at once, then
//!     runs the suite's setup on a blocking thread (user code: it may be slow
//!     or panic) and answers when it is done.
//!   - `RunBatch`: queues the batch on the run's runner threads, which
//!     answer when it is done (or `NotStarted` / `Expired`, decided when a
//!     thread takes it); a result bigger than one chunk waits in the run's
//!     `pending` map for `Fetch`es.
//!   - `Ping`: renews the leases of the runs it names, answers with the ones
//!     it does not have and each run's log lines.
//!   - `StopRun`: the run starts no more batches. `EndRun`: drops the run
//!     (its states, threads and fixture).
//! - **Leases.** A run whose coordinator has not pinged it for its lease (by
//!   the wall clock: a node that was stopped must not start batches behind
//!   a serial action the coordinator has moved on to) is *suspended*: it
//!   starts no batch. A ping naming it revives it: the coordinator was
//!   paused, not gone, and has moved nowhere without this node (a
//!   coordinator that declared the node lost no longer names the run).
//! - `Sweep`, every second from itself: drops runs suspended for
//!   [`SESSION_GRACE`] and runs whose coordinator has had no session here
//!   for as long; their queued batches are answered `Expired`.
//! - Supervision: spawned by `serve`, which ends the process if it stops.
//!   Runner threads that ran a panicking action are replaced by their pool.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::cluster::NodeSuite;
use crate::cluster::logs;
use crate::cluster::node_run::{Admit, NodeAnswer, NodeRun, NodeRunSpec};
use crate::cluster::wire::{
    self, AgentMsg, BatchRequest, Coordinator, Hello, Joined, MAX_LEASE_MS, PROTOCOL_VERSION,
    Reply, Request, RunKey,
};
use crate::exec::panic_message;

/// How often the agent drops runs whose lease ran out.
const SWEEP: Duration = Duration::from_secs(1);
/// How long a run outlives its coordinator's last session on this node.
pub(crate) const SESSION_GRACE: Duration = Duration::from_secs(30);

pub(crate) struct NodeAgent;

/// What a node allows its coordinators.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Runs open at once.
    pub(crate) max_runs: usize,
    /// Runner threads over every open run.
    pub(crate) max_threads: usize,
}

pub(crate) struct AgentArgs {
    /// This node's name, as coordinators report it.
    pub(crate) name: String,
    pub(crate) suites: Arc<Vec<Box<dyn NodeSuite>>>,
    /// Runner threads per run, unless the coordinator asks otherwise.
    pub(crate) runners: usize,
    pub(crate) limits: Limits,
    /// Largest piece of a batch result per reply (`wire::CHUNK`; smaller
    /// in tests).
    pub(crate) chunk: usize,
    /// Coordinators' sessions, kept by the node's session events.
    pub(crate) sessions: Arc<Sessions>,
    /// How long a run outlives its lease, or its coordinator's last session
    /// ([`SESSION_GRACE`]; shorter in tests).
    pub(crate) grace: Duration,
}

pub(crate) struct AgentState {
    args: Arc<AgentArgs>,
    incarnation: u64,
    /// Shared with the tasks that open runs.
    runs: Arc<Mutex<HashMap<RunKey, RunEntry>>>,
    /// Runs being opened (their setup runs): not unknown to a ping.
    opening: Arc<Mutex<HashSet<RunKey>>>,
    sweep: Option<ractor::concurrency::JoinHandle<()>>,
}

struct RunEntry {
    run: Arc<dyn NodeRun>,
    coordinator: Coordinator,
    runners: usize,
    /// Encoded results still being fetched, by batch.
    pending: Arc<Mutex<HashMap<u64, Vec<u8>>>>,
    lease: Arc<Lease>,
    stopping: Arc<AtomicBool>,
    /// Set when the run is dropped: batches waiting on it give up.
    closed: Arc<AtomicBool>,
}

impl Drop for RunEntry {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// How long a run may go without hearing from its coordinator (wall
/// clock).
struct Lease {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last ping of the run.
    seen: AtomicU64,
    length: Duration,
}

impl Lease {
    fn new(length: Duration) -> Self {
        Lease { epoch: Instant::now(), seen: AtomicU64::new(0), length }
    }

    fn renew(&self) {
        self.seen.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Not pinged for the lease: suspended.
    fn expired(&self) -> bool {
        self.silent() > self.length
    }

    /// How long since the last ping.
    fn silent(&self) -> Duration {
        let seen = Duration::from_millis(self.seen.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(seen)
    }
}

/// Coordinators' sessions on this node, by coordinator id (from the
/// session's peer name, `combtest-<id>-<n>`).
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    by_coordinator: Mutex<HashMap<Coordinator, (usize, Option<Instant>)>>,
}

impl Sessions {
    /// The coordinator id in a session's peer name.
    pub(crate) fn coordinator_of(peer_name: &str) -> Option<Coordinator> {
        let rest = peer_name.strip_prefix("combtest-")?;
        let hex = rest.split('-').next()?;
        Coordinator::from_str_radix(hex, 16).ok()
    }

    pub(crate) fn up(&self, coordinator: Coordinator) {
        let mut map = self.by_coordinator.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(coordinator).or_insert((0, None));
        entry.0 += 1;
        entry.1 = None;
    }

    pub(crate) fn down(&self, coordinator: Coordinator) {
        let mut map = self.by_coordinator.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = map.get_mut(&coordinator) {
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 == 0 {
                entry.1 = Some(Instant::now());
            }
        }
    }

    /// Whether the coordinator had sessions here and has had none for
    /// `grace`.
    fn gone(&self, coordinator: Coordinator, grace: Duration) -> bool {
        let map = self.by_coordinator.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&coordinator).and_then(|entry| entry.1).is_some_and(|since| since.elapsed() > grace)
    }
}

impl Actor for NodeAgent {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: AgentArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(wire::AGENT_GROUP.to_string(), vec![myself.get_cell()]);
        let sweep = myself.send_interval(SWEEP, || AgentMsg::Sweep);
        Ok(AgentState {
            args: Arc::new(args),
            incarnation: rand::random(),
            runs: Arc::new(Mutex::new(HashMap::new())),
            opening: Arc::new(Mutex::new(HashSet::new())),
            sweep: Some(sweep),
        })
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(sweep) = state.sweep.take() {
            sweep.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMsg::Call(bytes, reply) => state.serve(&bytes, reply),
            AgentMsg::Sweep => state.sweep(),
        }
        Ok(())
    }
}

/// Answers `reply` with `answer`; the coordinator may be gone already.
fn answer(reply: RpcReplyPort<Vec<u8>>, answer: &Reply) {
    let _ = reply.send(wire::encode(answer));
}

impl AgentState {
    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<RunKey, RunEntry>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn serve(&mut self, bytes: &[u8], reply: RpcReplyPort<Vec<u8>>) {
        let request = match wire::decode::<Request>(bytes, "request") {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, "refusing a malformed request");
                return answer(reply, &Reply::Error(error));
            }
        };
        match request {
            Request::Join { protocol, coordinator } => {
                if protocol != PROTOCOL_VERSION {
                    let reason = format!(
                        "protocol version mismatch: the coordinator speaks {protocol}, node {} \
                         speaks {PROTOCOL_VERSION}",
                        self.args.name
                    );
                    return answer(reply, &refuse(reason));
                }
                tracing::info!(coordinator = %short(coordinator), "coordinator joined");
                let joined = Joined {
                    node: self.args.name.clone(),
                    incarnation: self.incarnation,
                    pid: std::process::id(),
                };
                answer(reply, &Reply::Joined(joined));
            }
            Request::Hello(hello) => self.hello(hello, reply),
            Request::RunBatch(batch) => self.run_batch(batch, reply),
            Request::Fetch { run, batch, offset } => {
                let runs = self.runs();
                let Some(entry) = runs.get(&run) else {
                    return answer(reply, &unknown_run(run));
                };
                let mut pending = entry.pending.lock().unwrap_or_else(|p| p.into_inner());
                let size = self.args.chunk;
                let chunk = pending.get(&batch).map(|bytes| {
                    let from = (offset as usize).min(bytes.len());
                    let to = (from + size).min(bytes.len());
                    (bytes[from..to].to_vec(), to == bytes.len())
                });
                match chunk {
                    Some((chunk, last)) => {
                        if last {
                            pending.remove(&batch);
                        }
                        answer(reply, &Reply::Chunk(chunk));
                    }
                    None => {
                        answer(reply, &Reply::Error(format!("no pending result for batch {batch}")))
                    }
                }
            }
            Request::Ping { runs, .. } => {
                let known = self.runs();
                let opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
                let mut unknown = Vec::new();
                let mut logs = Vec::new();
                for run in runs {
                    match known.get(&run) {
                        Some(entry) => {
                            entry.lease.renew();
                            logs.extend(logs::drain(run));
                        }
                        None if opening.contains(&run) => {}
                        None => unknown.push(run),
                    }
                }
                answer(reply, &Reply::Pong { unknown, logs });
            }
            Request::StopRun { run } => match self.runs().get(&run) {
                Some(entry) => {
                    entry.stopping.store(true, Ordering::Release);
                    answer(reply, &Reply::Stopping);
                }
                None => answer(reply, &unknown_run(run)),
            },
            Request::EndRun { run } => {
                if self.runs().remove(&run).is_some() {
                    logs::close(run);
                    tracing::info!(run = %short(run), "run ended");
                }
                answer(reply, &Reply::Ended);
            }
        }
    }

    /// Checks a run's request at once; opens it (the suite's setup) on a
    /// blocking thread, answering when done.
    fn hello(&mut self, hello: Hello, reply: RpcReplyPort<Vec<u8>>) {
        let name = self.args.name.clone();
        if hello.protocol != PROTOCOL_VERSION {
            return answer(
                reply,
                &refuse(format!(
                    "protocol version mismatch: the coordinator speaks {}, node {name} speaks \
                     {PROTOCOL_VERSION}",
                    hello.protocol
                )),
            );
        }
        let Some(index) = self.args.suites.iter().position(|s| s.name() == hello.suite) else {
            let names: Vec<&str> = self.args.suites.iter().map(|s| s.name()).collect();
            return answer(
                reply,
                &refuse(format!(
                    "node {name} has no suite '{}' (it has: {})",
                    hello.suite,
                    names.join(", ")
                )),
            );
        };
        let suite = &self.args.suites[index];
        let fingerprint = match suite.fingerprint() {
            Ok(fingerprint) => fingerprint,
            Err(error) => return answer(reply, &refuse(format!("node {name}: {error}"))),
        };
        if fingerprint != hello.fingerprint {
            return answer(
                reply,
                &refuse(format!(
                    "suite '{}' differs between the coordinator (walk-order fingerprint {}) and \
                     node {name} ({fingerprint}): run the same build of the suite everywhere",
                    hello.suite, hello.fingerprint
                )),
            );
        }
        let space_fits = suite.space().is_ok_and(|space| hello.blocks.fits(space));
        let runners = hello.runners.map_or(self.args.runners, |r| r as usize);
        if !space_fits || runners == 0 {
            return answer(reply, &refuse(format!("node {name}: the run's settings do not fit")));
        }
        if hello.lease_ms > MAX_LEASE_MS {
            return answer(
                reply,
                &refuse(format!(
                    "node {name}: a lease (heartbeat timeout) of {} is longer than the {} a node \
                     grants",
                    humantime::format_duration(Duration::from_millis(hello.lease_ms)),
                    humantime::format_duration(Duration::from_millis(MAX_LEASE_MS))
                )),
            );
        }
        {
            let runs = self.runs();
            let opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
            let limits = self.args.limits;
            let open = runs.len() + opening.len();
            if open >= limits.max_runs {
                return answer(
                    reply,
                    &refuse(format!(
                        "node {name} has {open} runs open, its most (--max-runs {})",
                        limits.max_runs
                    )),
                );
            }
            let used: usize = runs.values().map(|r| r.runners).sum();
            if used + runners > limits.max_threads {
                return answer(
                    reply,
                    &refuse(format!(
                        "node {name}: the run asks for {runners} runner threads, but only {} of \
                         its --max-threads {} are free",
                        limits.max_threads.saturating_sub(used),
                        limits.max_threads
                    )),
                );
            }
        }
        self.opening.lock().unwrap_or_else(|p| p.into_inner()).insert(hello.run);
        let args = Arc::clone(&self.args);
        let runs = Arc::clone(&self.runs);
        let opening = Arc::clone(&self.opening);
        tokio::task::spawn_blocking(move || {
            let reply_with = open(&args, index, &hello, runners, &runs);
            opening.lock().unwrap_or_else(|p| p.into_inner()).remove(&hello.run);
            answer(reply, &reply_with);
        });
    }

    fn run_batch(&mut self, batch: BatchRequest, reply: RpcReplyPort<Vec<u8>>) {
        let runs = self.runs();
        let Some(entry) = runs.get(&batch.run) else {
            return answer(reply, &unknown_run(batch.run));
        };
        let pending = Arc::clone(&entry.pending);
        let (lease, stopping) = (Arc::clone(&entry.lease), Arc::clone(&entry.stopping));
        let closed = Arc::clone(&entry.closed);
        let gate = Arc::new(move || {
            if closed.load(Ordering::Acquire) {
                Admit::Skip(Reply::Expired("the run was dropped".to_string()))
            } else if stopping.load(Ordering::Acquire) {
                Admit::Skip(Reply::NotStarted)
            } else if lease.expired() {
                // Suspended: its coordinator has not been heard from.
                Admit::Wait
            } else {
                Admit::Run
            }
        });
        let size = self.args.chunk;
        let id = batch.batch;
        entry.run.submit(
            batch,
            gate,
            Box::new(move |result| {
                let reply_with = match result {
                    NodeAnswer::Ran(result) => {
                        let bytes = wire::encode(&result);
                        let total = bytes.len() as u64;
                        let chunk = if bytes.len() <= size {
                            bytes
                        } else {
                            let first = bytes[..size].to_vec();
                            pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, bytes);
                            first
                        };
                        Reply::Batch { total, chunk }
                    }
                    NodeAnswer::Skipped(reply) => reply,
                    NodeAnswer::Failed(error) => Reply::Error(error),
                };
                answer(reply, &reply_with);
            }),
        );
    }

    /// Drops the runs suspended too long, or whose coordinator is gone.
    fn sweep(&mut self) {
        let sessions = &self.args.sessions;
        self.runs().retain(|run, entry| {
            let grace = self.args.grace;
            let why = if entry.lease.silent() > entry.lease.length + grace {
                "its coordinator has not pinged it for its lease and the grace after it"
            } else if sessions.gone(entry.coordinator, grace) {
                "its coordinator has had no session here for the grace"
            } else {
                return true;
            };
            let grace = humantime::format_duration(grace);
            tracing::warn!(run = %short(*run), "dropping a run: {why} ({grace})");
            logs::close(*run);
            false
        });
    }
}

/// Runs the suite's setup and starts the run's threads (on a blocking
/// thread: user code).
fn open(
    args: &AgentArgs,
    index: usize,
    hello: &Hello,
    runners: usize,
    runs: &Mutex<HashMap<RunKey, RunEntry>>,
) -> Reply {
    let name = &args.name;
    let suite = &args.suites[index];
    let spec = NodeRunSpec {
        run: hello.run,
        runners,
        blocks: hello.blocks,
        gather: hello.gather,
        trace: hello.trace,
        round: hello.round,
        suite: hello.suite.clone(),
        node: name.clone(),
    };
    logs::open(hello.run, hello.log_level);
    let _scope = logs::Scope::enter(hello.run);
    let run = match catch_unwind(AssertUnwindSafe(|| suite.open_node_run(&spec))) {
        Ok(Ok(run)) => run,
        Ok(Err(error)) => {
            logs::close(hello.run);
            return refuse(format!("node {name}: {error}"));
        }
        Err(payload) => {
            logs::close(hello.run);
            let message = panic_message(payload);
            return refuse(format!(
                "node {name}: the setup of suite '{}' panicked: {message}",
                hello.suite
            ));
        }
    };
    let lease = Lease::new(Duration::from_millis(hello.lease_ms.max(100)));
    lease.renew();
    tracing::info!(run = %short(hello.run), suite = %hello.suite, runners, "run opened");
    let entry = RunEntry {
        run: Arc::from(run),
        coordinator: hello.coordinator,
        runners,
        pending: Arc::new(Mutex::new(HashMap::new())),
        lease: Arc::new(lease),
        stopping: Arc::new(AtomicBool::new(false)),
        closed: Arc::new(AtomicBool::new(false)),
    };
    runs.lock().unwrap_or_else(|p| p.into_inner()).insert(hello.run, entry);
    Reply::Welcome { runners: runners as u32 }
}

fn refuse(reason: String) -> Reply {
    tracing::warn!(%reason, "refusing a run");
    Reply::Refused(reason)
}

fn unknown_run(run: RunKey) -> Reply {
    Reply::Expired(format!(
        "no run {} here (never opened, or dropped when its lease ran out)",
        short(run)
    ))
}

/// The first 8 hex digits of a 128-bit id, for logs.
fn short(id: u128) -> String {
    format!("{:08x}", (id >> 96) as u32)
}
