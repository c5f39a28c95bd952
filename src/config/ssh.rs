//! The SSH settings: `ssh_hosts` (the hosts `run`/`soak` start nodes on
//! through `ssh`, each `[USER@]HOST[:PORT]` or a table with `host`, `user`,
//! `port` and `identity`) and `ssh_options` (words added to every `ssh`
//! command, such as `-F PATH`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use toml::Value;

use super::{InvalidValue, Kind};

/// One host to start a node on over SSH. Anything not given here comes
/// from the user's ssh configuration (`~/.ssh/config`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SshHost {
    /// The host as ssh knows it: a name, an address or a `Host` alias.
    pub host: String,
    /// The remote user (`ssh -l`).
    pub user: Option<String>,
    /// The remote sshd's port (`ssh -p`).
    pub port: Option<u16>,
    /// The private key to use (`ssh -i`).
    pub identity: Option<PathBuf>,
}

impl SshHost {
    /// A host by name, everything else from the ssh configuration.
    pub fn new(host: impl Into<String>) -> Self {
        SshHost { host: host.into(), user: None, port: None, identity: None }
    }
}

const EXPECTED: &str = "[USER@]HOST[:PORT], such as \"node1\" or \"me@10.0.0.2:2222\"";

impl FromStr for SshHost {
    type Err = InvalidValue;
    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        let invalid = InvalidValue { expected: EXPECTED };
        let (user, rest) = match text.split_once('@') {
            Some((user, rest)) if !user.is_empty() => (Some(user.to_string()), rest),
            Some(_) => return Err(invalid),
            None => (None, text),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse().map_err(|_| invalid.clone())?)),
            None => (rest, None),
        };
        let bad = |c: char| c.is_whitespace() || matches!(c, ',' | '@' | ':' | '/' | '\'');
        if host.is_empty() || host.starts_with('-') || host.contains(bad) || port == Some(0) {
            return Err(invalid);
        }
        Ok(SshHost { host: host.to_string(), user, port, identity: None })
    }
}

impl fmt::Display for SshHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        if let Some(identity) = &self.identity {
            write!(f, " (identity {})", identity.display())?;
        }
        Ok(())
    }
}

/// A host as `config` prints it: a TOML string, or an inline table when
/// it has an identity.
pub(super) fn host_toml(host: &SshHost) -> String {
    let text = |s: &str| Value::String(s.to_string()).to_string();
    let Some(identity) = &host.identity else {
        return text(&host.to_string());
    };
    let mut fields = vec![format!("host = {}", text(&host.host))];
    if let Some(user) = &host.user {
        fields.push(format!("user = {}", text(user)));
    }
    if let Some(port) = host.port {
        fields.push(format!("port = {port}"));
    }
    fields.push(format!("identity = {}", text(&identity.to_string_lossy())));
    format!("{{ {} }}", fields.join(", "))
}

/// A host of the file's `ssh_hosts`: a string, or a table.
fn host_of(value: &Value) -> Option<SshHost> {
    if let Some(text) = value.as_str() {
        return text.parse().ok();
    }
    let table = value.as_table()?;
    if table.keys().any(|k| !matches!(k.as_str(), "host" | "user" | "port" | "identity")) {
        return None;
    }
    let mut host: SshHost = table.get("host")?.as_str()?.parse().ok()?;
    if let Some(user) = table.get("user") {
        host.user = Some(user.as_str().filter(|u| !u.is_empty())?.to_string());
    }
    if let Some(port) = table.get("port") {
        host.port = Some(u16::try_from(port.as_integer()?).ok().filter(|&p| p != 0)?);
    }
    if let Some(identity) = table.get("identity") {
        host.identity = Some(PathBuf::from(identity.as_str().filter(|i| !i.is_empty())?));
    }
    Some(host)
}

pub(super) fn hosts_kind() -> Kind<Vec<SshHost>> {
    Kind {
        expected: "a list of hosts: \"[USER@]HOST[:PORT]\" strings or tables with `host` and \
            optionally `user`, `port` and `identity` (a TOML array in a file, separated by \
            commas in the environment)"
            .to_string(),
        env: |text| match text.trim() {
            "" => Some(Vec::new()),
            list => list.split(',').map(|h| h.trim().parse().ok()).collect(),
        },
        file: |value| value.as_array()?.iter().map(host_of).collect(),
        secret: false,
    }
}

pub(super) fn options_kind() -> Kind<Vec<String>> {
    Kind {
        expected: "a list of words given to every ssh command, such as [\"-F\", \"ssh_config\"] \
            (a TOML array of strings in a file, separated by spaces in the environment)"
            .to_string(),
        env: |text| Some(text.split_whitespace().map(str::to_string).collect()),
        file: |value| value.as_array()?.iter().map(|v| v.as_str().map(str::to_string)).collect(),
        secret: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_reads_user_host_and_port() {
        let host: SshHost = "me@10.0.0.2:2222".parse().unwrap();
        assert_eq!(host.user.as_deref(), Some("me"));
        assert_eq!((host.host.as_str(), host.port), ("10.0.0.2", Some(2222)));
        assert_eq!(host.to_string(), "me@10.0.0.2:2222");
        assert_eq!("node1".parse::<SshHost>().unwrap(), SshHost::new("node1"));
        for bad in ["", "@h", "h:0", "h:x", "-oProxyCommand=x", "a b", "h'"] {
            assert!(bad.parse::<SshHost>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_file_host_is_a_string_or_a_table() {
        let value: Value = toml::from_str::<toml::Table>(
            "h = [\"a\", { host = \"b\", user = \"u\", port = 2, identity = \"/k\" }]",
        )
        .unwrap()["h"]
            .clone();
        let hosts = (hosts_kind().file)(&value).unwrap();
        assert_eq!(hosts[0], SshHost::new("a"));
        assert_eq!(hosts[1].identity, Some(PathBuf::from("/k")));
        assert_eq!(hosts[1].to_string(), "u@b:2 (identity /k)");
        assert_eq!(host_toml(&hosts[0]), "\"a\"");
        assert_eq!(
            host_toml(&hosts[1]),
            "{ host = \"b\", user = \"u\", port = 2, identity = \"/k\" }"
        );
        let bad: Value = toml::from_str::<toml::Table>("h = [{ host = \"b\", pass = \"x\" }]")
            .unwrap()["h"]
            .clone();
        assert!((hosts_kind().file)(&bad).is_none());
    }
}
