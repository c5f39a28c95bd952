//! The Scheduler's decisions, as data in and commands out: which batch goes
//! to which slot, what a lost node costs, who is blamed for it, and how a
//! stopped run accounts for the walks that did not finish.
//!
//! The Scheduler actor turns its messages into calls on a [`Dispatch`] and
//! carries out the [`Command`]s it returns (stateright's style); nothing here
//! knows of actors, threads or the network, so every decision is tested
//! without a runtime (`tests/dispatch_props.rs` drives it through random
//! schedules of completions, losses, rejoins and stops).
//!
//! # Slots and homes
//! A slot is a place batches go, with credits (batches in flight at once). A
//! home is where walk states live: in-process every runner shares home 0; in
//! a cluster each node is a slot with a home of its own, and the later
//! segments of a walk go only to the home holding its state
//! ([`Holdings`], when `sticky`).
//!
//! # Losses and blame
//! When a slot is lost ([`Loss`]), walks of a later segment held there are
//! aborted; walks of the current epoch's first segment are rerun. Those the
//! node had finished go back into the queue; those in its outstanding
//! batches become *suspect groups*, which run **isolated**: alone on a node
//! with nothing queued behind them. Only a crash while a group runs isolated
//! (or any batch was the only one outstanding on its node) is evidence: a group of several walks is split in two, a group of one
//! walk gets a count of evidence, and a walk with [`EVIDENCE_TO_FAIL`] counts
//! fails. Any other loss that touches a walk is a hit; a walk hit
//! [`MAX_HITS`] times is aborted. So no walk is blamed without evidence and
//! none is rerun forever.
//!
//! # Stopping
//! [`Dispatch::stop`] stops dispatching. The caller claims the outstanding
//! batches ([`Command::Claim`]): a batch not started yet is taken back, a
//! running one is waited for (or, when forced, given up as hung). When
//! nothing is outstanding, every walk that did not end is reported
//! ([`Command::Unfinished`]) with its reason, and the run is
//! [`Command::Ended`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::epoch::{Epoch, EpochId};
use super::holdings::{Holdings, LiveSet};
use super::outcome::{AbortedWalks, Fate, StopReason};
use super::pieces::Pieces;
use super::sample::{SampleCursor, WalkSample};
use super::space::Blocks;

/// Wall time a batch should take on a runner: long enough that the per-batch
/// cost (two messages and a thread hop, tens of microseconds) is noise,
/// short enough to balance load.
pub const TARGET_BATCH: Duration = Duration::from_millis(4);
/// Size of the first batches, before anything is measured: one walk, so
/// slow walks (I/O) spread over every runner from the start; fast walks
/// reach full-size batches after a round trip or two.
const FIRST_BATCH: u64 = 1;
/// Upper bound on a batch whose walks go on to a later epoch (room for
/// their states is made per walk), whatever the measurement says. A batch
/// of an epoch whose walks end there has no per-walk memory and no bound
/// but the measurement and the epoch's tail: a space mostly pruned by
/// subtree costs almost nothing per walk, and 10^12 walks must not take
/// 10^6 round trips.
pub const MAX_BATCH: u64 = 1 << 20;
/// Losses that are not evidence (see the module doc) after which a walk is
/// aborted rather than rerun.
pub const MAX_HITS: u32 = 3;
/// Crashes of a node running a walk alone after which the walk fails.
pub const EVIDENCE_TO_FAIL: usize = 2;

/// Identifies a batch within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId(pub u64);

/// One place batches go, and where the states it holds live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSpec {
    /// Batches in flight at once.
    pub credits: usize,
    /// Slots with the same home share a state store (in-process: every
    /// runner; in a cluster: one node).
    pub home: usize,
}

/// What a run's dispatch is fixed to.
#[derive(Debug, Clone)]
pub struct Config {
    /// How held states are grouped.
    pub blocks: Blocks,
    /// Largest batch, in walks; `None`: adaptive.
    pub max_batch: Option<u64>,
    /// Runner threads over every slot (for batch sizing).
    pub runners: usize,
    /// Run only these walks.
    pub sample: Option<WalkSample>,
    /// Route later segments to the home of their walks' states (cluster
    /// runs).
    pub sticky: bool,
    /// Walks in the space.
    pub size: u64,
    /// Smallest batch, in walks: 1, or for a walk order with async actions
    /// the walks a runner keeps in flight (a batch of them takes about as
    /// long as one walk, so smaller batches only add rounds).
    pub min_batch: u64,
}

/// A batch: walks of one epoch, as id ranges or a window into the sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Its id.
    pub id: BatchId,
    /// The epoch.
    pub epoch: Arc<Epoch>,
    /// The walks.
    pub pieces: Pieces,
}

impl Batch {
    /// Walks in the batch.
    pub fn walks(&self) -> u64 {
        self.pieces.walks()
    }
}

/// How a slot was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The node died, or stopped answering: whatever it was running may have
    /// caused it.
    Crash,
    /// The node answers but dropped the run (its lease ran out: the
    /// coordinator was silent). Not evidence against any walk.
    Dropped,
    /// This batch ran past the walk timeout: its walks fail, and the node is
    /// given up.
    TimedOut {
        /// The batch.
        batch: BatchId,
        /// The timeout.
        timeout: Duration,
    },
}

