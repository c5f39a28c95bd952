//! What runs batches, in-process and on cluster nodes alike: the
//! [`BatchPipeline`] (held states out of the store, the batch executed,
//! trace lines encoded, states that go on back into the store, live bits),
//! and the [`RunnerThread`]s it runs on. A `WalkRunner` actor owns one
//! thread with a queue of its own; a node's run owns a pool of threads
//! taking from one queue. The [`Claim`] of a batch decides, without a lock,
//! whether the runner that ran it or the Scheduler that stopped the run
//! accounts for it.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crate::exec::{
    BatchInput, BatchSettings, ErasedOrder, Instruction, Origin, QuietPanics, WalkOutcome,
    panic_message,
};
use crate::model::dispatch::Claimed;
use crate::model::epoch::Epoch;
use crate::model::holdings::LiveSet;
use crate::model::outcome::{Counts, FailedWalk};
use crate::model::pieces::Pieces;
use crate::model::space::WalkId;
use crate::model::trace::TraceEncoder;
use crate::store::StateStore;
use crate::trace::encode_batch;

/// Who accounts for a batch: the runner that delivers its results, or the
/// Scheduler that takes it back (not started) or gives it up (hung) when
/// the run stops. One atomic, compared and swapped by both sides.
#[derive(Debug, Clone, Default)]
pub(crate) struct Claim(Arc<AtomicU8>);

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const DELIVERED: u8 = 2;
const TAKEN_BACK: u8 = 3;
const GIVEN_UP: u8 = 4;

impl Claim {
    /// A runner starts the batch; false if the Scheduler took it back.
    pub(crate) fn start(&self) -> bool {
        self.swap(QUEUED, STARTED)
    }

    /// A runner has its results; false if the Scheduler gave the batch up
    /// (the results then go nowhere).
    pub(crate) fn deliver(&self) -> bool {
        self.swap(STARTED, DELIVERED)
    }

    /// The Scheduler claims the batch of a stopping run.
    pub(crate) fn take_back(&self, force: bool) -> Claimed {
        if self.swap(QUEUED, TAKEN_BACK) {
            return Claimed::NotStarted;
        }
        if force && self.swap(STARTED, GIVEN_UP) {
            return Claimed::Hung;
        }
        Claimed::Running
    }

