//! The typed walk order: `WalkOrder::new().then::<A>().serial::<S>()...`.
//!
//! Each `then`/`serial` call wraps the previous chain in a [`Cons`] cell, so
//! the chain's type lists every action type. The batch runner in `exec` is
//! generic over that type: the compiler monomorphizes it and inlines each
//! action's `run`, and dynamic dispatch happens once per batch, at the
//! `ErasedOrder` boundary, never per action.

use std::any::{Any, TypeId};
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::model::action::{
    Action, ActionResult, AsyncAction, Halt, SerialAction, SerialContext, WalkContext,
    short_type_name,
};
use crate::model::epoch::{EpochCursor, SerialStep};
use crate::model::space::{EntryInfo, EntryKind, IdOutOfRange, OrderError, Space, WalkId};
use crate::model::walk::{OptionLookup, Walk, WalkView};

/// A boxed future of a walk's step (async walk orders).
pub(crate) type StepFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The process's runtime for async actions: every runner thread drives
/// its batches' futures on it (`block_on` from the runner thread), and its
/// one worker thread drives I/O and timers. One runtime for all runners,
/// because a walk's state may hold a socket or a timer registered while
/// one runner ran its first segment and be taken up by another runner for
/// its next segment, after a serial action: with a runtime per runner
/// thread, that socket's events were only seen while its first runner
/// happened to run a batch (walks hung). Never the actors' runtime.
static ASYNC_RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();

/// The runtime for async actions (made on first use).
pub(crate) fn async_runtime() -> &'static tokio::runtime::Runtime {
    ASYNC_RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("combtest-async-io")
            .enable_all()
            .build()
            .expect("a runtime for async actions")
    })
}

/// Runs a future to its end on the calling thread, with the async
/// actions' runtime driving its I/O and timers: a batch of async walks on
/// a runner thread, or an async action in a replay.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    async_runtime().block_on(future)
}

/// The value one run of a serial action hands to the walks of its branch,
/// type-erased at the batch boundary. Only the chain cell that produced it
/// downcasts it.
#[derive(Clone)]
#[doc(hidden)]
pub struct SerialValue {
    /// Owns the value (it is read through `data`).
    _value: Arc<dyn Any + Send + Sync>,
    /// The value's type, read once at creation: checking it per walk is a
    /// compare with a constant, where `downcast_ref` makes a virtual call.
    type_id: TypeId,
    /// Where the value is, read once at creation: reaching it per walk is
    /// one load, where `Arc::as_ptr` on a `dyn` reads the vtable.
    data: *const (),
}

// SAFETY: `data` points into the allocation of `_value`, which the struct
// owns and which is `Send + Sync`; `data` is only read through `get`, as a
// shared reference that lives no longer than `self`.
unsafe impl Send for SerialValue {}
// SAFETY: as for `Send`.
unsafe impl Sync for SerialValue {}

impl SerialValue {
    fn new<T: Any + Send + Sync>(value: T) -> Self {
        let value: Arc<dyn Any + Send + Sync> = Arc::new(value);
        let data = Arc::as_ptr(&value) as *const ();
        SerialValue { _value: value, type_id: TypeId::of::<T>(), data }
    }

    /// The value, if it is a `T`.
    #[inline(always)]
    fn get<T: Any>(&self) -> Option<&T> {
        if self.type_id == TypeId::of::<T>() {
            // SAFETY: `type_id` is the TypeId of the value behind the Arc
            // and `data` its address (both set in `new`, never changed; a
            // clone shares the same allocation), so it is a `T`; the
            // reference lives as long as `self`, which keeps the Arc alive.
            Some(unsafe { &*(self.data as *const T) })
        } else {
            None
        }
    }
}

impl std::fmt::Debug for SerialValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SerialValue(..)")
    }
}

/// The error of a serial action whose `run` cancelled: a serial action
/// passes or fails its branch, so a cancel fails it, in runs and replays
/// alike.
pub(crate) const SERIAL_CANCELLED: &str = "serial action cancelled its branch";

/// How a serial action's `run` halting ends its branch: always as a failure.
pub(crate) fn serial_run_halt(halt: Halt) -> Halt {
    match halt {
        Halt::Cancel => Halt::Fail(SERIAL_CANCELLED.to_string()),
        fail => fail,
    }
}

mod sealed {
    pub trait Sealed {}
}

