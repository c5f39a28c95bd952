//! The `combtest-node` command line. The binary is a one-line `main` over
//! [`main`]; a user's own binary passes its own suites the same way:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     combtest::cli::main(combtest::suites::builtin())
//! }
//! ```
//!
//! Exit codes: 0 every walk passed (or was cancelled or pruned), 1 walks
//! failed or were aborted, 2 usage or configuration error, 3 the run could
//! not complete (internal error).

use std::ffi::OsString;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};

use crate::config::{
    BatchSize, ConfigError, Cookie, HostPort, Overrides, Settings, Source, Verbosity,
};
use crate::exec::WalkOutcome;
use crate::model::outcome::Report;
use crate::model::space::EntryKind;
use crate::model::trace::{Summary, TraceOutcome, TraceRecord};
use crate::model::triage::{GroupSummary, SHOWN_GROUPS, render_groups};
use crate::model::{count, option_text};
use crate::order::epoch_tree;
use crate::replay::ModelCheck;
use crate::suites::{ReplayStep, ReplayTarget, Suite, SuiteError, SuiteOptions};
use crate::trace::{LOG_FILE, RunDir, RunId, replay_command};

/// Exit code: every walk passed, was cancelled or was pruned.
pub const EXIT_OK: u8 = 0;
/// Exit code: at least one walk failed or was aborted.
pub const EXIT_WALKS_FAILED: u8 = 1;
/// Exit code: bad command line or configuration.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the run could not complete.
pub const EXIT_INTERNAL: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "combtest-node",
    version,
    about = "Combinatorial testing: run every combination of a suite's actions as a walk",
    long_about = "Combinatorial testing: run every combination of a suite's actions as a walk.\n\n\
        A suite is an ordered list of actions, each with a finite list of options; every \
        combination is a walk with a stable id. Serial actions (global steps) run once per \
        branch while no walk runs.\n\n\
        Exit codes: 0 nothing failed, 1 walks failed or were aborted, 2 usage or \
        configuration error, 3 the run could not complete."
)]
struct Cli {
    /// Log more on stderr: -v info, -vv debug, -vvv trace [default: the
    /// `verbosity` setting, else warnings].
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,

    /// Settings file [default: combtest.toml in the working directory, if
    /// there is one]. See `config --help` for the settings and precedence.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the suites, with their walk counts and epoch trees.
    List {
        /// Epochs to print per suite before abbreviating the tree.
        #[arg(long, default_value_t = 12)]
        max_epochs: usize,
    },
    /// Run every walk of a suite and print a summary.
    ///
    /// In this process, or on cluster nodes with `--nodes` or `--local-nodes`.
    Run {
        /// The suite to run (see `list`).
        #[arg(long)]
        suite: String,
        /// Runner threads: walks running at once [default: the `threads`
        /// setting, else available parallelism]. Use far more than the core
        /// count when actions wait on I/O.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=crate::MAX_THREADS as i64))]
        threads: Option<u32>,
        /// Print one JSON object on stdout instead of the human summary.
        #[arg(long)]
        json: bool,
        /// Trace the run into DIR/<run-id>/: walks.jsonl (one line per walk),
        /// run.json, junit.xml and the log (combtest.log) [default: the
        /// `log_dir` setting].
        #[arg(long, value_name = "DIR")]
        log_dir: Option<PathBuf>,
        /// After Ctrl-C, how long the walks running may take to finish
        /// before they are given up (reported aborted, "hung").
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration_arg)]
        stop_grace: std::time::Duration,
        /// When stderr is not a terminal, print a progress line there this
        /// often (walks done of total, rate, ETA, failed, failure groups);
        /// 0s never. On a terminal a live bar shows the same.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration_arg)]
        progress_every: std::time::Duration,
        #[command(flatten)]
        failures: FailureLimitArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Serve as a cluster node for coordinators (`run --nodes`, `soak --nodes`).
    ///
    /// Runs batches of this binary's suites. Prints one line when it listens:
    /// "combtest-node serving on ADDRESS as NAME (protocol N)".
    Serve {
        /// Address to listen on; port 0 picks a free port. Off loopback
        /// without --tls-* the traffic is not encrypted (a warning says so)
        /// [setting: listen, default 127.0.0.1:7878].
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<HostPort>,
        /// Shared secret coordinators must present [setting: cookie].
        #[arg(long)]
        cookie: Option<Cookie>,
        /// The file holding the shared secret when no cookie is set, created
        /// (mode 0600) on first use [setting: cookie_file, default
        /// $HOME/.combtest/cookie].
        #[arg(long, value_name = "PATH")]
        cookie_file: Option<PathBuf>,
        #[command(flatten)]
        tls: TlsArgs,
        /// This node's name in coordinators' reports and logs
        /// [default: its address].
        #[arg(long)]
        name: Option<String>,
        /// Runner threads per run, unless the coordinator asks for a number
        /// (its `threads` setting) [default: available parallelism].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=crate::MAX_THREADS as i64))]
        threads: Option<u32>,
        /// Most runs open at once (a coordinator asking for more is refused).
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
        max_runs: u32,
        /// Most runner threads over every open run.
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=crate::MAX_THREADS as i64))]
        max_threads: u32,
        /// Most connections waiting to authenticate at once; more are closed
        /// at once (never more than a quarter of the open-file limit).
        #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
        max_pending: u32,
        /// How long a connection may take to authenticate before it is
        /// closed.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration_arg)]
        auth_timeout: std::time::Duration,
        /// How long a run outlives its lease (suspended, waiting for a paused
        /// coordinator), or its coordinator's last session.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration_arg)]
        run_grace: std::time::Duration,
        /// Exit when standard input closes (how `run --local-nodes` makes sure
        /// its nodes never outlive it).
        #[arg(long, hide = true)]
        exit_on_stdin_eof: bool,
        /// Read the cookie from the first line of standard input, then exit
        /// when it closes (how `--local-nodes` children get theirs: never in
        /// arguments or the environment).
        #[arg(long, hide = true, conflicts_with_all = ["cookie", "cookie_file"])]
        cookie_stdin: bool,
    },
    /// Run a suite round after round for hours, through failing, hanging and
    /// crashing walks and nodes (a soak).
    ///
    /// Each round is a run of the whole space (--full) or of --sample K walks
    /// drawn with the seed; a status line every `--stats-every`, a summary at
    /// the end.
    /// Ctrl-C stops starting walks and waits (30 s at most) for those
    /// running; a second Ctrl-C stops at once.
    /// Exit code 0 nothing failed, 1 walks failed or were aborted, 2 bad
    /// input, 3 the soak broke (too many node restarts, a round that
    /// cannot run).
    Soak {
        /// The suite to soak (see `list`).
        #[arg(long)]
        suite: String,
        /// How long to keep starting rounds (e.g. 8h, 90s).
        #[arg(long, value_parser = duration_arg, required_unless_present = "rounds")]
        duration: Option<std::time::Duration>,
        /// How many rounds to run (with or without --duration: whichever
        /// comes first).
        #[arg(long)]
        rounds: Option<u64>,
        /// Seed of the rounds' samples [default: random, printed].
        #[arg(long)]
        seed: Option<u64>,
        /// Run K walks per round, drawn at random from the space (K from 1
        /// to 4294967295, the most a sample holds).
        #[arg(long, value_name = "K", conflicts_with = "full", value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
        sample: Option<u64>,
        /// Run the whole space every round (the default).
        #[arg(long)]
        full: bool,
        /// A walk segment running longer fails ("timed out after D"); its
        /// runner is replaced (in-process, the stuck thread is abandoned: use
        /// --local-nodes to have its process killed and restarted).
        #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
        walk_timeout: Option<std::time::Duration>,
        #[command(flatten)]
        failures: FailureLimitArgs,
        /// Runner threads (per node with nodes).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=crate::MAX_THREADS as i64))]
        threads: Option<u32>,
        /// Append every walk's record (with its round and seed) to
        /// DIR/soak-<id>/walks.jsonl; keep soak.json there up to date.
        #[arg(long, value_name = "DIR")]
        log_dir: Option<PathBuf>,
        /// How often to print a status line (between rounds).
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration_arg)]
        stats_every: std::time::Duration,
        /// Restart intensity: more local node restarts than this within
        /// --restart-window stops the soak.
        #[arg(long, default_value_t = 10)]
        max_restarts: usize,
        /// The restart intensity's window.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration_arg)]
        restart_window: std::time::Duration,
        /// Print the final report as one JSON object (status lines go to
        /// stderr).
        #[arg(long)]
        json: bool,
        /// After Ctrl-C (or the end of --duration), how long the walks
        /// running may take to finish before they are given up (reported
        /// aborted, "hung").
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration_arg)]
        stop_grace: std::time::Duration,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Replay one walk alone, printing each action, the outcome and the final
    /// state. Exit code 0 if it passed (or was cancelled or pruned), 1 if it
    /// failed, 2 on bad input.
    Replay {
        /// A run directory (DIR/<run-id> of `run --log-dir DIR`): replay the
        /// walk as recorded there, checked against the current suite.
        #[arg(long, value_name = "RUN_DIR", required_unless_present = "suite")]
        run: Option<PathBuf>,
        /// Or a suite: replay walk id N of its current walk order.
        #[arg(long, conflicts_with = "run")]
        suite: Option<String>,
        /// The walk id.
        #[arg(long)]
        walk: u64,
        /// Wait for Enter before each action.
        #[arg(long)]
        step: bool,
    },
    /// List the walks of a run directory: failed ones first, with their
    /// errors, then the others.
    Show {
        /// The run directory (DIR/<run-id> of `run --log-dir DIR`).
        #[arg(long, value_name = "RUN_DIR")]
        run: PathBuf,
        /// Only the failed walks.
        #[arg(long)]
        failed: bool,
        /// Only the failure groups: each with its count, minimal walk,
        /// conditions and replay command (from `run.json`; for a run that
        /// did not finish, grouped from `walks.jsonl` without conditions).
        #[arg(long, conflicts_with = "failed")]
        groups: bool,
    },
    /// Print the effective settings and where each came from.
    #[command(long_about = crate::config::HELP)]
    Config,
}

