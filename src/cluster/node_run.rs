//! A run on a node: the suite's walk order, the node's own origin of walk
//! states and fixtures (from the suite's setup, run on the node: fixtures
//! such as a temp dir or a server belong where the walks run), the walk
//! states held between segments, the per-node serial steps applied so far,
//! and the run's runner threads.
//!
//! Per-node serial steps (`SerialAction::apply_on_node`): a batch's
//! instruction carries its branch's serial steps (the epoch's own and
//! those above it) with their values. Before the first batch of an epoch
//! runs, the node compares them with the steps it has applied, level by
//! level, and applies the ones it has not, in order, holding the epoch's
//! lock (every batch of the epoch waits for them). A node that joined
//! late or reruns a walk so sees the branch's whole history. A step that
//! fails fails every walk of the branch this node runs, with its error;
//! deeper steps are not applied.
//!
//! Batches run through the same `BatchPipeline`, on the same
//! `RunnerThread`s, as an in-process run's; the NodeAgent owns one
//! [`NodeRun`] per run and hands it batches with how to answer them.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use crate::cluster::logs;
use crate::cluster::wire::{BatchRequest, BatchResult, Reply, RunKey, WireInstruction};
use crate::exec::{BatchSettings, ErasedOrder, Instruction, Origin, Runnable};
use crate::model::epoch::{EpochId, SerialStep};
use crate::model::fixtures::StartKind;
use crate::model::node_steps::{AppliedSteps, StepPlan};
use crate::model::pieces::Pieces;
use crate::model::space::Blocks;
use crate::model::trace::{RoundTag, TraceEncoder};
use crate::order::{Chain, WalkOrder};
use crate::runner::{BatchPipeline, Next, RunnerPool};
use crate::store::StateStore;
use crate::trace::option_json;

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
    /// Walks in flight per runner thread (async walk orders).
    pub(crate) in_flight: usize,
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
    /// The decoded instruction of the current epoch, and the per-node
    /// serial steps applied on this node (by level, with their outcome).
    epoch: Mutex<EpochSteps>,
    /// The run's fixtures here (for per-node steps).
    fixtures: Arc<crate::model::fixtures::Fixtures>,
    /// This node's name, for per-node steps and their errors.
    node: String,
}

/// What a node knows of the current epoch and its branch.
#[derive(Default)]
struct EpochSteps {
    instruction: Option<(EpochId, Arc<Instruction>)>,
    applied: AppliedSteps,
}

impl<S: Send + 'static> TypedNodeRun<S> {
    /// A run of the walk order `order` from `origin` on this node (what a
    /// [`NodeSuite`](crate::cluster::NodeSuite) of an order opens, once its
    /// setup gave the origin), tracing its walks if `spec` asks.
    pub(crate) fn of_order<C, K>(
        order: &WalkOrder<S, C>,
        origin: Origin<S>,
        spec: &NodeRunSpec,
        encode_state: fn(&S) -> postcard::Result<Vec<u8>>,
    ) -> Result<Self, String>
    where
        S: std::fmt::Debug,
        C: Chain<S>,
        K: StartKind<S>,
    {
        let runnable = Runnable::<S, C, K>::new(order.clone()).map_err(|e| e.to_string())?;
        let space = runnable.space().clone();
        let encoder = match spec.trace {
            true => {
                let values = option_json(order, &space).map_err(|e| e.to_string())?;
                Some(TraceEncoder::new(spec.suite.clone(), space, values).with_round(spec.round))
            }
            false => None,
        };
        TypedNodeRun::start(Arc::new(runnable), origin, spec, encoder, encode_state)
    }

    /// A run of `order` from `origin` (walk states and fixtures), with
    /// `spec`'s settings; starts its runner threads.
    pub(crate) fn start(
        order: Arc<dyn ErasedOrder<S>>,
        origin: Origin<S>,
        spec: &NodeRunSpec,
        encoder: Option<TraceEncoder>,
        encode_state: fn(&S) -> postcard::Result<Vec<u8>>,
    ) -> Result<Self, String> {
        let pipeline = BatchPipeline {
            order,
            store: Arc::new(StateStore::new()),
            settings: BatchSettings {
                blocks: spec.blocks,
                gather: spec.gather,
                trace: spec.trace,
                in_flight: spec.in_flight,
            },
            encoder: encoder.map(Arc::new),
            name: spec.node.clone(),
        };
        let fixtures = Arc::clone(&origin.fixtures);
        let pool = RunnerPool::start(spec.runners, "combtest-node-runner", origin)
            .map_err(|e| format!("cannot start runner threads: {e}"))?;
        let inner = Inner {
            run: spec.run,
            pipeline,
            encode_state,
            epoch: Mutex::new(EpochSteps::default()),
            fixtures,
            node: spec.node.clone(),
        };
        Ok(TypedNodeRun { inner: Arc::new(inner), pool })
    }
}

