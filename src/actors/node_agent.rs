//! NodeAgent: a `combtest-node serve` process's one remote-reachable actor.
//! It joins the process group coordinators look in, answers their requests
//! and owns the node's runs.
//!
//! - Receives `AgentMsg::Call` from coordinators (through ractor_cluster):
//!   postcard `Request`s, each answered with exactly one `Reply` (a reply
//!   port dropped unanswered would leave the coordinator's call waiting).
//!   - `Hello`: checks the protocol version and the suite's fingerprint,
//!     sets the run up (the suite's setup runs here) or refuses, naming
//!     both sides' versions or fingerprints.
//!   - `RunBatch`: queues the batch on the run's runner threads, which
//!     answer when it is done; a result bigger than one chunk waits in the
//!     run's `pending` map for `Fetch`es.
//!   - `Ping`: answers with the log lines buffered since the last one.
//!   - `EndRun`: drops the run (its states, threads and fixture).
//! - Before each request it drops runs not pinged within their idle limit
//!   (their coordinator is gone or cut them off).
//! - Supervision: spawned by `serve`, which ends the process if it stops.
//!   Runner threads that ran a panicking action are replaced by their pool.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::cluster::logs;
use crate::cluster::node::{NodeRun, NodeRunSpec, RunnerPool};
use crate::cluster::wire::{
    self, AgentMsg, BatchRequest, Hello, PROTOCOL_VERSION, Reply, Request, RunKey,
};
use crate::suites::Suite;

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
    args: AgentArgs,
    runs: HashMap<RunKey, RunEntry>,
}

struct RunEntry {
    run: Arc<dyn NodeRun>,
    pool: RunnerPool,
    /// Encoded results still being fetched, by batch.
    pending: Arc<Mutex<HashMap<u64, Vec<u8>>>>,
    last_seen: Instant,
    idle_limit: Duration,
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
        Ok(AgentState { args, runs: HashMap::new() })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMsg::Call(bytes, reply) => state.serve(&bytes, reply),
        }
        Ok(())
    }
}

/// Answers `reply` with `answer`; the coordinator may be gone already.
fn answer(reply: RpcReplyPort<Vec<u8>>, answer: &Reply) {
    let _ = reply.send(wire::encode(answer));
}

impl AgentState {
    fn serve(&mut self, bytes: &[u8], reply: RpcReplyPort<Vec<u8>>) {
        self.sweep();
        let request = match wire::decode::<Request>(bytes, "request") {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, "refusing a malformed request");
                return answer(reply, &Reply::Error(error));
            }
        };
        match request {
            Request::Hello(hello) => {
                let result = self.hello(hello);
                answer(reply, &result);
            }
            Request::RunBatch(batch) => self.run_batch(batch, reply),
            Request::Fetch { run, batch, offset } => {
                let Some(entry) = self.runs.get_mut(&run) else {
                    return answer(reply, &unknown_run(run));
                };
                entry.last_seen = Instant::now();
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
            Request::Ping { run } => match self.runs.get_mut(&run) {
                Some(entry) => {
                    entry.last_seen = Instant::now();
                    let (logs, dropped) = logs::drain();
                    answer(reply, &Reply::Pong { logs, dropped });
                }
                None => answer(reply, &unknown_run(run)),
            },
            Request::EndRun { run } => {
                if self.runs.remove(&run).is_some() {
                    tracing::info!(run = %uuid::Uuid::from_u128(run), "run ended");
                }
                answer(reply, &Reply::Ended);
            }
        }
    }

    fn hello(&mut self, hello: Hello) -> Reply {
        let run_id = uuid::Uuid::from_u128(hello.run);
        if hello.protocol != PROTOCOL_VERSION {
            return refuse(format!(
                "protocol version mismatch: the coordinator speaks {}, node {} speaks {}",
                hello.protocol, self.args.name, PROTOCOL_VERSION
            ));
        }
        let Some(suite) = self.args.suites.iter().find(|s| s.name() == hello.suite) else {
            let names: Vec<&str> = self.args.suites.iter().map(|s| s.name()).collect();
            return refuse(format!(
                "node {} has no suite '{}' (it has: {})",
                self.args.name,
                hello.suite,
                names.join(", ")
            ));
        };
        let fingerprint = match suite.fingerprint() {
            Ok(fingerprint) => fingerprint,
            Err(error) => return refuse(format!("node {}: {error}", self.args.name)),
        };
        if fingerprint != hello.fingerprint {
            return refuse(format!(
                "suite '{}' differs between the coordinator (walk-order fingerprint {}) and node {} \
                 ({fingerprint}): run the same build of the suite everywhere",
                hello.suite, hello.fingerprint, self.args.name
            ));
        }
        let spec = NodeRunSpec {
            blocks: hello.blocks,
            gather: hello.gather,
            trace: hello.trace,
            suite: hello.suite.clone(),
        };
        let run = match suite.open_node_run(&spec) {
            Ok(run) => run,
            Err(error) => return refuse(format!("node {}: {error}", self.args.name)),
        };
        let runners = hello.runners.map_or(self.args.runners, |r| r as usize).max(1);
        let pool = match RunnerPool::start(runners, "combtest-node-runner") {
            Ok(pool) => pool,
            Err(error) => {
                return refuse(format!(
                    "node {} cannot start runner threads: {error}",
                    self.args.name
                ));
            }
        };
        logs::set_level(hello.log_level);
        tracing::info!(run = %run_id, suite = %hello.suite, runners, "run opened");
        self.runs.insert(
            hello.run,
            RunEntry {
                run: Arc::from(run),
                pool,
                pending: Arc::new(Mutex::new(HashMap::new())),
                last_seen: Instant::now(),
                idle_limit: Duration::from_millis(hello.idle_limit_ms.max(1000)),
            },
        );
        Reply::Welcome { node: self.args.name.clone(), runners: runners as u32 }
    }

    fn run_batch(&mut self, batch: BatchRequest, reply: RpcReplyPort<Vec<u8>>) {
        let Some(entry) = self.runs.get_mut(&batch.run) else {
            return answer(reply, &unknown_run(batch.run));
        };
        entry.last_seen = Instant::now();
        let run = Arc::clone(&entry.run);
        let pending = Arc::clone(&entry.pending);
        let runner = self.args.name.clone();
        let size = self.args.chunk;
        let job = Box::new(move || {
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

    /// Drops runs whose coordinator has not been heard from in time.
    fn sweep(&mut self) {
        let now = Instant::now();
        self.runs.retain(|run, entry| {
            let alive = now.duration_since(entry.last_seen) <= entry.idle_limit;
            if !alive {
                tracing::warn!(run = %uuid::Uuid::from_u128(*run), "dropping a run: its coordinator is gone");
            }
            alive
        });
    }
}

fn refuse(reason: String) -> Reply {
    tracing::warn!(%reason, "refusing a run");
    Reply::Refused(reason)
}

fn unknown_run(run: RunKey) -> Reply {
    Reply::Error(format!(
        "unknown run {} (never opened here, or dropped after its coordinator went silent)",
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
            log_level: 1,
            idle_limit_ms: 60_000,
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
    async fn bad_requests_get_answers_not_panics() {
        let agent = agent(wire::CHUNK).await;
        let garbage = call(&agent, vec![0xff; 40], Some(std::time::Duration::from_secs(30))).await;
        assert!(matches!(&garbage, Err(Trouble::Broken(e)) if e.contains("malformed request")));

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
        assert!(matches!(&stray, Err(Trouble::Broken(e)) if e.contains("unknown run")));
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
