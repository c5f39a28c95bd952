//! TraceWriter: appends each batch's trace lines to `walks.jsonl`.
//!
//! - Exists only when the run has a log dir; otherwise no runner encodes
//!   anything and this actor is never spawned.
//! - Receives `Batch` (call) from WalkRunners: one message per batch (never
//!   per walk), holding the batch's lines already encoded on the runner's
//!   blocking thread. It appends them through a `BufWriter`, flushes after
//!   each message (so a crash loses at most the batches in flight), then
//!   replies: the runner waits for that reply before acknowledging the batch.
//! - Receives `Finish` (call) from the RunSupervisor after the last epoch:
//!   flushes, syncs, and replies with what it wrote (or the first write
//!   error). Runners send `Batch` before `BatchDone`, so every batch is in
//!   the mailbox before the supervisor can ask.
//! - Supervised by the RunSupervisor; its failure ends the run (lines would
//!   be missing). A write error does not fail the actor: it is kept, later
//!   batches are dropped, and `Finish` reports it.
//!
//! Its mailbox is unbounded: safe because each runner waits for the reply
//! to its `Batch` before going on, so at most one batch of lines per runner
//! is queued. Writes are appends of one batch's lines to the page cache,
//! done on the actor's task.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::trace::{TraceTotals, WalksFile};

/// Events and requests to the TraceWriter.
pub(crate) enum TraceWriterMsg {
    /// The trace lines of one batch.
    Batch {
        /// `walks.jsonl` lines, newline-terminated.
        lines: Vec<u8>,
        /// How many lines.
        records: u64,
        /// (walk id, duration in ns) of the walks that failed in the batch.
        failed_nanos: Vec<(u64, u64)>,
        /// Answered once the lines are written (or dropped after an error).
        written: RpcReplyPort<()>,
    },
    /// Every batch is in: flush and say what was written.
    Finish(RpcReplyPort<Result<TraceTotals, String>>),
}

// Local only: never crosses a node.
impl ractor::Message for TraceWriterMsg {}

pub(crate) struct TraceWriter;

pub(crate) struct TraceWriterState {
    file: WalksFile,
    totals: TraceTotals,
    error: Option<String>,
}

impl Actor for TraceWriter {
    type Msg = TraceWriterMsg;
    type State = TraceWriterState;
    /// `walks.jsonl`, created empty.
    type Arguments = WalksFile;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        file: WalksFile,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(TraceWriterState { file, totals: TraceTotals::default(), error: None })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TraceWriterMsg::Batch { lines, records, failed_nanos, written } => {
                state.append(&lines, records, failed_nanos);
                let _ = written.send(());
            }
            TraceWriterMsg::Finish(reply) => {
                let _ = reply.send(state.finish());
            }
        }
        Ok(())
    }
}

impl TraceWriterState {
    fn append(&mut self, lines: &[u8], records: u64, failed_nanos: Vec<(u64, u64)>) {
        if self.error.is_some() {
            return;
        }
        match self.file.append(lines) {
            Ok(()) => {
                self.totals.records += records;
                self.totals.failed_nanos.extend(failed_nanos);
            }
            Err(error) => {
                tracing::error!(%error, "cannot write walks.jsonl; the trace stops here");
                self.error = Some(error.to_string());
            }
        }
    }

    fn finish(&mut self) -> Result<TraceTotals, String> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        self.file.finish().map_err(|e| e.to_string())?;
        tracing::debug!(records = self.totals.records, "walks.jsonl written");
        Ok(std::mem::take(&mut self.totals))
    }
}
