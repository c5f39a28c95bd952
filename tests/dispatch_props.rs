//! The Scheduler's decisions (`model::dispatch::Dispatch`) driven through
//! random schedules, in the stateright style: a simulated world plays the
//! planner, the serial barrier and the nodes with their runners, carries out
//! every command the model returns, and the model decides.
//!
//! The world draws its schedule from the proptest input: which outstanding
//! batch finishes next, which node is lost and how (a crash, a dropped run,
//! a batch past the walk timeout), rejoins, runner replacements, a stop (and
//! a second, forced one) and the claims' answers. Each walk has a fixed fate
//! per segment (a hash of its id and level), so a rerun behaves as the first
//! run did; a few *poison* walks take their node down whenever they run. When
//! the drawn schedule runs out, a default policy (finish the oldest batch,
//! start the next epoch, bring runners up, rejoin or stop when every node is
//! lost) ends the run.
//!
//! After every command the world checks:
//!
//! 1. every walk of the run ends exactly once: passed, failed or cancelled
//!    in an acknowledged batch, failed by `Command::Fail`, or unfinished by
//!    `Command::Unfinished`; none is left over, none counted twice;
//! 2. `FailCause::NodeLost` names only a walk that was, at least
//!    `EVIDENCE_TO_FAIL` times, in the only batch outstanding on a node that
//!    crashed; when only poison walks crash nodes, only a poison walk;
//! 3. no walk runs its first segment again once it was sent in a later
//!    epoch, and no walk is sent twice in a later epoch;
//! 4. a later segment goes to the home holding the walk's state;
//! 5. a suspect group runs isolated: alone on its home when sent, and
//!    nothing else goes there until it returns or the home is lost;
//! 6. no walk is sent more than `MAX_HITS + log2(walks) + 4` times without
//!    an acknowledgement, and every run ends within `MAX_STEPS` steps (a
//!    world with nothing left to do but no ending is a failure too);
//! 7. `EpochDone` comes only when nothing of the epoch is outstanding, and
//!    no walk still live skipped the epoch's segment;
//! 8. after `Command::Ended`, every call returns no command.
//!
//! A failure names the walk and its history, and the last actions of the
//! schedule. Cluster schedules run 4096 cases, in-process ones 256, each
//! from a fixed seed (a few seconds in a debug build); `PROPTEST_CASES` and
//! `PROPTEST_RNG_SEED` explore further. `the_schedules_reach_every_kind_of_event`
//! checks that those cases reach every kind of event the invariants are
//! about (splits, evidence, hung claims, …), and example tests pin down
//! single schedules.
#![allow(clippy::single_range_in_vec_init)] // Batches of one id range.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use combtest::model::dispatch::{
    Batch, BatchId, Claimed, Command, Config, Dispatch, Done, EVIDENCE_TO_FAIL, FailCause, Loss,
    MAX_HITS, SlotSpec, StopKind,
};
use combtest::model::epoch::{Epoch, EpochCursor, EpochId};
use combtest::model::holdings::LiveSet;
use combtest::model::outcome::{AbortedWalks, Fate, StopReason};
use combtest::model::pieces::Pieces;
use combtest::model::sample::WalkSample;
use combtest::model::space::{Blocks, EntryInfo, EntryKind, Space};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

/// Steps after which a run that has not ended is a failure.
const MAX_STEPS: usize = 20_000;
/// Node losses the world causes on its own (poison walks' crashes aside).
const RANDOM_LOSSES: usize = 6;
/// Nodes that may rejoin (as new slots) over a run.
const REJOINS: usize = 12;
/// Runner replacements (endpoint down, then up) over a run.
const REPLACEMENTS: usize = 4;

// ---------------------------------------------------------------------------
// The world's parameters, as the strategy draws them.

/// How a stop is planned.
#[derive(Debug, Clone)]
struct StopPlan {
    /// The step it happens at (if the run has not ended by then).
    at: usize,
    kind: StopKind,
    /// Index into `stop_reason`.
    reason: u8,
    /// A drain is forced this many steps later (Ctrl-C twice).
    force_after: Option<usize>,
}

#[derive(Debug, Clone)]
struct Setup {
    /// The walk order: kind and option count of each entry.
    entries: Vec<(EntryKind, u32)>,
    /// A cluster run (one slot per node, `home == slot`), or in-process
    /// (every slot at home 0, no losses).
    sticky: bool,
    /// Credits of each initial slot.
    credits: Vec<usize>,
    max_batch: Option<u64>,
    /// A sampled run: a walk is in it when a hash of it, modulo 8, is below
    /// this.
    sample: Option<u8>,
    /// Salt of every hash the world draws (fates, serial failures, claims).
    salt: u64,
    /// Percent of segments that cancel, and that fail.
    cancel_pct: u8,
    fail_pct: u8,
    /// Percent of serial actions that fail.
    serial_fail_pct: u8,
    /// Poison walks: (a walk id, modulo the space's size; the level, above
    /// the first, from which on it crashes its node whenever it runs).
    poison: Vec<(u64, usize)>,
    /// Whether the world also crashes nodes on its own (otherwise only
    /// poison walks do).
    random_crashes: bool,
    /// What a walk costs (for batch sizing).
    walk_nanos: u64,
    stop: Option<StopPlan>,
    /// One choice per step; then the default policy.
    choices: Vec<u32>,
}

impl Setup {
    /// A cluster run over `entries` with one node per credit count, every
    /// walk passing, nothing drawn: example tests script it.
    fn example(entries: &[(EntryKind, u32)], credits: &[usize]) -> Setup {
        Setup {
            entries: entries.to_vec(),
            sticky: true,
            credits: credits.to_vec(),
            max_batch: None,
            sample: None,
            salt: 0,
            cancel_pct: 0,
            fail_pct: 0,
            serial_fail_pct: 0,
            poison: Vec::new(),
            random_crashes: false,
            walk_nanos: 1_000,
            stop: None,
            choices: Vec::new(),
        }
    }
}

fn stop_reason(index: u8) -> StopReason {
    match index % 4 {
        0 => StopReason::Interrupted,
        1 => StopReason::DurationEnded,
        2 => StopReason::RestartLimit("too many restarts".to_string()),
        _ => StopReason::AllNodesLost("every node was lost".to_string()),
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hash(parts: &[u64]) -> u64 {
    parts.iter().fold(0, |h, &p| mix(h ^ p))
}

fn ceil_log2(n: u64) -> usize {
    (64 - n.max(1).saturating_sub(1).leading_zeros()) as usize
}

fn ids(ranges: &[Range<u64>]) -> impl Iterator<Item = u64> + '_ {
    ranges.iter().flat_map(|r| r.clone())
}

// ---------------------------------------------------------------------------
// The world's state.

/// What a walk does in one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg {
    Continue,
    Pass,
    Cancel,
    Fail,
}

/// How a walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Passed,
    Cancelled,
    Failed,
    /// By `Command::Fail`.
    FailedOutside(FailCause),
    /// By `Command::Unfinished`.
    Unfinished(Fate, String),
}

#[derive(Debug, Clone, Default)]
struct WalkRec {
    /// In the run (the sample, if any).
    in_run: bool,
    ended: Option<End>,
    /// It ran a segment and goes on: its state is held at `holder`.
    live: bool,
    holder: Option<usize>,
    /// Running in this outstanding batch.
    running: Option<BatchId>,
    /// In a batch lost so that the model must rerun it isolated.
    suspect: bool,
    /// Times it was in the only batch outstanding on a node that crashed.
    evidence: usize,
    /// Sends (re-sends to a replaced runner aside), and sends since its last
    /// acknowledgement.
    sends: usize,
    since_ack: usize,
    /// Its first segment was acknowledged.
    acked_first: bool,
    /// It was sent in a later (non-first) epoch.
    sent_later: bool,
    last_sent_epoch: Option<EpochId>,
    history: Vec<String>,
}

#[derive(Debug, Clone)]
struct WSlot {
    home: usize,
    up: bool,
    lost: bool,
}

