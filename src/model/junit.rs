//! `junit.xml`: a run as JUnit XML for CI systems. One test case per failure
//! group (its minimal walk, conditions and replay command), plus one summary
//! case that fails only if walks were aborted.
//!
//! The shape is the common denominator that Jenkins, GitLab and GitHub
//! reporters accept: `<testsuites>` holding one `<testsuite>` with
//! `tests`/`failures`/`errors`/`skipped`/`time` attributes, and
//! `<testcase name classname time>` elements with a `<failure message type>`
//! child.

use std::fmt::Write as _;

use super::failures::{GroupSummary, steps_line};

/// A failure group, as one test case: its minimal walk, conditions and
/// replay command.
#[derive(Debug, Clone)]
pub struct JunitGroup {
    /// The group.
    pub group: GroupSummary,
    /// Its minimal walk's duration, in seconds (0 if unknown).
    pub seconds: f64,
}

/// What the JUnit file reports.
#[derive(Debug, Clone)]
pub struct JunitRun {
    /// The suite's name.
    pub suite: String,
    /// The run's id.
    pub run_id: String,
    /// When it started (RFC 3339).
    pub timestamp: String,
    /// Wall time, in seconds.
    pub seconds: f64,
    /// One line with every count.
    pub counts: String,
    /// Walks aborted (the summary case fails if any).
    pub aborted: u64,
    /// Every failure group, largest first.
    pub groups: Vec<JunitGroup>,
}

/// Renders `run` as a JUnit XML document.
pub fn render(run: &JunitRun) -> String {
    let class = format!("combtest.{}", run.suite);
    let tests = run.groups.len() + 1;
    let failures = run.groups.len() + usize::from(run.aborted > 0);
    let mut x = String::new();
    let _ = writeln!(x, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        x,
        r#"<testsuites name="combtest" tests="{tests}" failures="{failures}" errors="0" time="{:.6}">"#,
        run.seconds
    );
    let _ = writeln!(
        x,
        r#"  <testsuite name="{}" tests="{tests}" failures="{failures}" errors="0" skipped="0" time="{:.6}" timestamp="{}">"#,
        escape(&run.suite),
        run.seconds,
        escape(&run.timestamp)
    );
    let _ = writeln!(
        x,
        r#"    <properties><property name="run_id" value="{}"/></properties>"#,
        escape(&run.run_id)
    );
    for (i, case) in run.groups.iter().enumerate() {
        let g = &case.group;
        let _ = writeln!(
            x,
            r#"    <testcase name="group {}: {}" classname="{}" time="{:.6}">"#,
            i + 1,
            escape(&g.signature),
            escape(&class),
            case.seconds
        );
        let message = format!("{} failed: {}", super::count(g.count, "walk"), g.signature);
        let m = &g.minimal_walk;
        let mut body = vec![
            g.conditions.text.clone(),
            format!("minimal walk {}: {}", m.walk_id, steps_line(&m.actions)),
            format!("error: {}", m.error),
        ];
        if let Some(replay) = &m.replay {
            body.push(format!("replay: {replay}"));
        }
        let ids: Vec<String> = g.walk_ids.iter().map(u64::to_string).collect();
        body.push(format!("walks: {}", ids.join(", ")));
        let body: Vec<String> = body.iter().map(|line| escape(line)).collect();
        let _ = writeln!(
            x,
            r#"      <failure message="{}" type="{}">{}</failure>"#,
            escape(&message),
            escape(&g.action),
            body.join("&#10;")
        );
        let _ = writeln!(x, "    </testcase>");
    }
    let _ = writeln!(
        x,
        r#"    <testcase name="summary" classname="{}" time="{:.6}">"#,
        escape(&class),
        run.seconds
    );
    if run.aborted > 0 {
        let _ = writeln!(
            x,
            r#"      <failure message="{} aborted" type="aborted">{}</failure>"#,
            super::count(run.aborted, "walk"),
            escape(&run.counts)
        );
    }
    let _ = writeln!(x, "      <system-out>{}</system-out>", escape(&run.counts));
    let _ = writeln!(x, "    </testcase>");
    let _ = writeln!(x, "  </testsuite>");
    let _ = writeln!(x, "</testsuites>");
    x
}

/// Escapes text for an XML attribute or element. Characters XML 1.0 cannot
/// hold at all (most control characters) become U+FFFD.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => {
                let _ = write!(out, "&#{};", c as u32);
            }
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(escape("a<b & \"c\"\n\u{1}"), "a&lt;b &amp; &quot;c&quot;&#10;\u{FFFD}");
    }

    #[test]
    fn counts_one_case_per_group_plus_the_summary() {
        let group = GroupSummary {
            signature: "Write (entry 2): byte <n> differs <oops>".into(),
            action_index: 2,
            action: "Write".into(),
            error: "byte <n> differs <oops>".into(),
            count: 3,
            walk_ids: vec![7, 9, 12],
            minimal_walk: super::super::triage::MinimalWalk {
                walk_id: 7,
                actions: Vec::new(),
                error: "byte 3 differs <oops>".into(),
                replay: Some("combtest-node replay --suite fs --walk 7".into()),
            },
            conditions: super::super::triage::ConditionsSummary {
                found: false,
                terms: Vec::new(),
                sampled: false,
                text: "no conjunction".into(),
            },
            first_round: None,
            last_round: None,
        };
        let run = JunitRun {
            suite: "fs".into(),
            run_id: "r".into(),
            timestamp: "2026-01-01T00:00:00Z".into(),
            seconds: 1.5,
            counts: "passed 1".into(),
            aborted: 0,
            groups: vec![JunitGroup { group, seconds: 0.001 }],
        };
        let xml = render(&run);
        assert!(xml.contains(r#"tests="2" failures="1""#), "{xml}");
        assert!(xml.contains("byte 3 differs &lt;oops&gt;"), "{xml}");
        assert!(xml.contains("3 walks failed: Write (entry 2)"), "{xml}");
        assert!(xml.contains("replay: combtest-node replay --suite fs --walk 7"), "{xml}");
        assert_eq!(xml.matches("<testcase ").count(), 2);
    }
}