    fn swap(&self, from: u8, to: u8) -> bool {
        self.0.compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

/// How a batch runs on a runner, fixed for the run: the same in-process and
/// on a node.
pub(crate) struct BatchPipeline<S> {
    pub(crate) order: Arc<dyn ErasedOrder<S>>,
    pub(crate) store: Arc<StateStore<S>>,
    pub(crate) settings: BatchSettings,
    pub(crate) encoder: Option<Arc<TraceEncoder>>,
    /// The runner's name in trace lines (`local/3`, a node's name).
    pub(crate) name: String,
}

/// What a batch produced, its held states stored.
pub(crate) struct Ran<S> {
    pub(crate) counts: Counts,
    pub(crate) failed: Vec<FailedWalk>,
    /// Cancelled and pruned walks, as ranges.
    pub(crate) neither: Vec<Range<u64>>,
    pub(crate) finals: Vec<(WalkId, S)>,
    /// `walks.jsonl` lines and how many, with a log dir.
    pub(crate) lines: Vec<u8>,
    pub(crate) records: u64,
    /// (walk id, nanoseconds) of failed walks, for `junit.xml`.
    pub(crate) failed_nanos: Vec<(u64, u64)>,
    /// Which walks of the ranges go on (a batch of a non-final segment).
    pub(crate) live: Option<LiveSet>,
    pub(crate) walks: u64,
    pub(crate) nanos: u64,
    /// The first panic of an action.
    pub(crate) panic: Option<String>,
}

impl<S: Send + 'static> BatchPipeline<S> {
    /// The batch's walks: fresh, or their held states taken from the store
    /// (`Err` with the first walk of a block that is not there).
    pub(crate) fn input(&self, epoch: &Epoch, pieces: &Pieces) -> Result<BatchInput<S>, u64> {
        if epoch.first {
            return Ok(BatchInput::Fresh(pieces.clone()));
        }
        self.store.take_all(&pieces.ranges()).map(BatchInput::Held)
    }

    /// Runs the batch on the calling thread, encodes its trace lines (with a
    /// log dir) and stores the states that go on.
    pub(crate) fn run(
        &self,
        epoch: &Epoch,
        instruction: &Instruction,
        walks: u64,
        input: BatchInput<S>,
        origin: &Origin<S>,
    ) -> Ran<S> {
        let mut out = self.order.execute(epoch, instruction, input, origin, self.settings);
        let mut lines = Vec::new();
        let mut failed_nanos = Vec::new();
        if let Some(encoder) = &self.encoder {
            let started = std::time::Instant::now();
            encode_batch(encoder, &out.records, &self.name, &mut lines);
            failed_nanos = out
                .records
                .iter()
                .filter(|r| matches!(r.outcome, WalkOutcome::Failed { .. }))
                .map(|r| (r.id.0, r.nanos))
                .collect();
            // Batch sizing sees the whole per-walk cost, encoding included.
            out.nanos += started.elapsed().as_nanos() as u64;
        }
        let live = (!epoch.last).then(|| {
            // One bit per walk of the ranges, in order: the held blocks are
            // the ranges' blocks, in order.
            let mut live = LiveSet::default();
            for block in &out.held {
                live.extend(&block.live);
            }
            debug_assert_eq!(live.len(), walks);
            live
        });
        if !out.held.is_empty() {
            self.store.put(std::mem::take(&mut out.held));
        }
        Ran {
            counts: out.counts,
            failed: out.failed,
            neither: out.neither,
            finals: out.finals,
            records: out.records.len() as u64,
            lines,
            failed_nanos,
            live,
            walks: out.walks,
            nanos: out.nanos,
            panic: out.panic,
        }
    }
}

/// A job for a runner thread: given the thread's origin of walk states
/// (its own copy), or `None` when the thread is retired and the job must
/// only answer (its batch will not run). Returns whether the thread goes
/// on.
pub(crate) type Job<S> = Box<dyn FnOnce(Option<&Origin<S>>) -> Next + Send>;

/// Whether a runner thread takes another job.
pub(crate) enum Next {
    Go,
    /// An action panicked: thread-local or captured state of user code may
    /// be broken, so the thread is replaced.
    Stop,
}

/// Jobs waiting for a runner thread. Unbounded: a runner is sent at most
/// its credits of batches at a time (in-process: its own; on a node: the
/// coordinator's `2 × runners`).
pub(crate) type Queue<S> = Arc<Mutex<std::sync::mpsc::Receiver<Job<S>>>>;

/// What happens when a thread stops (after a panic) or dies.
pub(crate) enum Replace<S> {
    /// The owner replaces it (an in-process WalkRunner: its supervisor
    /// spawns a new runner). A death outside the executor's own handling
    /// (a bug) is reported through the callback.
    ByOwner(Box<dyn Fn(String) + Send + Sync>),
    /// It starts its replacement on the same queue, from a clone of this
    /// pristine origin (a node's pool).
    Itself(Arc<Mutex<Origin<S>>>),
}

/// A runner's OS thread: runs its jobs in order, back to back, never on
/// the async executor (user actions may block). Between jobs it parks
/// ("Threads park between jobs" in ARCHITECTURE.md).
pub(crate) struct RunnerThread;

impl RunnerThread {
    /// Starts a thread named `name` over `queue`. When `retired` is set, the
    /// thread answers every job left without running it, then ends.
    pub(crate) fn spawn<S: Send + 'static>(
        name: String,
        origin: Origin<S>,
        queue: Queue<S>,
        retired: Arc<AtomicBool>,
        replace: Arc<Replace<S>>,
    ) -> std::io::Result<()> {
        std::thread::Builder::new().name(name.clone()).spawn(move || {
            // Every panic here is a walk's outcome, already in its report.
            let _quiet = QuietPanics::on_this_thread();
            loop {
                let job = { queue.lock().unwrap_or_else(|p| p.into_inner()).recv() };
                let Ok(job) = job else { return }; // Every sender is gone.
                if retired.load(Ordering::Acquire) {
                    job(None);
                    continue;
                }
                let (stop, died) = match catch_unwind(AssertUnwindSafe(|| job(Some(&origin)))) {
                    Ok(Next::Go) => (false, None),
                    Ok(Next::Stop) => (true, None),
                    Err(payload) => (true, Some(panic_message(payload))),
                };
                if !stop {
                    continue;
                }
                match &*replace {
                    Replace::ByOwner(tell) => {
                        if let Some(message) = died {
                            tell(message);
                        }
                    }
                    Replace::Itself(pristine) => {
                        let fresh = pristine.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        let (queue, retired) = (Arc::clone(&queue), Arc::clone(&retired));
                        let replace = Arc::clone(&replace);
                        if let Err(error) =
                            RunnerThread::spawn(name, fresh, queue, retired, replace)
                        {
                            tracing::error!(%error, "cannot replace a runner thread");
                        }
                    }
                }
                return;
            }
        })?;
        Ok(())
    }
}

