//! `combtest-node`: list and run the built-in suites.
//!
//! Run `combtest-node --help`. A user's binary with its own suites is the
//! same one line over `combtest::cli::main`.

fn main() -> std::process::ExitCode {
    combtest::cli::main(combtest::suites::builtin())
}
