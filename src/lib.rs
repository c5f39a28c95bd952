//! combtest: combinatorial testing on an actor runtime.
//!
//! Describe the operations that can be done to a system under test as
//! [`Action`]s (each with a finite list of options; [`AsyncAction`]s when
//! they await I/O) and global steps as [`SerialAction`]s, order them in a
//! [`WalkOrder`], and [`run`] every
//! combination — every *walk* — in parallel, with a [`Report`] that accounts
//! for every walk id. Give the run a log dir ([`RunOptions::log_dir`]) to
//! trace every walk; replay any walk alone with [`WalkOrder::replay`], or as
//! a run recorded it with [`WalkOrder::replay_from_run`].
//!
//! Actions reach their walk's id and position and the run's [`Fixtures`]
//! (a server, a temp dir) through a [`WalkContext`]; walks start from
//! clones of one state or from a factory ([`RunOptions::factory`]).
//!
//! # Layout
//! - `model/`: pure data and decisions (walk space and ids, epochs,
//!   outcomes, trace and JUnit formats). Never imports the actor runtime.
//! - `order`: the typed [`WalkOrder`] builder and its chain of entries.
//! - `exec/`: execution of batches and serial steps: the synchronous hot
//!   loop, and batches of async walk orders as futures (`walks_async`).
//! - `replay`: one walk alone, by id or as a run directory recorded it.
//! - `actors/`: the ractor actors of a run, one per file.
//! - `runtime`: [`run`] and [`run_async`], which spawn and supervise them.
//! - `trace`: run directories: writing traces and reports, reading them
//!   back for replay.
//! - `cluster/`: cluster runs: `serve` (a node), `ClusterOptions` (a
//!   coordinator's nodes), the wire protocol, node processes started
//!   locally or over SSH (`cluster::ssh`).
//! - `suites/`: built-in suites for `combtest-node`.
//! - `cli`: the `combtest-node` command line, callable from a user's `main`.
//! - `config`: its settings (file, environment, command line) and where
//!   each came from.

pub mod model;

mod actors;
pub mod cli;
mod clock;
pub mod cluster;
pub mod config;
mod exec;
mod order;
mod replay;
mod runner;
mod runtime;
pub mod soak;
mod store;
pub mod suites;
pub mod trace;

pub use exec::WalkOutcome;
pub use model::action::{
    Action, ActionResult, AsyncAction, Halt, SerialAction, SerialContext, WalkContext, cancel, fail,
};
pub use model::fixtures::{Built, Cloned, Fixtures, StartKind};
pub use model::outcome::{AbortedWalks, Ending, FailedWalk, Report, StopReason};
pub use model::space::{OrderError, WalkId};
pub use model::walk::{Walk, WalkStep, WalkView};
pub use order::{Entries, WalkError, WalkOrder, epoch_tree};
pub use replay::{ModelCheck, Replay, ReplayError, RunReplay};
pub use runtime::{
    MAX_THREADS, RunError, RunOptions, RunStop, check, check_with, default_threads, run, run_async,
};

/// What a suite and a test need, in one import: `use combtest::prelude::*;`.
///
/// The traits and helpers of actions ([`Action`], [`SerialAction`],
/// [`ActionResult`], [`Halt`], [`cancel`], [`fail`], [`WalkView`] for
/// pruning), the walk order ([`WalkOrder`], [`Entries`] to name it,
/// [`WalkId`]), running and checking it ([`run`], [`RunOptions`],
/// [`check`], [`check_with`]), and what comes back ([`Report`],
/// [`FailureGroup`](crate::model::triage::FailureGroup),
/// [`Conditions`](crate::model::triage::Conditions), and [`WalkOutcome`]
/// for a replay's outcome).
pub mod prelude {
    pub use crate::model::triage::{Conditions, FailureGroup};
    pub use crate::{
        Action, ActionResult, AsyncAction, Entries, Fixtures, Halt, Report, RunOptions,
        SerialAction, SerialContext, WalkContext, WalkId, WalkOrder, WalkOutcome, WalkView, cancel,
        check, check_with, fail, run,
    };
}
pub use trace::{RunDir, RunId, TraceError};
