//! Cluster runs with real `serve` processes on 127.0.0.1 (ports picked by
//! their OS): the same results as in-process, node loss by SIGKILL and
//! SIGSTOP, and clear errors for a wrong cookie, a different suite build,
//! an unknown suite and garbage on the node's port. Every process a test
//! starts is killed when its guard drops; every wait is bounded.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use combtest::cluster::{Cluster, ClusterOptions};

mod common;
use common::procs::{BOUND, NODE, coordinate, finish, json, lines, serve, spawn_coordinator};
use common::{example, same_report_as_in_process};

#[test]
fn two_local_nodes_give_the_in_process_results_and_states() {
    // `demo` has a serial action whose value reaches every walk's state;
    // `smoke` has none.
    for name in ["demo", "smoke"] {
        let nodes = ClusterOptions::local(2).program(NODE).node_threads(2).cookie("test-cookie");
        same_report_as_in_process(name, &Cluster::open(nodes).unwrap());
    }
}

#[test]
fn a_traced_cluster_run_writes_one_record_per_walk() {
    let logs = tempfile::tempdir().unwrap();
    let dir = logs.path().to_str().unwrap();
    let (code, out, err) = coordinate(
        Path::new(NODE),
        &["run", "--suite", "demo", "--local-nodes", "2", "--log-dir", dir, "--batch-size", "3"],
    );
    assert_eq!(code, Some(1), "{out}{err}"); // demo has 2 failing walks
    assert!(out.contains("on 2 nodes"), "{out}");
    let run = std::fs::read_dir(logs.path()).unwrap().next().unwrap().unwrap().path();
    let walks = std::fs::read_to_string(run.join("walks.jsonl")).unwrap();
    // Trace format 2: passing walks as ranges, listed back by the reader.
    let trace = combtest::RunDir::open(&run).unwrap().trace().unwrap();
    let ids: Vec<u64> = trace.records.iter().map(|r| r.walk_id).collect();
    assert_eq!(ids, (0..36).collect::<Vec<_>>());
    // Lines name the node that ran the walk: both nodes ran some.
    assert!(walks.contains("\"local-0\"") && walks.contains("\"local-1\""), "{walks}");
    // The run directory reads back whole: `show` checks every record.
    let shown = Command::new(NODE).args(["show", "--run", run.to_str().unwrap()]).output().unwrap();
    assert_eq!(shown.status.code(), Some(0), "{}", String::from_utf8_lossy(&shown.stderr));
    assert!(String::from_utf8_lossy(&shown.stdout).contains("walk 27"));
}

#[test]
fn a_dead_branch_skips_its_serial_action_on_nodes_as_in_process() {
    // `dead`: Prep x Switch(3) x Prep; Switch=2's walks are all pruned in
    // the first segment, so Switch=2 never runs.
    let program = example("cluster_node");
    for extra in [&[][..], &["--local-nodes", "2"][..]] {
        let mut args = vec!["run", "--suite", "dead", "--json"];
        args.extend_from_slice(extra);
        let (code, out, err) = coordinate(&program, &args);
        assert_eq!(code, Some(0), "{out}{err}");
        let report = json(out.trim());
        assert_eq!((report["passed"].as_u64(), report["pruned"].as_u64()), (Some(8), Some(4)));
        assert_eq!(
            (report["serial_actions"].as_u64(), report["serial_skipped"].as_u64()),
            (Some(2), Some(1)),
            "{extra:?}: {out}"
        );
    }
}

