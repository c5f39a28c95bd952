//! Fixtures: the resources a run's actions share on one process or node (a
//! server, a temp dir, a connection pool), found by type.
//!
//! A suite's setup (or the caller of [`run`](crate::run)) builds them once
//! per process or node; every action, serial action and state factory of
//! the run reaches them through its context; they are dropped when the run
//! ends there, the last one added first (a server goes before the temp dir
//! it serves from).

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

use super::halt::{Halt, short_type_name};
use super::space::WalkId;

/// A run's shared resources, one per type. Build them with
/// [`Fixtures::with`]; actions read them with
/// [`WalkContext::fixture`](crate::WalkContext::fixture).
///
/// ```
/// use combtest::Fixtures;
///
/// struct Server { port: u16 }
/// let fixtures = Fixtures::new().with(Server { port: 7000 }).with(String::from("db"));
/// assert_eq!(fixtures.get::<Server>().unwrap().port, 7000);
/// assert!(fixtures.get::<u32>().is_none());
/// ```
#[derive(Default)]
pub struct Fixtures {
    /// In the order they were added; dropped in reverse.
    items: Vec<Item>,
    /// Told once every fixture is dropped (a run waits for it before it
    /// returns).
    dropped: Option<std::sync::mpsc::Sender<()>>,
}

struct Item {
    type_id: TypeId,
    name: &'static str,
    value: Box<dyn Any + Send + Sync>,
}

impl Fixtures {
    /// No fixtures.
    pub fn new() -> Self {
        Fixtures::default()
    }

    /// These fixtures and `value`. A second value of a type already there
    /// replaces the first (which is dropped).
    pub fn with<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.insert(value);
        self
    }

    /// Adds `value`, replacing (and dropping) a value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        let type_id = TypeId::of::<T>();
        self.items.retain(|item| item.type_id != type_id);
        self.items.push(Item { type_id, name: short_type_name::<T>(), value: Box::new(value) });
    }

    /// The fixture of type `T`, if there is one.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        let type_id = TypeId::of::<T>();
        self.items.iter().find(|item| item.type_id == type_id)?.value.downcast_ref()
    }

    /// The fixture of type `T`, or a failure naming the type and the
    /// fixtures there are: what an action's `?` wants.
    pub fn require<T: 'static>(&self) -> Result<&T, Halt> {
        self.get().ok_or_else(|| {
            let names: Vec<&str> = self.items.iter().map(|item| item.name).collect();
            let have = match names.is_empty() {
                true => "there are none".to_string(),
                false => format!("there are: {}", names.join(", ")),
            };
            Halt::Fail(format!(
                "no fixture of type {} (add it in the suite's setup or the run's options; {have})",
                short_type_name::<T>()
            ))
        })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Asks to be told on the returned receiver once these fixtures are
    /// dropped (the sender disconnects).
    pub(crate) fn tell_when_dropped(&mut self) -> std::sync::mpsc::Receiver<()> {
        let (sender, receiver) = std::sync::mpsc::channel();
        self.dropped = Some(sender);
        receiver
    }
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        // The last added goes first: it may use the ones before it.
        while let Some(item) = self.items.pop() {
            drop(item);
        }
        drop(self.dropped.take());
    }
}

impl fmt::Debug for Fixtures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.items.iter().map(|item| item.name)).finish()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// How a run's walks get their starting states, as a type: [`Cloned`] (a
/// clone of one initial state, the default) or [`Built`] (a state factory).
/// The batch loop is compiled for the kind, so cloning stays a plain
/// inlined `clone` while a factory's state need not be `Clone`. Users meet
/// it only as the defaulted second parameter of
/// [`RunOptions`](crate::RunOptions) and
/// [`Fixture`](crate::suites::Fixture); sealed.
pub trait StartKind<S>: sealed::Sealed + Send + Sync + 'static {
    /// What each runner thread holds to start walks from.
    #[doc(hidden)]
    type Start: Clone + Send + 'static;
    /// The starting state of walk `id`.
    #[doc(hidden)]
    fn make(start: &Self::Start, fixtures: &Fixtures, id: u64) -> Result<S, Halt>;
}

