//! Traced runs through the library: one record per walk id, counts that
//! match `run.json`, replays from the run directory that reproduce the
//! run's errors and final states, and replays after the walk order changed.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use combtest::model::trace::{
    RunMeta, TRACE_FORMAT, TraceLine, TraceOutcome, TraceRecord, parse_any_line,
};
use combtest::suites::demo;
use combtest::trace::TornTail;
use combtest::{
    Action, ActionResult, ModelCheck, ReplayError, RunDir, RunOptions, TraceError, WalkOrder,
    WalkOutcome, cancel, run,
};
use common::{Append, SerialAppend, Trail, format1_run};
use serde::{Deserialize, Serialize};

/// Every walk the trace records, in file order (format 2: a batch record's
/// walks listed one by one by the reader).
fn read_records(dir: &Path) -> Vec<TraceRecord> {
    let text = std::fs::read_to_string(dir.join("walks.jsonl")).unwrap();
    assert!(text.ends_with('\n'), "every line is complete");
    RunDir::open(dir).unwrap().records().unwrap().map(|r| r.unwrap().1).collect()
}

fn read_meta(dir: &Path) -> RunMeta {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap()
}

/// The walks one line of `walks.jsonl` records, by id.
fn walks_of(line: &str) -> Vec<u64> {
    let mut walks: Vec<u64> = match parse_any_line(&format!("{line}\n")).unwrap() {
        TraceLine::Walk(record) => vec![record.walk_id],
        TraceLine::Batch(batch) => {
            batch.passed.iter().chain(&batch.pruned).flat_map(|r| r[0]..r[1]).collect()
        }
        other => panic!("not a line of a run: {other:?}"),
    };
    walks.sort_unstable();
    walks
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
    // Format 2: the last line is a walk record or a batch record.
    let torn = walks_of(last);
    let whole = lines.len() as u64;
    let mut bytes = lines.join("\n").into_bytes();
    bytes.extend_from_slice(b"\n");
    bytes.extend_from_slice(&last.as_bytes()[..40]);
    bytes.extend_from_slice(&"é".as_bytes()[..1]);
    std::fs::write(&path, bytes).unwrap();
    let cut = TornTail { path: path.clone(), line: whole + 1 };
    let left = 36 - torn.len() as u64;

    let run_dir = RunDir::open(&dir).unwrap();
    let mut records = run_dir.records().unwrap();
    let read: Vec<(u64, TraceRecord)> = records.by_ref().map(|r| r.unwrap()).collect();
    assert_eq!(read.len() as u64, left);
    assert_eq!(read.last().unwrap().0, whole);
    assert_eq!(records.torn_tail(), Some(&cut));
    let check = run_dir.check().unwrap();
    assert_eq!(
        (check.records, check.torn_tail.as_ref(), check.finished),
        (left, Some(&cut), false)
    );
    let trace = run_dir.trace().unwrap();
    let ids: Vec<u64> = trace.records.iter().map(|r| r.walk_id).collect();
    let expected: Vec<u64> = (0..36).filter(|id| !torn.contains(id)).collect();
    assert_eq!(ids, expected);
    assert_eq!(
        cut.to_string(),
        format!(
            "{} line {} is cut off (the run stopped while writing it); it is skipped",
            path.display(),
            whole + 1
        )
    );

    let order = demo::order();
    for &id in &ids {
        let replayed = order.replay_from_run(&run_dir, id, demo::Session::default(), |_| {});
        assert_eq!(replayed.unwrap().model, ModelCheck::Same, "walk {id}");
    }
    let error =
        order.replay_from_run(&run_dir, torn[0], demo::Session::default(), |_| {}).unwrap_err();
    assert!(
        matches!(error, ReplayError::Trace(TraceError::Absent { walk, finished: false, .. }) if walk == torn[0]),
        "{error}"
    );
}