impl<S: Send + 'static> NodeRun for TypedNodeRun<S> {
    fn submit(
        &self,
        request: BatchRequest,
        gate: Gate,
        answer: Box<dyn FnOnce(NodeAnswer) + Send>,
    ) {
        let inner = Arc::clone(&self.inner);
        self.pool.submit(Box::new(move |initial: Option<&Origin<S>>| {
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

impl<S: Send + 'static> Inner<S> {
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

    /// The batch's instruction, decoded once per epoch, after the per-node
    /// serial steps of its branch this node has not applied (see the
    /// module doc). A failed step turns it into a failed branch.
    fn instruction(&self, request: &BatchRequest) -> Result<Arc<Instruction>, String> {
        let mut epoch = self.epoch.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, instruction)) = &epoch.instruction
            && *id == request.epoch.id
        {
            return Ok(Arc::clone(instruction));
        }
        let order = &self.pipeline.order;
        let instruction = match (&request.instruction, request.epoch.serial) {
            (WireInstruction::Run { value: Some(bytes), history }, Some(step)) => {
                let value = order.decode_value(step, bytes)?;
                let mut path = Vec::with_capacity(history.len() + 1);
                for (step, bytes) in history {
                    path.push((*step, order.decode_value(*step, bytes)?));
                }
                path.push((step, value.clone()));
                match self.apply_steps(&mut epoch.applied, &path) {
                    Ok(()) => Instruction::Run(Some(value), Arc::default()),
                    Err(error) => Instruction::FailBranch(error),
                }
            }
            (WireInstruction::Run { value: Some(_), .. }, None) => {
                return Err("a serial value for an epoch without a serial action".to_string());
            }
            (WireInstruction::Run { value: None, .. }, _) => Instruction::Run(None, Arc::default()),
            (WireInstruction::FailBranch(error), _) => Instruction::FailBranch(error.clone()),
        };
        let instruction = Arc::new(instruction);
        epoch.instruction = Some((request.epoch.id, Arc::clone(&instruction)));
        Ok(instruction)
    }

    /// Applies the steps of `path` (a branch's serial steps, by level, with
    /// their values) that `applied` does not hold yet, in order. Returns
    /// the error of the first failed step on the path, if any.
    fn apply_steps(
        &self,
        applied: &mut AppliedSteps,
        path: &[(SerialStep, crate::order::SerialValue)],
    ) -> Result<(), String> {
        let steps: Vec<SerialStep> = path.iter().map(|(step, _)| *step).collect();
        let kept = match applied.plan(&steps) {
            StepPlan::ApplyFrom(kept) => kept,
            StepPlan::Failed(error) => return Err(error),
        };
        let order = &self.pipeline.order;
        let branch: Vec<u32> = path.iter().map(|(step, _)| step.option).collect();
        for (level, (step, value)) in path.iter().enumerate().skip(kept) {
            let fixtures = &self.fixtures;
            let prefix = &branch[..=level];
            let outcome = order.node_step(*step, prefix, value, fixtures, Some(&self.node));
            let outcome = outcome.map_err(|error| {
                let name = order.space().entries()[step.position].name;
                format!("{name}'s step on node {} failed: {error}", self.node)
            });
            tracing::debug!(
                position = step.position,
                option = step.option,
                ok = outcome.is_ok(),
                "per-node serial step applied"
            );
            applied.record(*step, outcome.clone());
            outcome?;
        }
        Ok(())
    }

    /// Runs one batch on the calling thread. `Err` only for a request that
    /// does not fit the run (a bug on one side), never for a failing walk.
    fn execute(&self, request: &BatchRequest, origin: &Origin<S>) -> Result<BatchResult, String> {
        self.check(request)?;
        let instruction = self.instruction(request)?;
        let (epoch, ranges) = (&request.epoch, &request.ranges);
        let pieces = Pieces::from(ranges.as_slice());
        let input = self.pipeline.input(epoch, &pieces).map_err(|start| {
            format!("the walk states of the block starting at walk {start} are not on this node")
        })?;
        let ran = self.pipeline.run(epoch, &instruction, pieces.walks(), input, origin);
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