/// Where `run` sends its walks. Each flag overrides its setting (see
/// `config --help`).
#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// Run on these `combtest-node serve` nodes (comma-separated HOST:PORT)
    /// instead of in this process. `--threads` is then per node
    /// [setting: nodes].
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',', num_args = 1.., conflicts_with = "local_nodes")]
    nodes: Option<Vec<HostPort>>,
    /// Start N nodes of this binary on 127.0.0.1 for the run, and stop them
    /// after it: process isolation for systems that may crash the process.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64), conflicts_with = "ssh")]
    local_nodes: Option<u32>,
    /// Start a node on each of these hosts through `ssh` for the run, and
    /// stop them after it ([USER@]HOST[:PORT], comma-separated; a host
    /// given twice runs two nodes). Each node listens on an ephemeral port
    /// of the host's address (`ssh -G HOST`'s hostname), which must be
    /// reachable from here; the cookie goes over ssh's stdin
    /// [setting: ssh_hosts, with ssh_options].
    #[arg(long, value_name = "HOST,...", value_delimiter = ',', num_args = 1.., conflicts_with = "nodes")]
    ssh: Option<Vec<crate::config::SshHost>>,
    /// The node binary on the SSH hosts [default: this binary's path].
    #[arg(long, value_name = "PATH", conflicts_with = "ssh_copy")]
    ssh_path: Option<PathBuf>,
    /// Copy this binary to each SSH host first (to
    /// ~/.cache/combtest/NAME-HASH, once per build) and run the copy.
    #[arg(long)]
    ssh_copy: bool,
    /// Shared secret of the nodes; needed for nodes off loopback
    /// [setting: cookie].
    #[arg(long)]
    cookie: Option<Cookie>,
    /// The file holding the shared secret when no cookie is set, created
    /// (mode 0600) on first use [setting: cookie_file, default
    /// $HOME/.combtest/cookie].
    #[arg(long, value_name = "PATH")]
    cookie_file: Option<PathBuf>,
    /// A node that does not answer a heartbeat for this long is lost: walks
    /// still in their first segment run again elsewhere; walks whose state it
    /// held past a serial action are reported aborted
    /// [setting: heartbeat_timeout, default 10s].
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    heartbeat_timeout: Option<std::time::Duration>,
    /// Cap on walks per batch, or `auto`: about 4 ms of work each
    /// [setting: batch_size].
    #[arg(long, value_name = "WALKS")]
    batch_size: Option<BatchSize>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// Mutual TLS between coordinator and nodes: all three or none. Each flag
/// overrides its setting (see `config --help`).
#[derive(Debug, clap::Args)]
struct TlsArgs {
    /// TLS: this process's certificate, PEM (its own first, then any
    /// intermediates). A node's must name the address coordinators dial (IP
    /// or DNS subject alternative name); `--local-nodes` children are
    /// reached on loopback without TLS [setting: tls_cert].
    #[arg(long, value_name = "PATH")]
    tls_cert: Option<PathBuf>,
    /// TLS: the private key of --tls-cert, PEM [setting: tls_key].
    #[arg(long, value_name = "PATH")]
    tls_key: Option<PathBuf>,
    /// TLS: the CA certificate(s), PEM, that the other side's certificate
    /// must be signed by: nodes check coordinators' against it, and
    /// coordinators nodes' [setting: tls_ca].
    #[arg(long, value_name = "PATH")]
    tls_ca: Option<PathBuf>,
}

/// The TLS configuration the settings ask for, loaded; `Err` a one-line
/// error naming the file.
fn load_tls(settings: &Settings) -> Result<Option<crate::cluster::Tls>, String> {
    let Some((cert, key, ca)) = settings.tls_files() else { return Ok(None) };
    crate::cluster::Tls::load(cert, key, ca).map(Some).map_err(|e| e.to_string())
}

/// A suite's run options from the settings (threads, batch size).
fn suite_options(settings: &Settings) -> SuiteOptions {
    SuiteOptions {
        threads: settings.threads.value.map(|t| t as usize),
        max_batch: match settings.batch_size.value {
            BatchSize::Auto => None,
            BatchSize::Max(walks) => Some(walks.get()),
        },
        ..SuiteOptions::default()
    }
}

