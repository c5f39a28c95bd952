//! What a user implements: [`Action`] and [`SerialAction`], and what their
//! run functions return ([`ActionResult`], [`Halt`]).

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::walk::WalkView;

/// Why an action stopped its walk.
///
/// `Ok(())` from an action means "continue with the next action". An
/// `Err(Halt)` ends the walk, as cancelled or as failed. Any
/// `std::error::Error` converts into [`Halt::Fail`], so `?` works on I/O
/// results inside an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    /// The walk stops here and counts as cancelled: not a failure. Use it when
    /// an operation makes no sense in the state the walk has reached.
    Cancel,
    /// The walk stops here and counts as failed, with this error text.
    Fail(String),
}

impl Halt {
    /// A failure with the given message.
    pub fn fail(message: impl fmt::Display) -> Self {
        Halt::Fail(message.to_string())
    }
}

impl<E: std::error::Error> From<E> for Halt {
    fn from(error: E) -> Self {
        Halt::Fail(error.to_string())
    }
}

/// What running one option of an action returns.
pub type ActionResult = Result<(), Halt>;

/// Cancels the walk: shorthand for `Err(Halt::Cancel)`.
pub fn cancel() -> ActionResult {
    Err(Halt::Cancel)
}

/// Fails the walk with a message: shorthand for `Err(Halt::fail(message))`.
pub fn fail(message: impl fmt::Display) -> ActionResult {
    Err(Halt::fail(message))
}

/// An operation on the system under test, with a finite list of options.
///
/// A value of the implementing type *is* one option. [`Action::options`] must
/// return the same list, in the same order, every time it is called: walk ids
/// index into it.
///
/// `S` is the per-walk state: every walk starts from its own clone of the
/// initial state and hands it from action to action.
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
pub trait Action<S>:
    fmt::Debug + Clone + Send + Sync + Serialize + DeserializeOwned + 'static
{
    /// Every option of this action, in a fixed order.
    fn options() -> Vec<Self>;

    /// Performs this option on the walk's state. A panic counts as a failure
    /// of the walk (and only of this walk).
    fn run(&self, state: &mut S) -> ActionResult;

    /// Decides, from the walk's chosen options alone and before anything
    /// runs, that this combination makes no sense. A pruned walk never runs
    /// and is counted as pruned. The default prunes nothing.
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        let _ = walk;
        false
    }
}

/// A global step, such as a configuration change or a node restart, run
/// exactly once per branch while no walk runs anywhere.
///
/// [`SerialAction::run`] is called once per epoch; the value it returns is
/// handed to every live walk of its branch through [`SerialAction::apply`],
/// before that walk's next plain action.
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
    /// the error "serial action cancelled its branch".
    fn run(&self) -> Result<Self::Value, Halt>;

    /// Applies the value of this epoch's run to one walk's state. The default
    /// does nothing. An error fails that walk.
    fn apply(&self, value: &Self::Value, state: &mut S) -> ActionResult {
        let _ = (value, state);
        Ok(())
    }

    /// Prunes walks, as [`Action::prune`] does.
    fn prune(&self, walk: &WalkView<'_>) -> bool {
        let _ = walk;
        false
    }
}

/// The short name of a type, without its module path: `fs::Write` → `Write`.
pub(crate) fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    // Keep generic arguments readable: strip paths before the first '<' only.
    let head_end = full.find('<').unwrap_or(full.len());
    let start = full[..head_end].rfind("::").map_or(0, |i| i + 2);
    &full[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_become_failures() {
        let halt: Halt = std::io::Error::other("disk on fire").into();
        assert_eq!(halt, Halt::Fail("disk on fire".into()));
    }

    #[test]
    fn short_names_drop_the_module_path() {
        struct Local;
        assert_eq!(short_type_name::<Local>(), "Local");
        assert_eq!(short_type_name::<Vec<u8>>(), "Vec<u8>");
    }
}