#[derive(Debug, Clone)]
struct WBatch {
    slot: usize,
    batch: Batch,
    /// The walks it runs: all of a first segment's; the live ones of a later
    /// one.
    runs: Vec<u64>,
    /// `Some(Running)` once a claim found it running.
    claim: Option<Claimed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LossKind {
    Crash,
    Dropped,
    TimedOut(BatchId),
}

#[derive(Debug, Clone)]
enum Action {
    /// Acknowledge this batch (with `true`: the node did not start it, as a
    /// stopping run's node may answer).
    Complete(BatchId, bool),
    StartEpoch,
    Up(usize),
    Down(usize),
    Lose(usize, LossKind),
    AddSlot,
    Stop(StopKind, StopReason),
}

/// What a call's commands are checked against.
#[derive(Debug, Default)]
struct Ctx {
    /// The loss being reported, and its node.
    loss: Option<Loss>,
    node: Option<String>,
    node_lost_seen: usize,
    /// The walks of the batch that timed out.
    timed_out: Option<Vec<u64>>,
    /// The slot whose endpoint came up (its batches may be re-sent).
    resend_slot: Option<usize>,
    resent: BTreeSet<BatchId>,
}

struct World {
    setup: Setup,
    space: Space,
    size: u64,
    /// Walks in the run.
    run_walks: u64,
    cursor: EpochCursor,
    sample: Option<WalkSample>,
    dispatch: Dispatch,
    step: usize,
    log: Vec<String>,
    /// The epoch under way (started, not done).
    epoch: Option<Arc<Epoch>>,
    fail_branch: bool,
    skip_next: bool,
    between_epochs: bool,
    completed: bool,
    slots: Vec<WSlot>,
    losses_left: usize,
    rejoins_left: usize,
    replacements_left: usize,
    outstanding: BTreeMap<BatchId, WBatch>,
    /// Homes running an isolated batch.
    isolated: HashMap<usize, BatchId>,
    walks: Vec<WalkRec>,
    /// Poison walk → the level from which on it crashes its node.
    poison: HashMap<u64, usize>,
    stopping: Option<(StopKind, StopReason)>,
    ended: bool,
    /// Scripted claim answers (example tests), used before drawn ones.
    claim_script: VecDeque<Claimed>,
    /// Tallies for the example tests.
    crashes: usize,
    node_lost_fails: Vec<u64>,
    bound: usize,
    /// How often each kind of event happened (see `the_schedules_reach_every_kind_of_event`).
    stats: BTreeMap<&'static str, usize>,
}

type Check = Result<(), String>;

macro_rules! ensure {
    ($world:expr, $cond:expr, $walk:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($world.violation($walk, format!($($fmt)+)));
        }
    };
}

impl World {
    fn new(setup: Setup) -> World {
        let entries = setup
            .entries
            .iter()
            .map(|&(kind, n)| EntryInfo {
                name: "E",
                kind,
                options: (0..n).map(|i| i.to_string()).collect(),
            })
            .collect();
        let space = Space::new(entries).expect("small spaces are valid");
        let size = space.size();
        let sample = setup.sample.map(|density| {
            let mut ids: Vec<u64> = (0..size)
                .filter(|&id| hash(&[setup.salt, id, 1]) % 8 < u64::from(density))
                .collect();
            if ids.is_empty() {
                ids.push(hash(&[setup.salt, 2]) % size);
            }
            WalkSample::new(ids, size).expect("ids inside the space")
        });
        let runners = setup.credits.len();
        let config = Config {
            blocks: Blocks::for_space(&space, runners),
            max_batch: setup.max_batch,
            runners,
            sample: sample.clone(),
            sticky: setup.sticky,
            size,
            min_batch: 1,
        };
        let specs: Vec<SlotSpec> = setup
            .credits
            .iter()
            .enumerate()
            .map(|(i, &credits)| SlotSpec { credits, home: if setup.sticky { i } else { 0 } })
            .collect();
        let slots = specs.iter().map(|s| WSlot { home: s.home, up: false, lost: false }).collect();
        let walks: Vec<WalkRec> = (0..size)
            .map(|id| WalkRec {
                in_run: sample.as_ref().is_none_or(|s| s.ids().binary_search(&id).is_ok()),
                ..WalkRec::default()
            })
            .collect();
        let run_walks = walks.iter().filter(|w| w.in_run).count() as u64;
        let (first, last) = (space.first_level(), space.last_level());
        let poison = match setup.sticky {
            true => setup
                .poison
                .iter()
                .map(|&(raw, offset)| (raw % size, (first + offset).min(last)))
                .collect(),
            false => HashMap::new(),
        };
        World {
            dispatch: Dispatch::new(config, &specs),
            cursor: EpochCursor::new(space.clone()),
            space,
            size,
            run_walks,
            sample,
            step: 0,
            log: Vec::new(),
            epoch: None,
            fail_branch: false,
            skip_next: false,
            between_epochs: true,
            completed: false,
            slots,
            losses_left: if setup.sticky { RANDOM_LOSSES } else { 0 },
            rejoins_left: if setup.sticky { REJOINS } else { 0 },
            replacements_left: REPLACEMENTS,
            outstanding: BTreeMap::new(),
            isolated: HashMap::new(),
            walks,
            poison,
            stopping: None,
            ended: false,
            claim_script: VecDeque::new(),
            crashes: 0,
            node_lost_fails: Vec::new(),
            stats: BTreeMap::new(),
            bound: MAX_HITS as usize + ceil_log2(run_walks) + 4,
            setup,
        }
    }

    /// A failure message: what went wrong, the walk's history, and the last
    /// actions of the schedule.
    fn violation(&self, walk: Option<u64>, what: String) -> String {
        let mut msg = format!("step {}: {what}", self.step);
        if let Some(w) = walk.filter(|&w| w < self.size) {
            let rec = &self.walks[w as usize];
            msg += &format!("\nhistory of walk {w}:\n  {}", rec.history.join("\n  "));
        }
        let from = self.log.len().saturating_sub(60);
        msg += &format!(
            "\nthe schedule (log lines {from}..{} of {}; `step: action`, then `-> commands`):\n  {}",
            self.log.len(),
            self.log.len(),
            self.log[from..].join("\n  ")
        );
        msg
    }

    fn count(&mut self, event: &'static str) {
        *self.stats.entry(event).or_default() += 1;
    }

    fn note(&mut self, w: u64, what: String) {
        let step = self.step;
        self.walks[w as usize].history.push(format!("step {step}: {what}"));
    }

    fn fate(&self, w: u64, level: usize, last: bool) -> Seg {
        let roll = hash(&[self.setup.salt, w, level as u64, 3]) % 100;
        let (cancel, fail) = (u64::from(self.setup.cancel_pct), u64::from(self.setup.fail_pct));
        if roll < cancel {
            Seg::Cancel
        } else if roll < cancel + fail {
            Seg::Fail
        } else if last {
            Seg::Pass
        } else {
            Seg::Continue
        }
    }

    fn coin(&self, parts: &[u64], n: u64) -> u64 {
        let mut all = vec![self.setup.salt, self.step as u64, 5];
        all.extend_from_slice(parts);
        hash(&all) % n
    }

    // -- The schedule ------------------------------------------------------

    /// Plays the schedule until the run ends, then checks the accounting.
    fn run(&mut self) -> Check {
        if self.sample.is_some() && self.step == 0 {
            self.count("sampled run");
        }
        while !self.ended && !self.completed {
            self.step += 1;
            ensure!(self, self.step <= MAX_STEPS, None, "the run did not end in {MAX_STEPS} steps");
            let action = match self.planned_stop() {
                Some(action) => Some(action),
                None => match self.setup.choices.get(self.step - 1) {
                    Some(&c) => self.choose(c),
                    None => self.default_action(),
                },
            };
            let Some(action) = action else {
                return Err(self.violation(None, format!("stuck: {}", self.describe())));
            };
            self.act(action)?;
        }
        self.check_end()
    }

    fn describe(&self) -> String {
        format!(
            "nothing outstanding to finish and nothing else to do, yet the run has not ended \
             (epoch {:?}, between epochs: {}, stopping: {:?}, slots: {:?}, model outstanding: {})",
            self.epoch.as_ref().map(|e| (e.id, e.level, e.walks.clone())),
            self.between_epochs,
            self.stopping,
            self.slots,
            self.dispatch.outstanding()
        )
    }

    fn planned_stop(&self) -> Option<Action> {
        let plan = self.setup.stop.as_ref()?;
        let reason = stop_reason(plan.reason);
        match &self.stopping {
            None if self.step == plan.at => Some(Action::Stop(plan.kind, reason)),
            Some((StopKind::Drain, _))
                if plan.force_after.is_some_and(|after| self.step == plan.at + after) =>
            {
                Some(Action::Stop(StopKind::Force, reason))
            }
            _ => None,
        }
    }

    /// When every node is lost and the run goes on: a rejoin, or a stop.
    fn forced(&self, choice: Option<u32>) -> Option<Action> {
        let all_lost = self.slots.iter().all(|s| s.lost);
        if !all_lost || self.stopping.is_some() {
            return None;
        }
        let stop = choice.is_some_and(|c| c % 6 == 0);
        if self.setup.sticky && self.rejoins_left > 0 && !stop {
            return Some(Action::AddSlot);
        }
        let kind = match choice.is_some_and(|c| c % 12 == 6) {
            true => StopKind::Drain,
            false => StopKind::Force,
        };
        Some(Action::Stop(kind, StopReason::AllNodesLost("no node left".to_string())))
    }

