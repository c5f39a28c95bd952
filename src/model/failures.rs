//! What failures look like to people and tools: a group's [`Signature`]
//! (failing entry, [`normalise`]d error text), its [`Conditions`], the
//! [`FailureGroup`] a report holds, and their plain-data form
//! ([`GroupSummary`], in JSON) with the one human rendering
//! ([`render_groups`]). The search that finds them is `model::triage`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::space::WalkId;
use super::walk::Walk;

/// What a group of failures has in common.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Signature {
    /// Position of the failing entry in the walk order.
    pub action_index: usize,
    /// Its type name.
    pub action: String,
    /// The error text, normalised ([`normalise`]).
    pub error: String,
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (entry {}): {}", self.action, self.action_index, self.error)
    }
}

/// One term of a group's conditions: the entry at `position` takes one of
/// `options`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// Position in the walk order.
    pub position: usize,
    /// The entry's type name.
    pub action: String,
    /// Option indices, ascending.
    pub options: Vec<u32>,
    /// Their `Debug` texts.
    pub labels: Vec<String>,
    /// Whether the walk order has this action type at more than one
    /// position (the text then names the position: `Insert[1]`).
    #[serde(default)]
    pub repeated: bool,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.repeated {
            true => format!("{}[{}]", self.action, self.position),
            false => self.action.clone(),
        };
        match self.labels.as_slice() {
            [one] => f.write_str(&super::option_text(&name, one, false)),
            many => write!(f, "{name} in {{{}}}", many.join(", ")),
        }
    }
}

/// The options that induce a group's failure, as far as the run shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Conditions {
    /// Every walk that satisfies all `terms` (and reached the failing
    /// entry) failed this way; no term, when the entry fails whatever the
    /// options. `sampled`: the run ran a sample, and this speaks only of
    /// the walks that ran. `conservative`: the run had too many runs of
    /// cancelled or pruned walks to keep them apart, so they were counted
    /// as walks that passed (the conditions still hold; they may be more
    /// than needed, and some groups may have none).
    Found {
        terms: Vec<Condition>,
        sampled: bool,
        #[serde(default)]
        conservative: bool,
    },
    /// No conjunction of at most 4 terms (`model::triage::MAX_TERMS`) separates the group
    /// from the walks that went past its entry; or it was not searched.
    NotFound { reason: String },
}

impl fmt::Display for Conditions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conditions::Found { terms, sampled, conservative } => {
                if terms.is_empty() {
                    f.write_str("fails whenever it runs, whatever the options")?;
                } else {
                    let terms: Vec<String> = terms.iter().map(ToString::to_string).collect();
                    write!(
                        f,
                        "fails whenever {}, whatever the other entries",
                        terms.join(" and ")
                    )?;
                }
                if *sampled {
                    f.write_str(" (among the sampled walks that ran)")?;
                }
                if *conservative {
                    f.write_str(
                        " (cancelled and pruned walks counted as passing: too many to keep)",
                    )?;
                }
                Ok(())
            }
            Conditions::NotFound { reason } => f.write_str(reason),
        }
    }
}

/// Failed walks that share a [`Signature`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailureGroup {
    /// What they have in common.
    pub signature: Signature,
    /// How many walks.
    pub count: u64,
    /// The lowest of their ids (at most `model::triage::SAMPLE_IDS`).
    pub walk_ids: Vec<WalkId>,
    /// The simplest of them: fewest non-zero option indices, then lowest id.
    pub minimal: Walk,
    /// The minimal walk's own error text (not normalised).
    pub minimal_error: String,
    /// The options that induce the failure.
    pub conditions: Conditions,
}

/// A [`FailureGroup`] as plain data: in `run --json`, `run.json`,
/// `soak.json`, and what every human rendering reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// The signature, one line: `Action (entry N): normalised error`.
    pub signature: String,
    /// Position of the failing entry.
    pub action_index: usize,
    /// Its type name.
    pub action: String,
    /// The normalised error text.
    pub error: String,
    /// Failed walks in the group (in a soak: over every round).
    pub count: u64,
    /// The lowest of their ids (in a soak: of the round that first saw it).
    pub walk_ids: Vec<u64>,
    /// The simplest walk of the group.
    pub minimal_walk: MinimalWalk,
    /// The options that induce the failure.
    pub conditions: ConditionsSummary,
    /// In a soak: the first round that saw the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_round: Option<u64>,
    /// In a soak: the last round that saw the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_round: Option<u64>,
}

/// A group's minimal walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinimalWalk {
    /// Its id.
    pub walk_id: u64,
    /// Its actions, in walk order.
    pub actions: Vec<StepSummary>,
    /// Its own error text.
    pub error: String,
    /// The command that replays it, where one is known.
    #[serde(default)]
    pub replay: Option<String>,
}

/// One entry of a minimal walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSummary {
    /// Position in the walk order.
    pub position: usize,
    /// The entry's type name.
    pub action: String,
    /// Whether it is a serial action.
    pub serial: bool,
    /// The chosen option's index.
    pub option: u32,
    /// Its `Debug` text.
    pub label: String,
}

