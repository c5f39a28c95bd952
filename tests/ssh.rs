//! Nodes started over SSH, with a real sshd (`common::sshd`): the same
//! report as in-process; a node whose ssh session is killed is lost and
//! the run goes on; a soak restarts it; the cookie is on no process's
//! command line or in its environment; an unreachable host, a refused key
//! and a missing binary are one-line errors naming the host (exit 2), and
//! a node of another build refuses the run naming its host; and,
//! where network namespaces can be made, nodes on two other addresses.
//! Tests that need root and sshd (all but the unreachable host) say so and
//! skip elsewhere. Every process is killed by pid when its guard drops;
//! every wait is bounded.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use combtest::cluster::ssh::SshNodes;
use combtest::cluster::{Cluster, ClusterOptions};
use combtest::config::SshHost;

mod common;
use common::procs::{BOUND, NODE, Proc, json, signal, start};
use common::sshd::{
    Alias, Hosts, Keys, Netns, Sshd, client_config, cmdline, free_port, nodes_below, ssh_clients,
};
use common::{example, same_report_as_in_process};

/// The hosts of most tests: `h1`, `h2` (an accepted key) and `bad` (a key
/// sshd refuses), all pointing at one sshd.
fn hosts() -> Option<Hosts> {
    Hosts::start(&[("h1", "id"), ("h2", "id"), ("bad", "other_id")])
}

/// A coordinator `program args`, its ssh client pointed at `config`.
fn coordinator(program: &Path, args: &[&str], config: &str) -> Proc {
    let mut command = Command::new(program);
    command.args(args).env("COMBTEST_SSH_OPTIONS", config);
    start(command)
}

/// Opens a cluster of `hosts` (`combtest-node` as the node binary).
fn open(hosts: &[&str], config: &Path) -> Cluster {
    let mut nodes = SshNodes::new(hosts.iter().map(|h| h.parse::<SshHost>().unwrap()).collect());
    nodes.ssh_options = vec!["-F".into(), config.display().to_string()];
    let options = ClusterOptions::nodes(Vec::<String>::new())
        .ssh(nodes)
        .program(NODE)
        .node_threads(2)
        .cookie(format!("ssh-test-cookie-{}", std::process::id()));
    Cluster::open(options).unwrap()
}

/// `demo` (a serial action whose value reaches every walk) and `smoke` on
/// `cluster` give the in-process reports and final states.
fn same_as_in_process(cluster: &Cluster) {
    for name in ["demo", "smoke"] {
        same_report_as_in_process(name, cluster);
    }
}

#[test]
fn a_run_on_nodes_started_over_ssh_gives_the_in_process_report() {
    let Some(hosts) = hosts() else { return };
    let cluster = open(&["h1", "h2"], &hosts.config);
    same_as_in_process(&cluster);
    // Both nodes came through sshd: two sessions, and the nodes named
    // after their hosts.
    let pids = cluster.local_pids();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| p.is_some_and(|p| cmdline(p)[0] == "ssh")), "{pids:?}");
    assert!(hosts.sshd.log().matches("Accepted publickey").count() >= 2, "{}", hosts.sshd.log());
    let nodes = nodes_below(hosts.sshd.pid());
    assert_eq!(nodes.len(), 2, "two nodes under sshd: {nodes:?}");
    // Closing the cluster ends the ssh sessions: the nodes exit.
    cluster.close();
    poll("the nodes exit", || nodes_below(hosts.sshd.pid()).is_empty().then_some(()));
}

/// Every process's command line and environment, with its pid.
fn every_process() -> Vec<(u32, Vec<u8>, Vec<u8>)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let read = |file: &str| std::fs::read(entry.path().join(file)).unwrap_or_default();
        all.push((pid, read("cmdline"), read("environ")));
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_cookie_is_on_no_command_line_and_in_no_environment() {
    let Some(hosts) = hosts() else { return };
    let cluster = open(&["h1", "h2"], &hosts.config);
    let cookie = format!("ssh-test-cookie-{}", std::process::id());
    let processes = every_process();
    // The scan sees what it must: the ssh clients, sshd's session
    // processes and the nodes.
    let has = |word: &[u8]| processes.iter().filter(|(_, c, _)| contains(c, word)).count();
    assert!(has(b"--cookie-stdin") >= 4, "ssh clients and nodes are seen");
    let environments =
        processes.iter().filter(|(_, c, e)| contains(c, b"--cookie-stdin") && !e.is_empty());
    assert!(environments.count() >= 4, "their environments are read");
    assert!(has(b"sshd") >= 3, "sshd and its sessions are seen");
    for (pid, command_line, environment) in &processes {
        assert!(!contains(command_line, cookie.as_bytes()), "the cookie is in {pid}'s cmdline");
        assert!(!contains(environment, cookie.as_bytes()), "the cookie is in {pid}'s environ");
    }
    // The nodes authenticated with it all the same.
    same_as_in_process(&cluster);
}