/// Why walks failed outside any action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailCause {
    /// They ran past the walk timeout.
    WalkTimeout,
    /// Their node was lost while running them alone, often enough.
    NodeLost,
}

/// An acknowledged batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Done {
    /// Walks it covered.
    pub walks: u64,
    /// Time it took.
    pub nanos: u64,
    /// Which of its walks go on to a later segment (one bit per walk of its
    /// ranges, in order); `None` for a batch of a last segment.
    pub live: Option<LiveSet>,
    /// The node did not start it (the run was stopping).
    pub not_started: bool,
}

/// What became of an outstanding batch when the run was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// It had not started: taken back.
    NotStarted,
    /// It is running and was given up (forced stop).
    Hung,
    /// It is running (or its results are on their way): wait for it.
    Running,
}

/// How hard to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopKind {
    /// Dispatch nothing more; wait for what runs.
    Drain,
    /// Dispatch nothing more; give up what still runs.
    Force,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Send this batch to this slot.
    Send {
        /// The slot.
        slot: usize,
        /// The batch.
        batch: Batch,
    },
    /// These walks of `epoch` failed outside any action: count and trace
    /// them.
    Fail {
        /// The epoch they failed in.
        epoch: Arc<Epoch>,
        /// The walks.
        ids: Vec<u64>,
        /// Why.
        cause: FailCause,
        /// The error text.
        error: String,
    },
    /// These walks will not end: count them as `fate` says.
    Unfinished {
        /// The walks and the reason.
        walks: AbortedWalks,
        /// Aborted, or not run.
        fate: Fate,
    },
    /// A node was lost (for the report).
    NodeLost(String),
    /// The epoch is done: no segment of it runs anywhere.
    EpochDone(EpochId),
    /// The run is stopping: claim these outstanding batches (take back the
    /// ones not started; with `force`, give up the running ones) and report
    /// with [`Dispatch::claimed`].
    Claim {
        /// The batches.
        batches: Vec<BatchId>,
        /// Give up running ones.
        force: bool,
    },
    /// Every slot is lost; the run waits for one to be added (or stopped).
    AllSlotsLost,
    /// The stopped run has accounted for every walk: it is over.
    Ended,
}

#[derive(Debug, Clone)]
struct Slot {
    credits: usize,
    home: usize,
    /// Its endpoint takes batches (false while a runner is replaced).
    up: bool,
    /// Its node is gone for good (a rejoin is a new slot).
    lost: bool,
}

#[derive(Debug, Clone)]
struct Outstanding {
    slot: usize,
    batch: Batch,
    /// A suspect group running alone on its home.
    isolated: bool,
}

/// Walks rerun alone after a loss.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    ranges: Vec<Range<u64>>,
}

/// The undispatched rest of the current epoch.
#[derive(Debug)]
struct Work {
    epoch: Arc<Epoch>,
    fail_branch: bool,
    /// Ranges any slot may run.
    any: VecDeque<Range<u64>>,
    /// A sampled first segment's walks not queued yet: their pieces (one
    /// per walk, for a sparse sample) are made as batches take them, after
    /// what `any` holds.
    sampled: Option<(WalkSample, SampleCursor)>,
    /// Ranges only the slots of one home may run (their states live there).
    homes: HashMap<usize, VecDeque<Range<u64>>>,
    remaining: u64,
}

impl Work {
    /// Takes about `len` walks for a slot at `home` (more only to reach a
    /// block boundary when `whole_blocks`), from one queue. Sampled walks
    /// that start and end in this epoch (their states are never stored)
    /// go as a window into the sample, once nothing is queued before them.
    fn take(&mut self, home: usize, len: u64, blocks: &Blocks, whole: bool) -> Pieces {
        let (queue, sampled) = match self.homes.get_mut(&home) {
            Some(queue) if !queue.is_empty() => (queue, None),
            _ => (&mut self.any, self.sampled.as_mut()),
        };
        if let Some((sample, cursor)) = sampled
            && queue.is_empty()
            && self.epoch.first
            && self.epoch.last
        {
            let pieces = sample.take_window(cursor, len);
            self.remaining -= pieces.walks();
            return pieces;
        }
        let mut taken = Vec::with_capacity(queue.len().min(len as usize));
        let mut walks = 0;
        while walks < len {
            let Some(range) = queue.pop_front() else {
                if let Some((sample, cursor)) = sampled {
                    taken.reserve(cursor.left().min((len - walks) as usize));
                    walks += sample.take_pieces(cursor, len - walks, blocks, &mut taken);
                }
                break;
            };
            let mut stop = (range.start + (len - walks)).min(range.end);
            if whole {
                stop = blocks.round_up(stop).min(range.end);
            }
            if stop < range.end {
                queue.push_front(stop..range.end);
            }
            walks += stop - range.start;
            taken.push(range.start..stop);
        }
        self.remaining -= walks;
        taken.into()
    }

