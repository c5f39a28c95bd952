//! The `combtest-node` binary as a user runs it: output, JSON keys, exit
//! codes.

mod common;

use common::{node, stderr, stdout};

#[test]
fn list_shows_every_builtin_suite_with_counts_and_trees() {
    let output = node(&["list"]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    assert!(text.contains("demo:") && text.contains("36 walks"), "{text}");
    assert!(text.contains("fs:") && text.contains("2592 walks"), "{text}");
    assert!(text.contains("Pricing=Discount then [Checkout] on walks 18..36"), "{text}");
}

#[test]
fn json_output_has_at_least_the_documented_keys() {
    let output = node(&["run", "--suite", "demo", "--json", "--threads", "3"]);
    // The demo suite has two planted failures.
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    let object = value.as_object().unwrap();
    // README: "one JSON object with at least the keys ..." (new keys may
    // come; none of these goes).
    for key in [
        "walks",
        "passed",
        "failed",
        "cancelled",
        "pruned",
        "aborted",
        "not_run",
        "segments",
        "serial_actions",
        "runner_restarts",
        "elapsed_s",
        "failed_walks",
        "aborted_walks",
        "not_run_walks",
        "ending",
        "failure_groups",
    ] {
        assert!(object.contains_key(key), "{key} missing: {value}");
    }
    assert_eq!(value["ending"], "completed");
    assert_eq!(value["not_run"], 0);
    assert_eq!(value["walks"], 36);
    assert_eq!((value["passed"].as_u64(), value["failed"].as_u64()), (Some(20), Some(2)));
    assert_eq!((value["cancelled"].as_u64(), value["pruned"].as_u64()), (Some(8), Some(6)));
    let failed = value["failed_walks"].as_array().unwrap();
    let ids: Vec<u64> = failed.iter().map(|f| f["walk_id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [27, 29]);
    for failure in failed {
        let mut keys: Vec<&str> = failure.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["action", "action_index", "error", "walk_id"]);
        assert_eq!(failure["action"], "Checkout");
    }
    let groups = value["failure_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    let group = &groups[0];
    for key in ["signature", "count", "walk_ids", "minimal_walk", "conditions"] {
        assert!(group.get(key).is_some(), "{key} missing: {group}");
    }
    assert_eq!(group["count"], 2);
    assert_eq!(group["walk_ids"], serde_json::json!([27, 29]));
    assert_eq!(group["minimal_walk"]["walk_id"], 27);
    assert_eq!(group["minimal_walk"]["replay"], "combtest-node replay --suite demo --walk 27");
    assert_eq!(group["conditions"]["found"], true);
    let terms: Vec<&str> = group["conditions"]["terms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["action"].as_str().unwrap())
        .collect();
    assert_eq!(terms, ["Login", "Pricing", "Checkout"]);
}

#[test]
fn human_summary_shows_failure_groups_with_their_minimal_walks() {
    let output = node(&["run", "--suite", "demo"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains("passed 20  failed 2  cancelled 8  pruned 6  aborted 0"), "{text}");
    assert!(text.contains("failure groups: 1 (2 failed walks)"), "{text}");
    assert!(
        text.contains("minimal walk 27: Checkout (entry 3) failed: charged 360 cents"),
        "{text}"
    );
    assert!(text.contains("[Login=Bob, AddItems=AddItems(1), *Pricing=Discount"), "{text}");
    assert!(text.trim_end().ends_with("FAIL"));
}

#[test]
fn the_filesystem_suite_passes() {
    let output = node(&["run", "--suite", "fs", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let value: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!((value["walks"].as_u64(), value["passed"].as_u64()), (Some(2592), Some(2592)));
    assert_eq!(value["serial_actions"], 2);
}

#[test]
fn bad_input_exits_2_with_a_one_line_message() {
    let output = node(&["run", "--suite", "nope"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("unknown suite 'nope' (available: demo, fs, smoke)"), "{text}");

    let output = node(&["run", "--suite", "demo", "--threads", "0"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--threads"));

    let output = node(&["run", "--suite", "demo", "--threads", "many"]);
    assert_eq!(output.status.code(), Some(2));

    let output = node(&["frobnicate"]);
    assert_eq!(output.status.code(), Some(2));

    // More walks per round than a sample holds: refused as it is parsed.
    let output = node(&["soak", "--suite", "demo", "--rounds", "1", "--sample", "4294967296"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--sample"), "{}", stderr(&output));
}

#[test]
fn help_explains_and_exits_0() {
    let output = node(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    assert!(text.contains("Exit codes") && text.contains("list") && text.contains("run"));
    let output = node(&["run", "--help"]);
    assert!(stdout(&output).contains("--threads"));
}

#[test]
fn the_readmes_serve_line_is_what_serve_prints() {
    // README shows the line `serve` prints when it listens; it names the
    // protocol version, which must be this build's.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let sample = readme
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("# prints: "))
        .expect("README shows the line serve prints");
    let version = combtest::cluster::wire::PROTOCOL_VERSION;
    assert!(sample.ends_with(&format!("(protocol {version})")), "README: {sample}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_combtest-node"))
        .args(["serve", "--listen", "127.0.0.1:0", "--cookie", "readme", "--exit-on-stdin-eof"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let read = std::io::BufRead::read_line(&mut reader, &mut line);
    let _ = child.kill();
    let _ = child.wait();
    read.unwrap();
    let shape = |l: &str| -> Vec<String> {
        l.split_whitespace()
            .map(|w| if w.contains(':') { "ADDRESS".to_string() } else { w.to_string() })
            .collect()
    };
    assert_eq!(shape(line.trim()), shape(sample), "README: {sample}\nserve: {line}");
}

#[test]
fn small_things_a_new_user_tripped_on() {
    // Singular where it is one.
    let output = node(&["run", "--suite", "smoke", "--threads", "1"]);
    let text = stdout(&output);
    assert!(text.starts_with("suite smoke: 9 walks in "), "{text}");
    assert!(text.contains(" on 1 runner thread\n"), "{text}");

    // A bad duration says what is accepted, on one line.
    for args in [
        &["run", "--suite", "smoke", "--stop-grace", "abc"][..],
        &["soak", "--suite", "smoke", "--duration", "10x"][..],
    ] {
        let output = node(args);
        assert_eq!(output.status.code(), Some(2));
        let first = stderr(&output).lines().next().unwrap_or_default().to_string();
        assert!(
            first.ends_with(
                "not a duration: use a number and a unit, such as 30s, 500ms, 5m or 1h30m"
            ),
            "{first}"
        );
    }

    // A walk outside the space: the error alone, no header before it.
    let output = node(&["replay", "--suite", "demo", "--walk", "99"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stdout(&output), "");
    assert_eq!(
        stderr(&output).trim(),
        "error: walk id 99 is not in the space: valid ids are 0..36"
    );

    // --run given the trace file instead of its directory.
    let logs = tempfile::tempdir().unwrap();
    node(&["run", "--suite", "demo", "--log-dir", logs.path().to_str().unwrap()]);
    let dir = std::fs::read_dir(logs.path()).unwrap().next().unwrap().unwrap().path();
    let file = dir.join("walks.jsonl");
    let output = node(&["replay", "--run", file.to_str().unwrap(), "--walk", "1"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output).trim(),
        format!("error: {} is a file: pass its run directory, {}", file.display(), dir.display())
    );
}

#[test]
fn a_node_nobody_serves_is_one_line_saying_what_to_do() {
    // A port nothing listens on (bound, then closed).
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let cookie = common::cookie_file();
    let cookie = cookie.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Each waits for the handshake's time (the node may be starting), so
    // the two run at once.
    let (run, soak) = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            common::node_in(
                dir.path(),
                &[("COMBTEST_COOKIE_FILE", cookie)],
                &["run", "--suite", "smoke", "--nodes", &address],
            )
        });
        let soak = scope.spawn(|| {
            common::node_in(
                dir.path(),
                &[("COMBTEST_COOKIE_FILE", cookie), ("COMBTEST_NODES", &address)],
                &["soak", "--suite", "smoke", "--rounds", "1", "--json"],
            )
        });
        (run.join().unwrap(), soak.join().unwrap())
    });
    let expected = |origin: &str| {
        format!(
            "error: cannot reach node {address}: connection refused (nothing listens on that \
             port); start a node there (`combtest-node serve --listen {address}` on that host) \
             or correct {origin}"
        )
    };
    assert_eq!(run.status.code(), Some(2));
    assert_eq!(stderr(&run).trim_end(), expected("--nodes"));
    assert_eq!(stdout(&run), "");
    assert_eq!(soak.status.code(), Some(2));
    let text = stderr(&soak);
    let last = text.lines().last().unwrap_or_default();
    assert_eq!(last, expected("COMBTEST_NODES"), "{text}");
    assert!(text.lines().all(|l| l.starts_with("soak of suite") || l == last), "{text}");
    assert_eq!(stdout(&soak), "");
}

#[test]
fn options_print_one_way_in_run_show_and_replay() {
    let logs = tempfile::tempdir().unwrap();
    let run = node(&["run", "--suite", "demo", "--log-dir", logs.path().to_str().unwrap()]);
    let dir = std::fs::read_dir(logs.path()).unwrap().next().unwrap().unwrap().path();
    let dir = dir.to_str().unwrap();
    // Walk 27, the demo's minimal failing walk, as each command lists it.
    let walk = "[Login=Bob, AddItems=AddItems(1), *Pricing=Discount, Checkout=Voucher]";
    let lines = |output: &std::process::Output| -> Vec<String> {
        stdout(output).lines().map(|l| l.trim().to_string()).collect()
    };
    assert!(lines(&run).iter().any(|l| l == walk), "{}", stdout(&run));
    let show = node(&["show", "--run", dir, "--failed"]);
    assert!(lines(&show).iter().any(|l| l == walk), "{}", stdout(&show));
    let groups = node(&["show", "--run", dir, "--groups"]);
    assert!(lines(&groups).iter().any(|l| l == walk), "{}", stdout(&groups));
    // replay prints one action a line, `[position] Type=Debug (option N)`.
    for args in [&["--run", dir][..], &["--suite", "demo"][..]] {
        let replay = node(&[&["replay", "--walk", "27"][..], args].concat());
        let steps: Vec<String> = lines(&replay)
            .iter()
            .filter_map(|l| l.strip_prefix('[')?.split_once("] ").map(|(_, s)| s.to_string()))
            .map(|s| s.rsplit_once(" (option ").unwrap().0.to_string())
            .collect();
        assert_eq!(format!("[{}]", steps.join(", ")), walk, "{}", stdout(&replay));
    }
}

#[test]
fn counts_are_singular_where_they_are_one() {
    // One node (a child of this run, stopped after it).
    let output = node(&["run", "--suite", "smoke", "--local-nodes", "1", "--threads", "1"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("suite smoke: 9 walks in ") && text.contains(" on 1 node\n"),
        "{text}"
    );
    // One failure group among the demo's.
    let output = node(&["run", "--suite", "demo"]);
    assert!(stdout(&output).contains("failure groups: 1 (2 failed walks)\n"));
}

#[test]
fn a_soak_s_final_rate_is_the_whole_soak_s() {
    // A status line after every round: the last one comes just before the
    // end, so the end's own interval holds no walk (the final rate was
    // that interval's: 0).
    let args = ["soak", "--suite", "smoke", "--rounds", "3", "--stats-every", "1ms"];
    let output = node(&[&args[..], &["--json"]].concat());
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    let totals = &value["totals"];
    assert_eq!((totals["rounds"].as_u64(), totals["walks"].as_u64()), (Some(3), Some(27)));
    assert_eq!(totals["segments"], 27, "{totals}");
    let (rate, elapsed) = (totals["walks_per_s"].as_f64().unwrap(), totals["elapsed_s"].as_f64());
    assert!(rate > 0.0 && (rate * elapsed.unwrap() - 27.0).abs() < 0.01, "{totals}");

    // The human summary opens with the last status line: the whole rate.
    let output = node(&args);
    let text = stdout(&output);
    let line = text.lines().rfind(|l| l.starts_with("soak: ")).unwrap();
    assert!(line.starts_with("soak: ") && line.contains(", 3 rounds, 27 walks ("), "{line}");
    let rate: f64 =
        line.split("27 walks (").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(rate > 0.0, "{line}");
}

/// One of 1,000 options; fails the walks whose option ends in 3.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Tenth<const P: usize>(u32);

impl<const P: usize> combtest::Action<u64> for Tenth<P> {
    fn options() -> Vec<Self> {
        (0..1000).map(Tenth).collect()
    }
    fn run(&self, _: &mut u64) -> combtest::ActionResult {
        match (P, self.0 % 10) {
            (1, 3) => combtest::fail(format!("tenth {}", self.0)),
            _ => Ok(()),
        }
    }
}

#[test]
fn fail_fast_stops_the_run_and_says_so() {
    use combtest::WalkOrder;
    use combtest::suites::{Fixture, suite};
    // 10^6 walks, one in ten failing from walk 3 on: the run stops at the
    // limit, and run.json says why and what was not run.
    for (args, limit) in [(&["--fail-fast"][..], 1), (&["--max-failures", "25"], 25)] {
        let logs = tempfile::tempdir().unwrap();
        let order = WalkOrder::<u64>::new().then::<Tenth<0>>().then::<Tenth<1>>();
        let tenths = suite("tenths", "one walk in ten fails", order, || Ok(Fixture::new(0u64)));
        let dir = logs.path().to_str().unwrap();
        let base =
            ["combtest-node", "run", "--suite", "tenths", "--threads", "2", "--log-dir", dir];
        let code = combtest::cli::run_cli([&base[..], args].concat(), vec![tenths]);
        assert_eq!(code, 1, "{args:?}: walks failed");
        let run = std::fs::read_dir(logs.path()).unwrap().next().unwrap().unwrap().path();
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
        let summary = &meta["summary"];
        assert_eq!(summary["ending"], "failure_limit", "{args:?}: {summary}");
        assert!(summary["failed"].as_u64().unwrap() >= limit, "{args:?}: {summary}");
        assert!(summary["not_run"].as_u64().unwrap() > 500_000, "{args:?}: {summary}");
    }

    // The demo's two failures are in its last epoch: whether anything is
    // left to stop when the first one is counted depends on timing, but
    // the flags are taken, locally and on nodes, and both failures found.
    for args in
        [&["--fail-fast"][..], &["--max-failures", "1"], &["--fail-fast", "--local-nodes", "1"]]
    {
        let output = node(&[&["run", "--suite", "demo", "--json"][..], args].concat());
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", stderr(&output));
        let value: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
        let ending = value["ending"].as_str().unwrap();
        assert!(["failure_limit", "completed"].contains(&ending), "{args:?}: {value}");
    }
    let output = node(&["run", "--suite", "demo", "--max-failures", "3"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(!stdout(&output).contains("stopped:"), "2 failures are under a limit of 3");

    for (args, says) in [
        (&["--max-failures", "0"][..], "use 1 or more"),
        (&["--max-failures", "x"], "not a number of walks"),
        (&["--max-failures", "2", "--fail-fast"], "cannot be used with"),
    ] {
        let output = node(&[&["run", "--suite", "demo"][..], args].concat());
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stderr(&output).contains(says), "{args:?}: {}", stderr(&output));
    }
}
