//! Real processes for the tests that need them: nodes (`serve`) and
//! coordinators, on 127.0.0.1 with ports their OS picks, each killed by pid
//! when its guard drops (SIGCONT first, in case it is stopped), every wait
//! bounded.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

/// Longest any one process of these tests may take.
pub const BOUND: Duration = Duration::from_secs(120);

/// The `combtest-node` binary built for these tests.
pub const NODE: &str = env!("CARGO_BIN_EXE_combtest-node");

/// A child process, killed on drop; its stdout as lines, its stderr kept.
pub struct Proc {
    pub pid: u32,
    child: Option<Child>,
    pub stdout: mpsc::Receiver<String>,
    pub stderr: Arc<Text>,
}

/// A process's stderr as it comes, with a signal per line (and one at its
/// end).
#[derive(Default)]
pub struct Text {
    text: Mutex<String>,
    ended: Mutex<bool>,
    grew: Condvar,
    end: Condvar,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(self.pid, "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Proc {
    /// Waits for it to exit (at most `BOUND`, else kills it and fails):
    /// its exit code, the rest of its stdout, and its stderr.
    pub fn finish(self) -> (Option<i32>, String, String) {
        self.finish_within(BOUND)
    }

    /// `finish`, waiting at most `bound` (for a run longer than `BOUND`).
    pub fn finish_within(mut self, bound: Duration) -> (Option<i32>, String, String) {
        let mut child = self.child.take().expect("not finished yet");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(child.wait());
        });
        let Ok(status) = receiver.recv_timeout(bound) else {
            signal(self.pid, "CONT");
            signal(self.pid, "KILL");
            panic!("process {} did not exit within {bound:?}", self.pid);
        };
        // It has exited: its stdout ends, and so does its stderr, which is
        // read to its end (unless a child of its own still holds it: a few
        // seconds at most).
        let out: Vec<String> = self.stdout.iter().collect();
        let code = status.ok().and_then(|s| s.code());
        let ended = self.stderr.ended.lock().unwrap();
        let limit = Duration::from_secs(5);
        drop(self.stderr.end.wait_timeout_while(ended, limit, |e| !*e).unwrap());
        (code, out.join("\n"), self.stderr())
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }

    /// The next line on its stdout, waiting at most `BOUND`.
    pub fn line(&self) -> String {
        self.stdout.recv_timeout(BOUND).expect("the process printed a line in time")
    }

    /// Waits (at most `BOUND`) for a line of stdout equal to `marker`.
    pub fn wait_for(&self, marker: &str) {
        while self.line() != marker {}
    }

    /// Waits (at most `BOUND`) for a line of stdout starting with `prefix`.
    pub fn wait_for_prefix(&self, prefix: &str) -> String {
        loop {
            let line = self.line();
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text.lock().unwrap().clone()
    }

    /// Waits (at most `BOUND`) until its stderr contains `needle`, and
    /// returns it.
    pub fn wait_stderr(&self, needle: &str) -> String {
        let text = self.stderr.text.lock().unwrap();
        let (text, timeout) =
            self.stderr.grew.wait_timeout_while(text, BOUND, |t| !t.contains(needle)).unwrap();
        assert!(!timeout.timed_out(), "no '{needle}' on stderr within {BOUND:?}: {}", *text);
        text.clone()
    }

    /// Sends it a signal (`KILL`, `STOP`, `CONT`, `INT`).
    pub fn signal(&self, name: &str) {
        signal(self.pid, name);
    }
}

/// `/proc/PID/stat`'s fields after the command name (which may hold
/// spaces and parentheses): [1] is the parent pid, [19] the start time.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Process `pid`'s start time (clock ticks since boot), if it runs: with
/// its pid, it names one process (a pid may be given again later).
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The pids of every process under `pid`, children before their
/// children's children (read from `/proc`).
pub fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| Some((p, stat_fields(p)?.get(1)?.parse().ok()?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![pid];
    let mut at = 0;
    while at < found.len() {
        let parent = found[at];
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        at += 1;
    }
    found.remove(0);
    found
}

/// Sends signal `name` to process `pid` if it is still the process that
/// started at `start` (`start_time`); false if it is gone.
pub fn signal_if(pid: u32, start: u64, name: &str) -> bool {
    if start_time(pid) != Some(start) {
        return false;
    }
    signal(pid, name);
    true
}

/// Sends signal `name` to process `pid`.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status();
}

/// Lines of `reader`, read on a thread of their own.
pub fn lines(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader).lines() {
            if sender.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Collects `reader` into a text, on a thread of its own.
pub fn collect(reader: impl std::io::Read + Send + 'static) -> Arc<Text> {
    let text = Arc::new(Text::default());
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader).lines() {
            let mut text = sink.text.lock().unwrap();
            text.push_str(&line.unwrap_or_default());
            text.push('\n');
            sink.grew.notify_all();
        }
        *sink.ended.lock().unwrap() = true;
        sink.end.notify_all();
    });
    text
}

/// Starts `command` with piped stdout and stderr, in the test binary's
/// cookie file's cluster.
pub fn start(mut command: Command) -> Proc {
    command
        .env_remove("COMBTEST_COOKIE")
        .env("COMBTEST_COOKIE_FILE", super::cookie_file())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("the process starts");
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    Proc { pid: child.id(), child: Some(child), stdout, stderr }
}

/// Starts `program serve` on 127.0.0.1, port 0, two runner threads, and
/// returns it with its address (from its ready line).
pub fn serve(program: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Proc, String) {
    let mut command = Command::new(program);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--threads", "2"])
        .args(extra)
        .envs(env.iter().copied());
    let proc = start(command);
    let ready = proc.line();
    let address = ready
        .strip_prefix("combtest-node serving on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("not a ready line: {ready}"))
        .to_string();
    assert!(address.starts_with("127.0.0.1:"), "{ready}");
    (proc, address)
}

/// Starts a coordinator: `program args`.
pub fn spawn_coordinator(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("COMBTEST_COOKIE")
        .env("COMBTEST_COOKIE_FILE", super::cookie_file())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the coordinator starts")
}

/// Waits for a coordinator to end (at most `BOUND`, else kills it by pid):
/// exit code, stdout, stderr.
pub fn finish(child: Child) -> (Option<i32>, String, String) {
    let id = child.id();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    let Ok(output) = receiver.recv_timeout(BOUND) else {
        signal(id, "CONT");
        signal(id, "KILL");
        panic!("the coordinator did not finish within {BOUND:?}");
    };
    let output = output.unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (output.status.code(), text(output.stdout), text(output.stderr))
}

/// Runs a coordinator to the end.
pub fn coordinate(program: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    finish(spawn_coordinator(program, args, &[]))
}

/// The last line of `text` parsed as JSON (a report; a suite's own output
/// may come before it).
pub fn json(text: &str) -> serde_json::Value {
    if let Ok(value) = serde_json::from_str(text.trim()) {
        return value;
    }
    let last = text.lines().rev().find(|l| l.starts_with('{')).unwrap_or(text);
    serde_json::from_str(last.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The walks of a report's `aborted_walks` / `not_run_walks` groups whose
/// reason contains `needle`.
pub fn walks_of(groups: &serde_json::Value, needle: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    for group in groups.as_array().into_iter().flatten() {
        if group["reason"].as_str().unwrap_or_default().contains(needle) {
            for range in group["walks"].as_array().unwrap() {
                ids.extend(range["start"].as_u64().unwrap()..range["end"].as_u64().unwrap());
            }
        }
    }
    ids
}