/// Walks start from clones of one initial state
/// ([`RunOptions::new`](crate::RunOptions::new),
/// [`Fixture::new`](crate::suites::Fixture::new)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cloned;

/// Walks start from what a factory builds for each, from the run's
/// fixtures and the walk's id
/// ([`RunOptions::factory`](crate::RunOptions::factory),
/// [`Fixture::factory`](crate::suites::Fixture::factory)).
///
/// The factory runs for every walk that is not pruned, on the thread (and
/// node) that runs the walk's first segment, just before it. An error ends
/// the walk before its first action: `Halt::Fail` as failed (the failing
/// entry is named `(walk state)`), `Halt::Cancel` as cancelled. A state
/// from a factory need not be `Clone`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Built;

impl sealed::Sealed for Cloned {}
impl sealed::Sealed for Built {}

/// A state factory, shared by every runner thread.
pub(crate) type Factory<S> = dyn Fn(&Fixtures, WalkId) -> Result<S, Halt> + Send + Sync;

impl<S: Clone + Send + 'static> StartKind<S> for Cloned {
    type Start = S;
    #[inline(always)]
    fn make(initial: &S, _: &Fixtures, _: u64) -> Result<S, Halt> {
        Ok(initial.clone())
    }
}

impl<S: Send + 'static> StartKind<S> for Built {
    type Start = Arc<Factory<S>>;
    #[inline(always)]
    fn make(factory: &Self::Start, fixtures: &Fixtures, id: u64) -> Result<S, Halt> {
        factory(fixtures, WalkId(id))
    }
}

/// A runner thread's start, with its kind erased (the runner threads and
/// the node's run are generic over the state only); the batch loop of the
/// kind's `Runnable` gets it back, once per batch.
pub(crate) trait ErasedStart<S>: Send {
    fn as_any(&self) -> &dyn Any;
    fn clone_box(&self) -> Box<dyn ErasedStart<S>>;
}

/// The start of kind `K`, erased.
pub(crate) struct Held<S, K: StartKind<S>>(pub(crate) K::Start);

impl<S: 'static, K: StartKind<S>> ErasedStart<S> for Held<S, K> {
    fn as_any(&self) -> &dyn Any {
        &self.0
    }
    fn clone_box(&self) -> Box<dyn ErasedStart<S>> {
        Box::new(Held::<S, K>(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    struct Noted(&'static str, Arc<Mutex<Vec<&'static str>>>);
    impl Drop for Noted {
        fn drop(&mut self) {
            self.1.lock().unwrap().push(self.0);
        }
    }
    struct Second(Noted);

    #[test]
    fn found_by_type_and_dropped_last_first() {
        let dropped = Arc::new(Mutex::new(Vec::new()));
        let fixtures = Fixtures::new()
            .with(Noted("dir", Arc::clone(&dropped)))
            .with(Second(Noted("server", Arc::clone(&dropped))));
        assert_eq!(fixtures.get::<Noted>().unwrap().0, "dir");
        assert_eq!(fixtures.get::<Second>().unwrap().0.0, "server");
        assert_eq!(format!("{fixtures:?}"), "[\"Noted\", \"Second\"]");
        drop(fixtures);
        assert_eq!(*dropped.lock().unwrap(), ["server", "dir"]);
    }

    #[test]
    fn a_missing_fixture_is_a_failure_that_names_it() {
        let fixtures = Fixtures::new().with(7u32);
        assert_eq!(*fixtures.require::<u32>().unwrap(), 7);
        let error = fixtures.require::<String>().unwrap_err();
        assert_eq!(
            error,
            Halt::Fail(
                "no fixture of type String (add it in the suite's setup or the run's options; \
                 there are: u32)"
                    .into()
            )
        );
        let replaced = Fixtures::new().with(1u32).with(2u32);
        assert_eq!(replaced.get::<u32>(), Some(&2));
    }
}
