//! Nodes started over SSH (`run --ssh`, `soak --ssh`): [`SshNodes`] says
//! where and how, and `SshCommand` is the `NodeCommand` that the shared
//! `launcher::Processes` runs (cookie on ssh's stdin, ready line on its
//! stdout, its stdin as the node's lifeline, stop by killing the ssh
//! client). Before a host's first start, `ssh -G` gives the address the
//! node binds; with `--ssh-copy` the coordinator's binary is copied there
//! first. ARCHITECTURE.md ("Nodes over SSH") has the protocol.

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::cluster::launcher::{NoReady, NodeCommand, Processes};
use crate::cluster::{ClusterError, Tls};
use crate::config::SshHost;

/// Where the coordinator keeps copies of its binary on hosts
/// (`--ssh-copy`), relative to the remote user's home directory.
const COPY_DIR: &str = ".cache/combtest";

/// How a coordinator starts its nodes over SSH.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SshNodes {
    /// One node per host.
    pub hosts: Vec<SshHost>,
    /// The node binary on the hosts (default: the local node binary's
    /// path, `ClusterOptions::program` or this process's executable).
    pub path: Option<PathBuf>,
    /// Copy the local node binary to each host first and run the copy.
    pub copy: bool,
    /// Words added to every `ssh` command (`-F PATH`, `-o ...`).
    pub ssh_options: Vec<String>,
    /// Arguments added to every node's `serve`.
    pub serve_args: Vec<String>,
}

impl SshNodes {
    /// One node on each of `hosts`.
    pub fn new(hosts: Vec<SshHost>) -> Self {
        SshNodes { hosts, ..SshNodes::default() }
    }
}

/// Each host's node: the command behind `ssh`, and what is learnt once per
/// host (its bind address, the copied binary's path).
#[derive(Debug)]
pub(crate) struct SshCommand {
    nodes: SshNodes,
    /// The local binary: the default remote path, what `--ssh-copy` copies.
    program: PathBuf,
    threads: Option<usize>,
    /// Per host: (bind host, remote path), once known.
    prepared: Vec<Mutex<Option<(String, String)>>>,
    /// The nodes are given the cluster's TLS files (in `serve_args`).
    tls: bool,
}

/// The SSH launcher: `Processes` behind ssh.
pub(crate) type SshLauncher = Processes<SshCommand>;

/// A launcher of one node per host of `nodes`.
/// `program` is the local node binary (copied with `copy`, and the
/// default remote path). With `tls`, each node is given the same TLS files
/// (`--tls-cert`, `--tls-key`, `--tls-ca`: the paths must hold the host's
/// own files there) and is dialled with TLS.
pub(crate) fn launcher(
    mut nodes: SshNodes,
    program: PathBuf,
    cookie: &str,
    threads: Option<usize>,
    tls: Option<&Tls>,
) -> SshLauncher {
    let prepared = nodes.hosts.iter().map(|_| Mutex::new(None)).collect();
    if let Some(tls) = tls {
        nodes.serve_args.extend(tls.serve_args());
    }
    let tls = tls.is_some();
    Processes::new(SshCommand { nodes, program, threads, prepared, tls }, cookie)
}

/// `text` as one word for a POSIX shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

impl SshCommand {
    /// Node `index`'s name: its host, with `#N` for the Nth time a host is
    /// given.
    fn name(&self, index: usize) -> String {
        let host = &self.nodes.hosts[index];
        let before = self.nodes.hosts[..index].iter().filter(|h| h.host == host.host).count();
        match before {
            0 => host.host.clone(),
            n => format!("{}#{}", host.host, n + 1),
        }
    }

