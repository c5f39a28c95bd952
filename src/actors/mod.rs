//! The actors of a run. One supervision root, [`run_supervisor`], spawns and
//! links the others:
//!
//! ```text
//!                    RunSupervisor (root; restarts WalkRunners)
//!        ┌─────────────┬──────────┼────────────┬──────────────┬──────────────┐
//!     Planner    SerialBarrier  Scheduler   WalkRunner × N   Collector   TraceWriter
//!                                                                    (only with a log dir)
//! ```
//!
//! Requests go down (`NextEpoch`, `RunEpoch`, `RunBatch`); events go up
//! (`BatchDone`, `EpochDone`, `BatchOutcome`, `Batch` of trace lines,
//! `EpochsDone`). See
//! ARCHITECTURE.md for the protocol.

pub(crate) mod collector;
pub(crate) mod planner;
pub(crate) mod run_supervisor;
pub(crate) mod scheduler;
pub(crate) mod serial_barrier;
pub(crate) mod trace_writer;
pub(crate) mod walk_runner;

use std::time::Duration;

/// How long an actor waits for a reply from another actor of the same
/// process. Those replies need no remote work, so only a dead or wedged actor
/// exceeds it; the run then ends with an internal error instead of hanging.
pub(crate) const LOCAL_REPLY_TIMEOUT: Duration = Duration::from_secs(120);