/// The cluster a run goes to, if any: `--local-nodes`, the `nodes`
/// setting or the `ssh_hosts` setting, with the cookie in force (the
/// `cookie` setting, else the cookie file, created on first use).
fn cluster_options(
    settings: &Settings,
    args: &ClusterArgs,
) -> Result<Option<crate::cluster::ClusterOptions>, String> {
    let tls = load_tls(settings)?;
    use crate::cluster::ClusterOptions;
    use crate::config::Source::CommandLine;
    // A flag beats the other kind of nodes set in the environment or file.
    let (mut nodes, mut ssh) = (&settings.nodes.value[..], &settings.ssh_hosts.value[..]);
    if settings.nodes.source == CommandLine {
        ssh = &[];
    } else if settings.ssh_hosts.source == CommandLine {
        nodes = &[];
    }
    if ssh.is_empty() && (args.ssh_path.is_some() || args.ssh_copy) {
        return Err("--ssh-path and --ssh-copy need hosts: --ssh or the ssh_hosts setting".into());
    }
    let mut options = match (args.local_nodes, nodes) {
        (Some(count), _) => ClusterOptions::local(count as usize),
        (None, []) if ssh.is_empty() => return Ok(None),
        (None, []) => {
            ClusterOptions::nodes(Vec::<String>::new()).ssh(ssh_nodes(ssh, settings, args))
        }
        (None, _) if !ssh.is_empty() => {
            return Err("both `nodes` and `ssh_hosts` are set: give one of them".to_string());
        }
        (None, nodes) => ClusterOptions::nodes(nodes.iter().map(ToString::to_string)),
    };
    options = options.heartbeat_timeout(settings.heartbeat_timeout.value);
    let (cookie, _) = crate::config::cookie::in_force(settings).map_err(|e| e.to_string())?;
    options = options.cookie(cookie.expose());
    if let Some(threads) = settings.threads.value {
        options = options.node_threads(threads as usize);
    }
    if let Some(tls) = tls {
        options = options.tls(tls);
    }
    Ok(Some(options))
}

/// SSH nodes on `hosts`, with the `ssh_options` setting and
/// `--ssh-path`/`--ssh-copy`.
fn ssh_nodes(
    hosts: &[crate::config::SshHost],
    settings: &Settings,
    args: &ClusterArgs,
) -> crate::cluster::ssh::SshNodes {
    let mut nodes = crate::cluster::ssh::SshNodes::new(hosts.to_vec());
    nodes.path = args.ssh_path.clone();
    nodes.copy = args.ssh_copy;
    nodes.ssh_options = settings.ssh_options.value.clone();
    nodes
}

/// Runs the command line over `suites` and returns the process exit code.
pub fn main(suites: Vec<Box<dyn Suite>>) -> ExitCode {
    ExitCode::from(run_cli(std::env::args_os(), suites))
}

/// [`main`], with the arguments given: returns the exit code.
pub fn run_cli<I, T>(args: I, suites: Vec<Box<dyn Suite>>) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let program = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map_or_else(|| "combtest-node".to_string(), |n| n.to_string_lossy().into_owned());
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    let settings = match settings(&cli) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    // A traced run picks its id now, to open its log in the run directory.
    let mut run_id = None;
    let mut log_file = None;
    if let (Command::Run { .. }, Some(dir)) = (&cli.command, &settings.log_dir.value) {
        let id = RunId::new();
        let run_dir = dir.join(id.to_string());
        let opened = std::fs::create_dir_all(&run_dir)
            .and_then(|()| std::fs::File::create(run_dir.join(LOG_FILE)));
        match opened {
            Ok(file) => log_file = Some(file),
            Err(error) => {
                eprintln!("error: cannot create run directory {}: {error}", run_dir.display());
                return EXIT_USAGE;
            }
        }
        run_id = Some(id);
    }
    init_logging(settings.verbosity.value, log_file, matches!(cli.command, Command::Serve { .. }));
    if let Some(name) = duplicate_name(&suites) {
        eprintln!("error: two suites are named '{name}': suite names must be unique");
        return EXIT_USAGE;
    }
    match cli.command {
        Command::List { max_epochs } => list(&suites, max_epochs),
        Command::Run { suite, json, cluster, stop_grace, progress_every, failures, .. } => {
            let Some(suite) = find_suite(&suites, &suite) else {
                return EXIT_USAGE;
            };
            let mut options = suite_options(&settings);
            options.log_dir = settings.log_dir.value.clone();
            options.run_id = run_id;
            options.max_failures = failures.limit();
            let hint = NodesHint::of(&settings, cluster.local_nodes, &program);
            let cluster = match cluster_options(&settings, &cluster) {
                Ok(None) => None,
                Ok(Some(cluster)) => match crate::cluster::Cluster::open(cluster) {
                    Ok(cluster) => Some(cluster),
                    Err(error) => {
                        eprintln!("error: {}", cluster_error(&error, hint.as_ref()));
                        return EXIT_USAGE;
                    }
                },
                Err(error) => {
                    eprintln!("error: {error}");
                    return EXIT_USAGE;
                }
            };
            options.cluster = cluster.clone();
            let stop = crate::RunStop::default();
            options.stop = Some(stop.clone());
            watch_interrupts(InterruptTarget::Run(stop, stop_grace), "run");
            let progress = std::sync::Arc::new(crate::actors::collector::Progress::default());
            options.progress = Some(progress.clone());
            let total = suite.space().map_or(0, crate::model::space::Space::size);
            let shown = ShowProgress::start(progress, total, progress_every);
            let code = run_suite(suite, &options, shown, json, &program);
            if let Some(cluster) = cluster {
                cluster.close();
            }
            code
        }
        Command::Serve {
            name,
            threads,
            max_runs,
            max_threads,
            max_pending,
            auth_timeout,
            run_grace,
            exit_on_stdin_eof,
            cookie_stdin,
            ..
        } => {
            let cookie = if cookie_stdin {
                let mut line = String::new();
                if std::io::stdin().read_line(&mut line).is_err() || line.trim().is_empty() {
                    eprintln!("error: --cookie-stdin: no cookie on the first line of stdin");
                    return EXIT_USAGE;
                }
                line.trim_end_matches(['\n', '\r']).to_string()
            } else {
                match crate::config::cookie::in_force(&settings) {
                    Ok((cookie, source)) => {
                        tracing::info!("using {source}");
                        cookie.expose().to_string()
                    }
                    Err(error) => {
                        eprintln!("error: {error}");
                        return EXIT_USAGE;
                    }
                }
            };
            if exit_on_stdin_eof || cookie_stdin {
                std::thread::spawn(|| {
                    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
                    std::process::exit(0);
                });
            }
            // A launched node (`--cookie-stdin`) takes TLS from its
            // launcher's command line only, never from the working
            // directory's file or the environment it inherited: a
            // `--local-nodes` child is dialled in plain TCP on loopback.
            let launched = cookie_stdin && settings.tls_cert.source != Source::CommandLine;
            let tls = match if launched { Ok(None) } else { load_tls(&settings) } {
                Ok(tls) => tls,
                Err(error) => {
                    eprintln!("error: {error}");
                    return EXIT_USAGE;
                }
            };
            let mut options =
                crate::cluster::ServeOptions::new(settings.listen.value.to_string(), cookie);
            options.tls = tls;
            options.name = name;
            options.threads = threads.map(|t| t as usize);
            options.max_runs = max_runs as usize;
            options.max_threads = max_threads as usize;
            options.max_pending = max_pending as usize;
            options.auth_timeout = auth_timeout;
            options.run_grace = run_grace;
            let suites: Vec<Box<dyn crate::cluster::NodeSuite>> =
                suites.into_iter().map(|s| s as Box<dyn crate::cluster::NodeSuite>).collect();
            match crate::cluster::serve(suites, options) {
                Ok(()) => EXIT_OK,
                Err(error) => {
                    eprintln!("error: {error}");
                    EXIT_USAGE
                }
            }
        }
        Command::Soak {
            suite,
            duration,
            rounds,
            seed,
            sample,
            walk_timeout,
            stats_every,
            max_restarts,
            restart_window,
            json,
            cluster,
            stop_grace,
            failures,
            ..
        } => {
            let Some(suite) = find_suite(&suites, &suite) else {
                return EXIT_USAGE;
            };
            let hint = NodesHint::of(&settings, cluster.local_nodes, &program);
            let mut run = suite_options(&settings);
            run.walk_timeout = walk_timeout;
            run.max_failures = failures.limit();
            let mut options =
                crate::soak::SoakOptions::new(crate::soak::SoakLimit { duration, rounds });
            if let Some(seed) = seed {
                options.seed = seed;
            }
            options.sample = sample;
            options.cluster = match cluster_options(&settings, &cluster) {
                Ok(cluster) => cluster.map(|c| c.restart_intensity(max_restarts, restart_window)),
                Err(error) => {
                    eprintln!("error: {error}");
                    return EXIT_USAGE;
                }
            };
            options.run = run;
            options.log_dir = settings.log_dir.value.clone();
            options.stats_every = stats_every;
            soak(suite, &options, json, &program, stop_grace, hint.as_ref())
        }
        Command::Replay { run, suite, walk, step } => {
            replay(&suites, run.as_deref(), suite.as_deref(), walk, step, &program)
        }
        Command::Show { run, failed, groups } => show(&suites, &run, failed, groups, &program),
        Command::Config => {
            let _ = write!(std::io::stdout(), "{settings}");
            EXIT_OK
        }
    }
}

