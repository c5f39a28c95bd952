//! Settings of `combtest-node`, and where each one came from.
//!
//! A setting is read from four layers, the first that has it winning: the
//! command line ([`Overrides`]), the environment (`COMBTEST_*`), a settings
//! file (`--config PATH`, else `combtest.toml` in the working directory if
//! there is one), and the defaults. [`resolve`] does this without I/O: it
//! takes the file's text, a lookup for environment variables and the
//! command line's values, so tests never touch the process environment.
//! [`Settings::load`] reads the real file and environment.
//!
//! Every layer is checked, even one that a higher layer overrides: an
//! unknown key or an invalid value anywhere is an error ([`ConfigError`]),
//! not something that surfaces only once the overriding layer goes away.

pub mod cookie;
mod ssh;

use std::ffi::OsStr;
use std::fmt;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Value;

use crate::runtime::{MAX_THREADS, default_threads};
pub use ssh::SshHost;

/// The settings file read from the working directory when no `--config`
/// is given (its absence is not an error).
pub const DEFAULT_FILE: &str = "combtest.toml";

/// The address a node listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// How long a silent node is waited for by default.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// The keys a settings file may hold, in the order `config` prints them.
pub const KEYS: [&str; 14] = [
    "threads",
    "nodes",
    "ssh_hosts",
    "ssh_options",
    "cookie",
    "cookie_file",
    "tls_cert",
    "tls_key",
    "tls_ca",
    "listen",
    "batch_size",
    "heartbeat_timeout",
    "log_dir",
    "verbosity",
];

/// `combtest-node config --help`: every setting and the precedence.
pub const HELP: &str = "\
Print the effective settings, one per line, each with where it came from.

Each setting is taken from the first of these that has it:
  1. the command line (`run --threads`, `run --log-dir`, `-v`),
  2. the environment (COMBTEST_THREADS, ...: see below),
  3. the settings file: `--config PATH` (which must exist), else combtest.toml
     in the working directory if there is one,
  4. the default.
Every layer is checked, even one that a higher layer overrides: an unknown key
or an invalid value anywhere is an error (exit code 2).

Settings (file key, environment variable, default):
  threads            COMBTEST_THREADS            available parallelism
      Runner threads: walks running at once, 1 to 4096. `run --threads`.
  nodes              COMBTEST_NODES              none
      The other nodes of a cluster: a list of \"HOST:PORT\" strings in the file,
      comma-separated in the environment.
  ssh_hosts          COMBTEST_SSH_HOSTS          none
      Hosts to start a node on through `ssh` for `run` and `soak` (`--ssh`):
      \"[USER@]HOST[:PORT]\" strings, or tables with `host` and optionally
      `user`, `port` and `identity` (a private key file) in the file;
      comma-separated \"[USER@]HOST[:PORT]\" in the environment. Anything not
      given comes from your ssh configuration.
  ssh_options        COMBTEST_SSH_OPTIONS        none
      Words added to every ssh command, such as [\"-F\", \"ssh_config\"]
      (space-separated in the environment).
  cookie             COMBTEST_COOKIE             not set
      The secret the nodes of a cluster share; `config` never prints it.
      `--cookie` (run, soak, serve). When it is not set, the secret in the
      cookie file (below) is used.
  cookie_file        COMBTEST_COOKIE_FILE        $HOME/.combtest/cookie
      The file holding the cluster's secret when `cookie` is not set. Created
      on first use with a random secret and mode 0600 (its directory 0700); a
      file others than its owner may read or write is refused. Copy it to the
      nodes on other hosts, or give every side the same --cookie.
      `--cookie-file` (run, soak, serve). A relative path is relative to the
      working directory.
  tls_cert           COMBTEST_TLS_CERT           not set
      This process's certificate (PEM; the chain, its own first) for mutual
      TLS between coordinator and nodes. `--tls-cert` (run, soak, serve).
      TLS needs all three tls_* settings, or none.
  tls_key            COMBTEST_TLS_KEY            not set
      The certificate's private key (PEM). `--tls-key`.
  tls_ca             COMBTEST_TLS_CA             not set
      The CA certificate(s) (PEM) both sides check the other's certificate
      against. `--tls-ca`.
  listen             COMBTEST_LISTEN             127.0.0.1:7878
      The address this node listens on for its cluster, \"HOST:PORT\" (port 0:
      any free port).
  batch_size         COMBTEST_BATCH_SIZE         auto
      The most walks in one batch: \"auto\" (sized from the measured cost of a
      walk) or a positive integer.
  heartbeat_timeout  COMBTEST_HEARTBEAT_TIMEOUT  10s
      How long a silent node is waited for before it is taken as lost: a
      duration such as \"10s\", \"500ms\" or \"1m 30s\".
  log_dir            COMBTEST_LOG_DIR            not set
      Trace every run into DIR/<run-id>/. `run --log-dir`. A relative path is
      relative to the working directory.
  verbosity          COMBTEST_VERBOSITY          warn
      The stderr log level: warn, info, debug or trace. `-v` is info, `-vv`
      debug, `-vvv` trace. COMBTEST_LOG (a tracing filter) overrides it.

Example combtest.toml:
  threads = 8
  log_dir = \"logs\"
  verbosity = \"info\"
  nodes = [\"10.0.0.2:7878\", \"10.0.0.3:7878\"]
  ssh_hosts = [\"node1\", { host = \"10.0.0.4\", user = \"ci\", port = 2222 }]
  heartbeat_timeout = \"30s\"";

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Nothing set it.
    Default,
    /// The settings file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(&'static str),
    /// A command-line flag.
    CommandLine,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(var) => write!(f, "env {var}"),
            Source::CommandLine => write!(f, "command line"),
        }
    }
}

/// A setting's value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    /// The effective value.
    pub value: T,
    /// The layer that set it.
    pub source: Source,
}

impl<T> Setting<T> {
    fn default(value: T) -> Self {
        Setting { value, source: Source::Default }
    }
}

