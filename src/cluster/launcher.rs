//! Starting and stopping node processes: the [`Launcher`] trait;
//! `Processes`, which runs node processes behind any `NodeCommand` (the
//! one implementation of the cookie on stdin, the ready line, the lifeline
//! and the kill by pid); and [`LocalLauncher`], which runs `--local-nodes`
//! children on 127.0.0.1 (`cluster::ssh` runs them behind `ssh`).
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
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::ClusterError;

/// How long a child may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a child that closed its stdout may take to exit (for its exit
/// status).
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Whether its nodes were given the cluster's TLS settings (then they
    /// are dialled with TLS even on loopback); `false` by default: nodes
    /// started on this machine's loopback are dialled in plain TCP.
    fn tls(&self) -> bool {
        false
    }
}

/// Why a node process did not print its ready line.
#[derive(Debug)]
pub(crate) struct NoReady {
    /// What happened, as the launcher saw it.
    pub reason: String,
    /// Its exit status, when it exited.
    pub status: Option<ExitStatus>,
    /// The lines it wrote on stderr before.
    pub stderr: Vec<String>,
}

/// What differs between kinds of node processes: the command that starts
/// node `index` (ending in `serve ... --cookie-stdin`), and how a failure
/// to start reads.
pub(crate) trait NodeCommand: Send + Sync + std::fmt::Debug {
    /// How many nodes.
    fn count(&self) -> usize;
    /// The command for node `index` (stdin, stdout and stderr are set by
    /// `Processes`).
    fn command(&self, index: usize) -> Result<Command, ClusterError>;
    /// The prefix of node `index`'s output copied to the coordinator's
    /// stderr after its ready line (`None`: its stdout is dropped and its
    /// stderr copied as it is).
    fn prefix(&self, index: usize) -> Option<String>;
    /// The error for node `index` that did not start.
    fn failed(&self, index: usize, why: NoReady) -> ClusterError;
    /// See [`Launcher::tls`].
    fn tls(&self) -> bool {
        false
    }
}

/// One running child.
#[derive(Debug)]
struct Node {
    child: Child,
    /// Its stdin: the cookie went through it; closing it ends the child.
    _lifeline: ChildStdin,
}

/// Node processes behind a [`NodeCommand`], each killed by pid on
/// [`Launcher::stop`] and on drop (and exiting by itself, its lifeline
/// closed, if the coordinator dies first).
#[derive(Debug)]
pub(crate) struct Processes<C> {
    commands: C,
    cookie: String,
    nodes: Vec<Mutex<Option<Node>>>,
}

impl<C: NodeCommand> Processes<C> {
    pub(crate) fn new(commands: C, cookie: &str) -> Self {
        let count = commands.count();
        Processes {
            commands,
            cookie: cookie.to_string(),
            nodes: (0..count).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn slot(&self, index: usize) -> std::sync::MutexGuard<'_, Option<Node>> {
        self.nodes[index].lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<C: NodeCommand> Launcher for Processes<C> {
    fn count(&self) -> usize {
        self.nodes.len()
    }

    fn start(&self, index: usize) -> Result<Started, ClusterError> {
        self.stop(index);
        let mut command = self.commands.command(index)?;
        command
            // The cookie goes through stdin, never the environment.
            .env_remove("COMBTEST_COOKIE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let no_ready = |reason: String| NoReady { reason, status: None, stderr: Vec::new() };
        let mut child = command
            .spawn()
            .map_err(|e| self.commands.failed(index, no_ready(format!("cannot start: {e}"))))?;
        let prefix = self.commands.prefix(index);
        let stderr = Stderr::copy(child.stderr.take().expect("stderr is piped"), prefix.clone());
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lifeline = child.stdin.take().expect("stdin is piped");
        let ready = writeln!(lifeline, "{}", self.cookie)
            .and_then(|()| lifeline.flush())
            .map_err(|e| format!("did not take its cookie: {e}"))
            .and_then(|()| read_ready_line(stdout, prefix));
        match ready {
            Ok(address) => {
                stderr.release();
                let pid = child.id();
                *self.slot(index) = Some(Node { child, _lifeline: lifeline });
                Ok(Started { address, pid })
            }
            Err(reason) => {
                drop(lifeline);
                let status = exit_status(&mut child);
                let _ = child.kill();
                let _ = child.wait();
                let why = NoReady { reason, status, stderr: stderr.finish() };
                Err(self.commands.failed(index, why))
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

    fn tls(&self) -> bool {
        self.commands.tls()
    }
}

impl<C> Drop for Processes<C> {
    fn drop(&mut self) {
        for node in &self.nodes {
            if let Some(mut node) = node.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = node.child.kill();
                let _ = node.child.wait();
            }
        }
    }
}

/// The exit status of a child that closed its stdout, waiting for it at
/// most [`EXIT_TIMEOUT`] (it is exiting, or it never will).
fn exit_status(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => return None,
        }
    }
}

/// A child's stderr, read on a thread: kept until the child is ready (for
/// the error if it never is), then copied to ours.
struct Stderr {
    kept: Arc<Mutex<Option<Vec<String>>>>,
    prefix: Option<String>,
    done: mpsc::Receiver<()>,
}

impl Stderr {
    fn copy(stderr: std::process::ChildStderr, prefix: Option<String>) -> Stderr {
        let kept = Arc::new(Mutex::new(Some(Vec::new())));
        let (sender, done) = mpsc::channel();
        let lines = Arc::clone(&kept);
        let line_prefix = prefix.clone().unwrap_or_default();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut kept = lines.lock().unwrap_or_else(|p| p.into_inner());
                match kept.as_mut() {
                    Some(kept) => kept.push(line),
                    None => eprintln!("{line_prefix}{line}"),
                }
            }
            let _ = sender.send(());
        });
        Stderr { kept, prefix, done }
    }

    /// The child is ready: what it said so far goes to our stderr, and so
    /// does what it says from now on.
    fn release(self) {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner()).take();
        let prefix = self.prefix.unwrap_or_default();
        for line in kept.into_iter().flatten() {
            eprintln!("{prefix}{line}");
        }
    }

