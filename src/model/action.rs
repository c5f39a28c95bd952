//! What a user implements: [`Action`], [`AsyncAction`] and [`SerialAction`],
//! the contexts they run in ([`WalkContext`], [`SerialContext`]), and what
//! their run functions return ([`ActionResult`], [`Halt`], from `halt`).

use std::fmt;
use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub(crate) use super::halt::short_type_name;
pub use super::halt::{ActionResult, Halt, cancel, fail};

use super::fixtures::Fixtures;
use super::space::WalkId;
use super::walk::WalkView;

/// Where an action runs: its walk, its own position in the walk order, and
/// the run's [`Fixtures`] on this process or node. Handed to
/// [`Action::run_in`] and [`SerialAction::apply_in`].
#[derive(Debug, Clone, Copy)]
pub struct WalkContext<'a> {
    id: WalkId,
    position: usize,
    fixtures: &'a Fixtures,
}

impl<'a> WalkContext<'a> {
    #[inline(always)]
    pub(crate) fn new(id: u64, position: usize, fixtures: &'a Fixtures) -> Self {
        WalkContext { id: WalkId(id), position, fixtures }
    }

    /// The same walk, at another entry.
    #[inline(always)]
    pub(crate) fn at(self, position: usize) -> Self {
        WalkContext { position, ..self }
    }

    /// The walk's id: name per-walk resources after it, log it, plant a
    /// fault in one walk.
    pub fn id(&self) -> WalkId {
        self.id
    }

    /// This action's position in the walk order (0 is the first entry):
    /// tells apart two entries of one action type.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The run's fixtures on this process or node.
    pub fn fixtures(&self) -> &'a Fixtures {
        self.fixtures
    }

    /// The fixture of type `T`, or a failure naming it: `cx.fixture::<Db>()?`.
    pub fn fixture<T: 'static>(&self) -> Result<&'a T, Halt> {
        self.fixtures.require()
    }
}

/// Where a serial action's step runs: its position and option, the run's
/// [`Fixtures`] there, and the node's name (`None` on the coordinator and
/// in-process). Handed to [`SerialAction::run_in`] (on the coordinator, or
/// the process of an in-process run) and [`SerialAction::apply_on_node`]
/// (on each node holding walks of the branch; in-process, once).
#[derive(Debug, Clone, Copy)]
pub struct SerialContext<'a> {
    position: usize,
    branch: &'a [u32],
    fixtures: &'a Fixtures,
    node: Option<&'a str>,
}

impl<'a> SerialContext<'a> {
    pub(crate) fn new(
        position: usize,
        branch: &'a [u32],
        fixtures: &'a Fixtures,
        node: Option<&'a str>,
    ) -> Self {
        SerialContext { position, branch, fixtures, node }
    }

    /// The serial action's position in the walk order.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The branch this step belongs to: the options of the serial actions
    /// up to and including this one, in order.
    pub fn branch(&self) -> &'a [u32] {
        self.branch
    }

    /// The run's fixtures where this step runs.
    pub fn fixtures(&self) -> &'a Fixtures {
        self.fixtures
    }

    /// The fixture of type `T`, or a failure naming it.
    pub fn fixture<T: 'static>(&self) -> Result<&'a T, Halt> {
        self.fixtures.require()
    }

    /// The node this per-node step runs on (`None` for `run_in`, and for
    /// `apply_on_node` in an in-process run).
    pub fn node(&self) -> Option<&'a str> {
        self.node
    }
}

/// The failure of an action that implements neither of its run functions.
fn neither_run<T: ?Sized>(run: &str, run_in: &str) -> Halt {
    Halt::Fail(format!(
        "{} implements neither {run} nor {run_in}: implement one of them",
        short_type_name::<T>()
    ))
}