    /// `ssh` with the user's options and host `index`'s, up to the host.
    fn ssh(&self, index: usize) -> Command {
        let host = &self.nodes.hosts[index];
        let mut ssh = Command::new("ssh");
        // ssh takes the first value it is given of each option: the user's
        // options come first, so they win over these defaults.
        ssh.args(&self.nodes.ssh_options)
            .args(["-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .stdin(Stdio::null())
            .env_remove("COMBTEST_COOKIE");
        if let Some(user) = &host.user {
            ssh.args(["-l", user]);
        }
        if let Some(port) = host.port {
            ssh.args(["-p", &port.to_string()]);
        }
        if let Some(identity) = &host.identity {
            ssh.arg("-i").arg(identity);
        }
        ssh
    }

    fn error(&self, index: usize, reason: impl Into<String>) -> ClusterError {
        ClusterError::Ssh { host: self.name(index), reason: reason.into() }
    }

    /// Host `index`'s bind address and remote binary path, learnt (and the
    /// binary copied) on first use.
    fn prepare(&self, index: usize) -> Result<(String, String), ClusterError> {
        let mut prepared = self.prepared[index].lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = prepared.as_ref() {
            return Ok(known.clone());
        }
        let bind = self.bind_host(index)?;
        // The node logs errors only, so its own warning would not be seen.
        let loopback = bind == "localhost"
            || bind.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !self.tls && !loopback {
            eprintln!(
                "warning: host {}: the node's traffic with this coordinator (at {bind}) is not \
                 encrypted and is readable on the network (give --tls-cert, --tls-key and --tls-ca)",
                self.name(index)
            );
        }
        let path = match (self.nodes.copy, &self.nodes.path) {
            (true, _) => self.copy(index)?,
            (false, path) => path.as_ref().unwrap_or(&self.program).to_string_lossy().into_owned(),
        };
        *prepared = Some((bind.clone(), path.clone()));
        Ok((bind, path))
    }

    /// The `hostname` of `ssh -G HOST`: where ssh connects, so where the
    /// node can listen for the coordinator.
    fn bind_host(&self, index: usize) -> Result<String, ClusterError> {
        let mut ssh = self.ssh(index);
        ssh.arg("-G").arg(&self.nodes.hosts[index].host);
        let output =
            ssh.output().map_err(|e| self.error(index, format!("cannot run ssh -G: {e}")))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let hostname = text.lines().find_map(|l| l.strip_prefix("hostname ")).map(str::trim);
        match (output.status.success(), hostname) {
            (true, Some(hostname)) if !hostname.is_empty() => Ok(hostname.to_string()),
            _ => Err(self
                .error(index, format!("ssh -G gave no host name: {}", last_line(&output.stderr)))),
        }
    }

    /// Copies the coordinator's binary to the host (unless a copy of the
    /// same bytes is there) and returns its remote path.
    fn copy(&self, index: usize) -> Result<String, ClusterError> {
        let bytes = std::fs::read(&self.program).map_err(|e| {
            self.error(index, format!("cannot read {} to copy it: {e}", self.program.display()))
        })?;
        let name = self.program.file_name().map_or("combtest-node".into(), |n| n.to_string_lossy());
        let path = format!("{COPY_DIR}/{name}-{:016x}", fnv1a(&bytes));
        let remote = quote(&path);
        // One connection: the host says whether it has the copy, and only
        // then are the bytes sent.
        let script = format!(
            "if test -x {remote}; then echo have; exit 0; fi; echo need; mkdir -p {COPY_DIR} \
             && cat > {remote}.$$ && chmod 700 {remote}.$$ && mv {remote}.$$ {remote}"
        );
        let mut ssh = self.ssh(index);
        ssh.arg(&self.nodes.hosts[index].host)
            .arg("--")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child =
            ssh.spawn().map_err(|e| self.error(index, format!("cannot run ssh: {e}")))?;
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let errors = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stderr, &mut text);
            text
        });
        let mut answer = String::new();
        let stdout = child.stdout.take().expect("stdout is piped");
        let _ = std::io::BufReader::new(stdout).read_line(&mut answer);
        let mut stdin = child.stdin.take().expect("stdin is piped");
        if answer.trim() == "need" {
            let _ = stdin.write_all(&bytes);
        }
        drop(stdin);
        let status = child.wait().map_err(|e| self.error(index, format!("ssh failed: {e}")))?;
        let output = std::process::Output {
            status,
            stdout: Vec::new(),
            stderr: errors.join().unwrap_or_default(),
        };
        if !output.status.success() {
            let stderr: Vec<String> =
                String::from_utf8_lossy(&output.stderr).lines().map(str::to_string).collect();
            let why = NoReady {
                reason: format!("cannot copy {} to {path}", self.program.display()),
                status: Some(output.status),
                stderr,
            };
            return Err(self.failed(index, why));
        }
        Ok(path)
    }
}

impl NodeCommand for SshCommand {
    fn count(&self) -> usize {
        self.nodes.hosts.len()
    }

    fn command(&self, index: usize) -> Result<Command, ClusterError> {
        let (bind, path) = self.prepare(index)?;
        let listen = match bind.contains(':') {
            true => format!("[{bind}]:0"),
            false => format!("{bind}:0"),
        };
        // The node logs errors only, as a local node does (its run's log
        // lines reach the coordinator through heartbeats); `env` sets that
        // in any login shell.
        let log = std::env::var("COMBTEST_LOG").unwrap_or("error".into());
        let mut serve = vec![
            "env".into(),
            format!("COMBTEST_LOG={log}"),
            path,
            "serve".into(),
            "--listen".into(),
            listen,
            "--name".into(),
            self.name(index),
            "--cookie-stdin".into(),
        ];
        if let Some(threads) = self.threads {
            serve.extend(["--threads".into(), threads.to_string()]);
        }
        serve.extend(self.nodes.serve_args.iter().cloned());
        let remote: Vec<String> = serve.iter().map(|w| quote(w)).collect();
        let mut ssh = self.ssh(index);
        ssh.arg(&self.nodes.hosts[index].host).arg("--").arg(remote.join(" "));
        Ok(ssh)
    }

