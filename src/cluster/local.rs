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
    lifelines: Vec<std::process::ChildStdin>,
    addresses: Vec<String>,
    program: PathBuf,
    cookie: String,
    threads: Option<usize>,
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
        let mut nodes = LocalNodes {
            children: Vec::new(),
            lifelines: Vec::new(),
            addresses: Vec::new(),
            program,
            cookie: cookie.to_string(),
            threads,
        };
        for index in 0..count {
            let (child, lifeline, address) = nodes.start(index)?;
            nodes.children.push(child);
            nodes.lifelines.push(lifeline);
            nodes.addresses.push(address);
        }
        Ok(nodes)
    }

    fn start(
        &self,
        index: usize,
    ) -> Result<(Child, std::process::ChildStdin, String), ClusterError> {
        let program = &self.program;
        let mut command = Command::new(program);
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--name", &format!("local-{index}")])
            .arg("--exit-on-stdin-eof")
            .env("COMBTEST_COOKIE", &self.cookie)
            // Its log lines reach the coordinator through heartbeats;
            // its own stderr (shared with the coordinator) keeps errors.
            .env("COMBTEST_LOG", std::env::var("COMBTEST_LOG").unwrap_or("error".into()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // A process group of its own: Ctrl-C at the coordinator's terminal
        // is the coordinator's to handle, not a crash of every node.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        if let Some(threads) = self.threads {
            command.args(["--threads", &threads.to_string()]);
        }
        let mut child = command
            .spawn()
            .map_err(|e| ClusterError::Local(format!("cannot start {}: {e}", program.display())))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let lifeline = child.stdin.take().expect("stdin is piped");
        match read_ready_line(stdout) {
            Ok(address) => Ok((child, lifeline, address)),
            Err(reason) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(ClusterError::Local(format!(
                    "local node {index} ({}) {reason}",
                    program.display()
                )))
            }
        }
    }

    /// Kills node `index` (if it still runs) and starts it again, on a new
    /// port.
    pub fn restart(&mut self, index: usize) -> Result<(), ClusterError> {
        let _ = self.children[index].kill();
        let _ = self.children[index].wait();
        let (child, lifeline, address) = self.start(index)?;
        self.children[index] = child;
        self.lifelines[index] = lifeline;
        self.addresses[index] = address;
        Ok(())
    }

    /// The nodes whose process has exited.
    pub fn exited(&mut self) -> Vec<usize> {
        (0..self.children.len())
            .filter(|&i| self.children[i].try_wait().is_ok_and(|status| status.is_some()))
            .collect()
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