    fn completable(&self) -> Vec<BatchId> {
        self.outstanding
            .iter()
            .filter(|(_, b)| self.slots[b.slot].up && !self.slots[b.slot].lost)
            .map(|(&id, _)| id)
            .collect()
    }

    /// The action choice `c` picks among those possible now.
    fn choose(&self, c: u32) -> Option<Action> {
        if let Some(forced) = self.forced(Some(c)) {
            return Some(forced);
        }
        let live_slots = || (0..self.slots.len()).filter(|&s| !self.slots[s].lost);
        let mut menu: Vec<(u32, Vec<Action>)> = Vec::new();
        menu.push((
            60,
            self.completable().into_iter().map(|id| Action::Complete(id, false)).collect(),
        ));
        if self.between_epochs && self.stopping.is_none() && !self.completed {
            menu.push((20, vec![Action::StartEpoch]));
        }
        menu.push((15, live_slots().filter(|&s| !self.slots[s].up).map(Action::Up).collect()));
        if self.replacements_left > 0 && self.stopping.is_none() {
            menu.push((2, live_slots().filter(|&s| self.slots[s].up).map(Action::Down).collect()));
        }
        if self.setup.sticky && self.losses_left > 0 {
            let mut losses = Vec::new();
            for slot in live_slots() {
                losses.push(Action::Lose(slot, LossKind::Dropped));
                if self.setup.random_crashes {
                    losses.push(Action::Lose(slot, LossKind::Crash));
                }
                let there: Vec<BatchId> = self
                    .outstanding
                    .iter()
                    .filter(|(_, b)| b.slot == slot)
                    .map(|(&id, _)| id)
                    .collect();
                if !there.is_empty() {
                    let id = there[(c as usize >> 8) % there.len()];
                    losses.push(Action::Lose(slot, LossKind::TimedOut(id)));
                }
            }
            menu.push((4, losses));
        }
        if self.setup.sticky && self.rejoins_left > 0 && self.slots.iter().any(|s| s.lost) {
            menu.push((2, vec![Action::AddSlot]));
        }
        menu.retain(|(_, actions)| !actions.is_empty());
        let total: u32 = menu.iter().map(|(w, _)| w).sum();
        if total == 0 {
            return None;
        }
        let (mut pick, rest) = (c % total, (c / total) as usize);
        for (weight, actions) in menu {
            if pick < weight {
                let action = actions[rest % actions.len()].clone();
                // A running batch of a stopping run may come back unstarted.
                if let Action::Complete(id, _) = action
                    && self.outstanding[&id].claim == Some(Claimed::Running)
                    && (rest / actions.len()) % 4 == 0
                {
                    return Some(Action::Complete(id, true));
                }
                return Some(action);
            }
            pick -= weight;
        }
        unreachable!("the pick is below the total weight")
    }

    /// Progress only: finish the oldest batch, start the next epoch, bring
    /// a runner up, or rejoin (stop) when every node is lost.
    fn default_action(&self) -> Option<Action> {
        if let Some(forced) = self.forced(None) {
            return Some(forced);
        }
        if let Some(&id) = self.completable().first() {
            return Some(Action::Complete(id, false));
        }
        if self.between_epochs && self.stopping.is_none() {
            return Some(Action::StartEpoch);
        }
        let down = (0..self.slots.len()).find(|&s| !self.slots[s].lost && !self.slots[s].up);
        down.map(Action::Up)
    }

    fn act(&mut self, action: Action) -> Check {
        match action {
            Action::Complete(id, not_started) => self.complete(id, not_started),
            Action::StartEpoch => self.start_epoch(),
            Action::Up(slot) => self.up(slot),
            Action::Down(slot) => {
                self.log
                    .push(format!("{}: runner of slot {slot} replaced (endpoint down)", self.step));
                self.slots[slot].up = false;
                self.replacements_left -= 1;
                self.dispatch.endpoint_down(slot);
                self.check_mirror()
            }
            Action::Lose(slot, kind) => {
                self.losses_left -= 1;
                self.lose(slot, kind, "the world".to_string())
            }
            Action::AddSlot => self.add_slot(),
            Action::Stop(kind, reason) => self.stop(kind, reason),
        }
    }

    // -- Actions -----------------------------------------------------------

    fn start_epoch(&mut self) -> Check {
        ensure!(
            self,
            self.outstanding.is_empty(),
            None,
            "an epoch starts with batches outstanding"
        );
        let mut next = self.cursor.next_epoch(self.skip_next);
        // As the planner does: a sampled run skips epochs with no sampled walk.
        if let Some(sample) = &self.sample {
            while next.as_ref().is_some_and(|e| sample.count_in(&e.walks) == 0) {
                next = self.cursor.next_epoch(true);
            }
        }
        let Some(epoch) = next else {
            self.log.push(format!("{}: every epoch is done", self.step));
            self.completed = true;
            return self.check_mirror();
        };
        let fail = epoch.serial.is_some()
            && hash(&[self.setup.salt, epoch.id.0, 7]) % 100
                < u64::from(self.setup.serial_fail_pct);
        self.log.push(format!(
            "{}: epoch {} starts (level {}, walks {:?}, first {}, last {}{})",
            self.step,
            epoch.id.0,
            epoch.level,
            epoch.walks,
            epoch.first,
            epoch.last,
            if fail { ", its serial action FAILED" } else { "" }
        ));
        if fail {
            self.count("serial action failed");
        }
        self.skip_next = fail;
        self.fail_branch = fail;
        self.between_epochs = false;
        let epoch = Arc::new(epoch);
        self.epoch = Some(Arc::clone(&epoch));
        let commands = self
            .dispatch
            .start_epoch(epoch, fail)
            .map_err(|e| self.violation(None, format!("start_epoch refused: {e}")))?;
        self.apply(commands, &mut Ctx::default())
    }

    fn complete(&mut self, id: BatchId, not_started: bool) -> Check {
        let b = &self.outstanding[&id];
        let slot = b.slot;
        let epoch = Arc::clone(&b.batch.epoch);
        if self.setup.sticky && !self.fail_branch && !not_started {
            let poison =
                b.runs.iter().find(|w| self.poison.get(w).is_some_and(|&l| epoch.level >= l));
            if let Some(&w) = poison {
                self.note(w, format!("takes its node down (batch {})", id.0));
                self.count("poison walk crashed its node");
                return self.lose(slot, LossKind::Crash, format!("walk {w} crashed it"));
            }
        }
        let b = self.take_batch(id);
        let home = self.slots[slot].home;
        let walks = b.batch.walks();
        if not_started {
            self.count("batch came back not started");
            self.log.push(format!(
                "{}: batch {} (slot {slot}, {:?}) comes back not started",
                self.step, id.0, b.batch.pieces
            ));
            for &w in &b.runs {
                self.note(w, format!("batch {} came back not started", id.0));
            }
            let done = Done { walks, not_started: true, ..Done::default() };
            let commands = self
                .dispatch
                .batch_done(slot, id, done)
                .map_err(|e| self.violation(None, format!("batch_done refused: {e}")))?;
            return self.apply(commands, &mut Ctx::default());
        }
        self.log.push(format!(
            "{}: batch {} (slot {slot}, epoch {}, {:?}) acknowledged",
            self.step, id.0, epoch.id.0, b.batch.pieces
        ));
        if b.claim == Some(Claimed::Running) {
            self.count("running batch acknowledged while stopping");
        }
        let runs: HashSet<u64> = b.runs.iter().copied().collect();
        let mut bits = Vec::with_capacity(walks as usize);
        for w in ids(&b.batch.pieces.ranges()) {
            if !runs.contains(&w) {
                bits.push(false);
                continue;
            }
            if let Some(end) = &self.walks[w as usize].ended {
                let what = format!("ran in batch {} although it had ended ({end:?})", id.0);
                return Err(self.violation(Some(w), what));
            }
            let seg = match self.fail_branch {
                true => Seg::Fail,
                false => self.fate(w, epoch.level, epoch.last),
            };
            let rec = &mut self.walks[w as usize];
            rec.since_ack = 0;
            rec.suspect = false;
            rec.acked_first |= epoch.first;
            bits.push(seg == Seg::Continue);
            match seg {
                Seg::Continue => {
                    rec.live = true;
                    rec.holder = Some(home);
                    self.note(
                        w,
                        format!("batch {} acknowledged: goes on, held at home {home}", id.0),
                    );
                }
                Seg::Pass => self.end(w, End::Passed, format!("batch {}", id.0)),
                Seg::Cancel => self.end(w, End::Cancelled, format!("batch {}", id.0)),
                Seg::Fail => self.end(w, End::Failed, format!("batch {}", id.0)),
            }
        }
        let live = (!epoch.last).then(|| LiveSet::from_bits(bits));
        let done = Done { walks, nanos: walks * self.setup.walk_nanos, live, not_started: false };
        let commands = self
            .dispatch
            .batch_done(slot, id, done)
            .map_err(|e| self.violation(None, format!("batch_done refused: {e}")))?;
        self.apply(commands, &mut Ctx::default())
    }