/// A group's conditions as plain data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionsSummary {
    /// Whether a conjunction was found.
    pub found: bool,
    /// Its terms (empty when none was found, or when none is needed).
    pub terms: Vec<Condition>,
    /// Whether it speaks only of a sample's walks.
    pub sampled: bool,
    /// The conditions in words (or why there are none).
    pub text: String,
}

impl GroupSummary {
    /// The summary of `group`; `replay` makes the command that replays a walk.
    pub fn of(group: &FailureGroup, replay: Option<&dyn Fn(WalkId) -> String>) -> Self {
        let (found, terms, sampled) = match &group.conditions {
            Conditions::Found { terms, sampled, .. } => (true, terms.clone(), *sampled),
            Conditions::NotFound { .. } => (false, Vec::new(), false),
        };
        GroupSummary {
            signature: group.signature.to_string(),
            action_index: group.signature.action_index,
            action: group.signature.action.clone(),
            error: group.signature.error.clone(),
            count: group.count,
            walk_ids: group.walk_ids.iter().map(|id| id.0).collect(),
            minimal_walk: MinimalWalk {
                walk_id: group.minimal.id.0,
                actions: group
                    .minimal
                    .steps
                    .iter()
                    .map(|s| StepSummary {
                        position: s.position,
                        action: s.name.to_string(),
                        serial: s.kind == super::space::EntryKind::Serial,
                        option: s.option,
                        label: s.label.clone(),
                    })
                    .collect(),
                error: group.minimal_error.clone(),
                replay: replay.map(|r| r(group.minimal.id)),
            },
            conditions: ConditionsSummary {
                found,
                terms,
                sampled,
                text: group.conditions.to_string(),
            },
            first_round: None,
            last_round: None,
        }
    }
}

/// Groups shown by the human renderings before "and N more groups".
pub const SHOWN_GROUPS: usize = 10;

/// The groups for people: the largest `shown` (each: signature and count,
/// conditions, minimal walk with its error and replay command, a few walk
/// ids), then how many more there are, never one line per failed walk.
pub fn render_groups(groups: &[GroupSummary], shown: usize, more: &str) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if groups.is_empty() {
        return s;
    }
    let walks: u64 = groups.iter().map(|g| g.count).sum();
    let _ =
        writeln!(s, "failure groups: {} ({})", groups.len(), super::count(walks, "failed walk"));
    for (i, g) in groups.iter().take(shown).enumerate() {
        let count = super::count(g.count, "walk");
        let rounds = match (g.first_round, g.last_round) {
            (Some(first), Some(last)) if first == last => format!(", round {first}"),
            (Some(first), Some(last)) => format!(", rounds {first}-{last}"),
            _ => String::new(),
        };
        let _ = writeln!(s, "  [{}] {count}{rounds}: {}", i + 1, g.signature);
        let _ = writeln!(s, "      {}", g.conditions.text);
        let m = &g.minimal_walk;
        let _ = writeln!(
            s,
            "      minimal walk {}: {} (entry {}) failed: {}",
            m.walk_id, g.action, g.action_index, m.error
        );
        let _ = writeln!(s, "        {}", steps_line(&m.actions));
        if let Some(replay) = &m.replay {
            let _ = writeln!(s, "        replay: {replay}");
        }
        if g.count > 1 {
            let ids: Vec<String> = g.walk_ids.iter().map(u64::to_string).collect();
            let etc = if g.count > g.walk_ids.len() as u64 { ", ..." } else { "" };
            let _ = writeln!(s, "      walks {}{etc}", ids.join(", "));
        }
    }
    if groups.len() > shown {
        let rest = super::count((groups.len() - shown) as u64, "more group");
        let _ = writeln!(s, "  ... and {rest}{more}");
    }
    s
}

/// A walk's actions on one line: `[A=a, *S=s, ...]` (serial ones starred).
///
/// An action type at more than one position is named with its position
/// (`Put[0]=Put(1), Put[2]=Put(3)`), as conditions name it.
pub fn steps_line(steps: &[StepSummary]) -> String {
    let repeated = |action: &str| steps.iter().filter(|s| s.action == action).count() > 1;
    let list: Vec<String> = steps
        .iter()
        .map(|s| {
            let name = match repeated(&s.action) {
                true => format!("{}[{}]", s.action, s.position),
                false => s.action.clone(),
            };
            super::option_text(&name, &s.label, s.serial)
        })
        .collect();
    format!("[{}]", list.join(", "))
}

