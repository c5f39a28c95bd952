//! Scheduler: fans the walks of one epoch out to the WalkRunners (or, in a
//! cluster run, the NodeLinks) in batches, with credit-based flow control,
//! and reports when the epoch is done.
//!
//! - Receives `RunEpoch` from the SerialBarrier (one epoch at a time: the
//!   barrier sends the next only after `EpochDone`), `BatchDone` from
//!   WalkRunners and NodeLinks, `EndpointUp` from the RunSupervisor (a
//!   runner or link started, or a runner was replaced), `NodeLost` from a
//!   NodeLink.
//! - Sends `RunBatch` to its endpoints and `EpochDone` to the SerialBarrier
//!   once every batch of the epoch is acknowledged and none is outstanding:
//!   at that moment no segment runs anywhere. After a node loss it sends the
//!   aborted walks to the Collector, or `AllNodesLost` to the RunSupervisor.
//! - Supervised by the RunSupervisor; its failure ends the run.
//!
//! Each endpoint is a *slot* with credits and a *home* (where the states it
//! holds live). In a cluster run the Scheduler tracks, in `Holdings`, which
//! node holds which walks, and sends later segments only there (sticky
//! routing).
//!
//! Batches are id ranges, never single walks. Their size adapts so each
//! takes about [`TARGET_BATCH`] on a runner (measured from acknowledged
//! batches), and shrinks near the end of an epoch so the tail spreads over
//! every runner. Epochs after the first run on held states, so their batches
//! are cut on block boundaries (see `Blocks`).

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::actors::node_link::NodeLinkMsg;
use crate::actors::run_supervisor::RunSupervisorMsg;
use crate::actors::serial_barrier::SerialBarrierMsg;
use crate::actors::walk_runner::WalkRunnerMsg;
use crate::actors::walk_runner::timeout_error;
use crate::exec::{Instruction, NODE_LOST_ACTION, WALK_TIMEOUT_ACTION};
use crate::model::epoch::Epoch;
use crate::model::holdings::{Holdings, LiveSet};
use crate::model::outcome::AbortedWalks;
use crate::model::sample::WalkSample;
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

/// A batch: walks of one epoch, as id ranges (usually one; several when the
/// run covers a sample of the space, or held pieces meet), and what to do
/// with them.
#[derive(Debug, Clone)]
pub(crate) struct BatchJob {
    pub(crate) id: BatchId,
    pub(crate) epoch: Arc<Epoch>,
    pub(crate) instruction: Arc<Instruction>,
    pub(crate) ranges: Vec<Range<u64>>,
}

impl BatchJob {
    /// Walks in the batch.
    pub(crate) fn walks(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }
}

/// Where batches go: a local WalkRunner, or the NodeLink of a cluster node.
#[derive(Clone)]
pub(crate) enum Endpoint {
    Runner(ActorRef<WalkRunnerMsg>),
    Node(ActorRef<NodeLinkMsg>),
}

impl Endpoint {
    /// Sends a batch; false if the endpoint is gone.
    fn send(&self, job: BatchJob) -> bool {
        match self {
            Endpoint::Runner(runner) => runner.cast(WalkRunnerMsg::RunBatch(job)).is_ok(),
            Endpoint::Node(link) => link.cast(NodeLinkMsg::RunBatch(job)).is_ok(),
        }
    }
}

/// Outcomes only the Scheduler knows of, after a node loss.
pub(crate) trait Outcomes: Send {
    /// Walks whose state was lost.
    fn aborted(&self, walks: AbortedWalks) -> Result<(), String>;
    /// A node was lost.
    fn lost(&self, node: String) -> Result<(), String>;
    /// Walks `ids` of `epoch` failed with `error` (blaming `action`), in no
    /// batch: they are counted and traced here.
    fn failed(
        &self,
        epoch: &Epoch,
        ids: &[u64],
        action: &'static str,
        error: &str,
    ) -> Result<(), String>;
}