/// What to do about a node that cannot be reached: start one there, or
/// correct the address where it came from (`--nodes`, `COMBTEST_NODES`,
/// the settings file). Only for `--nodes`: local nodes are this binary's
/// own children.
struct NodesHint {
    program: String,
    origin: String,
}

impl NodesHint {
    fn of(settings: &Settings, local_nodes: Option<u32>, program: &str) -> Option<NodesHint> {
        if local_nodes.is_some() || settings.nodes.value.is_empty() {
            return None;
        }
        let origin = match &settings.nodes.source {
            crate::config::Source::Env(var) => var.to_string(),
            crate::config::Source::File(path) => format!("`nodes` in {}", path.display()),
            crate::config::Source::CommandLine | crate::config::Source::Default => {
                "--nodes".to_string()
            }
        };
        Some(NodesHint { program: program.to_string(), origin })
    }
}

/// A cluster error on one line; for a node that cannot be reached, with
/// what to do about it.
fn cluster_error(error: &crate::cluster::ClusterError, hint: Option<&NodesHint>) -> String {
    match (error, hint) {
        (crate::cluster::ClusterError::Unreachable { address, reason }, Some(hint)) => format!(
            "{reason}; start a node there (`{} serve --listen {address}` on that host) or \
             correct {}",
            hint.program, hint.origin
        ),
        _ => error.to_string(),
    }
}

/// The settings, with the command line's values (`-v`, and `run`'s
/// `--threads` and `--log-dir`) over the environment and the file.
fn settings(cli: &Cli) -> Result<Settings, ConfigError> {
    let mut overrides =
        Overrides { verbosity: Verbosity::from_count(cli.verbose), ..Overrides::default() };
    match &cli.command {
        Command::Run { threads, log_dir, cluster, .. }
        | Command::Soak { threads, log_dir, cluster, .. } => {
            overrides.threads = *threads;
            overrides.log_dir = log_dir.clone();
            overrides.nodes = cluster.nodes.clone();
            overrides.ssh_hosts = cluster.ssh.clone();
            overrides.cookie = cluster.cookie.clone();
            overrides.cookie_file = cluster.cookie_file.clone();
            overrides.heartbeat_timeout = cluster.heartbeat_timeout;
            overrides.batch_size = cluster.batch_size;
            tls_overrides(&mut overrides, &cluster.tls);
        }
        Command::Serve { listen, cookie, cookie_file, tls, .. } => {
            overrides.listen = listen.clone();
            overrides.cookie = cookie.clone();
            overrides.cookie_file = cookie_file.clone();
            tls_overrides(&mut overrides, tls);
        }
        _ => {}
    }
    Settings::load(cli.config.as_deref(), &overrides)
}

fn tls_overrides(overrides: &mut Overrides, tls: &TlsArgs) {
    overrides.tls_cert = tls.tls_cert.clone();
    overrides.tls_key = tls.tls_key.clone();
    overrides.tls_ca = tls.tls_ca.clone();
}

/// The suite named `name`, or `None` after printing the names there are.
fn find_suite<'a>(suites: &'a [Box<dyn Suite>], name: &str) -> Option<&'a dyn Suite> {
    let found = suites.iter().find(|s| s.name() == name).map(|s| s.as_ref());
    if found.is_none() {
        let names: Vec<&str> = suites.iter().map(|s| s.name()).collect();
        eprintln!("error: unknown suite '{name}' (available: {})", names.join(", "));
    }
    found
}

fn duplicate_name(suites: &[Box<dyn Suite>]) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    suites.iter().map(|s| s.name()).find(|name| !seen.insert(*name))
}

/// Logs to stderr at the `verbosity` setting's level and, for a traced run,
/// to the run directory's log file at `info` or more. A node (`forward`)
/// also keeps its log lines for its coordinators.
fn init_logging(verbosity: Verbosity, file: Option<std::fs::File>, forward: bool) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _, fmt};
    let filter = |level: Verbosity| {
        // ractor_cluster warns of every closed session, which ends every
        // cluster run; combtest logs what matters about sessions itself.
        let quiet = if level < Verbosity::Debug { ",ractor_cluster=error" } else { "" };
        EnvFilter::try_from_env("COMBTEST_LOG")
            .unwrap_or_else(|_| EnvFilter::new(format!("{}{quiet}", level.as_str())))
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr =
        fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).with_filter(filter(verbosity));
    let file = file.map(|file| {
        fmt::layer()
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .with_filter(filter(verbosity.max(Verbosity::Info)))
    });
    // A node keeps its log lines for its coordinators, at the level each
    // run asks for.
    let forward = forward.then_some(crate::cluster::logs::ForwardLayer);
    // A user's binary may have installed its own subscriber: keep it.
    let _ = tracing_subscriber::registry().with(stderr).with(file).with(forward).try_init();
}

