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

use std::io::Write as _;
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};
use serde::Serialize;

use crate::model::outcome::Report;
use crate::order::epoch_tree;
use crate::suites::{Suite, SuiteError, SuiteOptions};

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
    /// Log more on stderr: -v info, -vv debug, -vvv trace (default: warnings).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,

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
    /// Run every walk of a suite on this machine and print a summary.
    Run {
        /// The suite to run (see `list`).
        #[arg(long)]
        suite: String,
        /// Runner threads: walks running at once [default: available parallelism].
        /// Use far more than the core count when actions wait on I/O.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=crate::MAX_THREADS as i64))]
        threads: Option<u32>,
        /// Print one JSON object on stdout instead of the human summary.
        #[arg(long)]
        json: bool,
    },
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
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    init_logging(cli.verbose);
    if let Some(name) = duplicate_name(&suites) {
        eprintln!("error: two suites are named '{name}': suite names must be unique");
        return EXIT_USAGE;
    }
    match cli.command {
        Command::List { max_epochs } => list(&suites, max_epochs),
        Command::Run { suite, threads, json } => {
            let Some(suite) = suites.iter().find(|s| s.name() == suite) else {
                let names: Vec<&str> = suites.iter().map(|s| s.name()).collect();
                eprintln!("error: unknown suite '{suite}' (available: {})", names.join(", "));
                return EXIT_USAGE;
            };
            let options = SuiteOptions { threads: threads.map(|t| t as usize) };
            run_suite(suite.as_ref(), &options, json)
        }
    }
}

fn duplicate_name(suites: &[Box<dyn Suite>]) -> Option<&str> {
    let mut seen = std::collections::HashSet::new();
    suites.iter().map(|s| s.name()).find(|name| !seen.insert(*name))
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("COMBTEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // A user's binary may have installed its own subscriber: keep it.
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
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

/// The `--json` output: exactly these keys.
#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    walks: u64,
    passed: u64,
    failed: u64,
    cancelled: u64,
    pruned: u64,
    aborted: u64,
    segments: u64,
    serial_actions: u64,
    runner_restarts: u64,
    elapsed_s: f64,
    failed_walks: Vec<JsonFailure<'a>>,
}

#[derive(Debug, Serialize)]
struct JsonFailure<'a> {
    walk_id: u64,
    action: &'a str,
    error: &'a str,
}

impl<'a> JsonReport<'a> {
    fn new(report: &'a Report) -> Self {
        JsonReport {
            walks: report.walks,
            passed: report.passed,
            failed: report.failed,
            cancelled: report.cancelled,
            pruned: report.pruned,
            aborted: report.aborted,
            segments: report.segments,
            serial_actions: report.serial_actions,
            runner_restarts: report.runner_restarts,
            elapsed_s: report.elapsed.as_secs_f64(),
            failed_walks: report
                .failed_walks
                .iter()
                .map(|f| JsonFailure { walk_id: f.walk_id.0, action: f.action, error: &f.error })
                .collect(),
        }
    }
}

/// Failed walks shown in the human summary before abbreviating.
const SHOWN_FAILURES: usize = 20;

fn run_suite(suite: &dyn Suite, options: &SuiteOptions, json: bool) -> u8 {
    let threads = options.threads.unwrap_or_else(crate::default_threads);
    let report = match suite.run(options) {
        Ok(report) => report,
        Err(SuiteError::Setup { suite, reason }) => {
            eprintln!("error: setup of suite {suite} failed: {reason}");
            return EXIT_USAGE;
        }
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_INTERNAL;
        }
    };
    let mut out = std::io::stdout().lock();
    if json {
        let text = serde_json::to_string(&JsonReport::new(&report)).expect("plain data serializes");
        let _ = writeln!(out, "{text}");
    } else {
        let _ = write!(out, "{}", human_summary(suite, &report, threads));
    }
    if report.success() { EXIT_OK } else { EXIT_WALKS_FAILED }
}

fn human_summary(suite: &dyn Suite, report: &Report, threads: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let secs = report.elapsed.as_secs_f64();
    let rate = if secs > 0.0 { report.walks as f64 / secs } else { 0.0 };
    let _ = writeln!(
        s,
        "suite {}: {} walks in {secs:.3} s ({rate:.0} walks/s) on {threads} runner threads",
        suite.name(),
        report.walks
    );
    let _ = writeln!(
        s,
        "  passed {}  failed {}  cancelled {}  pruned {}  aborted {}",
        report.passed, report.failed, report.cancelled, report.pruned, report.aborted
    );
    let _ = writeln!(
        s,
        "  segments {}  serial actions {}  runner restarts {}",
        report.segments, report.serial_actions, report.runner_restarts
    );
    if !report.failed_walks.is_empty() {
        let _ = writeln!(s, "failed walks ({}):", report.failed_walks.len());
        for failure in report.failed_walks.iter().take(SHOWN_FAILURES) {
            let _ = writeln!(
                s,
                "  walk {}: {} (entry {}) failed: {}",
                failure.walk_id, failure.action, failure.action_index, failure.error
            );
            if let Ok(walk) = suite
                .space()
                .map_err(|_| ())
                .and_then(|sp| sp.walk(failure.walk_id.0).map_err(|_| ()))
            {
                let _ = writeln!(s, "    {walk}");
            }
        }
        if report.failed_walks.len() > SHOWN_FAILURES {
            let more = report.failed_walks.len() - SHOWN_FAILURES;
            let _ = writeln!(s, "  ... and {more} more (use --json for all)");
        }
    }
    for aborted in &report.aborted_walks {
        let _ = writeln!(s, "aborted {} walks: {}", aborted.count(), aborted.reason);
    }
    let verdict = if report.success() { "PASS" } else { "FAIL" };
    let _ = writeln!(s, "{verdict}");
    s
}