/// An operation on the system under test, with a finite list of options.
///
/// A value of the implementing type *is* one option. [`Action::options`] must
/// return the same list, in the same order, every time it is called: walk ids
/// index into it.
///
/// `S` is the per-walk state: every walk starts from its own clone of the
/// initial state (or from a state a factory builds for it: see
/// [`Built`](crate::Built)) and hands it from action to action.
///
/// Implement [`Action::run`] for an action that needs only the state, or
/// [`Action::run_in`] for one that needs its walk's id, its position or the
/// run's [`Fixtures`] (a server to call, a temp dir). Both have defaults
/// (`run_in` calls `run`; `run` fails the walk saying neither is
/// implemented), so implement exactly one.
///
/// ```
/// use combtest::{Action, ActionResult};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// enum SetCheckbox { On, Off }
///
/// impl Action<bool> for SetCheckbox {
///     fn options() -> Vec<Self> { vec![SetCheckbox::On, SetCheckbox::Off] }
///     fn run(&self, checked: &mut bool) -> ActionResult {
///         *checked = matches!(self, SetCheckbox::On);
///         Ok(())
///     }
/// }
/// ```
///
/// With the walk's context:
///
/// ```
/// use combtest::{Action, ActionResult, WalkContext};
/// use serde::{Deserialize, Serialize};
///
/// /// The directory walks write into, shared by the run.
/// struct Scratch(std::path::PathBuf);
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// struct Touch;
///
/// impl Action<Vec<String>> for Touch {
///     fn options() -> Vec<Self> { vec![Touch] }
///     fn run_in(&self, log: &mut Vec<String>, cx: &WalkContext<'_>) -> ActionResult {
///         let dir = cx.fixture::<Scratch>()?;
///         log.push(format!("{}/walk-{}-at-{}", dir.0.display(), cx.id(), cx.position()));
///         Ok(())
///     }
/// }
/// ```
pub trait Action<S>:
    fmt::Debug + Clone + Send + Sync + Serialize + DeserializeOwned + 'static
{
    /// Every option of this action, in a fixed order.
    fn options() -> Vec<Self>;

    /// Performs this option on the walk's state. A panic counts as a failure
    /// of the walk (and only of this walk).
    fn run(&self, state: &mut S) -> ActionResult {
        let _ = state;
        Err(neither_run::<Self>("Action::run", "Action::run_in"))
    }

    /// Performs this option on the walk's state, knowing where: the walk's
    /// id, this entry's position, the run's fixtures. The default calls
    /// [`Action::run`]; a walk order whose actions do not override it pays
    /// nothing for the context.
    #[inline(always)]
    fn run_in(&self, state: &mut S, cx: &WalkContext<'_>) -> ActionResult {
        let _ = cx;
        self.run(state)
    }

    /// Decides, from the walk's chosen options alone and before anything
    /// runs, that this combination makes no sense. A pruned walk never runs
    /// and is counted as pruned. The default prunes nothing.
    /// [`WalkView::position`] is this entry's position, [`WalkView::id`]
    /// the walk's.
    ///
    /// **`prune` must be pure**: its answer may depend only on this option
    /// (`self`) and the options it reads through `walk`. combtest notes
    /// which it read and gives the same answer, without asking again, to
    /// every walk that agrees on them: a rule that rejects `A=3` when it has
    /// read only its own option and `A` rejects that whole subtree at once.
    /// So read the options that decide first and return early: a rule
    /// that reads only slow-changing entries (serial ones, and plain ones
    /// early in the walk order) skips the most.
    /// Reading [`WalkView::id`] (or printing the view) counts as reading
    /// every option: the rule is then asked for every walk.
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        walk.decline();
        false
    }
}

/// An [`Action`] whose run is asynchronous: it awaits I/O (a network
/// client, a server's answer, a timer) instead of blocking a thread.
///
/// A walk order with an async action (added with
/// [`WalkOrder::then_async`](crate::WalkOrder::then_async)) runs each
/// batch of walks as futures on a current-thread tokio runtime of the
/// runner's own (never the actors' runtime): one runner thread keeps up to
/// [`RunOptions::in_flight`](crate::RunOptions::in_flight) walks in flight
/// at once, each walk's actions still in order. Plain actions of the same
/// walk order run inline between the awaits; serial actions and their
/// barrier are unchanged. The future must be `Send`; tokio's I/O and
/// timers work inside it. A replay runs the walk alone, blocking on the
/// same kind of runtime.
///
/// ```
/// use combtest::{ActionResult, AsyncAction, WalkContext};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// struct Ping(u64);
///
/// impl AsyncAction<Vec<u64>> for Ping {
///     fn options() -> Vec<Self> { vec![Ping(1), Ping(2)] }
///     async fn run(&self, seen: &mut Vec<u64>, cx: WalkContext<'_>) -> ActionResult {
///         tokio::time::sleep(std::time::Duration::from_millis(self.0)).await;
///         seen.push(cx.id().0);
///         Ok(())
///     }
/// }
/// ```
pub trait AsyncAction<S>:
    fmt::Debug + Clone + Send + Sync + Serialize + DeserializeOwned + 'static
{
    /// Every option of this action, in a fixed order.
    fn options() -> Vec<Self>;

    /// Performs this option on the walk's state. A panic counts as a
    /// failure of the walk (and only of this walk).
    fn run<'a>(
        &'a self,
        state: &'a mut S,
        cx: WalkContext<'a>,
    ) -> impl Future<Output = ActionResult> + Send + 'a;

    /// Prunes walks, as [`Action::prune`] does.
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        walk.decline();
        false
    }
}

