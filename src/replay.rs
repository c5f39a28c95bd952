//! Replaying one walk alone, in the calling thread, serial actions inline:
//! by id against the current walk order, or as a run directory recorded it
//! (checked against the current walk order first).

use std::any::{Any, TypeId};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::exec::{WalkOutcome, panic_message};
use crate::model::action::{ActionResult, Halt, WalkContext};
use crate::model::epoch::SerialStep;
use crate::model::fixtures::Fixtures;
use crate::model::space::{EntryKind, Space, WalkId};
use crate::model::trace::{OptionJson, TraceRecord, fingerprint};
use crate::model::walk::{OptionLookup, Reads, WalkView};
use crate::order::{Chain, Decoded, Entries, Pinned, WalkError, WalkOrder, take_panic_position};
use crate::trace::{RunDir, TraceError};

/// The result of replaying one walk in-process.
#[derive(Debug, Clone)]
pub struct Replay<S> {
    /// How the walk ended.
    pub outcome: WalkOutcome,
    /// Its final state (the initial state for a pruned walk).
    pub state: S,
}

impl<S: Send + 'static, C: Entries<S>> WalkOrder<S, C> {
    /// Replays walk `id` alone, in this thread, serial actions inline:
    /// exactly the action sequence the walk had in a run.
    ///
    /// `on_step` is called before each action with its position (use it to
    /// print or to pause); the serial value of each serial action is applied
    /// right after it runs.
    pub fn replay_with(
        &self,
        id: impl Into<WalkId>,
        initial: S,
        on_step: impl FnMut(usize),
    ) -> Result<Replay<S>, crate::order::WalkError> {
        self.replay_in(id, initial, &Fixtures::new(), on_step)
    }

    /// [`replay_with`](Self::replay_with) with the run's fixtures, for
    /// actions that reach them: build them as the suite's setup does, and
    /// the walk's starting state as the run would (a clone of the initial
    /// state, or the factory called with the fixtures and `id`). Serial
    /// actions run here as on a node: `run_in`,
    /// `apply_on_node`, then `apply_in`.
    pub fn replay_in(
        &self,
        id: impl Into<WalkId>,
        initial: S,
        fixtures: &Fixtures,
        mut on_step: impl FnMut(usize),
    ) -> Result<Replay<S>, crate::order::WalkError> {
        let id = id.into().0;
        let space = self.space()?;
        let digits = space.digits(id)?;
        let chain = self.chain();
        match pruned(space, || {
            chain.prune(&WalkView::new(id, &digits, &Pinned::new(chain), &Reads::default()))
        }) {
            Ok(false) => {}
            Ok(true) => return Ok(Replay { outcome: WalkOutcome::Pruned, state: initial }),
            Err(outcome) => return Ok(Replay { outcome, state: initial }),
        }
        let walk = WalkContext::new(id, 0, fixtures);
        Ok(replay_steps(space, initial, &mut on_step, |position, state| {
            match space.entries()[position].kind {
                EntryKind::Plain => {
                    let one = position..position + 1;
                    chain.run_plain(&digits, &one, state, walk).map_err(|(_, h)| h)
                }
                EntryKind::Serial => {
                    let step = SerialStep { position, option: digits[position] };
                    let serials = space.serial_positions();
                    let branch: Vec<u32> = serials
                        .iter()
                        .take_while(|&&p| p <= position)
                        .map(|&p| digits[p])
                        .collect();
                    let cx =
                        crate::model::action::SerialContext::new(position, &branch, fixtures, None);
                    let value =
                        chain.run_serial(step, &cx).map_err(crate::order::serial_run_halt)?;
                    chain.node_step(step, &value, &cx).map_err(crate::order::serial_run_halt)?;
                    chain.apply_serial(step, &value, state, walk)
                }
            }
        }))
    }

    /// Replays walk `id` alone (a [`WalkId`] or its `u64`); see
    /// [`replay_with`](Self::replay_with).
    pub fn replay(
        &self,
        id: impl Into<WalkId>,
        initial: S,
    ) -> Result<Replay<S>, crate::order::WalkError> {
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
        walk: impl Into<WalkId>,
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
        self.replay_record_in(run, record, initial, &Fixtures::new(), on_step)
    }

    /// [`replay_record`](Self::replay_record) with the run's fixtures (see
    /// [`replay_in`](Self::replay_in)).
    pub fn replay_record_in(
        &self,
        run: &RunDir,
        record: TraceRecord,
        initial: S,
        fixtures: &Fixtures,
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
            let replay = self.replay_in(walk, initial, fixtures, on_step)?;
            return Ok(RunReplay { replay, model: ModelCheck::Same, record });
        }
        let kinds: Vec<EntryKind> = run.meta().walk_order.iter().map(|e| e.kind).collect();
        let replay = self.replay_recorded(&record, &kinds, initial, fixtures, on_step)?;
        Ok(RunReplay { replay, model: ModelCheck::Changed(changes.join("; ")), record })
    }

    /// Runs the recorded option values of `record` on this walk order.
    fn replay_recorded(
        &self,
        record: &TraceRecord,
        kinds: &[EntryKind],
        initial: S,
        fixtures: &Fixtures,
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
                "it has {}, this walk order has {}",
                crate::model::count(record.actions.len() as u64, "entry"),
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
        match pruned(space, || {
            chain.prune_decoded(&decoded, &WalkView::new(walk, &digits, &lookup, &Reads::default()))
        }) {
            Ok(false) => {}
            Ok(true) => return Ok(Replay { outcome: WalkOutcome::Pruned, state: initial }),
            Err(outcome) => return Ok(Replay { outcome, state: initial }),
        }
        let cx = WalkContext::new(walk, 0, fixtures);
        Ok(replay_steps(space, initial, &mut on_step, |position, state| {
            chain.run_decoded(position, &decoded[position], state, cx)
        }))
    }
}

/// Whether the walk is pruned, or, if a `prune` panicked, the failure the
/// run records for it (the pruning entry, "panicked: ...").
fn pruned(space: &Space, prune: impl FnOnce() -> bool) -> Result<bool, WalkOutcome> {
    catch_unwind(AssertUnwindSafe(prune)).map_err(|payload| {
        let position = take_panic_position().unwrap_or(0);
        WalkOutcome::Failed {
            action_index: position,
            action: space.entries()[position].name,
            error: format!("panicked: {}", panic_message(payload)),
        }
    })
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
                    error: format!("panicked: {}", panic_message(payload)),
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
            "walk {walk} had {} in the run, has {} now",
            crate::model::count(record.actions.len() as u64, "entry"),
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