#[test]
fn node_logs_reach_the_coordinator_prefixed_with_the_node() {
    let program = example("cluster_node");
    let (code, out, err) =
        coordinate(&program, &["-v", "run", "--suite", "relay", "--local-nodes", "2"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.contains("[local-0]") && err.contains("[local-1]"), "{err}");
    assert!(err.contains("run opened"), "{err}");
}

/// Kills (or stops) one of two nodes when it prints `marker`, and checks
/// the run still accounts for every walk: the lost node's held walks that
/// had passed a serial action are aborted with its name, the rest pass, and
/// the trace has a line for every walk that ended. Returns the aborted
/// count.
fn lose_a_node(signal_name: &str, marker: &str) -> u64 {
    let program = example("cluster_node");
    let (keep, a) = serve(&program, &[], &[]);
    let (lost, b) = serve(&program, &[], &[]);
    let logs = tempfile::tempdir().unwrap();
    let nodes = format!("{a},{b}");
    let coordinator = spawn_coordinator(
        &program,
        &[
            "run",
            "--suite",
            "relay",
            "--nodes",
            &nodes,
            "--heartbeat-timeout",
            "1s",
            "--json",
            "--log-dir",
            logs.path().to_str().unwrap(),
        ],
        &[],
    );
    lost.wait_for(marker);
    lost.signal(signal_name);
    let (code, out, err) = finish(coordinator);
    let report = json(&out);
    let walks = report["walks"].as_u64().unwrap();
    let aborted = report["aborted"].as_u64().unwrap();
    assert_eq!(code, Some(if aborted > 0 { 1 } else { 0 }), "{out}{err}");
    assert_eq!(walks, 200);
    assert_eq!(report["passed"].as_u64().unwrap() + aborted, walks, "{out}");
    assert!(err.contains("node lost"), "{err}");
    if signal_name == "STOP" {
        // A stopped process keeps its connection open: only the heartbeat
        // can tell, and the reason says so.
        assert!(err.contains("missed heartbeats"), "{err}");
    }
    let run = std::fs::read_dir(logs.path()).unwrap().next().unwrap().unwrap().path();
    // Trace format 2: passing walks as ranges, listed back by the reader.
    let trace = combtest::RunDir::open(&run).unwrap().trace().unwrap();
    let mut ids: Vec<u64> = trace.records.iter().map(|r| r.walk_id).collect();
    assert_eq!(ids.len() as u64, walks - aborted, "one record per walk that ended");
    // The aborted walks are named, with the lost node; with the traced
    // ones they make up the space, each walk once.
    let groups = report["aborted_walks"].as_array().unwrap();
    for group in groups {
        let reason = group["reason"].as_str().unwrap();
        assert!(reason.starts_with(&format!("node {b} (pid ")), "{reason}");
        assert!(reason.contains(") lost: "), "{reason}");
        for range in group["walks"].as_array().unwrap() {
            ids.extend(range["start"].as_u64().unwrap()..range["end"].as_u64().unwrap());
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..walks).collect::<Vec<_>>());
    // The surviving node ran the rest.
    drop(keep);
    aborted
}

#[test]
fn a_node_killed_before_any_serial_action_loses_no_walk() {
    // Every walk it held or ran was in its first segment: all run again on
    // the other node.
    assert_eq!(lose_a_node("KILL", "relay: busy"), 0);
}

#[test]
fn a_node_killed_after_a_serial_action_aborts_the_walks_it_held() {
    assert!(lose_a_node("KILL", "relay: late") > 0);
}

#[test]
fn a_stopped_node_is_detected_by_the_heartbeat() {
    assert!(lose_a_node("STOP", "relay: late") > 0);
}

#[test]
fn losing_every_node_ends_the_run_with_the_partial_report() {
    let program = example("cluster_node");
    let (only, a) = serve(&program, &[], &[]);
    let coordinator = spawn_coordinator(
        &program,
        &["run", "--suite", "relay", "--nodes", &a, "--heartbeat-timeout", "1s"],
        &[],
    );
    assert_eq!(only.line(), "relay: busy");
    only.signal("KILL");
    let (code, out, err) = finish(coordinator);
    assert_eq!(code, Some(3), "{out}{err}");
    // The report is still the run's report, on stdout: every walk is in
    // it, those that did not finish aborted with the reason.
    assert!(out.contains("stopped: every node was lost"), "{out}{err}");
    assert!(out.contains("not run: every node was lost"), "{out}");
    assert!(out.lines().any(|l| l == "INCOMPLETE"), "{out}");
}

#[test]
fn a_wrong_cookie_fails_clearly_on_both_sides() {
    let (node, a) = serve(Path::new(NODE), &["--cookie", "right"], &[("COMBTEST_LOG", "info")]);
    let (code, out, err) = coordinate(
        Path::new(NODE),
        &["run", "--suite", "smoke", "--nodes", &a, "--cookie", "wrong"],
    );
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("cookies differ"), "{err}");
    // The node says so too, and keeps serving the right cookie.
    let (code, out, err) = coordinate(
        Path::new(NODE),
        &["run", "--suite", "smoke", "--nodes", &a, "--cookie", "right"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    node.wait_stderr("closed before authenticating: wrong cookie");
}

#[test]
fn a_node_with_another_build_of_the_suite_refuses_the_run() {
    let program = example("cluster_node");
    let (_node, a) = serve(&program, &[], &[("CLUSTER_NODE_VARIANT", "1")]);
    let (code, out, err) = coordinate(&program, &["run", "--suite", "relay", "--nodes", &a]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("refused the run") && err.contains("fingerprint"), "{err}");
    // Both fingerprints are named.
    let hex = err.split(|c: char| !c.is_ascii_hexdigit()).filter(|w| w.len() >= 16).count();
    assert!(hex >= 2, "{err}");
    assert!(out.is_empty(), "no walk ran: {out}");
}

#[test]
fn a_node_without_the_suite_refuses_the_run() {
    // combtest-node has the built-in suites, not `relay`.
    let (_node, a) = serve(Path::new(NODE), &[], &[]);
    let (code, out, err) =
        coordinate(&example("cluster_node"), &["run", "--suite", "relay", "--nodes", &a]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("has no suite 'relay'"), "{err}");
}

#[test]
fn garbage_on_the_port_does_not_stop_the_node() {
    let (mut node, a) = serve(Path::new(NODE), &[], &[]);
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xff; 64][..],
        &[0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3][..],
    ] {
        let mut stream = std::net::TcpStream::connect(&a).unwrap();
        let _ = stream.write_all(garbage);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        // Wait until the node closes the connection (or times out reading).
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = std::io::Read::read_to_end(&mut stream, &mut Vec::new());
    }
    assert!(node.alive(), "the node is still running");
    let (code, out, err) = coordinate(Path::new(NODE), &["run", "--suite", "smoke", "--nodes", &a]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("passed 9"), "{out}");
}

