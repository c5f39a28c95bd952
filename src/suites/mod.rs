//! Suites: named walk orders with their setup, runnable by name from the
//! `combtest-node` command line. The built-in ones live here; a user's binary
//! hands its own to [`crate::cli::main`].

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cluster::node_run::{NodeRun, NodeRunSpec, TypedNodeRun};
use crate::cluster::run::run_on_cluster;
use crate::cluster::{Cluster, ClusterError, NodeSuite};
use crate::exec::Origin;
use crate::model::action::Halt;
use crate::model::fixtures::{Built, Cloned, Factory, Fixtures, StartKind};
use crate::model::sample::WalkSample;
use crate::model::space::WalkId;
use crate::runtime::{RoundTrace, RunStop};

use crate::exec::WalkOutcome;
use crate::model::outcome::Report;
use crate::model::space::{EntryKind, OrderError, Space};
use crate::model::trace::TraceRecord;
use crate::order::{Chain, Entries, WalkOrder};
use crate::replay::{ModelCheck, ReplayError};
use crate::runtime::{RunError, RunOptions, run};
use crate::trace::{RunDir, RunId, option_json};

pub mod demo;
pub mod fs;
pub mod smoke;

/// What a suite's setup hands to a run, on each process that runs it (the
/// coordinator and every node): how walks start, and the run's
/// [`Fixtures`] there (a temp dir, a server, a connection pool), which
/// actions reach through their context and which are dropped when the run
/// ends.
///
/// ```
/// use combtest::Fixtures;
/// use combtest::suites::Fixture;
///
/// struct Root(std::path::PathBuf);
/// let setup = || -> Result<Fixture<u32>, String> {
///     let dir = std::env::temp_dir();
///     Ok(Fixture::new(0).with(Root(dir)))
/// };
/// assert!(setup().unwrap().fixtures().get::<Root>().is_some());
/// ```
///
/// `K` is how walks start: [`Cloned`] ([`Fixture::new`]) or [`Built`]
/// ([`Fixture::factory`]), inferred from the setup's return value.
pub struct Fixture<S, K: StartKind<S> = Cloned> {
    start: K::Start,
    fixtures: Fixtures,
}

impl<S: Clone + Send + 'static> Fixture<S> {
    /// Every walk starts from a clone of `initial`; no fixtures yet.
    pub fn new(initial: S) -> Self {
        Fixture { start: initial, fixtures: Fixtures::new() }
    }
}

impl<S: Send + 'static> Fixture<S, Built> {
    /// Every walk starts from what `factory` builds for it from the
    /// fixtures and its id (see [`Built`]).
    pub fn factory(
        factory: impl Fn(&Fixtures, WalkId) -> Result<S, Halt> + Send + Sync + 'static,
    ) -> Self {
        let factory: std::sync::Arc<Factory<S>> = std::sync::Arc::new(factory);
        Fixture { start: factory, fixtures: Fixtures::new() }
    }
}

impl<S, K: StartKind<S>> Fixture<S, K> {
    /// Adds a fixture (see [`Fixtures::with`]).
    pub fn with<T: Send + Sync + 'static>(mut self, fixture: T) -> Self {
        self.fixtures.insert(fixture);
        self
    }

    /// The fixtures so far.
    pub fn fixtures(&self) -> &Fixtures {
        &self.fixtures
    }

    /// The walk state's origin and the fixtures, for a run.
    fn into_run(self) -> (K::Start, Fixtures) {
        (self.start, self.fixtures)
    }
}

/// How a suite's walk states cross the network and reach JSON: present for
/// serde states ([`suite`]), absent for states that stay on their node
/// ([`opaque_suite`]).
struct StateCodec<S> {
    json: fn(&S) -> serde_json::Result<serde_json::Value>,
    encode: fn(&S) -> postcard::Result<Vec<u8>>,
    decode: fn(&[u8]) -> postcard::Result<S>,
}

impl<S: Serialize + DeserializeOwned> StateCodec<S> {
    fn serde() -> Self {
        StateCodec {
            json: |state| serde_json::to_value(state),
            encode: |state| postcard::to_stdvec(state),
            decode: |bytes| postcard::from_bytes(bytes),
        }
    }
}