/// The typed list of a walk order's entries. Implemented by [`Nil`] and
/// [`Cons`] only; users build it through [`WalkOrder::then`] and
/// [`WalkOrder::serial`], and name it [`Entries`] (this trait, the batch
/// loop's machinery, is not exported: public signatures bound on
/// `Entries`).
#[doc(hidden)]
pub trait Chain<S>: sealed::Sealed + Clone + Send + Sync + 'static {
    /// Number of entries.
    const LEN: usize;
    /// Number of serial entries.
    const SERIALS: usize;
    /// Position of the last plain entry (`usize::MAX` if there is none).
    const LAST_PLAIN: usize;
    /// Position of the least significant digit of a walk id (the last plain
    /// entry, or the last entry if all are serial): the space's
    /// `least_significant`, known at compile time.
    const FAST: usize =
        if Self::LAST_PLAIN == usize::MAX { Self::LEN.saturating_sub(1) } else { Self::LAST_PLAIN };
    /// Position of the plain entry before the last plain one
    /// (`usize::MAX` if there are fewer than two): with two plain entries
    /// or more, the space's second least significant digit.
    const SECOND_PLAIN: usize;
    /// Whether any entry is an async action: batches then run as futures.
    const ASYNC: bool;
    /// The level of every walk's first segment (where walks start fresh):
    /// 1 if the first entry is a serial action, else 0. The space's
    /// `first_level`, known at compile time.
    const FIRST_LEVEL: usize;
    /// Appends the description of every entry, in walk order.
    fn describe(&self, out: &mut Vec<EntryInfo>);
    /// The option at (`position`, `option`) as `Any`.
    fn option_any(&self, position: usize, option: u32) -> &dyn Any;
    /// The type of the entry at `position`.
    fn entry_type(&self, position: usize) -> TypeId;
    /// Whether any entry prunes this walk.
    fn prune(&self, walk: &WalkView<'_>) -> bool;
    /// Runs the plain entries at `positions`, in order; on a halt, returns the
    /// position that halted.
    fn run_plain(
        &self,
        digits: &[u32],
        positions: &Range<usize>,
        state: &mut S,
        walk: WalkContext<'_>,
    ) -> Result<(), (usize, Halt)>;
    /// [`run_plain`](Self::run_plain) as a future: async entries are
    /// awaited, the others run inline.
    fn run_plain_async<'a>(
        &'a self,
        digits: &'a [u32],
        positions: &'a Range<usize>,
        state: &'a mut S,
        walk: WalkContext<'a>,
    ) -> StepFuture<'a, Result<(), (usize, Halt)>>
    where
        S: Send;
    /// The option of every entry for one walk, as references. The walks
    /// that differ only in the two least significant digits share all of
    /// them but two, so the batch loop makes a cursor once per run of those
    /// digits and moves (`seek`) the fast entry per walk and the second one
    /// when the fast digit wraps, instead of looking up each entry's option
    /// index and option per walk.
    type Cursor<'a>: Copy
    where
        Self: 'a;
    /// The cursor of the walk whose option indices are `digits`.
    fn cursor<'a>(&'a self, digits: &[u32]) -> Self::Cursor<'a>;
    /// Points the cursor's entry at `position` to its option `option`.
    fn seek<'a>(&'a self, cursor: &mut Self::Cursor<'a>, position: usize, option: u32);
    /// Runs segment level `LEVEL` of the walk `cursor` points at: applies
    /// `value` through the serial entry that opens it (if any), then runs
    /// the plain entries with `LEVEL` serial entries before them, in order.
    /// The level is a constant, so the entries of other segments compile to
    /// nothing and the serial entry is found at compile time.
    fn run_level<const LEVEL: usize>(
        cursor: &Self::Cursor<'_>,
        value: Option<&SerialValue>,
        state: &mut S,
        walk: WalkContext<'_>,
    ) -> Result<(), (usize, Halt)>;
    /// Runs the serial entry of `step` once (`run_in`).
    fn run_serial(&self, step: SerialStep, cx: &SerialContext<'_>) -> Result<SerialValue, Halt>;
    /// Applies a serial value once on a node (`apply_on_node`).
    fn node_step(
        &self,
        step: SerialStep,
        value: &SerialValue,
        cx: &SerialContext<'_>,
    ) -> ActionResult;
    /// Applies a serial value to one walk state.
    fn apply_serial(
        &self,
        step: SerialStep,
        value: &SerialValue,
        state: &mut S,
        walk: WalkContext<'_>,
    ) -> ActionResult;
    /// Encodes the value of the serial entry at `position` (postcard), to
    /// send it to the nodes of a cluster run.
    fn encode_value(&self, position: usize, value: &SerialValue) -> postcard::Result<Vec<u8>>;
    /// Decodes a value of the serial entry at `position`, on a node.
    fn decode_value(&self, position: usize, bytes: &[u8]) -> postcard::Result<SerialValue>;
    /// The serde JSON of the option at (`position`, `option`). For traces:
    /// called once per option per run, never per walk.
    fn option_json(&self, position: usize, option: u32) -> serde_json::Result<Box<RawValue>>;
    /// Deserializes a recorded option of the entry at `position`.
    fn decode(&self, position: usize, value: &serde_json::Value) -> serde_json::Result<Decoded>;
    /// Whether any entry prunes a walk of decoded options (one per entry).
    fn prune_decoded(&self, options: &[Decoded], walk: &WalkView<'_>) -> bool;
    /// Runs a decoded option of the entry at `position`; a serial option
    /// runs, applies its value on the node, and to `state`.
    fn run_decoded(
        &self,
        position: usize,
        option: &Decoded,
        state: &mut S,
        walk: WalkContext<'_>,
    ) -> ActionResult;
}

/// The entries of a walk order, as a type: what [`WalkOrder::then`] and
/// [`WalkOrder::serial`] build, one type per walk order. Name it as
/// `impl Entries<S>` to return a walk order from a function:
///
/// ```
/// use combtest::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// struct Add(u32);
/// impl Action<u32> for Add {
///     fn options() -> Vec<Self> { (1..=3).map(Add).collect() }
///     fn run(&self, sum: &mut u32) -> ActionResult { *sum += self.0; Ok(()) }
/// }
///
/// fn order() -> WalkOrder<u32, impl Entries<u32>> {
///     WalkOrder::new().then::<Add>().then::<Add>()
/// }
///
/// assert_eq!(order().size().unwrap(), 9);
/// ```
///
/// Sealed: implemented for every walk order's entries and only for them
/// (its methods are the library's own, not exported). Everything that
/// takes a walk order ([`run`](crate::run), [`check`](crate::check),
/// [`replay`](WalkOrder::replay), [`suites::suite`](crate::suites::suite))
/// is generic over it, and so is code of yours that keeps or passes one:
///
/// ```
/// # use combtest::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # struct Add(u32);
/// # impl Action<u32> for Add {
/// #     fn options() -> Vec<Self> { (1..=3).map(Add).collect() }
/// #     fn run(&self, sum: &mut u32) -> ActionResult { *sum += self.0; Ok(()) }
/// # }
/// # fn order() -> WalkOrder<u32, impl Entries<u32>> {
/// #     WalkOrder::new().then::<Add>().then::<Add>()
/// # }
/// struct Fixture<C: Entries<u32>> {
///     order: WalkOrder<u32, C>,
///     start: u32,
/// }
///
/// fn sums<C: Entries<u32>>(f: &Fixture<C>) -> Report<u32> {
///     check(&f.order, f.start)
/// }
///
/// let report = sums(&Fixture { order: order(), start: 0 });
/// assert_eq!(report.counts.passed, 9);
/// ```
///
/// There is no type-erased walk order: the entries' type lists every
/// action type so that the batch loop is compiled for each walk order and
/// calls actions without dynamic dispatch. To keep walk orders of
/// different shapes together (a table of them, a `Vec`), make each a
/// suite: [`suites::suite`](crate::suites::suite) returns a
/// `Box<dyn Suite>`.
pub trait Entries<S>: Chain<S> {}

impl<S, C: Chain<S>> Entries<S> for C {}

/// A recorded option, deserialized into its entry's type (for replaying a
/// trace after the walk order changed).
#[doc(hidden)]
pub type Decoded = Box<dyn Any + Send + Sync>;

/// The empty chain.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Nil;

/// A chain cell: `head` sits at position `T::LEN`, after the entries of `tail`.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Cons<H, T> {
    head: H,
    tail: T,
}

