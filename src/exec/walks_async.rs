//! Batches of an async walk order (one with an [`AsyncAction`]): every walk
//! of the batch is a future, polled on the runner thread (`block_on`) with
//! the process's async-actions runtime driving I/O and timers (one for
//! every runner, never the actors' runtime), up to `in_flight` at once.
//! Each walk's entries still run in order: the serial value is applied
//! first, plain actions run inline, async actions are awaited. What the
//! batch produces is what the synchronous loop produces (the same counts,
//! failed walks, ranges, final and held states, trace records), so
//! everything after the batch (the Scheduler, the store, the trace, the
//! cluster wire) is the same for both.
//!
//! [`AsyncAction`]: crate::AsyncAction

use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures::FutureExt as _;
use futures::stream::{self, StreamExt as _};

use super::{
    BatchInput, BatchOutput, BatchSettings, Begin, Block, Ends, Instruction, Pruning, Runnable,
    WALK_STATE_ACTION, WalkOutcome, WalkRecord, end_pruned, panic_message, unstarted,
};
use crate::model::action::{Halt, WalkContext};
use crate::model::epoch::Epoch;
use crate::model::fixtures::StartKind;
use crate::model::holdings::LiveSet;
use crate::model::outcome::FailedWalk;
use crate::model::space::WalkId;
use crate::model::triage::Neither;
use crate::order::{Chain, Pinned, block_on, take_panic_position};

/// Walks in flight at once on one runner thread, unless the run says.
pub(crate) const DEFAULT_IN_FLIGHT: usize = 1024;

/// How one walk's segment ended: its state (gone if it panicked), the
/// position and halt if it halted, and the time it ran.
struct Ended<S> {
    id: u64,
    state: Option<S>,
    result: Result<(), (usize, Halt)>,
    nanos: u64,
}