    fn lose(&mut self, slot: usize, kind: LossKind, reason: String) -> Check {
        let home = self.slots[slot].home;
        let node = format!("node{home}");
        let there: Vec<BatchId> = self
            .outstanding
            .iter()
            .filter(|(_, b)| self.slots[b.slot].home == home)
            .map(|(&id, _)| id)
            .collect();
        let alone = there.len() == 1;
        let loss = match kind {
            LossKind::Crash => Loss::Crash,
            LossKind::Dropped => Loss::Dropped,
            LossKind::TimedOut(batch) => Loss::TimedOut { batch, timeout: Duration::from_secs(1) },
        };
        self.log.push(format!(
            "{}: {node} (slot {slot}) lost: {loss:?} ({reason}); batches there: {:?}",
            self.step,
            there.iter().map(|id| id.0).collect::<Vec<_>>()
        ));
        let mut timed_out = None;
        for id in there {
            let b = self.take_batch(id);
            let timed = kind == LossKind::TimedOut(id);
            let suspect = b.batch.epoch.first && !timed && (kind == LossKind::Crash || alone);
            match (b.batch.epoch.first, kind, alone) {
                (true, LossKind::Crash, true) if b.runs.len() > 1 => {
                    self.count("alone batch crashed: split")
                }
                (true, LossKind::Crash, true) => self.count("single walk crashed alone: evidence"),
                (true, LossKind::Crash, false) => {
                    self.count("crash with several batches: suspects")
                }
                (true, LossKind::Dropped, true) => self.count("alone batch dropped: suspect"),
                (true, LossKind::Dropped, false) => self.count("batches dropped: requeued"),
                (false, _, _) => self.count("later-segment batch lost"),
                _ => {}
            }
            for &w in &b.runs {
                let rec = &mut self.walks[w as usize];
                if kind == LossKind::Crash && alone {
                    rec.evidence += 1;
                }
                rec.suspect |= suspect;
                let evidence = rec.evidence;
                self.note(
                    w,
                    format!(
                        "in batch {} when {node} was lost ({loss:?}, alone: {alone}; \
                         evidence now {evidence}, suspect: {suspect})",
                        id.0
                    ),
                );
            }
            if timed {
                timed_out = Some(b.runs.clone());
            }
        }
        for w in 0..self.size {
            if self.walks[w as usize].holder == Some(home) {
                let rec = &mut self.walks[w as usize];
                rec.holder = None;
                rec.live = false;
                self.note(w, format!("its state was lost with {node}"));
            }
        }
        for s in self.slots.iter_mut().filter(|s| s.home == home) {
            s.lost = true;
            s.up = false;
        }
        if kind == LossKind::Crash {
            self.crashes += 1;
        }
        if self.slots.iter().all(|s| s.lost) {
            self.count("every slot lost");
        }
        let commands = self.dispatch.slot_lost(slot, &node, &reason, loss);
        let mut ctx = Ctx {
            loss: Some(loss),
            node: Some(node.clone()),
            timed_out: timed_out.clone(),
            ..Ctx::default()
        };
        self.apply(commands, &mut ctx)?;
        ensure!(
            self,
            ctx.node_lost_seen == 1,
            None,
            "{node}'s loss was reported {} times",
            ctx.node_lost_seen
        );
        for w in timed_out.unwrap_or_default() {
            let end = &self.walks[w as usize].ended;
            ensure!(
                self,
                *end == Some(End::FailedOutside(FailCause::WalkTimeout)),
                Some(w),
                "walk {w} ran in the batch that timed out but ended {end:?}"
            );
        }
        Ok(())
    }

    fn up(&mut self, slot: usize) -> Check {
        self.log.push(format!("{}: endpoint of slot {slot} up", self.step));
        let expected: BTreeSet<BatchId> =
            self.outstanding.iter().filter(|(_, b)| b.slot == slot).map(|(&id, _)| id).collect();
        self.slots[slot].up = true;
        let commands = self.dispatch.endpoint_up(slot);
        let mut ctx = Ctx { resend_slot: Some(slot), ..Ctx::default() };
        self.apply(commands, &mut ctx)?;
        if !expected.is_empty() {
            self.count("batches re-sent to a replaced runner");
        }
        ensure!(
            self,
            ctx.resent == expected,
            None,
            "slot {slot} came up: re-sent {:?}, but {:?} were outstanding there",
            ctx.resent,
            expected
        );
        Ok(())
    }

    fn add_slot(&mut self) -> Check {
        let home = self.slots.len();
        let credits = self.setup.credits[home % self.setup.credits.len()];
        self.log
            .push(format!("{}: node{home} joins as slot {home} ({credits} credits)", self.step));
        self.rejoins_left -= 1;
        let (index, commands) = self.dispatch.slot_added(SlotSpec { credits, home });
        ensure!(self, index == home, None, "slot added at {index}, expected {home}");
        self.slots.push(WSlot { home, up: true, lost: false });
        self.apply(commands, &mut Ctx::default())
    }

    fn stop(&mut self, kind: StopKind, reason: StopReason) -> Check {
        self.log.push(format!("{}: stop {kind:?} ({reason:?})", self.step));
        match &mut self.stopping {
            None => self.stopping = Some((kind, reason.clone())),
            Some((k, _)) => {
                *k = (*k).max(kind);
                self.count("a drain forced");
            }
        }
        let commands = self.dispatch.stop(kind, reason);
        self.apply(commands, &mut Ctx::default())
    }

    /// Removes an outstanding batch from the world (acknowledged, lost or
    /// claimed back).
    fn take_batch(&mut self, id: BatchId) -> WBatch {
        let b = self.outstanding.remove(&id).expect("an outstanding batch");
        for &w in &b.runs {
            if self.walks[w as usize].running == Some(id) {
                self.walks[w as usize].running = None;
            }
        }
        let home = self.slots[b.slot].home;
        if self.isolated.get(&home) == Some(&id) {
            self.isolated.remove(&home);
        }
        b
    }

    fn end(&mut self, w: u64, how: End, by: String) {
        self.note(w, format!("ended: {how:?} ({by})"));
        let rec = &mut self.walks[w as usize];
        rec.ended = Some(how);
        rec.live = false;
        rec.holder = None;
        rec.suspect = false;
    }

    // -- Commands ----------------------------------------------------------

    fn apply(&mut self, commands: Vec<Command>, ctx: &mut Ctx) -> Check {
        if !commands.is_empty() {
            self.log.push(format!("    -> {}", summary(&commands)));
        }
        let mut queue: VecDeque<Command> = commands.into();
        while let Some(command) = queue.pop_front() {
            ensure!(self, !self.ended, None, "{} after Ended", summary(&[command]));
            match command {
                Command::Send { slot, batch } => self.on_send(slot, batch, ctx)?,
                Command::Fail { epoch, ids, cause, error } => {
                    self.on_fail(&epoch, ids, cause, &error, ctx)?;
                }
                Command::Unfinished { walks, fate } => self.on_unfinished(walks, fate)?,
                Command::NodeLost(node) => {
                    ensure!(
                        self,
                        ctx.node.as_ref() == Some(&node),
                        None,
                        "NodeLost({node}) while {:?} was lost",
                        ctx.node
                    );
                    ctx.node_lost_seen += 1;
                }
                Command::EpochDone(id) => self.on_epoch_done(id)?,
                Command::Claim { batches, force } => {
                    let results = self.on_claim(batches, force)?;
                    let more = self.dispatch.claimed(results.clone());
                    self.log.push(format!("    claimed {results:?} -> {}", summary(&more)));
                    queue.extend(more);
                }
                Command::AllSlotsLost => {
                    ensure!(
                        self,
                        self.slots.iter().all(|s| s.lost),
                        None,
                        "AllSlotsLost with a slot left"
                    );
                }
                Command::Ended => {
                    ensure!(
                        self,
                        self.stopping.is_some(),
                        None,
                        "Ended, but the run was not stopped"
                    );
                    ensure!(
                        self,
                        self.outstanding.is_empty(),
                        None,
                        "Ended with batches outstanding"
                    );
                    self.ended = true;
                }
            }
        }
        self.check_mirror()
    }

    fn check_mirror(&self) -> Check {
        ensure!(
            self,
            self.dispatch.outstanding() == self.outstanding.len(),
            None,
            "the model has {} batches outstanding, the world {:?}",
            self.dispatch.outstanding(),
            self.outstanding.keys().collect::<Vec<_>>()
        );
        ensure!(
            self,
            self.dispatch.is_ended() == self.ended,
            None,
            "the model's ended is {}, the world's {}",
            self.dispatch.is_ended(),
            self.ended
        );
        Ok(())
    }

