//! Synchronous execution of batches and serial steps (replays are in
//! `replay`). No actor runtime here: a `WalkRunner` calls [`ErasedOrder::execute`] on a blocking
//! thread, the `SerialBarrier` calls [`ErasedOrder::run_serial`].
//!
//! The hot loop is generic over the walk order's chain, so each action's
//! `run` is inlined; per walk it decodes nothing (an odometer steps the
//! option indices), touches no shared memory (counts are batch-local) and
//! installs no panic handler (one `catch_unwind` covers the batch and the
//! loop resumes after the walk that panicked).

use std::any::Any;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use std::sync::Arc;

use crate::model::action::{Halt, SerialContext, WalkContext};
use crate::model::epoch::{Epoch, SerialStep};
use crate::model::fixtures::{ErasedStart, Fixtures, Held, StartKind};
use crate::model::holdings::LiveSet;
use crate::model::outcome::{Counts, FailedWalk};
use crate::model::pieces::Pieces;
use crate::model::space::{Blocks, Space, WalkId};
use crate::model::triage::Neither;
use crate::model::walk::{OptionLookup, Reads, WalkView};
use crate::order::{Chain, PanicMark, Pinned, SerialValue, WalkOrder, take_panic_position};

mod walks_async;
pub(crate) use walks_async::DEFAULT_IN_FLIGHT;

/// What to do with the walks of a batch.
#[derive(Debug, Clone)]
pub(crate) enum Instruction {
    /// Run the epoch's segment, applying the serial value first if the epoch
    /// has a serial action. With the branch's earlier serial steps and
    /// their values, for nodes that have not applied them yet (see
    /// [`SerialAction::apply_on_node`](crate::SerialAction::apply_on_node)).
    Run(Option<SerialValue>, History),
    /// The epoch's serial action failed: fail every live walk with this error.
    FailBranch(String),
}

/// The serial steps of a branch above an epoch's own, in order, with the
/// values their runs gave.
pub(crate) type History = Arc<Vec<(SerialStep, SerialValue)>>;

/// Held walk states for consecutive walk ids: which walks go on, and their
/// states.
///
/// The states are packed (one per live walk, in id order, no per-walk
/// `Option`): a run with a serial action holds a state for every walk of
/// the space at its first barrier, so the block's size is most of the run's
/// memory, and every byte of it is a page first touched in the first epoch.
#[derive(Debug)]
pub(crate) struct Block<S> {
    pub(crate) start: u64,
    /// One bit per walk of the block: set for the walks whose state is held.
    pub(crate) live: LiveSet,
    /// The held states, in walk-id order: one per set bit of `live`.
    pub(crate) states: Vec<S>,
    /// Time each walk has run so far, when tracing (else empty).
    pub(crate) nanos: Vec<u64>,
}

impl<S> Block<S> {
    /// A block of `range` holding no walk: its walks have all ended.
    pub(crate) fn tombstone(range: Range<u64>) -> Self {
        Block {
            start: range.start,
            live: LiveSet::none(range.end - range.start),
            states: Vec::new(),
            nanos: Vec::new(),
        }
    }

    pub(crate) fn range(&self) -> Range<u64> {
        self.start..self.start + self.live.len()
    }

    /// The ids of the walks it holds.
    pub(crate) fn live_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.live.ranges(self.start).into_iter().flatten()
    }
}

/// The walks of a batch.
#[derive(Debug)]
pub(crate) enum BatchInput<S> {
    /// First segment: every walk starts from a clone of the initial state.
    Fresh(Pieces),
    /// A later segment: the states held since the walks' previous segment.
    Held(Vec<Block<S>>),
}

/// What a batch produced.
#[derive(Debug)]
pub(crate) struct BatchOutput<S> {
    pub(crate) counts: Counts,
    pub(crate) failed: Vec<FailedWalk>,
    /// Cancelled and pruned walks, as ranges (for the failure triage).
    pub(crate) neither: Vec<Range<u64>>,
    /// Final states of walks that ended here, when gathering.
    pub(crate) finals: Vec<(WalkId, S)>,
    /// States of walks that go on to a later segment, block by block.
    pub(crate) held: Vec<Block<S>>,
    /// The message of the first panic, if an action panicked.
    pub(crate) panic: Option<String>,
    /// What the trace records of the walks that ended here, when tracing.
    pub(crate) records: BatchRecords,
    /// Walks the batch covered (ended or not).
    pub(crate) walks: u64,
    /// Time spent running the batch.
    pub(crate) nanos: u64,
}

/// How a batch runs, fixed for the run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchSettings {
    /// How held states are grouped.
    pub(crate) blocks: Blocks,
    /// Keep the final state of every walk.
    pub(crate) gather: bool,
    /// Record each walk's outcome and duration. Off, it costs nothing per
    /// walk but a predictable branch.
    pub(crate) trace: bool,
    /// Walks in flight at once on one runner thread, for async walk orders
    /// (see `walks_async`).
    pub(crate) in_flight: usize,
}

/// What a batch gives the trace: a record per failed or cancelled walk,
/// its passing and pruned walks as id ranges, and its time. Passing walks
/// are not timed one by one (see [`WalkClock`]).
#[derive(Debug, Default)]
pub(crate) struct BatchRecords {
    /// Failed and cancelled walks, each with its duration.
    walks: Vec<WalkRecord>,
    passed: Vec<Range<u64>>,
    pruned: Vec<Range<u64>>,
    /// The batch's time.
    nanos: u64,
}

impl BatchRecords {
    /// Records a walk that ended: a passing or pruned one joins the ranges.
    pub(crate) fn push(&mut self, record: WalkRecord) {
        match record.outcome {
            WalkOutcome::Passed => self.pass(record.id.0),
            WalkOutcome::Pruned => self.prune(record.id.0..record.id.0 + 1),
            _ => self.walks.push(record),
        }
    }

    /// Records walk `id` as passed (ids come in increasing order within a
    /// unit, so a run of them is one range).
    #[inline(always)]
    fn pass(&mut self, id: u64) {
        match self.passed.last_mut() {
            Some(last) if last.end == id => last.end += 1,
            _ => self.passed.push(id..id + 1),
        }
    }

    /// Records as passed every walk of `units` (a batch whose walks end in
    /// it) that ran and has no other record: the batch loop does not record
    /// passing walks one by one.
    fn add_passing<S>(&mut self, units: &[Unit<S>]) {
        let mut other: Vec<Range<u64>> = self
            .walks
            .iter()
            .map(|r| r.id.0..r.id.0 + 1)
            .chain(self.pruned.iter().cloned())
            .collect();
        other.sort_unstable_by_key(|r| r.start);
        for unit in units {
            let range = unit.range.clone();
            if unit.fresh || unit.all_live {
                self.pass_range(range, &other);
            } else {
                // A held unit's walks without a state ended earlier.
                for offset in 0..range.end - range.start {
                    if unit.live_in.get(offset) {
                        let id = range.start + offset;
                        self.pass_range(id..id + 1, &other);
                    }
                }
            }
        }
    }

    /// Records the walks of `range` that are in none of `other` (sorted by
    /// start, not overlapping) as passed.
    fn pass_range(&mut self, range: Range<u64>, other: &[Range<u64>]) {
        let mut next = range.start;
        let first = other.partition_point(|r| r.end <= range.start);
        for r in other[first..].iter().take_while(|r| r.start < range.end) {
            if r.start > next {
                self.push_passed(next..r.start);
            }
            next = next.max(r.end);
        }
        if next < range.end {
            self.push_passed(next..range.end);
        }
    }

    fn push_passed(&mut self, walks: Range<u64>) {
        Neither::push_range(&mut self.passed, walks);
    }

    /// Adds the records of a later part of the same batch.
    fn absorb(&mut self, later: BatchRecords) {
        self.walks.extend(later.walks);
        later.passed.into_iter().for_each(|walks| self.push_passed(walks));
        later.pruned.into_iter().for_each(|walks| self.prune(walks));
    }

    /// Records the walks `walks` as pruned.
    fn prune(&mut self, walks: Range<u64>) {
        Neither::push_range(&mut self.pruned, walks);
    }

