//! Synchronous execution of batches, serial steps and replays. No actor
//! runtime here: a `WalkRunner` calls [`ErasedOrder::execute`] on a blocking
//! thread, the `SerialBarrier` calls [`ErasedOrder::run_serial`].
//!
//! The hot loop is generic over the walk order's chain, so each action's
//! `run` is inlined; per walk it decodes nothing (an odometer steps the
//! option indices), touches no shared memory (counts are batch-local) and
//! installs no panic handler (one `catch_unwind` covers the batch and the
//! loop resumes after the walk that panicked).

use std::any::{Any, TypeId};
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crate::model::action::{ActionResult, Halt};
use crate::model::epoch::{Epoch, SerialStep};
use crate::model::outcome::{Counts, FailedWalk};
use crate::model::space::{Blocks, EntryKind, Space, WalkId};
use crate::model::trace::{OptionJson, TraceRecord, fingerprint};
use crate::model::walk::OptionLookup;
use crate::model::walk::WalkView;
use crate::order::{
    Chain, Decoded, PanicMark, Pinned, SerialValue, WalkError, WalkOrder, take_panic_position,
};
use crate::trace::{RunDir, TraceError};

/// What to do with the walks of a batch.
#[derive(Debug, Clone)]
pub(crate) enum Instruction {
    /// Run the epoch's segment, applying the serial value first if the epoch
    /// has a serial action.
    Run(Option<SerialValue>),
    /// The epoch's serial action failed: fail every live walk with this error.
    FailBranch(String),
}

/// Held walk states for consecutive walk ids; `None` for walks that ended.
#[derive(Debug)]
pub(crate) struct Block<S> {
    pub(crate) start: u64,
    pub(crate) slots: Vec<Option<S>>,
    /// Time each walk has run so far, when tracing (else empty).
    pub(crate) nanos: Vec<u64>,
}

impl<S> Block<S> {
    pub(crate) fn range(&self) -> Range<u64> {
        self.start..self.start + self.slots.len() as u64
    }
}

/// The walks of a batch.
#[derive(Debug)]
pub(crate) enum BatchInput<S> {
    /// First segment: every walk starts from a clone of the initial state.
    Fresh(Range<u64>),
    /// A later segment: the states held since the walks' previous segment.
    Held(Vec<Block<S>>),
}

