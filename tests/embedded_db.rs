//! `examples/embedded_db.rs`: a real embedded database (redb) under
//! combtest, each walk on a database file of its own from a factory, a
//! serial action acting through the nodes' fixtures. The same report
//! in-process and on 2 local nodes; a planted bug found, with the entries
//! that induce it.

mod common;
use common::example;
use common::procs::{coordinate, json};

/// (walks, passed, failed, segments, serial actions) of a `--json` report.
fn counts(report: &serde_json::Value) -> [u64; 5] {
    ["walks", "passed", "failed", "segments", "serial_actions"]
        .map(|key| report[key].as_u64().unwrap_or_else(|| panic!("no {key}: {report}")))
}

#[test]
fn a_real_database_passes_in_process_and_on_two_nodes_alike() {
    let program = example("embedded_db");
    let mut seen = Vec::new();
    for extra in [&[][..], &["--local-nodes", "2"][..]] {
        let mut args = vec!["run", "--suite", "kv", "--json"];
        args.extend_from_slice(extra);
        let (code, out, err) = coordinate(&program, &args);
        assert_eq!(code, Some(0), "{extra:?}: {out}{err}");
        seen.push(counts(&json(out.trim())));
    }
    assert_eq!(seen[0], [512, 512, 0, 1024, 2]);
    assert_eq!(seen[0], seen[1]);
}

#[test]
fn a_planted_bug_in_the_database_code_is_found_with_its_conditions() {
    let program = example("embedded_db");
    let mut command = std::process::Command::new(&program);
    command.args(["run", "--suite", "kv", "--json"]).env("KV_BUG", "1");
    // Bounded, and killed by pid if it overruns.
    let (code, out, err) = common::procs::start(command).finish();
    assert_eq!(code, Some(1), "{out}{err}");
    let report = json(out.trim());
    // Delete(2) aborts instead of committing: every walk that wrote key 2
    // first and then deleted it reads it back at its next check: 1 x 1 x
    // the 32 combinations of the other entries.
    assert_eq!(report["failed"].as_u64(), Some(32), "{report}");
    let groups = report["failure_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    let text = groups[0]["conditions"]["text"].as_str().unwrap();
    assert_eq!(
        text,
        "fails whenever Write[0]=Write { key: 2, value: 1 } and Delete=Delete(2), whatever the \
         other entries"
    );
}
