//! Scheduler: fans the walks of one epoch out to the WalkRunners in batches,
//! with credit-based flow control, and reports when the epoch is done.
//!
//! - Receives `RunEpoch` from the SerialBarrier (one epoch at a time: the
//!   barrier sends the next only after `EpochDone`), `BatchDone` from
//!   WalkRunners, `RunnerUp` from the RunSupervisor (a runner started or
//!   was replaced).
//! - Sends `RunBatch` to WalkRunners and `EpochDone` to the SerialBarrier
//!   once every batch of the epoch is acknowledged and none is outstanding:
//!   at that moment no segment runs anywhere.
//! - Supervised by the RunSupervisor; its failure ends the run.
//!
//! Batches are id ranges, never single walks. Their size adapts so each
//! takes about [`TARGET_BATCH`] on a runner (measured from acknowledged
//! batches), and shrinks near the end of an epoch so the tail spreads over
//! every runner. Epochs after the first run on held states, so their batches
//! are cut on block boundaries (see `Blocks`).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::actors::serial_barrier::SerialBarrierMsg;
use crate::actors::walk_runner::WalkRunnerMsg;
use crate::exec::Instruction;
use crate::model::epoch::Epoch;
use crate::model::space::Blocks;

/// Wall time a batch should take on a runner: long enough that the per-batch
/// cost (two messages and a blocking-thread hop, tens of microseconds) is
/// noise, short enough to balance load.
pub(crate) const TARGET_BATCH: Duration = Duration::from_millis(4);
/// Batches in flight per runner: one running, one waiting in its mailbox.
pub(crate) const CREDITS_PER_RUNNER: usize = 2;
/// Size of the first batches, before anything is measured: one walk, so
/// slow walks (I/O) spread over every runner from the start; fast walks
/// reach full-size batches after a round trip or two.
const FIRST_BATCH: u64 = 1;
/// Upper bound on a batch, whatever the measurement says.
const MAX_BATCH: u64 = 1 << 20;

/// Identifies a batch within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BatchId(pub(crate) u64);

/// A batch: a range of walks of one epoch and what to do with them.
#[derive(Debug, Clone)]
pub(crate) struct BatchJob {
    pub(crate) id: BatchId,
    pub(crate) epoch: Arc<Epoch>,
    pub(crate) instruction: Arc<Instruction>,
    pub(crate) range: Range<u64>,
}

/// Requests and events to the Scheduler.
pub(crate) enum SchedulerMsg {
    /// Run this epoch's segment (or fail its branch) on every walk of it.
    RunEpoch { epoch: Arc<Epoch>, instruction: Arc<Instruction> },
    /// A runner finished a batch (its outcome is already with the Collector).
    BatchDone { runner: usize, batch: BatchId, walks: u64, nanos: u64 },
    /// Runner `index` is (again) available at `runner`. Batches outstanding
    /// on its previous incarnation are re-sent to it.
    RunnerUp { index: usize, runner: ActorRef<WalkRunnerMsg> },
}

pub(crate) struct SchedulerArgs {
    pub(crate) runners: usize,
    pub(crate) blocks: Blocks,
    pub(crate) barrier: ActorRef<SerialBarrierMsg>,
}

pub(crate) struct Scheduler;

pub(crate) struct SchedulerState {
    args: SchedulerArgs,
    runners: Vec<Option<ActorRef<WalkRunnerMsg>>>,
    credits: Vec<usize>,
    outstanding: HashMap<BatchId, (usize, BatchJob)>,
    current: Option<EpochCursor>,
    next_batch: u64,
    /// Measured cost per walk.
    cost: WalkCost,
}

/// The measured cost of a walk: nanoseconds over walks of recent batches,
/// both halved at every batch. A batch weighs by its walks, so a one-walk
/// probe (mostly fixed overhead) is outweighed at once by the first real
/// batch, and a change of cost between epochs shows within a few batches.
#[derive(Debug, Clone, Copy, Default)]
struct WalkCost {
    nanos: f64,
    walks: f64,
}

impl WalkCost {
    fn add(&mut self, nanos: u64, walks: u64) {
        self.nanos = self.nanos / 2.0 + nanos as f64;
        self.walks = self.walks / 2.0 + walks as f64;
    }

    fn nanos_per_walk(&self) -> Option<f64> {
        (self.walks > 0.0).then(|| self.nanos / self.walks)
    }
}

/// The undispatched rest of the current epoch.
struct EpochCursor {
    epoch: Arc<Epoch>,
    instruction: Arc<Instruction>,
    next: u64,
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = SchedulerArgs;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        args: SchedulerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SchedulerState {
            runners: vec![None; args.runners],
            credits: vec![CREDITS_PER_RUNNER; args.runners],
            args,
            outstanding: HashMap::new(),
            current: None,
            next_batch: 0,
            cost: WalkCost::default(),
        })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SchedulerMsg::RunEpoch { epoch, instruction } => {
                state.start_epoch(epoch, instruction)?
            }
            SchedulerMsg::BatchDone { runner, batch, walks, nanos } => {
                state.batch_done(runner, batch, walks, nanos)?
            }
            SchedulerMsg::RunnerUp { index, runner } => state.runner_up(index, runner)?,
        }
        Ok(())
    }
}