/// What a batch produced.
#[derive(Debug)]
pub(crate) struct BatchOutput<S> {
    pub(crate) counts: Counts,
    pub(crate) failed: Vec<FailedWalk>,
    /// Final states of walks that ended here, when gathering.
    pub(crate) finals: Vec<(WalkId, S)>,
    /// States of walks that go on to a later segment, block by block.
    pub(crate) held: Vec<Block<S>>,
    /// The message of the first panic, if an action panicked.
    pub(crate) panic: Option<String>,
    /// One record per walk that ended here, when tracing.
    pub(crate) records: Vec<WalkRecord>,
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

/// The result of replaying one walk in-process.
#[derive(Debug, Clone)]
pub struct Replay<S> {
    /// How the walk ended.
    pub outcome: WalkOutcome,
    /// Its final state (the initial state for a pruned walk).
    pub state: S,
}

/// A walk order with its state type fixed and its chain type erased: the
/// boundary where dynamic dispatch happens, once per batch.
pub(crate) trait ErasedOrder<S>: Send + Sync {
    fn space(&self) -> &Space;
    fn execute(
        &self,
        epoch: &Epoch,
        instruction: &Instruction,
        input: BatchInput<S>,
        initial: &S,
        settings: BatchSettings,
    ) -> BatchOutput<S>;
    fn run_serial(&self, step: SerialStep) -> Result<SerialValue, String>;
}

/// A validated walk order, ready to run.
pub(crate) struct Runnable<S, C> {
    order: WalkOrder<S, C>,
    space: Space,
}

impl<S: Clone + Send + 'static, C: Chain<S>> Runnable<S, C> {
    pub(crate) fn new(order: WalkOrder<S, C>) -> Result<Self, crate::model::space::OrderError> {
        let space = order.space()?.clone();
        Ok(Runnable { order, space })
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

/// The text of a panic payload.
pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
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
) -> Result<(), (usize, Halt)> {
    apply_then(chain, epoch, value, state, |s| chain.run_plain(digits, &epoch.plain, s))
}

/// The `LEVEL` of `run_units` that tests segment membership at run time.
const ANY_LEVEL: usize = usize::MAX;

/// Applies the epoch's serial value (if any), then runs `plain`.
#[inline(always)]
fn apply_then<S: 'static, C: Chain<S>>(
    chain: &C,
    epoch: &Epoch,
    value: Option<&SerialValue>,
    state: &mut S,
    plain: impl FnOnce(&mut S) -> Result<(), (usize, Halt)>,
) -> Result<(), (usize, Halt)> {
    if let (Some(step), Some(value)) = (epoch.serial, value) {
        let mark = PanicMark(step.position);
        let applied = chain.apply_serial(step, value, state);
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
    /// When the walk in progress started, when tracing.
    walk_started: Option<Instant>,
}

/// A run of consecutive walk ids and their held states. For a fresh unit the
/// slots start empty (`None`) and receive the states of walks that go on;
/// when nothing goes on (last segment) a fresh unit has no slots at all.
struct Unit<S> {
    range: Range<u64>,
    fresh: bool,
    slots: Vec<Option<S>>,
    /// Time each walk has run so far, when tracing and walks go on.
    nanos: Vec<u64>,
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

impl<S: Clone + Send + 'static, C: Chain<S>> Runnable<S, C> {
    fn fail(&self, out: &mut BatchOutput<S>, id: u64, position: usize, error: String) {
        out.counts.failed += 1;
        out.failed.push(FailedWalk {
            walk_id: WalkId(id),
            action_index: position,
            action: self.space.entries()[position].name,
            error,
        });
    }

    /// Runs every walk of `units`, resuming after any walk that panics
    /// (recorded as failed).
    #[inline(never)]
    fn drive<const LEVEL: usize, const TRACE: bool>(
        &self,
        epoch: &Epoch,
        instruction: &Instruction,
        units: &mut [Unit<S>],
        initial: &S,
        settings: BatchSettings,
    ) -> Progress<S> {
        let mut progress =
            Progress { out: BatchOutput::new(), unit: 0, offset: 0, walk_started: None };
        let mut digits = vec![0u32; self.space.len()];
        loop {
            let attempt = catch_unwind(AssertUnwindSafe(|| {
                self.run_units::<LEVEL, TRACE>(
                    epoch,
                    instruction,
                    units,
                    initial,
                    settings,
                    &mut progress,
                    &mut digits,
                )
            }));
            let Err(payload) = attempt else { return progress };
            // `digits` hold the walk that panicked; resume after it.
            let id = self.space.id_of(&digits).expect("digits stay in the space");
            let unit = &units[progress.unit];
            let offset = id - unit.range.start;
            progress.offset = offset + 1;
            let text = panic_text(payload.as_ref());
            let position = take_panic_position()
                .unwrap_or_else(|| epoch.serial.map_or(epoch.plain.start, |s| s.position));
            let error = format!("panicked: {text}");
            if TRACE {
                let prior = unit.nanos.get(offset as usize).copied().unwrap_or(0);
                let spent = progress.walk_started.map_or(0, |t| t.elapsed().as_nanos() as u64);
                let action = self.space.entries()[position].name;
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
            self.fail(&mut progress.out, id, position, error);
            progress.out.panic.get_or_insert(text);
        }
    }

    /// Runs walks from `progress`'s cursor to the end of the batch. Returns
    /// normally unless an action panics; then `digits` still hold the options
    /// of the walk that panicked.
    ///
    /// This is the per-walk hot loop: no id decoding (an odometer steps the
    /// digits), no shared memory, counts in registers, and, with `LEVEL` the
    /// epoch's level as a constant ([`ANY_LEVEL`] for deep levels), no
    /// per-entry segment test.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn run_units<const LEVEL: usize, const TRACE: bool>(
        &self,
        epoch: &Epoch,
        instruction: &Instruction,
        units: &mut [Unit<S>],
        initial: &S,
        settings: BatchSettings,
        progress: &mut Progress<S>,
        digits: &mut [u32],
    ) {
        let gather = settings.gather;
        let trace = TRACE;
        let no_serial = epoch.serial.is_none();
        let chain = self.order.chain();
        let lookup = Pinned::new(chain);
        let keep = !epoch.last;
        // A slice of the chain's constant length: the entries index it at
        // constant positions, so their bounds checks fold away.
        let digits = &mut digits[..C::LEN];
        let fast = self.space.least_significant();
        let fast_radix = self.space.option_counts()[fast];
        while progress.unit < units.len() {
            let unit = &mut units[progress.unit];
            let len = unit.range.end - unit.range.start;
            let first = progress.offset;
            if first < len {
                self.space
                    .decode_into(unit.range.start + first, digits)
                    .expect("batches lie inside the space");
            }
            let out = &mut progress.out;
            let walk_started = &mut progress.walk_started;
            let mut tally = Tally { local: Counts::default(), sink: &mut out.counts };
            for offset in first..len {
                let id = unit.range.start + offset;
                let state = if unit.fresh {
                    if chain.prune(&WalkView::new(id, digits, &lookup)) {
                        tally.local.pruned += 1;
                        if trace {
                            out.records.push(WalkRecord {
                                id: WalkId(id),
                                outcome: WalkOutcome::Pruned,
                                nanos: 0,
                            });
                        }
                        None
                    } else {
                        Some(initial.clone())
                    }
                } else {
                    unit.slots[offset as usize].take()
                };
                if let Some(mut state) = state {
                    if trace {
                        *walk_started = Some(Instant::now());
                    }
                    let result = match instruction {
                        Instruction::Run(value) => {
                            tally.local.segments += 1;
                            if LEVEL == ANY_LEVEL {
                                run_segment(chain, epoch, value.as_ref(), digits, &mut state)
                            } else if no_serial {
                                chain.run_level::<LEVEL>(digits, &mut state)
                            } else {
                                apply_then(chain, epoch, value.as_ref(), &mut state, |s| {
                                    chain.run_level::<LEVEL>(digits, s)
                                })
                            }
                        }
                        Instruction::FailBranch(error) => {
                            let position = epoch.serial.map_or(0, |s| s.position);
                            Err((position, Halt::Fail(error.clone())))
                        }
                    };
                    let nanos = if trace {
                        let spent = walk_started.map_or(0, |t| t.elapsed().as_nanos() as u64);
                        unit.nanos.get(offset as usize).copied().unwrap_or(0) + spent
                    } else {
                        0
                    };
                    let outcome = match result {
                        Ok(()) if keep => {
                            unit.slots[offset as usize] = Some(state);
                            if trace {
                                unit.nanos[offset as usize] = nanos;
                            }
                            None
                        }
                        Ok(()) => {
                            tally.local.passed += 1;
                            if gather {
                                out.finals.push((WalkId(id), state));
                            }
                            trace.then_some(WalkOutcome::Passed)
                        }
                        Err((position, halt)) => {
                            let outcome = match halt {
                                Halt::Cancel => {
                                    tally.local.cancelled += 1;
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
                                        action,
                                        error,
                                    });
                                    outcome
                                }
                            };
                            if gather {
                                out.finals.push((WalkId(id), state));
                            }
                            outcome
                        }
                    };
                    if let Some(outcome) = outcome {
                        out.records.push(WalkRecord { id: WalkId(id), outcome, nanos });
                    }
                }
                // Odometer: the least significant digit almost always just
                // increments.
                if digits[fast] + 1 < fast_radix {
                    digits[fast] += 1;
                } else {
                    self.space.step(digits);
                }
            }
            drop(tally);
            progress.unit += 1;
            progress.offset = 0;
        }
    }
}

