//! A real OpenSSH server for the SSH tests: `/usr/sbin/sshd -D -e -f
//! <temp config>` on a free port, with a temporary host key and an
//! authorized key made by `ssh-keygen` in a temp dir (`StrictModes no`),
//! and an ssh client config (`-F`) whose host aliases point at it with its
//! host key in a temp known_hosts. sshd is killed by pid when its guard
//! drops. Also network namespaces joined to this one by veth pairs
//! (`Netns`), deleted on drop. Needs root; `Sshd::start` returns `None`
//! (after printing why) where there is no root or no sshd.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::procs::{Proc, start};

/// Where Debian's openssh-server puts the daemon.
pub const SSHD: &str = "/usr/sbin/sshd";

/// Whether this process runs as root.
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// Why the SSH tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !Path::new(SSHD).exists() {
        return Some(format!("{SSHD} is missing (apt-get install openssh-server)"));
    }
    if !is_root() {
        return Some("not root (sshd needs it to start sessions)".to_string());
    }
    None
}

/// The keys of a test: a client key sshd accepts, one it does not, and
/// the host key.
pub struct Keys {
    pub dir: tempfile::TempDir,
}

impl Keys {
    pub fn new() -> Keys {
        let dir = tempfile::tempdir().expect("a temp dir");
        for name in ["host_key", "id", "other_id"] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "combtest-test", "-f"])
                .arg(dir.path().join(name))
                .stdin(Stdio::null())
                .status()
                .expect("ssh-keygen runs");
            assert!(status.success(), "ssh-keygen made {name}");
        }
        std::fs::copy(dir.path().join("id.pub"), dir.path().join("authorized_keys")).unwrap();
        Keys { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A running sshd, killed on drop.
pub struct Sshd {
    /// Where it listens.
    pub address: String,
    pub port: u16,
    proc: Proc,
}

impl Sshd {
    /// Starts sshd on 127.0.0.1 (a free port), with `keys`; `None` after
    /// printing why where it cannot run.
    pub fn start(keys: &Keys) -> Option<Sshd> {
        if let Some(why) = unavailable() {
            eprintln!("skipped: {why}");
            return None;
        }
        Some(Sshd::start_at(keys, "127.0.0.1", free_port(), &[]))
    }

    /// Starts sshd on `address:port`, behind `prefix` (such as `ip netns
    /// exec NS`), and waits (bounded) until it listens.
    pub fn start_at(keys: &Keys, address: &str, port: u16, prefix: &[&str]) -> Sshd {
        // sshd's privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let config = keys.path(&format!("sshd_config-{address}-{port}"));
        let text = format!(
            "Port {port}\nListenAddress {address}\nHostKey {}\nAuthorizedKeysFile {}\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
             StrictModes no\nUsePAM no\nPidFile none\nLogLevel INFO\n",
            keys.path("host_key").display(),
            keys.path("authorized_keys").display(),
        );
        std::fs::write(&config, text).unwrap();
        let mut command = match prefix.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(SSHD);
                command
            }
            None => Command::new(SSHD),
        };
        command.args(["-D", "-e", "-f"]).arg(&config);
        let proc = start(command);
        proc.wait_stderr("Server listening on");
        Sshd { address: address.to_string(), port, proc }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    /// What it logged.
    pub fn log(&self) -> String {
        self.proc.stderr()
    }
}

/// A test's sshd, its keys and a client config whose aliases all point at
/// it.
pub struct Hosts {
    pub keys: Keys,
    pub sshd: Sshd,
    pub config: PathBuf,
}

impl Hosts {
    /// sshd and aliases `(name, key)` (`id` is accepted, `other_id`
    /// refused); `None` after printing why where sshd cannot run.
    pub fn start(aliases: &[(&str, &str)]) -> Option<Hosts> {
        let keys = Keys::new();
        let sshd = Sshd::start(&keys)?;
        let aliases: Vec<Alias> = aliases
            .iter()
            .map(|&(name, key)| Alias { name, address: "127.0.0.1", port: sshd.port, key })
            .collect();
        let config = client_config(&keys, &aliases);
        Some(Hosts { keys, sshd, config })
    }

    /// `COMBTEST_SSH_OPTIONS` for a coordinator.
    pub fn options(&self) -> String {
        format!("-F {}", self.config.display())
    }
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One alias of an ssh client config.
pub struct Alias<'a> {
    pub name: &'a str,
    pub address: &'a str,
    pub port: u16,
    /// The key file in the keys' dir (`id` or `other_id`).
    pub key: &'a str,
}

