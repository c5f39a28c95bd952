//! NodeAgent: a `combtest-node serve` process's one remote-reachable actor.
//! It joins the process group coordinators look in, answers their requests
//! and owns the node's runs.
//!
//! - Receives `AgentMsg::Call` from coordinators (through ractor_cluster):
//!   postcard `Request`s, each answered with exactly one `Reply` (a reply
//!   port dropped unanswered would leave the coordinator's call waiting).
//!   - `Hello`: checks the suite and its fingerprint at once, then runs the
//!     suite's setup on a blocking thread (user code: it may be slow or
//!     panic) and answers when it is done: the run is open, or refused with
//!     the reason, naming both sides' fingerprints.
//!   - `RunBatch`: queues the batch on the run's runner threads, which
//!     answer when it is done; a result bigger than one chunk waits in the
//!     run's `pending` map for `Fetch`es.
//!   - `Ping`: renews the run's lease and answers with the log lines
//!     buffered since the last one.
//!   - `EndRun`: drops the run (its states, threads and fixture).
//! - `Sweep`, every second from itself: drops runs whose lease ran out.
//! - **Lease.** A run lives while its coordinator pings it: the lease is the
//!   heartbeat timeout (before the first ping, the longer grace the
//!   coordinator gave in `Hello`). A coordinator declares the node lost no
//!   sooner than a heartbeat timeout after its last answered ping, so by
//!   then the lease has run out and the node runs none of the batches still
//!   queued for that run: a stopped node that wakes up does not run walks
//!   behind a serial action the coordinator has moved on to. (A batch
//!   already running finishes; its result goes nowhere.)
//! - Supervision: spawned by `serve`, which ends the process if it stops.
//!   Runner threads that ran a panicking action are replaced by their pool.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::cluster::logs;
use crate::cluster::node::{NodeRun, NodeRunSpec, RunnerPool};
use crate::cluster::wire::{
    self, AgentMsg, BatchRequest, Hello, PROTOCOL_VERSION, Reply, Request, RunKey,
};
use crate::exec::panic_message;
use crate::suites::Suite;

/// How often the agent drops runs whose lease ran out.
const SWEEP: Duration = Duration::from_secs(1);

pub(crate) struct NodeAgent;

pub(crate) struct AgentArgs {
    /// This node's name, as coordinators report it.
    pub(crate) name: String,
    pub(crate) suites: Arc<Vec<Box<dyn Suite>>>,
    /// Runner threads per run, unless the coordinator asks otherwise.
    pub(crate) runners: usize,
    /// Largest piece of a batch result per reply (`wire::CHUNK`; smaller
    /// in tests).
    pub(crate) chunk: usize,
}

pub(crate) struct AgentState {
    args: Arc<AgentArgs>,
    /// Shared with the tasks that open runs.
    runs: Arc<Mutex<HashMap<RunKey, RunEntry>>>,
    sweep: Option<ractor::concurrency::JoinHandle<()>>,
}

struct RunEntry {
    run: Arc<dyn NodeRun>,
    pool: RunnerPool,
    /// Encoded results still being fetched, by batch.
    pending: Arc<Mutex<HashMap<u64, Vec<u8>>>>,
    lease: Arc<Lease>,
}

/// How long a run may go without hearing from its coordinator.
struct Lease {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last request of the run.
    seen: AtomicU64,
    /// The lease once pinged, and before.
    length: Duration,
    grace: Duration,
    pinged: AtomicBool,
}

impl Lease {
    fn new(length: Duration, grace: Duration) -> Self {
        Lease {
            epoch: Instant::now(),
            seen: AtomicU64::new(0),
            length,
            grace,
            pinged: AtomicBool::new(false),
        }
    }

    fn renew(&self, ping: bool) {
        self.seen.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        if ping {
            self.pinged.store(true, Ordering::Relaxed);
        }
    }