/// A run's thread for serial actions (in-process runs: with their
/// per-node step): a plain OS thread, never the async executor, since a
/// serial action may block for as long as it likes or drive its own async
/// runtime (`block_on`, which panics on an executor's thread). It runs one
/// job at a time, as the barrier asks (one serial action at a time), and
/// parks between jobs, like a runner thread. Dropping the handle ends the
/// thread once its job (if any) is done.
pub(crate) struct SerialThread {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl SerialThread {
    /// Starts the thread.
    pub(crate) fn spawn() -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new().name("combtest-serial".to_string()).spawn(move || {
            while let Ok(job) = queue.recv() {
                job();
            }
        })?;
        Ok(SerialThread { jobs })
    }

    /// Runs `job` on the thread and waits for its result without holding
    /// an executor's thread. `Err` if the thread is gone or the job did not
    /// return (it panicked: serial steps catch their own panics, so this is
    /// a bug, reported as such).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job = Box::new(move || {
            let _ = done.send(job());
        });
        self.jobs.send(job).map_err(|_| "the serial thread is gone".to_string())?;
        result.await.map_err(|_| "a serial step ended its thread without a result".to_string())
    }
}

/// A node run's runner threads: `runners` threads over one queue. Dropping
/// the pool retires them: jobs still queued are answered without running.
pub(crate) struct RunnerPool<S> {
    jobs: std::sync::mpsc::Sender<Job<S>>,
    retired: Arc<AtomicBool>,
}

impl<S: Send + 'static> RunnerPool<S> {
    pub(crate) fn start(runners: usize, name: &str, origin: Origin<S>) -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job<S>>();
        let queue = Arc::new(Mutex::new(queue));
        let retired = Arc::new(AtomicBool::new(false));
        let replace = Arc::new(Replace::Itself(Arc::new(Mutex::new(origin.clone()))));
        for index in 0..runners {
            RunnerThread::spawn(
                format!("{name}-{index}"),
                origin.clone(),
                Arc::clone(&queue),
                Arc::clone(&retired),
                Arc::clone(&replace),
            )?;
        }
        Ok(RunnerPool { jobs, retired })
    }

    /// Queues a job. Threads replace themselves, so one is always there;
    /// should they all be gone, the job is answered on a thread of its own
    /// rather than dropped (it holds a coordinator's reply port).
    pub(crate) fn submit(&self, job: Job<S>) {
        if let Err(std::sync::mpsc::SendError(job)) = self.jobs.send(job) {
            std::thread::spawn(move || job(None));
        }
    }
}

impl<S> Drop for RunnerPool<S> {
    fn drop(&mut self) {
        self.retired.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::Cloned;

    #[test]
    fn a_claim_is_settled_once() {
        let claim = Claim::default();
        assert_eq!(claim.take_back(false), Claimed::NotStarted);
        assert!(!claim.start(), "taken back: it must not run");

        let claim = Claim::default();
        assert!(claim.start());
        assert_eq!(claim.take_back(false), Claimed::Running);
        assert_eq!(claim.take_back(true), Claimed::Hung);
        assert!(!claim.deliver(), "given up: its results go nowhere");

        let claim = Claim::default();
        assert!(claim.start() && claim.deliver());
        assert_eq!(claim.take_back(true), Claimed::Running, "delivered: wait for it");
    }

    #[test]
    fn a_pool_replaces_a_thread_that_stops_and_answers_jobs_once_retired() {
        let origin = Origin::new::<Cloned>(7u32, Arc::default());
        let pool = RunnerPool::start(1, "test-runner", origin).unwrap();
        let (sender, seen) = std::sync::mpsc::channel();
        for stop in [true, false] {
            let sender = sender.clone();
            pool.submit(Box::new(move |initial| {
                let state = initial.and_then(|o| o.start.as_any().downcast_ref::<u32>().copied());
                sender.send(state).unwrap();
                if stop { Next::Stop } else { Next::Go }
            }));
        }
        // The second job ran on the replacement, from the pristine state.
        assert_eq!(seen.recv().unwrap(), Some(7));
        assert_eq!(seen.recv().unwrap(), Some(7));
        drop(pool);
    }
}
