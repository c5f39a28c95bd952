//! Pure data and decisions: walk space, walk ids, epochs, outcomes, the
//! trace and report formats. Nothing here imports the actor runtime, so all
//! of it is tested without one.

pub mod action;
pub mod barrier;
pub mod dispatch;
pub mod epoch;
pub mod failures;
pub mod fixtures;
pub mod halt;
pub mod holdings;
pub mod junit;
pub mod membership;
pub mod node_steps;
pub mod outcome;
pub mod pieces;
pub mod sample;
pub mod space;
pub mod trace;
pub mod triage;
pub mod walk;

/// One chosen option as every human output prints it (`run`'s failure
/// groups, `show`, `replay`, conditions, `list`'s epoch trees):
/// `Type=<Debug of the option>`, starred in a walk's list of actions when
/// it is a serial action's (`[Login=Bob, *Pricing=Discount]`).
pub(crate) fn option_text(name: &str, label: &str, serial: bool) -> String {
    let mark = if serial { "*" } else { "" };
    format!("{mark}{name}={label}")
}

/// `n` and its noun, singular or plural: "1 walk", "2 walks", "0 walks",
/// "3 entries".
pub(crate) fn count(n: impl Into<u128>, noun: &str) -> String {
    match n.into() {
        1 => format!("1 {noun}"),
        n => match noun.strip_suffix('y') {
            Some(stem) if !stem.ends_with(['a', 'e', 'o', 'u']) => format!("{n} {stem}ies"),
            _ => format!("{n} {noun}s"),
        },
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_option_prints_as_its_type_and_debug_text_starred_when_serial() {
        assert_eq!(super::option_text("Login", "Bob", false), "Login=Bob");
        assert_eq!(super::option_text("Pricing", "Discount", true), "*Pricing=Discount");
    }

    #[test]
    fn counts_are_singular_or_plural() {
        assert_eq!(super::count(1u64, "walk"), "1 walk");
        assert_eq!(super::count(0u64, "walk"), "0 walks");
        assert_eq!(super::count(3u64, "entry"), "3 entries");
        assert_eq!(super::count(2u64, "day"), "2 days");
        assert_eq!(super::count(2u64, "runner thread"), "2 runner threads");
    }
}
