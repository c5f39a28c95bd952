//! The fault campaign (`examples/nemesis`), CI length: two campaigns of 25 s
//! of faults each, one with a fixed seed and one with a random seed (printed
//! by the campaign, to replay a failure with `--seed`), and two of 15 s over
//! sampled rounds (the second with the serial action first, so that batches
//! are windows into the samples). Each must pass its check. Every wait is
//! bounded; on a timeout the campaign and every process under it are killed
//! by pid.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;
use common::example;
use common::procs::descendants;

/// Seconds of faults per campaign.
const SECONDS: u64 = 25;
/// The campaign bounds its coordinator at its duration + 120 s; this bounds
/// the campaign.
const BOUND: Duration = Duration::from_secs(SECONDS + 150);

/// Runs the campaign with `args`; returns its exit code and output. On a
/// timeout, kills it and everything under it (continued first: the
/// nemesis may hold one stopped), then fails.
fn campaign(args: &[&str]) -> (Option<i32>, String) {
    let child = Command::new(example("nemesis"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    let output = receiver.recv_timeout(BOUND).unwrap_or_else(|_| {
        let mut all = descendants(id);
        all.push(id);
        for pid in all {
            // SAFETY: signals to pids found under the campaign just now.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGCONT);
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        panic!("the campaign {args:?} did not end within {BOUND:?}");
    });
    let output = output.unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

/// The number after `label` in the summary's line starting with `line`.
fn figure(out: &str, line: &str, label: &str) -> u64 {
    let text = out.lines().find(|l| l.starts_with(line)).unwrap_or_else(|| panic!("{out}"));
    let rest = &text[text.find(label).unwrap_or_else(|| panic!("{label}: {text}")) + label.len()..];
    rest.split(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty()).unwrap().parse().unwrap()
}

#[test]
fn fault_campaigns_with_a_fixed_and_a_random_seed_pass_their_check() {
    let seconds = SECONDS.to_string();
    // A seed whose draws do each kind of fault within 25 s.
    let (code, out) = campaign(&["--seconds", &seconds, "--seed", "14"]);
    println!("{out}");
    assert_eq!(code, Some(0), "the campaign with seed 14 failed:\n{out}");
    assert!(out.contains("nemesis: PASS"), "{out}");
    for kind in ["kill node ", "stop node ", "stop coordinator "] {
        assert!(figure(&out, "faults ", kind) > 0, "no {kind}fault:\n{out}");
    }
    assert!(figure(&out, "walks accounted once ", "once ") > 0, "{out}");

    // A random seed: the campaign prints it first, to replay a failure.
    let (code, out) = campaign(&["--seconds", &seconds]);
    println!("{out}");
    let seed = out.lines().next().unwrap_or_default();
    assert!(seed.starts_with("nemesis: seed "), "{out}");
    assert_eq!(code, Some(0), "the campaign failed ({seed}):\n{out}");
    assert!(out.contains("nemesis: PASS"), "{out}");
}

/// Sampled rounds (400 of the 1,152 walks each, drawn again by the check)
/// under the same faults: every sampled walk accounted for once, and none
/// outside the samples.
#[test]
fn a_fault_campaign_over_sampled_rounds_passes_its_check() {
    sampled_campaign_passes(&["--seed", "5"]);
}

/// The same with the suite's serial action first: no state is held
/// between epochs, so each round's batches are windows into its sample
/// (made into ranges for the wire, and on a loss for the suspects).
#[test]
fn a_fault_campaign_over_windows_into_samples_passes_its_check() {
    sampled_campaign_passes(&["--seed", "9", "--serial-first"]);
}

/// A 15 s campaign over sampled rounds of 400 walks with `more`
/// arguments: it passes, and accounts for whole samples.
fn sampled_campaign_passes(more: &[&str]) {
    let mut args = vec!["--seconds", "15", "--sample", "400"];
    args.extend(more);
    let (code, out) = campaign(&args);
    println!("{out}");
    assert_eq!(code, Some(0), "the sampled campaign {more:?} failed:\n{out}");
    assert!(out.contains("nemesis: PASS"), "{out}");
    let accounted = figure(&out, "walks accounted once ", "once ");
    let rounds = figure(&out, "rounds ", "rounds ");
    assert!(
        accounted > 0 && accounted.is_multiple_of(400),
        "{accounted} walks: not whole samples\n{out}"
    );
    assert!(accounted <= 400 * (rounds + 1), "{accounted} walks in {rounds} rounds\n{out}");
}