/// A plain action entry and its options.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Plain<A> {
    options: Vec<A>,
}

/// A serial action entry and its options.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Serial<X> {
    options: Vec<X>,
}

/// An async action entry and its options.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct AsyncPlain<A> {
    options: Vec<A>,
}

/// One entry's operations, implemented by [`Plain`], [`AsyncPlain`] and
/// [`Serial`].
#[doc(hidden)]
pub trait Link<S>: Clone + Send + Sync + 'static {
    const KIND: EntryKind;
    /// Whether the entry is an async action.
    const ASYNC: bool = false;
    /// The entry's option type (the action type).
    type Opt: std::fmt::Debug + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// Every option, in order.
    fn options(&self) -> &[Self::Opt];
    /// The option at index `option`, which comes from this entry's space.
    fn opt(&self, option: u32) -> &Self::Opt;
    /// Runs an option of a plain entry.
    fn run_opt(option: &Self::Opt, state: &mut S, walk: &WalkContext<'_>) -> ActionResult;
    /// Applies a serial value through an option of a serial entry.
    fn apply_opt(
        option: &Self::Opt,
        value: &SerialValue,
        state: &mut S,
        walk: &WalkContext<'_>,
    ) -> ActionResult;
    fn describe(&self) -> EntryInfo {
        EntryInfo {
            name: short_type_name::<Self::Opt>(),
            kind: Self::KIND,
            options: labels(self.options()),
        }
    }
    fn option_any(&self, option: u32) -> &dyn Any {
        &self.options()[option as usize]
    }
    fn entry_type(&self) -> TypeId {
        TypeId::of::<Self::Opt>()
    }
    fn prune(&self, option: u32, walk: &WalkView<'_>) -> bool;
    fn run(&self, option: u32, state: &mut S, walk: &WalkContext<'_>) -> ActionResult;
    /// Runs an option of a plain entry as a future.
    fn run_async<'a>(
        &'a self,
        option: u32,
        state: &'a mut S,
        walk: WalkContext<'a>,
    ) -> StepFuture<'a, ActionResult>
    where
        S: Send,
    {
        Box::pin(std::future::ready(self.run(option, state, &walk)))
    }
    // The serial operations: plain entries keep these defaults (the
    // planner only schedules serial entries as serial steps).
    fn run_serial(&self, option: u32, cx: &SerialContext<'_>) -> Result<SerialValue, Halt> {
        let _ = (option, cx);
        unreachable!("the planner only schedules serial entries as serial steps")
    }
    fn node_step(&self, option: u32, value: &SerialValue, cx: &SerialContext<'_>) -> ActionResult {
        let _ = (option, value, cx);
        unreachable!("the planner only schedules serial entries as serial steps")
    }
    fn apply_serial(
        &self,
        option: u32,
        value: &SerialValue,
        state: &mut S,
        walk: &WalkContext<'_>,
    ) -> ActionResult {
        let _ = (option, value, state, walk);
        unreachable!("the planner only schedules serial entries as serial steps")
    }
    fn encode_value(&self, value: &SerialValue) -> postcard::Result<Vec<u8>> {
        let _ = value;
        Err(postcard::Error::SerializeBufferFull) // Unreachable: not a serial entry.
    }
    fn decode_value(&self, bytes: &[u8]) -> postcard::Result<SerialValue> {
        let _ = bytes;
        Err(postcard::Error::DeserializeBadEncoding) // A node was sent a bad position.
    }
    fn option_json(&self, option: u32) -> serde_json::Result<Box<RawValue>> {
        serde_json::value::to_raw_value(&self.options()[option as usize])
    }
    fn decode(&self, value: &serde_json::Value) -> serde_json::Result<Decoded> {
        Ok(Box::new(<Self::Opt as serde::Deserialize>::deserialize(value)?))
    }
    fn prune_decoded(&self, option: &Decoded, walk: &WalkView<'_>) -> bool;
    fn run_decoded(&self, option: &Decoded, state: &mut S, walk: &WalkContext<'_>) -> ActionResult;
}

fn labels<T: std::fmt::Debug>(options: &[T]) -> Vec<String> {
    options.iter().map(|o| format!("{o:?}")).collect()
}

impl<S: 'static, A: Action<S>> Link<S> for Plain<A> {
    const KIND: EntryKind = EntryKind::Plain;
    type Opt = A;

    fn options(&self) -> &[A] {
        &self.options
    }

    #[inline(always)]
    fn opt(&self, option: u32) -> &A {
        debug_assert!((option as usize) < self.options.len(), "option index out of range");
        // SAFETY: option indices reach a chain only from its walk order's
        // own `Space` (a decoded walk id, the odometer, an offset within the
        // current run of the fast digit, bounded by its option count in
        // `run_units`, or the second digit stepped in place there, guarded
        // by `digits[second] + 1 < second_radix`), whose count for this
        // entry is `options.len()` (the space is built from `describe`). No
        // code outside this crate can reach a chain: its cells have private
        // fields and `WalkOrder` does not expose them. Skipping the check
        // matters in the per-walk loop, where the fast entry's option is
        // looked up for every walk: it is a compare, a branch and, under
        // register pressure, a reload.
        unsafe { self.options.get_unchecked(option as usize) }
    }
    #[inline(always)]
    fn run_opt(option: &A, state: &mut S, walk: &WalkContext<'_>) -> ActionResult {
        option.run_in(state, walk)
    }
    fn apply_opt(_: &A, _: &SerialValue, _: &mut S, _: &WalkContext<'_>) -> ActionResult {
        unreachable!("the planner only schedules serial entries as serial steps")
    }

    #[inline(always)]
    fn prune(&self, option: u32, walk: &WalkView<'_>) -> bool {
        // `opt`, unchecked: with no bounds check left, an action that does
        // not prune makes this call one store (its default `prune` marks
        // the entry as declining), which the next entry's ask overwrites.
        self.opt(option).prune(walk)
    }
    #[inline(always)]
    fn run(&self, option: u32, state: &mut S, walk: &WalkContext<'_>) -> ActionResult {
        self.opt(option).run_in(state, walk)
    }
    fn prune_decoded(&self, option: &Decoded, walk: &WalkView<'_>) -> bool {
        decoded::<A>(option).prune(walk)
    }
    fn run_decoded(&self, option: &Decoded, state: &mut S, walk: &WalkContext<'_>) -> ActionResult {
        decoded::<A>(option).run_in(state, walk)
    }
}

impl<S: 'static, X: SerialAction<S>> Link<S> for Serial<X> {
    const KIND: EntryKind = EntryKind::Serial;
    type Opt = X;

    fn options(&self) -> &[X] {
        &self.options
    }

    #[inline(always)]
    fn opt(&self, option: u32) -> &X {
        &self.options[option as usize]
    }
    #[inline(always)]
    fn run_opt(_: &X, _: &mut S, _: &WalkContext<'_>) -> ActionResult {
        Ok(())
    }
    #[inline(always)]
    fn apply_opt(
        option: &X,
        value: &SerialValue,
        state: &mut S,
        walk: &WalkContext<'_>,
    ) -> ActionResult {
        let value = value
            .get::<X::Value>()
            .expect("a serial value is applied by the entry that produced it");
        option.apply_in(value, state, walk)
    }

    #[inline(always)]
    fn prune(&self, option: u32, walk: &WalkView<'_>) -> bool {
        // `opt`, unchecked: with no bounds check left, an action that does
        // not prune makes this call one store (its default `prune` marks
        // the entry as declining), which the next entry's ask overwrites.
        self.opt(option).prune(walk)
    }
    fn run(&self, _: u32, _: &mut S, _: &WalkContext<'_>) -> ActionResult {
        Ok(())
    }
    fn run_serial(&self, option: u32, cx: &SerialContext<'_>) -> Result<SerialValue, Halt> {
        let value = self.options[option as usize].run_in(cx).map_err(serial_run_halt)?;
        Ok(SerialValue::new(value))
    }
    fn node_step(&self, option: u32, value: &SerialValue, cx: &SerialContext<'_>) -> ActionResult {
        let value = value
            .get::<X::Value>()
            .expect("a serial value is applied by the entry that produced it");
        self.options[option as usize].apply_on_node(value, cx)
    }
    #[inline(always)]
    fn apply_serial(
        &self,
        option: u32,
        value: &SerialValue,
        state: &mut S,
        walk: &WalkContext<'_>,
    ) -> ActionResult {
        Self::apply_opt(self.opt(option), value, state, walk)
    }
    fn encode_value(&self, value: &SerialValue) -> postcard::Result<Vec<u8>> {
        let value = value
            .get::<X::Value>()
            .expect("a serial value is encoded by the entry that produced it");
        postcard::to_stdvec(value)
    }
    fn decode_value(&self, bytes: &[u8]) -> postcard::Result<SerialValue> {
        Ok(SerialValue::new(postcard::from_bytes::<X::Value>(bytes)?))
    }
    fn prune_decoded(&self, option: &Decoded, walk: &WalkView<'_>) -> bool {
        decoded::<X>(option).prune(walk)
    }
    fn run_decoded(&self, option: &Decoded, state: &mut S, walk: &WalkContext<'_>) -> ActionResult {
        // A replay is one walk on one process: the step runs, applies on
        // this process as a node, then to the walk.
        let option = decoded::<X>(option);
        let branch = [];
        let cx = SerialContext::new(walk.position(), &branch, walk.fixtures(), None);
        let value = option.run_in(&cx).map_err(serial_run_halt)?;
        option.apply_on_node(&value, &cx).map_err(serial_run_halt)?;
        option.apply_in(&value, state, walk)
    }
}

impl<S: 'static, A: AsyncAction<S>> Link<S> for AsyncPlain<A> {
    const KIND: EntryKind = EntryKind::Plain;
    const ASYNC: bool = true;
    type Opt = A;

    fn options(&self) -> &[A] {
        &self.options
    }

    #[inline(always)]
    fn opt(&self, option: u32) -> &A {
        &self.options[option as usize]
    }
    /// Outside a batch of futures (a replay), the walk blocks on it.
    fn run_opt(option: &A, state: &mut S, walk: &WalkContext<'_>) -> ActionResult {
        block_on(option.run(state, *walk))
    }
    fn apply_opt(_: &A, _: &SerialValue, _: &mut S, _: &WalkContext<'_>) -> ActionResult {
        unreachable!("the planner only schedules serial entries as serial steps")
    }
    #[inline(always)]
    fn prune(&self, option: u32, walk: &WalkView<'_>) -> bool {
        self.opt(option).prune(walk)
    }
    fn run(&self, option: u32, state: &mut S, walk: &WalkContext<'_>) -> ActionResult {
        Self::run_opt(self.opt(option), state, walk)
    }
    fn run_async<'a>(
        &'a self,
        option: u32,
        state: &'a mut S,
        walk: WalkContext<'a>,
    ) -> StepFuture<'a, ActionResult>
    where
        S: Send,
    {
        Box::pin(self.opt(option).run(state, walk))
    }
    fn prune_decoded(&self, option: &Decoded, walk: &WalkView<'_>) -> bool {
        decoded::<A>(option).prune(walk)
    }
    fn run_decoded(&self, option: &Decoded, state: &mut S, walk: &WalkContext<'_>) -> ActionResult {
        block_on(decoded::<A>(option).run(state, *walk))
    }
}

