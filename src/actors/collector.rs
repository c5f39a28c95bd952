//! Collector: aggregates the outcomes of batches into the run's report.
//!
//! - Receives `BatchOutcome` from WalkRunners (one per batch, never per
//!   walk), `SerialRan` from the SerialBarrier, `Finish` from the
//!   RunSupervisor once every epoch is done.
//! - Supervised by the RunSupervisor; its failure ends the run (the counts
//!   it held cannot be rebuilt).
//!
//! Its mailbox is unbounded: safe because each runner sends one outcome per
//! batch it was granted, and the Scheduler grants a bounded number of
//! batches per runner.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::model::outcome::{AbortedWalks, Counts, FailedWalk, Fate, Report};
use crate::model::space::WalkId;
use crate::model::triage::Triage;

/// Events and requests to the Collector.
pub(crate) enum CollectorMsg<S> {
    /// A batch finished: its counts, failures and (when gathering) the final
    /// states of the walks that ended in it.
    BatchOutcome {
        counts: Counts,
        failed: Vec<FailedWalk>,
        /// Cancelled and pruned walks, as ranges.
        neither: Vec<Range<u64>>,
        finals: Vec<(WalkId, S)>,
    },
    /// Walks that will not end (their node was lost with their state, or
    /// the run stopped before them), from the Scheduler: aborted, or not run.
    Unfinished(AbortedWalks, Fate),
    /// A cluster node was lost (from the Scheduler).
    NodeLost(String),
    /// The SerialBarrier ran one serial action.
    SerialRan,
    /// The SerialBarrier skipped this many serial actions: no walk of their
    /// branch was live.
    SerialSkipped(u64),
    /// Every epoch is done: hand over the report.
    Finish(RpcReplyPort<Report<S>>),
}

// Local only: never crosses a node.
impl<S: Send + 'static> ractor::Message for CollectorMsg<S> {}

pub(crate) struct Collector<S>(std::marker::PhantomData<fn() -> S>);

impl<S> Collector<S> {
    pub(crate) fn new() -> Self {
        Collector(std::marker::PhantomData)
    }
}

pub(crate) struct CollectorState<S> {
    walks: u64,
    counts: Counts,
    serial_actions: u64,
    serial_skipped: u64,
    failed: Vec<FailedWalk>,
    aborted: Vec<AbortedWalks>,
    not_run: Vec<AbortedWalks>,
    lost_nodes: Vec<String>,
    states: BTreeMap<WalkId, S>,
    progress: Option<Arc<Progress>>,
    triage: Option<Triage>,
    /// The failure limit and how to stop the run at it (once).
    limit: Option<(u64, StopRun)>,
}

/// Stops the run (drains it): called once, when the failure limit is
/// reached.
pub(crate) type StopRun = Box<dyn FnOnce() + Send>;

/// Counts of a run in progress, readable from any thread (a soak's status
/// lines during a long round).
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Progress {
    /// Walks that ended (or were counted as aborted or not run).
    pub ended: AtomicU64,
    /// Of which passed.
    pub passed: AtomicU64,
    /// Of which pruned.
    pub pruned: AtomicU64,
    /// Of which not run.
    pub not_run: AtomicU64,
    /// Of which failed.
    pub failed: AtomicU64,
    /// Of which cancelled.
    pub cancelled: AtomicU64,
    /// Of which aborted.
    pub aborted: AtomicU64,
    /// Failure groups (distinct signatures) seen so far.
    pub groups: AtomicU64,
}

