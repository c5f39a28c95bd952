//! `combtest-node`'s settings as a user meets them: `combtest.toml` in the
//! working directory, `--config PATH`, `COMBTEST_*` variables, flags, and the
//! `config` command.

mod common;

use common::{node_in, stderr, stdout};
use tempfile::TempDir;

/// A temp dir holding `combtest.toml` with `text`.
fn dir_with_config(text: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("combtest.toml"), text).unwrap();
    dir
}

/// The `key = ...` line of `config`'s output.
fn line<'a>(config: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key} = ");
    config.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("{key}: {config}"))
}

/// A usage error: exit code 2 and one line on stderr.
fn usage_error(output: &std::process::Output) -> String {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    text
}

#[test]
fn config_shows_every_setting_with_its_source_and_masks_the_cookie() {
    let dir = dir_with_config("threads = 3\nbatch_size = 50\n");
    let vars = [("COMBTEST_COOKIE", "s3cret"), ("COMBTEST_NODES", "10.0.0.2:7878,node3:7878")];
    let output = node_in(dir.path(), &vars, &["-v", "config"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(text.lines().count(), combtest::config::KEYS.len(), "{text}");
    assert_eq!(line(&text, "threads"), "threads = 3 (file combtest.toml)");
    assert_eq!(line(&text, "batch_size"), "batch_size = 50 (file combtest.toml)");
    assert_eq!(line(&text, "cookie"), "cookie = \"****\" (env COMBTEST_COOKIE)");
    assert!(!text.contains("s3cret"), "{text}");
    assert_eq!(
        line(&text, "nodes"),
        "nodes = [\"10.0.0.2:7878\", \"node3:7878\"] (env COMBTEST_NODES)"
    );
    assert_eq!(line(&text, "verbosity"), "verbosity = \"info\" (command line)");
    assert_eq!(line(&text, "listen"), "listen = \"127.0.0.1:7878\" (default)");
    assert_eq!(line(&text, "heartbeat_timeout"), "heartbeat_timeout = \"10s\" (default)");
    assert_eq!(line(&text, "log_dir"), "log_dir = (not set) (default)");
    assert_eq!(line(&text, "ssh_hosts"), "ssh_hosts = [] (default)");
    assert_eq!(line(&text, "tls_cert"), "tls_cert = (not set) (default)");

    let empty = tempfile::tempdir().unwrap();
    let home = [("HOME", empty.path().to_str().unwrap())];
    let text = stdout(&node_in(empty.path(), &home, &["config"]));
    let cookie_file = empty.path().join(".combtest/cookie");
    assert_eq!(
        line(&text, "cookie"),
        format!("cookie = (not set) (default): the cookie file {} is used", cookie_file.display())
    );
    assert_eq!(
        line(&text, "cookie_file"),
        format!("cookie_file = \"{}\" (default)", cookie_file.display())
    );
    // `config` only names the file: it does not create it.
    assert!(!empty.path().join(".combtest").exists());
    assert!(line(&text, "threads").ends_with("(default: available parallelism)"), "{text}");
}

#[test]
fn config_names_the_file_given_with_dash_dash_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ci.toml"), "heartbeat_timeout = \"1m 30s\"\n").unwrap();
    // The working directory's file is not read when --config names another.
    std::fs::write(dir.path().join("combtest.toml"), "threads = 3\n").unwrap();
    let output = node_in(dir.path(), &[], &["config", "--config", "ci.toml"]);
    let text = stdout(&output);
    assert_eq!(line(&text, "heartbeat_timeout"), "heartbeat_timeout = \"1m 30s\" (file ci.toml)");
    assert!(line(&text, "threads").ends_with("(default: available parallelism)"), "{text}");
}

#[test]
fn a_missing_config_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = node_in(dir.path(), &[], &["--config", "missing.toml", "config"]);
    let text = usage_error(&output);
    assert!(text.contains("cannot read config file missing.toml"), "{text}");
    let output = node_in(dir.path(), &[], &["run", "--suite", "smoke", "--config", "missing.toml"]);
    assert!(usage_error(&output).contains("missing.toml"));
    // No combtest.toml in the working directory is simply no file.
    assert_eq!(node_in(dir.path(), &[], &["config"]).status.code(), Some(0));
}

#[test]
fn an_unknown_key_exits_2_naming_the_key_and_the_file() {
    let dir = dir_with_config("threads = 2\nthread = 4\n");
    let output = node_in(dir.path(), &[], &["run", "--suite", "smoke"]);
    let text = usage_error(&output);
    assert!(text.contains("unknown key `thread` in config file combtest.toml at line 2"), "{text}");
    assert!(stdout(&output).is_empty());
}