/// A decoded option as its entry's type: `Chain::decode` made it.
fn decoded<T: 'static>(option: &Decoded) -> &T {
    option.downcast_ref().expect("a decoded option is used by the entry that decoded it")
}

impl sealed::Sealed for Nil {}
impl<H, T> sealed::Sealed for Cons<H, T> {}

impl<S: 'static> Chain<S> for Nil {
    const LEN: usize = 0;
    const SERIALS: usize = 0;
    const LAST_PLAIN: usize = usize::MAX;
    const SECOND_PLAIN: usize = usize::MAX;
    const FIRST_LEVEL: usize = 0;
    const ASYNC: bool = false;

    fn describe(&self, _: &mut Vec<EntryInfo>) {}
    fn option_any(&self, position: usize, _: u32) -> &dyn Any {
        panic!("no entry at position {position}")
    }
    fn entry_type(&self, _: usize) -> TypeId {
        TypeId::of::<Nil>()
    }
    #[inline(always)]
    fn prune(&self, _: &WalkView<'_>) -> bool {
        false
    }
    #[inline(always)]
    fn run_plain(
        &self,
        _: &[u32],
        _: &Range<usize>,
        _: &mut S,
        _: WalkContext<'_>,
    ) -> Result<(), (usize, Halt)> {
        Ok(())
    }
    fn run_plain_async<'a>(
        &'a self,
        _: &'a [u32],
        _: &'a Range<usize>,
        _: &'a mut S,
        _: WalkContext<'a>,
    ) -> StepFuture<'a, Result<(), (usize, Halt)>>
    where
        S: Send,
    {
        Box::pin(std::future::ready(Ok(())))
    }
    type Cursor<'a> = ();
    #[inline(always)]
    fn cursor(&self, _: &[u32]) {}
    #[inline(always)]
    fn seek(&self, _: &mut (), _: usize, _: u32) {}
    #[inline(always)]
    fn run_level<const LEVEL: usize>(
        _: &(),
        _: Option<&SerialValue>,
        _: &mut S,
        _: WalkContext<'_>,
    ) -> Result<(), (usize, Halt)> {
        Ok(())
    }
    fn run_serial(&self, step: SerialStep, _: &SerialContext<'_>) -> Result<SerialValue, Halt> {
        panic!("no serial entry at position {}", step.position)
    }
    fn node_step(&self, step: SerialStep, _: &SerialValue, _: &SerialContext<'_>) -> ActionResult {
        panic!("no serial entry at position {}", step.position)
    }
    fn apply_serial(
        &self,
        step: SerialStep,
        _: &SerialValue,
        _: &mut S,
        _: WalkContext<'_>,
    ) -> ActionResult {
        panic!("no serial entry at position {}", step.position)
    }
    fn encode_value(&self, _: usize, _: &SerialValue) -> postcard::Result<Vec<u8>> {
        Err(postcard::Error::SerializeBufferFull) // Unreachable: positions come from the space.
    }
    fn decode_value(&self, _: usize, _: &[u8]) -> postcard::Result<SerialValue> {
        Err(postcard::Error::DeserializeBadEncoding) // A node was sent a bad position.
    }
    fn option_json(&self, position: usize, _: u32) -> serde_json::Result<Box<RawValue>> {
        panic!("no entry at position {position}")
    }
    fn decode(&self, position: usize, _: &serde_json::Value) -> serde_json::Result<Decoded> {
        panic!("no entry at position {position}")
    }
    fn prune_decoded(&self, _: &[Decoded], _: &WalkView<'_>) -> bool {
        false
    }
    fn run_decoded(
        &self,
        position: usize,
        _: &Decoded,
        _: &mut S,
        _: WalkContext<'_>,
    ) -> ActionResult {
        panic!("no entry at position {position}")
    }
}