/// Writes an ssh client config with `aliases` and a known_hosts holding
/// the test host key for each; returns its path (for `ssh -F`).
pub fn client_config(keys: &Keys, aliases: &[Alias]) -> PathBuf {
    let host_key = std::fs::read_to_string(keys.path("host_key.pub")).unwrap();
    let mut known = String::new();
    let mut config = String::new();
    for a in aliases {
        let _ = writeln!(known, "[{}]:{} {}", a.address, a.port, host_key.trim());
        let _ = write!(
            config,
            "Host {}\n  HostName {}\n  Port {}\n  User root\n  IdentityFile {}\n  \
             IdentitiesOnly yes\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  \
             StrictHostKeyChecking yes\n  UpdateHostKeys no\n  LogLevel ERROR\n",
            a.name,
            a.address,
            a.port,
            keys.path(a.key).display(),
            keys.path("known_hosts").display(),
        );
    }
    std::fs::write(keys.path("known_hosts"), known).unwrap();
    let path = keys.path(&format!("ssh_config-{}", aliases.first().map_or("", |a| a.name)));
    std::fs::write(&path, config).unwrap();
    path
}

/// Runs `ip ARGS`, failing the test if it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("ip runs");
    assert!(output.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Network namespaces, each joined to this one by a veth pair: namespace
/// `i` has 10.231.S.2/24 and this side 10.231.S.1/24, S picked per test
/// run. Deleted (with their links) on drop.
pub struct Netns {
    /// (namespace, link on this side, the namespace's address).
    pub spaces: Vec<(String, String, String)>,
}

impl Netns {
    /// Whether namespaces can be made here (root and `ip netns`).
    pub fn available() -> Result<(), String> {
        if let Some(why) = unavailable() {
            return Err(why);
        }
        let probe = format!("combtest-probe-{}", std::process::id());
        let made = Command::new("ip").args(["netns", "add", &probe]).output();
        match made {
            Ok(out) if out.status.success() => {
                let _ = Command::new("ip").args(["netns", "del", &probe]).status();
                Ok(())
            }
            Ok(out) => Err(format!("ip netns add fails: {}", String::from_utf8_lossy(&out.stderr))),
            Err(e) => Err(format!("no ip command: {e}")),
        }
    }

    /// `count` namespaces.
    pub fn new(count: usize) -> Netns {
        let pid = std::process::id();
        let mut netns = Netns { spaces: Vec::new() };
        for i in 0..count {
            let name = format!("combtest-{pid}-{i}");
            // Link names are at most 15 bytes.
            let outer = format!("ct{}{i}r", pid % 100_000_000);
            let inner = format!("ct{}{i}n", pid % 100_000_000);
            let subnet = (pid as usize % 120) * 2 + i;
            let (here, there) = (format!("10.231.{subnet}.1"), format!("10.231.{subnet}.2"));
            ip(&["netns", "add", &name]);
            netns.spaces.push((name.clone(), outer.clone(), there.clone()));
            ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner]);
            ip(&["link", "set", &inner, "netns", &name]);
            ip(&["addr", "add", &format!("{here}/24"), "dev", &outer]);
            ip(&["link", "set", &outer, "up"]);
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &name, "ip"];
                all.extend(args);
                ip(&all);
            };
            inside(&["link", "set", "lo", "up"]);
            inside(&["addr", "add", &format!("{there}/24"), "dev", &inner]);
            inside(&["link", "set", &inner, "up"]);
        }
        netns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for (name, outer, _) in &self.spaces {
            let _ = Command::new("ip").args(["link", "del", outer]).output();
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// The pids of processes whose parent is `parent` and whose command line
/// is `ssh ... HOST -- ...` for `host`.
pub fn ssh_clients(parent: u32, host: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:")).map(str::trim);
        if ppid != Some(&parent.to_string()) {
            continue;
        }
        let args = cmdline(pid);
        let at = args.iter().position(|a| a == "--");
        if args.first().is_some_and(|a| a == "ssh")
            && at.is_some_and(|at| at > 0 && args[at - 1] == host)
        {
            pids.push(pid);
        }
    }
    pids
}

/// The `serve` processes below process `ancestor` (nodes an sshd
/// started), by pid.
pub fn nodes_below(ancestor: u32) -> Vec<u32> {
    let parent = |pid: u32| -> Option<u32> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status.lines().find_map(|l| l.strip_prefix("PPid:"))?.trim().parse().ok()
    };
    let below = |mut pid: u32| {
        while let Some(up) = parent(pid).filter(|&p| p > 1) {
            if up == ancestor {
                return true;
            }
            pid = up;
        }
        false
    };
    let pids = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()));
    pids.filter(|&pid| cmdline(pid).get(1).is_some_and(|w| w == "serve") && below(pid)).collect()
}

/// The name a node process was given (`serve ... --name NAME`).
pub fn node_name(pid: u32) -> Option<String> {
    let args = cmdline(pid);
    let at = args.iter().position(|a| a == "--name")?;
    args.get(at + 1).cloned()
}

/// A process's command line, word by word (empty if it is gone).
pub fn cmdline(pid: u32) -> Vec<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    bytes
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into())
        .collect()
}