impl<S: Send + 'static, C: Chain<S>, K: StartKind<S>> Runnable<S, C, K> {
    /// Runs a batch of an async walk order (see the module doc).
    pub(super) fn execute_async(
        &self,
        epoch: &Epoch,
        instruction: &Instruction,
        input: BatchInput<S>,
        begin: &Begin<'_, S, K>,
        settings: BatchSettings,
    ) -> BatchOutput<S> {
        let started = Instant::now();
        let mut out = BatchOutput::new();
        let keep = !epoch.last;
        let chain = self.order.chain();
        let lookup = Pinned::new(chain);
        // The blocks that walks going on are kept in, and the walks to run.
        let mut blocks: Vec<Range<u64>> = Vec::new();
        let mut walks: Vec<(u64, S)> = Vec::new();
        let mut digits = vec![0u32; self.space.len()];
        // Factories run inside the async actions' runtime, so a state may
        // hold a tokio socket or timer made there.
        let _inside = crate::order::async_runtime().enter();
        match input {
            BatchInput::Fresh(ranges) => {
                for range in ranges.iter() {
                    out.walks += range.end - range.start;
                    blocks.extend(settings.blocks.split(range.clone()));
                    let mut pruning = Pruning::new(&self.space);
                    let mut id = range.start;
                    while id < range.end {
                        self.space.decode_into(id, &mut digits).expect("batches lie in the space");
                        let pruned = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            pruning.decide(chain, &lookup, id, &digits, range.end)
                        }));
                        match pruned {
                            Ok(Some(end)) => {
                                // The walks `id..end` agree on what the rules read.
                                let records = settings.trace.then_some(&mut out.records);
                                end_pruned(id..end, &mut out.counts, &mut out.neither, records);
                                id = end;
                                continue;
                            }
                            Ok(None) => match K::make(begin.start, begin.fixtures, id) {
                                Ok(state) => walks.push((id, state)),
                                Err(halt) => {
                                    let ends = Ends {
                                        failed: &mut out.failed,
                                        neither: &mut out.neither,
                                        records: settings.trace.then_some(&mut out.records),
                                    };
                                    unstarted(epoch, id, halt, ends, &mut out.counts, 0);
                                }
                            },
                            Err(payload) => {
                                let position = take_panic_position().unwrap_or(0);
                                let error = format!("panicked: {}", panic_message(payload));
                                self.fail(&mut out, id, position, error, 0, settings.trace);
                            }
                        }
                        id += 1;
                    }
                }
            }
            BatchInput::Held(held) => {
                for block in held {
                    let range = block.range();
                    out.walks += range.end - range.start;
                    let ids: Vec<u64> = block.live_ids().collect();
                    walks.extend(ids.into_iter().zip(block.states));
                    blocks.push(range);
                }
            }
        }
        let value = match instruction {
            Instruction::Run(value, _) => value.as_ref(),
            Instruction::FailBranch(_) => None,
        };
        let fixtures = begin.fixtures;
        let ended: Vec<Ended<S>> = match instruction {
            Instruction::FailBranch(error) => {
                let position = epoch.serial.map_or(0, |s| s.position);
                let failure = || Err((position, Halt::Fail(error.clone())));
                walks
                    .into_iter()
                    .map(|(id, state)| Ended {
                        id,
                        state: Some(state),
                        result: failure(),
                        nanos: 0,
                    })
                    .collect()
            }
            Instruction::Run(..) => {
                let space = &self.space;
                let run_one = |(id, mut state): (u64, S)| async move {
                    let walk_started = Instant::now();
                    let mut digits = vec![0u32; space.len()];
                    space.decode_into(id, &mut digits).expect("batches lie in the space");
                    let walk = WalkContext::new(id, 0, fixtures);
                    let segment = async {
                        if let (Some(step), Some(value)) = (epoch.serial, value) {
                            let mark = crate::order::PanicMark(step.position);
                            let applied = chain.apply_serial(step, value, &mut state, walk);
                            std::mem::forget(mark);
                            applied.map_err(|halt| (step.position, halt))?;
                        }
                        chain.run_plain_async(&digits, &epoch.plain, &mut state, walk).await
                    };
                    let result = AssertUnwindSafe(segment).catch_unwind().await;
                    let nanos = walk_started.elapsed().as_nanos() as u64;
                    match result {
                        Ok(result) => Ended { id, state: Some(state), result, nanos },
                        Err(payload) => {
                            let position = take_panic_position().unwrap_or(epoch.plain.start);
                            let error = format!("panicked: {}", panic_message(payload));
                            Ended {
                                id,
                                state: None,
                                result: Err((position, Halt::Fail(error))),
                                nanos,
                            }
                        }
                    }
                };
                let in_flight = settings.in_flight.max(1);
                let mut ended: Vec<Ended<S>> = block_on(
                    stream::iter(walks).map(run_one).buffer_unordered(in_flight).collect(),
                );
                ended.sort_unstable_by_key(|e| e.id);
                ended
            }
        };
        let ran = matches!(instruction, Instruction::Run(..));
        self.record(&mut out, ended, &blocks, Recording { keep, ran, settings });
        // Batch sizing reads `nanos / walks` as a walk's cost on this
        // runner. Walks in flight together share the elapsed time, and a
        // batch of fewer walks than `in_flight` left room for more in the
        // same time: charge it as if it had been full, so batches grow to
        // keep `in_flight` walks going.
        let elapsed = started.elapsed().as_nanos() as u64;
        let room = out.walks.max(settings.in_flight.max(1) as u64);
        out.nanos = (u128::from(elapsed) * u128::from(out.walks) / u128::from(room)) as u64;
        out.records.nanos = elapsed;
        out
    }

    /// Counts the ended walks (in id order) into `out`: passed, cancelled,
    /// failed; their final states (gathered or dropped) or, when the epoch
    /// is not the last, the states of the walks that go on, block by block.
    fn record(
        &self,
        out: &mut BatchOutput<S>,
        ended: Vec<Ended<S>>,
        blocks: &[Range<u64>],
        how: Recording,
    ) {
        let Recording { keep, ran, settings } = how;
        let segment = u64::from(ran);
        let mut ended = ended.into_iter().peekable();
        let mut held = Vec::with_capacity(blocks.len());
        for range in blocks {
            let len = range.end - range.start;
            let mut live = LiveSet::none(len);
            let mut states = Vec::new();
            let mut nanos = if keep && settings.trace { vec![0; len as usize] } else { Vec::new() };
            while let Some(walk) = ended.next_if(|e| e.id < range.end) {
                let Ended { id, state, result, nanos: spent } = walk;
                match result {
                    Ok(()) if keep => {
                        out.counts.segments += segment;
                        live.set(id - range.start);
                        states.push(state.expect("a walk that passed has its state"));
                        if let Some(slot) = nanos.get_mut((id - range.start) as usize) {
                            *slot = spent;
                        }
                    }
                    Ok(()) => {
                        out.counts.segments += segment;
                        out.counts.passed += 1;
                        self.finish(out, id, state, settings, WalkOutcome::Passed, spent);
                    }
                    Err((position, Halt::Cancel)) => {
                        out.counts.segments += segment;
                        out.counts.cancelled += 1;
                        Neither::push_id(&mut out.neither, id);
                        let outcome = WalkOutcome::Cancelled { action_index: position };
                        self.finish(out, id, state, settings, outcome, spent);
                    }
                    Err((position, Halt::Fail(error))) => {
                        out.counts.segments += segment;
                        if let (true, Some(state)) = (settings.gather, state) {
                            out.finals.push((WalkId(id), state));
                        }
                        self.fail(out, id, position, error, spent, settings.trace);
                    }
                }
            }
            if keep {
                held.push(Block { start: range.start, live, states, nanos });
            }
        }
        if keep {
            out.held = held;
        }
    }

    /// Ends a walk that passed or was cancelled: its state gathered or
    /// dropped, its record traced.
    fn finish(
        &self,
        out: &mut BatchOutput<S>,
        id: u64,
        state: Option<S>,
        settings: BatchSettings,
        outcome: WalkOutcome,
        nanos: u64,
    ) {
        if let (true, Some(state)) = (settings.gather, state) {
            out.finals.push((WalkId(id), state));
        }
        if settings.trace {
            out.records.push(WalkRecord { id: WalkId(id), outcome, nanos });
        }
    }

    /// Counts a failed walk, with its failing entry and error.
    fn fail(
        &self,
        out: &mut BatchOutput<S>,
        id: u64,
        position: usize,
        error: String,
        nanos: u64,
        trace: bool,
    ) {
        out.counts.failed += 1;
        let action = self.space.entries().get(position).map_or(WALK_STATE_ACTION, |e| e.name);
        if trace {
            let outcome =
                WalkOutcome::Failed { action_index: position, action, error: error.clone() };
            out.records.push(WalkRecord { id: WalkId(id), outcome, nanos });
        }
        out.failed.push(FailedWalk {
            walk_id: WalkId(id),
            action_index: position,
            action: action.into(),
            error,
        });
    }
}

/// How a batch's ended walks are recorded.
#[derive(Clone, Copy)]
struct Recording {
    /// The epoch is not the last: walks that pass go on.
    keep: bool,
    /// The walks ran a segment (not a failed branch's batch).
    ran: bool,
    settings: BatchSettings,
}