    fn expired(&self) -> bool {
        let limit = if self.pinged.load(Ordering::Relaxed) { self.length } else { self.grace };
        let seen = Duration::from_millis(self.seen.load(Ordering::Relaxed));
        self.epoch.elapsed() > seen + limit
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
            runs: Arc::new(Mutex::new(HashMap::new())),
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
            Request::Ping { run } => match self.runs().get(&run) {
                Some(entry) => {
                    entry.lease.renew(true);
                    let (logs, dropped) = logs::drain();
                    answer(reply, &Reply::Pong { logs, dropped });
                }
                None => answer(reply, &unknown_run(run)),
            },
            Request::EndRun { run } => {
                if self.runs().remove(&run).is_some() {
                    tracing::info!(run = %uuid::Uuid::from_u128(run), "run ended");
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
        if !space_fits || runners == 0 || runners > crate::MAX_THREADS {
            return answer(reply, &refuse(format!("node {name}: the run's settings do not fit")));
        }
        let args = Arc::clone(&self.args);
        let runs = Arc::clone(&self.runs);
        tokio::task::spawn_blocking(move || {
            let reply_with = open(&args, index, &hello, runners, &runs);
            answer(reply, &reply_with);
        });
    }

    fn run_batch(&mut self, batch: BatchRequest, reply: RpcReplyPort<Vec<u8>>) {
        let runs = self.runs();
        let Some(entry) = runs.get(&batch.run) else {
            return answer(reply, &unknown_run(batch.run));
        };
        let run = Arc::clone(&entry.run);
        let pending = Arc::clone(&entry.pending);
        let lease = Arc::clone(&entry.lease);
        let runner = self.args.name.clone();
        let size = self.args.chunk;
        let job = Box::new(move || {
            if lease.expired() {
                // The coordinator has given this node up: run nothing more.
                answer(reply, &Reply::Expired("the run's lease ran out".to_string()));
                return false;
            }
            let outcome = catch_unwind(AssertUnwindSafe(|| run.execute(&batch, &runner)));
            let (reply_with, replace) = match outcome {
                Ok(Ok(result)) => {
                    let restarted = result.restarted;
                    let bytes = wire::encode(&result);
                    let total = bytes.len() as u64;
                    let chunk = if bytes.len() <= size {
                        bytes
                    } else {
                        let first = bytes[..size].to_vec();
                        let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
                        pending.insert(batch.batch, bytes);
                        first
                    };
                    (Reply::Batch { total, chunk }, restarted)
                }
                Ok(Err(error)) => (Reply::Error(error), false),
                Err(_) => (Reply::Error("the batch panicked outside any action".to_string()), true),
            };
            answer(reply, &reply_with);
            replace
        });
        entry.pool.submit(job);
    }

    /// Drops the runs whose lease ran out.
    fn sweep(&mut self) {
        self.runs().retain(|run, entry| {
            let alive = !entry.lease.expired();
            if !alive {
                tracing::warn!(
                    run = %uuid::Uuid::from_u128(*run),
                    "dropping a run: its coordinator has not been heard from in time"
                );
            }
            alive
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
        blocks: hello.blocks,
        gather: hello.gather,
        trace: hello.trace,
        round: hello.round,
        suite: hello.suite.clone(),
    };
    let run = match catch_unwind(AssertUnwindSafe(|| suite.open_node_run(&spec))) {
        Ok(Ok(run)) => run,
        Ok(Err(error)) => return refuse(format!("node {name}: {error}")),
        Err(payload) => {
            let message = panic_message(payload);
            return refuse(format!(
                "node {name}: the setup of suite '{}' panicked: {message}",
                hello.suite
            ));
        }
    };
    let pool = match RunnerPool::start(runners, "combtest-node-runner") {
        Ok(pool) => pool,
        Err(error) => return refuse(format!("node {name} cannot start runner threads: {error}")),
    };
    logs::set_level(hello.log_level);
    let lease = Lease::new(
        Duration::from_millis(hello.lease_ms.max(100)),
        Duration::from_millis(hello.grace_ms.max(1000)),
    );
    lease.renew(false);
    tracing::info!(run = %uuid::Uuid::from_u128(hello.run), suite = %hello.suite, runners, "run opened");
    let entry = RunEntry {
        run: Arc::from(run),
        pool,
        pending: Arc::new(Mutex::new(HashMap::new())),
        lease: Arc::new(lease),
    };
    runs.lock().unwrap_or_else(|p| p.into_inner()).insert(hello.run, entry);
    Reply::Welcome { node: name.clone(), runners: runners as u32 }
}

fn refuse(reason: String) -> Reply {
    tracing::warn!(%reason, "refusing a run");
    Reply::Refused(reason)
}

fn unknown_run(run: RunKey) -> Reply {
    Reply::Expired(format!(
        "no run {} here (never opened, or dropped when its lease ran out)",
        uuid::Uuid::from_u128(run)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::node_link::{Trouble, call, fetch_batch};
    use crate::cluster::wire::WireInstruction;
    use crate::model::epoch::EpochCursor;
    use crate::model::space::Blocks;

    async fn agent(chunk: usize) -> ActorRef<AgentMsg> {
        let args = AgentArgs {
            name: "test-node".to_string(),
            suites: Arc::new(crate::suites::builtin()),
            runners: 2,
            chunk,
        };
        Actor::spawn(None, NodeAgent, args).await.unwrap().0
    }

    fn hello(suite: &str, run: RunKey) -> Hello {
        let suites = crate::suites::builtin();
        let found = suites.iter().find(|s| s.name() == suite).unwrap();
        let space = found.space().unwrap();
        Hello {
            protocol: PROTOCOL_VERSION,
            suite: suite.to_string(),
            fingerprint: found.fingerprint().unwrap(),
            run,
            runners: Some(2),
            blocks: Blocks::for_space(space, 2),
            gather: true,
            trace: true,
            round: None,
            log_level: 1,
            lease_ms: 60_000,
            grace_ms: 60_000,
        }
    }

    async fn ask(agent: &ActorRef<AgentMsg>, request: &Request) -> Result<Reply, Trouble> {
        call(agent, wire::encode(request), Some(std::time::Duration::from_secs(30))).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_result_comes_back_whole_in_small_chunks() {
        let agent = agent(16).await;
        let reply = ask(&agent, &Request::Hello(hello("smoke", 7))).await.unwrap();
        assert!(matches!(reply, Reply::Welcome { runners: 2, .. }), "{reply:?}");
        let space = crate::suites::smoke::suite().space().unwrap().clone();
        let epoch = EpochCursor::new(space).next_epoch(false).unwrap();
        let request = Request::RunBatch(BatchRequest {
            run: 7,
            batch: 0,
            ranges: vec![epoch.walks.clone()],
            epoch,
            instruction: WireInstruction::Run(None),
        });
        let result = fetch_batch(&agent, 7, 0, wire::encode(&request)).await.unwrap();
        // Far more than one 16-byte chunk, fetched piece by piece.
        assert!(wire::encode(&result).len() > 16 * 4);
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
        assert_eq!(result.lines.iter().filter(|&&b| b == b'\n').count(), 9);
        // The result was fetched whole: nothing is left pending.
        let again = ask(&agent, &Request::Fetch { run: 7, batch: 0, offset: 0 }).await;
        assert!(matches!(again, Err(Trouble::Broken(_))), "{again:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_whose_lease_ran_out_runs_nothing_more() {
        let agent = agent(wire::CHUNK).await;
        let mut short = hello("smoke", 5);
        (short.lease_ms, short.grace_ms) = (0, 0); // Both at their minimum.
        assert!(matches!(ask(&agent, &Request::Hello(short)).await, Ok(Reply::Welcome { .. })));
        let space = crate::suites::smoke::suite().space().unwrap().clone();
        let epoch = EpochCursor::new(space).next_epoch(false).unwrap();
        let request = Request::RunBatch(BatchRequest {
            run: 5,
            batch: 0,
            ranges: vec![epoch.walks.clone()],
            epoch,
            instruction: WireInstruction::Run(None),
        });
        // One ping starts the 100 ms lease; batches do not renew it. Keep
        // asking (each batch is real work, no sleep) until one is refused.
        assert!(matches!(ask(&agent, &Request::Ping { run: 5 }).await, Ok(Reply::Pong { .. })));
        for _ in 0..100_000 {
            match ask(&agent, &request).await {
                Ok(Reply::Batch { .. }) => {}
                Err(Trouble::Lost(why)) => {
                    assert!(why.contains("lease") || why.contains("no run"), "{why}");
                    return;
                }
                other => panic!("{other:?}"),
            }
        }
        panic!("the lease never ran out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_requests_get_answers_not_panics() {
        let agent = agent(wire::CHUNK).await;
        let timeout = Some(std::time::Duration::from_secs(30));
        let mut garbage = PROTOCOL_VERSION.to_le_bytes().to_vec();
        garbage.extend([0xff; 40]);
        let garbage = call(&agent, garbage, timeout).await;
        assert!(matches!(&garbage, Err(Trouble::Broken(e)) if e.contains("malformed request")));
        let newer = call(&agent, (PROTOCOL_VERSION + 1).to_le_bytes().to_vec(), timeout).await;
        assert!(matches!(&newer, Err(Trouble::Broken(e)) if e.contains("protocol version")));

        let mut old = hello("smoke", 1);
        old.protocol = PROTOCOL_VERSION + 1;
        let Reply::Refused(reason) = ask(&agent, &Request::Hello(old)).await.unwrap() else {
            panic!("a newer protocol is refused");
        };
        assert!(reason.contains(&format!("speaks {}", PROTOCOL_VERSION + 1)), "{reason}");
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
        let space = crate::suites::smoke::suite().space().unwrap().clone();
        let mut epoch = EpochCursor::new(space).next_epoch(false).unwrap();
        let batch = |run, epoch: &crate::model::epoch::Epoch, range| {
            Request::RunBatch(BatchRequest {
                run,
                batch: 1,
                epoch: epoch.clone(),
                instruction: WireInstruction::Run(None),
                ranges: vec![range],
            })
        };
        let stray = ask(&agent, &batch(99, &epoch, 0..9)).await;
        assert!(matches!(&stray, Err(Trouble::Lost(e)) if e.contains("dropped the run")));
        assert!(matches!(
            ask(&agent, &Request::Hello(hello("smoke", 2))).await,
            Ok(Reply::Welcome { .. })
        ));
        epoch.walks = 0..1000;
        let outside = ask(&agent, &batch(2, &epoch, 0..1000)).await;
        assert!(
            matches!(&outside, Err(Trouble::Broken(e)) if e.contains("does not fit")),
            "{outside:?}"
        );
        // The agent still serves.
        let pong = ask(&agent, &Request::Ping { run: 2 }).await;
        assert!(matches!(pong, Ok(Reply::Pong { .. })), "{pong:?}");
    }
}