impl<S: 'static, H: Link<S>, T: Chain<S>> Chain<S> for Cons<H, T> {
    const LEN: usize = T::LEN + 1;
    const SERIALS: usize = T::SERIALS + (H::KIND as usize);
    const LAST_PLAIN: usize =
        if matches!(H::KIND, EntryKind::Plain) { T::LEN } else { T::LAST_PLAIN };
    const SECOND_PLAIN: usize =
        if matches!(H::KIND, EntryKind::Plain) { T::LAST_PLAIN } else { T::SECOND_PLAIN };
    const FIRST_LEVEL: usize =
        if T::LEN == 0 { matches!(H::KIND, EntryKind::Serial) as usize } else { T::FIRST_LEVEL };
    const ASYNC: bool = T::ASYNC || H::ASYNC;

    fn describe(&self, out: &mut Vec<EntryInfo>) {
        self.tail.describe(out);
        out.push(self.head.describe());
    }
    fn option_any(&self, position: usize, option: u32) -> &dyn Any {
        if position == T::LEN {
            self.head.option_any(option)
        } else {
            self.tail.option_any(position, option)
        }
    }
    fn entry_type(&self, position: usize) -> TypeId {
        if position == T::LEN { self.head.entry_type() } else { self.tail.entry_type(position) }
    }
    #[inline(always)]
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        self.tail.prune(walk) || {
            let mark = EntryMark::<S, T>::new();
            let option = walk.option_at(T::LEN);
            let pruned = walk.ask(T::LEN, |entry| self.head.prune(option, entry));
            std::mem::forget(mark);
            pruned
        }
    }
    #[inline(always)]
    fn run_plain(
        &self,
        digits: &[u32],
        positions: &Range<usize>,
        state: &mut S,
        walk: WalkContext<'_>,
    ) -> Result<(), (usize, Halt)> {
        self.tail.run_plain(digits, positions, state, walk)?;
        let position = T::LEN;
        if H::KIND == EntryKind::Plain && positions.contains(&position) {
            let mark = EntryMark::<S, T>::new();
            let result = self.head.run(digits[position], state, &walk.at(position));
            std::mem::forget(mark);
            result.map_err(|halt| (position, halt))?;
        }
        Ok(())
    }
    fn run_plain_async<'a>(
        &'a self,
        digits: &'a [u32],
        positions: &'a Range<usize>,
        state: &'a mut S,
        walk: WalkContext<'a>,
    ) -> StepFuture<'a, Result<(), (usize, Halt)>>
    where
        S: Send,
    {
        Box::pin(async move {
            self.tail.run_plain_async(digits, positions, state, walk).await?;
            let position = T::LEN;
            if H::KIND == EntryKind::Plain && positions.contains(&position) {
                // Dropped while a panic unwinds out of the entry's poll.
                let mark = EntryMark::<S, T>::new();
                let result = self.head.run_async(digits[position], state, walk.at(position)).await;
                std::mem::forget(mark);
                result.map_err(|halt| (position, halt))?;
            }
            Ok(())
        })
    }
    type Cursor<'a> = (T::Cursor<'a>, &'a H::Opt);
    #[inline(always)]
    fn cursor<'a>(&'a self, digits: &[u32]) -> Self::Cursor<'a> {
        (self.tail.cursor(digits), self.head.opt(digits[T::LEN]))
    }
    #[inline(always)]
    fn seek<'a>(&'a self, cursor: &mut Self::Cursor<'a>, position: usize, option: u32) {
        if position == T::LEN {
            cursor.1 = self.head.opt(option);
        } else {
            self.tail.seek(&mut cursor.0, position, option);
        }
    }
    #[inline(always)]
    fn run_level<const LEVEL: usize>(
        cursor: &Self::Cursor<'_>,
        value: Option<&SerialValue>,
        state: &mut S,
        walk: WalkContext<'_>,
    ) -> Result<(), (usize, Halt)> {
        T::run_level::<LEVEL>(&cursor.0, value, state, walk)?;
        if H::KIND == EntryKind::Serial
            && T::SERIALS + 1 == LEVEL
            && let Some(value) = value
        {
            let mark = EntryMark::<S, T>::new();
            let result = H::apply_opt(cursor.1, value, state, &walk.at(T::LEN));
            std::mem::forget(mark);
            result.map_err(|halt| (T::LEN, halt))?;
        }
        if H::KIND == EntryKind::Plain && T::SERIALS == LEVEL {
            let mark = EntryMark::<S, T>::new();
            let result = H::run_opt(cursor.1, state, &walk.at(T::LEN));
            std::mem::forget(mark);
            result.map_err(|halt| (T::LEN, halt))?;
        }
        Ok(())
    }
    fn run_serial(&self, step: SerialStep, cx: &SerialContext<'_>) -> Result<SerialValue, Halt> {
        if step.position == T::LEN {
            self.head.run_serial(step.option, cx)
        } else {
            self.tail.run_serial(step, cx)
        }
    }
    fn node_step(
        &self,
        step: SerialStep,
        value: &SerialValue,
        cx: &SerialContext<'_>,
    ) -> ActionResult {
        if step.position == T::LEN {
            self.head.node_step(step.option, value, cx)
        } else {
            self.tail.node_step(step, value, cx)
        }
    }
    #[inline(always)]
    fn apply_serial(
        &self,
        step: SerialStep,
        value: &SerialValue,
        state: &mut S,
        walk: WalkContext<'_>,
    ) -> ActionResult {
        if step.position == T::LEN {
            self.head.apply_serial(step.option, value, state, &walk.at(T::LEN))
        } else {
            self.tail.apply_serial(step, value, state, walk)
        }
    }
    fn encode_value(&self, position: usize, value: &SerialValue) -> postcard::Result<Vec<u8>> {
        if position == T::LEN {
            self.head.encode_value(value)
        } else {
            self.tail.encode_value(position, value)
        }
    }
    fn decode_value(&self, position: usize, bytes: &[u8]) -> postcard::Result<SerialValue> {
        if position == T::LEN {
            self.head.decode_value(bytes)
        } else {
            self.tail.decode_value(position, bytes)
        }
    }
    fn option_json(&self, position: usize, option: u32) -> serde_json::Result<Box<RawValue>> {
        if position == T::LEN {
            self.head.option_json(option)
        } else {
            self.tail.option_json(position, option)
        }
    }
    fn decode(&self, position: usize, value: &serde_json::Value) -> serde_json::Result<Decoded> {
        if position == T::LEN { self.head.decode(value) } else { self.tail.decode(position, value) }
    }
    fn prune_decoded(&self, options: &[Decoded], walk: &WalkView<'_>) -> bool {
        self.tail.prune_decoded(options, walk)
            || walk.ask(T::LEN, |entry| self.head.prune_decoded(&options[T::LEN], entry))
    }
    fn run_decoded(
        &self,
        position: usize,
        option: &Decoded,
        state: &mut S,
        walk: WalkContext<'_>,
    ) -> ActionResult {
        if position == T::LEN {
            self.head.run_decoded(option, state, &walk.at(T::LEN))
        } else {
            self.tail.run_decoded(position, option, state, walk)
        }
    }
}