    fn queued(&self, blocks: &Blocks) -> Vec<Range<u64>> {
        let mut all: Vec<Range<u64>> = self.any.iter().cloned().collect();
        all.extend(self.homes.values().flatten().cloned());
        if let Some((sample, cursor)) = &self.sampled {
            sample.take_pieces(&mut cursor.clone(), u64::MAX, blocks, &mut all);
        }
        all
    }
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

/// Batch size given the measured cost per walk, the number of runners and
/// the walks left in the epoch: about `TARGET_BATCH` of work, less near the
/// end of the epoch so the tail spreads over every runner, but not below a
/// 32nd of the target, about 125 µs (smaller batches would cost more in
/// round trips than they save in balance), and not below `min_batch`.
/// `last`: the walks end in this epoch (see [`MAX_BATCH`]).
pub fn batch_len(
    nanos_per_walk: Option<f64>,
    runners: usize,
    remaining: u64,
    min_batch: u64,
    last: bool,
) -> u64 {
    let max = if last { u64::MAX } else { MAX_BATCH };
    let by_time = match nanos_per_walk {
        Some(ns) if ns > 0.0 => (TARGET_BATCH.as_nanos() as f64 / ns) as u64,
        Some(_) => max,
        None => FIRST_BATCH,
    };
    let tail = remaining.div_ceil(2 * runners.max(1) as u64);
    by_time.min(tail.max(by_time / 32)).max(min_batch).clamp(1, max)
}

/// Loss counts per walk, as ranges of walks with the same count.
#[derive(Debug, Clone, Default)]
struct Hits {
    /// start → (end, hits)
    ranges: BTreeMap<u64, (u64, u32)>,
}

impl Hits {
    /// Splits entries so that `at` starts one, if an entry spans it.
    fn cut(&mut self, at: u64) {
        if let Some((&start, &(end, hits))) = self.ranges.range(..at).next_back()
            && end > at
        {
            self.ranges.insert(start, (at, hits));
            self.ranges.insert(at, (end, hits));
        }
    }

    /// One more hit on every walk of `range`; returns the parts that reached
    /// `limit` (they are forgotten: the caller gives up on them).
    fn hit(&mut self, range: Range<u64>, limit: u32) -> Vec<Range<u64>> {
        if range.is_empty() {
            return Vec::new();
        }
        self.cut(range.start);
        self.cut(range.end);
        let mut at = range.start;
        let mut pieces = Vec::new();
        let inside: Vec<(u64, (u64, u32))> =
            self.ranges.range(range.start..range.end).map(|(&s, &v)| (s, v)).collect();
        for (start, (end, hits)) in inside {
            if at < start {
                pieces.push((at..start, 1));
            }
            pieces.push((start..end, hits + 1));
            at = end;
        }
        if at < range.end {
            pieces.push((at..range.end, 1));
        }
        let mut reached = Vec::new();
        for (piece, hits) in pieces {
            if hits >= limit {
                self.ranges.remove(&piece.start);
                push_merged(&mut reached, piece);
            } else {
                self.ranges.insert(piece.start, (piece.end, hits));
            }
        }
        reached
    }

    /// Forgets the walks of `range` (they ended).
    fn clear(&mut self, range: Range<u64>) {
        if self.ranges.is_empty() || range.is_empty() {
            return;
        }
        self.cut(range.start);
        self.cut(range.end);
        let inside: Vec<u64> = self.ranges.range(range.start..range.end).map(|(&s, _)| s).collect();
        for start in inside {
            self.ranges.remove(&start);
        }
    }
}

/// A stop in progress.
#[derive(Debug, Clone)]
struct Stopping {
    kind: StopKind,
    reason: StopReason,
}

/// The Scheduler's state and decisions. See the module doc.
#[derive(Debug)]
pub struct Dispatch {
    config: Config,
    slots: Vec<Slot>,
    outstanding: BTreeMap<BatchId, Outstanding>,
    /// Batches outstanding per home.
    busy: HashMap<usize, usize>,
    /// Homes running an isolated group, and homes being drained for one.
    isolated: HashMap<usize, BatchId>,
    draining: Vec<usize>,
    work: Option<Work>,
    holdings: Holdings,
    /// Suspect groups waiting to run isolated (current epoch).
    groups: VecDeque<Group>,
    hits: Hits,
    /// Evidence against single walks: the losses that hit each while it ran
    /// alone.
    evidence: BTreeMap<u64, Vec<String>>,
    /// End of the last first-segment epoch started: walks from here on have
    /// not started.
    frontier: u64,
    /// First-segment walks taken back unstarted while stopping.
    unstarted: Vec<Range<u64>>,
    stop: Option<Stopping>,
    ended: bool,
    next_batch: u64,
    cost: WalkCost,
}

/// Walks in `ranges`.
fn count(ranges: &[Range<u64>]) -> u64 {
    ranges.iter().map(|r| r.end - r.start).sum()
}

/// Appends `range`, merging it with the last one when they touch.
fn push_merged(out: &mut Vec<Range<u64>>, range: Range<u64>) {
    if range.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => out.push(range),
    }
}