    fn on_send(&mut self, slot: usize, batch: Batch, ctx: &mut Ctx) -> Check {
        let id = batch.id;
        if let Some(b) = self.outstanding.get(&id) {
            // Re-sent to a replaced runner.
            ensure!(
                self,
                ctx.resend_slot == Some(slot) && b.slot == slot && b.batch.pieces == batch.pieces,
                None,
                "batch {} re-sent to slot {slot} ({:?}); it is outstanding on slot {} ({:?})",
                id.0,
                batch.pieces,
                b.slot,
                b.batch.pieces
            );
            ctx.resent.insert(id);
            return Ok(());
        }
        ensure!(
            self,
            self.stopping.is_none(),
            None,
            "batch {} sent to slot {slot} after a stop",
            id.0
        );
        let Some(epoch) = self.epoch.clone() else {
            return Err(self.violation(None, format!("batch {} sent between epochs", id.0)));
        };
        ensure!(
            self,
            batch.epoch.id == epoch.id,
            None,
            "batch {} of epoch {:?} during {:?}",
            id.0,
            batch.epoch.id,
            epoch.id
        );
        if let Pieces::Sampled { .. } = batch.pieces {
            // A window into the sample: only walks that start and end in
            // this epoch (no state to store in blocks).
            ensure!(
                self,
                epoch.first && epoch.last,
                None,
                "batch {} is a window into the sample in epoch {:?}, whose walks go on",
                id.0,
                epoch.id
            );
            self.count("sampled window sent");
        }
        ensure!(
            self,
            slot < self.slots.len() && self.slots[slot].up && !self.slots[slot].lost,
            None,
            "batch {} sent to slot {slot}, which is {:?}",
            id.0,
            self.slots.get(slot)
        );
        let home = self.slots[slot].home;
        ensure!(
            self,
            !batch.pieces.is_empty()
                && batch.pieces.iter().all(|r| {
                    !r.is_empty() && epoch.walks.start <= r.start && r.end <= epoch.walks.end
                }),
            None,
            "batch {} has ranges {:?} outside epoch walks {:?}",
            id.0,
            batch.pieces,
            epoch.walks
        );
        // Isolation: nothing joins an isolated group's home.
        if let Some(&alone) = self.isolated.get(&home) {
            return Err(self.violation(
                ids(&batch.pieces.ranges()).next(),
                format!(
                    "batch {} ({:?}) sent to home {home} while suspect batch {} runs there isolated",
                    id.0, batch.pieces, alone.0
                ),
            ));
        }
        let walks: Vec<u64> = ids(&batch.pieces.ranges()).collect();
        let suspect = epoch.first && walks.iter().any(|&w| self.walks[w as usize].suspect);
        if suspect {
            let others: Vec<u64> = self
                .outstanding
                .iter()
                .filter(|(_, b)| self.slots[b.slot].home == home)
                .map(|(id, _)| id.0)
                .collect();
            ensure!(
                self,
                others.is_empty(),
                walks.first().copied(),
                "suspect batch {} ({:?}) sent to home {home}, where batches {others:?} are outstanding",
                id.0,
                batch.pieces
            );
        }
        let mut runs = Vec::new();
        let mut seen = HashSet::new();
        for &w in &walks {
            ensure!(self, seen.insert(w), Some(w), "walk {w} appears twice in batch {}", id.0);
            let rec = &self.walks[w as usize];
            ensure!(self, rec.in_run, Some(w), "walk {w}, not in the run, sent in batch {}", id.0);
            if let Some(other) = rec.running {
                let what =
                    format!("walk {w} sent in batch {} while it runs in batch {}", id.0, other.0);
                return Err(self.violation(Some(w), what));
            }
            if epoch.first {
                if let Some(end) = &rec.ended {
                    let what =
                        format!("walk {w} sent again in batch {} after it ended ({end:?})", id.0);
                    return Err(self.violation(Some(w), what));
                }
                ensure!(
                    self,
                    !rec.live,
                    Some(w),
                    "walk {w} sent again in its first segment (batch {}) while its state is held at home {:?}",
                    id.0,
                    rec.holder
                );
                ensure!(
                    self,
                    !rec.sent_later,
                    Some(w),
                    "walk {w} sent in its first segment (batch {}) after a later segment was sent",
                    id.0
                );
                ensure!(
                    self,
                    rec.suspect == suspect,
                    Some(w),
                    "batch {} mixes suspect and unsuspected walks ({:?}); walk {w} suspect: {}",
                    id.0,
                    batch.pieces,
                    rec.suspect
                );
                runs.push(w);
            } else {
                ensure!(
                    self,
                    rec.last_sent_epoch != Some(epoch.id),
                    Some(w),
                    "walk {w} sent twice in epoch {} (again in batch {})",
                    epoch.id.0,
                    id.0
                );
                ensure!(
                    self,
                    rec.acked_first,
                    Some(w),
                    "walk {w} sent in a later segment (batch {}) before its first was acknowledged",
                    id.0
                );
                if rec.live {
                    ensure!(
                        self,
                        rec.holder == Some(home),
                        Some(w),
                        "walk {w}'s later segment (batch {}) sent to slot {slot} at home {home}; \
                         its state is held at {:?}",
                        id.0,
                        rec.holder
                    );
                    runs.push(w);
                }
            }
        }
        let bound = self.bound;
        for &w in &walks {
            let rec = &mut self.walks[w as usize];
            rec.sends += 1;
            rec.since_ack += 1;
            rec.last_sent_epoch = Some(epoch.id);
            rec.sent_later |= !epoch.first;
            let since = rec.since_ack;
            let what = format!(
                "sent in batch {} to slot {slot}{} ({:?})",
                id.0,
                if suspect { ", isolated" } else { "" },
                batch.pieces
            );
            self.note(w, what);
            ensure!(
                self,
                since <= bound,
                Some(w),
                "walk {w} sent {since} times without an acknowledgement (bound {bound})"
            );
        }
        for &w in &runs {
            self.walks[w as usize].running = Some(id);
        }
        if suspect {
            self.isolated.insert(home, id);
            self.count("suspect group sent isolated");
        }
        if epoch.first && walks.iter().any(|&w| self.walks[w as usize].acked_first) {
            self.count("finished first segment rerun (its node was lost)");
        }
        self.outstanding.insert(id, WBatch { slot, batch, runs, claim: None });
        Ok(())
    }

    fn on_fail(
        &mut self,
        epoch: &Epoch,
        walks: Vec<u64>,
        cause: FailCause,
        error: &str,
        ctx: &Ctx,
    ) -> Check {
        ensure!(
            self,
            self.epoch.as_ref().is_some_and(|e| e.id == epoch.id),
            walks.first().copied(),
            "walks {walks:?} failed in epoch {:?}, not the current one",
            epoch.id
        );
        // A timed-out batch of a later segment may hold no live walk (they all
        // ended before): its Fail names none, which counts nothing.
        ensure!(
            self,
            !walks.is_empty() || cause == FailCause::WalkTimeout,
            None,
            "a Fail of no walk ({error})"
        );
        for w in walks {
            ensure!(
                self,
                w < self.size && self.walks[w as usize].in_run,
                None,
                "walk {w}, not in the run, failed"
            );
            let rec = &self.walks[w as usize];
            if let Some(end) = &rec.ended {
                let what =
                    format!("walk {w} failed ({cause:?}: {error}) although it had ended ({end:?})");
                return Err(self.violation(Some(w), what));
            }
            if let Some(batch) = rec.running {
                let what =
                    format!("walk {w} failed ({cause:?}) while it runs in batch {}", batch.0);
                return Err(self.violation(Some(w), what));
            }
            match cause {
                FailCause::NodeLost => {
                    ensure!(
                        self,
                        ctx.loss == Some(Loss::Crash),
                        Some(w),
                        "walk {w} failed for a node loss, on a {:?}",
                        ctx.loss
                    );
                    ensure!(
                        self,
                        rec.evidence >= EVIDENCE_TO_FAIL,
                        Some(w),
                        "walk {w} blamed for a node loss with evidence of {} crashes ({error})",
                        rec.evidence
                    );
                    ensure!(
                        self,
                        self.setup.random_crashes || self.poison.contains_key(&w),
                        Some(w),
                        "walk {w} never crashed anything, yet failed for a node loss ({error})"
                    );
                    self.node_lost_fails.push(w);
                    self.count("walk failed on evidence");
                }
                FailCause::WalkTimeout => {
                    self.count("walk failed by a timeout");
                    ensure!(
                        self,
                        ctx.timed_out.as_ref().is_some_and(|runs| runs.contains(&w)),
                        Some(w),
                        "walk {w} failed by a timeout, but was not in the batch that timed out"
                    );
                }
            }
            self.end(w, End::FailedOutside(cause), error.to_string());
        }
        Ok(())
    }