thread_local! {
    /// Position of the action whose panic last unwound on this thread.
    static PANIC_POSITION: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Marks the action running at a position. Forgotten on the normal path (no
/// cost); dropped only while a panic unwinds, which records the position.
pub(crate) struct PanicMark(pub(crate) usize);

impl Drop for PanicMark {
    fn drop(&mut self) {
        PANIC_POSITION.with(|p| p.set(Some(self.0)));
    }
}

/// [`PanicMark`] for the entry after chain `T`, at position `T::LEN`: a
/// zero-sized type, so marking costs not even a store on the normal path.
struct EntryMark<S: 'static, T: Chain<S>>(PhantomData<fn() -> (S, T)>);

impl<S: 'static, T: Chain<S>> EntryMark<S, T> {
    #[inline(always)]
    fn new() -> Self {
        EntryMark(PhantomData)
    }
}

impl<S: 'static, T: Chain<S>> Drop for EntryMark<S, T> {
    fn drop(&mut self) {
        PANIC_POSITION.with(|p| p.set(Some(T::LEN)));
    }
}

/// The position recorded by the last panic on this thread, if any.
pub(crate) fn take_panic_position() -> Option<usize> {
    PANIC_POSITION.with(|p| p.take())
}

/// A chain pinned to its state type, serving as the option table of a
/// [`WalkView`].
pub(crate) struct Pinned<'a, S, C> {
    pub(crate) chain: &'a C,
    pub(crate) _state: PhantomData<fn() -> S>,
}