fn list(suites: &[Box<dyn Suite>], max_epochs: usize) -> u8 {
    let mut out = std::io::stdout().lock();
    for suite in suites {
        let _ = writeln!(out, "{}: {}", suite.name(), suite.description());
        match suite.space() {
            Ok(space) => {
                for line in epoch_tree(space, max_epochs).lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
            Err(error) => {
                let _ = writeln!(out, "  cannot run: {error}");
            }
        }
        let _ = writeln!(out);
    }
    EXIT_OK
}

/// Runs `suite` and prints its summary (or its JSON), once `shown` (the
/// live progress) is gone from the terminal.
fn run_suite(
    suite: &dyn Suite,
    options: &SuiteOptions,
    shown: ShowProgress,
    json: bool,
    program: &str,
) -> u8 {
    let threads = options.threads.unwrap_or_else(crate::default_threads);
    let place = match &options.cluster {
        None => count(threads as u64, "runner thread"),
        Some(cluster) => count(cluster.node_pids().len() as u64, "node"),
    };
    let result = suite.run(options);
    shown.stop();
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: {error}");
            return exit_code(&error);
        }
    };
    let mut out = std::io::stdout().lock();
    if json {
        let summary =
            Summary::of(&report).with_replay(|id| replay_for(suite, &report, program, id));
        let text = serde_json::to_string(&summary).expect("plain data serializes");
        let _ = writeln!(out, "{text}");
    } else {
        let _ = write!(out, "{}", human_summary(suite, &report, &place, program));
    }
    report_code(&report)
}

/// A run's live progress on stderr: an indicatif bar on a terminal, else a
/// plain line every `every` (none before the first interval, so short runs
/// print nothing). Never on stdout, so it never mixes with `--json`.
struct ShowProgress {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ShowProgress {
    fn start(
        progress: std::sync::Arc<crate::actors::collector::Progress>,
        total: u64,
        every: std::time::Duration,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        if !terminal && every.is_zero() {
            return ShowProgress { done, thread: None };
        }
        let stop = done.clone();
        let thread = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let bar = terminal.then(|| {
                // As wide as the terminal leaves room for: a line that wraps
                // is redrawn badly.
                let bar = indicatif::ProgressBar::new(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{wide_bar:.cyan/blue} {human_pos}/{human_len} walks, {rate}, ETA {eta}, \
                         {msg}",
                    )
                    .map(|style| {
                        style.with_key(
                            "rate",
                            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                                let _ = write!(w, "{:.0} walks/s", state.per_sec());
                            },
                        )
                    })
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar
            });
            let tick = std::time::Duration::from_millis(200)
                .min(every.max(std::time::Duration::from_millis(10)));
            let mut next_line = every;
            while !stop.load(Ordering::Acquire) {
                std::thread::park_timeout(tick);
                let ended = progress.ended.load(Ordering::Relaxed);
                let failed = progress.failed.load(Ordering::Relaxed);
                let groups = progress.groups.load(Ordering::Relaxed);
                let failures = failures_text(failed, groups);
                match &bar {
                    Some(bar) => {
                        bar.set_message(failures);
                        bar.set_position(ended);
                    }
                    None if started.elapsed() >= next_line => {
                        next_line += every;
                        eprintln!("{}", progress_line(ended, total, started.elapsed(), &failures));
                    }
                    None => {}
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        ShowProgress { done, thread: Some(thread) }
    }

    fn stop(self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Failures so far, as the progress bar and lines show them: `failed 3 in
/// 1 group`.
fn failures_text(failed: u64, groups: u64) -> String {
    format!("failed {failed} in {}", count(groups, "group"))
}

/// One plain progress line: `progress: 1200 of 5000 walks (24%), 310
/// walks/s, ETA 12s, failed 3 in 1 group`.
fn progress_line(ended: u64, total: u64, elapsed: std::time::Duration, failures: &str) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { ended as f64 / secs } else { 0.0 };
    let percent = if total > 0 { ended as f64 * 100.0 / total as f64 } else { 0.0 };
    let eta = match rate > 0.0 && total >= ended {
        true => humantime::format_duration(std::time::Duration::from_secs(
            ((total - ended) as f64 / rate).ceil() as u64,
        ))
        .to_string(),
        false => "unknown".to_string(),
    };
    format!(
        "progress: {ended} of {} ({percent:.0}%), {rate:.0} walks/s, ETA {eta}, {failures}",
        count(total, "walk")
    )
}

/// `--max-failures` and `--fail-fast`, on `run` and `soak`.
#[derive(clap::Args, Debug)]
struct FailureLimitArgs {
    /// Stop once N walks have failed (in a soak: over all its rounds): no
    /// walk starts after that, the ones running finish (their failures are
    /// reported too), and the walks never started are reported as not run.
    /// For finding a bug soon rather than every walk it fails.
    #[arg(long, value_name = "N", value_parser = failures_arg)]
    max_failures: Option<u64>,
    /// Stop at the first failed walk (`--max-failures 1`).
    #[arg(long, conflicts_with = "max_failures")]
    fail_fast: bool,
}

impl FailureLimitArgs {
    fn limit(&self) -> Option<u64> {
        if self.fail_fast { Some(1) } else { self.max_failures }
    }
}

/// A failure limit on the command line: a whole number, at least 1.
fn failures_arg(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("a limit of 0 failures would stop before any walk: use 1 or more".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("not a number of walks: use a whole number, 1 or more".into()),
    }
}

/// A duration on the command line (`30s`, `500ms`, `5m`, `1h30m`), with an
/// error that says what is accepted (humantime's own says "expected number
/// at 0").
fn duration_arg(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|_| {
        "not a duration: use a number and a unit, such as 30s, 500ms, 5m or 1h30m".to_string()
    })
}

/// The exit code of a run's report: 0 nothing failed, aborted or left
/// unfinished; 1 walks failed or were aborted (an interrupted run's
/// unfinished walks are); 3 every node was lost.
fn report_code(report: &Report) -> u8 {
    match &report.ending {
        crate::Ending::Stopped(
            crate::StopReason::AllNodesLost(_) | crate::StopReason::RestartLimit(_),
        ) => EXIT_INTERNAL,
        _ if report.counts.failed == 0 && report.counts.aborted == 0 => EXIT_OK,
        _ => EXIT_WALKS_FAILED,
    }
}

/// The exit code for a suite that could not run or replay.
fn exit_code(error: &SuiteError) -> u8 {
    match error {
        // The run started and could not complete: a bug, the runtime, or
        // the trace failing mid-run (a full disk). A log dir that cannot be
        // created at the start is a configuration error (`Trace`).
        SuiteError::Run(
            crate::RunError::Internal(_)
            | crate::RunError::Runtime(_)
            | crate::RunError::TraceWrite(_),
        ) => EXIT_INTERNAL,
        SuiteError::Cluster(crate::cluster::ClusterError::NoNode(_)) => EXIT_INTERNAL,
        SuiteError::Cluster(crate::cluster::ClusterError::Run(error))
            if matches!(
                **error,
                crate::RunError::Internal(_)
                    | crate::RunError::Runtime(_)
                    | crate::RunError::TraceWrite(_)
            ) =>
        {
            EXIT_INTERNAL
        }
        _ => EXIT_USAGE,
    }
}

/// The command that replays walk `id` of a run: from its run directory
/// when it has one, else by suite.
fn replay_for(suite: &dyn Suite, report: &Report, program: &str, id: u64) -> String {
    match &report.run_dir {
        Some(dir) => replay_command(program, dir, id),
        None => format!("{program} replay --suite {} --walk {id}", suite.name()),
    }
}

fn human_summary(suite: &dyn Suite, report: &Report, place: &str, program: &str) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let secs = report.elapsed.as_secs_f64();
    let rate = if secs > 0.0 { report.walks as f64 / secs } else { 0.0 };
    let _ = writeln!(
        s,
        "suite {}: {} in {secs:.3} s ({rate:.0} walks/s) on {place}",
        suite.name(),
        count(report.walks, "walk")
    );
    let not_run = match report.not_run {
        0 => String::new(),
        n => format!("  not run {n}"),
    };
    let _ = writeln!(
        s,
        "  passed {}  failed {}  cancelled {}  pruned {}  aborted {}{not_run}",
        report.counts.passed,
        report.counts.failed,
        report.counts.cancelled,
        report.counts.pruned,
        report.counts.aborted
    );
    let skipped = match report.serial_skipped {
        0 => String::new(),
        n => format!(" (skipped {n}: no live walk in their branch)"),
    };
    let _ = writeln!(
        s,
        "  segments {}  serial actions {}{skipped}  runner restarts {}",
        report.counts.segments, report.serial_actions, report.runner_restarts
    );
    if let crate::Ending::Stopped(reason) = &report.ending {
        let _ = writeln!(s, "stopped: {}", reason.phrase());
    }
    let summary = Summary::of(report).with_replay(|id| replay_for(suite, report, program, id));
    s.push_str(&render_groups(
        &summary.failure_groups,
        SHOWN_GROUPS,
        " (use --json for all, or show --groups on a traced run)",
    ));
    let groups = report
        .aborted_walks
        .iter()
        .map(|a| ("aborted", a))
        .chain(report.not_run_walks.iter().map(|a| ("not run:", a)));
    for (what, aborted) in groups {
        let what = if what == "aborted" { "aborted" } else { "left" };
        let _ = writeln!(s, "{what} {}: {}", count(aborted.count(), "walk"), aborted.reason);
        let shown: Vec<String> = aborted
            .walks
            .iter()
            .take(8)
            .map(|r| match r.end - r.start {
                1 => r.start.to_string(),
                _ => format!("{}-{}", r.start, r.end - 1),
            })
            .collect();
        let more = if aborted.walks.len() > 8 { " ..." } else { "" };
        let _ = writeln!(s, "  walks {}{more}", shown.join(", "));
        if let Some(first) = aborted.walks.first() {
            let id = first.start;
            let _ = writeln!(s, "  replay: {program} replay --suite {} --walk {id}", suite.name());
        }
    }
    if let Some(dir) = &report.run_dir {
        let _ = writeln!(s, "run directory: {}", dir.display());
        let _ = writeln!(s, "  list its walks: {program} show --run {} --failed", dir.display());
    }
    let verdict = match &report.ending {
        crate::Ending::Stopped(crate::StopReason::AllNodesLost(_)) => "INCOMPLETE",
        _ if report.counts.failed == 0 && report.counts.aborted == 0 => "PASS",
        _ => "FAIL",
    };
    let _ = writeln!(s, "{verdict}");
    s
}

/// `soak`: rounds until the limit or Ctrl-C; status lines, then a summary.
fn soak(
    suite: &dyn Suite,
    options: &crate::soak::SoakOptions,
    json: bool,
    program: &str,
    grace: std::time::Duration,
    hint: Option<&NodesHint>,
) -> u8 {
    use crate::soak::{SoakReport, SoakStop};
    let stop = SoakStop::with_grace(grace);
    watch_interrupts(InterruptTarget::Soak(stop.clone(), grace), "soak");
    let sample = options.sample.map_or("the whole space".to_string(), |k| count(k, "walk"));
    eprintln!(
        "soak of suite {}: seed {} ({sample} per round); Ctrl-C stops it",
        suite.name(),
        options.seed
    );
    // On a terminal, a live line (elapsed time ticking, the latest totals)
    // above which the status lines scroll; elsewhere, plain lines.
    // (indicatif draws on stderr: both must be the terminal.)
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let live = (!json && terminal).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message("first round running");
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    });
    let on_stats = |report: &SoakReport, stats: bool| {
        if !stats {
            return;
        }
        let line = status_line(report);
        match (&live, json) {
            (Some(bar), _) => {
                bar.println(&line);
                bar.set_message(line);
            }
            (None, true) => eprintln!("{line}"),
            (None, false) => println!("{line}"),
        }
    };
    let result = crate::soak::soak(suite, options, &stop, &on_stats);
    if let Some(bar) = &live {
        bar.finish_and_clear();
    }
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            let line = match &error {
                SuiteError::Cluster(cluster) => cluster_error(cluster, hint),
                other => other.to_string(),
            };
            eprintln!("error: {line}");
            return exit_code(&error);
        }
    };
    print_soak(&report, json, program);
    if report.broke() {
        EXIT_INTERNAL
    } else if report.success() {
        EXIT_OK
    } else {
        EXIT_WALKS_FAILED
    }
}

