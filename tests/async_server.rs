//! Async actions against a real server (issue 16): `examples/async_server.rs`
//! starts a TCP key-value service of its own on 127.0.0.1 (a port the OS
//! picks) and runs a suite whose walks are its async clients. Its binary
//! passes, and fails with the planted bug; in this process, the same suite
//! runs against a server this test starts, and walks replay alone with the
//! outcome they had in the run.

use std::process::Command;
use std::sync::Arc;
use std::sync::mpsc;

use combtest::prelude::*;

mod common;
use common::procs::{self, BOUND};

/// The example, as a module: its server, its suite and its options.
#[allow(dead_code)]
#[path = "../examples/async_server.rs"]
mod async_server;
use async_server::{Client, Gauge, Server, client, fixtures, options, order};

/// 9 × 9 × 3 × 9 × 3 × 1.
const WALKS: u64 = 6561;

/// Runs the example binary with `env` and `--json` (bounded: killed after
/// `BOUND`), and returns its exit code and report.
fn run_example(env: &[(&str, &str)]) -> (Option<i32>, serde_json::Value) {
    let mut command = Command::new(common::example("async_server"));
    command.arg("--json").env_remove("ASYNC_SERVER_BUG").envs(env.iter().copied());
    let (code, out, err) = procs::start(command).finish();
    let report = procs::json(&out);
    assert!(report["walks"].is_u64(), "no report: {out}\n{err}");
    (code, report)
}

#[test]
fn the_example_passes_against_its_own_server() {
    let (code, report) = run_example(&[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["walks"], WALKS);
    assert_eq!(report["passed"], WALKS);
    assert_eq!((report["failed"].as_u64(), report["aborted"].as_u64()), (Some(0), Some(0)));
    let server = &report["server"];
    assert!(server["addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{server}");
    assert_eq!(server["bug"], false);
    // One connection per walk, each opened by its walk's first request.
    assert_eq!(server["connections"], WALKS);
    assert_eq!(server["forgotten_sets"], 0);
    // 2 runner threads × 256 walks in flight: many walks await the server
    // at once, never more than that.
    let waiting = report["peak_requests_waiting"].as_u64().unwrap();
    assert!((2..=512).contains(&waiting), "requests waiting at once: {waiting}");
}

#[test]
fn the_planted_bug_fails_walks() {
    let (code, report) = run_example(&[("ASYNC_SERVER_BUG", "1")]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["walks"], WALKS);
    let (passed, failed) = (report["passed"].as_u64().unwrap(), report["failed"].as_u64().unwrap());
    assert!(failed > 0, "{report}");
    assert_eq!(passed + failed, WALKS);
    // Each walk has keys of its own: a walk fails only for a SET of its
    // own that the server forgot.
    let forgotten = report["server"]["forgotten_sets"].as_u64().unwrap();
    assert!(failed <= forgotten, "{failed} failed walks, {forgotten} forgotten SETs");
    for walk in report["failed_walks"].as_array().unwrap() {
        let error = walk["error"].as_str().unwrap();
        assert!(error.contains("answered"), "not a wrong answer: {walk}");
    }
    // The failures gather into a few groups (by action, key and answer),
    // not one per walk.
    let groups = report["failure_groups"].as_array().unwrap().len();
    assert!((1..=40).contains(&groups), "{groups} failure groups");
}

/// Runs `f` on a thread of its own, failing if it takes longer than
/// `BOUND` (the walks' own requests time out well before).
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match receiver.recv_timeout(BOUND) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("did not finish within {BOUND:?}"),
    }
}

/// Runs the suite against a server this test starts (`forget_every` as in
/// `Server::start`), gathering the final states.
fn run_against(forget_every: Option<u64>) -> Report<Client> {
    let server = Server::start(forget_every).expect("the server starts");
    let gauge = Arc::new(Gauge::default());
    let options = options(server.addr(), &gauge).gather_states(true);
    let report = run(&order(), options).expect("the walk order runs");
    drop(server);
    report
}

/// Replays walk `id` alone against a fresh server (the run's server still
/// holds the run's keys), with fixtures and a starting state made as the
/// run made them.
fn replay_alone(id: WalkId, forget_every: Option<u64>) -> combtest::Replay<Client> {
    let server = Server::start(forget_every).expect("the server starts");
    let fixtures = fixtures(server.addr(), &Arc::new(Gauge::default()));
    let state = client(&fixtures, id).expect("a client");
    order().replay_in(id, state, &fixtures, |_| {}).expect("the walk replays")
}

#[test]
fn walks_run_in_process_and_replay_alone_with_the_same_outcome() {
    bounded(|| {
        let report = run_against(None);
        assert_eq!((report.walks, report.counts.passed), (WALKS, WALKS), "{report}");
        assert_eq!(report.states.len() as u64, WALKS);
        for (id, state) in report.states.iter().step_by(997) {
            let replay = replay_alone(*id, None);
            assert_eq!(replay.outcome, WalkOutcome::Passed, "walk {id}");
            assert_eq!(replay.state.model, state.model, "walk {id}");
            assert_eq!(replay.state.requests, state.requests, "walk {id}");
        }
    });
}

#[test]
fn a_server_that_forgets_every_set_fails_the_same_walks_in_a_run_and_alone() {
    bounded(|| {
        // Forgetting every SET (not every 7th, which depends on how the
        // walks interleave) fails the same walks whatever the timing: a
        // walk fails exactly when it reads back a key it set.
        let report = run_against(Some(1));
        assert!(report.counts.failed > 0 && report.counts.passed > 0, "{report}");
        assert_eq!(report.counts.passed + report.counts.failed, WALKS);
        // A walk that only deletes and reads passes.
        let only_dels = order().id_of(&[6, 7, 0, 8, 1, 0]).unwrap();
        assert!(report.failed_walks.iter().all(|f| f.walk_id != only_dels));
        assert!(report.states.contains_key(&only_dels));
        for failed in report.failed_walks.iter().step_by(101) {
            let replay = replay_alone(failed.walk_id, Some(1));
            match &replay.outcome {
                WalkOutcome::Failed { action_index, error, .. } => {
                    assert_eq!(*action_index, failed.action_index, "walk {}", failed.walk_id);
                    assert_eq!(error, &failed.error, "walk {}", failed.walk_id);
                }
                other => panic!("walk {} replayed as {other:?}", failed.walk_id),
            }
        }
    });
}