impl<'a, S, C> Pinned<'a, S, C> {
    pub(crate) fn new(chain: &'a C) -> Self {
        Pinned { chain, _state: PhantomData }
    }
}

impl<S: 'static, C: Chain<S>> OptionLookup for Pinned<'_, S, C> {
    fn option_any(&self, position: usize, option: u32) -> &dyn Any {
        self.chain.option_any(position, option)
    }
    fn entry_type(&self, position: usize) -> TypeId {
        self.chain.entry_type(position)
    }
}

/// An invalid request about one walk.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WalkError {
    /// The walk order cannot be run.
    #[error(transparent)]
    Order(#[from] OrderError),
    /// The id is not in the space.
    #[error(transparent)]
    OutOfRange(#[from] IdOutOfRange),
    /// The option indices do not name a walk of this order.
    #[error(
        "options {options:?} do not name a walk: expected one index per entry, below {counts:?}"
    )]
    BadOptions {
        /// The indices given.
        options: Vec<u32>,
        /// The option count of each entry.
        counts: Vec<u32>,
    },
}

/// An ordered list of action and serial action types: the definition of a
/// walk space.
///
/// ```
/// use combtest::{Action, ActionResult, WalkOrder};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// struct Add(u32);
/// impl Action<u32> for Add {
///     fn options() -> Vec<Self> { (1..=3).map(Add).collect() }
///     fn run(&self, sum: &mut u32) -> ActionResult { *sum += self.0; Ok(()) }
/// }
///
/// let order = WalkOrder::<u32>::new().then::<Add>().then::<Add>();
/// assert_eq!(order.size().unwrap(), 9);
/// assert_eq!(order.walk(5).unwrap().option_indices(), vec![1, 2]);
/// ```
pub struct WalkOrder<S, C = Nil> {
    chain: C,
    space: Result<Space, OrderError>,
    _state: PhantomData<fn() -> S>,
}

impl<S, C: Clone> Clone for WalkOrder<S, C> {
    fn clone(&self) -> Self {
        WalkOrder { chain: self.chain.clone(), space: self.space.clone(), _state: PhantomData }
    }
}

impl<S: 'static> WalkOrder<S, Nil> {
    /// An empty walk order; add entries with [`then`](Self::then) and
    /// [`serial`](Self::serial).
    pub fn new() -> Self {
        WalkOrder { chain: Nil, space: Err(OrderError::Empty), _state: PhantomData }
    }
}

impl<S: 'static> Default for WalkOrder<S, Nil> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: 'static, C: Entries<S>> WalkOrder<S, C> {
    fn extend<H: Link<S>>(self, head: H) -> WalkOrder<S, Cons<H, C>> {
        let chain = Cons { head, tail: self.chain };
        let mut entries = Vec::with_capacity(Cons::<H, C>::LEN);
        chain.describe(&mut entries);
        WalkOrder { space: Space::new(entries), chain, _state: PhantomData }
    }

    /// Appends a plain action: every walk runs one of its options here.
    pub fn then<A: Action<S>>(self) -> WalkOrder<S, Cons<Plain<A>, C>> {
        self.extend(Plain { options: A::options() })
    }

    /// Appends an async action: walks await it, many in flight per runner
    /// thread (see [`AsyncAction`]).
    pub fn then_async<A: AsyncAction<S>>(self) -> WalkOrder<S, Cons<AsyncPlain<A>, C>> {
        self.extend(AsyncPlain { options: A::options() })
    }

    /// Appends a serial action: run once per branch at a global barrier.
    pub fn serial<X: SerialAction<S>>(self) -> WalkOrder<S, Cons<Serial<X>, C>> {
        self.extend(Serial { options: X::options() })
    }

    /// The walk space, or why this walk order cannot be run.
    pub fn space(&self) -> Result<&Space, OrderError> {
        self.space.as_ref().map_err(Clone::clone)
    }

    /// Number of walks in the space.
    pub fn size(&self) -> Result<u64, OrderError> {
        Ok(self.space()?.size())
    }

    /// The option count of each entry, in walk order.
    pub fn option_counts(&self) -> Result<Vec<u32>, OrderError> {
        Ok(self.space()?.option_counts().to_vec())
    }

    /// Segments per walk.
    pub fn segments_per_walk(&self) -> Result<usize, OrderError> {
        Ok(self.space()?.segments_per_walk())
    }

    /// The walk with id `id` (a [`WalkId`] or its `u64`), built in O(walk
    /// order length).
    pub fn walk(&self, id: impl Into<WalkId>) -> Result<Walk, WalkError> {
        Ok(self.space()?.walk(id.into().0)?)
    }

