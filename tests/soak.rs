//! Soaks, run as real processes: a soak on two local nodes through
//! panicking, hanging and process-aborting walks; seeded sampled rounds;
//! Ctrl-C. Every wait is bounded; nodes die with their coordinator (their
//! stdin lifeline), and the tests check none is left. One soak runs in
//! this process, through the library: that each sampled round, drawn a
//! round ahead, runs its own seed's walks.

use std::io::BufRead as _;

use combtest::model::trace::TraceOutcome;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;
use common::procs::{BOUND, NODE, finish, json, spawn_coordinator};
use common::{cookie_file, example};

/// Runs `program args` to the end (at most `BOUND`), with `env`.
fn run(program: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let (code, out, err) = finish(spawn_coordinator(program, args, env));
    (code.unwrap_or(-1), out, err)
}

/// Walks that ended, by the totals.
fn walks_total(totals: &serde_json::Value) -> u64 {
    totals["walks"].as_u64().unwrap()
}

#[test]
fn a_soak_on_local_nodes_survives_panics_hangs_and_crashes() {
    let program = example("cluster_node");
    let logs = tempfile::tempdir().unwrap();
    let (code, out, err) = run(
        &program,
        &[
            "soak",
            "--suite",
            "chaos",
            "--duration",
            "3s",
            "--local-nodes",
            "2",
            "--threads",
            "1",
            "--walk-timeout",
            "1s",
            "--max-restarts",
            "50",
            "--json",
            "--log-dir",
            logs.path().to_str().unwrap(),
        ],
        &[("CHAOS_ABORT", "1")],
    );
    assert_eq!(code, 1, "{out}{err}");
    let report = json(&out);
    let totals = &report["totals"];
    // The duration ends the soak on time: no walk starts after 3 s, and the
    // round in progress then is cut short (its walks that ended count).
    let rounds = totals["rounds"].as_u64().unwrap();
    assert!(rounds >= 1, "{out}");
    assert!(totals["elapsed_s"].as_f64().unwrap() < 15.0, "{out}");
    assert!(totals["interrupted_rounds"].as_u64().unwrap() <= 1, "{out}");
    assert!(walks_total(totals) >= 200 * rounds, "{out}");
    let failures = report["failures"].as_array().unwrap();
    let reasons: Vec<(u64, u64, &str)> = failures
        .iter()
        .map(|f| {
            (
                f["round"].as_u64().unwrap(),
                f["walk_id"].as_u64().unwrap(),
                f["error"].as_str().unwrap(),
            )
        })
        .collect();
    for round in 0..rounds {
        let of_round: Vec<_> = reasons.iter().filter(|r| r.0 == round).collect();
        assert_eq!(of_round.len(), 4, "{reasons:?}");
        let error = |walk: u64| of_round.iter().find(|r| r.1 == walk).map(|r| r.2).unwrap_or("");
        assert!(error(37).contains("chaos: the target fell over"), "{reasons:?}");
        assert!(error(112).contains("chaos: the target fell over"), "{reasons:?}");
        assert_eq!(error(55), "timed out after 1s", "{reasons:?}");
        // The aborting walk took its node down twice while running alone
        // there: that is the evidence that fails it.
        let aborting = error(131);
        assert!(
            aborting.contains("its node was lost while running it alone, 2 times"),
            "{reasons:?}"
        );
        assert!(aborting.contains("local-") && aborting.contains("(pid "), "{aborting}");
    }
    // Panics replace runners; the aborts and the hang lose (and restart)
    // nodes.
    assert!(totals["runner_restarts"].as_u64().unwrap() >= 4, "{out}");
    assert!(totals["nodes_lost"].as_u64().unwrap() >= 3 * rounds, "{out}");
    // Every walk of every round has its record, once, tagged with its round.
    let dir = std::fs::read_dir(logs.path()).unwrap().next().unwrap().unwrap().path();
    // Format 2: passing walks come as id ranges per batch, listed by the
    // reader.
    let trace = combtest::trace::read_soak(dir.join("walks.jsonl")).unwrap();
    assert!(trace.walks.unlisted.is_empty() && trace.torn_tail.is_none());
    let records: Vec<serde_json::Value> = trace
        .walks
        .walks
        .iter()
        .map(|w| serde_json::json!({"round": w.round, "walk_id": w.walk_id}))
        .collect();
    let unfinished = totals["aborted"].as_u64().unwrap() + totals["not_run"].as_u64().unwrap();
    assert_eq!(
        records.len() as u64,
        walks_total(totals) - unfinished,
        "a record per walk that ended"
    );
    for round in 0..=rounds {
        let mut ids: Vec<u64> = records
            .iter()
            .filter(|r| r["round"] == round)
            .map(|r| r["walk_id"].as_u64().unwrap())
            .collect();
        ids.sort_unstable();
        if round < rounds {
            assert_eq!(ids, (0..200).collect::<Vec<_>>(), "round {round}");
        } else {
            // The round cut short, if any: each of its walks at most once.
            let count = ids.len();
            ids.dedup();
            assert_eq!(ids.len(), count, "round {round}");
        }
    }
    let meta = json(&std::fs::read_to_string(dir.join("soak.json")).unwrap());
    assert_eq!(meta["totals"]["rounds"], rounds);
}