impl<S: Send + 'static> Actor for Collector<S> {
    type Msg = CollectorMsg<S>;
    type State = CollectorState<S>;
    /// Walks in the run, where to show progress (a soak's status), the
    /// triage of its failures, and the failure limit with its stop.
    type Arguments = (u64, Option<Arc<Progress>>, Triage, Option<(u64, StopRun)>);

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        (walks, progress, triage, limit): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(CollectorState {
            walks,
            progress,
            triage: Some(triage),
            limit,
            counts: Counts::default(),
            serial_actions: 0,
            serial_skipped: 0,
            failed: Vec::new(),
            aborted: Vec::new(),
            not_run: Vec::new(),
            lost_nodes: Vec::new(),
            states: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CollectorMsg::BatchOutcome { counts, failed, neither, finals } => {
                if let Some(triage) = &mut state.triage {
                    let new = triage.failed(&failed);
                    if let Some(progress) = &state.progress {
                        progress.groups.fetch_add(new, Ordering::Relaxed);
                    }
                    if !neither.is_empty() {
                        triage.neither(neither);
                    }
                }
                if let Some(progress) = &state.progress {
                    progress.ended.fetch_add(counts.ended(), Ordering::Relaxed);
                    progress.passed.fetch_add(counts.passed, Ordering::Relaxed);
                    progress.pruned.fetch_add(counts.pruned, Ordering::Relaxed);
                    progress.failed.fetch_add(counts.failed, Ordering::Relaxed);
                    progress.cancelled.fetch_add(counts.cancelled, Ordering::Relaxed);
                }
                state.counts.merge(&counts);
                state.failed.extend(failed);
                let at_limit =
                    state.limit.as_ref().is_some_and(|(limit, _)| state.counts.failed >= *limit);
                if at_limit && let Some((_, stop)) = state.limit.take() {
                    stop();
                    // The stop wakes the supervisor's task from this one, so
                    // the runtime puts it in this worker's next-task slot,
                    // which no other worker may take: behind this actor and
                    // its backlog of outcomes (with thousands of failures to
                    // group, long enough for the run to end first; the stop
                    // came 126 ms late, after the last walk). Yielding once
                    // lets it run now.
                    tokio::task::yield_now().await;
                }
                for (id, walk_state) in finals {
                    // Each walk ends once; a second final state is a bug
                    // (py-combtest returned every state twice).
                    if state.states.insert(id, walk_state).is_some() {
                        return Err(format!("walk {} ended twice (two final states)", id.0).into());
                    }
                }
            }
            CollectorMsg::Unfinished(walks, fate) => {
                if let Some(progress) = &state.progress {
                    progress.ended.fetch_add(walks.count(), Ordering::Relaxed);
                    let counter = match fate {
                        Fate::Aborted => &progress.aborted,
                        Fate::NotRun => &progress.not_run,
                    };
                    counter.fetch_add(walks.count(), Ordering::Relaxed);
                }
                let groups = match fate {
                    Fate::Aborted => {
                        state.counts.aborted += walks.count();
                        &mut state.aborted
                    }
                    Fate::NotRun => &mut state.not_run,
                };
                // Grouped by reason.
                match groups.iter_mut().find(|a| a.reason == walks.reason) {
                    Some(group) => group.walks.extend(walks.walks),
                    None => groups.push(walks),
                }
            }
            CollectorMsg::NodeLost(node) => state.lost_nodes.push(node),
            CollectorMsg::SerialRan => state.serial_actions += 1,
            CollectorMsg::SerialSkipped(n) => state.serial_skipped += n,
            CollectorMsg::Finish(reply) => {
                let mut report = Report::from_parts(
                    state.walks,
                    state.counts,
                    state.serial_actions,
                    std::mem::take(&mut state.failed),
                    std::mem::take(&mut state.aborted),
                    std::mem::take(&mut state.not_run),
                    std::mem::take(&mut state.states),
                );
                report.lost_nodes = std::mem::take(&mut state.lost_nodes);
                report.serial_skipped = state.serial_skipped;
                if let Some(triage) = state.triage.take() {
                    let unfinished = report.aborted_walks.iter().chain(&report.not_run_walks);
                    report.failure_groups = triage.groups(&report.failed_walks, unfinished);
                }
                let _ = reply.send(report);
            }
        }
        Ok(())
    }
}