/// One status line of a soak.
fn status_line(report: &crate::soak::SoakReport) -> String {
    let t = &report.totals;
    format!(
        "soak: {} elapsed, {}, {} ({:.0} walks/s), failed {}, cancelled {}, \
         aborted {}, runner restarts {}, nodes lost {}, rss {:.1} MiB",
        humantime::format_duration(std::time::Duration::from_secs(t.elapsed_s as u64)),
        count(t.rounds, "round"),
        count(t.walks, "walk"),
        t.walks_per_s,
        t.counts.failed,
        t.counts.cancelled,
        t.counts.aborted,
        t.runner_restarts,
        t.nodes_lost,
        t.rss_kib as f64 / 1024.0
    )
}

/// A soak's summary, human or JSON.
fn print_soak(report: &crate::soak::SoakReport, json: bool, program: &str) {
    use crate::soak::SoakEnding;
    let mut out = std::io::stdout().lock();
    if json {
        let text = serde_json::to_string(report).expect("plain data serializes");
        let _ = writeln!(out, "{text}");
        return;
    }
    let t = &report.totals;
    let _ = writeln!(out, "{}", status_line(report));
    let _ = writeln!(
        out,
        "  passed {}  failed {}  cancelled {}  pruned {}  aborted {}  not run {}  rounds cut \
         short {}",
        t.counts.passed,
        t.counts.failed,
        t.counts.cancelled,
        t.counts.pruned,
        t.counts.aborted,
        t.not_run,
        t.interrupted_rounds
    );
    let mut groups = report.failure_groups.clone();
    for group in &mut groups {
        let id = group.minimal_walk.walk_id;
        group.minimal_walk.replay =
            Some(format!("{program} replay --suite {} --walk {id}", report.suite));
    }
    let more = if report.failure_groups_dropped > 0 {
        format!(" (and {} not kept)", count(report.failure_groups_dropped, "group"))
    } else {
        " (use --json for all)".to_string()
    };
    for line in render_groups(&groups, SHOWN_GROUPS, &more).lines() {
        let _ = writeln!(out, "  {line}");
    }
    let groups = report
        .aborted
        .iter()
        .map(|g| ("aborted", g))
        .chain(report.not_run.iter().map(|g| ("left", g)));
    for (what, group) in groups.take(SHOWN_GROUPS) {
        let _ = writeln!(
            out,
            "  round {}: {what} {}: {}",
            group.round,
            count(group.walks.count(), "walk"),
            group.walks.reason
        );
    }
    if let Some(dir) = &report.dir {
        let _ = writeln!(out, "soak directory: {}", dir.display());
    }
    let _ =
        writeln!(out, "seed {} (soak --seed {} replays these rounds)", report.seed, report.seed);
    let why = report.ending_reason.as_deref().unwrap_or("");
    let verdict = match &report.ending {
        SoakEnding::RestartLimit => format!("STOPPED: {why}"),
        SoakEnding::AllNodesLost => format!("STOPPED: every node was lost ({why})"),
        SoakEnding::Broken => format!("BROKEN: {why}"),
        SoakEnding::FailureLimit => format!("FAIL: stopped: {why}"),
        SoakEnding::Interrupted if report.success() => "PASS (stopped early)".to_string(),
        _ if report.success() => "PASS".to_string(),
        _ => "FAIL".to_string(),
    };
    let _ = writeln!(out, "{verdict}");
}