impl<S> BatchOutput<S> {
    fn new() -> Self {
        BatchOutput {
            counts: Counts::default(),
            failed: Vec::new(),
            finals: Vec::new(),
            held: Vec::new(),
            panic: None,
            records: Vec::new(),
            walks: 0,
            nanos: 0,
        }
    }
}

impl<S: Clone + Send + 'static, C: Chain<S>> ErasedOrder<S> for Runnable<S, C> {
    fn space(&self) -> &Space {
        &self.space
    }

    fn execute(
        &self,
        epoch: &Epoch,
        instruction: &Instruction,
        input: BatchInput<S>,
        initial: &S,
        settings: BatchSettings,
    ) -> BatchOutput<S> {
        let started = Instant::now();
        let mut units: Vec<Unit<S>> = match input {
            // Nothing goes on: one unit, no slots.
            BatchInput::Fresh(range) if epoch.last => {
                vec![Unit { range, fresh: true, slots: Vec::new(), nanos: Vec::new() }]
            }
            // Walks go on: one unit per block, so the held states are
            // allocated at their final size and stored without a copy.
            BatchInput::Fresh(range) => settings
                .blocks
                .split(range)
                .map(|part| {
                    let len = (part.end - part.start) as usize;
                    let mut slots = Vec::with_capacity(len);
                    slots.resize_with(len, || None);
                    let nanos = if settings.trace { vec![0; len] } else { Vec::new() };
                    Unit { range: part, fresh: true, slots, nanos }
                })
                .collect(),
            BatchInput::Held(held) => held
                .into_iter()
                .map(|b| {
                    let range = b.range();
                    let mut nanos = b.nanos;
                    if settings.trace && nanos.len() != b.slots.len() {
                        nanos = vec![0; b.slots.len()];
                    }
                    Unit { range, fresh: false, slots: b.slots, nanos }
                })
                .collect(),
        };
        // One loop per segment level (so only that segment's entries are
        // compiled into it) and per tracing (so tracing off costs nothing).
        // Each is its own function: one loop per `catch_unwind` closure
        // keeps the closure small enough to inline and keep in registers.
        let progress = match (epoch.level, settings.trace) {
            (0, false) => self.drive::<0, false>(epoch, instruction, &mut units, initial, settings),
            (0, true) => self.drive::<0, true>(epoch, instruction, &mut units, initial, settings),
            (1, false) => self.drive::<1, false>(epoch, instruction, &mut units, initial, settings),
            (1, true) => self.drive::<1, true>(epoch, instruction, &mut units, initial, settings),
            (2, false) => self.drive::<2, false>(epoch, instruction, &mut units, initial, settings),
            (2, true) => self.drive::<2, true>(epoch, instruction, &mut units, initial, settings),
            (_, false) => {
                self.drive::<ANY_LEVEL, false>(epoch, instruction, &mut units, initial, settings)
            }
            (_, true) => {
                self.drive::<ANY_LEVEL, true>(epoch, instruction, &mut units, initial, settings)
            }
        };
        let mut out = progress.out;
        out.walks = units.iter().map(|u| u.range.end - u.range.start).sum();
        if !epoch.last {
            // Every unit is one block.
            out.held = units
                .into_iter()
                .map(|u| Block { start: u.range.start, slots: u.slots, nanos: u.nanos })
                .collect();
        }
        out.nanos = started.elapsed().as_nanos() as u64;
        out
    }

    fn run_serial(&self, step: SerialStep) -> Result<SerialValue, String> {
        let _quiet = QuietPanics::on_this_thread();
        match catch_unwind(AssertUnwindSafe(|| self.order.chain().run_serial(step))) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(Halt::Fail(error))) => Err(error),
            Ok(Err(Halt::Cancel)) => Err("serial action cancelled its branch".to_string()),
            Err(payload) => Err(format!("panicked: {}", panic_text(payload.as_ref()))),
        }
    }
}