    /// Walks recorded.
    pub(crate) fn len(&self) -> usize {
        let span = |r: &Range<u64>| (r.end - r.start) as usize;
        self.walks.len()
            + self.passed.iter().map(span).sum::<usize>()
            + self.pruned.iter().map(span).sum::<usize>()
    }

    /// Whether it records no walk.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The failed and cancelled walks.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, WalkRecord> {
        self.walks.iter()
    }

    /// Every walk recorded, one record each (passing and pruned ones with
    /// no duration), by id: for tests.
    #[cfg(test)]
    pub(crate) fn expand(&self) -> Vec<WalkRecord> {
        let mut all = self.walks.clone();
        for (ranges, outcome) in
            [(&self.passed, WalkOutcome::Passed), (&self.pruned, WalkOutcome::Pruned)]
        {
            for r in ranges {
                all.extend(r.clone().map(|id| WalkRecord {
                    id: WalkId(id),
                    outcome: outcome.clone(),
                    nanos: 0,
                }));
            }
        }
        all.sort_by_key(|r| r.id);
        all
    }
}

/// What a batch records for the trace: its failed and cancelled walks,
/// each with its duration, and (from the executor) its passing and pruned
/// walks as ranges with the batch's time.
pub(crate) trait BatchTrace {
    /// The walks with a record of their own.
    fn walk_records(&self) -> &[WalkRecord];
    /// Passing walks, as ranges.
    fn passed(&self) -> &[Range<u64>] {
        &[]
    }
    /// Pruned walks, as ranges.
    fn pruned(&self) -> &[Range<u64>] {
        &[]
    }
    /// The batch's time.
    fn batch_nanos(&self) -> u64 {
        0
    }
}

impl BatchTrace for Vec<WalkRecord> {
    fn walk_records(&self) -> &[WalkRecord] {
        self
    }
}

impl BatchTrace for BatchRecords {
    fn walk_records(&self) -> &[WalkRecord] {
        &self.walks
    }
    fn passed(&self) -> &[Range<u64>] {
        &self.passed
    }
    fn pruned(&self) -> &[Range<u64>] {
        &self.pruned
    }
    fn batch_nanos(&self) -> u64 {
        self.nanos
    }
}

/// The end of one walk, for the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalkRecord {
    pub(crate) id: WalkId,
    pub(crate) outcome: WalkOutcome,
    /// Time its segments took, summed.
    pub(crate) nanos: u64,
}

/// How one walk ended: in a run's trace, or in a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkOutcome {
    /// Every segment ran.
    Passed,
    /// An action cancelled the walk.
    Cancelled {
        /// Position of the cancelling action.
        action_index: usize,
    },
    /// An action, or a serial action, failed.
    Failed {
        /// Position of the failing action.
        action_index: usize,
        /// Its type name.
        action: &'static str,
        /// The error text.
        error: String,
    },
    /// An action prunes this walk: it would never run.
    Pruned,
}

/// The action name of a failure outside any action: the walk state's
/// `clone` or `drop` panicked.
pub(crate) const WALK_STATE_ACTION: &str = "(walk state)";

/// The action name of a walk that ran past its walk timeout (which action
/// was running is not known: the thread is stuck in it).
pub(crate) const WALK_TIMEOUT_ACTION: &str = "(walk timeout)";

/// The action name of a walk whose node was lost while running it, twice.
pub(crate) const NODE_LOST_ACTION: &str = "(node lost)";

/// Where a run's walks come from on one process or node: how each starts,
/// and the fixtures their actions reach. Each runner thread holds its own
/// (the initial state need not be `Sync`); the fixtures are shared.
pub(crate) struct Origin<S> {
    pub(crate) start: Box<dyn ErasedStart<S>>,
    pub(crate) fixtures: Arc<Fixtures>,
}

impl<S> Clone for Origin<S> {
    fn clone(&self) -> Self {
        Origin { start: self.start.clone_box(), fixtures: Arc::clone(&self.fixtures) }
    }
}

impl<S: 'static> Origin<S> {
    /// Walks start as `start` of kind `K` says.
    pub(crate) fn new<K: StartKind<S>>(start: K::Start, fixtures: Arc<Fixtures>) -> Self {
        Origin { start: Box::new(Held::<S, K>(start)), fixtures }
    }
}

/// A batch's origin of walk states, its kind known: what the batch loop
/// reads per walk.
struct Begin<'a, S, K: StartKind<S>> {
    start: &'a K::Start,
    fixtures: &'a Fixtures,
}

/// A walk order with its state type fixed and its chain type erased: the
/// boundary where dynamic dispatch happens, once per batch.
pub(crate) trait ErasedOrder<S>: Send + Sync {
    fn space(&self) -> &Space;
    /// Whether the walk order has an async action (its batches run as
    /// futures, `in_flight` at once per runner).
    fn is_async(&self) -> bool;
    fn execute(
        &self,
        epoch: &Epoch,
        instruction: &Instruction,
        input: BatchInput<S>,
        origin: &Origin<S>,
        settings: BatchSettings,
    ) -> BatchOutput<S>;
    /// Runs `step`'s serial action once (`run_in`), with `fixtures`.
    fn run_serial(
        &self,
        step: SerialStep,
        branch: &[u32],
        fixtures: &Fixtures,
    ) -> Result<SerialValue, String>;
    /// Applies `step`'s value once on this process or node
    /// (`apply_on_node`).
    fn node_step(
        &self,
        step: SerialStep,
        branch: &[u32],
        value: &SerialValue,
        fixtures: &Fixtures,
        node: Option<&str>,
    ) -> Result<(), String>;
    /// The serial value of `step`'s entry as bytes, for the nodes of a
    /// cluster run.
    fn encode_value(&self, step: SerialStep, value: &SerialValue) -> Result<Vec<u8>, String>;
    /// A serial value of `step`'s entry from bytes, on a node.
    fn decode_value(&self, step: SerialStep, bytes: &[u8]) -> Result<SerialValue, String>;
}

/// A validated walk order, ready to run, its walks starting as `K` says.
pub(crate) struct Runnable<S, C, K = crate::model::fixtures::Cloned> {
    order: WalkOrder<S, C>,
    space: Space,
    /// Whether any entry overrides `prune`: if none does, the batch loops
    /// have no pruning in them at all.
    rules: bool,
    _start: std::marker::PhantomData<fn() -> K>,
}

impl<S: Send + 'static, C: Chain<S>, K: StartKind<S>> Runnable<S, C, K> {
    pub(crate) fn new(order: WalkOrder<S, C>) -> Result<Self, crate::model::space::OrderError> {
        let space = order.space()?.clone();
        // Walk 0 asked once: if it is not pruned, every entry was asked,
        // and if every one declined (the default `prune`), no walk can be
        // pruned. A rule that panics here has a rule.
        let chain = order.chain();
        let (digits, reads) = (vec![0u32; space.len()], Reads::default());
        let asked = {
            let _quiet = QuietPanics::on_this_thread();
            catch_unwind(AssertUnwindSafe(|| {
                chain.prune(&WalkView::new(0, &digits, &Pinned::new(chain), &reads))
            }))
        };
        let rules = !matches!(asked, Ok(false)) || reads.mask() != 0;
        Ok(Runnable { order, space, rules, _start: std::marker::PhantomData })
    }
}

thread_local! {
    /// Whether a panic on this thread is a walk's outcome (reported in the
    /// run's report and trace), not a crash to print.
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Keeps panics of user actions off stderr while it lives on a thread.
///
/// A panicking action is an outcome of its walk: its message is in the
/// report and the trace, so printing "thread panicked at ..." for each of
/// thousands of walks would only bury the summary. The hook that skips them
/// is installed once per process, chained to the hook that was there
/// before: panics anywhere else print as usual, and with `-vv` (debug logs)
/// the skipped ones are logged.
pub(crate) struct QuietPanics {
    before: bool,
}

impl QuietPanics {
    pub(crate) fn on_this_thread() -> Self {
        install_quiet_panic_hook();
        QuietPanics { before: QUIET_PANICS.with(|q| q.replace(true)) }
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        QUIET_PANICS.with(|q| q.set(self.before));
    }
}

fn install_quiet_panic_hook() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET_PANICS.with(|q| q.get()) {
                tracing::debug!(target: "combtest::panic", "an action panicked: {info}");
            } else {
                previous(info);
            }
        }));
    });
}