#[test]
fn a_node_refuses_a_cookie_file_others_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cookie");
    std::fs::write(&file, "secret\n").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    // It refuses before binding anything.
    let output = Command::new(NODE)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("COMBTEST_COOKIE")
        .env("COMBTEST_COOKIE_FILE", &file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8(output.stderr).unwrap();
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn a_local_node_exits_when_its_coordinator_goes() {
    // `--local-nodes` children hold this lifeline: a coordinator killed
    // before it can kill them closes their stdin, and they exit.
    let mut child = Command::new(NODE)
        .args(["serve", "--listen", "127.0.0.1:0", "--exit-on-stdin-eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = lines(child.stdout.take().unwrap());
    assert!(stdout.recv_timeout(BOUND).unwrap().starts_with("combtest-node serving on"));
    drop(child.stdin.take());
    let (sender, receiver) = mpsc::channel();
    let id = child.id();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait());
    });
    let status = receiver.recv_timeout(BOUND).unwrap_or_else(|_| {
        let _ = Command::new("kill").args(["-KILL", &id.to_string()]).status();
        panic!("the node did not exit when its stdin closed");
    });
    assert!(status.unwrap().success());
}

#[test]
fn per_node_serial_steps_check_out_on_two_nodes_as_in_process() {
    // `steps`: every walk fails unless its node applied each step of its
    // branch exactly once and last; its states hold open files (not serde,
    // not Clone) and come from a factory.
    let program = example("cluster_node");
    for extra in [&[][..], &["--local-nodes", "2", "--batch-size", "2"][..]] {
        let mut args = vec!["run", "--suite", "steps", "--json"];
        args.extend_from_slice(extra);
        let (code, out, err) = coordinate(&program, &args);
        assert_eq!(code, Some(0), "{extra:?}: {out}{err}");
        let report = json(out.trim());
        assert_eq!((report["walks"].as_u64(), report["passed"].as_u64()), (Some(216), Some(216)));
        assert_eq!(report["serial_actions"].as_u64(), Some(9), "{extra:?}");
    }
}

#[test]
fn a_per_node_step_failing_on_one_node_fails_that_nodes_walks_of_the_branch_only() {
    let program = example("cluster_node");
    let (good, a) = serve(&program, &[], &[]);
    let (bad, b) = serve(&program, &[], &[("STEPS_FAIL", "1")]);
    let nodes = format!("{a},{b}");
    let args = ["run", "--suite", "steps", "--nodes", &nodes, "--batch-size", "1", "--json"];
    let (code, out, err) = coordinate(&program, &args);
    assert_eq!(code, Some(1), "{out}{err}");
    let report = json(out.trim());
    let (passed, failed) = (report["passed"].as_u64().unwrap(), report["failed"].as_u64().unwrap());
    assert_eq!(passed + failed, 216, "{out}");
    // Branch Phase=1 is walks 72..144: its walks on the failing node failed
    // with the step's error; those on the other node passed.
    assert!(failed > 0 && failed < 72, "{out}");
    for walk in report["failed_walks"].as_array().unwrap() {
        let id = walk["walk_id"].as_u64().unwrap();
        assert!((72..144).contains(&id), "walk {id} is not in branch Phase=1");
        let error = walk["error"].as_str().unwrap();
        assert_eq!(error, format!("Phase's step on node {b} failed: the node refuses phase 1"));
    }
    drop((good, bad));
}