    /// The child failed and exited: what it said (waiting a little for the
    /// end of its stderr).
    fn finish(self) -> Vec<String> {
        let _ = self.done.recv_timeout(Duration::from_secs(1));
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default()
    }
}

/// Reads the child's first line (on a thread, to bound the wait) and takes
/// the address from it; the rest of its stdout is drained so it never
/// blocks on a full pipe (copied to our stderr after `prefix`, if any).
fn read_ready_line(
    stdout: std::process::ChildStdout,
    prefix: Option<String>,
) -> Result<String, String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let _ = sender.send(lines.next());
        for line in lines {
            match (&prefix, line) {
                (Some(prefix), Ok(line)) => eprintln!("{prefix}{line}"),
                (_, Ok(_)) => {}
                (_, Err(_)) => break,
            }
        }
    });
    match receiver.recv_timeout(START_TIMEOUT) {
        Ok(Some(Ok(line))) => line
            .strip_prefix(READY_PREFIX)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .ok_or_else(|| format!("printed '{line}' instead of its ready line")),
        Ok(_) => Err("exited before listening".to_string()),
        Err(_) => Err(format!("did not listen within {}s", START_TIMEOUT.as_secs())),
    }
}

/// `--local-nodes N`: N children of `program` on 127.0.0.1, each on a port
/// its OS picked.
#[derive(Debug)]
pub(crate) struct LocalCommand {
    program: PathBuf,
    count: usize,
    threads: Option<usize>,
}

impl NodeCommand for LocalCommand {
    fn count(&self) -> usize {
        self.count
    }

    fn command(&self, index: usize) -> Result<Command, ClusterError> {
        let mut command = Command::new(&self.program);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--name", &format!("local-{index}")])
            .arg("--cookie-stdin")
            // Its log lines reach the coordinator through heartbeats; its
            // own stderr (copied to the coordinator's) keeps errors.
            .env("COMBTEST_LOG", std::env::var("COMBTEST_LOG").unwrap_or("error".into()));
        if let Some(threads) = self.threads {
            command.args(["--threads", &threads.to_string()]);
        }
        Ok(command)
    }

    fn prefix(&self, _: usize) -> Option<String> {
        None
    }

    fn failed(&self, index: usize, why: NoReady) -> ClusterError {
        let said = why.stderr.last().map_or(String::new(), |line| format!(": {line}"));
        ClusterError::Local(format!(
            "local node {index} ({}) {}{said}",
            self.program.display(),
            why.reason
        ))
    }
}

/// `--local-nodes N`: N children of `program` on 127.0.0.1, each on a port
/// its OS picked, killed on drop (and exiting by themselves if the
/// coordinator dies first).
#[derive(Debug)]
pub struct LocalLauncher(Processes<LocalCommand>);

impl LocalLauncher {
    /// A launcher of `count` nodes of `program`, with `cookie` and each with
    /// `threads` runner threads (or its default). Starts none yet.
    pub fn new(count: usize, program: PathBuf, cookie: &str, threads: Option<usize>) -> Self {
        LocalLauncher(Processes::new(LocalCommand { program, count, threads }, cookie))
    }
}

impl Launcher for LocalLauncher {
    fn count(&self) -> usize {
        self.0.count()
    }
    fn start(&self, index: usize) -> Result<Started, ClusterError> {
        self.0.start(index)
    }
    fn stop(&self, index: usize) {
        self.0.stop(index)
    }
    fn pid(&self, index: usize) -> Option<u32> {
        self.0.pid(index)
    }
}