/// A global step, such as a configuration change or a node restart, run
/// exactly once per branch while no walk runs anywhere.
///
/// Per epoch, in this order, while no walk of any branch runs:
/// 1. [`SerialAction::run_in`] (by default [`SerialAction::run`]) runs
///    once, on the coordinator (in-process: in the run's process), with
///    the fixtures there;
/// 2. [`SerialAction::apply_on_node`] runs once on every node that holds
///    walks of the branch, with that node's fixtures, before any of those
///    walks goes on (in-process: once, right after `run_in`): the way to
///    compact or restart what each node runs locally;
/// 3. [`SerialAction::apply_in`] (by default [`SerialAction::apply`])
///    hands the value to every live walk of the branch, before that walk's
///    next plain action.
pub trait SerialAction<S>:
    fmt::Debug + Clone + Send + Sync + Serialize + DeserializeOwned + 'static
{
    /// What one run hands to the walks of its branch; `()` when nothing.
    /// In a cluster run it travels from the coordinator, where the serial
    /// action runs, to every node holding walks of the branch, hence serde.
    type Value: Send + Sync + Serialize + DeserializeOwned + 'static;

    /// Every option of this serial action, in a fixed order.
    fn options() -> Vec<Self>;

    /// Performs the global step, once. An error (or a panic) fails every live
    /// walk of the branch and skips the branch's later epochs. A serial
    /// action passes or fails: `Err(Halt::Cancel)` fails the branch too, with
    /// the error "serial action cancelled its branch". The default fails,
    /// saying that neither this nor [`SerialAction::run_in`] is implemented.
    fn run(&self) -> Result<Self::Value, Halt> {
        Err(neither_run::<Self>("SerialAction::run", "SerialAction::run_in"))
    }

    /// [`SerialAction::run`] with the fixtures of the process it runs in
    /// (the coordinator's, in a cluster run). The default calls `run`.
    fn run_in(&self, cx: &SerialContext<'_>) -> Result<Self::Value, Halt> {
        let _ = cx;
        self.run()
    }

    /// Applies this epoch's value once on a node that holds walks of the
    /// branch, to its fixtures, before any of them goes on (a node that
    /// joins later, or reruns a walk of the branch, applies every step of
    /// the branch it has not applied yet, in order, first). An error fails
    /// the walks of the branch on that node, with this error; other nodes
    /// go on. In-process it runs once, right after `run_in`. The default
    /// does nothing.
    fn apply_on_node(&self, value: &Self::Value, cx: &SerialContext<'_>) -> ActionResult {
        let _ = (value, cx);
        Ok(())
    }

    /// Applies the value of this epoch's run to one walk's state. The default
    /// does nothing. An error fails that walk.
    fn apply(&self, value: &Self::Value, state: &mut S) -> ActionResult {
        let _ = (value, state);
        Ok(())
    }

    /// [`SerialAction::apply`] with the walk's context. The default calls
    /// `apply`.
    #[inline(always)]
    fn apply_in(&self, value: &Self::Value, state: &mut S, cx: &WalkContext<'_>) -> ActionResult {
        let _ = cx;
        self.apply(value, state)
    }

    /// Prunes walks, as [`Action::prune`] does.
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        walk.decline();
        false
    }
}