/// Requests and events to the Scheduler.
pub(crate) enum SchedulerMsg {
    /// Run this epoch's segment (or fail its branch) on every walk of it.
    RunEpoch { epoch: Arc<Epoch>, instruction: Arc<Instruction> },
    /// Slot `slot` finished a batch (its outcome is already with the
    /// Collector). In cluster runs, `live` says which walks of the batch go
    /// on to a later segment.
    BatchDone { slot: usize, batch: BatchId, walks: u64, nanos: u64, live: Option<LiveSet> },
    /// Slot `slot` is (again) available at `endpoint`. Batches outstanding on
    /// its previous incarnation are re-sent to it.
    EndpointUp { slot: usize, endpoint: Endpoint },
    /// A new slot (a restarted node rejoining), at the next index.
    SlotAdded { spec: SlotSpec, endpoint: Endpoint },
    /// The node behind slot `slot` is lost: re-run what can be rebuilt
    /// elsewhere, abort the walks whose state went with it. With
    /// `timed_out`, that batch's walks ran past the walk timeout: they fail.
    NodeLost { slot: usize, node: String, reason: String, timed_out: Option<(BatchId, Duration)> },
}

// Local only: never crosses a node.
impl ractor::Message for SchedulerMsg {}

/// One place batches go, fixed at the start of the run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotSpec {
    /// Batches in flight at once.
    pub(crate) credits: usize,
    /// Where the walk states it holds live: slots with the same home share
    /// a state store (in-process: every runner; in a cluster: one node).
    pub(crate) home: usize,
}

pub(crate) struct SchedulerArgs {
    pub(crate) slots: Vec<SlotSpec>,
    /// Runner threads over every slot (for batch sizing).
    pub(crate) runners: usize,
    pub(crate) blocks: Blocks,
    /// Largest batch, in walks (the `batch_size` setting); `None`: adaptive.
    pub(crate) max_batch: Option<u64>,
    /// Run only these walks.
    pub(crate) sample: Option<WalkSample>,
    /// Route later segments to the home of their walks' states and track
    /// which are live (cluster runs); in-process every runner shares one
    /// store and nothing needs tracking.
    pub(crate) sticky: bool,
    pub(crate) barrier: ActorRef<SerialBarrierMsg>,
    /// Where the Scheduler's own outcomes go (the Collector, whose message
    /// type carries the walk state's type, which the Scheduler does not
    /// know; and the trace).
    pub(crate) outcomes: Box<dyn Outcomes>,
    pub(crate) supervisor: ActorRef<RunSupervisorMsg>,
    /// Set to stop dispatching: the walks in flight finish, then the run
    /// ends as interrupted (a soak's Ctrl-C or deadline).
    pub(crate) interrupt: Option<Arc<std::sync::atomic::AtomicBool>>,
}

pub(crate) struct Scheduler;

struct Slot {
    endpoint: Option<Endpoint>,
    credits: usize,
    home: usize,
    /// Its node is lost for good.
    lost: bool,
}

pub(crate) struct SchedulerState {
    args: SchedulerArgs,
    slots: Vec<Slot>,
    outstanding: HashMap<BatchId, (usize, BatchJob)>,
    current: Option<Work>,
    /// Where held states live, in cluster runs.
    holdings: Option<Holdings>,
    /// Walks re-run because their node was lost while running them.
    suspects: std::collections::BTreeSet<u64>,
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

/// The undispatched rest of the current epoch: ranges any slot may run, and
/// ranges only the slots of one home may run (their states live there).
struct Work {
    epoch: Arc<Epoch>,
    instruction: Arc<Instruction>,
    any: VecDeque<Range<u64>>,
    homes: HashMap<usize, VecDeque<Range<u64>>>,
    remaining: u64,
}

impl Work {
    /// Takes the next ranges for a slot at `home`, about `len` walks (more
    /// only to reach a block boundary when `whole_blocks`), from one queue.
    fn take(
        &mut self,
        home: usize,
        len: u64,
        blocks: &Blocks,
        whole_blocks: bool,
    ) -> Vec<Range<u64>> {
        let queue = match self.homes.get_mut(&home) {
            Some(queue) if !queue.is_empty() => queue,
            _ => &mut self.any,
        };
        let mut taken = Vec::new();
        let mut walks = 0;
        while walks < len {
            let Some(range) = queue.pop_front() else { break };
            let mut stop = (range.start + (len - walks)).min(range.end);
            if whole_blocks {
                stop = blocks.round_up(stop).min(range.end);
            }
            if stop < range.end {
                queue.push_front(stop..range.end);
            }
            walks += stop - range.start;
            taken.push(range.start..stop);
        }
        self.remaining -= walks;
        taken
    }