impl<S: Clone + Send + 'static, C: Chain<S>> WalkOrder<S, C> {
    /// Replays walk `id` alone, in this thread, serial actions inline:
    /// exactly the action sequence the walk had in a run.
    ///
    /// `on_step` is called before each action with its position (use it to
    /// print or to pause); the serial value of each serial action is applied
    /// right after it runs.
    pub fn replay_with(
        &self,
        id: u64,
        initial: S,
        mut on_step: impl FnMut(usize),
    ) -> Result<Replay<S>, crate::order::WalkError> {
        let space = self.space()?;
        let digits = space.digits(id)?;
        let chain = self.chain();
        if chain.prune(&WalkView::new(id, &digits, &Pinned::new(chain))) {
            return Ok(Replay { outcome: WalkOutcome::Pruned, state: initial });
        }
        Ok(replay_steps(space, initial, &mut on_step, |position, state| {
            match space.entries()[position].kind {
                EntryKind::Plain => {
                    let one = position..position + 1;
                    chain.run_plain(&digits, &one, state).map_err(|(_, h)| h)
                }
                EntryKind::Serial => {
                    let step = SerialStep { position, option: digits[position] };
                    let value = chain.run_serial(step)?;
                    chain.apply_serial(step, &value, state)
                }
            }
        }))
    }

    /// Replays walk `id` alone; see [`replay_with`](Self::replay_with).
    pub fn replay(&self, id: u64, initial: S) -> Result<Replay<S>, crate::order::WalkError> {
        self.replay_with(id, initial, |_| {})
    }

    /// Replays walk `walk` of a traced run (see [`RunDir`]) alone, in this
    /// thread, serial actions inline; `on_step` as in
    /// [`replay_with`](Self::replay_with).
    ///
    /// The recorded walk is checked against this walk order first. If the
    /// order changed since the run (another fingerprint, or other actions for
    /// this walk), the result says so ([`ModelCheck::Changed`]) and the
    /// *recorded* option values run, deserialized into this order's action
    /// types; if they no longer fit, the replay is refused
    /// ([`ReplayError::Incompatible`]) rather than running something else.
    pub fn replay_from_run(
        &self,
        run: &RunDir,
        walk: u64,
        initial: S,
        on_step: impl FnMut(usize),
    ) -> Result<RunReplay<S>, ReplayError> {
        let record = run.find(walk)?;
        self.replay_record(run, record, initial, on_step)
    }

    /// [`replay_from_run`](Self::replay_from_run) for a record already read
    /// from `run` (with [`RunDir::find`]).
    pub fn replay_record(
        &self,
        run: &RunDir,
        record: TraceRecord,
        initial: S,
        on_step: impl FnMut(usize),
    ) -> Result<RunReplay<S>, ReplayError> {
        let walk = record.walk_id;
        let space = self.space().map_err(WalkError::from)?;
        let values = crate::trace::option_json(self, space)?;
        let mut changes = Vec::new();
        let now = fingerprint(space, &values);
        if now != run.meta().fingerprint {
            changes.push(format!(
                "the walk order's fingerprint is {} now, {} in the run",
                &now[..12],
                run.meta().fingerprint.get(..12).unwrap_or(&run.meta().fingerprint)
            ));
        }
        if let Some(change) = action_change(space, &values, &record) {
            changes.push(change);
        }
        if changes.is_empty() {
            let replay = self.replay_with(walk, initial, on_step)?;
            return Ok(RunReplay { replay, model: ModelCheck::Same, record });
        }
        let kinds: Vec<EntryKind> = run.meta().walk_order.iter().map(|e| e.kind).collect();
        let replay = self.replay_recorded(&record, &kinds, initial, on_step)?;
        Ok(RunReplay { replay, model: ModelCheck::Changed(changes.join("; ")), record })
    }

    /// Runs the recorded option values of `record` on this walk order.
    fn replay_recorded(
        &self,
        record: &TraceRecord,
        kinds: &[EntryKind],
        initial: S,
        mut on_step: impl FnMut(usize),
    ) -> Result<Replay<S>, ReplayError> {
        let space = self.space().map_err(WalkError::from)?;
        let chain = self.chain();
        let walk = record.walk_id;
        let refuse = |entry: Option<usize>, reason: String| ReplayError::Incompatible {
            walk,
            entry,
            reason,
        };
        if record.actions.len() != space.len() {
            let reason = format!(
                "it has {} entries, this walk order has {}",
                record.actions.len(),
                space.len()
            );
            return Err(refuse(None, reason));
        }
        let mut decoded = Vec::with_capacity(space.len());
        for (position, (action, entry)) in record.actions.iter().zip(space.entries()).enumerate() {
            if action.type_name != entry.name {
                let reason =
                    format!("recorded {}, this walk order has {}", action.type_name, entry.name);
                return Err(refuse(Some(position), reason));
            }
            if kinds.get(position).is_some_and(|&k| k != entry.kind) {
                let reason = format!(
                    "{} was {:?} in the run, is {:?} now",
                    entry.name, kinds[position], entry.kind
                );
                return Err(refuse(Some(position), reason));
            }
            let value = chain.decode(position, &action.value).map_err(|e| {
                refuse(
                    Some(position),
                    format!("recorded value {} is no longer a {}: {e}", action.value, entry.name),
                )
            })?;
            decoded.push(value);
        }
        let digits: Vec<u32> = record.actions.iter().map(|a| a.option).collect();
        let lookup = DecodedLookup {
            values: &decoded,
            chain,
            _state: std::marker::PhantomData::<fn() -> S>,
        };
        if chain.prune_decoded(&decoded, &WalkView::new(walk, &digits, &lookup)) {
            return Ok(Replay { outcome: WalkOutcome::Pruned, state: initial });
        }
        Ok(replay_steps(space, initial, &mut on_step, |position, state| {
            chain.run_decoded(position, &decoded[position], state)
        }))
    }
}