    fn on_unfinished(&mut self, walks: AbortedWalks, fate: Fate) -> Check {
        let stop_fate = self.stopping.as_ref().map(|(_, reason)| reason.fate());
        ensure!(
            self,
            fate == Fate::Aborted || stop_fate == Some(Fate::NotRun),
            None,
            "walks {:?} counted {fate:?} ({}) by a run stopped {:?}",
            walks.walks,
            walks.reason,
            self.stopping
        );
        let reason = &walks.reason;
        self.count(if reason.starts_with("node ") {
            "held walks aborted with their node"
        } else if reason.starts_with("not rerun") {
            "walks hit too often: aborted"
        } else if reason.starts_with("hung") {
            "running walks given up as hung"
        } else if reason.starts_with("not run") && fate == Fate::NotRun {
            "walks not run (duration ended)"
        } else if reason.starts_with("not run") {
            "walks not run"
        } else if reason.starts_with("not finished") {
            "held walks not finished"
        } else {
            "walks unfinished for another reason"
        });
        for w in ids(&walks.walks) {
            ensure!(
                self,
                w < self.size && self.walks[w as usize].in_run,
                None,
                "walk {w}, not in the run, is unfinished ({})",
                walks.reason
            );
            let rec = &self.walks[w as usize];
            if let Some(end) = &rec.ended {
                let what = format!(
                    "walk {w} unfinished ({fate:?}: {}) although it had ended ({end:?})",
                    walks.reason
                );
                return Err(self.violation(Some(w), what));
            }
            if let Some(batch) = rec.running {
                let what = format!(
                    "walk {w} unfinished ({}) while it runs in batch {}",
                    walks.reason, batch.0
                );
                return Err(self.violation(Some(w), what));
            }
            self.end(w, End::Unfinished(fate, walks.reason.clone()), "Unfinished".to_string());
        }
        Ok(())
    }

    fn on_epoch_done(&mut self, id: EpochId) -> Check {
        let Some(epoch) = self.epoch.clone() else {
            return Err(self.violation(None, format!("EpochDone({}) between epochs", id.0)));
        };
        ensure!(self, epoch.id == id, None, "EpochDone({}) during epoch {}", id.0, epoch.id.0);
        ensure!(
            self,
            self.outstanding.is_empty(),
            None,
            "EpochDone({}) with batches {:?} outstanding",
            id.0,
            self.outstanding.keys().map(|b| b.0).collect::<Vec<_>>()
        );
        ensure!(self, self.stopping.is_none(), None, "EpochDone({}) after a stop", id.0);
        for w in epoch.walks.clone() {
            let rec = &self.walks[w as usize];
            if !rec.in_run || rec.ended.is_some() {
                continue;
            }
            ensure!(
                self,
                rec.live,
                Some(w),
                "walk {w} is neither ended nor held when epoch {} is done",
                id.0
            );
            ensure!(
                self,
                rec.last_sent_epoch == Some(id),
                Some(w),
                "walk {w} is live but skipped the segment of epoch {} (level {})",
                id.0,
                epoch.level
            );
        }
        if epoch.last || self.fail_branch {
            for w in epoch.walks.clone() {
                self.walks[w as usize].holder = None;
            }
        }
        self.epoch = None;
        self.between_epochs = true;
        Ok(())
    }

    fn on_claim(
        &mut self,
        batches: Vec<BatchId>,
        force: bool,
    ) -> Result<Vec<(BatchId, Claimed)>, String> {
        let Some((kind, _)) = &self.stopping else {
            return Err(self.violation(None, format!("a claim of {batches:?} with no stop")));
        };
        ensure!(
            self,
            force == (*kind == StopKind::Force),
            None,
            "a claim with force {force} in a {kind:?} stop"
        );
        let expected: Vec<BatchId> = self.outstanding.keys().copied().collect();
        let mut named = batches.clone();
        named.sort();
        ensure!(self, named == expected, None, "a claim of {batches:?}; outstanding: {expected:?}");
        let mut results = Vec::new();
        for id in batches {
            let b = &self.outstanding[&id];
            let roll = self.coin(&[id.0], 3);
            let claimed = match self.claim_script.pop_front() {
                Some(scripted) => scripted,
                None => match (b.claim, self.slots[b.slot].up) {
                    (Some(Claimed::Running), _) if force && roll == 0 => Claimed::Hung,
                    (Some(Claimed::Running), _) => Claimed::Running,
                    // A replaced runner's queue: never started.
                    (_, false) => Claimed::NotStarted,
                    _ => match roll {
                        0 => Claimed::NotStarted,
                        1 if force => Claimed::Hung,
                        _ => Claimed::Running,
                    },
                },
            };
            match claimed {
                Claimed::Running => {
                    self.outstanding.get_mut(&id).expect("listed").claim = Some(Claimed::Running);
                }
                _ => {
                    let b = self.take_batch(id);
                    for &w in &b.runs {
                        self.note(w, format!("batch {} claimed: {claimed:?}", id.0));
                    }
                }
            }
            self.count(match claimed {
                Claimed::NotStarted => "claimed: not started",
                Claimed::Running => "claimed: running",
                Claimed::Hung => "claimed: hung",
            });
            results.push((id, claimed));
        }
        Ok(results)
    }

    // -- The end -----------------------------------------------------------

    fn check_end(&mut self) -> Check {
        ensure!(self, self.outstanding.is_empty(), None, "the run ended with batches outstanding");
        let mut counted = 0;
        for w in 0..self.size {
            let rec = &self.walks[w as usize];
            if !rec.in_run {
                ensure!(
                    self,
                    rec.ended.is_none() && rec.sends == 0,
                    Some(w),
                    "walk {w} is not in the run"
                );
                continue;
            }
            ensure!(self, rec.ended.is_some(), Some(w), "walk {w} was never accounted for");
            counted += 1;
        }
        ensure!(
            self,
            counted == self.run_walks,
            None,
            "{counted} walks of {} accounted",
            self.run_walks
        );
        if self.ended {
            self.poke_after_end()?;
        }
        Ok(())
    }

    /// After `Ended`, every call returns nothing.
    fn poke_after_end(&mut self) -> Check {
        let mut pokes: Vec<(String, Vec<Command>)> = Vec::new();
        pokes.push(("stop".into(), self.dispatch.stop(StopKind::Force, StopReason::Interrupted)));
        let epoch = Arc::new(EpochCursor::new(self.space.clone()).next().expect("an epoch"));
        let started = self
            .dispatch
            .start_epoch(epoch, false)
            .map_err(|e| self.violation(None, format!("start_epoch after Ended: {e}")))?;
        pokes.push(("start_epoch".into(), started));
        for slot in 0..self.slots.len() {
            if !self.slots[slot].lost {
                pokes.push((format!("endpoint_up({slot})"), self.dispatch.endpoint_up(slot)));
                let lost = self.dispatch.slot_lost(slot, "late", "after the end", Loss::Crash);
                pokes.push((format!("slot_lost({slot})"), lost));
            }
        }
        let home = self.slots.len();
        pokes
            .push(("slot_added".into(), self.dispatch.slot_added(SlotSpec { credits: 1, home }).1));
        pokes.push(("claimed".into(), self.dispatch.claimed(Vec::new())));
        for (what, commands) in pokes {
            ensure!(
                self,
                commands.is_empty(),
                None,
                "after Ended, {what} returned {}",
                summary(&commands)
            );
        }
        Ok(())
    }
}

fn summary(commands: &[Command]) -> String {
    let parts: Vec<String> = commands
        .iter()
        .map(|c| match c {
            Command::Send { slot, batch } => {
                format!("Send(batch {} -> slot {slot}: {:?})", batch.id.0, batch.pieces)
            }
            Command::Fail { ids, cause, .. } => format!("Fail({ids:?}, {cause:?})"),
            Command::Unfinished { walks, fate } => {
                format!("Unfinished({:?}, {fate:?}: {})", walks.walks, walks.reason)
            }
            Command::NodeLost(node) => format!("NodeLost({node})"),
            Command::EpochDone(id) => format!("EpochDone({})", id.0),
            Command::Claim { batches, force } => {
                format!(
                    "Claim({:?}, force: {force})",
                    batches.iter().map(|b| b.0).collect::<Vec<_>>()
                )
            }
            Command::AllSlotsLost => "AllSlotsLost".to_string(),
            Command::Ended => "Ended".to_string(),
        })
        .collect();
    parts.join("; ")
}

// ---------------------------------------------------------------------------
// Strategies.