    /// The id of the walk choosing `options` (one option index per entry).
    pub fn id_of(&self, options: &[u32]) -> Result<WalkId, WalkError> {
        let space = self.space()?;
        space.id_of(options).map(WalkId).ok_or_else(|| WalkError::BadOptions {
            options: options.to_vec(),
            counts: space.option_counts().to_vec(),
        })
    }

    /// A printable tree of the epochs, at most `max_epochs` of them.
    pub fn epoch_tree(&self, max_epochs: usize) -> Result<String, OrderError> {
        Ok(epoch_tree(self.space()?, max_epochs))
    }

    pub(crate) fn chain(&self) -> &C {
        &self.chain
    }
}

/// Renders the entries and the depth-first epoch tree of a space.
pub fn epoch_tree(space: &Space, max_epochs: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}, {}, {} per walk",
        crate::model::count(space.size(), "walk"),
        crate::model::count(space.len() as u64, "entry"),
        crate::model::count(space.segments_per_walk() as u64, "segment")
    );
    for (position, entry) in space.entries().iter().enumerate() {
        let kind = match entry.kind {
            EntryKind::Plain => "action",
            EntryKind::Serial => "serial",
        };
        let _ = writeln!(
            out,
            "  [{position}] {kind:6} {} ({}: {})",
            entry.name,
            crate::model::count(entry.options.len() as u64, "option"),
            abbreviated(&entry.options, 6)
        );
    }
    let names = |plain: &Range<usize>| -> String {
        let list: Vec<&str> = plain.clone().map(|p| space.entries()[p].name).collect();
        if list.is_empty() { "(no actions)".to_string() } else { list.join(", ") }
    };
    let mut shown = 0;
    let cursor = EpochCursor::new(space.clone());
    for epoch in cursor {
        if shown == max_epochs {
            shown += 1;
            break;
        }
        shown += 1;
        let indent = "  ".repeat(epoch.level);
        let head = match epoch.serial {
            Some(step) => {
                let entry = &space.entries()[step.position];
                let label = &entry.options[step.option as usize];
                format!("{} then ", crate::model::option_text(entry.name, label, false))
            }
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "{indent}- epoch {}: {head}[{}] on walks {}..{}",
            epoch.id.0,
            names(&epoch.plain),
            epoch.walks.start,
            epoch.walks.end
        );
    }
    if shown > max_epochs {
        let rest = space.epoch_count() - max_epochs as u128;
        let rest = crate::model::count(rest, "more epoch");
        let _ = writeln!(out, "  ... and {rest}");
    }
    out
}

fn abbreviated(labels: &[String], max: usize) -> String {
    let mut shown: Vec<&str> = labels.iter().take(max).map(String::as_str).collect();
    if labels.len() > max {
        shown.push("...");
    }
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct P(u32);

    impl Action<()> for P {
        fn options() -> Vec<Self> {
            vec![P(0), P(1)]
        }
        fn run(&self, _: &mut ()) -> ActionResult {
            Ok(())
        }
    }

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct X(u32);

    impl SerialAction<()> for X {
        type Value = ();
        fn options() -> Vec<Self> {
            vec![X(0), X(1), X(2)]
        }
        fn run(&self) -> Result<(), Halt> {
            Ok(())
        }
    }

    #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
    struct One;

    impl Action<()> for One {
        fn options() -> Vec<Self> {
            vec![One]
        }
        fn run(&self, _: &mut ()) -> ActionResult {
            Ok(())
        }
    }

    #[test]
    fn the_epoch_tree_counts_in_the_singular_when_one() {
        let order = WalkOrder::<()>::new().serial::<X>().then::<One>();
        let tree = order.epoch_tree(2).unwrap();
        assert!(tree.starts_with("3 walks, 2 entries, 1 segment per walk"), "{tree}");
        assert!(tree.contains(" X (3 options: ") && tree.contains(" One (1 option: "), "{tree}");
        assert!(tree.contains("- epoch 0: X=X(0) then [One] on walks 0..1"), "{tree}");
        assert!(tree.trim_end().ends_with("... and 1 more epoch"), "{tree}");
        let tree = order.epoch_tree(1).unwrap();
        assert!(tree.trim_end().ends_with("... and 2 more epochs"), "{tree}");
    }

    type Constants = (usize, usize, usize);

    fn fast<C: Chain<()>>(order: WalkOrder<(), C>) -> (Constants, Constants) {
        let space = order.space().expect("a valid order");
        let plain = |p: &usize| space.entries()[*p].kind == EntryKind::Plain;
        let second = match space.significance() {
            [first, second, ..] if plain(first) && plain(second) => *second,
            _ => usize::MAX,
        };
        (
            (C::FAST, C::SECOND_PLAIN, C::FIRST_LEVEL),
            (space.least_significant(), second, space.first_level()),
        )
    }

    /// The batch loop steps the digits `Chain::FAST` and `Chain::SECOND_PLAIN`
    /// and takes fresh walks at `Chain::FIRST_LEVEL`; the space orders walk
    /// ids by its `significance` and starts walks at `first_level`. They
    /// must agree for every shape of chain.
    #[test]
    fn the_chains_constants_are_the_spaces() {
        let new = WalkOrder::<()>::new;
        for (got, space) in [
            fast(new().then::<P>()),
            fast(new().serial::<X>()),
            fast(new().then::<P>().serial::<X>()),
            fast(new().serial::<X>().then::<P>()),
            fast(new().then::<P>().serial::<X>().serial::<X>()),
            fast(new().serial::<X>().then::<P>().then::<P>().serial::<X>()),
            fast(new().serial::<X>().serial::<X>()),
            fast(new().then::<P>().then::<P>()),
            fast(new().then::<P>().then::<P>().then::<P>()),
            fast(new().then::<P>().serial::<X>().then::<P>()),
            fast(new().then::<P>().then::<P>().serial::<X>()),
            fast(new().serial::<X>().then::<P>().serial::<X>().then::<P>()),
        ] {
            assert_eq!(got, space);
        }
    }
}
