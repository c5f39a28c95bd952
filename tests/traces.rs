//! Traced runs through the library: one record per walk id, counts that
//! match `run.json`, replays from the run directory that reproduce the
//! run's errors and final states, and replays after the walk order changed.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use combtest::model::trace::{RunMeta, TraceOutcome, TraceRecord};
use combtest::suites::demo;
use combtest::trace::TornTail;
use combtest::{
    Action, ActionResult, ModelCheck, ReplayError, RunDir, RunOptions, TraceError, WalkOrder,
    WalkOutcome, cancel, run,
};
use common::{Append, SerialAppend, Trail};
use serde::{Deserialize, Serialize};

fn read_records(dir: &Path) -> Vec<TraceRecord> {
    let text = std::fs::read_to_string(dir.join("walks.jsonl")).unwrap();
    assert!(text.ends_with('\n'), "every line is complete");
    text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn read_meta(dir: &Path) -> RunMeta {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap()
}

fn count(records: &[TraceRecord], outcome: TraceOutcome) -> u64 {
    records.iter().filter(|r| r.outcome == outcome).count() as u64
}

#[test]
fn a_traced_run_records_every_walk_once_and_replays_it() {
    let logs = tempfile::tempdir().unwrap();
    let order = demo::order();
    let options = RunOptions::new(demo::Session::default())
        .gather_states(true)
        .threads(3)
        .log_dir(logs.path());
    let report = run(&order, options.name("demo")).unwrap();
    let dir = report.run_dir.clone().expect("a traced run names its directory");
    assert_eq!(dir.parent(), Some(logs.path()));

    // One record per walk id, and the counts of run.json.
    let records = read_records(&dir);
    let mut by_id = BTreeMap::new();
    for record in &records {
        assert!(by_id.insert(record.walk_id, record).is_none(), "walk {} twice", record.walk_id);
    }
    assert_eq!(by_id.keys().copied().collect::<Vec<_>>(), (0..36).collect::<Vec<_>>());
    let meta = read_meta(&dir);
    let summary = meta.summary.as_ref().expect("a finished run has a summary");
    assert_eq!(meta.run_id, dir.file_name().unwrap().to_str().unwrap());
    assert_eq!((meta.suite.as_str(), meta.walks, meta.records), ("demo", 36, Some(36)));
    assert_eq!(summary.passed, count(&records, TraceOutcome::Passed));
    assert_eq!(summary.failed, count(&records, TraceOutcome::Failed));
    assert_eq!(summary.cancelled, count(&records, TraceOutcome::Cancelled));
    assert_eq!(summary.pruned, count(&records, TraceOutcome::Pruned));
    assert_eq!((summary.passed, summary.failed, summary.pruned), (20, 2, 6));
    assert_eq!(meta.walk_order.len(), 4);
    // Each record spells out the walk: serial action included.
    let walk27 = by_id[&27];
    let values: Vec<String> = walk27.actions.iter().map(|a| a.value.to_string()).collect();
    assert_eq!(values, ["\"Bob\"", "1", "\"Discount\"", "\"Voucher\""]);
    assert_eq!((walk27.branch.as_slice(), walk27.action_index), (&[1][..], Some(3)));
    assert!(walk27.runner.starts_with("local/"));

    // Failed walks replay to the same error; passed ones to the same state.
    let run_dir = RunDir::open(&dir).unwrap();
    for record in &records {
        let replayed = order
            .replay_from_run(&run_dir, record.walk_id, demo::Session::default(), |_| {})
            .unwrap();
        assert_eq!(replayed.model, ModelCheck::Same);
        let id = combtest::WalkId(record.walk_id);
        match record.outcome {
            TraceOutcome::Failed => match &replayed.replay.outcome {
                WalkOutcome::Failed { action_index, error, .. } => {
                    assert_eq!(Some(*action_index), record.action_index);
                    assert_eq!(Some(error), record.error.as_ref());
                    assert_eq!(&replayed.replay.state, &report.states[&id]);
                }
                other => panic!("walk {id} replayed as {other:?}"),
            },
            TraceOutcome::Passed => {
                assert_eq!(replayed.replay.outcome, WalkOutcome::Passed);
                assert_eq!(&replayed.replay.state, &report.states[&id], "walk {id}");
            }
            TraceOutcome::Pruned => assert_eq!(replayed.replay.outcome, WalkOutcome::Pruned),
            TraceOutcome::Cancelled => {
                assert!(matches!(replayed.replay.outcome, WalkOutcome::Cancelled { .. }))
            }
            TraceOutcome::Aborted => panic!("nothing aborts here"),
        }
    }
}

/// Cancels on 0, panics on 1, passes on 2.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Shaky(u32);

impl Action<Trail> for Shaky {
    fn options() -> Vec<Self> {
        (0..3).map(Shaky).collect()
    }
    fn run(&self, trail: &mut Trail) -> ActionResult {
        trail.push((7, self.0));
        match self.0 {
            0 => cancel(),
            1 => panic!("shaky panics"),
            _ => Ok(()),
        }
    }
}

#[test]
fn panics_and_runner_restarts_still_give_one_record_per_walk() {
    let logs = tempfile::tempdir().unwrap();
    let order = WalkOrder::<Trail>::new()
        .then::<Append<1, 5>>()
        .serial::<SerialAppend<2, 2>>()
        .then::<Shaky>()
        .then::<Append<3, 4>>();
    let report = run(&order, RunOptions::default().threads(2).log_dir(logs.path())).unwrap();
    assert!(report.runner_restarts >= 1);
    let dir = report.run_dir.unwrap();
    let records = read_records(&dir);
    let mut ids: Vec<u64> = records.iter().map(|r| r.walk_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..report.walks).collect::<Vec<_>>());
    assert_eq!(count(&records, TraceOutcome::Failed), report.counts.failed);
    for record in records.iter().filter(|r| r.outcome == TraceOutcome::Failed) {
        assert_eq!(record.error.as_deref(), Some("panicked: shaky panics"));
        assert_eq!(record.actions[2].value, serde_json::json!(1));
    }
    let meta = read_meta(&dir);
    assert_eq!(meta.suite, "default");
    assert_eq!(meta.summary.unwrap().failed, report.counts.failed);
}