/// The text of a caught panic. Consumes the payload: a payload is user
/// data, and one whose `drop` panics would otherwise unwind out of the
/// handler and take the runner thread down with its batch; such a payload
/// is leaked instead.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    };
    if let Err(second) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(second);
    }
    text
}

/// Runs one segment of one walk: the serial value (if any), then the plain
/// actions.
#[inline(always)]
fn run_segment<S: 'static, C: Chain<S>>(
    chain: &C,
    epoch: &Epoch,
    value: Option<&SerialValue>,
    digits: &[u32],
    state: &mut S,
    walk: WalkContext<'_>,
) -> Result<(), (usize, Halt)> {
    apply_then(chain, epoch, value, state, walk, |s| chain.run_plain(digits, &epoch.plain, s, walk))
}

/// The `LEVEL` of `run_units` that tests segment membership at run time.
const ANY_LEVEL: usize = usize::MAX;

/// The `OUT` of `run_units`: where the states of walks that pass the
/// segment go. `KEEP`: walks go on, their states are kept for the next
/// segment; `END`: walks end here; `EITHER`: read from the epoch per batch
/// (traced loops, where a test per walk is noise).
const KEEP: u8 = 0;
const END: u8 = 1;
const EITHER: u8 = 2;

/// Applies the epoch's serial value (if any), then runs `plain`.
#[inline(always)]
fn apply_then<S: 'static, C: Chain<S>>(
    chain: &C,
    epoch: &Epoch,
    value: Option<&SerialValue>,
    state: &mut S,
    walk: WalkContext<'_>,
    plain: impl FnOnce(&mut S) -> Result<(), (usize, Halt)>,
) -> Result<(), (usize, Halt)> {
    if let (Some(step), Some(value)) = (epoch.serial, value) {
        let mark = PanicMark(step.position);
        let applied = chain.apply_serial(step, value, state, walk);
        std::mem::forget(mark);
        applied.map_err(|halt| (step.position, halt))?;
    }
    plain(state)
}

/// Mutable progress of a batch, kept outside the `catch_unwind` closure so a
/// panic loses only the walk in progress.
struct Progress<S> {
    out: BatchOutput<S>,
    /// Index (into the batch's units) and offset of the walk to run next.
    unit: usize,
    offset: u64,
    /// The traced loop's clock.
    clock: WalkClock,
}

/// How often, at most, a traced batch reads the clock: about once per
/// this many nanoseconds of walks, and at the start of every walk slower
/// than that. A failed or cancelled walk's duration is the time since the
/// last reading: its own time, plus about this much of the passing walks
/// before it at most (more when walks' durations vary widely).
pub(crate) const TIMED_STRIDE_NS: u64 = 1_000;

/// Units made at a time for a batch of many ranges whose walks end in it
/// (see [`Runnable::execute_chunked`]): enough that the per-chunk cost is
/// noise, few enough that the buffer stays in the cache.
const UNIT_CHUNK: usize = 256;

/// Walks between two readings of the clock, at most.
const MAX_STRIDE: u32 = 1 << 12;

/// The traced loop's clock: it reads the time at a walk's start only every
/// `stride` walks, the stride set from the walks' measured cost so that
/// readings come about every [`TIMED_STRIDE_NS`] (every walk, for walks
/// slower than that), and at the end of a walk that failed or was
/// cancelled. Passing walks are never timed one by one: their durations
/// are their batch's.
struct WalkClock {
    /// The last reading.
    mark: Instant,
    /// Walks to start before the next reading.
    left: u32,
    /// Walks between readings.
    stride: u32,
    /// No walk lies between the last reading and the next (the clock was
    /// just made, or a walk halted): the next reading only starts the
    /// stride again, measuring nothing.
    restart: bool,
}

impl WalkClock {
    fn new() -> Self {
        WalkClock { mark: Instant::now(), left: 0, stride: 1, restart: true }
    }

    /// A walk starts.
    #[inline(always)]
    fn tick(&mut self) {
        if self.left == 0 {
            self.read();
        }
        self.left -= 1;
    }

    /// Reads the clock and sets the stride from the walks since the last
    /// reading (it at most doubles, so a first slow walk is soon timed
    /// alone).
    #[cold]
    #[inline(never)]
    fn read(&mut self) {
        let now = Instant::now();
        if !std::mem::take(&mut self.restart) {
            let mean = (now - self.mark).as_nanos() as u64 / u64::from(self.stride);
            let fits = TIMED_STRIDE_NS / mean.max(1);
            self.stride = (fits.min(u64::from(MAX_STRIDE)) as u32).clamp(1, self.stride * 2);
        }
        self.left = self.stride;
        self.mark = now;
    }

    /// A walk halted: the time since the last reading. The next walk to
    /// start reads the clock again, without taking the time between as a
    /// walk's (it would make the stride grow, and charge a later walk that
    /// halts with the time of the slow walks before it).
    fn spent(&mut self) -> u64 {
        let now = Instant::now();
        let spent = (now - self.mark).as_nanos() as u64;
        self.mark = now;
        self.left = 0;
        self.restart = true;
        spent
    }

    /// A walk goes on to a later segment: its time so far, when walks are
    /// timed one by one (else 0: its segments are timed only if it halts).
    #[inline(always)]
    fn so_far(&self) -> u64 {
        if self.stride == 1 { self.mark.elapsed().as_nanos() as u64 } else { 0 }
    }
}

/// A run of consecutive walk ids: the states it takes in (a held unit) and
/// the states of the walks that go on (when the epoch is not the last).
struct Unit<S> {
    range: Range<u64>,
    fresh: bool,
    /// Held unit: which walks have a state, and those states in id order,
    /// taken one by one as the walks run.
    live_in: LiveSet,
    /// Every walk of the held unit has a state (the usual case): no bit to
    /// test per walk.
    all_live: bool,
    states_in: std::vec::IntoIter<S>,
    /// Walks that go on to a later segment, and their states in id order.
    live_out: LiveSet,
    states_out: Vec<S>,
    /// Time each walk has run so far, when tracing and walks go on.
    nanos: Vec<u64>,
}

impl<S> Unit<S> {
    /// A unit of walks that start here. `keep`: walks go on, so their
    /// states are kept (room for all of them is made up front, so that no
    /// push reallocates). Inlined: built in place in its batch's vector
    /// (a sampled batch has a unit per walk).
    #[inline]
    fn fresh(range: Range<u64>, keep: bool, trace: bool) -> Self {
        let len = range.end - range.start;
        let (live_out, states_out, nanos) = if keep {
            let nanos = if trace { vec![0; len as usize] } else { Vec::new() };
            (LiveSet::none(len), Vec::with_capacity(len as usize), nanos)
        } else {
            (LiveSet::default(), Vec::new(), Vec::new())
        };
        Unit {
            range,
            fresh: true,
            live_in: LiveSet::default(),
            all_live: false,
            states_in: Vec::new().into_iter(),
            live_out,
            states_out,
            nanos,
        }
    }

    /// A unit of held walks.
    fn held(block: Block<S>, keep: bool, trace: bool) -> Self {
        debug_assert_eq!(block.live.count(), block.states.len() as u64, "one state per live walk");
        let range = block.range();
        let len = range.end - range.start;
        let mut nanos = block.nanos;
        if trace && nanos.len() as u64 != len {
            nanos = vec![0; len as usize];
        }
        let (live_out, states_out) = if keep {
            (LiveSet::none(len), Vec::with_capacity(block.states.len()))
        } else {
            (LiveSet::default(), Vec::new())
        };
        Unit {
            range,
            fresh: false,
            all_live: block.states.len() as u64 == len,
            live_in: block.live,
            states_in: block.states.into_iter(),
            live_out,
            states_out,
            nanos,
        }
    }