#[test]
fn every_reader_refuses_a_walk_recorded_twice_with_the_same_error() {
    let (_logs, dir) = demo_run();
    let path = dir.join("walks.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    // Format 2: the line may be a batch record; the walk named is its first.
    let twice = walks_of(lines[1])[0];
    lines.push(lines[1]);
    let again = lines.len() as u64;
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let expected =
        format!("{} has two records of walk {twice}, on lines 2 and {again}", path.display());

    let run_dir = RunDir::open(&dir).unwrap();
    let order = demo::order();
    let mut messages =
        vec![run_dir.check().unwrap_err().to_string(), run_dir.trace().unwrap_err().to_string()];
    // Whichever walk is asked for, the duplicated one or not.
    for walk in [twice, (twice + 1) % 36] {
        let error = run_dir.find(walk).unwrap_err();
        assert!(
            matches!(error, TraceError::Duplicate { first: 2, second, .. } if second == again),
            "{error}"
        );
        messages.push(error.to_string());
        let replayed = order.replay_from_run(&run_dir, walk, demo::Session::default(), |_| {});
        messages.push(replayed.unwrap_err().to_string());
    }
    for message in messages {
        assert_eq!(message, expected);
    }
}

/// (walk id, outcome, action index, error, actions) of every record, by id.
type Seen = Vec<(u64, TraceOutcome, Option<usize>, Option<String>, Vec<(String, u32)>)>;

fn seen(records: &[TraceRecord]) -> Seen {
    records
        .iter()
        .map(|r| {
            let actions = r.actions.iter().map(|a| (a.type_name.clone(), a.option)).collect();
            (r.walk_id, r.outcome, r.action_index, r.error.clone(), actions)
        })
        .collect()
}

#[test]
fn a_format_2_trace_reads_back_the_walks_a_format_1_trace_gave() {
    // The committed format-1 run and a fresh format-2 run of the same
    // suite: the same walks, outcomes, errors, actions and counts.
    let (_old_logs, old) = format1_run("whole");
    let (_logs, new) = demo_run();
    let (old_dir, new_dir) = (RunDir::open(&old).unwrap(), RunDir::open(&new).unwrap());
    assert_eq!((old_dir.meta().format, new_dir.meta().format), (1, TRACE_FORMAT));
    let (a, b) = (old_dir.trace().unwrap(), new_dir.trace().unwrap());
    assert_eq!(seen(&a.records), seen(&b.records));
    assert_eq!((a.check.records, b.check.records), (36, 36));
    assert_eq!(new_dir.meta().records, Some(36));
    // Values too: run.json's options give the passing walks theirs.
    for (x, y) in a.records.iter().zip(&b.records) {
        let values =
            |r: &TraceRecord| r.actions.iter().map(|a| a.value.clone()).collect::<Vec<_>>();
        assert_eq!(values(x), values(y), "walk {}", x.walk_id);
        // Passing and pruned walks' durations are their batch's.
        match y.outcome {
            TraceOutcome::Passed | TraceOutcome::Pruned => {
                assert!(y.batch_ns.is_some() && y.duration_ns == 0, "{y:?}")
            }
            _ => assert!(y.batch_ns.is_none(), "{y:?}"),
        }
    }
    // Format 2 writes far fewer lines: one per failed or cancelled walk
    // and one per batch.
    let lines =
        |dir: &Path| std::fs::read_to_string(dir.join("walks.jsonl")).unwrap().lines().count();
    let exceptions = 2 + 8;
    assert!(lines(&new) < 36 && lines(&new) > exceptions, "{}", lines(&new));
    // Every walk of either replays from its directory by id.
    let order = demo::order();
    for id in 0..36 {
        for dir in [&old_dir, &new_dir] {
            let replayed = order.replay_from_run(dir, id, demo::Session::default(), |_| {});
            let replayed = replayed.unwrap();
            assert_eq!(replayed.model, ModelCheck::Same, "walk {id}");
        }
    }
}

#[test]
fn the_format_1_fixtures_read_as_they_did() {
    // Whole: every walk, counts as run.json's.
    let (_logs, whole) = format1_run("whole");
    let dir = RunDir::open(&whole).unwrap();
    let trace = dir.trace().unwrap();
    let summary = dir.meta().summary.clone().unwrap();
    assert_eq!(trace.records.len(), 36);
    assert_eq!(trace.check.torn_tail, None);
    assert_eq!(summary.passed, count(&trace.records, TraceOutcome::Passed));
    assert_eq!(summary.failed, count(&trace.records, TraceOutcome::Failed));
    assert_eq!(summary.pruned, count(&trace.records, TraceOutcome::Pruned));
    assert_eq!(
        dir.find(27u64).unwrap().error.as_deref().map(|e| e.starts_with("charged 360")),
        Some(true)
    );

    // Torn: a crashed run, its 21st line cut off: skipped, reported.
    let (_logs, torn) = format1_run("torn");
    let dir = RunDir::open(&torn).unwrap();
    let trace = dir.trace().unwrap();
    let cut = TornTail { path: torn.join("walks.jsonl"), line: 21 };
    assert_eq!((trace.records.len(), trace.check.torn_tail.as_ref()), (20, Some(&cut)));
    assert!(!trace.check.finished);

    // Duplicated: line 4 again as line 11, refused by every reader.
    let (_logs, twice) = format1_run("duplicated");
    let dir = RunDir::open(&twice).unwrap();
    for error in [dir.check().unwrap_err(), dir.trace().unwrap_err(), dir.find(0u64).unwrap_err()] {
        assert!(
            matches!(error, TraceError::Duplicate { walk: 14, first: 4, second: 11, .. }),
            "{error}"
        );
    }
}

/// One of [`wide_order`]'s ten-option entries; the first `KEEP_ZERO`
/// positions prune every option but 0 (a rule read once per subtree).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Digit<const P: usize>(u32);

const KEEP_ZERO: usize = 5;

impl<const P: usize> Action<u64> for Digit<P> {
    fn options() -> Vec<Self> {
        (0..10).map(Digit).collect()
    }
    fn run(&self, sum: &mut u64) -> ActionResult {
        *sum += u64::from(self.0);
        Ok(())
    }
    fn prune(&self, _: &combtest::WalkView<'_>) -> bool {
        P < KEEP_ZERO && self.0 != 0
    }
}

/// 10^9 walks, 10^4 of them kept.
fn wide_order() -> WalkOrder<u64, impl combtest::Entries<u64>> {
    WalkOrder::new()
        .then::<Digit<0>>()
        .then::<Digit<1>>()
        .then::<Digit<2>>()
        .then::<Digit<3>>()
        .then::<Digit<4>>()
        .then::<Digit<5>>()
        .then::<Digit<6>>()
        .then::<Digit<7>>()
        .then::<Digit<8>>()
}

#[test]
fn a_traced_run_of_a_mostly_pruned_space_is_not_cut_into_bounded_batches() {
    // Format 2 records passing and pruned walks as ranges, so a traced
    // batch of walks that end in their epoch needs no length bound: 10^9
    // walks in 2^20-walk batches would be at least 954 batch records (and
    // as many round trips).
    let logs = tempfile::tempdir().unwrap();
    let report = run(&wide_order(), RunOptions::new(0).threads(2).log_dir(logs.path())).unwrap();
    assert_eq!((report.walks, report.counts.passed), (1_000_000_000, 10_000));
    assert_eq!(report.counts.pruned, 1_000_000_000 - 10_000);
    let dir = report.run_dir.expect("a traced run names its directory");
    let text = std::fs::read_to_string(dir.join("walks.jsonl")).unwrap();
    let (mut batches, mut passed, mut pruned) = (0u64, 0u64, 0u64);
    for line in text.lines() {
        match parse_any_line(&format!("{line}\n")).unwrap() {
            TraceLine::Batch(batch) => {
                batches += 1;
                passed += batch.passed.iter().map(|r| r[1] - r[0]).sum::<u64>();
                pruned += batch.pruned.iter().map(|r| r[1] - r[0]).sum::<u64>();
            }
            other => panic!("only batch records expected: {other:?}"),
        }
    }
    assert_eq!((passed, pruned), (report.counts.passed, report.counts.pruned));
    assert!(batches < 954, "{batches} batch records: traced batches are still bounded");
}