#[test]
fn a_node_killed_between_epochs_applies_its_branchs_steps_when_it_comes_back() {
    let program = example("cluster_node");
    let dir = tempfile::tempdir().unwrap();
    let resume = dir.path().join("resume");
    let resume_env = resume.to_str().unwrap();
    let (keep, a) = serve(&program, &[], &[]);
    let (lost, b) = serve(&program, &[], &[("STEPS_RESUME", resume_env)]);
    let nodes = format!("{a},{b}");
    let coordinator = spawn_coordinator(
        &program,
        &[
            "run",
            "--suite",
            "steps",
            "--nodes",
            &nodes,
            "--heartbeat-timeout",
            "1s",
            "--batch-size",
            "1",
            "--json",
        ],
        &[("STEPS_RESUME", resume_env)],
    );
    // The node is killed as it applies Phase=1's step: between the
    // barrier's release of the epoch and any walk of it there.
    lost.wait_for("steps: applied [1]");
    lost.signal("KILL");
    drop(lost);
    // Back on the same address, a new process with nothing applied; the
    // coordinator holds Phase=2 until it has the run open again.
    let mut command = Command::new(&program);
    command.args(["serve", "--listen", &b, "--threads", "2"]).env("STEPS_RESUME", resume_env);
    let back = common::procs::start(command);
    back.wait_for("steps: opened");
    std::fs::write(&resume, b"").unwrap();
    // It runs walks of branch Phase=2 only after applying Phase=2's step,
    // and those of (2, t) after Tilt=t's: the walks check it themselves.
    back.wait_for("steps: applied [2]");
    let (code, out, err) = finish(coordinator);
    let report = json(out.trim());
    let walks = report["walks"].as_u64().unwrap();
    let aborted = report["aborted"].as_u64().unwrap();
    assert_eq!(report["failed"].as_u64(), Some(0), "{out}{err}");
    assert_eq!(report["passed"].as_u64().unwrap() + aborted, walks, "{out}");
    assert_eq!(code, Some(if aborted > 0 { 1 } else { 0 }), "{out}{err}");
    drop((keep, back));
}

#[test]
fn an_async_walk_order_runs_on_two_nodes_as_in_process() {
    let program = example("cluster_node");
    let mut reports = Vec::new();
    for extra in [&[][..], &["--local-nodes", "2", "--batch-size", "4"][..]] {
        let mut args = vec!["run", "--suite", "ticks", "--json"];
        args.extend_from_slice(extra);
        let (code, out, err) = coordinate(&program, &args);
        assert_eq!(code, Some(1), "{extra:?}: {out}{err}"); // 5 walks fail
        let report = json(out.trim());
        let mut failed: Vec<u64> = report["failed_walks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["walk_id"].as_u64().unwrap())
            .collect();
        failed.sort_unstable();
        let counts = ["walks", "passed", "failed", "segments", "serial_actions"]
            .map(|key| report[key].as_u64().unwrap());
        reports.push((counts, failed));
    }
    assert_eq!(reports[0].0, [75, 70, 5, 150, 3]);
    assert_eq!(reports[0], reports[1]);
}

#[test]
fn async_walks_lost_with_a_node_are_rerun_or_aborted_never_blamed() {
    // `ticks` with 30 ms ticks: one node is killed while it has walks in
    // flight; those of the first segment run again elsewhere, those it held
    // past the serial action are aborted with its name, and the only failed
    // walks are the 5 the suite plants.
    let program = example("cluster_node");
    let slow = [("TICKS_SLOW", "1")];
    let (keep, a) = serve(&program, &[], &slow);
    let (lost, b) = serve(&program, &[], &slow);
    let nodes = format!("{a},{b}");
    // Batches of 4 walks: both nodes get some (an async batch is otherwise
    // at least `in_flight` walks: all 75 in one).
    let args = [
        "run",
        "--suite",
        "ticks",
        "--nodes",
        &nodes,
        "--heartbeat-timeout",
        "1s",
        "--batch-size",
        "4",
        "--json",
    ];
    let coordinator = spawn_coordinator(&program, &args, &slow);
    lost.wait_for("ticks: busy");
    lost.signal("KILL");
    let (code, out, err) = finish(coordinator);
    assert_eq!(code, Some(1), "{out}{err}");
    let report = json(out.trim());
    let [walks, passed, failed, aborted] =
        ["walks", "passed", "failed", "aborted"].map(|k| report[k].as_u64().unwrap());
    assert!(err.contains("node lost"), "{err}");
    assert_eq!((walks, failed), (75, 5), "{out}");
    assert_eq!(passed + failed + aborted, walks, "{out}");
    for walk in report["failed_walks"].as_array().unwrap() {
        assert_eq!(walk["error"].as_str(), Some("tick 4 after switch 2"), "{walk}");
    }
    drop(keep);
}