    /// The states that go on, as a block.
    fn into_block(self) -> Block<S> {
        let mut states = self.states_out;
        // Fresh units made room for every walk; give back most of it when
        // most walks ended.
        if states.capacity() > 2 * states.len() {
            states.shrink_to_fit();
        }
        Block { start: self.range.start, live: self.live_out, states, nanos: self.nanos }
    }
}

/// Counts kept in locals (registers) while a unit runs, added to the batch's
/// counts when dropped: at the end of the unit, or while a panic unwinds.
struct Tally<'a> {
    local: Counts,
    sink: &'a mut Counts,
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.sink.merge(&self.local);
    }
}

impl<S: Send + 'static, C: Chain<S>, K: StartKind<S>> Runnable<S, C, K> {
    /// Runs `units` (fresh ones, or held ones) with the loop for the
    /// epoch's level.
    fn drive_units(
        &self,
        epoch: &Epoch,
        instruction: &Instruction,
        units: &mut [Unit<S>],
        fresh: bool,
        origin: &Begin<'_, S, K>,
        settings: BatchSettings,
    ) -> Progress<S> {
        // One loop per segment level (so only that segment's entries are
        // compiled into it) and per tracing (so tracing off costs nothing).
        // Each is its own function: one loop per `catch_unwind` closure
        // keeps the closure small enough to inline and keep in registers.
        // The walks' first level takes fresh walks and later levels held
        // ones. Any other pairing (only a malformed request could make one),
        // deeper levels, and a failed branch's batches (no action runs) take
        // the loop that tests each unit and walk.
        let expected = fresh == (epoch.level == C::FIRST_LEVEL);
        let run = matches!(instruction, Instruction::Run(..)) && expected;
        match (epoch.level, run) {
            (0, true) => self.drive_level::<0>(epoch, instruction, units, origin, settings),
            (1, true) => self.drive_level::<1>(epoch, instruction, units, origin, settings),
            (2, true) => self.drive_level::<2>(epoch, instruction, units, origin, settings),
            _ => self.drive_level::<ANY_LEVEL>(epoch, instruction, units, origin, settings),
        }
    }

    /// Runs fresh walks that end in this epoch, given as many ranges (a
    /// sampled batch has one per walk): [`UNIT_CHUNK`] at a time, in one
    /// buffer of units made once, of which only the ranges change (a fresh
    /// unit whose walks end keeps nothing: the loop does not write to it).
    /// A unit per range (176 bytes each, a new allocation per batch and its
    /// page faults) would cost more than the walks themselves.
    fn execute_chunked(
        &self,
        epoch: &Epoch,
        instruction: &Instruction,
        pieces: &Pieces,
        origin: &Begin<'_, S, K>,
        settings: BatchSettings,
    ) -> BatchOutput<S> {
        debug_assert!(epoch.last, "chunks keep no state");
        let mut out = BatchOutput::new();
        let mut units: Vec<Unit<S>> =
            (0..UNIT_CHUNK).map(|_| Unit::fresh(0..0, false, settings.trace)).collect();
        let mut run_chunk = |units: &mut [Unit<S>]| {
            let mut part = self.drive_units(epoch, instruction, units, true, origin, settings).out;
            if settings.trace {
                part.records.add_passing(units);
            }
            out.absorb(part);
        };
        match pieces {
            Pieces::Ranges(ranges) => {
                for chunk in ranges.chunks(UNIT_CHUNK) {
                    for (unit, range) in units.iter_mut().zip(chunk) {
                        unit.range = range.clone();
                    }
                    run_chunk(&mut units[..chunk.len()]);
                }
            }
            Pieces::Sampled { ids, window } => {
                for chunk in ids[window.clone()].chunks(UNIT_CHUNK) {
                    for (unit, &id) in units.iter_mut().zip(chunk) {
                        unit.range = id..id + 1;
                    }
                    run_chunk(&mut units[..chunk.len()]);
                }
            }
        }
        out.walks = pieces.walks();
        out
    }

    /// [`drive`](Self::drive) with the loop for this batch's tracing and
    /// for where its walks' states go.
    fn drive_level<const LEVEL: usize>(
        &self,
        epoch: &Epoch,
        instruction: &Instruction,
        units: &mut [Unit<S>],
        origin: &Begin<'_, S, K>,
        settings: BatchSettings,
    ) -> Progress<S> {
        // Pruning only for a walk order with a rule. Traced loops test
        // where a passing walk goes at run time (trace format 2 made them
        // cheap enough per walk that this matters less than their number).
        let (a, b, c, d, e) = (epoch, instruction, units, origin, settings);
        match (settings.trace, epoch.last, self.rules) {
            (false, false, false) => self.drive::<LEVEL, false, KEEP, false>(a, b, c, d, e),
            (false, false, true) => self.drive::<LEVEL, false, KEEP, true>(a, b, c, d, e),
            (false, true, false) => self.drive::<LEVEL, false, END, false>(a, b, c, d, e),
            (false, true, true) => self.drive::<LEVEL, false, END, true>(a, b, c, d, e),
            (true, _, false) => self.drive::<LEVEL, true, EITHER, false>(a, b, c, d, e),
            (true, _, true) => self.drive::<LEVEL, true, EITHER, true>(a, b, c, d, e),
        }
    }

    /// Runs every walk of `units`, resuming after any walk that panics
    /// (recorded as failed).
    #[inline(never)]
    fn drive<const LEVEL: usize, const TRACE: bool, const OUT: u8, const PRUNE: bool>(
        &self,
        epoch: &Epoch,
        instruction: &Instruction,
        units: &mut [Unit<S>],
        origin: &Begin<'_, S, K>,
        settings: BatchSettings,
    ) -> Progress<S> {
        let mut progress =
            Progress { out: BatchOutput::new(), unit: 0, offset: 0, clock: WalkClock::new() };
        // The walk's digits, then those `run_units` decodes each unit's
        // first walk into.
        let mut digits = vec![0u32; 2 * self.space.len()];
        loop {
            let attempt = catch_unwind(AssertUnwindSafe(|| {
                self.run_units::<LEVEL, TRACE, OUT, PRUNE>(
                    epoch,
                    instruction,
                    units,
                    origin,
                    settings,
                    &mut progress,
                    &mut digits,
                )
            }));
            let Err(payload) = attempt else { return progress };
            // `digits` hold the walk that panicked; resume after it.
            let id =
                self.space.id_of(&digits[..self.space.len()]).expect("digits stay in the space");
            let unit = &units[progress.unit];
            let offset = id - unit.range.start;
            progress.offset = offset + 1;
            let text = panic_message(payload);
            let (position, action, error) = match take_panic_position() {
                Some(position) => {
                    (position, self.space.entries()[position].name, format!("panicked: {text}"))
                }
                // No action was running: the walk state's `clone` or `drop`
                // panicked.
                None => (
                    epoch.serial.map_or(epoch.plain.start, |s| s.position),
                    WALK_STATE_ACTION,
                    format!(
                        "panicked outside any action (making or dropping the walk state): {text}"
                    ),
                ),
            };
            if TRACE {
                let prior = unit.nanos.get(offset as usize).copied().unwrap_or(0);
                let spent = progress.clock.spent();
                progress.out.records.push(WalkRecord {
                    id: WalkId(id),
                    outcome: WalkOutcome::Failed {
                        action_index: position,
                        action,
                        error: error.clone(),
                    },
                    nanos: prior + spent,
                });
            }
            progress.out.counts.failed += 1;
            progress.out.failed.push(FailedWalk {
                walk_id: WalkId(id),
                action_index: position,
                action: action.into(),
                error,
            });
            progress.out.panic.get_or_insert(text);
        }
    }

    /// Runs walks from `progress`'s position to the end of the batch.
    /// Returns normally unless something panics (an action, or the walk
    /// state's `clone` or `drop`); then `digits` still hold the options of
    /// the walk that panicked.
    ///
    /// This is the per-walk hot loop: no id decoding (an odometer steps the
    /// digits), no option lookup but the fast entry's (a [`Chain::Cursor`]
    /// holds the others; the second entry's moves when the fast digit
    /// wraps), no shared memory, counts in registers. With
    /// `LEVEL` the epoch's level as a constant, no per-entry segment test;
    /// [`ANY_LEVEL`] tests at run time (deep levels, failed branches). With `OUT` a constant, no per-walk test of
    /// where a passing walk's state goes. Without `PRUNE` (no entry of the
    /// walk order overrides `prune`), no pruning code at all.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn run_units<const LEVEL: usize, const TRACE: bool, const OUT: u8, const PRUNE: bool>(
        &self,
        epoch: &Epoch,
        instruction: &Instruction,
        units: &mut [Unit<S>],
        origin: &Begin<'_, S, K>,
        settings: BatchSettings,
        progress: &mut Progress<S>,
        digits: &mut [u32],
    ) {
        let gather = settings.gather;
        let trace = TRACE;
        // The loops of fixed levels run only `Run` batches (`execute` sends
        // the rest to the `ANY_LEVEL` loop), so they match it once here.
        let value = match instruction {
            Instruction::Run(value, _) => value.as_ref(),
            Instruction::FailBranch(_) => None,
        };
        debug_assert!(LEVEL == ANY_LEVEL || matches!(instruction, Instruction::Run(..)));
        let chain = self.order.chain();
        let lookup = Pinned::new(chain);
        let (start, fixtures) = (origin.start, origin.fixtures);
        let keep = match OUT {
            KEEP => true,
            END => false,
            _ => !epoch.last,
        };
        debug_assert_eq!(keep, !epoch.last, "the loop's OUT matches the epoch");
        // A slice of the chain's constant length: the entries index it at
        // constant positions, so their bounds checks fold away.
        let (digits, decoded_digits) = digits.split_at_mut(C::LEN);
        let (digits, decoded_digits) = (&mut digits[..C::LEN], &mut decoded_digits[..C::LEN]);
        // Each unit's first walk, decoded from the previous unit's first
        // walk (`Space::seek`): a sample's units are single walks, close
        // together in id order.
        let mut decoded = 0;
        decoded_digits.fill(0);
        // The least significant digit, as a constant: a store to it is then
        // known to leave the other digits alone.
        let fast = C::FAST;
        assert_eq!(fast, self.space.least_significant(), "the chain's fast digit is the space's");
        let fast_radix = self.space.option_counts()[fast];
        // The second least significant digit, when it is a plain entry's
        // too (a constant): when the fast digit wraps, it steps in place and
        // the cursor moves that one entry, instead of the odometer carrying
        // and the cursor being made again.
        let second = C::SECOND_PLAIN;
        let second_radix = match second {
            usize::MAX => 0,
            _ => self.space.option_counts()[second],
        };
        while progress.unit < units.len() {
            let unit = &mut units[progress.unit];
            let len = unit.range.end - unit.range.start;
            let first = progress.offset;
            if first < len {
                let id = unit.range.start + first;
                let space = &self.space;
                space
                    .seek(decoded, id, decoded_digits, digits)
                    .expect("batches lie inside the space");
                decoded = id;
            }
            let out = &mut progress.out;
            let clock = &mut progress.clock;
            let mut tally = Tally { local: Counts::default(), sink: &mut out.counts };
            let mut next = first;
            let mut pruning = Pruning::new(&self.space);
            'walks: while next < len {
                let mut cursor = chain.cursor(digits);
                // Runs of the fast digit, until the digits above the second
                // one carry or the unit ends.
                loop {
                    // The walks from `next` on that differ only in the fast digit.
                    // Nothing in this inner loop changes another digit, so the
                    // other entries' options stay in the cursor, in registers.
                    let mut first_fast = digits[fast];
                    let run_end = len.min(next + u64::from(fast_radix - first_fast));
                    // A fixed level runs only fresh walks if it is the walks'
                    // first level and only held ones otherwise (`execute` picks
                    // the loop so), which folds this test.
                    let fresh_run = match LEVEL {
                        ANY_LEVEL => unit.fresh,
                        _ => LEVEL == C::FIRST_LEVEL,
                    };
                    // Pruning (only in the loops of a walk order with a rule)
                    // is asked for the run's first walk if no earlier decision
                    // covers it, out of the walks' loop. An acceptance covers
                    // the rest of the run unless the rule read the fast digit;
                    // then it is asked walk by walk from the walk after it
                    // (`ask_from`; `u64::MAX`: not asked), unnoted. A
                    // rejection of more than one walk is a subtree, which
                    // covers the rest of the run and is skipped whole.
                    let mut ask_from = u64::MAX;
                    let first_id = unit.range.start + next;
                    if PRUNE && fresh_run && first_id >= pruning.accepted {
                        // Pruning reads the walk's options, and after a panic
                        // they name the walk.
                        digits[fast] = first_fast;
                        let end = unit.range.end;
                        if let Some(end) = pruning.decide(chain, &lookup, first_id, digits, end) {
                            let records = trace.then_some(&mut out.records);
                            end_pruned(first_id..end, &mut tally.local, &mut out.neither, records);
                            if end > first_id + 1 {
                                // Go on from the subtree's end, with the
                                // odometer set there.
                                next = end - unit.range.start;
                                if next < len {
                                    self.space
                                        .decode_into(end, digits)
                                        .expect("batches lie inside the space");
                                }
                                continue 'walks;
                            }
                            // The rule read the fast digit: it is asked
                            // walk by walk for the rest of the run.
                            next += 1;
                            first_fast += 1;
                            ask_from = first_id + 1;
                        } else if pruning.accepted - unit.range.start < run_end {
                            // The same: an acceptance of this walk alone.
                            ask_from = pruning.accepted;
                        }
                    }
                    for offset in next..run_end {
                        let id = unit.range.start + offset;
                        let option = first_fast + (offset - next) as u32;
                        // The walk's options stay in `digits` too: pruning reads
                        // them, and after a panic they name the walk.
                        digits[fast] = option;
                        chain.seek(&mut cursor, fast, option);
                        // From here on the walk is charged: pruning and the
                        // state's clone may panic before its actions run.
                        if trace {
                            clock.tick();
                        }
                        let walk = WalkContext::new(id, 0, fixtures);
                        let state = if fresh_run {
                            // One compare with a register per walk: no
                            // earlier decision covers the walks from
                            // `ask_from` on (they are past `accepted`).
                            if PRUNE && id >= ask_from && pruning.ask(chain, &lookup, id, digits) {
                                let records = trace.then_some(&mut out.records);
                                end_pruned(id..id + 1, &mut tally.local, &mut out.neither, records);
                                None
                            } else {
                                match K::make(start, fixtures, id) {
                                    Ok(state) => Some(state),
                                    Err(halt) => {
                                        let spent = if trace { clock.spent() } else { 0 };
                                        let ends = Ends {
                                            failed: &mut out.failed,
                                            neither: &mut out.neither,
                                            records: trace.then_some(&mut out.records),
                                        };
                                        unstarted(epoch, id, halt, ends, &mut tally.local, spent);
                                        None
                                    }
                                }
                            }
                        } else if unit.all_live || unit.live_in.get(offset) {
                            // One state per live walk, in order: a missing one
                            // is a combtest bug, reported as this walk's
                            // failure rather than a walk silently skipped.
                            Some(unit.states_in.next().expect("a held state for every live walk"))
                        } else {
                            None
                        };
                        if let Some(mut state) = state {
                            let result = if LEVEL != ANY_LEVEL {
                                tally.local.segments += 1;
                                C::run_level::<LEVEL>(&cursor, value, &mut state, walk)
                            } else {
                                match instruction {
                                    Instruction::Run(..) => {
                                        tally.local.segments += 1;
                                        run_segment(chain, epoch, value, digits, &mut state, walk)
                                    }
                                    Instruction::FailBranch(error) => {
                                        let position = epoch.serial.map_or(0, |s| s.position);
                                        Err((position, Halt::Fail(error.clone())))
                                    }
                                }
                            };
                            // The state leaves first (kept, gathered or dropped),
                            // then the outcome is counted: a panic while dropping it
                            // must find the walk not yet counted.
                            let outcome = match result {
                                Ok(()) if keep => {
                                    unit.states_out.push(state);
                                    unit.live_out.set(offset);
                                    if trace {
                                        unit.nanos[offset as usize] += clock.so_far();
                                    }
                                    None
                                }
                                Ok(()) => {
                                    if gather {
                                        out.finals.push((WalkId(id), state));
                                    } else {
                                        drop(state);
                                    }
                                    tally.local.passed += 1;
                                    // Traced: recorded after the loop, as
                                    // ranges (`BatchRecords::add_passing`).
                                    None
                                }
                                Err((position, halt)) => {
                                    if gather {
                                        out.finals.push((WalkId(id), state));
                                    } else {
                                        drop(state);
                                    }
                                    match halt {
                                        Halt::Cancel => {
                                            tally.local.cancelled += 1;
                                            Neither::push_id(&mut out.neither, id);
                                            trace.then_some(WalkOutcome::Cancelled {
                                                action_index: position,
                                            })
                                        }
                                        Halt::Fail(error) => {
                                            tally.local.failed += 1;
                                            let action = self.space.entries()[position].name;
                                            let outcome = trace.then(|| WalkOutcome::Failed {
                                                action_index: position,
                                                action,
                                                error: error.clone(),
                                            });
                                            out.failed.push(FailedWalk {
                                                walk_id: WalkId(id),
                                                action_index: position,
                                                action: action.into(),
                                                error,
                                            });
                                            outcome
                                        }
                                    }
                                }
                            };
                            if let Some(outcome) = outcome {
                                // A halt: the time since the clock's last
                                // reading, and the segments before.
                                let prior = unit.nanos.get(offset as usize).copied().unwrap_or(0);
                                let nanos = prior + clock.spent();
                                out.records.push(WalkRecord { id: WalkId(id), outcome, nanos });
                            }
                        }
                    }
                    digits[fast] = first_fast + (run_end - next) as u32;
                    next = run_end;
                    if digits[fast] < fast_radix {
                        break; // The unit ended inside the run.
                    }
                    if second != usize::MAX && digits[second] + 1 < second_radix {
                        digits[fast] = 0;
                        digits[second] += 1;
                        chain.seek(&mut cursor, second, digits[second]);
                        if next < len {
                            continue;
                        }
                        break;
                    }
                    // Carry into the more significant digits.
                    digits[fast] = fast_radix - 1;
                    self.space.step(digits);
                    break;
                }
            }
            drop(tally);
            progress.unit += 1;
            progress.offset = 0;
        }
    }
}

