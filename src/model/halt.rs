//! How an action's run ends: [`ActionResult`], [`Halt`] and their
//! shorthands; and type names as users read them.

use std::fmt;

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