    fn prefix(&self, index: usize) -> Option<String> {
        Some(format!("{}: ", self.name(index)))
    }

    fn tls(&self) -> bool {
        self.tls
    }

    fn failed(&self, index: usize, why: NoReady) -> ClusterError {
        let said = why.stderr.iter().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim());
        let said_text = said.map_or(String::new(), |l| format!(" ({l})"));
        let path = self.prepared[index]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or_else(|| self.program.to_string_lossy().into_owned(), |(_, p)| p.clone());
        let reason = match why.status.and_then(|s| s.code()) {
            Some(255) if why.stderr.iter().any(|l| l.contains("Permission denied")) => {
                format!("authentication refused{said_text}")
            }
            Some(255) => format!("unreachable{said_text}"),
            Some(127) => format!(
                "the node binary {path} is not there{said_text}: give its path there with \
                 --ssh-path, or copy this one with --ssh-copy"
            ),
            Some(126) => format!("the node binary {path} cannot be run there{said_text}"),
            Some(code) => format!("{} (exit code {code}){said_text}", why.reason),
            None => format!("{}{said_text}", why.reason),
        };
        self.error(index, reason)
    }
}

/// The last line of `bytes` that says something.
fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
}

/// 64-bit FNV-1a: names a copied binary by its bytes.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(hosts: &[&str]) -> SshCommand {
        let mut nodes = SshNodes::new(hosts.iter().map(|h| h.parse().unwrap()).collect());
        nodes.path = Some(PathBuf::from("/opt/my node"));
        nodes.ssh_options = vec!["-F".into(), "/tmp/cfg".into()];
        nodes.serve_args = vec!["--tls-ca".into(), "ca.pem".into()];
        let prepared = nodes.hosts.iter().map(|_| Mutex::new(None)).collect();
        SshCommand {
            nodes,
            program: PathBuf::from("/bin/x"),
            threads: Some(2),
            prepared,
            tls: false,
        }
    }

    #[test]
    fn a_host_given_twice_gets_two_names() {
        let c = command(&["a", "b", "a"]);
        assert_eq!((c.name(0), c.name(1), c.name(2)), ("a".into(), "b".into(), "a#2".into()));
    }

    #[test]
    fn the_remote_command_quotes_every_word_and_has_no_cookie() {
        let c = command(&["me@h:2222"]);
        *c.prepared[0].lock().unwrap() = Some(("10.0.0.2".into(), "/opt/my node".into()));
        let ssh = c.command(0).unwrap();
        let args: Vec<String> = ssh.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(&args[..2], ["-F", "/tmp/cfg"], "the user's options first");
        let at = args.iter().position(|a| a == "h").unwrap();
        assert_eq!(&args[at - 4..at], ["-l", "me", "-p", "2222"]);
        assert_eq!(args[at + 1], "--");
        assert_eq!(
            args[at + 2],
            "'env' 'COMBTEST_LOG=error' '/opt/my node' 'serve' '--listen' '10.0.0.2:0' \
             '--name' 'h' '--cookie-stdin' '--threads' '2' '--tls-ca' 'ca.pem'"
        );
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn failures_are_told_apart_by_exit_code_and_ssh_s_words() {
        use std::os::unix::process::ExitStatusExt as _;
        let c = command(&["h"]);
        let why = |code: i32, line: &str| NoReady {
            reason: "exited before listening".into(),
            status: Some(std::process::ExitStatus::from_raw(code << 8)),
            stderr: vec![line.to_string()],
        };
        let text = |e: ClusterError| e.to_string();
        let denied = text(c.failed(0, why(255, "me@h: Permission denied (publickey).")));
        assert!(denied.starts_with("host h: authentication refused"), "{denied}");
        let refused = text(c.failed(0, why(255, "ssh: connect to host h port 22: refused")));
        assert!(refused.starts_with("host h: unreachable (ssh: connect"), "{refused}");
        let missing = text(c.failed(0, why(127, "sh: 1: /bin/x: not found")));
        assert!(missing.contains("/bin/x is not there") && missing.contains("--ssh-copy"));
        assert!(!missing.contains('\n'));
    }
}