/// A batch loop's pruning decisions, asked once per subtree: a decision
/// holds for every walk that agrees with the asked one on the options the
/// rules read ([`Reads`], [`Space::same_until`]), so a rejected subtree is
/// skipped whole and an accepted one is not asked about again.
///
/// One `Pruning` is asked about walks in increasing id order (one unit's,
/// or one range's).
struct Pruning<'a> {
    space: &'a Space,
    reads: Reads,
    /// The end of the walks the last accepting decision covers (they start
    /// at or before the walk asked next).
    accepted: u64,
}

impl<'a> Pruning<'a> {
    fn new(space: &'a Space) -> Self {
        Pruning { space, reads: Reads::default(), accepted: 0 }
    }

    /// Whether walk `id` (options `digits`) is pruned: `Some(end)` if it
    /// is, with the walks `id..end` (`end` at most `limit`) pruned with it;
    /// `None` if it runs. `id` is above every walk asked before.
    #[inline(always)]
    fn decide<S, C: Chain<S>>(
        &mut self,
        chain: &C,
        lookup: &dyn OptionLookup,
        id: u64,
        digits: &[u32],
        limit: u64,
    ) -> Option<u64> {
        if id < self.accepted {
            return None;
        }
        self.reads.clear();
        let pruned = chain.prune(&WalkView::new(id, digits, lookup, &self.reads));
        let end = self.space.same_until(id, self.reads.mask());
        if pruned {
            return Some(end.min(limit));
        }
        self.accepted = end;
        None
    }