/// Two versions of one action type: the short type name is the same, the
/// options changed.
mod v1 {
    use super::*;
    #[derive(Debug, Clone, Copy, Serialize, Deserialize)]
    pub struct Knob(pub u32);
    impl Action<Trail> for Knob {
        fn options() -> Vec<Self> {
            vec![Knob(0), Knob(1), Knob(2)]
        }
        fn run(&self, trail: &mut Trail) -> ActionResult {
            trail.push((5, self.0));
            Ok(())
        }
    }
}

mod v2 {
    use super::*;
    #[derive(Debug, Clone, Copy, Serialize, Deserialize)]
    pub struct Knob(pub u32);
    impl Action<Trail> for Knob {
        fn options() -> Vec<Self> {
            vec![Knob(2), Knob(1), Knob(0), Knob(3)]
        }
        fn run(&self, trail: &mut Trail) -> ActionResult {
            trail.push((5, self.0));
            Ok(())
        }
    }
}

mod v3 {
    use super::*;
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Knob(pub String);
    impl Action<Trail> for Knob {
        fn options() -> Vec<Self> {
            vec![Knob("low".into())]
        }
        fn run(&self, _: &mut Trail) -> ActionResult {
            Ok(())
        }
    }
}

#[test]
fn a_changed_walk_order_is_named_and_the_recorded_values_replay() {
    let logs = tempfile::tempdir().unwrap();
    let before = WalkOrder::<Trail>::new().then::<Append<1, 2>>().then::<v1::Knob>();
    let report = run(&before, RunOptions::default().threads(1).log_dir(logs.path())).unwrap();
    let run_dir = RunDir::open(report.run_dir.unwrap()).unwrap();

    // Same types, options reordered: walk 0 (Knob(0) in the run) is Knob(2)
    // now. The recorded value runs, and the change is named.
    let after = WalkOrder::<Trail>::new().then::<Append<1, 2>>().then::<v2::Knob>();
    let replayed = after.replay_from_run(&run_dir, 0, Vec::new(), |_| {}).unwrap();
    match &replayed.model {
        ModelCheck::Changed(how) => {
            assert!(how.contains("fingerprint"), "{how}");
            assert!(how.contains("entry 1 of walk 0 was Knob=0"), "{how}");
        }
        ModelCheck::Same => panic!("the change went unnoticed"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(replayed.replay.state, vec![(1, 0), (5, 0)]);

    // The value no longer deserializes: refused, naming walk and entry.
    let broken = WalkOrder::<Trail>::new().then::<Append<1, 2>>().then::<v3::Knob>();
    let error = broken.replay_from_run(&run_dir, 0, Vec::new(), |_| {}).unwrap_err();
    assert!(matches!(error, ReplayError::Incompatible { walk: 0, entry: Some(1), .. }), "{error}");
    assert!(error.to_string().contains("walk 0 entry 1"), "{error}");

    // Other types: refused too.
    let other = WalkOrder::<Trail>::new().then::<Append<1, 2>>().then::<Append<9, 3>>();
    let error = other.replay_from_run(&run_dir, 1, Vec::new(), |_| {}).unwrap_err();
    assert!(matches!(error, ReplayError::Incompatible { walk: 1, entry: Some(1), .. }), "{error}");
    assert!(error.to_string().contains("recorded Knob"), "{error}");
}

/// A traced run of the demo suite; returns the log dir (keep it alive) and
/// the run directory.
fn demo_run() -> (tempfile::TempDir, std::path::PathBuf) {
    let logs = tempfile::tempdir().unwrap();
    let options = RunOptions::new(demo::Session::default()).threads(2).log_dir(logs.path());
    let report = run(&demo::order(), options.name("demo")).unwrap();
    let dir = report.run_dir.unwrap();
    (logs, dir)
}

#[test]
fn a_crashed_trace_reports_its_cut_off_line_apart_and_every_whole_record_replays() {
    let (_logs, dir) = demo_run();
    // What a crash leaves: run.json as the run's start wrote it, and a last
    // line cut off inside a UTF-8 character (not even valid text).
    let mut meta = read_meta(&dir);
    (meta.ended_at, meta.records, meta.summary) = (None, None, None);
    std::fs::write(dir.join("run.json"), serde_json::to_string(&meta).unwrap()).unwrap();
    let path = dir.join("walks.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let last = lines.pop().unwrap();
    let torn: TraceRecord = serde_json::from_str(last).unwrap();
    let mut bytes = lines.join("\n").into_bytes();
    bytes.extend_from_slice(b"\n");
    bytes.extend_from_slice(&last.as_bytes()[..40]);
    bytes.extend_from_slice(&"é".as_bytes()[..1]);
    std::fs::write(&path, bytes).unwrap();
    let cut = TornTail { path: path.clone(), line: 36 };

    let run_dir = RunDir::open(&dir).unwrap();
    let mut records = run_dir.records().unwrap();
    let read: Vec<(u64, TraceRecord)> = records.by_ref().map(|r| r.unwrap()).collect();
    assert_eq!(read.len(), 35);
    assert_eq!(read.last().unwrap().0, 35);
    assert_eq!(records.torn_tail(), Some(&cut));
    let check = run_dir.check().unwrap();
    assert_eq!((check.records, check.torn_tail.as_ref(), check.finished), (35, Some(&cut), false));
    let trace = run_dir.trace().unwrap();
    let ids: Vec<u64> = trace.records.iter().map(|r| r.walk_id).collect();
    let expected: Vec<u64> = (0..36).filter(|&id| id != torn.walk_id).collect();
    assert_eq!(ids, expected);
    assert_eq!(
        cut.to_string(),
        format!(
            "{} line 36 is cut off (the run stopped while writing it); it is skipped",
            path.display()
        )
    );

    let order = demo::order();
    for &id in &ids {
        let replayed = order.replay_from_run(&run_dir, id, demo::Session::default(), |_| {});
        assert_eq!(replayed.unwrap().model, ModelCheck::Same, "walk {id}");
    }
    let error = order
        .replay_from_run(&run_dir, torn.walk_id, demo::Session::default(), |_| {})
        .unwrap_err();
    assert!(
        matches!(error, ReplayError::Trace(TraceError::Absent { walk, finished: false, .. }) if walk == torn.walk_id),
        "{error}"
    );
}

#[test]
fn every_reader_refuses_a_walk_recorded_twice_with_the_same_error() {
    let (_logs, dir) = demo_run();
    let path = dir.join("walks.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let twice: TraceRecord = serde_json::from_str(lines[1]).unwrap();
    lines.push(lines[1]);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let expected =
        format!("{} has two records of walk {}, on lines 2 and 37", path.display(), twice.walk_id);

    let run_dir = RunDir::open(&dir).unwrap();
    let order = demo::order();
    let mut messages =
        vec![run_dir.check().unwrap_err().to_string(), run_dir.trace().unwrap_err().to_string()];
    // Whichever walk is asked for, the duplicated one or not.
    for walk in [twice.walk_id, (twice.walk_id + 1) % 36] {
        let error = run_dir.find(walk).unwrap_err();
        assert!(matches!(error, TraceError::Duplicate { first: 2, second: 37, .. }), "{error}");
        messages.push(error.to_string());
        let replayed = order.replay_from_run(&run_dir, walk, demo::Session::default(), |_| {});
        messages.push(replayed.unwrap_err().to_string());
    }
    for message in messages {
        assert_eq!(message, expected);
    }
}
