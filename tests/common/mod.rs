//! Actions shared by the integration tests.
#![allow(dead_code)]

pub mod procs;
pub mod sshd;

use std::process::{Command, Output};

use combtest::{Action, ActionResult, Halt, SerialAction, cancel, fail};
use serde::{Deserialize, Serialize};

/// Every walk's state: the (tag, option) of each entry it ran, in order.
pub type Trail = Vec<(u8, u32)>;

/// A plain action with `N` options (0..N) that appends itself to the trail.
/// `TAG` makes each position its own type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Append<const TAG: u8, const N: u32>(pub u32);

impl<const TAG: u8, const N: u32> Action<Trail> for Append<TAG, N> {
    fn options() -> Vec<Self> {
        (0..N).map(Self).collect()
    }
    fn run(&self, trail: &mut Trail) -> ActionResult {
        trail.push((TAG, self.0));
        Ok(())
    }
}

/// A serial action with `N` options whose value (its option) is appended to
/// the trail of every walk of its branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialAppend<const TAG: u8, const N: u32>(pub u32);

impl<const TAG: u8, const N: u32> SerialAction<Trail> for SerialAppend<TAG, N> {
    type Value = u32;
    fn options() -> Vec<Self> {
        (0..N).map(Self).collect()
    }
    fn run(&self) -> Result<u32, Halt> {
        Ok(self.0)
    }
    fn apply(&self, value: &u32, trail: &mut Trail) -> ActionResult {
        trail.push((TAG, *value));
        Ok(())
    }
}

/// The trail a walk must end with: its chosen options, tagged by position.
pub fn expected_trail(tags: &[u8], options: &[u32]) -> Trail {
    tags.iter().copied().zip(options.iter().copied()).collect()
}

/// Cancels on option 0, fails on option 1, panics on option 2, passes on 3.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Moody(pub u32);

impl Action<Trail> for Moody {
    fn options() -> Vec<Self> {
        (0..4).map(Moody).collect()
    }
    fn run(&self, trail: &mut Trail) -> ActionResult {
        trail.push((8, self.0));
        match self.0 {
            0 => cancel(),
            1 => fail("moody refuses"),
            2 => panic!("moody panics"),
            _ => Ok(()),
        }
    }
}

/// Runs the `combtest-node` binary built for these tests.
pub fn node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_combtest-node"))
        .args(args)
        .env("COMBTEST_COOKIE_FILE", cookie_file())
        .output()
        .expect("combtest-node starts")
}

/// The cookie file every process of this test binary shares (in a
/// temporary directory: tests never touch the user's own cookie file).
pub fn cookie_file() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temp dir")).path().join("cookie")
}

/// A process's standard output, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// A process's standard error, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Runs `combtest-node` in `dir` (where it looks for `combtest.toml`), with
/// `vars` as its only `COMBTEST_*` environment variables.
pub fn node_in(dir: &std::path::Path, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_combtest-node"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COMBTEST_") {
            command.env_remove(name);
        }
    }
    command.current_dir(dir).envs(vars.iter().copied()).args(args);
    command.output().expect("combtest-node starts")
}

/// Builds example `name` (if `cargo test` has not already) and returns its
/// path.
pub fn example(name: &str) -> std::path::PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "example {name} does not build");
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    deps.parent().unwrap().join("examples").join(name)
}

/// A copy of the format-1 run directory committed under
/// `tests/fixtures/format1/<name>` (a run of `demo` written before trace
/// format 2: one line per walk), in a temp dir of its own (keep it alive).
pub fn format1_run(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let logs = tempfile::tempdir().unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1").join(name);
    let dir = logs.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    (logs, dir)
}

/// Runs built-in suite `name` in-process and on `cluster` (batches of 2
/// walks, so that they spread over the nodes) and checks that both give
/// the same counts, serial actions, failed walks and final states.
pub fn same_report_as_in_process(name: &str, cluster: &combtest::cluster::Cluster) {
    use combtest::suites::{SuiteOptions, builtin};
    let suites = builtin();
    let suite = suites.iter().find(|s| s.name() == name).unwrap();
    let mut local = SuiteOptions::default();
    local.gather_states = true;
    let mut there = local.clone();
    there.cluster = Some(cluster.clone());
    there.max_batch = Some(2);
    let here = suite.run_with_states(&local).unwrap();
    let remote = suite.run_with_states(&there).unwrap();
    assert!(remote.is_consistent());
    let counts = |r: &combtest::Report<serde_json::Value>| {
        let c = &r.counts;
        [r.walks, c.passed, c.failed, c.cancelled, c.pruned, c.aborted, c.segments]
    };
    assert_eq!(counts(&here), counts(&remote), "{name}");
    assert_eq!(here.serial_actions, remote.serial_actions, "{name}");
    assert_eq!(here.failed_walks, remote.failed_walks, "{name}");
    assert!(!here.states.is_empty());
    assert_eq!(here.states, remote.states, "{name}: final states differ");
}