/// 0–2 serial entries and 1–3 plain ones, in any order, at most 200 walks.
fn entries() -> impl Strategy<Value = Vec<(EntryKind, u32)>> {
    (
        prop::collection::vec(1u32..=3, 0..=2),
        prop::collection::vec(1u32..=5, 1..=3),
        prop::collection::vec(any::<prop::sample::Index>(), 2),
    )
        .prop_map(|(serials, plains, at)| {
            let mut entries: Vec<(EntryKind, u32)> =
                plains.into_iter().map(|n| (EntryKind::Plain, n)).collect();
            for (i, n) in serials.into_iter().enumerate() {
                let position = at[i].index(entries.len() + 1);
                entries.insert(position, (EntryKind::Serial, n));
            }
            while entries.iter().map(|e| u64::from(e.1)).product::<u64>() > 200 {
                let big = (0..entries.len()).max_by_key(|&i| entries[i].1).expect("an entry");
                entries[big].1 -= 1;
            }
            entries
        })
}

fn stop_plans() -> impl Strategy<Value = StopPlan> {
    (1usize..80, any::<bool>(), 0u8..4, prop::option::of(1usize..6)).prop_map(
        |(at, force, reason, force_after)| StopPlan {
            at,
            kind: if force { StopKind::Force } else { StopKind::Drain },
            reason,
            force_after,
        },
    )
}

fn setups(sticky: bool) -> impl Strategy<Value = Setup> {
    let world = (
        entries(),
        prop_oneof![1 => prop::collection::vec(1usize..=4, 1..=1), 3 => prop::collection::vec(1usize..=4, 2..=4)],
        prop_oneof![1 => Just(None), 4 => (1u64..=4).prop_map(Some)],
        prop::option::of(1u8..8),
        any::<u64>(),
        (0u8..=20, 0u8..=20, 0u8..=40),
        prop::collection::vec((any::<u64>(), 0usize..3), 0..=2),
        prop::bool::weighted(0.75),
        prop::sample::select(vec![1_000u64, 300_000, 1_000_000, 2_000_000]),
    );
    let schedule = (prop::option::of(stop_plans()), prop::collection::vec(any::<u32>(), 0..600));
    (world, schedule).prop_map(move |(world, (stop, choices))| {
        let (entries, credits, max_batch, sample, salt, pcts, poison, random_crashes, walk_nanos) =
            world;
        let (cancel_pct, fail_pct, serial_fail_pct) = pcts;
        Setup {
            entries,
            sticky,
            credits,
            max_batch,
            sample,
            salt,
            cancel_pct,
            fail_pct,
            serial_fail_pct,
            poison: if sticky { poison } else { Vec::new() },
            random_crashes,
            walk_nanos,
            stop,
            choices,
        }
    })
}

/// `cases` cases from a fixed seed; `PROPTEST_CASES` and
/// `PROPTEST_RNG_SEED`, when set, explore further.
fn config(cases: u32, seed: u64) -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() { default.cases } else { cases },
        rng_seed: match default.rng_seed {
            RngSeed::Random => RngSeed::Fixed(seed),
            chosen => chosen,
        },
        max_shrink_iters: 4096,
        ..default
    }
}

const CLUSTER_CASES: u32 = 4096;
const CLUSTER_SEED: u64 = 0x5eed_d15b;
const IN_PROCESS_CASES: u32 = 256;
const IN_PROCESS_SEED: u64 = 0x5eed_0001;

proptest! {
    #![proptest_config(config(CLUSTER_CASES, CLUSTER_SEED))]

    /// Cluster runs: one slot per node, losses of every kind, rejoins,
    /// poison walks, stops.
    #[test]
    fn cluster_schedules_keep_every_invariant(setup in setups(true)) {
        let mut world = World::new(setup);
        if let Err(failure) = world.run() {
            prop_assert!(false, "{}", failure);
        }
    }
}

proptest! {
    #![proptest_config(config(IN_PROCESS_CASES, IN_PROCESS_SEED))]

    /// In-process runs: every slot at home 0, runners replaced, stops.
    #[test]
    fn in_process_schedules_keep_every_invariant(setup in setups(false)) {
        let mut world = World::new(setup);
        if let Err(failure) = world.run() {
            prop_assert!(false, "{}", failure);
        }
    }
}

// ---------------------------------------------------------------------------
// Example schedules.

impl World {
    /// Plays `action`, as a step of the schedule.
    fn play(&mut self, action: Action) {
        self.step += 1;
        if let Err(failure) = self.act(action) {
            panic!("{failure}");
        }
    }

    /// Plays the default policy to the end.
    fn finish(&mut self) {
        if let Err(failure) = self.run() {
            panic!("{failure}");
        }
    }

    /// The outstanding batches on `slot`, oldest first.
    fn batches_on(&self, slot: usize) -> Vec<BatchId> {
        self.outstanding.iter().filter(|(_, b)| b.slot == slot).map(|(&id, _)| id).collect()
    }

    fn ranges_of(&self, id: BatchId) -> Vec<Range<u64>> {
        self.outstanding[&id].batch.pieces.ranges().into_owned()
    }

    /// Plays the default policy until the epoch under way is a later one.
    fn play_to_a_later_epoch(&mut self) {
        while self.epoch.as_ref().is_none_or(|e| e.first) {
            let action = self.default_action().expect("the run goes on");
            self.play(action);
        }
    }

    fn ended_as(&self, w: u64) -> &End {
        self.walks[w as usize].ended.as_ref().expect("the walk ended")
    }
}

/// A node drained to make room for a suspect group that then ran elsewhere
/// must take work again: here it is the only home of the next epoch's walks.
#[test]
fn a_node_drained_for_a_group_that_ran_elsewhere_takes_work_again() {
    use EntryKind::{Plain, Serial};
    let mut setup = Setup::example(&[(Plain, 8), (Serial, 1), (Plain, 1)], &[1, 1, 2]);
    setup.max_batch = Some(1);
    let mut world = World::new(setup);
    for slot in 0..3 {
        world.play(Action::Up(slot));
    }
    world.play(Action::StartEpoch);
    assert_eq!(world.batches_on(2).len(), 2);
    // Two batches on node 2: its crash makes two suspect groups, and node 0
    // is drained for the first.
    world.play(Action::Lose(2, LossKind::Crash));
    // Node 1 frees first and runs both groups, one after the other.
    for _ in 0..3 {
        let id = world.batches_on(1)[0];
        world.play(Action::Complete(id, false));
    }
    // Node 0's batch ends: its walk is held there for the next epoch.
    let id = world.batches_on(0)[0];
    world.play(Action::Complete(id, false));
    world.finish();
    assert!(world.completed);
    assert!((0..8).all(|w| *world.ended_as(w) == End::Passed));
}

/// The simulator checks only what its schedules reach: over the cases the
/// properties draw (same counts, same seeds), every kind of event happens.
#[test]
fn the_schedules_reach_every_kind_of_event() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut totals: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (sticky, cases, seed) in
        [(true, CLUSTER_CASES, CLUSTER_SEED), (false, IN_PROCESS_CASES, IN_PROCESS_SEED)]
    {
        let mut runner = TestRunner::new(config(cases, seed));
        let strategy = setups(sticky);
        for _ in 0..cases {
            let setup = strategy.new_tree(&mut runner).expect("a setup").current();
            let mut world = World::new(setup);
            if let Err(failure) = world.run() {
                panic!("{failure}");
            }
            for (event, n) in world.stats {
                *totals.entry(event).or_default() += n;
            }
        }
    }
    eprintln!("events over the drawn schedules: {totals:#?}");
    let expected = [
        "a drain forced",
        "alone batch crashed: split",
        "alone batch dropped: suspect",
        "batch came back not started",
        "batches dropped: requeued",
        "batches re-sent to a replaced runner",
        "claimed: hung",
        "claimed: not started",
        "claimed: running",
        "crash with several batches: suspects",
        "every slot lost",
        "finished first segment rerun (its node was lost)",
        "held walks aborted with their node",
        "held walks not finished",
        "later-segment batch lost",
        "poison walk crashed its node",
        "running batch acknowledged while stopping",
        "running walks given up as hung",
        "sampled run",
        "sampled window sent",
        "serial action failed",
        "single walk crashed alone: evidence",
        "suspect group sent isolated",
        "walk failed by a timeout",
        "walk failed on evidence",
        "walks hit too often: aborted",
        "walks not run",
        "walks not run (duration ended)",
    ];
    let missing: Vec<&str> =
        expected.into_iter().filter(|event| !totals.contains_key(event)).collect();
    assert!(missing.is_empty(), "no schedule reached {missing:?}");
}

