//! Faults that short, happy runs never meet, each as it was first seen
//! (issue 14's observations), with real processes on 127.0.0.1: fast rounds
//! that used to reconnect (and collide) every round, two node losses close
//! together, Ctrl-C while a walk hangs, endings that printed no report, a
//! coordinator paused longer than its heartbeat, silent connections piling
//! up on a node, forwarded logs feeding themselves. Every process is killed
//! by pid when its guard drops; every wait is bounded.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;
use common::example;
use common::procs::{
    NODE, Proc, coordinate, finish, json, serve, signal, spawn_coordinator, start, walks_of,
};

/// The counts of a report (or a soak's totals) sum to its walks.
fn assert_sums(report: &serde_json::Value) {
    let n = |key: &str| report[key].as_u64().unwrap_or(0);
    let sum =
        n("passed") + n("failed") + n("cancelled") + n("pruned") + n("aborted") + n("not_run");
    assert_eq!(sum, n("walks"), "{report}");
}

#[test]
fn fast_rounds_on_nodes_keep_one_session_per_node() {
    // Observation 1: every round connected anew under the coordinator's one
    // name, and a node still holding the last round's session refused the
    // next. Now the soak opens one membership: each node accepts exactly
    // one session from it, however many rounds run.
    let log = [("COMBTEST_LOG", "info")];
    let (a, first) = serve(Path::new(NODE), &[], &log);
    let (b, second) = serve(Path::new(NODE), &[], &log);
    let nodes = format!("{first},{second}");
    let args = ["soak", "--suite", "smoke", "--nodes", &nodes, "--threads", "1", "--rounds", "200"];
    let (code, out, err) = coordinate(Path::new(NODE), &[&args[..], &["--json"]].concat());
    assert_eq!(code, Some(0), "{out}{err}");
    let report = json(&out);
    assert_eq!(report["totals"]["rounds"], 200, "{out}");
    assert_eq!(report["totals"]["walks"], 1800, "{out}");
    assert_eq!(report["ending"], "completed", "{out}");
    for node in [&a, &b] {
        // The coordinator is gone: each node logs its session's end.
        let log = node.wait_stderr("coordinator disconnected");
        assert_eq!(log.matches("coordinator authenticated").count(), 1, "{log}");
        assert_eq!(log.matches("run opened").count(), 200, "{log}");
    }
    // Local nodes: one session each too (their log lines share this
    // stderr).
    let local = ["soak", "--suite", "smoke", "--local-nodes", "2", "--threads", "1"];
    let (code, out, err) = finish(spawn_coordinator(
        Path::new(NODE),
        &[&local[..], &["--rounds", "100", "--json"]].concat(),
        &log,
    ));
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(err.matches("coordinator authenticated").count(), 2, "{err}");
}

#[test]
fn two_node_losses_close_together_fail_no_walk() {
    // Observation 2: three nodes, two killed 3 ms apart. Walks that were
    // only queued on a lost node used to be blamed for it. They are rerun
    // (alone, as suspects); none fails.
    let program = example("cluster_node");
    for _ in 0..3 {
        let nodes: Vec<(Proc, String)> = (0..3).map(|_| serve(&program, &[], &[])).collect();
        let addresses: Vec<&str> = nodes.iter().map(|(_, a)| a.as_str()).collect();
        let all = addresses.join(",");
        let coordinator = spawn_coordinator(
            &program,
            &[
                "run",
                "--suite",
                "relay",
                "--nodes",
                &all,
                "--threads",
                "4",
                "--batch-size",
                "4",
                "--heartbeat-timeout",
                "1s",
                "--json",
            ],
            &[],
        );
        nodes[0].0.wait_for("relay: busy");
        nodes[0].0.signal("KILL");
        std::thread::sleep(Duration::from_millis(3)); // The fault's spacing, not a wait.
        nodes[1].0.signal("KILL");
        let (code, out, err) = finish(coordinator);
        let report = json(&out);
        assert_sums(&report);
        assert_eq!(report["failed"], 0, "{out}{err}");
        assert_eq!(report["ending"], "completed", "{out}");
        // Killed in the first segment: every walk reran on the third node.
        assert_eq!(report["passed"], 200, "{out}");
        assert_eq!(code, Some(0), "{out}{err}");
    }
}

