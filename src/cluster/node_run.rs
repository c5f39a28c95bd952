//! A run on a node: the suite's walk order, the node's own initial state
//! (from the suite's setup, run on the node: fixtures such as a temp dir or
//! a server belong where the walks run), the walk states held between
//! segments, and the run's runner threads.
//!
//! Batches run through the same `BatchPipeline`, on the same
//! `RunnerThread`s, as an in-process run's; the NodeAgent owns one
//! [`NodeRun`] per run and hands it batches with how to answer them.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use crate::cluster::logs;
use crate::cluster::wire::{BatchRequest, BatchResult, Reply, RunKey, WireInstruction};
use crate::exec::{BatchSettings, ErasedOrder, Instruction};
use crate::model::epoch::EpochId;
use crate::model::space::Blocks;
use crate::model::trace::{RoundTag, TraceEncoder};
use crate::runner::{BatchPipeline, Next, RunnerPool};
use crate::store::StateStore;

/// How a run on a node ended a batch.
#[doc(hidden)]
pub enum NodeAnswer {
    /// It ran.
    Ran(BatchResult),
    /// It did not run; answer this (`NotStarted`, `Expired`).
    Skipped(Reply),
    /// The request does not fit the run (a bug on one side), or the batch
    /// panicked outside any action.
    Failed(String),
}

/// Whether a batch may start now.
#[doc(hidden)]
pub enum Admit {
    /// It may.
    Run,
    /// Not yet: the run is suspended (its lease ran out; its coordinator
    /// may have been paused and come back).
    Wait,
    /// Never: answer this instead (the run is stopping, or gone).
    Skip(Reply),
}

/// Decides, just before a batch starts, whether it may.
#[doc(hidden)]
pub type Gate = Arc<dyn Fn() -> Admit + Send + Sync>;

/// How often a batch of a suspended run looks again.
const SUSPENDED_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// A suite's run on a node, with the walk state's type erased.
#[doc(hidden)]
pub trait NodeRun: Send + Sync {
    /// Queues a batch on the run's threads; `answer` is called exactly once.
    #[doc(hidden)]
    fn submit(&self, request: BatchRequest, gate: Gate, answer: Box<dyn FnOnce(NodeAnswer) + Send>);
}

/// How a node run is set up, from the coordinator's `Hello`.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct NodeRunSpec {
    pub(crate) run: RunKey,
    pub(crate) runners: usize,
    pub(crate) blocks: Blocks,
    pub(crate) gather: bool,
    pub(crate) trace: bool,
    /// A soak round, tagged on every trace line.
    pub(crate) round: Option<RoundTag>,
    /// The suite's name, for trace lines.
    pub(crate) suite: String,
    /// The node's name, for trace lines.
    pub(crate) node: String,
}

/// The typed run behind [`NodeRun`].
pub(crate) struct TypedNodeRun<S> {
    inner: Arc<Inner<S>>,
    pool: RunnerPool<S>,
}

struct Inner<S> {
    run: RunKey,
    pipeline: BatchPipeline<S>,
    encode_state: fn(&S) -> postcard::Result<Vec<u8>>,
    /// The decoded instruction of the current epoch.
    instruction: Mutex<Option<(EpochId, Arc<Instruction>)>>,
    /// Kept alive until the run is dropped (temp dirs, servers).
    _guard: Mutex<Box<dyn Send>>,
}

impl<S: Clone + Send + 'static> TypedNodeRun<S> {
    /// A run of `order` from `initial`, with `spec`'s settings; starts its
    /// runner threads.
    pub(crate) fn start(
        order: Arc<dyn ErasedOrder<S>>,
        initial: S,
        guard: Box<dyn Send>,
        spec: &NodeRunSpec,
        encoder: Option<TraceEncoder>,
        encode_state: fn(&S) -> postcard::Result<Vec<u8>>,
    ) -> Result<Self, String> {
        let pipeline = BatchPipeline {
            order,
            store: Arc::new(StateStore::new()),
            settings: BatchSettings { blocks: spec.blocks, gather: spec.gather, trace: spec.trace },
            encoder: encoder.map(Arc::new),
            name: spec.node.clone(),
        };
        let pool = RunnerPool::start(spec.runners, "combtest-node-runner", initial)
            .map_err(|e| format!("cannot start runner threads: {e}"))?;
        let inner = Inner {
            run: spec.run,
            pipeline,
            encode_state,
            instruction: Mutex::new(None),
            _guard: Mutex::new(guard),
        };
        Ok(TypedNodeRun { inner: Arc::new(inner), pool })
    }
}

