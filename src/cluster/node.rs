//! A run on a node: the suite's walk order, the node's own initial state
//! (from the suite's setup, run on the node: fixtures such as a temp dir or
//! a server belong where the walks run), the walk states held between
//! segments, and the runner threads.
//!
//! The NodeAgent actor owns one run entry per run; batches execute on its
//! `RunnerPool` threads, never on the async executor.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use crate::cluster::wire::{BatchRequest, BatchResult, WireFailure, WireInstruction};
use crate::exec::{BatchInput, BatchSettings, ErasedOrder, Instruction, QuietPanics, WalkOutcome};
use crate::model::epoch::EpochId;
use crate::model::holdings::LiveSet;
use crate::model::space::Blocks;
use crate::model::trace::TraceEncoder;
use crate::store::StateStore;
use crate::trace::encode_batch;

/// A suite's run on a node, with the walk state's type erased.
#[doc(hidden)]
pub trait NodeRun: Send + Sync {
    /// Runs one batch on the calling thread. `Err` only for a request that
    /// does not fit the run (a bug on one side), never for a failing walk.
    fn execute(&self, request: &BatchRequest, runner: &str) -> Result<BatchResult, String>;
}

/// How a node run is set up, from the coordinator's `Hello`.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct NodeRunSpec {
    pub blocks: Blocks,
    pub gather: bool,
    pub trace: bool,
    /// A soak round, tagged on every trace line.
    pub round: Option<crate::model::trace::RoundTag>,
    /// The suite's name, for trace lines.
    pub suite: String,
}

/// The typed run behind [`NodeRun`].
pub(crate) struct TypedNodeRun<S> {
    pub(crate) order: Arc<dyn ErasedOrder<S>>,
    /// Cloned once per batch: `S` need not be `Sync`.
    pub(crate) initial: Mutex<S>,
    pub(crate) store: StateStore<S>,
    pub(crate) spec: NodeRunSpec,
    pub(crate) encoder: Option<TraceEncoder>,
    pub(crate) encode_state: fn(&S) -> postcard::Result<Vec<u8>>,
    /// The decoded instruction of the current epoch.
    pub(crate) instruction: Mutex<Option<(EpochId, Arc<Instruction>)>>,
    /// Kept alive until the run is dropped (temp dirs, servers).
    pub(crate) _guard: Mutex<Box<dyn Send>>,
}

impl<S: Clone + Send + 'static> TypedNodeRun<S> {
    fn check(&self, request: &BatchRequest) -> Result<(), String> {
        let space = self.order.space();
        let epoch = &request.epoch;
        let fits = epoch.walks.end <= space.size()
            && !request.ranges.is_empty()
            && request.ranges.iter().all(|r| {
                r.start >= epoch.walks.start && r.end <= epoch.walks.end && r.start < r.end
            })
            && epoch.plain.start <= epoch.plain.end
            && epoch.plain.end <= space.len()
            && epoch.level <= space.serial_positions().len()
            && epoch.serial.is_none_or(|s| {
                space.serial_positions().contains(&s.position)
                    && s.option < space.option_counts()[s.position]
            });
        if fits {
            Ok(())
        } else {
            Err(format!("batch {} does not fit the walk space", request.batch))
        }
    }

    fn instruction(&self, request: &BatchRequest) -> Result<Arc<Instruction>, String> {
        let mut cached = self.instruction.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((epoch, instruction)) = &*cached
            && *epoch == request.epoch.id
        {
            return Ok(Arc::clone(instruction));
        }
        let instruction = match (&request.instruction, request.epoch.serial) {
            (WireInstruction::Run(Some(bytes)), Some(step)) => {
                Instruction::Run(Some(self.order.decode_value(step, bytes)?))
            }
            (WireInstruction::Run(Some(_)), None) => {
                return Err("a serial value for an epoch without a serial action".to_string());
            }
            (WireInstruction::Run(None), _) => Instruction::Run(None),
            (WireInstruction::FailBranch(error), _) => Instruction::FailBranch(error.clone()),
        };
        let instruction = Arc::new(instruction);
        *cached = Some((request.epoch.id, Arc::clone(&instruction)));
        Ok(instruction)
    }
}