/// The effective settings of one `combtest-node` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// Runner threads; `None` for the available parallelism.
    pub threads: Setting<Option<u32>>,
    /// The other nodes of a cluster.
    pub nodes: Setting<Vec<HostPort>>,
    /// Hosts to start nodes on over SSH.
    pub ssh_hosts: Setting<Vec<SshHost>>,
    /// Words added to every ssh command.
    pub ssh_options: Setting<Vec<String>>,
    /// The secret the nodes of a cluster share.
    pub cookie: Setting<Option<Cookie>>,
    /// The file holding the secret when `cookie` is not set; by default
    /// `$HOME/.combtest/cookie`, `None` only when `HOME` is not set either
    /// (see [`cookie`]).
    pub cookie_file: Setting<Option<PathBuf>>,
    /// This process's TLS certificate (PEM).
    pub tls_cert: Setting<Option<PathBuf>>,
    /// Its private key (PEM).
    pub tls_key: Setting<Option<PathBuf>>,
    /// The CA certificates TLS peers are checked against (PEM).
    pub tls_ca: Setting<Option<PathBuf>>,
    /// The address this node listens on for its cluster.
    pub listen: Setting<HostPort>,
    /// The most walks in one batch.
    pub batch_size: Setting<BatchSize>,
    /// How long a silent node is waited for before it is taken as lost.
    pub heartbeat_timeout: Setting<Duration>,
    /// Trace every run into `DIR/<run-id>/`.
    pub log_dir: Setting<Option<PathBuf>>,
    /// The stderr log level.
    pub verbosity: Setting<Verbosity>,
}

/// The command line's values: each `Some` beats every other layer.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Overrides {
    /// `run --threads`.
    pub threads: Option<u32>,
    /// No flag yet.
    pub nodes: Option<Vec<HostPort>>,
    /// `run` and `soak --ssh`.
    pub ssh_hosts: Option<Vec<SshHost>>,
    /// No flag.
    pub ssh_options: Option<Vec<String>>,
    /// `run`, `soak` and `serve --cookie`.
    pub cookie: Option<Cookie>,
    /// `run`, `soak` and `serve --cookie-file`.
    pub cookie_file: Option<PathBuf>,
    /// `run`, `soak` and `serve --tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `run`, `soak` and `serve --tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `run`, `soak` and `serve --tls-ca`.
    pub tls_ca: Option<PathBuf>,
    /// No flag yet.
    pub listen: Option<HostPort>,
    /// No flag yet.
    pub batch_size: Option<BatchSize>,
    /// No flag yet.
    pub heartbeat_timeout: Option<Duration>,
    /// `run --log-dir`.
    pub log_dir: Option<PathBuf>,
    /// `-v` (see [`Verbosity::from_count`]).
    pub verbosity: Option<Verbosity>,
}

/// A settings file: its path (as named, for messages) and its text.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its contents.
    pub text: String,
}

impl ConfigFile {
    /// Reads `explicit` (`--config PATH`, which must exist), or else
    /// [`DEFAULT_FILE`] in the working directory if it exists.
    pub fn find(explicit: Option<&Path>) -> Result<Option<ConfigFile>, ConfigError> {
        let path = explicit.unwrap_or(Path::new(DEFAULT_FILE));
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(ConfigFile { path: path.to_path_buf(), text })),
            Err(error) if explicit.is_none() && error.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(source) => Err(ConfigError::Read { path: path.to_path_buf(), source }),
        }
    }
}

/// Why the settings could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The settings file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The settings file is not valid TOML.
    #[error("cannot parse config file {} at line {line}, column {column}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where (1-based).
        line: usize,
        /// Where (1-based).
        column: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// The settings file has a key that is not a setting.
    #[error(
        "unknown key `{key}` in config file {} at line {line}: the known keys are {}",
        path.display(),
        KEYS.join(", ")
    )]
    UnknownKey {
        /// The key.
        key: String,
        /// The file.
        path: PathBuf,
        /// Where (1-based).
        line: usize,
    },
    /// Some of the TLS settings are set, not all three.
    #[error(
        "TLS needs all three of --tls-cert, --tls-key and --tls-ca (settings tls_cert, tls_key, \
         tls_ca): {} not set ({})",
        missing.join(" and "),
        set.join(", ")
    )]
    TlsIncomplete {
        /// The settings not set.
        missing: Vec<&'static str>,
        /// The settings set, each with its source.
        set: Vec<String>,
    },
    /// A setting has a value of the wrong type or out of range.
    #[error("invalid `{key}` in {}: expected {expected}, found {found}", place(origin))]
    Invalid {
        /// The setting.
        key: &'static str,
        /// The file or environment variable that holds the value.
        origin: Source,
        /// What a valid value looks like.
        expected: String,
        /// The value found (only its type, for the cookie).
        found: String,
    },
}

fn place(origin: &Source) -> String {
    match origin {
        Source::File(path) => format!("config file {}", path.display()),
        Source::Env(var) => format!("environment variable {var}"),
        other => other.to_string(),
    }
}

/// A value that does not parse as a setting: says what was expected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("expected {expected}")]
pub struct InvalidValue {
    /// What a valid value looks like.
    pub expected: &'static str,
}

/// A `HOST:PORT` address (`[::1]:7878` for an IPv6 host). The host is not
/// resolved here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The host name or IP address, without brackets.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = InvalidValue;
    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        let invalid = InvalidValue { expected: "HOST:PORT, such as \"127.0.0.1:7878\"" };
        let (host, port) = text.rsplit_once(':').ok_or(invalid.clone())?;
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) if v6.contains(':') => v6,
            Some(_) => return Err(invalid),
            None if host.contains(':') => return Err(invalid),
            None => host,
        };
        let bad = |c: char| c.is_whitespace() || matches!(c, ',' | '[' | ']' | '/');
        if host.is_empty() || host.contains(bad) {
            return Err(invalid);
        }
        let port = port.parse().map_err(|_| invalid)?;
        Ok(HostPort { host: host.to_string(), port })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The cluster's shared secret. `Debug` masks it; [`Cookie::expose`] is the
/// only way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Cookie(String);

impl Cookie {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cookie(****)")
    }
}

impl FromStr for Cookie {
    type Err = InvalidValue;
    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        if text.is_empty() {
            return Err(InvalidValue { expected: "a non-empty string" });
        }
        Ok(Cookie(text.to_string()))
    }
}

/// The most walks in one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchSize {
    /// Sized from the measured cost of a walk.
    #[default]
    Auto,
    /// At most this many walks.
    Max(NonZeroU64),
}

impl FromStr for BatchSize {
    type Err = InvalidValue;
    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        if text == "auto" {
            return Ok(BatchSize::Auto);
        }
        let invalid = InvalidValue { expected: "\"auto\" or a positive integer" };
        text.parse().map(BatchSize::Max).map_err(|_| invalid)
    }
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Auto => write!(f, "auto"),
            BatchSize::Max(n) => write!(f, "{n}"),
        }
    }
}

/// The stderr log level, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Verbosity {
    /// Warnings and errors.
    #[default]
    Warn,
    /// `-v`.
    Info,
    /// `-vv`.
    Debug,
    /// `-vvv`.
    Trace,
}

impl Verbosity {
    /// The level of `count` `-v` flags; `None` for none (no override).
    pub fn from_count(count: u8) -> Option<Verbosity> {
        match count {
            0 => None,
            1 => Some(Verbosity::Info),
            2 => Some(Verbosity::Debug),
            _ => Some(Verbosity::Trace),
        }
    }