#[test]
fn ctrl_c_while_a_walk_hangs_reports_every_walk() {
    // Observation 3: the stop printed only finished rounds ("walks 2,
    // passed 0, PASS") and lost the panicked and the hung walk. Now the
    // round's report accounts for all 200 walks: the hung one (and its
    // batch) given up after the grace, the ones never started not run, the
    // panics failed; it is not a pass. A chaos soak has no walk timeout
    // here, so walk 55 hangs for a minute.
    let program = example("cluster_node");
    let mut command = Command::new(&program);
    command.args(["soak", "--suite", "chaos", "--rounds", "5", "--stop-grace", "2s", "--json"]);
    let soak = start(command);
    soak.wait_for("chaos: hanging");
    soak.signal("INT");
    let (code, out, err) = soak.finish();
    let report = json(&out);
    assert_eq!(code, Some(1), "{out}{err}");
    let totals = &report["totals"];
    assert_eq!(totals["walks"], 200, "{out}");
    assert_sums(totals);
    assert_eq!(report["ending"], "interrupted", "{out}");
    let hung = walks_of(&report["aborted"], "hung when the run was interrupted");
    assert!(hung.contains(&55), "{out}");
    let failures = report["failures"].as_array().unwrap().len() as u64;
    assert_eq!(totals["failed"].as_u64(), Some(failures), "{out}");

    // On two local nodes (where "walks 96, passed 0, failed 1, failures:
    // []" came out). The hang is on a node: wait until the first round
    // stalls on it (five status lines in a row count the same walks), then
    // Ctrl-C.
    let mut command = Command::new(&program);
    command.args(["soak", "--suite", "chaos", "--rounds", "5", "--stop-grace", "2s"]);
    command.args(["--local-nodes", "2", "--threads", "1", "--stats-every", "100ms"]);
    let soak = start(command);
    let walks = |line: &str| -> u64 {
        let rest = line.split(" rounds, ").nth(1).unwrap_or_default();
        rest.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    let (mut last, mut same) = (0, 0);
    while same < 5 {
        let line = soak.line();
        if !line.starts_with("soak: ") {
            continue;
        }
        assert!(line.contains(" 0 rounds, "), "the first round ended: {line}");
        let now = walks(&line);
        same = if now == last && now >= 100 { same + 1 } else { 0 };
        last = now;
    }
    soak.signal("INT");
    let (code, out, err) = soak.finish();
    assert_eq!(code, Some(1), "{out}{err}");
    let last: Vec<&str> = out.lines().rev().take(12).collect();
    assert!(
        out.contains("aborted") && out.contains("walks: hung when the run was interrupted"),
        "{last:?}"
    );
    assert!(out.lines().any(|l| l == "FAIL"), "{last:?}");
    // "passed P  failed F  cancelled C  pruned R  aborted A  not run N":
    // they make 200.
    let counts = out.lines().rev().find(|l| l.trim_start().starts_with("passed ")).unwrap();
    let numbers: Vec<u64> = counts.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(numbers[..6].iter().sum::<u64>(), 200, "{counts}");
}

#[test]
fn every_ending_prints_its_report() {
    // Observation 4: losing every node printed a partial report on stderr
    // ("in 0.000 s") and left run.json without a summary. Now it is the
    // run's report, JSON with --json, and run.json has it.
    let program = example("cluster_node");
    let (only, a) = serve(&program, &[], &[]);
    let logs = tempfile::tempdir().unwrap();
    let dir = logs.path().to_str().unwrap();
    let args = [
        "run",
        "--suite",
        "relay",
        "--nodes",
        &a,
        "--heartbeat-timeout",
        "1s",
        "--json",
        "--log-dir",
        dir,
    ];
    let coordinator = spawn_coordinator(&program, &args, &[]);
    only.wait_for("relay: busy");
    only.signal("KILL");
    let (code, out, err) = finish(coordinator);
    assert_eq!(code, Some(3), "{out}{err}");
    let report = json(&out);
    assert_sums(&report);
    assert_eq!(report["ending"], "all_nodes_lost", "{out}");
    assert!(report["elapsed_s"].as_f64().unwrap() > 0.0, "{out}");
    let unrun = walks_of(&report["aborted_walks"], "not run: every node was lost");
    assert!(!unrun.is_empty(), "{out}");
    let run = std::fs::read_dir(logs.path()).unwrap().next().unwrap().unwrap().path();
    let meta = json(&std::fs::read_to_string(run.join("run.json")).unwrap());
    assert_eq!(meta["summary"]["ending"], "all_nodes_lost", "{meta}");
    assert!(meta["ended_at"].is_string(), "{meta}");

    // The restart limit stops a soak (every round crashes nodes: the
    // aborting walk, the hang; one restart is allowed in ten minutes): the
    // broken round's walks that never ran are listed, with the reason.
    let (code, out, err) = finish(spawn_coordinator(
        &program,
        &[
            "soak",
            "--suite",
            "chaos",
            "--rounds",
            "20",
            "--local-nodes",
            "2",
            "--threads",
            "1",
            "--walk-timeout",
            "1s",
            "--max-restarts",
            "1",
            "--restart-window",
            "10m",
            "--json",
        ],
        &[("CHAOS_ABORT", "1")],
    ));
    assert_eq!(code, Some(3), "{out}{err}");
    let report = json(&out);
    assert_eq!(report["ending"], "restart_limit", "{out}");
    let why = report["ending_reason"].as_str().unwrap();
    assert!(why.contains("more than 1 node restarts"), "{out}");
    let totals = &report["totals"];
    assert_sums(totals);
    let rounds = totals["rounds"].as_u64().unwrap();
    let cut = totals["interrupted_rounds"].as_u64().unwrap();
    assert_eq!(totals["walks"].as_u64().unwrap(), 200 * (rounds + cut), "{out}");
    if cut == 1 {
        // Stopped mid-round: the round's walks that did not run are listed.
        let unrun = walks_of(&report["aborted"], "the restart limit was reached");
        assert!(!unrun.is_empty(), "{out}");
    }
}

#[test]
fn ctrl_c_twice_before_a_round_ends_still_writes_the_report() {
    // Observation 4, second part: two Ctrl-C before the first round ended
    // printed nothing with --json and wrote no soak.json.
    let program = example("cluster_node");
    let logs = tempfile::tempdir().unwrap();
    let mut command = Command::new(&program);
    command
        .args(["soak", "--suite", "chaos", "--rounds", "5", "--json", "--log-dir"])
        .arg(logs.path());
    let soak = start(command);
    soak.wait_for("chaos: hanging");
    soak.signal("INT");
    soak.signal("INT");
    let (code, out, err) = soak.finish();
    assert_eq!(code, Some(1), "{out}{err}");
    let report = json(&out);
    assert_eq!(report["ending"], "interrupted", "{out}");
    assert_eq!(report["totals"]["walks"], 200, "{out}");
    assert_sums(&report["totals"]);
    let dir = std::fs::read_dir(logs.path()).unwrap().next().unwrap().unwrap().path();
    let meta = json(&std::fs::read_to_string(dir.join("soak.json")).unwrap());
    assert_eq!(meta["totals"], report["totals"]);
}

#[test]
fn a_coordinator_paused_past_its_heartbeat_resumes() {
    // Observation 5: a coordinator stopped for 5 s with a 2 s heartbeat came
    // back to find its runs dropped and ended with "every node was lost",
    // though both nodes answered. Its own pause does not count against its
    // nodes, and a node keeps a run whose lease ran out suspended until its
    // coordinator pings it again: nothing is lost.
    let program = example("cluster_node");
    let (first, a) = serve(&program, &[], &[]);
    let (_second, b) = serve(&program, &[], &[]);
    let nodes = format!("{a},{b}");
    let args =
        ["run", "--suite", "relay", "--nodes", &nodes, "--heartbeat-timeout", "1s", "--json"];
    let coordinator = spawn_coordinator(&program, &args, &[]);
    let pid = coordinator.id();
    first.wait_for("relay: busy");
    signal(pid, "STOP");
    std::thread::sleep(Duration::from_secs(3)); // The fault: a 3 s pause.
    signal(pid, "CONT");
    let (code, out, err) = finish(coordinator);
    assert_eq!(code, Some(0), "{out}{err}");
    let report = json(&out);
    assert_eq!(
        (report["passed"].as_u64(), report["ending"].as_str()),
        (Some(200), Some("completed"))
    );

    // Paused past the node's grace too (1 s here): the nodes drop the run.
    // It is reopened on them; held walks are aborted with the reason, the
    // rest run; the run is never "every node lost".
    let grace = ["--run-grace", "1s"];
    let (first, a) = serve(&program, &grace, &[]);
    let (_second, b) = serve(&program, &grace, &[]);
    let nodes = format!("{a},{b}");
    let args =
        ["run", "--suite", "relay", "--nodes", &nodes, "--heartbeat-timeout", "1s", "--json"];
    let coordinator = spawn_coordinator(&program, &args, &[]);
    let pid = coordinator.id();
    first.wait_for("relay: late");
    signal(pid, "STOP");
    std::thread::sleep(Duration::from_secs(4)); // The fault: past lease and grace.
    signal(pid, "CONT");
    let (code, out, err) = finish(coordinator);
    let report = json(&out);
    assert_sums(&report);
    assert_eq!(report["ending"], "completed", "{out}{err}");
    assert_eq!(report["failed"], 0, "{out}");
    let dropped = walks_of(&report["aborted_walks"], "dropped the run");
    assert_eq!(dropped.len() as u64, report["aborted"].as_u64().unwrap(), "{out}");
    assert_eq!(code, Some(if dropped.is_empty() { 0 } else { 1 }), "{out}{err}");
    assert!(!err.contains("every node was lost"), "{err}");
}

#[test]
fn silent_connections_do_not_block_a_node() {
    // Observation 6: 1,100 silent connections used up a node's 1,024 file
    // descriptors and a real coordinator failed. Here the node has 64, more
    // silent connections than that arrive, and a real run still succeeds:
    // unauthenticated connections are capped (a quarter of the limit) and
    // closed after the authentication deadline.
    let script = format!(
        "ulimit -n 64 && exec {NODE} serve --listen 127.0.0.1:0 --threads 1 --auth-timeout 1s"
    );
    let mut command = Command::new("sh");
    command.args(["-c", &script]);
    let node = start(command);
    let ready = node.line();
    let address = ready.split_whitespace().nth(3).unwrap().to_string();
    let silent: Vec<std::net::TcpStream> =
        (0..200).filter_map(|_| std::net::TcpStream::connect(&address).ok()).collect();
    assert!(silent.len() >= 64, "{} silent connections", silent.len());
    let (code, out, err) =
        coordinate(Path::new(NODE), &["run", "--suite", "smoke", "--nodes", &address]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("passed 9"), "{out}");
    drop(silent);
    node.wait_stderr("refusing connections");
    node.wait_stderr("no authentication within 1s");
}

#[test]
fn each_close_before_authentication_says_why() {
    // Observation 6: a close before authentication was always "the cookies
    // differ". Each cause now says what it is, on both sides (a wrong
    // cookie: tests/cluster.rs).
    // The cap: one connection may wait; a second is closed at once.
    let (node, address) =
        serve(Path::new(NODE), &["--max-pending", "1", "--auth-timeout", "30s"], &[]);
    let _waiting = std::net::TcpStream::connect(&address).unwrap();
    let (code, out, err) =
        coordinate(Path::new(NODE), &["run", "--suite", "smoke", "--nodes", &address]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("refused it (it is at its cap of unauthenticated connections"), "{err}");
    node.wait_stderr("refusing connections");
    drop(node);

    // The deadline: a connection that sends nothing is closed after it.
    let (node, address) = serve(Path::new(NODE), &["--auth-timeout", "200ms"], &[]);
    let mut silent = std::net::TcpStream::connect(&address).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let closed = std::io::Read::read(&mut silent, &mut [0; 8]);
    assert!(matches!(closed, Ok(0) | Err(_)), "closed by the node: {closed:?}");
    let (code, out, err) =
        coordinate(Path::new(NODE), &["run", "--suite", "smoke", "--nodes", &address]);
    assert_eq!(code, Some(0), "{out}{err}");
    node.wait_stderr("no authentication within 200ms");

    // Not a coordinator at all.
    let mut garbage = std::net::TcpStream::connect(&address).unwrap();
    garbage.write_all(&[0, 0, 0, 0, 0, 0, 0, 2, 0xff, 0xff]).unwrap();
    let _ = std::io::Read::read(&mut garbage, &mut [0; 8]);
    drop(garbage);
    node.wait_stderr("not a combtest coordinator");
}

#[test]
fn forwarded_logs_stay_bounded_and_belong_to_their_run() {
    // Observation 7: with ractor_cluster at debug, every heartbeat's log
    // lines were logged again and forwarded again: nodes grew to 1.1 GiB and
    // the coordinator wrote ~1 GB of stderr in 25 s. Lines of ractor and
    // ractor_cluster are never forwarded, a run gets only its own lines, and
    // nothing is coloured when stderr is not a terminal.
    let program = example("cluster_node");
    let (code, out, err) = finish(spawn_coordinator(
        &program,
        &["soak", "--suite", "relay", "--local-nodes", "2", "--duration", "4s", "--json"],
        &[("COMBTEST_LOG", "warn,ractor_cluster=debug")],
    ));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(err.len() < 4 << 20, "{} bytes of stderr in 4 s", err.len());
    assert!(!err.contains('\x1b'), "colour codes on a pipe");
    let forwarded = err.lines().filter(|l| l.contains("combtest::node") && l.contains("ractor"));
    assert_eq!(forwarded.count(), 0, "ractor's lines forwarded from a node");
}

#[test]
fn a_second_session_under_one_name_is_named_a_duplicate() {
    // The last cause of a close before authentication: two sessions under
    // one name (combtest coordinators name every connection apart; a peer
    // of ractor_cluster's own may not). Whichever ractor_cluster keeps, the
    // node says what happened.
    let (node, address) = serve(Path::new(NODE), &["--cookie", "dup"], &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let server = ractor_cluster::NodeServer::new(
            0,
            "dup".to_string(),
            "twice".to_string(),
            "127.0.0.1".to_string(),
            None,
            None,
        )
        .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into());
        let (server, _) = ractor::Actor::spawn(None, server, ()).await.unwrap();
        for _ in 0..2 {
            ractor_cluster::client_connect(&server, address.as_str()).await.unwrap();
        }
        node.wait_stderr("duplicate connection");
        server.stop(None);
    });
}

