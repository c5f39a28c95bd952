//! `combtest-node run --log-dir`, `replay` and `show` as a user runs them,
//! and every bad run directory: a one-line error naming the file, line or
//! walk, exit code 2, never a panic.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;

use common::{node, stderr, stdout};

/// Runs the demo suite into a fresh log dir; returns the log dir (keep it
/// alive), the run directory and the run's output.
fn demo_run() -> (tempfile::TempDir, PathBuf, Output) {
    let logs = tempfile::tempdir().unwrap();
    let output = node(&[
        "run",
        "--suite",
        "demo",
        "--threads",
        "2",
        "--log-dir",
        logs.path().to_str().unwrap(),
    ]);
    let runs: Vec<PathBuf> =
        std::fs::read_dir(logs.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1, "one run directory");
    let dir = runs.into_iter().next().unwrap();
    (logs, dir, output)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_traced_run_prints_a_replay_command_per_failed_walk_and_writes_its_files() {
    let (_logs, dir, output) = demo_run();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stdout(&output);
    for walk in [27, 29] {
        let command = format!("replay: combtest-node replay --run {} --walk {walk}", s(&dir));
        assert!(text.contains(&command), "{text}");
    }
    for file in ["walks.jsonl", "run.json", "junit.xml", "combtest.log"] {
        assert!(dir.join(file).is_file(), "{file} is missing");
    }
    let log = std::fs::read_to_string(dir.join("combtest.log")).unwrap();
    assert!(log.contains("run starts") && log.contains("run ends"), "{log}");

    // The JUnit file parses: one case per failed walk plus the summary.
    let xml = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("junit.xml is well-formed XML");
    let suite = doc.descendants().find(|n| n.has_tag_name("testsuite")).unwrap();
    assert_eq!((suite.attribute("tests"), suite.attribute("failures")), (Some("3"), Some("2")));
    let cases: Vec<_> = suite.children().filter(|n| n.has_tag_name("testcase")).collect();
    let names: Vec<&str> = cases.iter().map(|c| c.attribute("name").unwrap()).collect();
    assert_eq!(names, ["walk 27", "walk 29", "summary"]);
    let failure = cases[0].children().find(|n| n.has_tag_name("failure")).unwrap();
    assert!(failure.attribute("message").unwrap().contains("charged 360 cents"));
    assert!(failure.text().unwrap().contains("--walk 27"));
}

#[test]
fn an_untraced_run_prints_replay_by_suite_and_that_replays() {
    let output = node(&["run", "--suite", "demo"]);
    let text = stdout(&output);
    assert!(text.contains("replay: combtest-node replay --suite demo --walk 27"), "{text}");

    let output = node(&["replay", "--suite", "demo", "--walk", "27"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("[2] *Pricing = \"Discount\" (option 1)"), "{text}");
    assert!(text.contains("outcome: failed at entry 3 (Checkout): charged 360 cents"), "{text}");

    // -v logs the run on stderr; without it, nothing.
    let output = node(&["-v", "run", "--suite", "demo", "--json"]);
    assert!(stderr(&output).contains("run starts"), "{}", stderr(&output));
    assert!(!stderr(&node(&["run", "--suite", "demo", "--json"])).contains("run starts"));

    let output = node(&["replay", "--suite", "demo", "--walk", "36"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("walk id 36 is not in the space"), "{}", stderr(&output));
}

#[test]
fn replay_from_a_run_prints_actions_outcome_and_final_state() {
    let (_logs, dir, _) = demo_run();
    let output = node(&["replay", "--run", s(&dir), "--walk", "27"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stdout(&output);
    let expected = [
        "[0] Login = \"Bob\" (option 1)",
        "[1] AddItems = 1 (option 1)",
        "[2] *Pricing = \"Discount\" (option 1)",
        "[3] Checkout = \"Voucher\" (option 1)",
        "outcome: failed at entry 3 (Checkout): charged 360 cents for 1 items at 10% off",
        "recorded: failed at entry 3 (Checkout): charged 360 cents",
        "final state:",
        "discount: 10,",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("warning"), "{text}");

    let output = node(&["replay", "--run", s(&dir), "--walk", "0"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("outcome: passed"));

    // --step waits for a line before each action.
    let mut child = Command::new(env!("CARGO_BIN_EXE_combtest-node"))
        .args(["replay", "--run", s(&dir), "--walk", "27", "--step"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"\n\n\n\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output).matches("press Enter").count(), 4);
}

#[test]
fn show_lists_failed_walks_first_with_their_errors() {
    let (_logs, dir, _) = demo_run();
    let output = node(&["show", "--run", s(&dir), "--failed"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("failed walks (2):"), "{text}");
    assert!(text.contains("walk 27: failed at entry 3 (Checkout): charged 360 cents"), "{text}");
    assert!(
        text.contains("[Login=\"Bob\", AddItems=1, *Pricing=\"Discount\", Checkout=\"Voucher\"]")
    );
    assert!(!text.contains("other walks"), "{text}");

    let output = node(&["show", "--run", s(&dir)]);
    let text = stdout(&output);
    let failed_at = text.find("walk 29: failed").unwrap();
    let others_at = text.find("other walks (34):").unwrap();
    assert!(failed_at < others_at, "{text}");
    assert!(text.contains("walk 1: pruned") && text.contains("walk 0: passed"), "{text}");
}

/// Runs `args` and expects exit 2 with one line on stderr containing each
/// of `needles`.
fn expect_bad_input(args: &[&str], needles: &[&str]) {
    let output = node(args);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {text}");
    assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
    assert!(!text.contains("panicked"), "{text}");
    for needle in needles {
        assert!(text.contains(needle), "{args:?}: missing {needle:?} in {text}");
    }
}

/// Rewrites `walks.jsonl` of `dir` with `edit` applied to its lines.
fn edit_walks(dir: &Path, edit: impl FnOnce(&mut Vec<String>)) -> PathBuf {
    let path = dir.join("walks.jsonl");
    let mut lines: Vec<String> =
        std::fs::read_to_string(&path).unwrap().lines().map(str::to_string).collect();
    edit(&mut lines);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    path
}

/// A copy of the run directory, for one bad-input case.
fn copy_run(dir: &Path, name: &str) -> PathBuf {
    let copy = dir.parent().unwrap().join(name);
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    copy
}

#[test]
fn bad_run_directories_give_one_line_and_exit_2() {
    let (logs, dir, _) = demo_run();
    let walk_of = |line: &str| -> u64 {
        serde_json::from_str::<serde_json::Value>(line).unwrap()["walk_id"].as_u64().unwrap()
    };

    // Missing run directory.
    let missing = logs.path().join("no-such-run");
    expect_bad_input(
        &["replay", "--run", s(&missing), "--walk", "1"],
        &["no-such-run", "does not exist"],
    );
    expect_bad_input(&["show", "--run", s(&missing)], &["does not exist"]);

    // Walk id outside the space; in the space but absent from the trace.
    expect_bad_input(&["replay", "--run", s(&dir), "--walk", "36"], &["walk 36", "0..36"]);
    let absent = copy_run(&dir, "absent");
    let mut removed = 0;
    edit_walks(&absent, |lines| removed = walk_of(&lines.remove(4)));
    expect_bad_input(
        &["replay", "--run", s(&absent), "--walk", &removed.to_string()],
        &[&format!("walk {removed} is in the run's space but not in"), "walks.jsonl"],
    );

    // Truncated mid-line: the last line lost its end.
    let truncated = copy_run(&dir, "truncated");
    let path = truncated.join("walks.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() - 20]).unwrap();
    expect_bad_input(
        &["replay", "--run", s(&truncated), "--walk", "0"],
        &["walks.jsonl line 36 is truncated"],
    );
    expect_bad_input(&["show", "--run", s(&truncated)], &["walks.jsonl line 36 is truncated"]);

    // A line that is not JSON.
    let garbled = copy_run(&dir, "garbled");
    edit_walks(&garbled, |lines| lines[2] = "this is not json".to_string());
    expect_bad_input(
        &["replay", "--run", s(&garbled), "--walk", "0"],
        &["walks.jsonl line 3 is not a trace record"],
    );

    // A record of another suite.
    let foreign = copy_run(&dir, "foreign");
    edit_walks(&foreign, |lines| {
        lines[4] = lines[4].replace("\"suite\":\"demo\"", "\"suite\":\"fs\"")
    });
    expect_bad_input(
        &["replay", "--run", s(&foreign), "--walk", "0"],
        &["walks.jsonl line 5 is a record of suite 'fs', but this run is of suite 'demo'"],
    );

    // An empty trace.
    let empty = copy_run(&dir, "empty");
    std::fs::write(empty.join("walks.jsonl"), "").unwrap();
    expect_bad_input(&["replay", "--run", s(&empty), "--walk", "0"], &["walks.jsonl is empty"]);
    expect_bad_input(&["show", "--run", s(&empty), "--failed"], &["walks.jsonl is empty"]);

    // A run of a suite this binary does not have.
    let stranger = copy_run(&dir, "stranger");
    let meta = std::fs::read_to_string(stranger.join("run.json")).unwrap();
    std::fs::write(
        stranger.join("run.json"),
        meta.replace("\"suite\": \"demo\"", "\"suite\": \"gone\""),
    )
    .unwrap();
    expect_bad_input(
        &["replay", "--run", s(&stranger), "--walk", "0"],
        &["run.json was a run of suite 'gone'", "available: demo, fs"],
    );

    // A walk recorded twice, and a record of a walk outside the space: both
    // commands refuse them.
    let twice = copy_run(&dir, "twice");
    edit_walks(&twice, |lines| {
        let copy = lines[3].clone();
        lines.push(copy);
    });
    expect_bad_input(&["show", "--run", s(&twice)], &["has two records of walk", "lines 4 and 37"]);
    let outside = copy_run(&dir, "outside");
    edit_walks(&outside, |lines| {
        let walk = walk_of(&lines[6]);
        lines[6] = lines[6].replace(&format!("\"walk_id\":{walk},"), "\"walk_id\":5000,");
    });
    expect_bad_input(&["show", "--run", s(&outside)], &["walk 5000 is not in the space", "0..36"]);

    // No run.json: not a run directory.
    let bare = copy_run(&dir, "bare");
    std::fs::remove_file(bare.join("run.json")).unwrap();
    expect_bad_input(&["replay", "--run", s(&bare), "--walk", "0"], &["run.json is missing"]);
}