    fn is_empty(&self) -> bool {
        self.remaining == 0
    }
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
        let slots = args
            .slots
            .iter()
            .map(|spec| Slot {
                endpoint: None,
                credits: spec.credits,
                home: spec.home,
                lost: false,
            })
            .collect();
        Ok(SchedulerState {
            slots,
            holdings: args.sticky.then(Holdings::new),
            suspects: std::collections::BTreeSet::new(),
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
            SchedulerMsg::BatchDone { slot, batch, walks, nanos, live } => {
                state.batch_done(slot, batch, walks, nanos, live)?
            }
            SchedulerMsg::EndpointUp { slot, endpoint } => state.endpoint_up(slot, endpoint)?,
            SchedulerMsg::SlotAdded { spec, endpoint } => {
                state.slots.push(Slot {
                    endpoint: Some(endpoint),
                    credits: spec.credits,
                    home: spec.home,
                    lost: false,
                });
                state.dispatch()?
            }
            SchedulerMsg::NodeLost { slot, node, reason, timed_out } => {
                state.node_lost(slot, &node, &reason, timed_out)?
            }
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
        let mut work = Work {
            epoch: Arc::clone(&epoch),
            instruction,
            any: VecDeque::new(),
            homes: HashMap::new(),
            remaining: 0,
        };
        match &self.holdings {
            // Later segments of a cluster run: each held piece at its home.
            Some(holdings) if !epoch.first => {
                for (range, home) in holdings.pieces(epoch.walks.clone()) {
                    work.remaining += range.end - range.start;
                    work.homes.entry(home).or_default().push_back(range);
                }
            }
            _ => match &self.args.sample {
                Some(sample) => {
                    work.remaining = sample.count_in(&epoch.walks);
                    work.any.extend(sample.pieces(&epoch.walks, &self.args.blocks));
                }
                None => {
                    work.remaining = epoch.walks.end - epoch.walks.start;
                    work.any.push_back(epoch.walks.clone());
                }
            },
        }
        self.current = Some(work);
        self.dispatch()
    }

    fn batch_done(
        &mut self,
        slot: usize,
        batch: BatchId,
        walks: u64,
        nanos: u64,
        live: Option<LiveSet>,
    ) -> Result<(), ActorProcessingErr> {
        let Some((_, job)) = self.outstanding.remove(&batch) else {
            return Err(format!("slot {slot} acknowledged unknown batch {batch:?}").into());
        };
        self.slots[slot].credits += 1;
        if walks > 0 {
            self.cost.add(nanos, walks);
        }
        if let Some(holdings) = &mut self.holdings
            && job.epoch.last
        {
            // Those walks have ended and are counted: none is held any more,
            // so a loss of the node now cannot abort them.
            for range in job.ranges {
                holdings.release(range);
            }
        } else if let Some(holdings) = &mut self.holdings {
            let live = live.ok_or("a node acknowledged held walks without saying which live")?;
            if live.len() != job.walks() {
                return Err(format!(
                    "slot {slot} reported {} walks for batch {batch:?}",
                    live.len()
                )
                .into());
            }
            let home = self.slots[slot].home;
            let mut offset = 0;
            for range in job.ranges {
                let len = range.end - range.start;
                holdings.record(range, home, live.slice(offset..offset + len));
                offset += len;
            }
        }
        self.dispatch()
    }

    fn endpoint_up(&mut self, slot: usize, endpoint: Endpoint) -> Result<(), ActorProcessingErr> {
        // Batches sent to the previous incarnation never started: its mailbox
        // died with it, and the store still holds their states.
        let resend: Vec<BatchJob> = self
            .outstanding
            .values()
            .filter(|(s, _)| *s == slot)
            .map(|(_, job)| job.clone())
            .collect();
        for job in resend {
            if !endpoint.send(job) {
                // Died already; its replacement will get these again.
                return Ok(());
            }
        }
        self.slots[slot].endpoint = Some(endpoint);
        self.dispatch()
    }

    /// A node is gone with the states it held. Walks of the current epoch
    /// that is their first segment are re-run elsewhere, whether the node was
    /// running them or had finished them: they start from the initial state,
    /// and the serial history they need is the current one. Their outcomes
    /// were not counted (outstanding batches), or they had not ended (held
    /// walks are live). Every other live walk it held is aborted, with the
    /// reason: a serial action has run since it started.
    fn node_lost(
        &mut self,
        slot: usize,
        node: &str,
        reason: &str,
        timed_out: Option<(BatchId, Duration)>,
    ) -> Result<(), ActorProcessingErr> {
        let home = self.slots[slot].home;
        for s in self.slots.iter_mut().filter(|s| s.home == home) {
            s.endpoint = None;
            s.lost = true;
            s.credits = 0;
        }
        self.args.outcomes.lost(node.to_string())?;
        // The walks that ran past the walk timeout fail, and are done.
        if let Some((batch, timeout)) = timed_out
            && let Some((_, job)) = self.outstanding.remove(&batch)
        {
            let ids = self.live_walks(&job);
            let error = timeout_error(timeout);
            self.args.outcomes.failed(&job.epoch, &ids, WALK_TIMEOUT_ACTION, &error)?;
            if let Some(holdings) = &mut self.holdings {
                job.ranges.iter().for_each(|r| holdings.release(r.clone()));
            }
        }
        let lost: Vec<BatchId> = self
            .outstanding
            .iter()
            .filter(|(_, (s, _))| self.slots[*s].home == home)
            .map(|(id, _)| *id)
            .collect();
        let mut rerun = Vec::new();
        let mut twice = Vec::new();
        for id in lost {
            let (_, job) = self.outstanding.remove(&id).expect("listed above");
            if job.epoch.first {
                // Not counted yet: run again elsewhere, unless a node was
                // already lost running it (a walk that crashes its node
                // would take every node down in turn).
                for walk in job.ranges.iter().flat_map(|r| r.clone()) {
                    if self.suspects.contains(&walk) { twice.push(walk) } else { rerun.push(walk) }
                }
                if !twice.is_empty() {
                    let error = format!(
                        "its node was lost while running it, twice (the last: {node}: {reason})"
                    );
                    self.args.outcomes.failed(&job.epoch, &twice, NODE_LOST_ACTION, &error)?;
                    twice.clear();
                }
            }
            // A later segment's walks are held at `home`: aborted below.
        }
        if let Some(work) = &mut self.current
            && let Some(queue) = work.homes.remove(&home)
        {
            work.remaining -= queue.iter().map(|r| r.end - r.start).sum::<u64>();
        }
        let lost = self.holdings.as_mut().map(|h| h.lose(home)).unwrap_or_default();
        let (rebuild, aborted) = match &self.current {
            Some(work) if work.epoch.first => split_ranges(lost, &work.epoch.walks),
            _ => (Vec::new(), lost),
        };
        let mut requeued = 0;
        if let Some(work) = &mut self.current {
            self.suspects.extend(rerun.iter().copied());
            let ranges = rebuild.into_iter().chain(id_ranges(&rerun));
            for range in ranges.collect::<Vec<_>>().into_iter().rev() {
                requeued += range.end - range.start;
                work.remaining += range.end - range.start;
                work.any.push_front(range);
            }
        }
        let count: u64 = aborted.iter().map(|r| r.end - r.start).sum();
        tracing::warn!(node, reason, rerun = requeued, aborted = count, "node lost");
        if !aborted.is_empty() {
            let reason = format!("node {node} lost: {reason}");
            self.args.outcomes.aborted(AbortedWalks { walks: aborted, reason })?;
        }
        if self.slots.iter().all(|s| s.lost) {
            let reason = format!("every node was lost (the last: {node}: {reason})");
            self.args.supervisor.cast(RunSupervisorMsg::AllNodesLost(reason))?;
            return Ok(());
        }
        self.dispatch()
    }

    /// The walks of `job` that have not ended: all of a first segment's;
    /// the live ones of a later segment's (from `Holdings`).
    fn live_walks(&self, job: &BatchJob) -> Vec<u64> {
        match (&self.holdings, job.epoch.first) {
            (Some(holdings), false) => {
                job.ranges.iter().flat_map(|r| holdings.live_in(r.clone())).collect()
            }
            _ => job.ranges.iter().flat_map(|r| r.clone()).collect(),
        }
    }

    /// Hands batches of the current epoch to slots with credit; reports the
    /// epoch done when nothing is left to send or to wait for.
    fn dispatch(&mut self) -> Result<(), ActorProcessingErr> {
        let interrupted = self
            .args
            .interrupt
            .as_ref()
            .is_some_and(|flag| flag.load(std::sync::atomic::Ordering::Relaxed));
        if interrupted && self.current.is_some() {
            if self.outstanding.is_empty() {
                // Nothing runs any more: the run ends with what it has.
                self.current = None;
                self.args.supervisor.cast(RunSupervisorMsg::Interrupted)?;
            }
            return Ok(());
        }
        let Some(work) = &mut self.current else {
            return Ok(());
        };
        let whole_blocks = !(work.epoch.first && work.epoch.last);
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            let Some(endpoint) = slot.endpoint.clone() else {
                continue;
            };
            while slot.credits > 0 && !work.is_empty() {
                let mut len =
                    batch_len(self.cost.nanos_per_walk(), self.args.runners, work.remaining);
                if let Some(max) = self.args.max_batch {
                    len = len.min(max);
                }
                let ranges = work.take(slot.home, len, &self.args.blocks, whole_blocks);
                if ranges.is_empty() {
                    break; // Nothing left for this slot's home.
                }
                let job = BatchJob {
                    id: BatchId(self.next_batch),
                    epoch: Arc::clone(&work.epoch),
                    instruction: Arc::clone(&work.instruction),
                    ranges,
                };
                self.next_batch += 1;
                slot.credits -= 1;
                self.outstanding.insert(job.id, (index, job.clone()));
                if !endpoint.send(job) {
                    // The endpoint is dying (a runner fails after a panic; a
                    // node link stops when its node is lost). `EndpointUp`
                    // re-sends what is outstanding on a replaced runner;
                    // `NodeLost` re-plans what was sent to a lost node.
                    slot.endpoint = None;
                    break;
                }
            }
        }
        let done = work.is_empty() && self.outstanding.is_empty();
        if done {
            let work = self.current.take().expect("checked above");
            if let Some(holdings) = &mut self.holdings
                && (work.epoch.last || matches!(*work.instruction, Instruction::FailBranch(_)))
            {
                // Nothing of this branch runs again: forget its states.
                holdings.release(work.epoch.walks.clone());
            }
            self.args.barrier.cast(SerialBarrierMsg::EpochDone(work.epoch.id))?;
        }
        Ok(())
    }
}

/// Sorted, distinct ids as ranges of consecutive ids.
fn id_ranges(ids: &[u64]) -> Vec<Range<u64>> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<Range<u64>> = Vec::new();
    for id in sorted {
        match out.last_mut() {
            Some(last) if last.end == id => last.end += 1,
            _ => out.push(id..id + 1),
        }
    }
    out
}

/// Splits `ranges` into their parts inside `within` and the rest.
fn split_ranges(
    ranges: Vec<Range<u64>>,
    within: &Range<u64>,
) -> (Vec<Range<u64>>, Vec<Range<u64>>) {
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for range in ranges {
        let from = range.start.max(within.start);
        let to = range.end.min(within.end);
        if from < to {
            inside.push(from..to);
            if range.start < from {
                outside.push(range.start..from);
            }
            if to < range.end {
                outside.push(to..range.end);
            }
        } else {
            outside.push(range);
        }
    }
    (inside, outside)
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
    fn lost_ranges_split_at_the_epoch() {
        let (inside, outside) = split_ranges(vec![0..4, 6..12, 14..16, 20..22], &(8..15));
        assert_eq!(inside, vec![8..12, 14..15]);
        assert_eq!(outside, vec![0..4, 6..8, 15..16, 20..22]);
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