/// Runs a walk's entries one by one, catching panics: the replay loop.
fn replay_steps<S>(
    space: &Space,
    initial: S,
    on_step: &mut dyn FnMut(usize),
    mut run: impl FnMut(usize, &mut S) -> ActionResult,
) -> Replay<S> {
    let mut state = initial;
    let name = |position: usize| space.entries()[position].name;
    for position in 0..space.len() {
        on_step(position);
        let outcome = match catch_unwind(AssertUnwindSafe(|| run(position, &mut state))) {
            Ok(Ok(())) => continue,
            Ok(Err(Halt::Cancel)) => WalkOutcome::Cancelled { action_index: position },
            Ok(Err(Halt::Fail(error))) => {
                WalkOutcome::Failed { action_index: position, action: name(position), error }
            }
            Err(payload) => {
                take_panic_position();
                WalkOutcome::Failed {
                    action_index: position,
                    action: name(position),
                    error: format!("panicked: {}", panic_text(payload.as_ref())),
                }
            }
        };
        return Replay { outcome, state };
    }
    Replay { outcome: WalkOutcome::Passed, state }
}

/// How walk `record.walk_id`'s recorded actions differ from what this walk
/// order gives that id, if they do.
fn action_change(space: &Space, values: &OptionJson, record: &TraceRecord) -> Option<String> {
    let walk = record.walk_id;
    let Ok(digits) = space.digits(walk) else {
        return Some(format!("walk {walk} is not in the current space (0..{})", space.size()));
    };
    if record.actions.len() != digits.len() {
        return Some(format!(
            "walk {walk} had {} entries in the run, has {} now",
            record.actions.len(),
            digits.len()
        ));
    }
    for (position, (action, &option)) in record.actions.iter().zip(&digits).enumerate() {
        let entry = &space.entries()[position];
        let now: serde_json::Value = serde_json::from_str(values[position][option as usize].get())
            .expect("option JSON parses back");
        if action.type_name != entry.name || action.option != option || action.value != now {
            return Some(format!(
                "entry {position} of walk {walk} was {}={} (option {}) in the run, is {}={} (option {option}) now",
                action.type_name, action.value, action.option, entry.name, now
            ));
        }
    }
    None
}