    /// The level's name, as `tracing` filters spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verbosity::Warn => "warn",
            Verbosity::Info => "info",
            Verbosity::Debug => "debug",
            Verbosity::Trace => "trace",
        }
    }
}

impl FromStr for Verbosity {
    type Err = InvalidValue;
    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        match text {
            "warn" => Ok(Verbosity::Warn),
            "info" => Ok(Verbosity::Info),
            "debug" => Ok(Verbosity::Debug),
            "trace" => Ok(Verbosity::Trace),
            _ => Err(InvalidValue { expected: "one of \"warn\", \"info\", \"debug\", \"trace\"" }),
        }
    }
}

/// The settings file's keys, each still an untyped TOML value: they are
/// checked one by one, with the same messages as the environment's values.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    threads: Option<Value>,
    nodes: Option<Value>,
    ssh_hosts: Option<Value>,
    ssh_options: Option<Value>,
    cookie: Option<Value>,
    cookie_file: Option<Value>,
    tls_cert: Option<Value>,
    tls_key: Option<Value>,
    tls_ca: Option<Value>,
    listen: Option<Value>,
    batch_size: Option<Value>,
    heartbeat_timeout: Option<Value>,
    log_dir: Option<Value>,
    verbosity: Option<Value>,
}

impl ConfigFile {
    fn parse(&self) -> Result<FileSettings, ConfigError> {
        toml::from_str(&self.text).map_err(|error| {
            let start = error.span().map_or(0, |span| span.start);
            let (line, column) = position(&self.text, start);
            let path = self.path.clone();
            // serde's `deny_unknown_fields` message: "unknown field `KEY`, expected ...".
            match error.message().strip_prefix("unknown field `") {
                Some(rest) => {
                    let key = rest.split('`').next().unwrap_or(rest).to_string();
                    ConfigError::UnknownKey { key, path, line }
                }
                None => {
                    let message = error.message().trim().lines().collect::<Vec<_>>().join("; ");
                    ConfigError::Parse { path, line, column, message }
                }
            }
        })
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// How one setting's value is read from the environment and from the file.
struct Kind<T> {
    /// What a valid value looks like.
    expected: String,
    /// Parses an environment variable's text.
    env: fn(&str) -> Option<T>,
    /// Converts a file's TOML value.
    file: fn(&Value) -> Option<T>,
    /// Never echo the value in an error.
    secret: bool,
}

impl<T: FromStr> Kind<T> {
    /// A setting written as a string in both layers, parsed by `FromStr`.
    fn text(expected: impl Into<String>) -> Self {
        Kind {
            expected: expected.into(),
            env: |text| text.parse().ok(),
            file: |value| value.as_str()?.parse().ok(),
            secret: false,
        }
    }
}

fn threads_kind() -> Kind<u32> {
    fn valid(n: u64) -> Option<u32> {
        (1..=MAX_THREADS as u64).contains(&n).then_some(n as u32)
    }
    Kind {
        expected: format!("an integer from 1 to {MAX_THREADS}"),
        env: |text| text.parse().ok().and_then(valid),
        file: |value| value.as_integer().and_then(|n| u64::try_from(n).ok()).and_then(valid),
        secret: false,
    }
}

fn nodes_kind() -> Kind<Vec<HostPort>> {
    fn node(text: &str) -> Option<HostPort> {
        text.trim().parse().ok().filter(|node: &HostPort| node.port != 0)
    }
    Kind {
        expected: "a list of \"HOST:PORT\" addresses with ports 1 to 65535 (a TOML array of \
            strings in a file, separated by commas in the environment)"
            .to_string(),
        env: |text| match text.trim() {
            "" => Some(Vec::new()),
            list => list.split(',').map(node).collect(),
        },
        file: |value| value.as_array()?.iter().map(|v| node(v.as_str()?)).collect(),
        secret: false,
    }
}

fn batch_size_kind() -> Kind<BatchSize> {
    Kind {
        expected: "\"auto\" or a positive integer".to_string(),
        env: |text| text.parse().ok(),
        file: |value| match value {
            Value::String(text) if text == "auto" => Some(BatchSize::Auto),
            Value::Integer(n) => Some(BatchSize::Max(NonZeroU64::new(u64::try_from(*n).ok()?)?)),
            _ => None,
        },
        secret: false,
    }
}

fn duration_kind() -> Kind<Duration> {
    fn parse(text: &str) -> Option<Duration> {
        humantime::parse_duration(text).ok().filter(|d| !d.is_zero())
    }
    Kind {
        expected: "a duration of more than zero, such as \"10s\", \"500ms\" or \"1m 30s\""
            .to_string(),
        env: parse,
        file: |value| parse(value.as_str()?),
        secret: false,
    }
}

/// A path; `expected` says of what.
fn path_kind(expected: &str) -> Kind<PathBuf> {
    let parse = |text: &str| (!text.is_empty()).then(|| PathBuf::from(text));
    Kind {
        expected: expected.to_string(),
        env: parse,
        file: |value| value.as_str().filter(|s| !s.is_empty()).map(PathBuf::from),
        secret: false,
    }
}

/// The file and the environment, for [`resolve`].
struct Layers<'a> {
    file: Option<(&'a Path, FileSettings)>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Layers<'_> {
    /// The setting `key` from the first layer that has it (`None`: the
    /// default), after checking the environment's and the file's values.
    fn get<T: Clone>(
        &self,
        key: &'static str,
        var: &'static str,
        command_line: Option<&T>,
        in_file: fn(&FileSettings) -> Option<&Value>,
        kind: Kind<T>,
    ) -> Result<Option<Setting<T>>, ConfigError> {
        let invalid = |origin: Source, found: String| ConfigError::Invalid {
            key,
            origin,
            expected: kind.expected.clone(),
            found,
        };
        let env = match (self.env)(var) {
            Some(text) => match (kind.env)(&text) {
                Some(value) => Some(Setting { value, source: Source::Env(var) }),
                None if kind.secret => return Err(invalid(Source::Env(var), secret(&text))),
                None => return Err(invalid(Source::Env(var), format!("{text:?}"))),
            },
            None => None,
        };
        let file = match &self.file {
            Some((path, settings)) => match in_file(settings) {
                Some(raw) => {
                    let source = Source::File(path.to_path_buf());
                    match (kind.file)(raw) {
                        Some(value) => Some(Setting { value, source }),
                        None if kind.secret => return Err(invalid(source, secret_toml(raw))),
                        None => return Err(invalid(source, one_line(raw))),
                    }
                }
                None => None,
            },
            None => None,
        };
        let command_line =
            command_line.map(|value| Setting { value: value.clone(), source: Source::CommandLine });
        Ok(command_line.or(env).or(file))
    }

    /// [`Layers::get`] for a setting whose default is "not set".
    fn optional<T: Clone>(
        &self,
        key: &'static str,
        var: &'static str,
        command_line: Option<&T>,
        in_file: fn(&FileSettings) -> Option<&Value>,
        kind: Kind<T>,
    ) -> Result<Setting<Option<T>>, ConfigError> {
        let found = self.get(key, var, command_line, in_file, kind)?;
        Ok(found
            .map_or(Setting::default(None), |s| Setting { value: Some(s.value), source: s.source }))
    }

    /// A list setting: empty by default.
    fn list<T: Clone>(
        &self,
        key: &'static str,
        var: &'static str,
        command_line: Option<&Vec<T>>,
        in_file: fn(&FileSettings) -> Option<&Value>,
        kind: Kind<Vec<T>>,
    ) -> Result<Setting<Vec<T>>, ConfigError> {
        Ok(self.get(key, var, command_line, in_file, kind)?.unwrap_or(Setting::default(Vec::new())))
    }
}

fn secret(text: &str) -> String {
    if text.is_empty() { "an empty string".to_string() } else { "(not shown)".to_string() }
}

fn secret_toml(value: &Value) -> String {
    match value {
        Value::String(text) => secret(text),
        other => format!("a TOML {}", other.type_str()),
    }
}

/// A TOML value on one line.
fn one_line(value: &Value) -> String {
    value.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The settings from the command line (`overrides`), over the environment
/// (`env` looks a variable up), over `file` (its text, if there is one),
/// over the defaults. Does no I/O.
pub fn resolve(
    file: Option<&ConfigFile>,
    env: impl Fn(&str) -> Option<String>,
    overrides: &Overrides,
) -> Result<Settings, ConfigError> {
    let file = match file {
        Some(config) => Some((config.path.as_path(), config.parse()?)),
        None => None,
    };
    let layers = Layers { file, env: &env };
    let cookie_kind = Kind { secret: true, ..Kind::text("a non-empty string") };
    let listen_kind =
        Kind::text("\"HOST:PORT\", such as \"127.0.0.1:7878\" (port 0: any free port)");
    let verbosity_kind = Kind::text("one of \"warn\", \"info\", \"debug\", \"trace\"");
    let o = overrides;
    let tls = |key, var, flag: &Option<PathBuf>, in_file: fn(&FileSettings) -> Option<&Value>| {
        let kind = path_kind("a PEM file path (a non-empty string)");
        layers.optional(key, var, flag.as_ref(), in_file, kind)
    };
    let tls_cert = tls("tls_cert", "COMBTEST_TLS_CERT", &o.tls_cert, |f| f.tls_cert.as_ref())?;
    let tls_key = tls("tls_key", "COMBTEST_TLS_KEY", &o.tls_key, |f| f.tls_key.as_ref())?;
    let tls_ca = tls("tls_ca", "COMBTEST_TLS_CA", &o.tls_ca, |f| f.tls_ca.as_ref())?;
    all_or_none_tls([("tls_cert", &tls_cert), ("tls_key", &tls_key), ("tls_ca", &tls_ca)])?;
    Ok(Settings {
        threads: layers.optional(
            "threads",
            "COMBTEST_THREADS",
            o.threads.as_ref(),
            |f| f.threads.as_ref(),
            threads_kind(),
        )?,
        nodes: layers.list(
            "nodes",
            "COMBTEST_NODES",
            o.nodes.as_ref(),
            |f| f.nodes.as_ref(),
            nodes_kind(),
        )?,
        ssh_hosts: layers.list(
            "ssh_hosts",
            "COMBTEST_SSH_HOSTS",
            o.ssh_hosts.as_ref(),
            |f| f.ssh_hosts.as_ref(),
            ssh::hosts_kind(),
        )?,
        ssh_options: layers.list(
            "ssh_options",
            "COMBTEST_SSH_OPTIONS",
            o.ssh_options.as_ref(),
            |f| f.ssh_options.as_ref(),
            ssh::options_kind(),
        )?,
        cookie: layers.optional(
            "cookie",
            "COMBTEST_COOKIE",
            o.cookie.as_ref(),
            |f| f.cookie.as_ref(),
            cookie_kind,
        )?,
        cookie_file: layers
            .get(
                "cookie_file",
                "COMBTEST_COOKIE_FILE",
                o.cookie_file.as_ref(),
                |f| f.cookie_file.as_ref(),
                path_kind("a file path (a non-empty string)"),
            )?
            .map_or_else(
                || Setting::default(cookie::default_path(env("HOME").as_deref().map(OsStr::new))),
                |s| Setting { value: Some(s.value), source: s.source },
            ),
        tls_cert,
        tls_key,
        tls_ca,
        listen: layers
            .get(
                "listen",
                "COMBTEST_LISTEN",
                o.listen.as_ref(),
                |f| f.listen.as_ref(),
                listen_kind,
            )?
            .unwrap_or_else(|| {
                Setting::default(DEFAULT_LISTEN.parse().expect("the default address parses"))
            }),
        batch_size: layers
            .get(
                "batch_size",
                "COMBTEST_BATCH_SIZE",
                o.batch_size.as_ref(),
                |f| f.batch_size.as_ref(),
                batch_size_kind(),
            )?
            .unwrap_or(Setting::default(BatchSize::Auto)),
        heartbeat_timeout: layers
            .get(
                "heartbeat_timeout",
                "COMBTEST_HEARTBEAT_TIMEOUT",
                o.heartbeat_timeout.as_ref(),
                |f| f.heartbeat_timeout.as_ref(),
                duration_kind(),
            )?
            .unwrap_or(Setting::default(DEFAULT_HEARTBEAT_TIMEOUT)),
        log_dir: layers.optional(
            "log_dir",
            "COMBTEST_LOG_DIR",
            o.log_dir.as_ref(),
            |f| f.log_dir.as_ref(),
            path_kind("a directory path (a non-empty string)"),
        )?,
        verbosity: layers
            .get(
                "verbosity",
                "COMBTEST_VERBOSITY",
                o.verbosity.as_ref(),
                |f| f.verbosity.as_ref(),
                verbosity_kind,
            )?
            .unwrap_or(Setting::default(Verbosity::Warn)),
    })
}

/// TLS is all three files or none.
fn all_or_none_tls(
    settings: [(&'static str, &Setting<Option<PathBuf>>); 3],
) -> Result<(), ConfigError> {
    let missing: Vec<&'static str> =
        settings.iter().filter(|(_, s)| s.value.is_none()).map(|(key, _)| *key).collect();
    if missing.is_empty() || missing.len() == settings.len() {
        return Ok(());
    }
    let set = settings
        .iter()
        .filter(|(_, s)| s.value.is_some())
        .map(|(key, s)| format!("{key} is set by {}", s.source))
        .collect();
    Err(ConfigError::TlsIncomplete { missing, set })
}

impl Settings {
    /// The TLS files (certificate, key, CA), when TLS is on.
    pub fn tls_files(&self) -> Option<(&Path, &Path, &Path)> {
        match (&self.tls_cert.value, &self.tls_key.value, &self.tls_ca.value) {
            (Some(cert), Some(key), Some(ca)) => Some((cert, key, ca)),
            _ => None,
        }
    }

    /// The settings of this process: [`ConfigFile::find`]`(config)`, the
    /// process environment and `overrides`, by [`resolve`].
    pub fn load(config: Option<&Path>, overrides: &Overrides) -> Result<Settings, ConfigError> {
        let file = ConfigFile::find(config)?;
        let env = |var: &str| std::env::var_os(var).map(|v| v.to_string_lossy().into_owned());
        resolve(file.as_ref(), env, overrides)
    }
}

/// A TOML string literal.
fn quoted(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

/// One `key = value (source)` line per setting, as `combtest-node config`
/// prints them; the cookie is masked, and when it is not set its line says
/// which cookie is in force (the file is neither read nor created).
impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NOT_SET: &str = "(not set)";
        match self.threads.value {
            Some(n) => writeln!(f, "threads = {n} ({})", self.threads.source)?,
            None => {
                writeln!(f, "threads = {} (default: available parallelism)", default_threads())?
            }
        }
        fn line(
            f: &mut fmt::Formatter<'_>,
            key: &str,
            value: String,
            source: &Source,
        ) -> fmt::Result {
            writeln!(f, "{key} = {value} ({source})")
        }
        let nodes: Vec<String> = self.nodes.value.iter().map(|n| quoted(&n.to_string())).collect();
        line(f, "nodes", format!("[{}]", nodes.join(", ")), &self.nodes.source)?;
        let hosts: Vec<String> = self.ssh_hosts.value.iter().map(ssh::host_toml).collect();
        line(f, "ssh_hosts", format!("[{}]", hosts.join(", ")), &self.ssh_hosts.source)?;
        let words: Vec<String> = self.ssh_options.value.iter().map(|w| quoted(w)).collect();
        line(f, "ssh_options", format!("[{}]", words.join(", ")), &self.ssh_options.source)?;
        // Without a cookie, say which one is in force: the cookie file's.
        match (&self.cookie.value, cookie::source(self)) {
            (Some(_), _) => line(f, "cookie", quoted("****"), &self.cookie.source)?,
            (None, Ok(in_force)) => {
                writeln!(f, "cookie = {NOT_SET} ({}): {in_force} is used", self.cookie.source)?
            }
            (None, Err(error)) => {
                writeln!(f, "cookie = {NOT_SET} ({}): {error}", self.cookie.source)?
            }
        }
        let cookie_file = self.cookie_file.value.as_ref();
        let cookie_file =
            cookie_file.map_or(NOT_SET.into(), |path| quoted(&path.to_string_lossy()));
        line(f, "cookie_file", cookie_file, &self.cookie_file.source)?;
        for (key, setting) in
            [("tls_cert", &self.tls_cert), ("tls_key", &self.tls_key), ("tls_ca", &self.tls_ca)]
        {
            let path = setting.value.as_ref();
            line(
                f,
                key,
                path.map_or(NOT_SET.into(), |p| quoted(&p.to_string_lossy())),
                &setting.source,
            )?;
        }
        line(f, "listen", quoted(&self.listen.value.to_string()), &self.listen.source)?;
        let batch_size = match self.batch_size.value {
            BatchSize::Auto => quoted("auto"),
            BatchSize::Max(n) => n.to_string(),
        };
        line(f, "batch_size", batch_size, &self.batch_size.source)?;
        let timeout = humantime::format_duration(self.heartbeat_timeout.value).to_string();
        line(f, "heartbeat_timeout", quoted(&timeout), &self.heartbeat_timeout.source)?;
        let log_dir = self.log_dir.value.as_ref();
        let log_dir = log_dir.map_or(NOT_SET.into(), |dir| quoted(&dir.to_string_lossy()));
        line(f, "log_dir", log_dir, &self.log_dir.source)?;
        line(f, "verbosity", quoted(self.verbosity.value.as_str()), &self.verbosity.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> ConfigFile {
        ConfigFile { path: PathBuf::from("dir/combtest.toml"), text: text.to_string() }
    }

    /// An environment holding exactly `vars`.
    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn no_env() -> impl Fn(&str) -> Option<String> {
        env(&[])
    }

    fn error(file_text: Option<&str>, vars: &[(&str, &str)]) -> ConfigError {
        let config = file_text.map(file);
        resolve(config.as_ref(), env(vars), &Overrides::default()).unwrap_err()
    }

    fn in_file() -> Source {
        Source::File(PathBuf::from("dir/combtest.toml"))
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let settings = resolve(None, no_env(), &Overrides::default()).unwrap();
        assert_eq!(settings.threads, Setting::default(None));
        assert_eq!(settings.nodes, Setting::default(vec![]));
        assert_eq!(settings.cookie, Setting::default(None));
        // No HOME in this environment: no default cookie file.
        assert_eq!(settings.cookie_file, Setting::default(None));
        let listen = HostPort { host: "127.0.0.1".into(), port: 7878 };
        assert_eq!(settings.listen, Setting::default(listen));
        assert_eq!(settings.batch_size, Setting::default(BatchSize::Auto));
        assert_eq!(settings.heartbeat_timeout, Setting::default(Duration::from_secs(10)));
        assert_eq!(settings.log_dir, Setting::default(None));
        assert_eq!(settings.verbosity, Setting::default(Verbosity::Warn));
    }

    #[test]
    fn command_line_beats_env_beats_file_beats_default() {
        let config = file(
            "threads = 2\nverbosity = \"info\"\nlog_dir = \"from-file\"\nnodes = [\"f:1\"]\n\
             heartbeat_timeout = \"2s\"",
        );
        let vars = [
            ("COMBTEST_THREADS", "3"),
            ("COMBTEST_VERBOSITY", "debug"),
            ("COMBTEST_NODES", "e:1,e:2"),
        ];
        let overrides = Overrides {
            threads: Some(4),
            log_dir: Some(PathBuf::from("from-flag")),
            ..Overrides::default()
        };
        let settings = resolve(Some(&config), env(&vars), &overrides).unwrap();
        // The command line beats the environment and the file.
        assert_eq!(settings.threads, Setting { value: Some(4), source: Source::CommandLine });
        let from_flag = Some(PathBuf::from("from-flag"));
        assert_eq!(settings.log_dir, Setting { value: from_flag, source: Source::CommandLine });
        // The environment beats the file.
        let env_debug = Source::Env("COMBTEST_VERBOSITY");
        assert_eq!(settings.verbosity, Setting { value: Verbosity::Debug, source: env_debug });
        let nodes: Vec<String> = settings.nodes.value.iter().map(ToString::to_string).collect();
        assert_eq!(
            (nodes, &settings.nodes.source),
            (vec!["e:1".into(), "e:2".into()], &Source::Env("COMBTEST_NODES"))
        );
        // The file beats the default.
        let two = Duration::from_secs(2);
        assert_eq!(settings.heartbeat_timeout, Setting { value: two, source: in_file() });
        assert_eq!(settings.listen.source, Source::Default);

        // Without the command line, the environment wins; without it, the file.
        let settings = resolve(Some(&config), env(&vars), &Overrides::default()).unwrap();
        let env_threads = Source::Env("COMBTEST_THREADS");
        assert_eq!(settings.threads, Setting { value: Some(3), source: env_threads });
        let settings = resolve(Some(&config), no_env(), &Overrides::default()).unwrap();
        assert_eq!(settings.threads, Setting { value: Some(2), source: in_file() });
        let file_dir = Some(PathBuf::from("from-file"));
        assert_eq!(settings.log_dir, Setting { value: file_dir, source: in_file() });
        assert_eq!(settings.verbosity, Setting { value: Verbosity::Info, source: in_file() });
    }

    #[test]
    fn every_setting_is_read_from_the_file_and_from_the_env() {
        let config = file(
            "threads = 8\nnodes = [\"10.0.0.2:7878\", \"[::1]:9\"]\ncookie = \"s3cret\"\n\
             cookie_file = \"secrets/cookie\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_ca = \"ca.pem\"\nlisten = \"0.0.0.0:0\"\nbatch_size = 64\nheartbeat_timeout = \"1m 30s\"\n\
             log_dir = \"logs\"\nverbosity = \"trace\"\n",
        );
        let settings = resolve(Some(&config), no_env(), &Overrides::default()).unwrap();
        assert_eq!(settings.threads.value, Some(8));
        assert_eq!(settings.nodes.value[1], HostPort { host: "::1".into(), port: 9 });
        assert_eq!(settings.nodes.value[1].to_string(), "[::1]:9");
        assert_eq!(settings.cookie.value.as_ref().map(Cookie::expose), Some("s3cret"));
        assert_eq!(settings.cookie_file.value, Some(PathBuf::from("secrets/cookie")));
        assert_eq!(settings.listen.value.to_string(), "0.0.0.0:0");
        let tls = (Path::new("c.pem"), Path::new("k.pem"), Path::new("ca.pem"));
        assert_eq!(settings.tls_files(), Some(tls));
        assert_eq!(settings.batch_size.value, BatchSize::Max(NonZeroU64::new(64).unwrap()));
        assert_eq!(settings.heartbeat_timeout.value, Duration::from_secs(90));
        assert_eq!(settings.log_dir.value, Some(PathBuf::from("logs")));
        assert_eq!(settings.verbosity.value, Verbosity::Trace);
        let vars: Vec<(&str, &str)> = vec![
            ("COMBTEST_THREADS", "8"),
            ("COMBTEST_NODES", " 10.0.0.2:7878 , [::1]:9"),
            ("COMBTEST_COOKIE", "s3cret"),
            ("COMBTEST_COOKIE_FILE", "secrets/cookie"),
            ("COMBTEST_TLS_CERT", "c.pem"),
            ("COMBTEST_TLS_KEY", "k.pem"),
            ("COMBTEST_TLS_CA", "ca.pem"),
            ("COMBTEST_LISTEN", "0.0.0.0:0"),
            ("COMBTEST_BATCH_SIZE", "64"),
            ("COMBTEST_HEARTBEAT_TIMEOUT", "1m 30s"),
            ("COMBTEST_LOG_DIR", "logs"),
            ("COMBTEST_VERBOSITY", "trace"),
        ];
        let from_env = resolve(None, env(&vars), &Overrides::default()).unwrap();
        assert_eq!(from_env.threads.value, settings.threads.value);
        assert_eq!(from_env.nodes.value, settings.nodes.value);
        assert_eq!(from_env.cookie.value, settings.cookie.value);
        assert_eq!(from_env.cookie_file.value, settings.cookie_file.value);
        assert_eq!(from_env.listen.value, settings.listen.value);
        assert_eq!(from_env.tls_files(), settings.tls_files());
        assert_eq!(from_env.batch_size.value, settings.batch_size.value);
        assert_eq!(from_env.heartbeat_timeout.value, settings.heartbeat_timeout.value);
        assert_eq!(from_env.log_dir.value, settings.log_dir.value);
        assert_eq!(from_env.verbosity.value, settings.verbosity.value);
        assert_eq!(from_env.verbosity.source, Source::Env("COMBTEST_VERBOSITY"));
    }

    #[test]
    fn the_help_example_is_a_valid_file_of_known_keys() {
        let example: String = HELP
            .split("Example combtest.toml:\n")
            .nth(1)
            .unwrap()
            .lines()
            .map(|l| format!("{}\n", l.trim()))
            .collect();
        resolve(Some(&file(&example)), no_env(), &Overrides::default()).unwrap();
        for key in KEYS {
            assert!(HELP.contains(&format!("\n  {key} ")), "{key} is explained");
        }
    }

    #[test]
    fn the_readme_example_sets_every_key() {
        let readme = include_str!("../../README.md");
        let example = readme.split("```toml\n").nth(1).unwrap().split("```").next().unwrap();
        let settings = resolve(Some(&file(example)), no_env(), &Overrides::default()).unwrap();
        assert!(settings.to_string().lines().all(|l| l.ends_with("(file dir/combtest.toml)")));
    }

    #[test]
    fn an_unknown_key_is_named_with_the_file_and_line() {
        let ConfigError::UnknownKey { key, path, line } =
            error(Some("threads = 2\nthread = 4"), &[])
        else {
            panic!("not an unknown key")
        };
        assert_eq!((key.as_str(), path, line), ("thread", PathBuf::from("dir/combtest.toml"), 2));
        let message = error(Some("[cluster]\nnodes = []"), &[]).to_string();
        assert!(
            message.contains("unknown key `cluster` in config file dir/combtest.toml"),
            "{message}"
        );
        assert!(message.contains("threads, nodes, ssh_hosts, ssh_options, cookie"), "{message}");
    }

    #[test]
    fn a_file_that_is_not_toml_is_a_parse_error_with_a_line() {
        let message = error(Some("threads = 2\nverbosity = "), &[]).to_string();
        assert!(
            message.starts_with("cannot parse config file dir/combtest.toml at line 2"),
            "{message}"
        );
        assert_eq!(message.lines().count(), 1, "{message}");
    }

    #[test]
    fn a_wrong_type_names_the_key_the_place_and_what_is_expected() {
        let message = error(Some("threads = \"4\""), &[]).to_string();
        assert_eq!(
            message,
            "invalid `threads` in config file dir/combtest.toml: expected an integer from 1 to \
             4096, found \"4\""
        );
        for bad in [
            "threads = 0",
            "threads = 5000",
            "threads = 2.0",
            "nodes = \"a:1\"",
            "nodes = [\"a\"]",
            "nodes = [\"a:0\"]",
            "listen = \"nope\"",
            "listen = \"a:b:1\"",
            "log_dir = \"\"",
            "cookie_file = \"\"",
            "cookie_file = 3",
            "verbosity = \"loud\"",
            "verbosity = 2",
        ] {
            let error = error(Some(bad), &[]);
            assert!(
                matches!(error, ConfigError::Invalid { ref origin, .. } if *origin == in_file()),
                "{bad}: {error}"
            );
        }
        let message = error(None, &[("COMBTEST_THREADS", "many")]).to_string();
        assert_eq!(
            message,
            "invalid `threads` in environment variable COMBTEST_THREADS: expected an integer from \
             1 to 4096, found \"many\""
        );
        let message = error(None, &[("COMBTEST_NODES", "a:1,,b:2")]).to_string();
        assert!(
            message.starts_with("invalid `nodes` in environment variable COMBTEST_NODES"),
            "{message}"
        );
    }

    #[test]
    fn tls_is_all_three_files_or_none() {
        let settings = resolve(None, no_env(), &Overrides::default()).unwrap();
        assert_eq!(settings.tls_files(), None);
        // Layers may be mixed: the command line, the environment, the file.
        let config = file("tls_ca = \"ca.pem\"");
        let vars = [("COMBTEST_TLS_KEY", "k.pem")];
        let overrides =
            Overrides { tls_cert: Some(PathBuf::from("c.pem")), ..Overrides::default() };
        let settings = resolve(Some(&config), env(&vars), &overrides).unwrap();
        let tls = (Path::new("c.pem"), Path::new("k.pem"), Path::new("ca.pem"));
        assert_eq!(settings.tls_files(), Some(tls));
        assert_eq!(settings.tls_cert.source, Source::CommandLine);
        assert_eq!(settings.tls_key.source, Source::Env("COMBTEST_TLS_KEY"));
        assert_eq!(settings.tls_ca.source, in_file());
        // Some but not all: one line naming what is missing and what is set.
        let message = resolve(Some(&config), no_env(), &overrides).unwrap_err().to_string();
        assert_eq!(
            message,
            "TLS needs all three of --tls-cert, --tls-key and --tls-ca (settings tls_cert, \
             tls_key, tls_ca): tls_key not set (tls_cert is set by command line, tls_ca is set \
             by file dir/combtest.toml)"
        );
        let message = error(None, &[("COMBTEST_TLS_CA", "ca.pem")]).to_string();
        assert!(message.contains("tls_cert and tls_key not set"), "{message}");
        let message = error(Some("tls_key = 3"), &[]).to_string();
        assert!(message.contains("expected a PEM file path"), "{message}");
    }

    #[test]
    fn a_bad_duration_is_refused() {
        for bad in ["\"10 parsecs\"", "\"0s\"", "10", "\"\""] {
            let message = error(Some(&format!("heartbeat_timeout = {bad}")), &[]).to_string();
            assert!(message.starts_with("invalid `heartbeat_timeout` in config file"), "{message}");
            assert!(message.contains("such as \"10s\""), "{message}");
        }
        let message = error(None, &[("COMBTEST_HEARTBEAT_TIMEOUT", "soon")]).to_string();
        assert!(message.contains("COMBTEST_HEARTBEAT_TIMEOUT") && message.contains("\"soon\""));
    }

    #[test]
    fn a_bad_batch_size_is_refused() {
        for bad in ["0", "-3", "\"big\"", "\"64\"", "\"Auto\"", "1.5"] {
            let message = error(Some(&format!("batch_size = {bad}")), &[]).to_string();
            let expected = "invalid `batch_size` in config file dir/combtest.toml: expected \
                \"auto\" or a positive integer, found";
            assert!(message.starts_with(expected), "{message}");
        }
        for bad in ["0", "-1", "lots", ""] {
            let message = error(None, &[("COMBTEST_BATCH_SIZE", bad)]).to_string();
            assert!(message.contains("COMBTEST_BATCH_SIZE"), "{message}");
        }
        let auto = resolve(None, env(&[("COMBTEST_BATCH_SIZE", "auto")]), &Overrides::default());
        assert_eq!(auto.unwrap().batch_size.value, BatchSize::Auto);
    }

    #[test]
    fn an_invalid_value_is_an_error_even_when_a_higher_layer_overrides_it() {
        let config = file("threads = \"x\"");
        let overrides = Overrides { threads: Some(2), ..Overrides::default() };
        let result = resolve(Some(&config), env(&[("COMBTEST_THREADS", "2")]), &overrides);
        assert!(matches!(result, Err(ConfigError::Invalid { key: "threads", .. })));
    }

    #[test]
    fn the_cookie_is_never_shown() {
        let vars = [("COMBTEST_COOKIE", "s3cret")];
        let settings = resolve(None, env(&vars), &Overrides::default()).unwrap();
        let text = settings.to_string();
        assert!(text.contains("cookie = \"****\" (env COMBTEST_COOKIE)\n"), "{text}");
        assert!(!text.contains("s3cret") && !format!("{settings:?}").contains("s3cret"));
        let message = error(Some("cookie = 12345"), &[]).to_string();
        assert!(
            message.ends_with("expected a non-empty string, found a TOML integer"),
            "{message}"
        );
        let message = error(None, &[("COMBTEST_COOKIE", "")]).to_string();
        assert!(message.ends_with("found an empty string"), "{message}");
    }

    #[test]
    fn settings_print_one_line_each_with_its_source() {
        let config = file("batch_size = 100\nlog_dir = \"logs\"");
        let vars = [("COMBTEST_NODES", "a:1,b:2")];
        let overrides = Overrides { verbosity: Verbosity::from_count(2), ..Overrides::default() };
        let text = resolve(Some(&config), env(&vars), &overrides).unwrap().to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), KEYS.len());
        assert!(
            lines[0].starts_with("threads = ")
                && lines[0].ends_with("(default: available parallelism)")
        );
        assert_eq!(
            lines[1..],
            [
                "nodes = [\"a:1\", \"b:2\"] (env COMBTEST_NODES)",
                "ssh_hosts = [] (default)",
                "ssh_options = [] (default)",
                "cookie = (not set) (default): no cookie file: HOME is not set; set --cookie, \
                 COMBTEST_COOKIE or COMBTEST_COOKIE_FILE",
                "cookie_file = (not set) (default)",
                "tls_cert = (not set) (default)",
                "tls_key = (not set) (default)",
                "tls_ca = (not set) (default)",
                "listen = \"127.0.0.1:7878\" (default)",
                "batch_size = 100 (file dir/combtest.toml)",
                "heartbeat_timeout = \"10s\" (default)",
                "log_dir = \"logs\" (file dir/combtest.toml)",
                "verbosity = \"debug\" (command line)",
            ]
        );
    }

    #[test]
    fn the_cookie_file_is_home_s_by_default_and_set_by_every_layer() {
        let home = [("HOME", "/home/u")];
        let settings = resolve(None, env(&home), &Overrides::default()).unwrap();
        let default = Some(PathBuf::from("/home/u/.combtest/cookie"));
        assert_eq!(settings.cookie_file, Setting::default(default));
        // An empty HOME is no home.
        let settings = resolve(None, env(&[("HOME", "")]), &Overrides::default()).unwrap();
        assert_eq!(settings.cookie_file, Setting::default(None));

        let config = file("cookie_file = \"from-file\"");
        let vars = [("HOME", "/home/u"), ("COMBTEST_COOKIE_FILE", "/from/env")];
        let overrides =
            Overrides { cookie_file: Some(PathBuf::from("from-flag")), ..Overrides::default() };
        let path = |p: &str| Some(PathBuf::from(p));
        let settings = resolve(Some(&config), env(&vars), &overrides).unwrap();
        let from_flag = Setting { value: path("from-flag"), source: Source::CommandLine };
        assert_eq!(settings.cookie_file, from_flag);
        let settings = resolve(Some(&config), env(&vars), &Overrides::default()).unwrap();
        let from_env =
            Setting { value: path("/from/env"), source: Source::Env("COMBTEST_COOKIE_FILE") };
        assert_eq!(settings.cookie_file, from_env);
        let settings = resolve(Some(&config), env(&home), &Overrides::default()).unwrap();
        assert_eq!(settings.cookie_file, Setting { value: path("from-file"), source: in_file() });
        // A relative path stays relative: to the working directory.
        assert_eq!(
            cookie::source(&settings).unwrap(),
            cookie::CookieSource::File("from-file".into())
        );

        let message = error(None, &[("COMBTEST_COOKIE_FILE", "")]).to_string();
        assert_eq!(
            message,
            "invalid `cookie_file` in environment variable COMBTEST_COOKIE_FILE: expected a file \
             path (a non-empty string), found \"\""
        );
    }

    #[test]
    fn config_names_the_cookie_in_force() {
        let line = |settings: &Settings, key: &str| {
            let text = settings.to_string();
            let prefix = format!("{key} = ");
            text.lines().find(|l| l.starts_with(&prefix)).unwrap().to_string()
        };
        // No cookie: the default file, named in the cookie line.
        let vars = [("HOME", "/home/u")];
        let settings = resolve(None, env(&vars), &Overrides::default()).unwrap();
        assert_eq!(
            line(&settings, "cookie"),
            "cookie = (not set) (default): the cookie file /home/u/.combtest/cookie is used"
        );
        assert_eq!(
            line(&settings, "cookie_file"),
            "cookie_file = \"/home/u/.combtest/cookie\" (default)"
        );
        let file_in_force = cookie::CookieSource::File("/home/u/.combtest/cookie".into());
        assert_eq!(cookie::source(&settings).unwrap(), file_in_force);

        // No cookie, a cookie file set: that file.
        let vars = [("HOME", "/home/u"), ("COMBTEST_COOKIE_FILE", "/etc/combtest/cookie")];
        let settings = resolve(None, env(&vars), &Overrides::default()).unwrap();
        assert_eq!(
            line(&settings, "cookie"),
            "cookie = (not set) (default): the cookie file /etc/combtest/cookie is used"
        );
        assert_eq!(
            line(&settings, "cookie_file"),
            "cookie_file = \"/etc/combtest/cookie\" (env COMBTEST_COOKIE_FILE)"
        );

        // A cookie set anywhere wins over the file, which stays listed.
        let config = file("cookie = \"s3cret\"");
        let settings = resolve(Some(&config), env(&vars), &Overrides::default()).unwrap();
        assert_eq!(line(&settings, "cookie"), "cookie = \"****\" (file dir/combtest.toml)");
        assert_eq!(cookie::source(&settings).unwrap(), cookie::CookieSource::Given(in_file()));
        let (secret, source) = cookie::in_force(&settings).unwrap();
        assert_eq!((secret.expose(), source), ("s3cret", cookie::CookieSource::Given(in_file())));
        assert!(!settings.to_string().contains("s3cret"));

        // No cookie and no HOME: the line says what to set.
        let settings = resolve(None, no_env(), &Overrides::default()).unwrap();
        assert!(matches!(cookie::source(&settings), Err(cookie::CookieError::NoHome)));
        assert!(matches!(cookie::in_force(&settings), Err(cookie::CookieError::NoHome)));
    }

    #[test]
    fn the_cookie_in_force_without_a_cookie_is_the_file_s_created_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cookie");
        let vars = [("COMBTEST_COOKIE_FILE", path.to_str().unwrap())];
        let settings = resolve(None, env(&vars), &Overrides::default()).unwrap();
        // Printing the settings does not create the file.
        let _ = settings.to_string();
        assert!(!path.exists());
        let (secret, source) = cookie::in_force(&settings).unwrap();
        assert_eq!(source, cookie::CookieSource::File(path.clone()));
        assert_eq!(cookie::load_or_create(&path).unwrap(), secret);
        assert_eq!(cookie::in_force(&settings).unwrap().0, secret);
    }

    #[test]
    fn verbose_counts_map_to_levels() {
        assert_eq!(Verbosity::from_count(0), None);
        assert_eq!(Verbosity::from_count(1), Some(Verbosity::Info));
        assert_eq!(Verbosity::from_count(3), Some(Verbosity::Trace));
        assert_eq!(Verbosity::from_count(9), Some(Verbosity::Trace));
        assert!(Verbosity::Warn < Verbosity::Info && Verbosity::Debug < Verbosity::Trace);
    }
}