/// Two nodes, each running one walk alone, crash at once (no step between):
/// one count of evidence against each walk is not enough to blame it; both
/// rerun isolated elsewhere and pass.
#[test]
fn two_unrelated_crashes_at_once_fail_nothing() {
    let mut setup = Setup::example(&[(EntryKind::Plain, 8)], &[1, 1]);
    setup.max_batch = Some(1);
    let mut world = World::new(setup);
    world.play(Action::Up(0));
    world.play(Action::Up(1));
    world.play(Action::StartEpoch);
    let (a, b) = (world.batches_on(0), world.batches_on(1));
    assert_eq!((world.ranges_of(a[0]), world.ranges_of(b[0])), (vec![0..1], vec![1..2]));
    world.play(Action::Lose(0, LossKind::Crash));
    world.play(Action::Lose(1, LossKind::Crash));
    assert_eq!((world.walks[0].evidence, world.walks[1].evidence), (1, 1));
    assert!(world.walks[0].suspect && world.walks[1].suspect);
    world.finish();
    assert!(world.completed);
    assert!(world.node_lost_fails.is_empty());
    assert!((0..8).all(|w| *world.ended_as(w) == End::Passed));
    assert!(world.stats["suspect group sent isolated"] >= 2);
}

/// A poison walk in a batch of eight, alone on its node: each crash halves
/// its group (8, 4, 2, 1 walks), then it crashes `EVIDENCE_TO_FAIL` times
/// running alone and fails; every other walk passes.
#[test]
fn a_poison_walk_in_a_big_batch_is_found_by_splitting() {
    let mut setup = Setup::example(&[(EntryKind::Plain, 32)], &[1]);
    setup.max_batch = Some(8);
    setup.poison = vec![(13, 0)];
    let mut world = World::new(setup);
    world.play(Action::Up(0));
    world.play(Action::StartEpoch);
    // A one-walk probe, then batches of eight: the third holds walk 13.
    for expected in [0..1, 1..9] {
        let id = world.batches_on(0)[0];
        assert_eq!(world.ranges_of(id), vec![expected]);
        world.play(Action::Complete(id, false));
    }
    assert_eq!(world.ranges_of(world.batches_on(0)[0]), vec![9..17]);
    world.finish();
    assert_eq!(world.node_lost_fails, vec![13]);
    assert_eq!(*world.ended_as(13), End::FailedOutside(FailCause::NodeLost));
    assert!((0..32).filter(|&w| w != 13).all(|w| *world.ended_as(w) == End::Passed));
    assert_eq!(world.crashes, 3 + EVIDENCE_TO_FAIL, "three halvings, then the evidence");
    assert_eq!(world.stats["alone batch crashed: split"], 3);
}

/// `Loss::Dropped` is no evidence: in a first segment, the walks the node
/// had finished and those it was running are rerun (those of a batch alone
/// on it, isolated) and pass; in a later segment, the walks whose states it
/// held are aborted, with the node and the reason.
#[test]
fn a_dropped_run_reruns_first_segments_and_aborts_held_walks() {
    use EntryKind::{Plain, Serial};
    let entries = [(Plain, 8), (Serial, 1), (Plain, 1)];
    let mut setup = Setup::example(&entries, &[2, 1]);
    setup.max_batch = Some(1);
    let mut world = World::new(setup);
    world.play(Action::Up(0));
    world.play(Action::Up(1));
    world.play(Action::StartEpoch);
    // Node 0 finishes walk 0 (held there) and takes walk 3.
    let first = world.batches_on(0)[0];
    assert_eq!(world.ranges_of(first), vec![0..1]);
    world.play(Action::Complete(first, false));
    assert_eq!(world.batches_on(0).len(), 2);
    world.play(Action::Lose(0, LossKind::Dropped));
    // Node 1 runs one batch, alone: dropped, it becomes a suspect group.
    world.play(Action::AddSlot);
    assert_eq!(world.batches_on(1).len(), 1);
    world.play(Action::Lose(1, LossKind::Dropped));
    assert!(world.walks.iter().all(|w| w.evidence == 0));
    assert!(world.walks.iter().any(|w| w.suspect));
    world.finish();
    assert!(world.completed);
    assert!((0..8).all(|w| *world.ended_as(w) == End::Passed));
    assert!(world.walks[0].sends >= 2, "walk 0, finished on node 0, ran again");
    assert!(world.stats["suspect group sent isolated"] >= 1);

    // A later segment: the states node 0 held are lost with it.
    let mut world = World::new(Setup::example(&entries, &[1, 1]));
    world.play(Action::Up(0));
    world.play(Action::Up(1));
    world.play_to_a_later_epoch();
    let held: Vec<u64> = (0..8).filter(|&w| world.walks[w as usize].holder == Some(0)).collect();
    assert!(!held.is_empty());
    world.play(Action::Lose(0, LossKind::Dropped));
    world.finish();
    for w in 0..8 {
        match world.ended_as(w) {
            End::Unfinished(Fate::Aborted, reason) if held.contains(&w) => {
                assert!(reason.starts_with("node node0 lost"), "walk {w}: {reason}");
            }
            End::Passed if !held.contains(&w) => {}
            other => panic!("walk {w} (held at node 0: {}) ended {other:?}", held.contains(&w)),
        }
    }
    assert!(world.walks.iter().all(|w| w.evidence == 0));
}

/// Ctrl-C twice: the drain finds one batch running and takes the other
/// back; the forced stop gives the running one up as hung. Its walk is
/// aborted as hung, the rest are not run, and the hung batch's late
/// results count for nothing (the runner's claim stops them; the model
/// knows the batch no more).
#[test]
fn a_forced_stop_gives_a_running_batch_up_as_hung() {
    let mut setup = Setup::example(&[(EntryKind::Plain, 8)], &[2]);
    setup.max_batch = Some(1);
    let mut world = World::new(setup);
    world.play(Action::Up(0));
    world.play(Action::StartEpoch);
    let batches = world.batches_on(0);
    assert_eq!(batches.len(), 2);
    world.claim_script = [Claimed::Running, Claimed::NotStarted].into();
    world.play(Action::Stop(StopKind::Drain, StopReason::Interrupted));
    assert!(!world.ended, "the drain waits for the running batch");
    world.claim_script = [Claimed::Hung].into();
    world.play(Action::Stop(StopKind::Force, StopReason::Interrupted));
    assert!(world.ended);
    let hung = End::Unfinished(Fate::Aborted, "hung when the run was interrupted".to_string());
    assert_eq!(*world.ended_as(0), hung);
    let not_run = End::Unfinished(Fate::Aborted, "not run: the run was interrupted".to_string());
    assert!((1..8).all(|w| *world.ended_as(w) == not_run));
    let late = Done { walks: 1, nanos: 1_000, live: None, not_started: false };
    assert!(world.dispatch.batch_done(0, batches[0], late).is_err());
    world.finish();
}

/// A sampled run whose walks start and end in one epoch goes out as
/// windows into the sample (no range per walk). A node that crashes while
/// it runs one: its walks run again (as suspect groups, as ranges), and
/// every sampled walk ends once.
#[test]
fn a_sampled_round_goes_as_windows_and_a_lost_window_runs_again() {
    let mut setup = Setup::example(&[(EntryKind::Plain, 40), (EntryKind::Plain, 10)], &[2, 2]);
    setup.sample = Some(2);
    setup.max_batch = Some(16);
    let mut world = World::new(setup);
    world.play(Action::Up(0));
    world.play(Action::Up(1));
    world.play(Action::StartEpoch);
    let sampled: Vec<u64> = world.sample.as_ref().expect("sampled").ids().to_vec();
    let on_0 = world.batches_on(0);
    let window = &world.outstanding[&on_0[0]].batch.pieces;
    assert!(matches!(window, Pieces::Sampled { .. }), "a window: {window:?}");
    assert_eq!(window.sampled_ids(), Some(&sampled[..1]), "the first probe: one walk");
    // Let the measured cost grow the batches, then crash node 0 with
    // windows on it.
    for id in on_0 {
        world.play(Action::Complete(id, false));
    }
    let lost: Vec<u64> =
        world.batches_on(0).iter().flat_map(|&id| world.ranges_of(id)).flatten().collect();
    assert!(lost.len() > 1, "node 0 runs windows of several walks: {lost:?}");
    world.play(Action::Lose(0, LossKind::Crash));
    world.finish();
    assert!(world.completed);
    assert!(world.stats["sampled window sent"] >= 3);
    assert!(lost.iter().all(|&w| world.walks[w as usize].sends >= 2), "{lost:?} ran again");
    for w in 0..world.size {
        let in_sample = sampled.binary_search(&w).is_ok();
        assert_eq!(world.walks[w as usize].ended.is_some(), in_sample, "walk {w}");
    }
    assert!(sampled.iter().all(|&w| *world.ended_as(w) == End::Passed));
}
