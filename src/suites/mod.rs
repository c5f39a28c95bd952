//! Suites: named walk orders with their setup, runnable by name from the
//! `combtest-node` command line. The built-in ones live here; a user's binary
//! hands its own to [`crate::cli::main`].

use crate::model::outcome::Report;
use crate::model::space::{OrderError, Space};
use crate::order::{Chain, WalkOrder};
use crate::runtime::{RunError, RunOptions, run};

pub mod demo;
pub mod fs;
pub mod smoke;

/// What a suite's setup hands to a run: the initial walk state, and whatever
/// must stay alive until the run ends (a temp dir, a server handle).
pub struct Fixture<S> {
    /// Every walk starts from a clone of this.
    pub initial: S,
    /// Dropped after the run.
    pub guard: Box<dyn Send>,
}

impl<S> Fixture<S> {
    /// A fixture with nothing to keep alive.
    pub fn new(initial: S) -> Self {
        Fixture { initial, guard: Box::new(()) }
    }
}

/// How the command line asks a suite to run.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SuiteOptions {
    /// Runner threads; `None` for the default.
    pub threads: Option<usize>,
}

/// Why a suite could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuiteError {
    /// The suite's setup failed.
    #[error("setup of suite {suite} failed: {reason}")]
    Setup {
        /// The suite.
        suite: String,
        /// What went wrong.
        reason: String,
    },
    /// The run failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// A walk order with a name, a description and a setup: what `combtest-node`
/// lists and runs. Build one with [`suite`].
pub trait Suite: Send + Sync {
    /// The name to run it by.
    fn name(&self) -> &str;
    /// One line on what it tests.
    fn description(&self) -> &str;
    /// Its walk space.
    fn space(&self) -> Result<&Space, OrderError>;
    /// Sets up and runs every walk.
    fn run(&self, options: &SuiteOptions) -> Result<Report, SuiteError>;
}

struct OrderSuite<S, C, F> {
    name: String,
    description: String,
    order: WalkOrder<S, C>,
    setup: F,
}

impl<S, C, F> Suite for OrderSuite<S, C, F>
where
    S: Clone + Send + 'static,
    C: Chain<S>,
    F: Fn() -> Result<Fixture<S>, String> + Send + Sync,
{
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn space(&self) -> Result<&Space, OrderError> {
        self.order.space()
    }
    fn run(&self, options: &SuiteOptions) -> Result<Report, SuiteError> {
        let fixture = (self.setup)()
            .map_err(|reason| SuiteError::Setup { suite: self.name.clone(), reason })?;
        let mut run_options = RunOptions::new(fixture.initial);
        if let Some(threads) = options.threads {
            run_options = run_options.threads(threads);
        }
        let report = run(&self.order, run_options)?;
        drop(fixture.guard);
        Ok(report.without_states())
    }
}

/// Makes a [`Suite`] from a walk order and a setup function that builds the
/// initial state for each run.
pub fn suite<S, C, F>(
    name: impl Into<String>,
    description: impl Into<String>,
    order: WalkOrder<S, C>,
    setup: F,
) -> Box<dyn Suite>
where
    S: Clone + Send + 'static,
    C: Chain<S>,
    F: Fn() -> Result<Fixture<S>, String> + Send + Sync + 'static,
{
    Box::new(OrderSuite { name: name.into(), description: description.into(), order, setup })
}

/// The built-in suites: `demo`, `fs` and `smoke`.
pub fn builtin() -> Vec<Box<dyn Suite>> {
    vec![demo::suite(), fs::suite(), smoke::suite()]
}
