//! `combtest-node run --log-dir`, `replay` and `show` as a user runs them,
//! and every bad run directory: a one-line error naming the file, line or
//! walk, exit code 2, never a panic.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;

use common::{format1_run, node, stderr, stdout};

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
fn a_traced_run_prints_its_failure_groups_and_writes_them_to_its_files() {
    let (_logs, dir, output) = demo_run();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stdout(&output);
    // One group (the two failures differ only in numbers), its minimal
    // walk replayed from the run directory.
    let command = format!("replay: combtest-node replay --run {} --walk 27", s(&dir));
    assert!(text.contains(&command), "{text}");
    assert!(text.contains("walks 27, 29"), "{text}");
    for file in ["walks.jsonl", "run.json", "junit.xml", "combtest.log"] {
        assert!(dir.join(file).is_file(), "{file} is missing");
    }
    let log = std::fs::read_to_string(dir.join("combtest.log")).unwrap();
    assert!(log.contains("run starts") && log.contains("run ends"), "{log}");

    // The JUnit file parses: one case per failure group plus the summary.
    let xml = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("junit.xml is well-formed XML");
    let suite = doc.descendants().find(|n| n.has_tag_name("testsuite")).unwrap();
    assert_eq!((suite.attribute("tests"), suite.attribute("failures")), (Some("2"), Some("1")));
    let cases: Vec<_> = suite.children().filter(|n| n.has_tag_name("testcase")).collect();
    let names: Vec<&str> = cases.iter().map(|c| c.attribute("name").unwrap()).collect();
    let group =
        "group 1: Checkout (entry 3): charged <n> cents for <n> items at <n>% off, expected <n>";
    assert_eq!(names, [group, "summary"]);
    let failure = cases[0].children().find(|n| n.has_tag_name("failure")).unwrap();
    assert!(failure.attribute("message").unwrap().starts_with("2 walks failed: Checkout"));
    let body = failure.text().unwrap();
    for part in [
        "fails whenever Login=Bob and Pricing=Discount and Checkout=Voucher",
        "minimal walk 27: [Login=Bob",
        "error: charged 360 cents",
        "--walk 27",
        "walks: 27, 29",
    ] {
        assert!(body.contains(part), "{part}: {body}");
    }

    // `show --groups` prints the same group from run.json.
    let output = node(&["show", "--run", s(&dir), "--groups"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let shown = stdout(&output);
    assert!(shown.contains("[1] 2 walks: Checkout (entry 3): charged <n> cents"), "{shown}");
    assert!(shown.contains(&command), "{shown}");
}

#[test]
fn an_untraced_run_prints_replay_by_suite_and_that_replays() {
    let output = node(&["run", "--suite", "demo"]);
    let text = stdout(&output);
    assert!(text.contains("replay: combtest-node replay --suite demo --walk 27"), "{text}");

    let output = node(&["replay", "--suite", "demo", "--walk", "27"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("[2] *Pricing=Discount (option 1)"), "{text}");
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
        "[0] Login=Bob (option 1)",
        "[1] AddItems=AddItems(1) (option 1)",
        "[2] *Pricing=Discount (option 1)",
        "[3] Checkout=Voucher (option 1)",
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
        text.contains("[Login=Bob, AddItems=AddItems(1), *Pricing=Discount, Checkout=Voucher]")
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
    // Line by line damage of a format-1 trace (one line per walk).
    let (logs, dir) = format1_run("whole");
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

    // Walk id outside the space; in the space but absent from the trace of
    // a run that did not finish.
    expect_bad_input(&["replay", "--run", s(&dir), "--walk", "36"], &["walk 36", "0..36"]);
    let absent = copy_run(&dir, "absent");
    unfinish(&absent);
    let mut removed = 0;
    edit_walks(&absent, |lines| removed = walk_of(&lines.remove(4)));
    expect_bad_input(
        &["replay", "--run", s(&absent), "--walk", &removed.to_string()],
        &[
            &format!("walk {removed} is in the run's space but not in"),
            "walks.jsonl: the run stopped before it ended",
        ],
    );

    // A finished run whose last line lost its end: the file was cut after
    // the run, so a record is missing.
    let truncated = copy_run(&dir, "truncated");
    let path = truncated.join("walks.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() - 20]).unwrap();
    let needles = [
        "walks.jsonl has 35 records, but run.json says the run finished with 36: 1 missing",
        "line 36 is cut off",
    ];
    expect_bad_input(&["replay", "--run", s(&truncated), "--walk", "0"], &needles);
    expect_bad_input(&["show", "--run", s(&truncated)], &needles);

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
    let needles = ["walks.jsonl line 7 records walk 5000, which is not in the space", "0..36"];
    expect_bad_input(&["show", "--run", s(&outside)], &needles);
    expect_bad_input(&["replay", "--run", s(&outside), "--walk", "0"], &needles);

    // No run.json: not a run directory.
    let bare = copy_run(&dir, "bare");
    std::fs::remove_file(bare.join("run.json")).unwrap();
    expect_bad_input(&["replay", "--run", s(&bare), "--walk", "0"], &["run.json is missing"]);
}

/// Makes `dir` a run that did not finish, as a crash leaves it: `run.json`
/// as the run's start wrote it (no `ended_at`, record count or summary).
fn unfinish(dir: &Path) {
    let path = dir.join("run.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let fields = meta.as_object_mut().unwrap();
    for key in ["ended_at", "records", "summary"] {
        assert!(fields.remove(key).is_some(), "a finished run.json has {key}");
    }
    std::fs::write(&path, serde_json::to_string_pretty(&meta).unwrap()).unwrap();
}

/// Cuts the last line of `walks.jsonl` of `dir` in its middle, as a crash
/// while writing it does; returns the walk it recorded.
fn cut_last_line(dir: &Path) -> u64 {
    let path = dir.join("walks.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let last = text.lines().last().unwrap();
    let walk =
        serde_json::from_str::<serde_json::Value>(last).unwrap()["walk_id"].as_u64().unwrap();
    std::fs::write(&path, &text[..text.len() - last.len() / 2]).unwrap();
    walk
}

#[test]
fn a_crashed_runs_cut_off_last_line_is_skipped_with_a_warning() {
    // A format-1 trace (one line per walk); format 2: `format2_damage`.
    let (_logs, dir) = format1_run("whole");
    let crashed = copy_run(&dir, "crashed");
    unfinish(&crashed);
    let torn = cut_last_line(&crashed);
    let warning = format!(
        "warning: {} line 36 is cut off (the run stopped while writing it); it is skipped",
        s(&crashed.join("walks.jsonl"))
    );

    // `show` lists the 35 whole records, says the run did not finish, and
    // warns once about the cut-off line.
    let output = node(&["show", "--run", s(&crashed)]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stderr(&output).trim_end(), warning);
    let text = stdout(&output);
    let header = text.lines().next().unwrap();
    assert!(header.contains("did not finish") && header.contains("35 records read"), "{text}");
    let walks: Vec<&str> = text.lines().filter(|l| l.starts_with("  walk ")).collect();
    assert_eq!(walks.len(), 35, "{text}");
    assert!(!walks.iter().any(|l| l.starts_with(&format!("  walk {torn}:"))), "{text}");

    // An intact walk replays (with the warning); the cut-off one is not in
    // the trace.
    let intact = if torn == 27 { 29 } else { 27 };
    let output = node(&["replay", "--run", s(&crashed), "--walk", &intact.to_string()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(stderr(&output).trim_end(), warning);
    assert!(stdout(&output).contains("outcome: failed at entry 3 (Checkout)"));
    let output = node(&["replay", "--run", s(&crashed), "--walk", &torn.to_string()]);
    assert_eq!(output.status.code(), Some(2));
    let expected = format!(
        "{warning}\nerror: walk {torn} is in the run's space but not in {}: the run stopped before it ended",
        s(&crashed.join("walks.jsonl"))
    );
    assert_eq!(stderr(&output).trim_end(), expected);

    // Only the last line may be cut off: in the middle, it is damage.
    let middle = copy_run(&crashed, "middle");
    edit_walks(&middle, |lines| {
        let half = lines[9].len() / 2;
        lines[9].truncate(half);
    });
    for args in
        [&["show", "--run", s(&middle)][..], &["replay", "--run", s(&middle), "--walk", "0"]]
    {
        expect_bad_input(args, &["walks.jsonl line 10 is cut off", "the file was damaged"]);
    }
    let joined = copy_run(&crashed, "joined");
    edit_walks(&joined, |lines| {
        let tail = lines.remove(10);
        let half = lines[9].len() / 2;
        lines[9].truncate(half);
        lines[9] += &tail;
    });
    expect_bad_input(
        &["show", "--run", s(&joined)],
        &["walks.jsonl line 10 is not a trace record"],
    );
}

#[test]
fn show_and_replay_refuse_a_trace_that_does_not_match_its_run_json() {
    // A format-1 trace (one line per walk); format 2: `format2_damage`.
    let (_logs, dir) = format1_run("whole");
    let walk_of = |line: &str| -> u64 {
        serde_json::from_str::<serde_json::Value>(line).unwrap()["walk_id"].as_u64().unwrap()
    };
    let first_walk =
        walk_of(std::fs::read_to_string(dir.join("walks.jsonl")).unwrap().lines().next().unwrap());
    let both = |run: &Path, needles: &[&str]| {
        expect_bad_input(&["show", "--run", s(run)], needles);
        expect_bad_input(&["replay", "--run", s(run), "--walk", &first_walk.to_string()], needles);
    };

    // A finished run with a line deleted.
    let deleted = copy_run(&dir, "deleted");
    let mut removed = 0;
    edit_walks(&deleted, |lines| removed = walk_of(&lines.remove(5)));
    both(
        &deleted,
        &[&format!(
            "walks.jsonl has 35 records, but run.json says the run finished with 36: 1 missing, the first is walk {removed}"
        )],
    );

    // A record whose actions were cut short.
    let short = copy_run(&dir, "short");
    let mut walk = 0;
    edit_walks(&short, |lines| {
        let mut record: serde_json::Value = serde_json::from_str(&lines[4]).unwrap();
        walk = record["walk_id"].as_u64().unwrap();
        record["actions"].as_array_mut().unwrap().pop();
        lines[4] = record.to_string();
    });
    both(
        &short,
        &[&format!(
            "walks.jsonl line 5 records walk {walk} with 3 actions, but the run's walk order has 4 entries"
        )],
    );

    // An option index beyond its entry's options.
    let beyond = copy_run(&dir, "beyond");
    edit_walks(&beyond, |lines| {
        let mut record: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        walk = record["walk_id"].as_u64().unwrap();
        record["actions"][0]["option"] = 9.into();
        lines[2] = record.to_string();
    });
    both(
        &beyond,
        &[&format!("walks.jsonl line 3 records walk {walk} with option 9 of Login (entry 0)")],
    );

    // A run.json that counts more walks than its walk order makes.
    let big = copy_run(&dir, "big");
    let meta = std::fs::read_to_string(big.join("run.json")).unwrap();
    assert!(meta.contains("\"walks\": 36,"));
    std::fs::write(big.join("run.json"), meta.replacen("\"walks\": 36,", "\"walks\": 48,", 1))
        .unwrap();
    both(&big, &["run.json is not a valid run.json: it counts 48 walks", "= 36"]);

    // A line recorded twice: refused whichever walk is asked for.
    let twice = copy_run(&dir, "twice");
    let mut duplicated = 0;
    edit_walks(&twice, |lines| {
        duplicated = walk_of(&lines[3]);
        let copy = lines[3].clone();
        lines.insert(20, copy);
    });
    assert_ne!(duplicated, first_walk);
    both(
        &twice,
        &[&format!("walks.jsonl has two records of walk {duplicated}, on lines 4 and 21")],
    );
    // In a run that did not finish too.
    unfinish(&twice);
    both(&twice, &[&format!("has two records of walk {duplicated}, on lines 4 and 21")]);
}

#[test]
fn format2_damage_is_named_as_format_1_damage_was() {
    let (_logs, dir, _) = demo_run();
    let text = std::fs::read_to_string(dir.join("walks.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // A batch record (passing and pruned walks as id ranges), and the
    // walks it records.
    let batch = lines.iter().position(|l| l.contains("\"batch_ns\"")).unwrap();
    let record: serde_json::Value = serde_json::from_str(lines[batch]).unwrap();
    let mut walks: Vec<u64> = ["passed", "pruned"]
        .iter()
        .filter_map(|k| record[k].as_array())
        .flatten()
        .flat_map(|r| r[0].as_u64().unwrap()..r[1].as_u64().unwrap())
        .collect();
    walks.sort_unstable();

    // Deleted: the count of run.json names the first walk missing.
    let deleted = copy_run(&dir, "deleted");
    edit_walks(&deleted, |lines| {
        lines.remove(batch);
    });
    let missing = format!(
        "walks.jsonl has {}, but run.json says the run finished with 36: {} missing, the first is walk {}",
        if 36 - walks.len() == 1 {
            "1 record".to_string()
        } else {
            format!("{} records", 36 - walks.len())
        },
        walks.len(),
        walks[0]
    );
    expect_bad_input(&["show", "--run", s(&deleted)], &[&missing]);

    // Duplicated: every reader refuses it.
    let twice = copy_run(&dir, "twice");
    let again = lines.len() + 1;
    edit_walks(&twice, |lines| {
        let copy = lines[batch].clone();
        lines.push(copy);
    });
    let needle =
        format!("has two records of walk {}, on lines {} and {again}", walks[0], batch + 1);
    expect_bad_input(&["show", "--run", s(&twice)], &[&needle]);
    expect_bad_input(&["replay", "--run", s(&twice), "--walk", "27"], &[&needle]);

    // A range outside the space.
    let outside = copy_run(&dir, "outside");
    edit_walks(&outside, |lines| {
        let mut record: serde_json::Value = serde_json::from_str(&lines[batch]).unwrap();
        record["pruned"] = serde_json::json!([[40, 41]]);
        lines[batch] = record.to_string();
    });
    expect_bad_input(
        &["show", "--run", s(&outside)],
        &[&format!("line {} records walk 40, which is not in the space", batch + 1)],
    );

    // Torn: a crashed run's cut-off last line is skipped with a warning,
    // the rest shown and replayable, a passing walk included.
    let crashed = copy_run(&dir, "crashed");
    unfinish(&crashed);
    let text = std::fs::read_to_string(crashed.join("walks.jsonl")).unwrap();
    let last = text.lines().last().unwrap();
    std::fs::write(crashed.join("walks.jsonl"), &text[..text.len() - last.len() / 2]).unwrap();
    let output = node(&["show", "--run", s(&crashed)]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let warning = format!("line {} is cut off", lines.len());
    assert!(stderr(&output).contains(&warning), "{}", stderr(&output));
    assert!(stdout(&output).contains("did not finish"), "{}", stdout(&output));
    let passing = (0..36)
        .find(|w| stdout(&output).contains(&format!("  walk {w}: passed")))
        .expect("a passing walk is listed");
    let output = node(&["replay", "--run", s(&crashed), "--walk", &passing.to_string()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("recorded: passed"), "{}", stdout(&output));
}

#[test]
fn format1_fixtures_show_as_before() {
    // The torn one: 20 whole records, the cut-off 21st skipped with a warning.
    let (_logs, torn) = format1_run("torn");
    let output = node(&["show", "--run", s(&torn)]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("walks.jsonl line 21 is cut off"), "{}", stderr(&output));
    assert!(stdout(&output).contains("20 records read"), "{}", stdout(&output));
    // The duplicated one: refused.
    let (_logs, twice) = format1_run("duplicated");
    expect_bad_input(
        &["show", "--run", s(&twice)],
        &["has two records of walk 14, on lines 4 and 11"],
    );
    // The whole one: groups from its summary, and a replay of a failure.
    let (_logs, whole) = format1_run("whole");
    let output = node(&["show", "--run", s(&whole), "--groups"]);
    assert!(stdout(&output).contains("failure groups: 1 (2 failed walks)"), "{}", stdout(&output));
    let output = node(&["replay", "--run", s(&whole), "--walk", "27"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stdout(&output).contains("recorded: failed at entry 3 (Checkout)"));
}