/// How the command line asks a suite to run.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SuiteOptions {
    /// Runner threads; `None` for the default.
    pub threads: Option<usize>,
    /// Trace the run into `DIR/<run-id>/` (see [`RunOptions::log_dir`]).
    pub log_dir: Option<PathBuf>,
    /// The run's id, when the caller picked it.
    pub run_id: Option<RunId>,
    /// Run on this cluster's nodes instead of in this process.
    pub cluster: Option<Cluster>,
    /// Cap on walks per batch (see [`RunOptions::max_batch`]).
    pub max_batch: Option<u64>,
    /// Keep every walk's final state (`run_with_states`).
    pub gather_states: bool,
    /// Run only these walks (a soak round's sample).
    pub sample: Option<WalkSample>,
    /// Fail a walk segment that runs longer (see [`RunOptions::walk_timeout`]).
    pub walk_timeout: Option<std::time::Duration>,
    /// Stop once this many walks have failed (see
    /// [`RunOptions::max_failures`]).
    pub max_failures: Option<u64>,
    /// A soak round: its trace lines go to the soak's file.
    #[doc(hidden)]
    pub round_trace: Option<RoundTrace>,
    /// Stops the run from outside (Ctrl-C, a soak's deadline).
    pub stop: Option<RunStop>,
    /// A soak round: counts as walks end, for status lines.
    #[doc(hidden)]
    pub progress: Option<Arc<crate::actors::collector::Progress>>,
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
    /// Final states were asked of a suite whose states are not serde
    /// ([`opaque_suite`]).
    #[error(
        "suite {suite} keeps its walk states where they run (they are not serde): they cannot be \
         gathered"
    )]
    Opaque {
        /// The suite.
        suite: String,
    },
    /// The run failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A cluster run could not start (or its cluster failed).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The walk cannot be replayed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

/// Which walk to replay.
#[derive(Debug, Clone, Copy)]
pub enum ReplayTarget<'a> {
    /// Walk `id` of the suite's current walk order.
    Id(u64),
    /// Walk `walk` as recorded in a run directory, checked against the
    /// current walk order.
    Recorded {
        /// The run directory.
        run: &'a RunDir,
        /// The walk.
        walk: u64,
    },
}

/// One action of a replay, announced before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayStep {
    /// Position in the walk order.
    pub position: usize,
    /// The action's type name.
    pub name: String,
    /// Plain or serial.
    pub kind: EntryKind,
    /// The option's index.
    pub option: u32,
    /// The option, as JSON.
    pub value: String,
    /// The option for people: its `Debug` text, as `run` and `show` print
    /// it (the JSON of the recorded value when the walk order changed
    /// since the run).
    pub label: String,
}

/// The result of a suite's replay.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SuiteReplay {
    /// How the walk ended.
    pub outcome: WalkOutcome,
    /// Its final state, pretty-printed with `Debug`.
    pub state: String,
    /// For a recorded walk: whether the walk order changed since the run.
    pub model: Option<ModelCheck>,
    /// For a recorded walk: the record.
    pub record: Option<TraceRecord>,
}

/// A walk order with a name, a description and a setup: what `combtest-node`
/// lists and runs. Build one with [`suite`]. (Its name, space and what a
/// cluster node needs of it come from [`NodeSuite`].)
pub trait Suite: NodeSuite {
    /// One line on what it tests.
    fn description(&self) -> &str;
    /// Sets up and runs every walk.
    fn run(&self, options: &SuiteOptions) -> Result<Report, SuiteError> {
        Ok(self.run_with_states(options)?.without_states())
    }
    /// Like [`Suite::run`]; with `gather_states`, the report also holds
    /// every walk's final state, as JSON.
    fn run_with_states(
        &self,
        options: &SuiteOptions,
    ) -> Result<Report<serde_json::Value>, SuiteError>;
    /// Sets up and replays one walk in this thread, calling `on_step`
    /// before each action.
    fn replay(
        &self,
        target: ReplayTarget<'_>,
        on_step: &mut dyn FnMut(&ReplayStep),
    ) -> Result<SuiteReplay, SuiteError>;
}

struct OrderSuite<S, C, F, K> {
    name: String,
    description: String,
    order: WalkOrder<S, C>,
    setup: F,
    states: Option<StateCodec<S>>,
    _start: std::marker::PhantomData<fn() -> K>,
}

/// The final state of a suite whose states are not serde: a walk's final
/// state is never gathered, so this is never called.
fn unsent<S>(_: &S) -> postcard::Result<Vec<u8>> {
    Err(postcard::Error::SerializeBufferFull)
}

