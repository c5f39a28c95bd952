//! `--local-nodes N`: N `combtest-node serve` child processes on 127.0.0.1,
//! each on a port its OS picked, started before the run and killed after
//! it (also when the coordinator unwinds: [`LocalNodes`] kills them on
//! drop). The program is the coordinator's own binary unless told
//! otherwise, so a user's binary serves the user's suites.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::cluster::ClusterError;

/// How long a child may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The line `serve` prints when it listens: `READY_PREFIX ADDRESS as NAME`.
pub(crate) const READY_PREFIX: &str = "combtest-node serving on";

/// Child node processes, killed on drop.
#[derive(Debug)]
pub struct LocalNodes {
    children: Vec<Child>,
    /// Each child's stdin: a child exits when it closes, so children never
    /// outlive a coordinator that was killed before it could kill them.
    _lifelines: Vec<std::process::ChildStdin>,
    addresses: Vec<String>,
}

impl LocalNodes {
    /// Starts `count` nodes of `program` with `cookie`, each with `threads`
    /// runner threads (or its default), and waits for each to listen.
    pub fn spawn(
        count: usize,
        program: PathBuf,
        cookie: &str,
        threads: Option<usize>,
    ) -> Result<Self, ClusterError> {
        let mut nodes =
            LocalNodes { children: Vec::new(), _lifelines: Vec::new(), addresses: Vec::new() };
        for index in 0..count {
            let mut command = Command::new(&program);
            command
                .arg("serve")
                .args(["--listen", "127.0.0.1:0", "--name", &format!("local-{index}")])
                .arg("--exit-on-stdin-eof")
                .env("COMBTEST_COOKIE", cookie)
                // Its log lines reach the coordinator through heartbeats;
                // its own stderr (shared with the coordinator) keeps errors.
                .env("COMBTEST_LOG", std::env::var("COMBTEST_LOG").unwrap_or("error".into()))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if let Some(threads) = threads {
                command.args(["--threads", &threads.to_string()]);
            }
            let mut child = command.spawn().map_err(|e| {
                ClusterError::Local(format!("cannot start {}: {e}", program.display()))
            })?;
            let stdout = child.stdout.take().expect("stdout is piped");
            nodes._lifelines.push(child.stdin.take().expect("stdin is piped"));
            nodes.children.push(child);
            let address = read_ready_line(stdout).map_err(|reason| {
                ClusterError::Local(format!("local node {index} ({}) {reason}", program.display()))
            })?;
            nodes.addresses.push(address);
        }
        Ok(nodes)
    }

    /// Their addresses, `127.0.0.1:PORT`.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// Process ids, in order.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

impl Drop for LocalNodes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads the child's first line (on a thread, to bound the wait) and takes
/// the address from it; the rest of its stdout is drained so it never
/// blocks on a full pipe.
fn read_ready_line(stdout: std::process::ChildStdout) -> Result<String, String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let _ = sender.send(lines.next());
        for _ in lines {}
    });
    match receiver.recv_timeout(START_TIMEOUT) {
        Ok(Some(Ok(line))) => line
            .strip_prefix(READY_PREFIX)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .ok_or_else(|| format!("printed '{line}' instead of its ready line")),
        Ok(_) => Err("exited before listening (see its errors above)".to_string()),
        Err(_) => Err(format!("did not listen within {}s", START_TIMEOUT.as_secs())),
    }
}
