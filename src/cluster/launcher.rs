//! Starting and stopping node processes: the [`Launcher`] trait, and
//! [`LocalLauncher`], which runs `--local-nodes` children on 127.0.0.1.
//!
//! A local node is the coordinator's own binary (unless told otherwise) run
//! as `serve --listen 127.0.0.1:0 --name local-N --cookie-stdin`: it reads
//! the cluster's cookie from the first line of its standard input (never
//! from its arguments or environment, which other users can read in
//! `/proc`), then keeps that pipe open as its lifeline: when the
//! coordinator dies, the pipe closes and the node exits. Each child gets a
//! process group of its own, so a Ctrl-C at the coordinator's terminal is
//! the coordinator's to handle, not a crash of every node.

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use crate::cluster::ClusterError;

/// How long a child may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The line `serve` prints when it listens: `READY_PREFIX ADDRESS as NAME`.
pub(crate) const READY_PREFIX: &str = "combtest-node serving on";

/// A node process, started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// Where it listens, `HOST:PORT`.
    pub address: String,
    /// Its process id.
    pub pid: u32,
}

/// Starts and stops the nodes a coordinator owns. The membership restarts
/// a lost node through it (with backoff, within the restart intensity); a
/// launcher for nodes on other hosts (over SSH, say) implements the same
/// trait.
pub trait Launcher: Send + Sync + std::fmt::Debug {
    /// How many nodes it runs.
    fn count(&self) -> usize;
    /// Starts node `index` (killing what runs under that index first) and
    /// waits until it listens. Blocking.
    fn start(&self, index: usize) -> Result<Started, ClusterError>;
    /// Kills node `index`, if it runs.
    fn stop(&self, index: usize);
    /// Node `index`'s process id, if it runs.
    fn pid(&self, index: usize) -> Option<u32>;
}

/// One running child.
#[derive(Debug)]
struct Node {
    child: Child,
    /// Its stdin: the cookie went through it; closing it ends the child.
    _lifeline: ChildStdin,
}

/// `--local-nodes N`: N children of `program` on 127.0.0.1, each on a port
/// its OS picked, killed on drop (and exiting by themselves if the
/// coordinator dies first).
#[derive(Debug)]
pub struct LocalLauncher {
    program: PathBuf,
    cookie: String,
    threads: Option<usize>,
    nodes: Vec<Mutex<Option<Node>>>,
}

impl LocalLauncher {
    /// A launcher of `count` nodes of `program`, with `cookie` and each with
    /// `threads` runner threads (or its default). Starts none yet.
    pub fn new(count: usize, program: PathBuf, cookie: &str, threads: Option<usize>) -> Self {
        LocalLauncher {
            program,
            cookie: cookie.to_string(),
            threads,
            nodes: (0..count).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn slot(&self, index: usize) -> std::sync::MutexGuard<'_, Option<Node>> {
        self.nodes[index].lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Launcher for LocalLauncher {
    fn count(&self) -> usize {
        self.nodes.len()
    }

    fn start(&self, index: usize) -> Result<Started, ClusterError> {
        self.stop(index);
        let program = &self.program;
        let mut command = Command::new(program);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--name", &format!("local-{index}")])
            .arg("--cookie-stdin")
            // The cookie goes through stdin, never the environment.
            .env_remove("COMBTEST_COOKIE")
            // Its log lines reach the coordinator through heartbeats; its
            // own stderr (shared with the coordinator) keeps errors.
            .env("COMBTEST_LOG", std::env::var("COMBTEST_LOG").unwrap_or("error".into()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        if let Some(threads) = self.threads {
            command.args(["--threads", &threads.to_string()]);
        }
        let failed = |reason: String| {
            ClusterError::Local(format!("local node {index} ({}) {reason}", program.display()))
        };
        let mut child = command.spawn().map_err(|e| failed(format!("cannot start: {e}")))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lifeline = child.stdin.take().expect("stdin is piped");
        let ready = writeln!(lifeline, "{}", self.cookie)
            .and_then(|()| lifeline.flush())
            .map_err(|e| format!("did not take its cookie: {e}"))
            .and_then(|()| read_ready_line(stdout));
        match ready {
            Ok(address) => {
                let pid = child.id();
                *self.slot(index) = Some(Node { child, _lifeline: lifeline });
                Ok(Started { address, pid })
            }
            Err(reason) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(failed(reason))
            }
        }
    }

    fn stop(&self, index: usize) {
        if let Some(mut node) = self.slot(index).take() {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }

    fn pid(&self, index: usize) -> Option<u32> {
        self.slot(index).as_ref().map(|node| node.child.id())
    }
}

impl Drop for LocalLauncher {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.stop(index);
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