/// What Ctrl-C stops, and the grace the walks running get.
enum InterruptTarget {
    Run(crate::RunStop, std::time::Duration),
    Soak(crate::soak::SoakStop, std::time::Duration),
}

/// Ctrl-C: the first stops starting walks (those running get the grace to
/// finish, then are given up); the second gives them up at once. Either way
/// the run or soak ends with its report.
fn watch_interrupts(target: InterruptTarget, what: &'static str) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return;
    };
    // Registered before this returns, so a Ctrl-C right after the start is
    // already ours.
    let Ok(mut interrupts) = runtime.block_on(async { signal(SignalKind::interrupt()) }) else {
        return;
    };
    let grace = match &target {
        InterruptTarget::Run(_, grace) | InterruptTarget::Soak(_, grace) => *grace,
    };
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let mut count = 0;
            while interrupts.recv().await.is_some() {
                count += 1;
                match &target {
                    InterruptTarget::Soak(stop, _) => {
                        stop.request();
                    }
                    InterruptTarget::Run(stop, _) if count == 1 => {
                        stop.drain(crate::StopReason::Interrupted);
                        let stop = stop.clone();
                        std::thread::spawn(move || {
                            std::thread::sleep(grace);
                            stop.force(crate::StopReason::Interrupted);
                        });
                    }
                    InterruptTarget::Run(stop, _) => stop.force(crate::StopReason::Interrupted),
                }
                if count == 1 {
                    eprintln!(
                        "{what}: stopping: no new walk starts; waiting at most {}s for those \
                         running (Ctrl-C again to stop now)",
                        grace.as_secs()
                    );
                } else {
                    eprintln!("{what}: stopping now: the walks still running are given up");
                }
            }
        });
    });
}