impl<S: Clone + Send + 'static> NodeRun for TypedNodeRun<S> {
    fn execute(&self, request: &BatchRequest, runner: &str) -> Result<BatchResult, String> {
        self.check(request)?;
        let instruction = self.instruction(request)?;
        let epoch = &request.epoch;
        let ranges = &request.ranges;
        let input = if epoch.first {
            BatchInput::Fresh(ranges.clone())
        } else {
            let blocks = self.store.take_all(ranges, self.spec.blocks).map_err(|start| {
                format!(
                    "the walk states of the block starting at walk {start} are not on this node"
                )
            })?;
            BatchInput::Held(blocks)
        };
        let initial = self.initial.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let settings = BatchSettings {
            blocks: self.spec.blocks,
            gather: self.spec.gather,
            trace: self.spec.trace,
        };
        let out = self.order.execute(epoch, &instruction, input, &initial, settings);
        drop(initial);

        let mut result =
            BatchResult { walks: out.walks, counts: out.counts, ..BatchResult::default() };
        if !epoch.last {
            // One bit per walk of the ranges, in order: the held blocks
            // are the ranges' blocks, in order.
            let mut live = LiveSet::default();
            for block in &out.held {
                live.extend(&block.live);
            }
            let walks: u64 = ranges.iter().map(|r| r.end - r.start).sum();
            // A combtest bug if it happens: the batch's outcomes and states
            // are dropped and the coordinator gives the node up.
            if live.len() != walks {
                return Err(format!(
                    "batch {}: {} held walks for {walks}",
                    request.batch,
                    live.len()
                ));
            }
            result.live = Some(live);
        }
        if !out.held.is_empty() {
            self.store.put(out.held);
        }
        for (walk, state) in &out.finals {
            let bytes = (self.encode_state)(state)
                .map_err(|e| format!("cannot encode the final state of walk {}: {e}", walk.0))?;
            result.finals.push((walk.0, bytes));
        }
        result.failed = out
            .failed
            .into_iter()
            .map(|f| WireFailure {
                walk: f.walk_id.0,
                action_index: f.action_index,
                action: f.action.to_string(),
                error: f.error,
            })
            .collect();
        if let Some(encoder) = &self.encoder {
            let started = std::time::Instant::now();
            encode_batch(encoder, &out.records, runner, &mut result.lines);
            result.records = out.records.len() as u64;
            result.failed_nanos = out
                .records
                .iter()
                .filter(|r| matches!(r.outcome, WalkOutcome::Failed { .. }))
                .map(|r| (r.id.0, r.nanos))
                .collect();
            result.nanos += started.elapsed().as_nanos() as u64;
        }
        result.nanos += out.nanos;
        result.restarted = out.panic.is_some();
        Ok(result)
    }
}

/// A job for a runner thread: returns whether the thread must be replaced
/// (an action panicked: thread-local or captured state of user code may be
/// broken, as for an in-process WalkRunner).
type Job = Box<dyn FnOnce() -> bool + Send>;

/// The runner threads of a node run. Jobs wait in a channel (unbounded:
/// the coordinator sends at most `2 × runners` batches at a time, its
/// credits). A thread whose batch had a panic starts its replacement and
/// exits. Dropping the pool ends the threads once their current job ends.
pub(crate) struct RunnerPool {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl RunnerPool {
    pub(crate) fn start(runners: usize, name: &str) -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..runners {
            spawn_runner(Arc::clone(&queue), format!("{name}-{index}"))?;
        }
        Ok(RunnerPool { jobs })
    }

    /// Queues a job. Threads replace themselves, so one is always there;
    /// should they all be gone, the job runs on a thread of its own rather
    /// than be dropped (it holds a coordinator's reply port).
    pub(crate) fn submit(&self, job: Job) {
        if let Err(std::sync::mpsc::SendError(job)) = self.jobs.send(job) {
            std::thread::spawn(job);
        }
    }
}

type Queue = Arc<Mutex<std::sync::mpsc::Receiver<Job>>>;

fn spawn_runner(queue: Queue, name: String) -> std::io::Result<()> {
    let thread_name = name.clone();
    std::thread::Builder::new().name(thread_name).spawn(move || {
        let _quiet = QuietPanics::on_this_thread();
        loop {
            let job = {
                let queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                queue.recv()
            };
            let Ok(job) = job else { return }; // The pool is dropped.
            // A panic outside the executor's own handling (a bug) must not
            // take the thread down silently: replace the thread.
            let replace = catch_unwind(AssertUnwindSafe(job)).unwrap_or(true);
            if replace {
                if let Err(error) = spawn_runner(Arc::clone(&queue), name.clone()) {
                    tracing::error!(%error, "cannot replace a runner thread");
                }
                return;
            }
        }
    })?;
    Ok(())
}