/// Processes whose parent is `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // "pid (comm) state ppid ...": the fields after the command's ')'.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if after.split_whitespace().nth(1) == Some(&pid.to_string()) {
            found.push(child);
        }
    }
    found
}

#[test]
fn the_cookie_never_shows_in_a_local_nodes_command_line_or_environment() {
    // Local nodes get the coordinator's cookie on their standard input:
    // not in /proc/PID/cmdline or /proc/PID/environ, which other users (or
    // other processes of the user) can read.
    let secret = format!("s3cret-{}", std::process::id());
    let mut command = Command::new(NODE);
    command
        .args(["soak", "--suite", "smoke", "--local-nodes", "2", "--threads", "1"])
        .args(["--duration", "60s", "--stats-every", "50ms"])
        .env("COMBTEST_COOKIE", &secret);
    let soak = start(command);
    soak.wait_for_prefix("soak: ");
    let nodes = children(soak.pid);
    assert_eq!(nodes.len(), 2, "the local nodes: {nodes:?}");
    for node in nodes {
        let cmdline = std::fs::read(format!("/proc/{node}/cmdline")).unwrap();
        let environ = std::fs::read(format!("/proc/{node}/environ")).unwrap();
        let has = |bytes: &[u8]| bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!has(&cmdline), "the cookie is in node {node}'s command line");
        assert!(!has(&environ), "the cookie is in node {node}'s environment");
        assert!(String::from_utf8_lossy(&cmdline).contains("--cookie-stdin"));
    }
    soak.signal("INT");
    let (code, out, err) = soak.finish();
    assert!(matches!(code, Some(0) | Some(1)), "{out}{err}");
}