/// The option table of a [`WalkView`] over decoded recorded options.
struct DecodedLookup<'a, S, C> {
    values: &'a [Decoded],
    chain: &'a C,
    _state: std::marker::PhantomData<fn() -> S>,
}

impl<S: 'static, C: Chain<S>> OptionLookup for DecodedLookup<'_, S, C> {
    fn option_any(&self, position: usize, _: u32) -> &dyn Any {
        &*self.values[position]
    }
    fn entry_type(&self, position: usize) -> TypeId {
        self.chain.entry_type(position)
    }
}

/// How a recorded walk compares with the current walk order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelCheck {
    /// Same fingerprint, same actions: the walk was replayed by its id.
    Same,
    /// The walk order changed since the run (this says how): the recorded
    /// option values were replayed.
    Changed(String),
}

/// The result of replaying a walk of a traced run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunReplay<S> {
    /// How the replay ended, and its final state.
    pub replay: Replay<S>,
    /// Whether the walk order changed since the run.
    pub model: ModelCheck,
    /// The walk as the run recorded it.
    pub record: TraceRecord,
}

/// Why a walk of a traced run cannot be replayed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The run directory or its trace cannot be used.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The walk order cannot run, or the walk id is not in it.
    #[error(transparent)]
    Walk(#[from] WalkError),
    /// The walk order changed since the run and the recorded walk no longer
    /// fits it.
    #[error("walk {walk}{}: the walk order changed since the run and the recorded walk no longer fits it: {reason}", .entry.map(|e| format!(" entry {e}")).unwrap_or_default())]
    Incompatible {
        /// The walk.
        walk: u64,
        /// The entry that does not fit, if one.
        entry: Option<usize>,
        /// How.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::action::{Action, ActionResult, SerialAction};
    use crate::model::epoch::EpochCursor;
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
        let runnable = Runnable::new(order).unwrap();
        let settings =
            BatchSettings { blocks: Blocks::for_space(runnable.space(), 1), gather: true, trace };
        let mut held: Vec<Block<Vec<u32>>> = Vec::new();
        let mut outputs = Vec::new();
        for epoch in EpochCursor::new(runnable.space().clone()) {
            let instruction =
                Instruction::Run(epoch.serial.map(|step| runnable.run_serial(step).unwrap()));
            let input = if epoch.first {
                BatchInput::Fresh(epoch.walks.clone())
            } else {
                let (mine, rest): (Vec<_>, Vec<_>) =
                    held.into_iter().partition(|b| epoch.walks.contains(&b.start));
                held = rest;
                BatchInput::Held(mine)
            };
            let mut out = runnable.execute(&epoch, &instruction, input, &Vec::new(), settings);
            held.append(&mut out.held);
            outputs.push(out);
        }
        outputs
    }

    #[test]
    fn traced_batches_record_every_walk_once() {
        let outputs = run_all(true);
        let mut records: Vec<WalkRecord> =
            outputs.iter().flat_map(|o| o.records.iter().cloned()).collect();
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

    #[test]
    fn untraced_batches_record_nothing() {
        let outputs = run_all(false);
        assert!(outputs.iter().all(|o| o.records.is_empty()));
        let passed: u64 = outputs.iter().map(|o| o.counts.passed).sum();
        assert_eq!(passed, 4);
    }
}
