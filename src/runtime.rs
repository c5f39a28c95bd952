//! Running a walk order: [`run`] (blocking) and [`run_async`].

use std::sync::Arc;
use std::time::Instant;

use ractor::Actor;
use thiserror::Error;
use tokio::sync::oneshot;

use crate::actors::run_supervisor::{RunContext, RunSupervisor};
use crate::exec::{ErasedOrder, Runnable};
use crate::model::outcome::Report;
use crate::model::space::OrderError;
use crate::order::{Chain, WalkOrder};

/// How to run a walk order.
#[derive(Debug, Clone)]
pub struct RunOptions<S> {
    initial: S,
    threads: Option<usize>,
    gather_states: bool,
}

impl<S: Default> Default for RunOptions<S> {
    fn default() -> Self {
        RunOptions::new(S::default())
    }
}

impl<S> RunOptions<S> {
    /// Every walk starts from a clone of `initial`.
    pub fn new(initial: S) -> Self {
        RunOptions { initial, threads: None, gather_states: false }
    }

    /// Number of runner threads: walks running at once. Defaults to the
    /// available parallelism; set it far higher for actions that wait on I/O.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Keep the final state of every walk in the report (memory grows with
    /// the number of walks).
    pub fn gather_states(mut self, gather: bool) -> Self {
        self.gather_states = gather;
        self
    }

    /// The runner threads this run will use.
    pub fn effective_threads(&self) -> usize {
        self.threads.unwrap_or_else(default_threads)
    }
}

/// The default number of runner threads: the machine's available
/// parallelism.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Most runner threads a run accepts.
pub const MAX_THREADS: usize = 4096;

/// Why a run could not produce a report. Failing walks are not errors: they
/// are in the report.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RunError {
    /// The walk order cannot be run.
    #[error("invalid walk order: {0}")]
    InvalidOrder(#[from] OrderError),
    /// The thread count is out of range.
    #[error("invalid thread count {0}: use 1 to {MAX_THREADS}")]
    InvalidThreads(usize),
    /// `run` was called from inside a tokio runtime.
    #[error("`run` cannot block inside an async runtime: call `run_async(...).await` instead")]
    InsideRuntime,
    /// The runtime could not be built.
    #[error("could not start the async runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The actors of the run broke an invariant: a bug in combtest.
    #[error("internal error (a bug in combtest, please report it): {0}")]
    Internal(String),
}

/// Runs every walk of `order`, blocking until the report is ready. Creates
/// its own async runtime; from async code, use [`run_async`].
pub fn run<S, C>(order: &WalkOrder<S, C>, options: RunOptions<S>) -> Result<Report<S>, RunError>
where
    S: Clone + Send + 'static,
    C: Chain<S>,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(RunError::InsideRuntime);
    }
    let threads = options.effective_threads();
    if threads == 0 || threads > MAX_THREADS {
        return Err(RunError::InvalidThreads(threads));
    }
    // The actors need little: two workers. Walks run on blocking threads,
    // one per runner, plus one for serial actions.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(threads + 2)
        .thread_name("combtest")
        .enable_all()
        .build()?;
    let result = runtime.block_on(run_async(order, options));
    // Every task is done; the idle blocking threads (one per runner) exit on
    // their own. Joining them one by one would add milliseconds to the run.
    runtime.shutdown_background();
    result
}

/// Runs every walk of `order` on the current tokio runtime (multi-threaded;
/// walks run on its blocking pool, so its `max_blocking_threads` must allow
/// the requested threads).
pub async fn run_async<S, C>(
    order: &WalkOrder<S, C>,
    options: RunOptions<S>,
) -> Result<Report<S>, RunError>
where
    S: Clone + Send + 'static,
    C: Chain<S>,
{
    let started = Instant::now();
    let threads = options.effective_threads();
    if threads == 0 || threads > MAX_THREADS {
        return Err(RunError::InvalidThreads(threads));
    }
    let runnable: Arc<dyn ErasedOrder<S>> = Arc::new(Runnable::new(order.clone())?);
    let (reply, report) = oneshot::channel();
    let context = RunContext {
        order: runnable,
        initial: options.initial,
        runners: threads,
        gather: options.gather_states,
        reply,
    };
    let (supervisor, handle) = Actor::spawn(None, RunSupervisor::new(), context)
        .await
        .map_err(|e| RunError::Internal(format!("could not start the run: {e}")))?;
    // If this future is dropped mid-run, stop the actors with it.
    let guard = StopOnDrop(Some(supervisor.get_cell()));
    let result = report.await.unwrap_or_else(|_| {
        Err(RunError::Internal("the run supervisor stopped without a report".to_string()))
    });
    drop(guard);
    let _ = handle.await;
    result.map(|mut report| {
        report.elapsed = started.elapsed();
        report
    })
}

struct StopOnDrop(Option<ractor::ActorCell>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(cell) = self.0.take() {
            cell.stop(None);
        }
    }
}