#[test]
fn invalid_values_exit_2_naming_the_key_the_place_and_what_is_expected() {
    let dir = dir_with_config("heartbeat_timeout = \"soon\"\n");
    let text = usage_error(&node_in(dir.path(), &[], &["config"]));
    assert!(text.contains("invalid `heartbeat_timeout` in config file combtest.toml"), "{text}");
    assert!(text.contains("expected a duration"), "{text}");

    let dir = dir_with_config("");
    let vars = [("COMBTEST_BATCH_SIZE", "0")];
    let text = usage_error(&node_in(dir.path(), &vars, &["config"]));
    assert!(
        text.contains(
            "invalid `batch_size` in environment variable COMBTEST_BATCH_SIZE: expected \"auto\" \
             or a positive integer, found \"0\""
        ),
        "{text}"
    );

    let dir = dir_with_config("threads = [");
    let text = usage_error(&node_in(dir.path(), &[], &["config"]));
    assert!(text.contains("cannot parse config file combtest.toml at line 1"), "{text}");
}

#[test]
fn combtest_toml_in_the_working_directory_sets_threads_for_run() {
    let dir = dir_with_config("threads = 3\n");
    let output = node_in(dir.path(), &[], &["run", "--suite", "smoke", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!((value["walks"].as_u64(), value["passed"].as_u64()), (Some(9), Some(9)));
    // The JSON summary has no thread count: the human summary has.
    let output = node_in(dir.path(), &[], &["run", "--suite", "smoke"]);
    assert!(stdout(&output).contains(" on 3 runner threads"), "{}", stdout(&output));
}

#[test]
fn env_beats_the_file_and_a_flag_beats_env() {
    let dir = dir_with_config("threads = 3\nverbosity = \"debug\"\n");
    let vars = [("COMBTEST_THREADS", "5"), ("COMBTEST_VERBOSITY", "info")];
    let run = |vars: &[(&str, &str)], flags: &[&str]| {
        let args: Vec<&str> = ["run", "--suite", "smoke"].iter().chain(flags).copied().collect();
        let output = node_in(dir.path(), vars, &args);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        stdout(&output)
    };
    assert!(run(&[], &[]).contains(" on 3 runner threads"));
    assert!(run(&vars, &[]).contains(" on 5 runner threads"));
    assert!(run(&vars, &["--threads", "2"]).contains(" on 2 runner threads"));

    let text = stdout(&node_in(dir.path(), &vars, &["config"]));
    assert_eq!(line(&text, "threads"), "threads = 5 (env COMBTEST_THREADS)");
    assert_eq!(line(&text, "verbosity"), "verbosity = \"info\" (env COMBTEST_VERBOSITY)");
    let text = stdout(&node_in(dir.path(), &vars, &["-vvv", "config"]));
    assert_eq!(line(&text, "verbosity"), "verbosity = \"trace\" (command line)");
}

#[test]
fn log_dir_from_the_file_traces_the_run() {
    let dir = dir_with_config("log_dir = \"logs\"\n");
    let output = node_in(dir.path(), &[], &["run", "--suite", "smoke"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let runs: Vec<_> = std::fs::read_dir(dir.path().join("logs")).unwrap().collect();
    assert_eq!(runs.len(), 1);
    let run_dir = runs[0].as_ref().unwrap().path();
    // Trace format 2: the walks of its records, listed back by the reader.
    let trace = combtest::RunDir::open(&run_dir).unwrap().trace().unwrap();
    assert_eq!(trace.records.len(), 9);
}

#[test]
fn config_help_explains_every_setting_and_the_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let output = node_in(dir.path(), &[], &["config", "--help"]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    for key in combtest::config::KEYS {
        let var = format!("COMBTEST_{}", key.to_uppercase());
        assert!(text.contains(key) && text.contains(&var), "{key}: {text}");
    }
    assert!(text.contains("the command line") && text.contains("the environment"), "{text}");
    let output = node_in(dir.path(), &[], &["--help"]);
    assert!(stdout(&output).contains("--config <PATH>"));
}

#[test]
fn config_names_the_cookie_file_in_force_without_creating_it() {
    let dir = dir_with_config("cookie_file = \"from-file/cookie\"\n");
    let home = dir.path().join("home");
    let home_var = ("HOME", home.to_str().unwrap());
    // From the settings file: a relative path, relative to the working directory.
    let text = stdout(&node_in(dir.path(), &[home_var], &["config"]));
    assert_eq!(
        line(&text, "cookie"),
        "cookie = (not set) (default): the cookie file from-file/cookie is used"
    );
    assert_eq!(
        line(&text, "cookie_file"),
        "cookie_file = \"from-file/cookie\" (file combtest.toml)"
    );

    // The environment beats the file.
    let cookie_file = dir.path().join("secrets").join("cookie");
    let vars = [home_var, ("COMBTEST_COOKIE_FILE", cookie_file.to_str().unwrap())];
    let output = node_in(dir.path(), &vars, &["config"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let shown = cookie_file.display();
    assert_eq!(
        line(&text, "cookie"),
        format!("cookie = (not set) (default): the cookie file {shown} is used")
    );
    assert_eq!(
        line(&text, "cookie_file"),
        format!("cookie_file = \"{shown}\" (env COMBTEST_COOKIE_FILE)")
    );

    // A cookie wins over the file, which stays listed.
    let vars = [vars[0], vars[1], ("COMBTEST_COOKIE", "s3cret")];
    let text = stdout(&node_in(dir.path(), &vars, &["config"]));
    assert_eq!(line(&text, "cookie"), "cookie = \"****\" (env COMBTEST_COOKIE)");
    assert_eq!(
        line(&text, "cookie_file"),
        format!("cookie_file = \"{shown}\" (env COMBTEST_COOKIE_FILE)")
    );

    // Nothing was created: not the file, not its directory, not the home's.
    assert!(!dir.path().join("secrets").exists() && !dir.path().join("from-file").exists());
    assert!(!home.exists());

    // An empty path is refused like any invalid value.
    let text = usage_error(&node_in(dir.path(), &[("COMBTEST_COOKIE_FILE", "")], &["config"]));
    assert!(
        text.contains("invalid `cookie_file` in environment variable COMBTEST_COOKIE_FILE"),
        "{text}"
    );
}

#[test]
fn config_without_home_says_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_combtest-node"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COMBTEST_") {
            command.env_remove(name);
        }
    }
    let output = command.current_dir(dir.path()).env_remove("HOME").arg("config").output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(
        line(&text, "cookie"),
        "cookie = (not set) (default): no cookie file: HOME is not set; set --cookie, \
         COMBTEST_COOKIE or COMBTEST_COOKIE_FILE"
    );
    assert_eq!(line(&text, "cookie_file"), "cookie_file = (not set) (default)");
}

#[test]
fn run_soak_and_serve_take_dash_dash_cookie_file() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["run", "soak", "serve"] {
        let text = stdout(&node_in(dir.path(), &[], &[command, "--help"]));
        assert!(text.contains("--cookie-file <PATH>"), "{command}: {text}");
        assert!(text.contains("[setting: cookie_file"), "{command}: {text}");
    }
    // An in-process run has no use for a cookie: it runs, and creates nothing.
    let cookie_file = dir.path().join("secrets").join("cookie");
    let args = ["run", "--suite", "smoke", "--cookie-file", cookie_file.to_str().unwrap()];
    let output = node_in(dir.path(), &[], &args);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!dir.path().join("secrets").exists());
}

#[test]
fn ssh_hosts_come_from_the_file_with_their_user_port_and_identity() {
    let dir = dir_with_config(
        "ssh_hosts = [\"a\", { host = \"b\", user = \"u\", port = 2, identity = \"/k\" }]\n\
         ssh_options = [\"-F\", \"cfg\"]\n",
    );
    let output = node_in(dir.path(), &[], &["config"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(
        line(&text, "ssh_hosts"),
        "ssh_hosts = [\"a\", { host = \"b\", user = \"u\", port = 2, identity = \"/k\" }] \
         (file combtest.toml)"
    );
    assert_eq!(line(&text, "ssh_options"), "ssh_options = [\"-F\", \"cfg\"] (file combtest.toml)");
    // A key a host table does not have, and a host that would be an ssh
    // option, are refused with one line.
    for bad in
        ["ssh_hosts = [{ host = \"b\", pass = \"x\" }]", "ssh_hosts = [\"-oProxyCommand=x\"]"]
    {
        let dir = dir_with_config(bad);
        let text = usage_error(&node_in(dir.path(), &[], &["config"]));
        assert!(text.contains("invalid `ssh_hosts`"), "{text}");
    }
    // --ssh-copy needs hosts.
    let empty = tempfile::tempdir().unwrap();
    let output = node_in(empty.path(), &[], &["run", "--suite", "smoke", "--ssh-copy"]);
    let text = usage_error(&output);
    assert!(text.contains("--ssh-path and --ssh-copy need hosts"), "{text}");
}