/// Sorted, merged copy of `ranges`.
fn normalized(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.retain(|r| !r.is_empty());
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::new();
    for range in ranges {
        match out.last_mut() {
            Some(last) if last.end >= range.start => last.end = last.end.max(range.end),
            _ => out.push(range),
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

/// `range` without the (sorted, disjoint) `holes`.
fn subtract(range: Range<u64>, holes: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = range.start;
    for hole in holes {
        let (from, to) = (hole.start.max(range.start), hole.end.min(range.end));
        if from >= to {
            continue;
        }
        if at < from {
            out.push(at..from);
        }
        at = at.max(to);
    }
    if at < range.end {
        out.push(at..range.end);
    }
    out
}

/// Splits `ranges` into two halves by walk count.
fn halves(ranges: &[Range<u64>]) -> (Vec<Range<u64>>, Vec<Range<u64>>) {
    let half = count(ranges) / 2;
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let mut seen = 0;
    for range in ranges {
        let len = range.end - range.start;
        if seen + len <= half {
            first.push(range.clone());
        } else if seen >= half {
            second.push(range.clone());
        } else {
            let cut = range.start + (half - seen);
            first.push(range.start..cut);
            second.push(cut..range.end);
        }
        seen += len;
    }
    (first, second)
}

impl Dispatch {
    /// A run's dispatch over these slots (more may be added).
    pub fn new(config: Config, slots: &[SlotSpec]) -> Self {
        let slots = slots
            .iter()
            .map(|s| Slot { credits: s.credits, home: s.home, up: false, lost: false })
            .collect();
        Dispatch {
            config,
            slots,
            outstanding: BTreeMap::new(),
            busy: HashMap::new(),
            isolated: HashMap::new(),
            draining: Vec::new(),
            work: None,
            holdings: Holdings::new(),
            groups: VecDeque::new(),
            hits: Hits::default(),
            evidence: BTreeMap::new(),
            frontier: 0,
            unstarted: Vec::new(),
            stop: None,
            ended: false,
            next_batch: 0,
            cost: WalkCost::default(),
        }
    }

    /// Whether the run is over (stopped, and every walk accounted for).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Batches in flight.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Whether `batch` is in flight.
    pub fn is_outstanding(&self, batch: BatchId) -> bool {
        self.outstanding.contains_key(&batch)
    }

    /// Whether any walk of `range` is still live (held between epochs):
    /// a branch with none left runs no more serial actions.
    pub fn any_live(&self, range: Range<u64>) -> bool {
        self.holdings.any_live_in(range)
    }

    /// The epoch under way (started and not yet reported done).
    pub fn current_epoch(&self) -> Option<EpochId> {
        self.work.as_ref().map(|w| w.epoch.id)
    }

    /// The current epoch starts: run its segment (or, with `fail_branch`,
    /// fail its live walks) on every walk of it.
    pub fn start_epoch(
        &mut self,
        epoch: Arc<Epoch>,
        fail_branch: bool,
    ) -> Result<Vec<Command>, String> {
        if self.work.is_some() || !self.outstanding.is_empty() {
            return Err("a new epoch arrived before the previous one was done".to_string());
        }
        if self.ended {
            return Ok(Vec::new());
        }
        let mut work = Work {
            epoch: Arc::clone(&epoch),
            fail_branch,
            any: VecDeque::new(),
            sampled: None,
            homes: HashMap::new(),
            remaining: 0,
        };
        if epoch.first {
            self.frontier = self.frontier.max(epoch.walks.end);
            match &self.config.sample {
                Some(sample) => {
                    let cursor = sample.cursor(&epoch.walks);
                    work.remaining = cursor.left() as u64;
                    work.sampled = Some((sample.clone(), cursor));
                }
                None => {
                    work.remaining = epoch.walks.end - epoch.walks.start;
                    work.any.push_back(epoch.walks.clone());
                }
            }
        } else if self.config.sticky {
            // Later segments of a cluster run: each held piece at its home.
            for (range, home) in self.holdings.pieces(epoch.walks.clone()) {
                work.remaining += range.end - range.start;
                work.homes.entry(home).or_default().push_back(range);
            }
        } else {
            // In-process: any runner takes any held block (one store).
            for (range, _) in self.holdings.pieces(epoch.walks.clone()) {
                work.remaining += range.end - range.start;
                work.any.push_back(range);
            }
        }
        self.work = Some(work);
        let mut commands = Vec::new();
        self.dispatch(&mut commands);
        Ok(commands)
    }

    /// Slot `slot`'s endpoint takes batches (again): batches outstanding on
    /// it never started (its previous incarnation's queue died with it) and
    /// are sent again.
    pub fn endpoint_up(&mut self, slot: usize) -> Vec<Command> {
        let mut commands = Vec::new();
        let Some(s) = self.slots.get_mut(slot) else { return commands };
        if s.lost {
            return commands;
        }
        s.up = true;
        for out in self.outstanding.values().filter(|o| o.slot == slot) {
            commands.push(Command::Send { slot, batch: out.batch.clone() });
        }
        self.dispatch(&mut commands);
        commands
    }

    /// Slot `slot`'s endpoint did not take a batch: it is being replaced
    /// (its outstanding batches are sent again by [`endpoint_up`]) or its
    /// node is being lost (see [`slot_lost`]).
    ///
    /// [`endpoint_up`]: Self::endpoint_up
    /// [`slot_lost`]: Self::slot_lost
    pub fn endpoint_down(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.up = false;
        }
    }

    /// A new slot (a node that rejoined), at the next index.
    pub fn slot_added(&mut self, spec: SlotSpec) -> (usize, Vec<Command>) {
        self.slots.push(Slot { credits: spec.credits, home: spec.home, up: true, lost: false });
        let mut commands = Vec::new();
        self.dispatch(&mut commands);
        (self.slots.len() - 1, commands)
    }

    /// Slot `slot` acknowledged `batch`.
    pub fn batch_done(
        &mut self,
        slot: usize,
        batch: BatchId,
        done: Done,
    ) -> Result<Vec<Command>, String> {
        let Some(out) = self.outstanding.remove(&batch) else {
            return Err(format!("slot {slot} acknowledged unknown batch {batch:?}"));
        };
        if out.slot != slot {
            return Err(format!("slot {slot} acknowledged batch {batch:?} of slot {}", out.slot));
        }
        let home = self.slots[slot].home;
        self.settle(slot, &out);
        let mut commands = Vec::new();
        if done.not_started {
            if self.stop.is_none() {
                return Err(format!("slot {slot} did not start batch {batch:?}, unasked"));
            }
            // The node took it back: its walks did not run. First segments
            // have not started; later ones stay held (not finished).
            if out.batch.epoch.first {
                self.unstarted.extend(out.batch.pieces.iter());
            }
            self.finish_stop(&mut commands);
            return Ok(commands);
        }
        if done.walks > 0 {
            self.cost.add(done.nanos, done.walks);
        }
        // Nothing to forget unless a loss hit some walk (a sampled batch
        // has a piece per walk: no pass over them for nothing).
        if !self.hits.ranges.is_empty() || !self.evidence.is_empty() {
            for range in out.batch.pieces.iter() {
                self.hits.clear(range.clone());
                if !self.evidence.is_empty() {
                    let ended: Vec<u64> =
                        self.evidence.range(range.clone()).map(|(&w, _)| w).collect();
                    ended.iter().for_each(|w| {
                        self.evidence.remove(w);
                    });
                }
            }
        }
        if out.batch.epoch.last {
            // Those walks have ended and are counted: none is held any more,
            // so a loss of the node now cannot abort them. (Walks that
            // started in this epoch never were held: nothing to release.)
            if !out.batch.epoch.first {
                for range in out.batch.pieces.iter() {
                    self.holdings.release(range);
                }
            }
        } else {
            let live = done.live.ok_or("a batch of held walks came back without its live walks")?;
            if live.len() != out.batch.walks() {
                return Err(format!(
                    "slot {slot} reported {} walks for batch {batch:?} of {}",
                    live.len(),
                    out.batch.walks()
                ));
            }
            let mut offset = 0;
            for range in out.batch.pieces.iter() {
                let len = range.end - range.start;
                self.holdings.record(range, home, live.slice(offset..offset + len));
                offset += len;
            }
        }
        if self.stop.is_some() {
            self.finish_stop(&mut commands);
        } else {
            self.dispatch(&mut commands);
        }
        Ok(commands)
    }

    /// Gives the credit of an outstanding batch back to its slot.
    fn settle(&mut self, slot: usize, out: &Outstanding) {
        let s = &mut self.slots[slot];
        if !s.lost {
            s.credits += 1;
        }
        if let Some(busy) = self.busy.get_mut(&s.home) {
            *busy = busy.saturating_sub(1);
        }
        if out.isolated {
            self.isolated.remove(&s.home);
        }
    }

    /// The node behind slot `slot` (named `node`) is lost, for `reason`.
    pub fn slot_lost(&mut self, slot: usize, node: &str, reason: &str, loss: Loss) -> Vec<Command> {
        let mut commands = Vec::new();
        let Some(home) = self.slots.get(slot).map(|s| s.home) else { return commands };
        // After `Ended` every walk is accounted for and the run is over: a
        // node lost now (a link noticing late) has nothing of the run to
        // lose, and reports nothing (`Ended` is the last command).
        if self.slots[slot].lost || self.ended {
            return commands;
        }
        for s in self.slots.iter_mut().filter(|s| s.home == home) {
            s.up = false;
            s.lost = true;
            s.credits = 0;
        }
        self.busy.remove(&home);
        self.isolated.remove(&home);
        self.draining.retain(|&h| h != home);
        commands.push(Command::NodeLost(node.to_string()));
        let last = format!("{node}: {reason}");

        let lost: Vec<BatchId> = self
            .outstanding
            .iter()
            .filter(|(_, o)| self.slots[o.slot].home == home)
            .map(|(&id, _)| id)
            .collect();
        // A batch alone on its node (nothing else outstanding there) was
        // running alone, whether or not it was sent as a suspect.
        let alone = lost.len() == 1;
        let mut requeue: Vec<Range<u64>> = Vec::new();
        let mut suspects: Vec<Group> = Vec::new();
        let mut give_up: Vec<Range<u64>> = Vec::new();
        for id in lost {
            let out = self.outstanding.remove(&id).expect("listed above");
            let epoch = &out.batch.epoch;
            if let Loss::TimedOut { batch, timeout } = loss
                && batch == id
            {
                // Ran past the walk timeout: its live walks fail, and are done.
                let ids: Vec<u64> = if epoch.first {
                    out.batch.pieces.iter().flatten().collect()
                } else {
                    out.batch.pieces.iter().flat_map(|r| self.holdings.live_in(r)).collect()
                };
                for range in out.batch.pieces.iter() {
                    self.holdings.release(range.clone());
                    self.hits.clear(range.clone());
                }
                commands.push(Command::Fail {
                    epoch: Arc::clone(epoch),
                    ids,
                    cause: FailCause::WalkTimeout,
                    error: format!("timed out after {}", humantime::format_duration(timeout)),
                });
                continue;
            }
            if !epoch.first {
                continue; // Held at `home`: aborted with the holdings below.
            }
            let ranges = out.batch.pieces.ranges();
            match (out.isolated || alone, loss) {
                (true, Loss::Crash) => {
                    // Evidence: it ran alone when the node went down.
                    if out.batch.walks() == 1 {
                        let walk = ranges[0].start;
                        let evidence = self.evidence.entry(walk).or_default();
                        evidence.push(last.clone());
                        if evidence.len() >= EVIDENCE_TO_FAIL {
                            let error = format!(
                                "its node was lost while running it alone, {} times: {}",
                                evidence.len(),
                                evidence.join("; ")
                            );
                            self.evidence.remove(&walk);
                            self.hits.clear(walk..walk + 1);
                            commands.push(Command::Fail {
                                epoch: Arc::clone(epoch),
                                ids: vec![walk],
                                cause: FailCause::NodeLost,
                                error,
                            });
                        } else {
                            suspects.push(Group { ranges: ranges.into_owned() });
                        }
                    } else {
                        let (first, second) = halves(&ranges);
                        suspects.push(Group { ranges: first });
                        suspects.push(Group { ranges: second });
                    }
                }
                (true, _) => {
                    // Not evidence; it stays a suspect (hits bound it).
                    let kept = self.hit_all(&ranges, &mut give_up);
                    if !kept.is_empty() {
                        suspects.push(Group { ranges: kept });
                    }
                }
                (false, Loss::Crash) => {
                    // It may have been running, or only queued behind the
                    // batch that took the node down: a suspect.
                    let kept = self.hit_all(&ranges, &mut give_up);
                    if !kept.is_empty() {
                        suspects.push(Group { ranges: kept });
                    }
                }
                (false, _) => {
                    // The cause is known (another batch's timeout) or there
                    // was no crash (the run was dropped): rerun it.
                    requeue.extend(self.hit_all(&ranges, &mut give_up));
                }
            }
        }
        // Work only that home could run: its walks are held there.
        if let Some(work) = &mut self.work
            && let Some(queue) = work.homes.remove(&home)
        {
            work.remaining -= queue.iter().map(|r| r.end - r.start).sum::<u64>();
        }
        let held = self.holdings.lose(home);
        let (rebuild, aborted) = match &self.work {
            Some(work) if work.epoch.first => split_ranges(held, &work.epoch.walks),
            _ => (Vec::new(), held),
        };
        // Walks it had finished in this first segment start again elsewhere.
        requeue.extend(self.hit_all(&rebuild, &mut give_up));
        if !aborted.is_empty() {
            let walks = AbortedWalks {
                walks: normalized(aborted),
                reason: format!("node {node} lost: {reason}"),
            };
            commands.push(Command::Unfinished { walks, fate: Fate::Aborted });
        }
        if !give_up.is_empty() {
            let reason =
                format!("not rerun: node losses hit it {MAX_HITS} times (the last: {last})");
            commands.push(Command::Unfinished {
                walks: AbortedWalks { walks: normalized(give_up), reason },
                fate: Fate::Aborted,
            });
        }
        match &mut self.work {
            Some(work) => {
                for range in normalized(requeue).into_iter().rev() {
                    work.remaining += range.end - range.start;
                    work.any.push_front(range);
                }
                for group in suspects.into_iter().rev() {
                    self.groups.push_front(group);
                }
            }
            None => {
                // Between epochs nothing of a first segment is outstanding.
                debug_assert!(requeue.is_empty() && suspects.is_empty());
            }
        }
        if self.slots.iter().all(|s| s.lost) {
            commands.push(Command::AllSlotsLost);
        }
        if self.stop.is_some() {
            self.finish_stop(&mut commands);
        } else {
            self.dispatch(&mut commands);
        }
        commands
    }

    /// One more hit on every walk of `ranges`: returns the walks still to
    /// rerun; those hit [`MAX_HITS`] times go to `give_up`.
    fn hit_all(&mut self, ranges: &[Range<u64>], give_up: &mut Vec<Range<u64>>) -> Vec<Range<u64>> {
        let mut kept = Vec::new();
        for range in ranges {
            let reached = self.hits.hit(range.clone(), MAX_HITS);
            kept.extend(subtract(range.clone(), &reached));
            give_up.extend(reached);
        }
        kept
    }

    /// Stop dispatching. See the module doc.
    pub fn stop(&mut self, kind: StopKind, reason: StopReason) -> Vec<Command> {
        let mut commands = Vec::new();
        if self.ended {
            return commands;
        }
        match &mut self.stop {
            Some(stopping) if stopping.kind >= kind => return commands,
            Some(stopping) => stopping.kind = kind,
            None => self.stop = Some(Stopping { kind, reason }),
        }
        let batches: Vec<BatchId> = self.outstanding.keys().copied().collect();
        if !batches.is_empty() {
            commands.push(Command::Claim { batches, force: kind == StopKind::Force });
        }
        self.finish_stop(&mut commands);
        commands
    }

    /// What the claim of outstanding batches found.
    pub fn claimed(&mut self, results: Vec<(BatchId, Claimed)>) -> Vec<Command> {
        let mut commands = Vec::new();
        let Some(stopping) = self.stop.clone() else { return commands };
        let mut hung: Vec<Range<u64>> = Vec::new();
        for (id, claimed) in results {
            if claimed == Claimed::Running {
                continue;
            }
            let Some(out) = self.outstanding.remove(&id) else { continue };
            self.settle(out.slot, &out);
            match claimed {
                Claimed::NotStarted if out.batch.epoch.first => {
                    self.unstarted.extend(out.batch.pieces.iter());
                }
                Claimed::NotStarted => {} // Still held: not finished.
                _ => {
                    for range in out.batch.pieces.iter() {
                        if out.batch.epoch.first {
                            hung.push(range.clone());
                        } else {
                            hung.extend(self.holdings.live_ranges_in(range.clone()));
                        }
                        self.holdings.release(range.clone());
                    }
                }
            }
        }
        if !hung.is_empty() {
            let reason = format!("hung when {}", stopping.reason.phrase());
            commands.push(Command::Unfinished {
                walks: AbortedWalks { walks: normalized(hung), reason },
                fate: Fate::Aborted,
            });
        }
        self.finish_stop(&mut commands);
        commands
    }

    /// Once a stopping run has nothing outstanding: every walk that did not
    /// end, with its reason, then `Ended`.
    fn finish_stop(&mut self, commands: &mut Vec<Command>) {
        let Some(stopping) = &self.stop else { return };
        if self.ended || !self.outstanding.is_empty() {
            return;
        }
        let (fate, phrase) = (stopping.reason.fate(), stopping.reason.phrase());
        // Never started: taken back, queued or waiting in this first
        // segment, and everything past the frontier.
        let mut never = std::mem::take(&mut self.unstarted);
        if let Some(work) = self.work.take()
            && work.epoch.first
        {
            never.extend(work.queued(&self.config.blocks));
        }
        never.extend(self.groups.drain(..).flat_map(|g| g.ranges));
        let rest = self.frontier..self.config.size;
        if !rest.is_empty() {
            match &self.config.sample {
                Some(sample) => never.extend(sample.pieces(&rest, &self.config.blocks)),
                None => never.push(rest),
            }
        }
        let never = normalized(never);
        if !never.is_empty() {
            commands.push(Command::Unfinished {
                walks: AbortedWalks { walks: never, reason: format!("not run: {phrase}") },
                fate,
            });
        }
        let held = self.holdings.live_ranges();
        if !held.is_empty() {
            commands.push(Command::Unfinished {
                walks: AbortedWalks { walks: held, reason: format!("not finished: {phrase}") },
                fate,
            });
        }
        self.holdings = Holdings::new();
        self.ended = true;
        commands.push(Command::Ended);
    }

    /// Hands batches of the current epoch to slots with credit; reports the
    /// epoch done when nothing is left to send or to wait for.
    fn dispatch(&mut self, commands: &mut Vec<Command>) {
        if self.stop.is_some() || self.ended {
            return;
        }
        let Some(work) = &self.work else { return };
        let epoch = Arc::clone(&work.epoch);
        // Suspect groups first, each alone on a node.
        while let Some(group) = self.groups.front() {
            let idle = (0..self.slots.len()).find(|&i| {
                let s = &self.slots[i];
                s.up && !s.lost
                    && s.credits > 0
                    && self.busy.get(&s.home).copied().unwrap_or(0) == 0
                    && !self.isolated.contains_key(&s.home)
            });
            let Some(slot) = idle else {
                // Drain a node for it: the least busy one not already
                // draining, as long as groups outnumber draining nodes.
                if self.draining.len() < self.groups.len() {
                    let candidate = self
                        .slots
                        .iter()
                        .filter(|s| {
                            s.up && !s.lost
                                && !self.draining.contains(&s.home)
                                && !self.isolated.contains_key(&s.home)
                        })
                        .min_by_key(|s| self.busy.get(&s.home).copied().unwrap_or(0))
                        .map(|s| s.home);
                    if let Some(home) = candidate {
                        self.draining.push(home);
                    }
                }
                break;
            };
            let ranges = group.ranges.clone();
            self.groups.pop_front();
            let home = self.slots[slot].home;
            self.draining.retain(|&h| h != home);
            let id = self.send(slot, Arc::clone(&epoch), ranges, true, commands);
            self.isolated.insert(home, id);
        }
        // Drain no more nodes than groups wait. A node drained for a group
        // that then ran elsewhere (another node freed first) would stay
        // drained, idle for good: and when it holds the only states of the
        // next epoch's walks, the run would never end.
        self.draining.truncate(self.groups.len());
        let Some(work) = &mut self.work else { return };
        let whole_blocks = !(work.epoch.first && work.epoch.last);
        for index in 0..self.slots.len() {
            let s = &self.slots[index];
            if !s.up
                || s.lost
                || self.isolated.contains_key(&s.home)
                || self.draining.contains(&s.home)
            {
                continue;
            }
            let home = s.home;
            while self.slots[index].credits > 0 && work.remaining > 0 {
                let mut len = batch_len(
                    self.cost.nanos_per_walk(),
                    self.config.runners,
                    work.remaining,
                    self.config.min_batch,
                    work.epoch.last,
                );
                if let Some(max) = self.config.max_batch {
                    len = len.min(max);
                }
                let pieces = work.take(home, len, &self.config.blocks, whole_blocks);
                if pieces.is_empty() {
                    break; // Nothing left for this slot's home.
                }
                let id = BatchId(self.next_batch);
                self.next_batch += 1;
                let batch = Batch { id, epoch: Arc::clone(&work.epoch), pieces };
                self.slots[index].credits -= 1;
                *self.busy.entry(home).or_default() += 1;
                self.outstanding
                    .insert(id, Outstanding { slot: index, batch: batch.clone(), isolated: false });
                commands.push(Command::Send { slot: index, batch });
            }
        }
        let done = work.remaining == 0 && self.outstanding.is_empty() && self.groups.is_empty();
        if done {
            let work = self.work.take().expect("checked above");
            if work.epoch.last || work.fail_branch {
                // Nothing of this branch runs again: forget its states.
                self.holdings.release(work.epoch.walks.clone());
            }
            commands.push(Command::EpochDone(work.epoch.id));
        }
    }

    fn send(
        &mut self,
        slot: usize,
        epoch: Arc<Epoch>,
        ranges: Vec<Range<u64>>,
        isolated: bool,
        commands: &mut Vec<Command>,
    ) -> BatchId {
        let id = BatchId(self.next_batch);
        self.next_batch += 1;
        let batch = Batch { id, epoch, pieces: ranges.into() };
        let s = &mut self.slots[slot];
        s.credits = s.credits.saturating_sub(1);
        *self.busy.entry(s.home).or_default() += 1;
        self.outstanding.insert(id, Outstanding { slot, batch: batch.clone(), isolated });
        commands.push(Command::Send { slot, batch });
        id
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_the_measured_cost() {
        // Unmeasured: small probes.
        assert_eq!(batch_len(None, 2, 1_000_000, 1, false), FIRST_BATCH);
        // 2 ns per walk: 2 million walks make 4 ms.
        assert_eq!(batch_len(Some(2.0), 2, 10_000_000, 1, false), 2_000_000.min(MAX_BATCH));
        // 1 ms per walk: four walks make 4 ms; 10 ms per walk: one.
        assert_eq!(batch_len(Some(1e6), 64, 100_000, 1, false), 4);
        assert_eq!(batch_len(Some(1e7), 64, 100_000, 1, false), 1);
        // The tail of an epoch is spread over every runner, down to a 32nd
        // of the target.
        assert_eq!(batch_len(Some(2.0), 2, 1_000_000, 1, false), 250_000);
        assert_eq!(batch_len(Some(2.0), 2, 1_000, 1, false), 62_500);
        assert_eq!(batch_len(Some(1e6), 4, 16, 1, false), 2);
        // Async walk orders: never fewer than a runner keeps in flight,
        // from the first batch on.
        assert_eq!(batch_len(None, 2, 1_000_000, 1024, false), 1024);
        assert_eq!(batch_len(Some(1e6), 4, 16, 1024, false), 1024);
        // Walks that end in their epoch keep no state per walk: no bound
        // but the measurement and the tail.
        assert_eq!(batch_len(Some(2.0), 2, 10_000_000, 1, true), 2_000_000);
        assert_eq!(batch_len(Some(1e-6), 2, 1 << 50, 1, true), 4_000_000_000_000);
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

    #[test]
    fn hits_count_per_walk_and_give_up_at_the_limit() {
        let mut hits = Hits::default();
        assert!(hits.hit(0..10, 3).is_empty());
        assert!(hits.hit(5..15, 3).is_empty());
        // 5..10 has two hits now, the rest one.
        assert_eq!(hits.hit(0..20, 3), vec![5..10]);
        hits.clear(0..3);
        assert_eq!(hits.hit(0..20, 3), vec![3..5, 10..15]);
    }

    #[test]
    fn halves_split_by_walk_count() {
        assert_eq!(halves(&[0..3, 10..15]), (vec![0..3, 10..11], vec![11..15]));
        assert_eq!(halves(&[4..5]), (vec![], vec![4..5]));
    }
}
