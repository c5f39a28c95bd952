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
                        "node {name} has {} open, its most (--max-runs {})",
                        crate::model::count(open as u64, "run"),
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
        in_flight: (hello.in_flight as usize).clamp(1, 1 << 16),
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

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::cluster::link::{Answer, fetch_batch};
    use crate::cluster::node_run::TypedNodeRun;
    use crate::cluster::wire::{Trouble, WireInstruction, call};
    use crate::exec::Origin;
    use crate::model::epoch::{Epoch, EpochCursor};
    use crate::model::fixtures::Cloned;
    use crate::model::space::{Blocks, OrderError, Space};
    use crate::order::{Chain, WalkOrder};

    /// Adds its option to the walk's sum.
    #[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
    struct Add(u32);

    impl crate::Action<u32> for Add {
        fn options() -> Vec<Self> {
            (0..3).map(Add).collect()
        }
        fn run(&self, sum: &mut u32) -> crate::ActionResult {
            *sum += self.0;
            Ok(())
        }
    }

    /// Multiplies the walk's sum by its option.
    #[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
    struct Scale(u32);

    impl crate::Action<u32> for Scale {
        fn options() -> Vec<Self> {
            (1..4).map(Scale).collect()
        }
        fn run(&self, sum: &mut u32) -> crate::ActionResult {
            *sum *= self.0;
            Ok(())
        }
    }

    /// The order these tests serve, `Add, Scale` (9 walks), as the suite
    /// `smoke`: made here from the cluster's own parts, since the `suites`
    /// module builds on the cluster, not under it.
    struct Smoke<C>(WalkOrder<u32, C>);

    impl<C: Chain<u32>> NodeSuite for Smoke<C> {
        fn name(&self) -> &str {
            "smoke"
        }
        fn space(&self) -> Result<&Space, OrderError> {
            self.0.space()
        }
        fn fingerprint(&self) -> Result<String, String> {
            let space = self.0.space().map_err(|e| e.to_string())?;
            crate::trace::order_fingerprint(&self.0, space).map_err(|e| e.to_string())
        }
        fn open_node_run(&self, spec: &NodeRunSpec) -> Result<Box<dyn NodeRun>, String> {
            let origin = Origin::new::<Cloned>(0, Arc::default());
            let encode = |sum: &u32| postcard::to_allocvec(sum);
            Ok(Box::new(TypedNodeRun::of_order::<C, Cloned>(&self.0, origin, spec, encode)?))
        }
    }

    fn smoke_order() -> WalkOrder<u32, impl Chain<u32>> {
        WalkOrder::new().then::<Add>().then::<Scale>()
    }

    fn suites() -> Vec<Box<dyn NodeSuite>> {
        vec![Box::new(Smoke(smoke_order()))]
    }

    async fn agent(chunk: usize, limits: Limits) -> ActorRef<AgentMsg> {
        let args = AgentArgs {
            name: "test-node".to_string(),
            suites: Arc::new(suites()),
            runners: 2,
            limits,
            chunk,
            sessions: Arc::default(),
            grace: SESSION_GRACE,
        };
        Actor::spawn(None, NodeAgent, args).await.unwrap().0
    }

    const ROOMY: Limits = Limits { max_runs: 16, max_threads: 256 };

    fn hello(suite: &str, run: RunKey) -> Hello {
        let suites = suites();
        let found = suites.iter().find(|s| s.name() == suite).unwrap();
        let space = found.space().unwrap();
        Hello {
            protocol: PROTOCOL_VERSION,
            suite: suite.to_string(),
            fingerprint: found.fingerprint().unwrap(),
            run,
            coordinator: 1,
            runners: Some(2),
            blocks: Blocks::for_space(space, 2),
            gather: true,
            trace: true,
            round: None,
            log_level: 1,
            lease_ms: 60_000,
            in_flight: 8,
        }
    }

    fn smoke_epoch() -> Epoch {
        let space = smoke_order().space().unwrap().clone();
        EpochCursor::new(space).next_epoch(false).unwrap()
    }

    fn batch(run: RunKey, epoch: &Epoch, ranges: Vec<std::ops::Range<u64>>) -> Request {
        Request::RunBatch(BatchRequest {
            run,
            batch: 1,
            epoch: epoch.clone(),
            instruction: WireInstruction::Run { value: None, history: Vec::new() },
            ranges,
        })
    }

    async fn ask(agent: &ActorRef<AgentMsg>, request: &Request) -> Result<Reply, Trouble> {
        call(agent, wire::encode(request), Some(Duration::from_secs(30))).await
    }

    /// A node that says no refuses the run; a node gone while the run opens
    /// is lost, which the run survives (the nemesis found a soak broken by
    /// a stopped node's connection closing during the opening, reported as
    /// a refusal).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opening_tells_a_refusal_from_a_loss() {
        use crate::cluster::membership::MemberView;
        use crate::cluster::run::{NotOpened, open_on};
        let view = |agent: ActorRef<AgentMsg>| MemberView {
            member: 0,
            label: "test-node".to_string(),
            name: "test-node".to_string(),
            attempt: 0,
            agent,
        };
        let live = agent(16, ROOMY).await;
        let mut other = hello("smoke", 0);
        other.fingerprint = "another build".to_string();
        let refused = open_on(&view(live.clone()), &other).await;
        assert!(
            matches!(refused, Err(NotOpened::Refused(ref r)) if r.contains("fingerprint")),
            "{:?}",
            refused.as_ref().err()
        );
        assert!(open_on(&view(live.clone()), &hello("smoke", 0)).await.is_ok());

        let gone = agent(16, ROOMY).await;
        gone.stop(None);
        while gone.get_status() != ractor::ActorStatus::Stopped {
            tokio::task::yield_now().await;
        }
        let lost = open_on(&view(gone), &hello("smoke", 0)).await;
        assert!(
            matches!(lost, Err(NotOpened::Lost(ref r)) if r.contains("lost while opening the run")),
            "{:?}",
            lost.as_ref().err()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_result_comes_back_whole_in_small_chunks() {
        let agent = agent(16, ROOMY).await;
        let reply = ask(&agent, &Request::Hello(hello("smoke", 7))).await.unwrap();
        assert!(matches!(reply, Reply::Welcome { runners: 2 }), "{reply:?}");
        let epoch = smoke_epoch();
        let request = batch(7, &epoch, vec![epoch.walks.clone()]);
        let Answer::Ran(result) = fetch_batch(&agent, 7, 1, wire::encode(&request)).await.unwrap()
        else {
            panic!("the batch ran");
        };
        // Far more than one 16-byte chunk, fetched piece by piece.
        assert!(wire::encode(&*result).len() > 16 * 4);
        assert_eq!((result.walks, result.counts.passed, result.records), (9, 9, 9));
        let mut sums: Vec<(u64, u32)> = result
            .finals
            .iter()
            .map(|(id, bytes)| (*id, postcard::from_bytes(bytes).unwrap()))
            .collect();
        sums.sort_unstable();
        // smoke: (0 + add) * scale, add in 0..3 (most significant), scale in 1..4.
        let expected: Vec<(u64, u32)> =
            (0..9).map(|id| (id, (id / 3) as u32 * (id % 3 + 1) as u32)).collect();
        assert_eq!(sums, expected);
        // Trace format 2: the 9 passing walks are one batch record.
        assert_eq!(result.lines.iter().filter(|&&b| b == b'\n').count(), 1);
        // The result was fetched whole: nothing is left pending.
        let again = ask(&agent, &Request::Fetch { run: 7, batch: 1, offset: 0 }).await;
        assert!(matches!(again, Err(Trouble::Broken(_))), "{again:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopping_run_starts_nothing_and_an_ended_one_is_unknown() {
        let agent = agent(wire::CHUNK, ROOMY).await;
        assert!(matches!(
            ask(&agent, &Request::Hello(hello("smoke", 5))).await,
            Ok(Reply::Welcome { .. })
        ));
        let epoch = smoke_epoch();
        let ping = Request::Ping { coordinator: 1, runs: vec![5, 6] };
        let Ok(Reply::Pong { unknown, .. }) = ask(&agent, &ping).await else { panic!("a pong") };
        assert_eq!(unknown, vec![6], "run 6 was never opened");
        assert!(matches!(ask(&agent, &Request::StopRun { run: 5 }).await, Ok(Reply::Stopping)));
        let stopped = ask(&agent, &batch(5, &epoch, vec![0..9])).await;
        assert!(matches!(stopped, Ok(Reply::NotStarted)), "{stopped:?}");
        assert!(matches!(ask(&agent, &Request::EndRun { run: 5 }).await, Ok(Reply::Ended)));
        let ended = ask(&agent, &batch(5, &epoch, vec![0..9])).await;
        assert!(matches!(&ended, Err(Trouble::Expired(e)) if e.contains("no run")), "{ended:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_suspended_run_waits_for_its_coordinator_and_resumes_when_pinged() {
        let agent = agent(wire::CHUNK, ROOMY).await;
        let mut short = hello("smoke", 3);
        short.lease_ms = 0; // At its minimum: 100 ms.
        assert!(matches!(ask(&agent, &Request::Hello(short)).await, Ok(Reply::Welcome { .. })));
        let epoch = smoke_epoch();
        // Once the lease has run out (batches do not renew it; each is
        // real work, no sleep), a batch waits instead of running...
        let request = wire::encode(&batch(3, &epoch, vec![0..9]));
        let waiting = loop {
            let call = call(&agent, request.clone(), Some(Duration::from_millis(500)));
            match call.await {
                Ok(Reply::Batch { .. }) => {}
                Err(Trouble::Lost(why)) if why.contains("no answer") => break true,
                other => panic!("{other:?}"),
            }
        };
        assert!(waiting);
        // ... and a ping naming the run revives it: the next batch runs.
        let ping = Request::Ping { coordinator: 1, runs: vec![3] };
        let Ok(Reply::Pong { unknown, .. }) = ask(&agent, &ping).await else { panic!("a pong") };
        assert!(unknown.is_empty(), "a suspended run is still known");
        let resumed = ask(&agent, &batch(3, &epoch, vec![0..9])).await;
        assert!(matches!(resumed, Ok(Reply::Batch { .. })), "{resumed:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_nodes_limits_refuse_runs_beyond_them() {
        let agent = agent(wire::CHUNK, Limits { max_runs: 1, max_threads: 3 }).await;
        let mut greedy = hello("smoke", 1);
        greedy.runners = Some(4);
        let Ok(Reply::Refused(reason)) = ask(&agent, &Request::Hello(greedy)).await else {
            panic!("more threads than the node has are refused");
        };
        assert!(reason.contains("only 3 of its --max-threads 3 are free"), "{reason}");
        let mut forever = hello("smoke", 1);
        forever.lease_ms = u64::MAX;
        let Ok(Reply::Refused(reason)) = ask(&agent, &Request::Hello(forever)).await else {
            panic!("an unbounded lease is refused");
        };
        assert!(reason.contains("longer than the 10m a node grants"), "{reason}");
        assert!(matches!(
            ask(&agent, &Request::Hello(hello("smoke", 1))).await,
            Ok(Reply::Welcome { .. })
        ));
        let Ok(Reply::Refused(reason)) = ask(&agent, &Request::Hello(hello("smoke", 2))).await
        else {
            panic!("a run beyond --max-runs is refused");
        };
        assert!(reason.contains("--max-runs 1"), "{reason}");
        // Overlapping ranges are refused, not run twice.
        let epoch = smoke_epoch();
        let overlapping = ask(&agent, &batch(1, &epoch, vec![0..5, 3..9])).await;
        assert!(
            matches!(&overlapping, Err(Trouble::Broken(e)) if e.contains("overlapping")),
            "{overlapping:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_requests_get_answers_not_panics() {
        let agent = agent(wire::CHUNK, ROOMY).await;
        let timeout = Some(Duration::from_secs(30));
        let mut garbage = PROTOCOL_VERSION.to_le_bytes().to_vec();
        garbage.extend([0xff; 40]);
        let garbage = call(&agent, garbage, timeout).await;
        assert!(matches!(&garbage, Err(Trouble::Broken(e)) if e.contains("malformed request")));
        let newer = call(&agent, (PROTOCOL_VERSION + 1).to_le_bytes().to_vec(), timeout).await;
        assert!(matches!(&newer, Err(Trouble::Broken(e)) if e.contains("protocol version")));

        let join = Request::Join { protocol: PROTOCOL_VERSION + 1, coordinator: 9 };
        let Reply::Refused(reason) = ask(&agent, &join).await.unwrap() else {
            panic!("a newer protocol cannot join");
        };
        assert!(reason.contains(&format!("speaks {}", PROTOCOL_VERSION + 1)), "{reason}");
        let mut old = hello("smoke", 1);
        old.protocol = PROTOCOL_VERSION + 1;
        let Reply::Refused(reason) = ask(&agent, &Request::Hello(old)).await.unwrap() else {
            panic!("a newer protocol is refused");
        };
        assert!(reason.contains(&format!("speaks {PROTOCOL_VERSION}")), "{reason}");

        let mut other = hello("smoke", 1);
        other.fingerprint = "0123abcd".to_string();
        let Reply::Refused(reason) = ask(&agent, &Request::Hello(other)).await.unwrap() else {
            panic!("another build of the suite is refused");
        };
        let ours = hello("smoke", 1).fingerprint;
        assert!(reason.contains("0123abcd") && reason.contains(&ours), "{reason}");

        let mut unknown = hello("smoke", 1);
        unknown.suite = "nope".to_string();
        let Reply::Refused(reason) = ask(&agent, &Request::Hello(unknown)).await.unwrap() else {
            panic!("an unknown suite is refused");
        };
        assert!(reason.contains("no suite 'nope'") && reason.contains("smoke"), "{reason}");

        // A batch of a run never opened, and one outside the space.
        let mut epoch = smoke_epoch();
        let stray = ask(&agent, &batch(99, &epoch, vec![0..9])).await;
        assert!(matches!(&stray, Err(Trouble::Expired(e)) if e.contains("no run")));
        assert!(matches!(
            ask(&agent, &Request::Hello(hello("smoke", 2))).await,
            Ok(Reply::Welcome { .. })
        ));
        epoch.walks = 0..1000;
        let outside = ask(&agent, &batch(2, &epoch, vec![0..1000])).await;
        assert!(
            matches!(&outside, Err(Trouble::Broken(e)) if e.contains("does not fit")),
            "{outside:?}"
        );
        // The agent still serves.
        let pong = ask(&agent, &Request::Ping { coordinator: 1, runs: vec![2] }).await;
        assert!(matches!(pong, Ok(Reply::Pong { .. })), "{pong:?}");
    }
}
