//! Processes, through `/proc` and signals: the coordinator's node children,
//! resident memory, and a handle that signals one process and no other.
//!
//! A [`Proc`] is a process as it was found: its pid and its start time
//! (`/proc/PID/stat` field 22), so a pid the kernel has since given to
//! another process is never mistaken for it. Signals go through a pidfd
//! opened before the process is checked, so even a pid reused between the
//! check and the signal cannot be hit (with `kill(2)` as the fallback on
//! kernels without pidfds).

use std::os::fd::{FromRawFd as _, OwnedFd};
use std::os::unix::io::AsRawFd as _;

/// A process as found: its pid and start time (clock ticks since boot).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Proc {
    pub pid: u32,
    pub start: u64,
}

/// A node process under the coordinator: `serve ... --name local-N`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    pub name: String,
    pub proc: Proc,
}

/// `/proc/PID/stat`'s fields after the command name: [0] is the state,
/// [1] the parent pid, [19] the start time.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything, spaces and
    // parentheses included: the fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

fn start_of(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The process `pid` is now, if it runs (or is a zombie not yet reaped).
pub fn find(pid: u32) -> Option<Proc> {
    Some(Proc { pid, start: start_of(pid)? })
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The node name of a `serve --name local-N` command line.
fn node_name(args: &[String]) -> Option<String> {
    if args.get(1).map(String::as_str) != Some("serve") {
        return None;
    }
    let at = args.iter().position(|a| a == "--name")?;
    let name = args.get(at + 1)?;
    let index = name.strip_prefix("local-")?;
    index.parse::<u32>().ok().map(|_| name.clone())
}

/// The node processes whose parent is `coordinator` now, by name.
pub fn nodes(coordinator: &Proc) -> Vec<Node> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut nodes: Vec<Node> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(coordinator.pid))
        .filter_map(|pid| {
            let name = node_name(&cmdline(pid))?;
            Some(Node { name, proc: find(pid)? })
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes
}

/// Whether `node` is still that very process, with that name (its parent
/// may have changed: after the coordinator exits, its nodes are orphans).
fn still(node: &Node) -> bool {
    start_of(node.proc.pid) == Some(node.proc.start)
        && node_name(&cmdline(node.proc.pid)).as_deref() == Some(&node.name)
}

/// A process's resident set size in KiB, if it is still that process.
pub fn rss_kib(proc: &Proc) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", proc.pid)).ok()?;
    let kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    (start_of(proc.pid) == Some(proc.start)).then_some(kib)
}

/// A handle that can signal one process, and only it.
pub struct Target {
    proc: Proc,
    /// A pidfd, where the kernel has them.
    fd: Option<OwnedFd>,
}

impl Target {
    /// A handle on `proc` if it is still that process and `check` holds of
    /// it (checked after the pidfd is open, so the pidfd is that process).
    fn open(proc: &Proc, check: impl Fn() -> bool) -> Option<Target> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new file
        // descriptor or -1; nothing else is touched.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, proc.pid as libc::pid_t, 0) };
        // SAFETY: a non-negative return is a file descriptor we now own.
        let fd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw as i32) });
        (start_of(proc.pid) == Some(proc.start) && check())
            .then(|| Target { proc: proc.clone(), fd })
    }

    /// A handle on the coordinator (the campaign's own child, not reaped).
    pub fn coordinator(proc: &Proc) -> Option<Target> {
        Target::open(proc, || true)
    }

    /// A handle on `node` if it is still a child of `coordinator`.
    pub fn node(node: &Node, coordinator: &Proc) -> Option<Target> {
        Target::open(&node.proc, || {
            parent_of(node.proc.pid) == Some(coordinator.pid) && still(node)
        })
    }

    /// A handle on `node` if it is still that process (whatever its parent
    /// now): for the cleanup once the coordinator is gone.
    pub fn orphan(node: &Node) -> Option<Target> {
        Target::open(&node.proc, || still(node))
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    /// Sends `signal`; false if the process is gone.
    pub fn signal(&self, signal: libc::c_int) -> bool {
        let sent = match &self.fd {
            // SAFETY: the pidfd is open and ours; a null siginfo is allowed.
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    signal,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            },
            None if start_of(self.proc.pid) == Some(self.proc.start) => {
                // SAFETY: kill(2) with a pid checked just above.
                i64::from(unsafe { libc::kill(self.proc.pid as libc::pid_t, signal) })
            }
            None => -1,
        };
        sent == 0
    }
}