    /// Whether walk `id` is pruned, asked alone (a rule that read the fast
    /// digit, for the rest of a run): nothing is noted for later walks.
    #[inline(always)]
    fn ask<S, C: Chain<S>>(
        &self,
        chain: &C,
        lookup: &dyn OptionLookup,
        id: u64,
        digits: &[u32],
    ) -> bool {
        chain.prune(&WalkView::new(id, digits, lookup, &self.reads))
    }
}

/// Counts and records the walks `walks`, pruned by one decision.
#[cold]
fn end_pruned(
    walks: Range<u64>,
    counts: &mut Counts,
    neither: &mut Vec<Range<u64>>,
    records: Option<&mut BatchRecords>,
) {
    counts.pruned += walks.end - walks.start;
    Neither::push_range(neither, walks.clone());
    if let Some(records) = records {
        records.prune(walks);
    }
}

/// Where a batch records walks that end: failed walks, cancelled and
/// pruned ids, and trace records (when tracing).
struct Ends<'a> {
    failed: &'a mut Vec<FailedWalk>,
    neither: &'a mut Vec<Range<u64>>,
    records: Option<&'a mut BatchRecords>,
}

/// Ends a walk whose starting state could not be made (its factory
/// halted): counted as failed, at the first entry of its first segment and
/// named `(walk state)`, or as cancelled; traced with `nanos`.
#[cold]
fn unstarted(epoch: &Epoch, id: u64, halt: Halt, ends: Ends<'_>, counts: &mut Counts, nanos: u64) {
    let Ends { failed, neither, records } = ends;
    let position = epoch.serial.map_or(epoch.plain.start, |s| s.position);
    let outcome = match halt {
        Halt::Cancel => {
            counts.cancelled += 1;
            Neither::push_id(neither, id);
            WalkOutcome::Cancelled { action_index: position }
        }
        Halt::Fail(error) => {
            counts.failed += 1;
            let error = format!("its starting state failed: {error}");
            failed.push(FailedWalk {
                walk_id: WalkId(id),
                action_index: position,
                action: WALK_STATE_ACTION.into(),
                error: error.clone(),
            });
            WalkOutcome::Failed { action_index: position, action: WALK_STATE_ACTION, error }
        }
    };
    if let Some(records) = records {
        records.push(WalkRecord { id: WalkId(id), outcome, nanos });
    }
}

/// A serial step's outcome as its error text: a serial step passes or
/// fails (a cancel fails it), and a panic is a failure.
fn serial_outcome<T>(step: impl FnOnce() -> Result<T, Halt>) -> Result<T, String> {
    let _quiet = QuietPanics::on_this_thread();
    match catch_unwind(AssertUnwindSafe(step)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(Halt::Fail(error))) => Err(error),
        Ok(Err(Halt::Cancel)) => Err(crate::order::SERIAL_CANCELLED.to_string()),
        Err(payload) => Err(format!("panicked: {}", panic_message(payload))),
    }
}

impl<S> BatchOutput<S> {
    /// Adds the output of a later part of the same batch
    /// ([`Runnable::execute_chunked`]'s chunks).
    fn absorb(&mut self, later: BatchOutput<S>) {
        self.counts.merge(&later.counts);
        self.failed.extend(later.failed);
        for range in later.neither {
            Neither::push_range(&mut self.neither, range);
        }
        self.finals.extend(later.finals);
        self.held.extend(later.held);
        self.panic = self.panic.take().or(later.panic);
        self.records.absorb(later.records);
        self.walks += later.walks;
    }

    fn new() -> Self {
        BatchOutput {
            counts: Counts::default(),
            failed: Vec::new(),
            neither: Vec::new(),
            finals: Vec::new(),
            held: Vec::new(),
            panic: None,
            records: BatchRecords::default(),
            walks: 0,
            nanos: 0,
        }
    }
}