/// Waits (at most `BOUND`) until `ready` gives a value.
fn poll<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} within {BOUND:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Once `host`'s node has printed `relay: busy` (copied to the
/// coordinator's stderr: it has run 20 walks), kills its ssh client, the
/// one child of the coordinator running `ssh ... host -- ...`; returns its
/// pid.
fn kill_session(coordinator: &Proc, host: &str) -> u32 {
    coordinator.wait_stderr(&format!("{host}: relay: busy"));
    let clients = ssh_clients(coordinator.pid, host);
    assert_eq!(clients.len(), 1, "one ssh client for {host}: {clients:?}");
    signal(clients[0], "KILL");
    clients[0]
}

#[test]
fn killing_a_nodes_ssh_session_loses_the_node_and_the_run_goes_on() {
    let Some(hosts) = hosts() else { return };
    let program = example("cluster_node");
    let run = coordinator(
        &program,
        &["run", "--suite", "relay", "--ssh", "h1,h2", "--heartbeat-timeout", "1s", "--json"],
        &hosts.options(),
    );
    kill_session(&run, "h2");
    let (code, out, err) = run.finish();
    let report = json(&out);
    let walks = report["walks"].as_u64().unwrap();
    let aborted = report["aborted"].as_u64().unwrap();
    assert_eq!(walks, 200);
    assert_eq!(code, Some(if aborted > 0 { 1 } else { 0 }), "{out}{err}");
    assert_eq!(report["passed"].as_u64().unwrap() + aborted, walks, "{out}");
    assert!(err.contains("node lost"), "{err}");
    for group in report["aborted_walks"].as_array().unwrap() {
        let reason = group["reason"].as_str().unwrap();
        assert!(reason.starts_with("node h2 (pid ") && reason.contains("lost"), "{reason}");
    }
    // The coordinator is gone: so are the nodes it started (the restarted
    // one too).
    poll("the nodes exit", || nodes_below(hosts.sshd.pid()).is_empty().then_some(()));
}

#[test]
fn a_coordinator_stopped_by_ctrl_c_stops_its_nodes() {
    let Some(hosts) = hosts() else { return };
    let program = example("cluster_node");
    let run = coordinator(&program, &["run", "--suite", "relay", "--ssh", "h1"], &hosts.options());
    run.wait_stderr("h1: relay: busy");
    assert_eq!(nodes_below(hosts.sshd.pid()).len(), 1);
    run.signal("INT");
    let (code, out, err) = run.finish();
    assert!(matches!(code, Some(0 | 1)), "{out}{err}");
    poll("the node exits", || nodes_below(hosts.sshd.pid()).is_empty().then_some(()));
}

#[test]
fn a_soak_restarts_an_ssh_node_that_was_lost() {
    let Some(hosts) = hosts() else { return };
    let program = example("cluster_node");
    let soak = coordinator(
        &program,
        &[
            "soak",
            "--suite",
            "relay",
            "--ssh",
            "h1,h2",
            "--threads",
            "2",
            "--rounds",
            "30",
            "--heartbeat-timeout",
            "1s",
            "--json",
        ],
        &hosts.options(),
    );
    let first = kill_session(&soak, "h2");
    // A new ssh client for h2, whose node runs walks again: it prints its
    // own `relay: busy`.
    let second = poll("a new ssh client for h2", || {
        ssh_clients(soak.pid, "h2").into_iter().find(|&p| p != first)
    });
    assert_ne!(second, first);
    poll("the restarted node runs walks", || {
        (soak.stderr().matches("h2: relay: busy").count() >= 2).then_some(())
    });
    let (code, out, err) = soak.finish();
    let report = json(&out);
    let totals = &report["totals"];
    assert!(totals["nodes_lost"].as_u64().unwrap() >= 1, "{out}");
    assert_eq!(totals["rounds"].as_u64().unwrap(), 30, "{out}{err}");
    assert!(matches!(code, Some(0 | 1)), "{out}{err}");
    // The restart names the host the node had joined as.
    let restart = err.lines().find(|l| l.contains("restarting a lost node"));
    assert!(restart.is_some_and(|l| l.contains("h2")), "{err}");
}

/// Runs a coordinator to its end: exit code, stdout, stderr.
fn failing(hosts: &str, extra: &[&str], config: &str) -> (Option<i32>, String, String) {
    let mut args = vec!["run", "--suite", "smoke", "--ssh", hosts];
    args.extend(extra);
    coordinator(Path::new(NODE), &args, config).finish()
}

/// An error run: exit 2, nothing on stdout, one line on stderr naming the
/// host. Returns that line.
fn one_line_error(result: (Option<i32>, String, String), host: &str) -> String {
    let (code, out, err) = result;
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.is_empty(), "no walk ran: {out}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with(&format!("error: host {host}: ")), "{err}");
    lines[0].to_string()
}

#[test]
fn an_unreachable_host_is_one_line_naming_it() {
    // No sshd needed: nothing listens on the port.
    let keys = Keys::new();
    let port = free_port();
    let alias = Alias { name: "nowhere", address: "127.0.0.1", port, key: "id" };
    let config = client_config(&keys, &[alias]);
    let options = format!("-F {}", config.display());
    let line = one_line_error(failing("nowhere", &[], &options), "nowhere");
    assert!(line.contains("unreachable") && line.contains("refused"), "{line}");
    // `--ssh` beats nodes from the environment.
    let mut command = Command::new(NODE);
    command.args(["run", "--suite", "smoke", "--ssh", "nowhere"]);
    command.env("COMBTEST_SSH_OPTIONS", &options).env("COMBTEST_NODES", "127.0.0.1:9");
    let line = one_line_error(start(command).finish(), "nowhere");
    assert!(line.contains("unreachable"), "{line}");
}

#[test]
fn a_refused_key_and_a_missing_binary_are_one_line_naming_the_host() {
    let Some(hosts) = hosts() else { return };
    let line = one_line_error(failing("bad", &[], &hosts.options()), "bad");
    assert!(line.contains("authentication refused"), "{line}");
    let missing = hosts.keys.path("no-such-node");
    let path = missing.to_str().unwrap();
    let line = one_line_error(failing("h1", &["--ssh-path", path], &hosts.options()), "h1");
    assert!(line.contains(&format!("{path} is not there")), "{line}");
    assert!(line.contains("--ssh-copy"), "{line}");
}

#[test]
fn a_node_of_another_build_refuses_the_run_naming_its_host() {
    let Some(hosts) = hosts() else { return };
    // The hosts run combtest-node, which has the built-in suites but not
    // the coordinator's `relay`.
    let args = ["run", "--suite", "relay", "--ssh", "h1", "--ssh-path", NODE];
    let (code, out, err) = coordinator(&example("cluster_node"), &args, &hosts.options()).finish();
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.is_empty(), "no walk ran: {out}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("error: node h1 (pid "), "{err}");
    assert!(lines[0].contains("refused the run: node h1 has no suite 'relay'"), "{err}");
}

#[test]
fn ssh_copy_copies_the_binary_once_and_runs_the_copy() {
    let Some(hosts) = hosts() else { return };
    // sshd starts root's commands in root's home directory (passwd's).
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let root = passwd.lines().find(|l| l.starts_with("root:")).unwrap();
    let home = root.split(':').nth(5).unwrap().to_string();
    let run = || failing("h1", &["--ssh-copy", "--json"], &hosts.options());
    let (code, out, err) = run();
    assert_eq!(code, Some(0), "{out}{err}");
    let dir = Path::new(&home).join(".cache/combtest");
    let copies: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("combtest-node-"))
        .collect();
    assert!(!copies.is_empty(), "a copy in {}", dir.display());
    let ours = std::fs::read(NODE).unwrap();
    let copy = copies.iter().find(|e| std::fs::read(e.path()).ok().as_ref() == Some(&ours));
    let copy = copy.expect("the copy is this binary").path();
    let modified = || std::fs::metadata(&copy).unwrap().modified().unwrap();
    let first = modified();
    // Again: the copy is there, so it is not made again.
    let (code, out, err) = run();
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(modified(), first, "copied once");
    let _ = std::fs::remove_file(&copy);
}

#[test]
fn nodes_in_two_network_namespaces_give_the_in_process_report() {
    if let Err(why) = Netns::available() {
        eprintln!("skipped: {why}");
        return;
    }
    let keys = Keys::new();
    let netns = Netns::new(2);
    let sshds: Vec<Sshd> = netns
        .spaces
        .iter()
        .map(|(name, _, address)| {
            Sshd::start_at(&keys, address, 2222, &["ip", "netns", "exec", name])
        })
        .collect();
    let aliases: Vec<Alias> = ["n1", "n2"]
        .iter()
        .zip(&netns.spaces)
        .map(|(name, (_, _, address))| Alias { name, address, port: 2222, key: "id" })
        .collect();
    let config = client_config(&keys, &aliases);
    let cluster = open(&["n1", "n2"], &config);
    same_as_in_process(&cluster);
    // Each namespace's sshd started a node (which could only bind there:
    // its address is the namespace's).
    for sshd in &sshds {
        assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());
    }
    cluster.close();
}