impl<S, C, F, K> NodeSuite for OrderSuite<S, C, F, K>
where
    S: Send + std::fmt::Debug + 'static,
    C: Chain<S>,
    K: StartKind<S>,
    F: Fn() -> Result<Fixture<S, K>, String> + Send + Sync,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn space(&self) -> Result<&Space, OrderError> {
        self.order.space()
    }

    fn fingerprint(&self) -> Result<String, String> {
        let space = self.order.space().map_err(|e| e.to_string())?;
        crate::trace::order_fingerprint(&self.order, space).map_err(|e| e.to_string())
    }

    fn open_node_run(&self, spec: &NodeRunSpec) -> Result<Box<dyn NodeRun>, String> {
        if spec.gather && self.states.is_none() {
            return Err(format!(
                "suite {} keeps its walk states on the nodes: they cannot be gathered",
                self.name
            ));
        }
        let (start, fixtures) = (self.setup)()
            .map_err(|reason| format!("setup of suite {} failed: {reason}", self.name))?
            .into_run();
        let run = TypedNodeRun::of_order::<C, K>(
            &self.order,
            Origin::new::<K>(start, Arc::new(fixtures)),
            spec,
            self.states.as_ref().map_or(unsent::<S>, |codec| codec.encode),
        )?;
        Ok(Box::new(run))
    }
}

impl<S, C, F, K> Suite for OrderSuite<S, C, F, K>
where
    S: Send + std::fmt::Debug + 'static,
    C: Chain<S>,
    K: StartKind<S>,
    F: Fn() -> Result<Fixture<S, K>, String> + Send + Sync,
{
    fn description(&self) -> &str {
        &self.description
    }
    fn run_with_states(
        &self,
        options: &SuiteOptions,
    ) -> Result<Report<serde_json::Value>, SuiteError> {
        // Also in a cluster run: the coordinator's serial actions may rely
        // on what the setup prepares.
        if options.gather_states && self.states.is_none() {
            return Err(SuiteError::Opaque { suite: self.name.clone() });
        }
        let (start, fixtures) = (self.setup)()
            .map_err(|reason| SuiteError::Setup { suite: self.name.clone(), reason })?
            .into_run();
        let mut run_options = RunOptions::<S, K>::starting(start)
            .fixtures(fixtures)
            .gather_states(options.gather_states);
        if let Some(threads) = options.threads {
            run_options = run_options.threads(threads);
        }
        if let Some(dir) = &options.log_dir {
            run_options = run_options.log_dir(dir).name(&self.name);
        }
        if let Some(id) = options.run_id {
            run_options = run_options.run_id(id);
        }
        if let Some(walks) = options.max_batch {
            run_options = run_options.max_batch(walks);
        }
        if let Some(sample) = &options.sample {
            run_options = run_options.sample(sample.clone());
        }
        if let Some(timeout) = options.walk_timeout {
            run_options = run_options.walk_timeout(timeout);
        }
        if let Some(walks) = options.max_failures {
            run_options = run_options.max_failures(walks);
        }
        run_options = run_options.round_trace(options.round_trace.clone());
        if let Some(stop) = &options.stop {
            run_options = run_options.stop(stop.clone());
        }
        run_options = run_options.progress(options.progress.clone());
        if options.round_trace.is_some() {
            run_options = run_options.name(&self.name);
        }
        let report = match &options.cluster {
            None => run(&self.order, run_options)?,
            Some(cluster) => {
                let threads = cluster.node_threads().or(options.threads);
                let decode = self.states.as_ref().map(|codec| codec.decode);
                run_on_cluster(cluster, &self.order, run_options, &self.name, threads, decode)?
            }
        };
        let json = self.states.as_ref().map(|codec| codec.json);
        report.map_states(|id, state| {
            let json = json.expect("states are gathered only for serde suites");
            json(&state).map_err(|e| {
                SuiteError::Run(RunError::Internal(format!(
                    "the final state of walk {} does not serialize to JSON: {e}",
                    id.0
                )))
            })
        })
    }

    fn replay(
        &self,
        target: ReplayTarget<'_>,
        on_step: &mut dyn FnMut(&ReplayStep),
    ) -> Result<SuiteReplay, SuiteError> {
        let space = self.order.space().map_err(RunError::from)?;
        let (start, fixtures) = (self.setup)()
            .map_err(|reason| SuiteError::Setup { suite: self.name.clone(), reason })?
            .into_run();
        let walk_id = match target {
            ReplayTarget::Id(id) => id,
            ReplayTarget::Recorded { walk, .. } => walk,
        };
        let initial = match K::make(&start, &fixtures, walk_id) {
            Ok(state) => state,
            Err(halt) => return Ok(unstarted_replay(halt)),
        };
        let result = match target {
            ReplayTarget::Id(id) => {
                let walk = self.order.walk(id).map_err(ReplayError::from)?;
                let values = option_json(&self.order, space).map_err(ReplayError::from)?;
                let steps: Vec<ReplayStep> = walk
                    .steps
                    .iter()
                    .map(|s| ReplayStep {
                        position: s.position,
                        name: s.name.to_string(),
                        kind: s.kind,
                        option: s.option,
                        value: values[s.position][s.option as usize].get().to_string(),
                        label: s.label.clone(),
                    })
                    .collect();
                let replay = self
                    .order
                    .replay_in(id, initial, &fixtures, |p| on_step(&steps[p]))
                    .map_err(ReplayError::from)?;
                let state = format!("{:#?}", replay.state);
                SuiteReplay { outcome: replay.outcome, state, model: None, record: None }
            }
            ReplayTarget::Recorded { run, walk } => {
                let record = run.find(walk).map_err(ReplayError::from)?;
                let kinds = &run.meta().walk_order;
                let same_order = self.fingerprint().is_ok_and(|f| f == run.meta().fingerprint);
                let steps: Vec<ReplayStep> = record
                    .actions
                    .iter()
                    .enumerate()
                    .map(|(position, a)| ReplayStep {
                        position,
                        name: a.type_name.clone(),
                        kind: kinds.get(position).map_or(EntryKind::Plain, |e| e.kind),
                        option: a.option,
                        value: a.value.to_string(),
                        label: match same_order {
                            true => space.entries()[position].options[a.option as usize].clone(),
                            false => a.value.to_string(),
                        },
                    })
                    .collect();
                let replayed =
                    self.order.replay_record_in(run, record, initial, &fixtures, |p| {
                        on_step(&steps[p])
                    })?;
                let state = format!("{:#?}", replayed.replay.state);
                SuiteReplay {
                    outcome: replayed.replay.outcome,
                    state,
                    model: Some(replayed.model),
                    record: Some(replayed.record),
                }
            }
        };
        Ok(result)
    }
}