impl<S: Clone + Send + 'static> NodeRun for TypedNodeRun<S> {
    fn submit(
        &self,
        request: BatchRequest,
        gate: Gate,
        answer: Box<dyn FnOnce(NodeAnswer) + Send>,
    ) {
        let inner = Arc::clone(&self.inner);
        self.pool.submit(Box::new(move |initial: Option<&S>| {
            let Some(initial) = initial else {
                answer(NodeAnswer::Skipped(Reply::Expired("the run was closed".to_string())));
                return Next::Go;
            };
            loop {
                match gate() {
                    Admit::Run => break,
                    Admit::Wait => std::thread::sleep(SUSPENDED_POLL),
                    Admit::Skip(reply) => {
                        answer(NodeAnswer::Skipped(reply));
                        return Next::Go;
                    }
                }
            }
            let _scope = logs::Scope::enter(inner.run);
            match catch_unwind(AssertUnwindSafe(|| inner.execute(&request, initial))) {
                Ok(Ok(result)) => {
                    let restarted = result.restarted;
                    answer(NodeAnswer::Ran(result));
                    if restarted { Next::Stop } else { Next::Go }
                }
                Ok(Err(error)) => {
                    answer(NodeAnswer::Failed(error));
                    Next::Go
                }
                Err(_) => {
                    let error = "the batch panicked outside any action".to_string();
                    answer(NodeAnswer::Failed(error));
                    Next::Stop
                }
            }
        }));
    }
}

/// Whether a batch's ranges are sorted, disjoint, non-empty and inside its
/// epoch.
fn ranges_fit(ranges: &[Range<u64>], epoch: &Range<u64>) -> bool {
    !ranges.is_empty()
        && ranges.iter().all(|r| r.start < r.end && r.start >= epoch.start && r.end <= epoch.end)
        && ranges.windows(2).all(|w| w[0].end <= w[1].start)
}

impl<S: Clone + Send + 'static> Inner<S> {
    fn check(&self, request: &BatchRequest) -> Result<(), String> {
        let space = self.pipeline.order.space();
        let epoch = &request.epoch;
        let fits = epoch.walks.end <= space.size()
            && ranges_fit(&request.ranges, &epoch.walks)
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
            Err(format!(
                "batch {} does not fit the walk space (ranges overlapping, out of order or \
                 outside their epoch)",
                request.batch
            ))
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
                Instruction::Run(Some(self.pipeline.order.decode_value(step, bytes)?))
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

    /// Runs one batch on the calling thread. `Err` only for a request that
    /// does not fit the run (a bug on one side), never for a failing walk.
    fn execute(&self, request: &BatchRequest, initial: &S) -> Result<BatchResult, String> {
        self.check(request)?;
        let instruction = self.instruction(request)?;
        let (epoch, ranges) = (&request.epoch, &request.ranges);
        let input = self.pipeline.input(epoch, ranges).map_err(|start| {
            format!("the walk states of the block starting at walk {start} are not on this node")
        })?;
        let ran = self.pipeline.run(epoch, &instruction, ranges, input, initial);
        let mut finals = Vec::with_capacity(ran.finals.len());
        for (walk, state) in &ran.finals {
            let bytes = (self.encode_state)(state)
                .map_err(|e| format!("cannot encode the final state of walk {}: {e}", walk.0))?;
            finals.push((walk.0, bytes));
        }
        let failed = ran.failed;
        Ok(BatchResult {
            counts: ran.counts,
            failed,
            neither: ran.neither.into_iter().map(|r| (r.start, r.end)).collect(),
            finals,
            lines: ran.lines,
            records: ran.records,
            failed_nanos: ran.failed_nanos,
            live: ran.live,
            walks: ran.walks,
            nanos: ran.nanos,
            restarted: ran.panic.is_some(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_or_unsorted_ranges_do_not_fit() {
        assert!(ranges_fit(&[0..2, 2..4, 6..8], &(0..8)));
        assert!(!ranges_fit(&[0..3, 2..4], &(0..8)), "overlapping");
        assert!(!ranges_fit(&[4..6, 0..2], &(0..8)), "out of order");
        assert!(!ranges_fit(&[6..9], &(0..8)), "outside the epoch");
        assert!(!ranges_fit(&[3..3], &(0..8)), "empty");
        assert!(!ranges_fit(&[], &(0..8)));
    }
}
