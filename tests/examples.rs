//! Every example runs and does what its header says. `cargo test` already
//! builds the examples; the `cargo build --example` here makes sure of it
//! when this file runs alone, and costs a fingerprint check otherwise.

use std::process::Command;

mod common;
use common::example;

fn run(name: &str, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(example(name)).args(args).output().unwrap();
    (output.status.code(), String::from_utf8(output.stdout).unwrap())
}

#[test]
fn quickstart() {
    let (code, out) = run("quickstart", &[]);
    assert_eq!(code, Some(0));
    // 3 deposits x 2 x 2 withdrawals: a deposit of 0 covers nothing, 10
    // covers only 5 then 5, 100 covers everything.
    assert_eq!(out.trim(), "12 walks: 5 passed, 7 cancelled, 0 failed");
}

#[test]
fn custom_node_runs_its_own_suite() {
    let (code, out) = run("custom_node", &["run", "--suite", "counter", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let value: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((value["walks"].as_u64(), value["passed"].as_u64()), (Some(18), Some(18)));
    assert_eq!(value["serial_actions"], 2);
    let (code, out) = run("custom_node", &["list"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("counter: a counter with a step"), "{out}");

    // Its traces name it, not combtest-node, in their replay commands.
    let logs = tempfile::tempdir().unwrap();
    let logs_arg = logs.path().to_str().unwrap();
    let (code, _) = run("custom_node", &["run", "--suite", "counter", "--log-dir", logs_arg]);
    assert_eq!(code, Some(0));
    let (code, out) = run("custom_node", &["run", "--suite", "bumpy", "--log-dir", logs_arg]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("replay: custom_node replay --run"), "{out}");
    let junit: Vec<String> = std::fs::read_dir(logs.path())
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path().join("junit.xml")).ok())
        .collect();
    assert!(junit.iter().any(|x| x.contains("custom_node replay --run")), "{junit:?}");
    assert!(junit.iter().all(|x| !x.contains("combtest-node")));
}

#[test]
fn scale_keeps_every_walk() {
    let (code, out) = run("scale", &["4"]);
    assert_eq!(code, Some(0));
    let value: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((value["walks"].as_u64(), value["passed"].as_u64()), (Some(10_000), Some(10_000)));
    let (code, _) = run("scale", &["5"]);
    assert_eq!(code, Some(2));
}

#[test]
fn a_long_run_prints_progress_lines_on_stderr_only() {
    // relay: 10 x 2 x 10 = 200 walks of two 2 ms hops, on one thread: at
    // least 0.8 s of sleeping, so a 100 ms interval passes several times.
    let output = Command::new(example("cluster_node"))
        .args(["run", "--suite", "relay", "--threads", "1", "--progress-every", "100ms", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    // stdout is the suite's own marks ("relay: busy", "relay: late") and the
    // one JSON object, untouched by progress.
    let (json, marks) = stdout.trim().lines().partition::<Vec<&str>, _>(|l| l.starts_with('{'));
    assert!(marks.iter().all(|l| l.starts_with("relay: ")), "{stdout}");
    assert_eq!(json.len(), 1, "{stdout}");
    let value: serde_json::Value = serde_json::from_str(json[0]).unwrap();
    assert_eq!(value["walks"], 200);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("progress: ")).collect();
    assert!(lines.len() >= 3, "{stderr}");
    for line in &lines {
        assert!(line.contains(" of 200 walks ("), "{line}");
        assert!(line.contains("walks/s, ETA "), "{line}");
        assert!(line.ends_with("failed 0 in 0 groups"), "{line}");
    }
    // No colour codes off a terminal.
    assert!(!stderr.contains('\u{1b}'), "{stderr}");

    // 0s: never.
    let output = Command::new(example("cluster_node"))
        .args(["run", "--suite", "relay", "--threads", "1", "--progress-every", "0s"])
        .output()
        .unwrap();
    assert!(!String::from_utf8(output.stderr).unwrap().contains("progress: "));
}

/// A pseudo-terminal `cols` wide: (master, slave).
fn pty(cols: u16) -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd as _;
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize { ws_row: 24, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes two descriptors, which the files then own.
    let opened = unsafe {
        libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size)
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both are open and owned by nothing else.
    unsafe { (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave)) }
}

/// Runs the relay suite (about 1 s) with stderr on a terminal, and stdout
/// there too or piped: what the terminal showed, and stdout if piped.
fn relay_on_a_terminal(json: bool) -> (String, String) {
    use std::io::Read as _;
    use std::process::Stdio;
    let (mut master, slave) = pty(100);
    let mut command = Command::new(example("cluster_node"));
    command.args(["run", "--suite", "relay", "--threads", "1"]);
    if json {
        command.arg("--json").stdout(Stdio::piped());
    } else {
        command.stdout(slave.try_clone().unwrap());
    }
    for var in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "COMBTEST_LOG"] {
        command.env_remove(var);
    }
    let child = command.env("TERM", "xterm-256color").stdin(Stdio::null()).stderr(slave).spawn();
    // The terminal reads end (EIO) once no process holds its other side.
    drop(command);
    let mut child = child.unwrap();
    let (sender, screen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut text, mut buffer) = (Vec::new(), [0u8; 4096]);
        while let Ok(n @ 1..) = master.read(&mut buffer) {
            text.extend_from_slice(&buffer[..n]);
        }
        let _ = sender.send(String::from_utf8_lossy(&text).into_owned());
    });
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).unwrap();
    }
    let screen = screen.recv_timeout(std::time::Duration::from_secs(120));
    let _ = child.kill();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    (screen.expect("the run ends"), stdout)
}

#[test]
fn on_a_terminal_run_draws_a_coloured_bar_and_clears_it_before_the_summary() {
    let (screen, _) = relay_on_a_terminal(false);
    assert!(screen.contains("/200 walks, ") && screen.contains(" walks/s, ETA "), "{screen:?}");
    assert!(screen.contains("failed 0 in 0 groups"), "{screen:?}");
    assert!(screen.contains("\u{1b}[36m"), "the bar has colour: {screen:?}");
    // The bar's line is cleared, then the summary is printed, and nothing
    // is drawn after it.
    let (_, after) = screen.rsplit_once("\u{1b}[2K").unwrap();
    assert!(after.starts_with("suite relay: 200 walks in "), "{after:?}");
    assert!(after.trim_end().ends_with("PASS") && !after.contains('\u{1b}'), "{after:?}");

    // stdout elsewhere: the JSON alone there, the bar alone on the terminal.
    let (screen, stdout) = relay_on_a_terminal(true);
    let json: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("relay: ")).collect();
    assert_eq!(json.len(), 1, "{stdout}");
    let value: serde_json::Value = serde_json::from_str(json[0]).unwrap();
    assert_eq!(value["passed"], 200);
    assert!(screen.contains("/200 walks, ") && !screen.contains('{'), "{screen:?}");
}

#[test]
fn epoch_cost_measures_its_epochs() {
    let (code, out) = run("epoch_cost", &["50"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("50 epochs: ") && out.contains(" us per epoch (min "), "{out}");
    let (code, _) = run("epoch_cost", &["zero"]);
    assert_eq!(code, Some(2));
}