#[test]
fn a_sampled_rounds_trace_is_its_seed_plus_the_walks_that_did_not_pass() {
    let node = std::path::Path::new(env!("CARGO_BIN_EXE_combtest-node"));
    let logs = tempfile::tempdir().unwrap();
    let args = [
        "soak",
        "--suite",
        "demo",
        "--rounds",
        "3",
        "--sample",
        "9",
        "--seed",
        "42",
        "--json",
        "--log-dir",
        logs.path().to_str().unwrap(),
    ];
    let (code, out, err) = run(node, &args, &[]);
    assert!(code == 0 || code == 1, "{out}{err}");
    let totals = &json(&out)["totals"];
    let dir = std::fs::read_dir(logs.path()).unwrap().next().unwrap().unwrap().path();
    let text = std::fs::read_to_string(dir.join("walks.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(json).collect();
    // No passing walk is listed: batches count them, and each round ends
    // with its seed and the sampler's version.
    assert!(lines.iter().all(|l| l.get("passed").is_none()), "{text}");
    let samples: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l.get("sampler").is_some()).collect();
    assert_eq!(samples.len(), 3, "{text}");
    for (round, sample) in samples.iter().enumerate() {
        assert_eq!(sample["round"], round as u64);
        assert_eq!((sample["sample"].as_u64(), sample["walks"].as_u64()), (Some(9), Some(36)));
        assert_eq!(sample["sampler"], 3, "sampler version 3 draws the rounds");
    }
    // The reader lists every walk of every round: 9 distinct walks each,
    // the same outcomes as the soak counted.
    let trace = combtest::trace::read_soak(dir.join("walks.jsonl")).unwrap();
    assert!(trace.walks.unlisted.is_empty());
    for round in 0..3 {
        let mut ids: Vec<u64> =
            trace.walks.walks.iter().filter(|w| w.round == round).map(|w| w.walk_id).collect();
        ids.dedup();
        assert_eq!(ids.len(), 9, "round {round}");
    }
    let count = |outcome: TraceOutcome| {
        trace.walks.walks.iter().filter(|w| w.outcome == outcome).count() as u64
    };
    assert_eq!(count(TraceOutcome::Passed), totals["passed"].as_u64().unwrap());
    assert_eq!(count(TraceOutcome::Failed), totals["failed"].as_u64().unwrap());
    assert_eq!(count(TraceOutcome::Cancelled), totals["cancelled"].as_u64().unwrap());
    assert_eq!(count(TraceOutcome::Pruned), totals["pruned"].as_u64().unwrap());

    // A round whose sample record is missing (the soak stopped in it) can
    // only count its passing walks.
    let cut: Vec<&str> = text
        .lines()
        .filter(|l| !(l.contains("\"sampler\"") && l.contains("\"round\":2")))
        .collect();
    std::fs::write(dir.join("cut.jsonl"), cut.join("\n") + "\n").unwrap();
    let trace = combtest::trace::read_soak(dir.join("cut.jsonl")).unwrap();
    assert_eq!(trace.walks.unlisted.len(), 1);
    assert_eq!(trace.walks.unlisted[0].0, 2);
    // A sample drawn by another sampler version is refused by name.
    let other = text.replace("\"sampler\":3", "\"sampler\":99");
    std::fs::write(dir.join("other.jsonl"), other).unwrap();
    let error = combtest::trace::read_soak(dir.join("other.jsonl")).unwrap_err().to_string();
    assert!(error.contains("sampler version 99"), "{error}");
}

#[test]
fn sampled_rounds_replay_with_their_seed() {
    let node = std::path::Path::new(env!("CARGO_BIN_EXE_combtest-node"));
    let args =
        ["soak", "--suite", "demo", "--rounds", "4", "--sample", "9", "--seed", "42", "--json"];
    let (code, first, err) = run(node, &args, &[]);
    assert!(code == 0 || code == 1, "{first}{err}");
    let (_, second, _) = run(node, &args, &[]);
    let (a, b) = (json(&first), json(&second));
    assert_eq!(a["totals"]["walks"], 36);
    assert_eq!(a["seed"], 42);
    // The same seed draws the same walks: the same outcomes, round by round.
    for key in ["passed", "failed", "cancelled", "pruned"] {
        assert_eq!(a["totals"][key], b["totals"][key], "{key}");
    }
    assert_eq!(a["failures"], b["failures"]);
}

#[test]
fn ctrl_c_stops_the_round_and_prints_a_report_of_every_walk() {
    // As a terminal sends it: to the whole process group. The local nodes
    // have groups of their own, so the soak ends cleanly, losing no node.
    let program = example("cluster_node");
    let mut command = Command::new(&program);
    command
        .env("COMBTEST_COOKIE_FILE", cookie_file())
        .args(["soak", "--suite", "relay", "--duration", "60s", "--stats-every", "0s"])
        .args(["--local-nodes", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().unwrap();
    let (sender, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if sender.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    // A round has finished: its status line is out (the suite's own
    // markers may come first: its walks run in this process).
    while !lines.recv_timeout(BOUND).unwrap().starts_with("soak: ") {}
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-INT", "--", &group]).status();
    let (done, waited) = mpsc::channel();
    let id = child.id();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let status = waited.recv_timeout(BOUND).unwrap_or_else(|_| {
        let _ = Command::new("kill").args(["-KILL", &id.to_string()]).status();
        panic!("the soak did not stop");
    });
    // The round in progress was cut: its walks that had not started are
    // aborted with the reason, so the soak does not pass.
    let code = status.unwrap().code();
    let rest: Vec<String> = lines.iter().collect();
    let cut = rest.iter().any(|l| l.contains("walks: not run: the run was interrupted"));
    if cut {
        assert_eq!(code, Some(1), "{rest:?}");
        assert!(rest.iter().any(|l| l == "FAIL"), "{rest:?}");
    } else {
        // Ctrl-C fell between two rounds: nothing was left unfinished.
        assert_eq!(code, Some(0), "{rest:?}");
        assert!(rest.iter().any(|l| l == "PASS (stopped early)"), "{rest:?}");
    }
    assert!(rest.iter().any(|l| l.contains("nodes lost 0")), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("walks") && l.contains("rounds")), "{rest:?}");
}

#[test]
fn a_second_ctrl_c_stops_a_stuck_round_at_once() {
    // In-process, no walk timeout: the round hangs on the chaos suite's
    // minute-long walk. The first Ctrl-C waits for the round; the second
    // stops at once.
    let program = example("cluster_node");
    let mut child = Command::new(&program)
        .env("COMBTEST_COOKIE_FILE", cookie_file())
        .args(["soak", "--suite", "chaos", "--rounds", "5"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (said, outs) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if said.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let (sender, errors) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            if sender.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let id = child.id().to_string();
    let interrupt = || {
        let _ = Command::new("kill").args(["-INT", &id]).status();
    };
    while !errors.recv_timeout(BOUND).unwrap().starts_with("soak of suite chaos") {}
    // The hung walk is running: the round cannot end by itself.
    while outs.recv_timeout(BOUND).unwrap() != "chaos: hanging" {}
    interrupt();
    while !errors.recv_timeout(BOUND).unwrap().starts_with("soak: stopping: no new walk starts") {}
    interrupt();
    let (done, waited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let status = waited.recv_timeout(Duration::from_secs(25)).unwrap_or_else(|_| {
        let _ = Command::new("kill").args(["-KILL", &id]).status();
        panic!("the second Ctrl-C did not stop the soak");
    });
    // The report still accounts for every walk of the round: the hung one
    // (with its batch) given up; it is not a pass.
    assert_eq!(status.unwrap().code(), Some(1));
    let rest: Vec<String> = errors.iter().collect();
    assert!(rest.iter().any(|l| l.starts_with("soak: stopping now")), "{rest:?}");
    let out: Vec<String> = outs.iter().collect();
    assert!(out.iter().any(|l| l.contains("walks: hung when the run was interrupted")), "{out:?}");
    assert!(out.iter().any(|l| l == "FAIL"), "{out:?}");
}

#[test]
fn status_lines_keep_coming_during_a_long_round() {
    // One round of relay takes about half a second (200 walks of two 2 ms
    // hops on 2 threads): status lines every 100 ms come during it, counting
    // the walks that ended so far.
    let program = example("cluster_node");
    let (code, out, err) = run(
        &program,
        &["soak", "--suite", "relay", "--rounds", "1", "--stats-every", "100ms"],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let during: Vec<&str> =
        out.lines().filter(|l| l.starts_with("soak: ") && l.contains(" 0 rounds")).collect();
    assert!(during.len() >= 2, "{out}");
    // "soak: ..., 0 rounds, N walks (...)": N, the walks that ended.
    let walks = |line: &str| -> u64 {
        let rest = line.split(" rounds, ").nth(1).unwrap_or_default();
        rest.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    // The counts grow as walks end.
    assert!(walks(during[during.len() - 1]) > walks(during[0]), "{out}");
}

#[test]
fn a_failure_limit_ends_the_soak_over_its_rounds() {
    // The demo fails 2 walks per round: a limit of 5 is reached in the
    // third round (cut, or whole if its walks had all started), never later.
    let (code, out, err) = run(
        std::path::Path::new(NODE),
        &["soak", "--suite", "demo", "--rounds", "50", "--max-failures", "5", "--json"],
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    let report = json(&out);
    assert_eq!(report["ending"], "failure_limit", "{report}");
    assert_eq!(report["ending_reason"], "5 walks failed (the failure limit)", "{report}");
    let totals = &report["totals"];
    let failed = totals["failed"].as_u64().unwrap();
    assert!((5..=6).contains(&failed), "{totals}");
    let rounds =
        totals["rounds"].as_u64().unwrap() + totals["interrupted_rounds"].as_u64().unwrap();
    assert_eq!(rounds, 3, "{totals}");

    let (code, out, err) = run(
        std::path::Path::new(NODE),
        &["soak", "--suite", "demo", "--rounds", "9", "--fail-fast"],
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("FAIL: stopped: a walk failed (the failure limit is 1)"), "{out}");
}

/// The walks a round's action saw: `Seen` is the suite's fixture.
struct Seen(std::sync::Arc<std::sync::Mutex<Vec<u64>>>);

/// Records its walk's id (as the second entry: once per walk).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Note(u32);

impl combtest::Action<u64> for Note {
    fn options() -> Vec<Self> {
        (0..100).map(Note).collect()
    }
    fn run_in(&self, _: &mut u64, cx: &combtest::WalkContext<'_>) -> combtest::ActionResult {
        if cx.position() == 1 {
            cx.fixture::<Seen>()?.0.lock().unwrap().push(cx.id().0);
        }
        Ok(())
    }
}

/// Each sampled round runs its own seed's walks, also when samples are
/// drawn a round ahead and in segments on threads (70,000 walks of 10^6:
/// the next round's sample is drawn on threads while a round runs): round
/// r runs exactly the walks `round_seed(seed, r)` draws, once each.
#[test]
fn each_sampled_round_runs_the_walks_of_its_own_seed() {
    use combtest::model::sample::{WalkSample, round_seed};
    use combtest::soak::{SoakLimit, SoakOptions, SoakStop, soak};
    use combtest::suites::{Fixture, suite};
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let shared = Arc::clone(&seen);
    let order = combtest::WalkOrder::new().then::<Note>().then::<Note>().then::<Note>();
    let suite = suite("noted", "records its walks", order, move || {
        Ok(Fixture::new(0u64).with(Seen(Arc::clone(&shared))))
    });
    let mut limit = SoakLimit::default();
    limit.rounds = Some(4);
    let mut options = SoakOptions::new(limit);
    (options.seed, options.sample) = (11, Some(70_000));
    options.run.threads = Some(2);
    let rounds: Mutex<Vec<Vec<u64>>> = Mutex::default();
    let on_round = |_: &combtest::soak::SoakReport, _: bool| {
        let mut ids = std::mem::take(&mut *seen.lock().unwrap());
        ids.sort_unstable();
        rounds.lock().unwrap().push(ids);
    };
    let report = soak(suite.as_ref(), &options, &SoakStop::default(), &on_round).unwrap();
    assert_eq!(report.totals.walks, 280_000);
    let rounds = rounds.into_inner().unwrap();
    assert_eq!(rounds.len(), 4);
    for (round, ids) in rounds.iter().enumerate() {
        let drawn = WalkSample::draw(1_000_000, 70_000, round_seed(11, round as u64)).unwrap();
        assert!(ids == drawn.ids(), "round {round} ran other walks than its seed draws");
    }
}