/// The error text with its volatile parts replaced: UUIDs by `<uuid>`,
/// temporary paths by `<path>`, `0x…` and long hex words by `<hex>`,
/// numbers by `<n>`. Digits inside identifiers (`u32`, `Add2`) stay.
///
/// Four fixed token shapes, scanned by hand: a regex crate would add a
/// dependency and its compile time for these dozen lines.
pub fn normalise(error: &str) -> String {
    let bytes = error.as_bytes();
    let mut out = String::with_capacity(error.len());
    let mut i = 0;
    while i < bytes.len() {
        let prev_word = i > 0 && is_word(bytes[i - 1]);
        if !prev_word {
            if let Some(len) = uuid_len(&bytes[i..]) {
                out.push_str("<uuid>");
                i += len;
                continue;
            }
            if bytes[i] == b'/'
                && let Some(len) = temp_path_len(&bytes[i..])
            {
                out.push_str("<path>");
                i += len;
                continue;
            }
            if let Some(len) = hex_len(&bytes[i..]) {
                out.push_str("<hex>");
                i += len;
                continue;
            }
            if let Some(len) = number_len(&bytes[i..]) {
                out.push_str("<n>");
                i += len;
                continue;
            }
        }
        // Copy one character (UTF-8 aware).
        let ch = error[i..].chars().next().expect("inside the text");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The length of the word (alphanumeric run) at the start of `s`.
fn word_end(s: &[u8]) -> usize {
    s.iter().position(|&b| !is_word(b)).unwrap_or(s.len())
}

fn uuid_len(s: &[u8]) -> Option<usize> {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let mut i = 0;
    for (g, &len) in GROUPS.iter().enumerate() {
        if g > 0 {
            if s.get(i) != Some(&b'-') {
                return None;
            }
            i += 1;
        }
        if s.len() < i + len || !s[i..i + len].iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        i += len;
    }
    (s.get(i).is_none_or(|&b| !is_word(b))).then_some(i)
}

/// A path in a temporary directory, up to whitespace or a quote.
fn temp_path_len(s: &[u8]) -> Option<usize> {
    let end = s
        .iter()
        .position(|&b| b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b'`' | b',' | b')'))
        .unwrap_or(s.len());
    let path = std::str::from_utf8(&s[..end]).ok()?;
    let path = path.trim_end_matches(['.', ':', ';']);
    let temp = ["/tmp/", "/var/tmp/", "/var/folders/", "/private/var/folders/", "/dev/shm/"]
        .iter()
        .any(|p| path.starts_with(p))
        || path.split('/').any(|c| c.starts_with(".tmp"));
    temp.then_some(path.len())
}

/// `0x` and hex digits, or a word of at least 8 hex digits with both a
/// digit and a letter (a hash).
fn hex_len(s: &[u8]) -> Option<usize> {
    let end = word_end(s);
    let word = &s[..end];
    if word.len() > 2 && (word.starts_with(b"0x") || word.starts_with(b"0X")) {
        return word[2..].iter().all(u8::is_ascii_hexdigit).then_some(end);
    }
    (word.len() >= 8
        && word.iter().all(u8::is_ascii_hexdigit)
        && word.iter().any(u8::is_ascii_digit)
        && word.iter().any(u8::is_ascii_alphabetic))
    .then_some(end)
}

/// A number: optional minus, digits, optional fraction; not followed by a
/// letter (`3rd`, `2x` stay words).
fn number_len(s: &[u8]) -> Option<usize> {
    let mut i = usize::from(s.first() == Some(&b'-'));
    let digits = s[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    i += digits;
    if s.get(i) == Some(&b'.') && s.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1 + s[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
    }
    if s.get(i).is_some_and(|&b| b.is_ascii_alphabetic() || b == b'_') {
        return None;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_at_two_positions_is_named_with_its_position() {
        let step = |position: usize, action: &str, serial: bool, label: &str| StepSummary {
            position,
            action: action.into(),
            serial,
            option: 0,
            label: label.into(),
        };
        let steps = [
            step(0, "Put", false, "Put(1)"),
            step(1, "Flush", true, "Flush"),
            step(2, "Put", false, "Put(3)"),
        ];
        assert_eq!(steps_line(&steps), "[Put[0]=Put(1), *Flush=Flush, Put[2]=Put(3)]");
    }

    #[test]
    fn volatile_parts_are_normalised() {
        assert_eq!(normalise("balance -12 below 0.5"), "balance <n> below <n>");
        assert_eq!(normalise("at 0xdeadBEEF, hash 3f9a0c1e77"), "at <hex>, hash <hex>");
        assert_eq!(normalise("run 123e4567-e89b-12d3-a456-426614174000 gone"), "run <uuid> gone");
        assert_eq!(
            normalise("cannot open /tmp/.tmpA1b2C3/db/7.log: denied"),
            "cannot open <path>: denied"
        );
        assert_eq!(normalise("'/home/x/.tmpZz9/f'"), "'<path>'");
        // Digits inside words, and words after numbers, stay.
        assert_eq!(normalise("u32 Add2 3rd x1 2x"), "u32 Add2 3rd x1 2x");
        assert_eq!(normalise("/usr/lib/7"), "/usr/lib/<n>");
        assert_eq!(normalise("héllo 5 wörld"), "héllo <n> wörld");
        assert_eq!(normalise("deadbeef cafe"), "deadbeef cafe");
    }
}
