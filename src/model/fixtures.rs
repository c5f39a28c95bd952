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

use super::action::{Halt, short_type_name};
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
}

impl Drop for Fixtures {
    fn drop(&mut self) {
        // The last added goes first: it may use the ones before it.
        while let Some(item) = self.items.pop() {
            drop(item);
        }
    }
}

impl fmt::Debug for Fixtures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.items.iter().map(|item| item.name)).finish()
    }
}

/// How every walk gets its starting state: a clone of one initial state
/// (the default), or a state a factory builds for it from the run's
/// fixtures and the walk's id (its own database file, its own connection).
///
/// A factory runs for every walk that is not pruned, on the thread (and
/// node) that runs the walk's first segment, just before it. An error ends
/// the walk before its first action: `Halt::Fail` as failed (the failing
/// entry is named `(walk state)`), `Halt::Cancel` as cancelled. A state
/// from a factory need not be `Clone`.
///
/// ```
/// use combtest::{Fixtures, Start};
///
/// struct Root(std::path::PathBuf);
/// let start = Start::factory(|fixtures: &Fixtures, walk| {
///     let root = fixtures.require::<Root>()?;
///     Ok(root.0.join(format!("walk-{walk}.db")))
/// });
/// # let _: Start<std::path::PathBuf> = start;
/// ```
pub struct Start<S>(StartKind<S>);

/// A state factory, shared by every runner thread.
type Factory<S> = dyn Fn(&Fixtures, WalkId) -> Result<S, Halt> + Send + Sync;

enum StartKind<S> {
    Clone { initial: S, clone: fn(&S) -> S },
    Factory(Arc<Factory<S>>),
}

impl<S> Start<S> {
    /// Every walk starts from a clone of `initial`.
    pub fn clone_of(initial: S) -> Self
    where
        S: Clone,
    {
        Start(StartKind::Clone { initial, clone: S::clone })
    }

    /// Every walk starts from what `factory` builds for it.
    pub fn factory(
        factory: impl Fn(&Fixtures, WalkId) -> Result<S, Halt> + Send + Sync + 'static,
    ) -> Self {
        Start(StartKind::Factory(Arc::new(factory)))
    }

    /// The initial state every walk is cloned from (`None` for a factory).
    pub fn initial(&self) -> Option<&S> {
        match &self.0 {
            StartKind::Clone { initial, .. } => Some(initial),
            StartKind::Factory(_) => None,
        }
    }

    /// Whether walks start from a factory.
    pub fn is_factory(&self) -> bool {
        matches!(self.0, StartKind::Factory(_))
    }

    /// The starting state of walk `id`.
    #[inline(always)]
    pub(crate) fn make(&self, fixtures: &Fixtures, id: u64) -> Result<S, Halt> {
        match &self.0 {
            StartKind::Clone { initial, clone } => Ok(clone(initial)),
            StartKind::Factory(factory) => factory(fixtures, WalkId(id)),
        }
    }
}

impl<S> Clone for Start<S> {
    fn clone(&self) -> Self {
        match &self.0 {
            StartKind::Clone { initial, clone } => {
                Start(StartKind::Clone { initial: clone(initial), clone: *clone })
            }
            StartKind::Factory(factory) => Start(StartKind::Factory(Arc::clone(factory))),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Start<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            StartKind::Clone { initial, .. } => {
                f.debug_tuple("Start::clone_of").field(initial).finish()
            }
            StartKind::Factory(_) => f.write_str("Start::factory(..)"),
        }
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