impl<S: Send + 'static, C: Chain<S>, K: StartKind<S>> ErasedOrder<S> for Runnable<S, C, K> {
    fn space(&self) -> &Space {
        &self.space
    }

    fn is_async(&self) -> bool {
        C::ASYNC
    }

    fn execute(
        &self,
        epoch: &Epoch,
        instruction: &Instruction,
        input: BatchInput<S>,
        origin: &Origin<S>,
        settings: BatchSettings,
    ) -> BatchOutput<S> {
        let started = Instant::now();
        let start = origin.start.as_any().downcast_ref::<K::Start>();
        let start = start.expect("a runnable is given the origin of its own kind");
        let origin = &Begin::<S, K> { start, fixtures: &origin.fixtures };
        if C::ASYNC {
            return self.execute_async(epoch, instruction, input, origin, settings);
        }
        let (keep, trace) = (!epoch.last, settings.trace);
        let fresh = matches!(input, BatchInput::Fresh(_));
        let mut units: Vec<Unit<S>> = match input {
            // Many ranges (a sample's walks) whose walks end here: their
            // units are made a chunk at a time in one buffer.
            BatchInput::Fresh(pieces) if epoch.last && pieces.len() > UNIT_CHUNK => {
                let mut out = self.execute_chunked(epoch, instruction, &pieces, origin, settings);
                out.nanos = started.elapsed().as_nanos() as u64;
                out.records.nanos = out.nanos;
                return out;
            }
            // Nothing goes on: one unit per range, nothing kept.
            BatchInput::Fresh(pieces) if epoch.last => {
                pieces.iter().map(|range| Unit::fresh(range, false, trace)).collect()
            }
            // Walks go on: one unit per block, so the held states are
            // allocated at their final size and stored without a copy.
            BatchInput::Fresh(pieces) => pieces
                .iter()
                .flat_map(|range| settings.blocks.split(range))
                .map(|part| Unit::fresh(part, true, trace))
                .collect(),
            BatchInput::Held(held) => {
                held.into_iter().map(|block| Unit::held(block, keep, trace)).collect()
            }
        };
        let progress = self.drive_units(epoch, instruction, &mut units, fresh, origin, settings);
        let mut out = progress.out;
        out.walks = units.iter().map(|u| u.range.end - u.range.start).sum();
        if trace && !keep {
            out.records.add_passing(&units);
        }
        if keep {
            // Every unit is one block.
            out.held = units.into_iter().map(Unit::into_block).collect();
        }
        out.nanos = started.elapsed().as_nanos() as u64;
        out.records.nanos = out.nanos;
        out
    }

    fn run_serial(
        &self,
        step: SerialStep,
        branch: &[u32],
        fixtures: &Fixtures,
    ) -> Result<SerialValue, String> {
        let cx = SerialContext::new(step.position, branch, fixtures, None);
        serial_outcome(|| self.order.chain().run_serial(step, &cx))
    }

    fn node_step(
        &self,
        step: SerialStep,
        branch: &[u32],
        value: &SerialValue,
        fixtures: &Fixtures,
        node: Option<&str>,
    ) -> Result<(), String> {
        let cx = SerialContext::new(step.position, branch, fixtures, node);
        serial_outcome(|| self.order.chain().node_step(step, value, &cx))
    }

    fn encode_value(&self, step: SerialStep, value: &SerialValue) -> Result<Vec<u8>, String> {
        let name = self.space.entries().get(step.position).map_or("?", |e| e.name);
        self.order
            .chain()
            .encode_value(step.position, value)
            .map_err(|e| format!("cannot encode the value of serial action {name}: {e}"))
    }

    fn decode_value(&self, step: SerialStep, bytes: &[u8]) -> Result<SerialValue, String> {
        let entry = self.space.entries().get(step.position);
        match entry {
            Some(e) if e.kind == crate::model::space::EntryKind::Serial => {
                self.order.chain().decode_value(step.position, bytes).map_err(|err| {
                    format!("cannot decode the value of serial action {}: {err}", e.name)
                })
            }
            _ => Err(format!("no serial action at position {}", step.position)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::action::{Action, ActionResult, SerialAction};
    use crate::model::epoch::EpochCursor;
    use crate::model::fixtures::Cloned;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Step(u32);
    impl Action<Vec<u32>> for Step {
        fn options() -> Vec<Self> {
            vec![Step(0), Step(1)]
        }
        fn run(&self, trail: &mut Vec<u32>) -> ActionResult {
            trail.push(self.0);
            Ok(())
        }
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Last(u32);
    impl Action<Vec<u32>> for Last {
        fn options() -> Vec<Self> {
            vec![Last(0), Last(1), Last(2)]
        }
        fn run(&self, trail: &mut Vec<u32>) -> ActionResult {
            match self.0 {
                1 => Err(Halt::Cancel),
                2 => Err(Halt::fail("two")),
                _ => {
                    trail.push(self.0);
                    Ok(())
                }
            }
        }
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Flip(u32);
    impl SerialAction<Vec<u32>> for Flip {
        type Value = u32;
        fn options() -> Vec<Self> {
            vec![Flip(7), Flip(8)]
        }
        fn run(&self) -> Result<u32, Halt> {
            Ok(self.0)
        }
        fn apply(&self, value: &u32, trail: &mut Vec<u32>) -> ActionResult {
            trail.push(*value);
            Ok(())
        }
    }

    /// Runs every epoch of `[Step, *Flip, Last]` by hand, one batch each,
    /// carrying held blocks between epochs as the store would.
    fn run_all(trace: bool) -> Vec<BatchOutput<Vec<u32>>> {
        let order = WalkOrder::new().then::<Step>().serial::<Flip>().then::<Last>();
        let runnable = Runnable::<_, _, Cloned>::new(order).unwrap();
        let settings = BatchSettings {
            blocks: Blocks::for_space(runnable.space(), 1),
            gather: true,
            trace,
            in_flight: 1,
        };
        let mut held: Vec<Block<Vec<u32>>> = Vec::new();
        let mut outputs = Vec::new();
        for epoch in EpochCursor::new(runnable.space().clone()) {
            let fixtures = Fixtures::new();
            let value = epoch.serial.map(|step| runnable.run_serial(step, &[], &fixtures).unwrap());
            let instruction = Instruction::Run(value, History::default());
            let input = if epoch.first {
                BatchInput::Fresh(epoch.walks.clone().into())
            } else {
                let (mine, rest): (Vec<_>, Vec<_>) =
                    held.into_iter().partition(|b| epoch.walks.contains(&b.start));
                held = rest;
                BatchInput::Held(mine)
            };
            let origin = Origin::new::<Cloned>(Vec::new(), Arc::default());
            let mut out = runnable.execute(&epoch, &instruction, input, &origin, settings);
            held.append(&mut out.held);
            outputs.push(out);
        }
        outputs
    }

    #[test]
    fn traced_batches_record_every_walk_once() {
        let outputs = run_all(true);
        let mut records: Vec<WalkRecord> =
            outputs.iter().flat_map(|o| o.records.expand()).collect();
        records.sort_by_key(|r| r.id);
        // 12 walks: Last decides; the first segment ends no walk.
        assert_eq!(records.len(), 12);
        assert!(outputs[0].records.is_empty());
        for record in &records {
            let expected = match record.id.0 % 3 {
                0 => WalkOutcome::Passed,
                1 => WalkOutcome::Cancelled { action_index: 2 },
                _ => WalkOutcome::Failed { action_index: 2, action: "Last", error: "two".into() },
            };
            assert_eq!(record.outcome, expected, "walk {}", record.id);
        }
        let finals: Vec<(WalkId, Vec<u32>)> = outputs.into_iter().flat_map(|o| o.finals).collect();
        assert!(finals.contains(&(WalkId(6), vec![0, 8, 0])));
    }

    /// Ten options: 1 cancels, 2 fails, 3 panics, 4 is pruned (the rule
    /// reads only its own option), the rest pass.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Mixed(u32);
    impl Action<u32> for Mixed {
        fn options() -> Vec<Self> {
            (0..10).map(Mixed).collect()
        }
        fn run(&self, sum: &mut u32) -> ActionResult {
            *sum += self.0;
            match self.0 {
                1 => Err(Halt::Cancel),
                2 => Err(Halt::fail("two")),
                3 => panic!("three"),
                _ => Ok(()),
            }
        }
        fn prune(&self, _: &WalkView<'_>) -> bool {
            self.0 == 4
        }
    }

    /// A batch of more ranges than a chunk of units (a sample's walks,
    /// some runs of several) gives what its ranges give run one by one:
    /// the same counts, failures, records, finals and neither ranges.
    #[test]
    fn a_batch_run_in_chunks_gives_what_its_ranges_give_one_by_one() {
        // Every other walk, and runs of 2 to 4 every 50 walks.
        let mut ranges: Vec<Range<u64>> = Vec::new();
        let mut id = 0;
        while id < 1000 {
            let len = if id % 50 == 0 { 2 + id % 3 } else { 1 };
            ranges.push(id..(id + len).min(1000));
            id += len + 1;
        }
        assert!(ranges.len() > UNIT_CHUNK, "{} ranges", ranges.len());
        chunks_give_what_pieces_give_one_by_one(Pieces::from(ranges));
    }

    /// The same for a window into a sample (its stretch from the 7th id):
    /// each id a walk of its own, in more than one chunk.
    #[test]
    fn a_window_into_a_sample_gives_what_its_walks_give_one_by_one() {
        let ids: Vec<u64> = (0..1000).filter(|id| id % 3 != 0 || id % 7 == 0).collect();
        let window = 7..ids.len() - 5;
        assert!(window.len() > 2 * UNIT_CHUNK, "{} walks", window.len());
        chunks_give_what_pieces_give_one_by_one(Pieces::Sampled { ids: ids.into(), window });
    }

    fn chunks_give_what_pieces_give_one_by_one(pieces: Pieces) {
        let order = WalkOrder::new().then::<Mixed>().then::<Mixed>().then::<Mixed>();
        let runnable = Runnable::<_, _, Cloned>::new(order).unwrap();
        let settings = BatchSettings {
            blocks: Blocks::for_space(runnable.space(), 1),
            gather: true,
            trace: true,
            in_flight: 1,
        };
        let epoch = EpochCursor::new(runnable.space().clone()).next().unwrap();
        assert!(epoch.first && epoch.last);
        let quiet = QuietPanics::on_this_thread();
        let origin = Origin::new::<Cloned>(0, Arc::default());
        let run = Instruction::Run(None, History::default());
        let whole =
            runnable.execute(&epoch, &run, BatchInput::Fresh(pieces.clone()), &origin, settings);
        // The same walks, a batch of one range each, gathered by hand.
        let (mut counts, mut walks, mut failed, mut finals) =
            (Counts::default(), 0, vec![], vec![]);
        let (mut neither, mut records, mut panics) = (vec![], vec![], 0);
        for range in pieces.iter() {
            let input = BatchInput::Fresh(range.into());
            let out = runnable.execute(&epoch, &run, input, &origin, settings);
            counts.merge(&out.counts);
            walks += out.walks;
            failed.extend(out.failed.iter().map(|f| f.walk_id));
            finals.extend(out.finals);
            neither.extend(out.neither.iter().flat_map(|r| r.clone()));
            records.extend(out.records.expand().into_iter().map(|r| (r.id, r.outcome)));
            panics += usize::from(out.panic.is_some());
        }
        drop(quiet);
        assert_eq!(whole.counts, counts);
        assert!(counts.failed > 0 && counts.cancelled > 0 && counts.pruned > 0 && panics > 0);
        assert_eq!(whole.walks, walks);
        assert_eq!(walks, pieces.walks());
        assert_eq!(whole.failed.iter().map(|f| f.walk_id).collect::<Vec<_>>(), failed);
        assert_eq!(whole.finals, finals);
        assert_eq!(whole.neither.iter().flat_map(|r| r.clone()).collect::<Vec<_>>(), neither);
        let whole_records: Vec<_> =
            whole.records.expand().into_iter().map(|r| (r.id, r.outcome)).collect();
        assert_eq!(whole_records, records);
        assert_eq!(records.len() as u64, walks);
        assert!(whole.panic.is_some());
    }

    /// Every walk of the walk order `[A]` run traced as one batch (panics
    /// kept off stderr).
    fn one_traced_batch<A: Action<u32>>() -> BatchOutput<u32> {
        let _quiet = QuietPanics::on_this_thread();
        let runnable = Runnable::<_, _, Cloned>::new(WalkOrder::new().then::<A>()).unwrap();
        let settings = BatchSettings {
            blocks: Blocks::for_space(runnable.space(), 1),
            gather: false,
            trace: true,
            in_flight: 1,
        };
        let epoch = EpochCursor::new(runnable.space().clone()).next().unwrap();
        let input = BatchInput::Fresh(epoch.walks.clone().into());
        let origin = Origin::new::<Cloned>(0, Arc::default());
        let run = Instruction::Run(None, History::default());
        runnable.execute(&epoch, &run, input, &origin, settings)
    }

    /// Walk 0 takes at least 30 ms; walk 1 panics in `prune`, before any
    /// of its actions runs.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct SlowThenPanics(u32);
    impl Action<u32> for SlowThenPanics {
        fn options() -> Vec<Self> {
            vec![SlowThenPanics(0), SlowThenPanics(1)]
        }
        fn run(&self, _: &mut u32) -> ActionResult {
            std::thread::sleep(std::time::Duration::from_millis(30));
            Ok(())
        }
        fn prune(&self, _: &WalkView<'_>) -> bool {
            assert!(self.0 == 0, "prune panics");
            false
        }
    }

    /// A walk that panics before its actions run is charged from its own
    /// start, not from the start of the walk before it in the batch.
    #[test]
    fn a_walk_that_panics_before_running_is_timed_from_its_own_start() {
        let out = one_traced_batch::<SlowThenPanics>();
        // A passing walk has no time of its own: its batch's time covers it.
        assert!(out.records.nanos >= 30_000_000, "walk 0 slept 30 ms: {}", out.records.nanos);
        let records = out.records.expand();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].outcome, WalkOutcome::Passed);
        assert!(matches!(records[1].outcome, WalkOutcome::Failed { .. }), "{:?}", records[1]);
        // The walk ran nothing: far less than the walk before it.
        assert!(records[1].nanos < 30_000_000, "walk 1 charged {} ns", records[1].nanos);
    }

    /// Walk 0 fails at once, walk 1 takes at least 30 ms and passes, walk
    /// 2 panics in `prune`, before any of its actions runs.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct FailSlowPanic(u32);
    impl Action<u32> for FailSlowPanic {
        fn options() -> Vec<Self> {
            (0..3).map(FailSlowPanic).collect()
        }
        fn run(&self, _: &mut u32) -> ActionResult {
            if self.0 == 0 {
                return Err(Halt::fail("fails at once"));
            }
            std::thread::sleep(std::time::Duration::from_millis(30));
            Ok(())
        }
        fn prune(&self, _: &WalkView<'_>) -> bool {
            assert!(self.0 != 2, "prune panics");
            false
        }
    }

    /// After a walk halts, the clock starts again at the next walk: the
    /// short time between is not taken for a walk's (which would lengthen
    /// the stride and charge walk 2 with walk 1's 30 ms).
    #[test]
    fn a_walk_after_a_halt_is_timed_from_its_own_start() {
        let out = one_traced_batch::<FailSlowPanic>();
        let records = out.records.expand();
        let outcomes: Vec<_> = records.iter().map(|r| &r.outcome).collect();
        assert!(
            matches!(
                outcomes[..],
                [WalkOutcome::Failed { .. }, WalkOutcome::Passed, WalkOutcome::Failed { .. }]
            ),
            "{outcomes:?}"
        );
        assert!(records[2].nanos < 30_000_000, "walk 2 charged {} ns", records[2].nanos);
    }

    #[test]
    fn untraced_batches_record_nothing() {
        let outputs = run_all(false);
        assert!(outputs.iter().all(|o| o.records.is_empty()));
        let passed: u64 = outputs.iter().map(|o| o.counts.passed).sum();
        assert_eq!(passed, 4);
    }
}