/// Batch size given the measured cost per walk, the number of runners and
/// the walks left in the epoch: about `TARGET_BATCH` of work, less near the
/// end of the epoch so the tail spreads over every runner, but not below a
/// 32nd of the target, about 125 µs (smaller batches would cost more in
/// round trips than they save in balance).
fn batch_len(nanos_per_walk: Option<f64>, runners: usize, remaining: u64) -> u64 {
    let by_time = match nanos_per_walk {
        Some(ns) if ns > 0.0 => (TARGET_BATCH.as_nanos() as f64 / ns) as u64,
        Some(_) => MAX_BATCH,
        None => FIRST_BATCH,
    };
    let tail = remaining.div_ceil(2 * runners as u64);
    by_time.min(tail.max(by_time / 32)).clamp(1, MAX_BATCH)
}

impl SchedulerState {
    fn start_epoch(
        &mut self,
        epoch: Arc<Epoch>,
        instruction: Arc<Instruction>,
    ) -> Result<(), ActorProcessingErr> {
        if self.current.is_some() || !self.outstanding.is_empty() {
            return Err("a new epoch arrived before the previous one was done".into());
        }
        let next = epoch.walks.start;
        self.current = Some(EpochCursor { epoch, instruction, next });
        self.dispatch()
    }

    fn batch_done(
        &mut self,
        runner: usize,
        batch: BatchId,
        walks: u64,
        nanos: u64,
    ) -> Result<(), ActorProcessingErr> {
        if self.outstanding.remove(&batch).is_none() {
            return Err(format!("runner {runner} acknowledged unknown batch {batch:?}").into());
        }
        self.credits[runner] += 1;
        if walks > 0 {
            self.cost.add(nanos, walks);
        }
        self.dispatch()
    }

    fn runner_up(
        &mut self,
        index: usize,
        runner: ActorRef<WalkRunnerMsg>,
    ) -> Result<(), ActorProcessingErr> {
        // Batches sent to the previous incarnation never started: its mailbox
        // died with it, and the store still holds their states.
        let resend: Vec<BatchJob> = self
            .outstanding
            .values()
            .filter(|(r, _)| *r == index)
            .map(|(_, job)| job.clone())
            .collect();
        for job in resend {
            if runner.cast(WalkRunnerMsg::RunBatch(job)).is_err() {
                // Died already; its replacement will get these again.
                return Ok(());
            }
        }
        self.runners[index] = Some(runner);
        self.dispatch()
    }

    /// Hands batches of the current epoch to runners with credit; reports the
    /// epoch done when nothing is left to send or to wait for.
    fn dispatch(&mut self) -> Result<(), ActorProcessingErr> {
        let Some(cursor) = &self.current else {
            return Ok(());
        };
        let end = cursor.epoch.walks.end;
        for index in 0..self.runners.len() {
            let Some(runner) = self.runners[index].clone() else {
                continue;
            };
            while self.credits[index] > 0 {
                let Some(cursor) = &mut self.current else {
                    break;
                };
                if cursor.next >= end {
                    break;
                }
                let len =
                    batch_len(self.cost.nanos_per_walk(), self.runners.len(), end - cursor.next);
                let mut stop = (cursor.next + len).min(end);
                if !(cursor.epoch.first && cursor.epoch.last) {
                    // Held states are stored and moved block by block.
                    stop = self.args.blocks.round_up(stop).min(end);
                }
                let job = BatchJob {
                    id: BatchId(self.next_batch),
                    epoch: Arc::clone(&cursor.epoch),
                    instruction: Arc::clone(&cursor.instruction),
                    range: cursor.next..stop,
                };
                cursor.next = stop;
                self.next_batch += 1;
                self.credits[index] -= 1;
                self.outstanding.insert(job.id, (index, job.clone()));
                if runner.cast(WalkRunnerMsg::RunBatch(job)).is_err() {
                    // The runner is dying (it failed after a panic). Its
                    // supervisor replaces it, and `RunnerUp` re-sends what is
                    // outstanding on it, this batch included.
                    self.runners[index] = None;
                    break;
                }
            }
        }
        let finished = self.current.as_ref().is_some_and(|c| c.next >= end);
        if finished && self.outstanding.is_empty() {
            let cursor = self.current.take().expect("checked above");
            self.args.barrier.cast(SerialBarrierMsg::EpochDone(cursor.epoch.id))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_the_measured_cost() {
        // Unmeasured: small probes.
        assert_eq!(batch_len(None, 2, 1_000_000), FIRST_BATCH);
        // 2 ns per walk: 2 million walks make 4 ms.
        assert_eq!(batch_len(Some(2.0), 2, 10_000_000), 2_000_000.min(MAX_BATCH));
        // 1 ms per walk: four walks make 4 ms; 10 ms per walk: one.
        assert_eq!(batch_len(Some(1e6), 64, 100_000), 4);
        assert_eq!(batch_len(Some(1e7), 64, 100_000), 1);
        // The tail of an epoch is spread over every runner, down to a 32nd
        // of the target.
        assert_eq!(batch_len(Some(2.0), 2, 1_000_000), 250_000);
        assert_eq!(batch_len(Some(2.0), 2, 1_000), 62_500);
        assert_eq!(batch_len(Some(1e6), 4, 16), 2);
    }

    #[test]
    fn a_big_batch_outweighs_a_probe() {
        let mut cost = WalkCost::default();
        cost.add(50_000, 1); // A one-walk probe: mostly fixed overhead.
        cost.add(10_000_000, 1_000_000);
        let ns = cost.nanos_per_walk().unwrap();
        assert!((10.0..10.2).contains(&ns), "{ns}");
    }
}