/// The replay of a walk whose starting state could not be made: it ends
/// there, as in a run.
fn unstarted_replay(halt: Halt) -> SuiteReplay {
    // A walk's first segment starts at its first entry.
    let position = 0;
    let outcome = match halt {
        Halt::Cancel => WalkOutcome::Cancelled { action_index: position },
        Halt::Fail(error) => WalkOutcome::Failed {
            action_index: position,
            action: crate::exec::WALK_STATE_ACTION,
            error: format!("its starting state failed: {error}"),
        },
    };
    SuiteReplay {
        outcome,
        state: "(none: its starting state failed)".to_string(),
        model: None,
        record: None,
    }
}

/// Makes a [`Suite`] from a walk order and a setup function, which runs
/// once per run on every process that takes part (the coordinator, for its
/// serial actions, and each node) and gives how walks start and the run's
/// fixtures there.
///
/// The walk state is serde because a cluster run can move it: nodes send
/// the final states back when they are gathered (`--gather-states`). For a
/// state that cannot be serde (it holds a database handle, a file, a
/// socket), use [`opaque_suite`].
pub fn suite<S, C, F, K>(
    name: impl Into<String>,
    description: impl Into<String>,
    order: WalkOrder<S, C>,
    setup: F,
) -> Box<dyn Suite>
where
    S: Send + std::fmt::Debug + Serialize + DeserializeOwned + 'static,
    C: Entries<S>,
    K: StartKind<S>,
    F: Fn() -> Result<Fixture<S, K>, String> + Send + Sync + 'static,
{
    order_suite(name.into(), description.into(), order, setup, Some(StateCodec::serde()))
}

/// [`suite`] for a walk state that is not serde: it holds a database
/// handle, a file or a socket, so it never leaves the node (or process)
/// that runs its walk. Everything else works as for [`suite`], on nodes
/// too (only options and serial values cross the network); gathering
/// final states is refused with an error.
pub fn opaque_suite<S, C, F, K>(
    name: impl Into<String>,
    description: impl Into<String>,
    order: WalkOrder<S, C>,
    setup: F,
) -> Box<dyn Suite>
where
    S: Send + std::fmt::Debug + 'static,
    C: Entries<S>,
    K: StartKind<S>,
    F: Fn() -> Result<Fixture<S, K>, String> + Send + Sync + 'static,
{
    order_suite(name.into(), description.into(), order, setup, None)
}

/// A suite of either kind: with a codec for its states, or without.
fn order_suite<S, C, F, K>(
    name: String,
    description: String,
    order: WalkOrder<S, C>,
    setup: F,
    states: Option<StateCodec<S>>,
) -> Box<dyn Suite>
where
    S: Send + std::fmt::Debug + 'static,
    C: Entries<S>,
    K: StartKind<S>,
    F: Fn() -> Result<Fixture<S, K>, String> + Send + Sync + 'static,
{
    Box::new(OrderSuite { name, description, order, setup, states, _start: PhantomData })
}

/// The built-in suites: `demo`, `fs` and `smoke`.
pub fn builtin() -> Vec<Box<dyn Suite>> {
    vec![demo::suite(), fs::suite(), smoke::suite()]
}