/// `replay`: one walk, alone, printing each action as it runs.
fn replay(
    suites: &[Box<dyn Suite>],
    run: Option<&Path>,
    suite: Option<&str>,
    walk: u64,
    step: bool,
    program: &str,
) -> u8 {
    let run_dir = match run.map(RunDir::open).transpose() {
        Ok(run_dir) => run_dir,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    let name = match (&run_dir, suite) {
        (Some(run_dir), _) => run_dir.meta().suite.as_str(),
        (None, Some(name)) => name,
        (None, None) => unreachable!("clap requires --run or --suite"),
    };
    let Some(suite) = suites.iter().find(|s| s.name() == name) else {
        let names: Vec<&str> = suites.iter().map(|s| s.name()).collect();
        let whose = match &run_dir {
            Some(dir) => {
                format!("{} was a run of suite '{name}'", dir.path().join("run.json").display())
            }
            None => format!("unknown suite '{name}'"),
        };
        eprintln!(
            "error: {whose}, which {program} does not have (available: {})",
            names.join(", ")
        );
        return EXIT_USAGE;
    };
    // The whole trace is checked (the replay's `RunDir::find` checks it
    // again), so that a cut-off last line is named even when the walk asked
    // for is intact.
    if let Some(run_dir) = &run_dir {
        match run_dir.check() {
            Ok(check) => {
                if let Some(torn) = &check.torn_tail {
                    eprintln!("warning: {torn}");
                }
            }
            Err(error) => {
                eprintln!("error: {error}");
                return EXIT_USAGE;
            }
        }
    }
    let target = match &run_dir {
        Some(run) => ReplayTarget::Recorded { run, walk },
        None => ReplayTarget::Id(walk),
    };
    let mut out = std::io::stdout();
    let header = match &run_dir {
        Some(dir) => format!("replaying walk {walk} of suite {name}, run {}", dir.meta().run_id),
        None => format!("replaying walk {walk} of suite {name} (current walk order)"),
    };
    // The header comes with the first step: a walk that cannot be replayed
    // (out of the space, absent from the trace) prints only its error.
    let mut header = Some(header);
    let mut stdin = std::io::stdin().lock();
    let mut on_step = |s: &ReplayStep| {
        if let Some(header) = header.take() {
            let _ = writeln!(out, "{header}");
        }
        let action = option_text(&s.name, &s.label, s.kind == EntryKind::Serial);
        let _ = writeln!(out, "  [{}] {action} (option {})", s.position, s.option);
        if step {
            let _ = write!(out, "      press Enter to run it ");
            let _ = out.flush();
            let mut line = String::new();
            let _ = stdin.read_line(&mut line);
        }
    };
    let replayed = match suite.replay(target, &mut on_step) {
        Ok(replayed) => replayed,
        Err(error) => {
            eprintln!("error: {error}");
            return exit_code(&error);
        }
    };
    let mut out = std::io::stdout().lock();
    if let Some(header) = header.take() {
        let _ = writeln!(out, "{header}"); // No step ran (a pruned walk).
    }
    if let Some(ModelCheck::Changed(how)) = &replayed.model {
        let _ = writeln!(
            out,
            "warning: the walk order changed since the run ({how}); the recorded option values were replayed"
        );
    }
    if replayed.outcome == WalkOutcome::Pruned {
        let _ = writeln!(out, "  (an action prunes this walk: nothing runs)");
    }
    let _ = writeln!(out, "outcome: {}", describe(&replayed.outcome));
    if let Some(record) = &replayed.record {
        let _ = writeln!(out, "recorded: {}", describe_record(record));
    }
    let _ = writeln!(out, "final state:\n{}", replayed.state);
    match replayed.outcome {
        WalkOutcome::Failed { .. } => EXIT_WALKS_FAILED,
        _ => EXIT_OK,
    }
}

fn describe(outcome: &WalkOutcome) -> String {
    match outcome {
        WalkOutcome::Passed => "passed".to_string(),
        WalkOutcome::Cancelled { action_index } => format!("cancelled at entry {action_index}"),
        WalkOutcome::Failed { action_index, action, error } => {
            format!("failed at entry {action_index} ({action}): {error}")
        }
        WalkOutcome::Pruned => "pruned".to_string(),
    }
}

fn describe_record(record: &TraceRecord) -> String {
    let outcome = match record.outcome {
        TraceOutcome::Passed => "passed",
        TraceOutcome::Failed => "failed",
        TraceOutcome::Cancelled => "cancelled",
        TraceOutcome::Pruned => "pruned",
        TraceOutcome::Aborted => "aborted",
    };
    let mut text = outcome.to_string();
    if let Some(index) = record.action_index {
        let name = record.actions.get(index).map_or("?", |a| a.type_name.as_str());
        text += &format!(" at entry {index} ({name})");
    }
    if let Some(error) = &record.error {
        text += &format!(": {error}");
    }
    text
}

/// Failure groups from a trace's failed records, for a run whose
/// `run.json` has no summary (it did not finish): signatures, counts and
/// minimal walks as a finished run has them; conditions need every walk's
/// outcome, so they say they are not available.
fn groups_of_records(
    records: &[TraceRecord],
    meta: &crate::model::trace::RunMeta,
    label: &dyn Fn(usize, &crate::model::trace::TraceAction) -> String,
    replay: impl Fn(u64) -> String,
) -> Vec<GroupSummary> {
    use crate::model::triage::{ConditionsSummary, MinimalWalk, StepSummary, normalise};
    let mut groups: Vec<GroupSummary> = Vec::new();
    let simplicity =
        |r: &TraceRecord| (r.actions.iter().filter(|a| a.option != 0).count(), r.walk_id);
    let mut minimal: Vec<&TraceRecord> = Vec::new();
    let mut failed: Vec<&TraceRecord> =
        records.iter().filter(|r| r.outcome == TraceOutcome::Failed).collect();
    failed.sort_by_key(|r| r.walk_id);
    for record in failed {
        let index = record.action_index.unwrap_or(0);
        let action = meta.walk_order.get(index).map_or("?", |e| e.type_name.as_str());
        let error = normalise(record.error.as_deref().unwrap_or(""));
        let signature = format!("{action} (entry {index}): {error}");
        match groups.iter().position(|g| g.signature == signature) {
            Some(i) => {
                let g = &mut groups[i];
                g.count += 1;
                if g.walk_ids.len() < crate::model::triage::SAMPLE_IDS {
                    g.walk_ids.push(record.walk_id);
                }
                if simplicity(record) < simplicity(minimal[i]) {
                    minimal[i] = record;
                }
            }
            None => {
                groups.push(GroupSummary {
                    signature,
                    action_index: index,
                    action: action.to_string(),
                    error,
                    count: 1,
                    walk_ids: vec![record.walk_id],
                    minimal_walk: MinimalWalk {
                        walk_id: record.walk_id,
                        actions: Vec::new(),
                        error: String::new(),
                        replay: None,
                    },
                    conditions: ConditionsSummary {
                        found: false,
                        terms: Vec::new(),
                        sampled: false,
                        text: "conditions not available: the run did not finish".to_string(),
                    },
                    first_round: None,
                    last_round: None,
                });
                minimal.push(record);
            }
        }
    }
    for (g, record) in groups.iter_mut().zip(minimal) {
        g.minimal_walk = MinimalWalk {
            walk_id: record.walk_id,
            actions: record
                .actions
                .iter()
                .enumerate()
                .map(|(position, a)| StepSummary {
                    position,
                    action: a.type_name.clone(),
                    serial: meta
                        .walk_order
                        .get(position)
                        .is_some_and(|e| e.kind == EntryKind::Serial),
                    option: a.option,
                    label: label(position, a),
                })
                .collect(),
            error: record.error.clone().unwrap_or_default(),
            replay: Some(replay(record.walk_id)),
        };
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    groups
}

/// `show`: the walks of a run directory, failed ones first, after the
/// checks of `RunDir::trace` (a cut-off last line is skipped with a
/// warning).
fn show(
    suites: &[Box<dyn Suite>],
    dir: &Path,
    failed_only: bool,
    groups: bool,
    program: &str,
) -> u8 {
    let run = match RunDir::open(dir) {
        Ok(run) => run,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    let trace = match run.trace() {
        Ok(trace) => trace,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    if let Some(torn) = &trace.check.torn_tail {
        eprintln!("warning: {torn}");
    }
    let records = trace.records;
    let meta = run.meta();
    // Options as `run` prints them (their `Debug` text) when this binary
    // has the run's suite with the same walk order; else as recorded (JSON).
    let labels: Option<Vec<Vec<String>>> = suites
        .iter()
        .find(|s| s.name() == meta.suite)
        .filter(|s| s.fingerprint().is_ok_and(|f| f == meta.fingerprint))
        .and_then(|s| s.space().ok())
        .map(|space| space.entries().iter().map(|e| e.options.clone()).collect());
    let label = |position: usize, a: &crate::model::trace::TraceAction| -> String {
        labels
            .as_ref()
            .and_then(|l| l.get(position)?.get(a.option as usize).cloned())
            .unwrap_or_else(|| a.value.to_string())
    };
    if groups {
        let groups = match &meta.summary {
            Some(summary) => summary.failure_groups.clone(),
            None => groups_of_records(&records, meta, &label, |id| {
                replay_command(program, run.path(), id)
            }),
        };
        let mut out = std::io::stdout().lock();
        let walks = count(meta.walks, "walk");
        let _ = writeln!(out, "run {} of suite {}: {walks}", meta.run_id, meta.suite);
        match groups.is_empty() {
            true => {
                let _ = writeln!(out, "no failed walk");
            }
            false => {
                let _ = write!(out, "{}", render_groups(&groups, usize::MAX, ""));
            }
        }
        return EXIT_OK;
    }
    let serial: Vec<bool> = meta.walk_order.iter().map(|e| e.kind == EntryKind::Serial).collect();
    let mut out = std::io::stdout().lock();
    let ended = match &meta.ended_at {
        Some(at) => format!("ended {at}"),
        None => format!(
            "did not finish (it crashed, was killed or is still running): {} read",
            count(trace.check.records, "record")
        ),
    };
    let _ = writeln!(
        out,
        "run {} of suite {}: {}, started {}, {ended}",
        meta.run_id,
        meta.suite,
        count(meta.walks, "walk"),
        meta.started_at
    );
    let (failed, others): (Vec<&TraceRecord>, Vec<&TraceRecord>) =
        records.iter().partition(|r| r.outcome == TraceOutcome::Failed);
    let actions = |record: &TraceRecord| -> String {
        let list: Vec<String> = record
            .actions
            .iter()
            .enumerate()
            .map(|(p, a)| {
                // A type at two positions is named with its position, as
                // failure groups name it.
                let twice =
                    record.actions.iter().filter(|b| b.type_name == a.type_name).count() > 1;
                let name = match twice {
                    true => format!("{}[{p}]", a.type_name),
                    false => a.type_name.clone(),
                };
                option_text(&name, &label(p, a), serial.get(p) == Some(&true))
            })
            .collect();
        list.join(", ")
    };
    let _ = writeln!(out, "failed walks ({}):", failed.len());
    for record in &failed {
        let _ = writeln!(out, "  walk {}: {}", record.walk_id, describe_record(record));
        let _ = writeln!(out, "    [{}]", actions(record));
    }
    if !failed_only {
        let _ = writeln!(out, "other walks ({}):", others.len());
        for record in &others {
            let _ = writeln!(out, "  walk {}: {}", record.walk_id, describe_record(record));
            let _ = writeln!(out, "    [{}]", actions(record));
        }
    }
    if let Some(first) = failed.first() {
        let _ = writeln!(out, "replay one: {}", replay_command(program, run.path(), first.walk_id));
    }
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{failures_text, progress_line};

    #[test]
    fn a_progress_line_says_how_far_how_fast_and_what_failed() {
        let line = progress_line(1200, 5000, Duration::from_secs(4), &failures_text(3, 1));
        assert_eq!(
            line,
            "progress: 1200 of 5000 walks (24%), 300 walks/s, ETA 13s, failed 3 in 1 group"
        );
        let line = progress_line(0, 1, Duration::ZERO, &failures_text(0, 0));
        assert_eq!(
            line,
            "progress: 0 of 1 walk (0%), 0 walks/s, ETA unknown, failed 0 in 0 groups"
        );
    }
}
