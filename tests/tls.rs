//! TLS between coordinator and nodes, with real `serve` processes on
//! 127.0.0.1 and certificates made here (rcgen): a TLS cluster gives the
//! in-process report; certificates of another CA, expired or for another
//! address are refused with one line on each side; a silent connection is
//! closed at the authentication deadline with TLS on too; the bytes on the
//! wire (through an in-test relay) hold the suite's option values without
//! TLS and not with it; bad flags and files are exit code 2 with one line.
//! Every process is killed when its guard drops; every wait is bounded.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, date_time_ymd,
};

mod common;
use common::procs::{NODE, Proc, coordinate, finish, json, serve, spawn_coordinator, start};

/// A CA of the test's own, writing its certificates into a temp dir.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
}

/// A certificate, its key and the CA that signed it, as files: the three
/// `--tls-*` flags.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Files {
    fn flags(&self) -> Vec<String> {
        let path = |p: &Path| p.to_str().unwrap().to_string();
        vec![
            "--tls-cert".into(),
            path(&self.cert),
            "--tls-key".into(),
            path(&self.key),
            "--tls-ca".into(),
            path(&self.ca),
        ]
    }

    /// The same certificate and key, checking peers against `ca`'s CA.
    fn trusting(&self, ca: &Ca) -> Files {
        Files { cert: self.cert.clone(), key: self.key.clone(), ca: ca.file() }
    }
}

/// How a certificate differs from a good one.
#[derive(Clone, Copy)]
enum Flaw {
    None,
    Expired,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca = Ca { issuer, dir: dir.to_path_buf(), name: name.to_string() };
        std::fs::write(ca.file(), ca.issuer.pem()).unwrap();
        ca
    }

    fn file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A certificate for `names` (IP addresses or DNS names), good for a
    /// node and a coordinator alike.
    fn issue(&self, who: &str, names: &[&str], flaw: Flaw) -> Files {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, who);
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        if let Flaw::Expired = flaw {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let base = self.dir.join(format!("{}-{who}", self.name));
        let files = Files {
            cert: base.with_extension("pem"),
            key: base.with_extension("key"),
            ca: self.file(),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}

/// A node serving with `files` (and `extra` flags), logging at info.
fn tls_node(files: &Files, extra: &[&str]) -> (Proc, String) {
    let flags = files.flags();
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    serve(Path::new(NODE), &args, &[("COMBTEST_LOG", "info")])
}

/// `run --suite SUITE --nodes NODES` with `files` (if any) and `extra`.
fn run(
    suite: &str,
    nodes: &str,
    files: Option<&Files>,
    extra: &[&str],
) -> (Option<i32>, String, String) {
    let flags = files.map(Files::flags).unwrap_or_default();
    let mut args = vec!["run", "--suite", suite, "--nodes", nodes];
    args.extend(flags.iter().map(String::as_str));
    args.extend_from_slice(extra);
    coordinate(Path::new(NODE), &args)
}

/// A cluster run's JSON report `there` has the counts of the in-process
/// run of `demo`.
fn same_counts_as_in_process_demo(there: &serde_json::Value) {
    let (code, out, err) = coordinate(Path::new(NODE), &["run", "--suite", "demo", "--json"]);
    assert_eq!(code, Some(1), "{out}{err}"); // demo has 2 failing walks
    let here = json(&out);
    for key in ["walks", "passed", "failed", "cancelled", "pruned", "aborted", "segments"] {
        assert_eq!(there[key], here[key], "{key}: {there} vs {here}");
    }
}

/// The one `error:` line of a coordinator's stderr.
fn error_line(err: &str) -> &str {
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    errors[0]
}

#[test]
fn a_tls_cluster_gives_the_in_process_report() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "one");
    let (first, a) = tls_node(&ca.issue("node-a", &["127.0.0.1"], Flaw::None), &[]);
    let (second, b) = tls_node(&ca.issue("node-b", &["127.0.0.1"], Flaw::None), &[]);
    let coordinator = ca.issue("coordinator", &["coordinator.test"], Flaw::None);
    let nodes = format!("{a},{b}");
    let (code, out, err) =
        run("demo", &nodes, Some(&coordinator), &["--batch-size", "3", "--json"]);
    assert_eq!(code, Some(1), "{out}{err}"); // demo has 2 failing walks
    same_counts_as_in_process_demo(&json(&out));
    // Both nodes ran walks, over TLS: each authenticated the coordinator.
    for node in [&first, &second] {
        let log = node.wait_stderr("coordinator authenticated");
        assert!(log.contains("run opened"), "{log}");
        assert!(!log.contains("refused a connection"), "{log}");
    }
    // A soak over TLS: every round on the same sessions.
    let flags = coordinator.flags();
    let tls: Vec<&str> = flags.iter().map(String::as_str).collect();
    let soak =
        [&["soak", "--suite", "smoke", "--nodes", &nodes, "--rounds", "3", "--json"], &tls[..]];
    let (code, out, err) = coordinate(Path::new(NODE), &soak.concat());
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(json(&out)["totals"]["walks"], 27, "{out}");
    // `--local-nodes` children are reached on loopback without TLS, even
    // when they inherit TLS settings from the environment.
    let local = [&["run", "--suite", "smoke", "--local-nodes", "1"], &tls[..]].concat();
    let (code, out, err) = coordinate(Path::new(NODE), &local);
    assert_eq!(code, Some(0), "{out}{err}");
    let vars =
        [("COMBTEST_TLS_CERT", tls[1]), ("COMBTEST_TLS_KEY", tls[3]), ("COMBTEST_TLS_CA", tls[5])];
    let child = spawn_coordinator(Path::new(NODE), &local[..5], &vars);
    let (code, out, err) = finish(child);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("passed 9"), "{out}");

    // The cookie still runs inside TLS: a good certificate with the wrong
    // cookie is refused as before.
    let (code, out, err) = run("smoke", &a, Some(&coordinator), &["--cookie", "wrong"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(error_line(&err).contains("the cookies differ"), "{err}");
}

/// A node with `node_files` refuses a run of a coordinator with
/// `coordinator`, or is refused by it: exit code 2, `error` (`ADDR` for the
/// node's address) as the coordinator's one error line, `logged` in the
/// node's log. The node, still serving, and its address.
fn refused(node_files: &Files, coordinator: &Files, error: &str, logged: &str) -> (Proc, String) {
    let (node, address) = tls_node(node_files, &[]);
    let (code, out, err) = run("smoke", &address, Some(coordinator), &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert_eq!(error_line(&err), error.replace("ADDR", &address));
    let log = node.wait_stderr(logged);
    let line = log.lines().find(|l| l.contains(logged)).unwrap();
    assert!(line.contains("refused a connection from 127.0.0.1:"), "{line}");
    (node, address)
}

#[test]
fn a_certificate_from_another_ca_is_refused_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Ca::new(dir.path(), "ours");
    let theirs = Ca::new(dir.path(), "theirs");
    let coordinator = ours.issue("coordinator", &["coordinator.test"], Flaw::None);

    // The node's certificate is of another CA (it trusts ours): the
    // coordinator refuses it.
    refused(
        &theirs.issue("stranger", &["127.0.0.1"], Flaw::None).trusting(&ours),
        &coordinator,
        "error: TLS with node ADDR failed: its certificate is not signed by the --tls-ca CA \
         (unknown issuer)",
        "TLS: the peer refused our certificate: our certificate is not signed by its --tls-ca \
         CA (alert: UnknownCA)",
    );

    // The coordinator's certificate is of another CA: the node refuses it,
    // says so, and goes on serving.
    let (node, address) = refused(
        &ours.issue("node", &["127.0.0.1"], Flaw::None),
        &theirs.issue("impostor", &["impostor.test"], Flaw::None).trusting(&ours),
        "error: node ADDR refused our TLS certificate: our certificate is not signed by its \
         --tls-ca CA (alert: UnknownCA)",
        "TLS: its certificate is not signed by the --tls-ca CA (unknown issuer)",
    );
    let (code, out, err) = run("smoke", &address, Some(&coordinator), &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("passed 9"), "{out}");
    assert_eq!(node.stderr().matches("refused a connection").count(), 1, "{}", node.stderr());

    // A TLS coordinator and a node without TLS: each says what it saw.
    let (plain, plain_address) = serve(Path::new(NODE), &[], &[("COMBTEST_LOG", "info")]);
    let (code, out, err) = run("smoke", &plain_address, Some(&coordinator), &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    let line = error_line(&err);
    assert!(line.contains("closed the connection during the TLS handshake"), "{line}");
    assert!(line.contains("or it runs without --tls-*"), "{line}");
    plain.wait_stderr("it started a TLS handshake: this node runs without TLS");
    drop(plain);

    // A coordinator without TLS is refused too (it is not a TLS client).
    let (code, out, err) = run("smoke", &address, None, &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    error_line(&err);
    node.wait_stderr("TLS: not a TLS peer");
}

#[test]
fn expired_and_misnamed_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "one");
    let coordinator = ca.issue("coordinator", &["coordinator.test"], Flaw::None);
    // The node's certificate expired.
    refused(
        &ca.issue("old-node", &["127.0.0.1"], Flaw::Expired),
        &coordinator,
        "error: TLS with node ADDR failed: its certificate has expired (valid until \
         2001-01-01T00:00:00Z)",
        "TLS: the peer refused our certificate: our certificate has expired (alert: \
         CertificateExpired)",
    );
    // The node's certificate names another address.
    refused(
        &ca.issue("elsewhere", &["10.9.9.9"], Flaw::None),
        &coordinator,
        "error: TLS with node ADDR failed: its certificate is not valid for 127.0.0.1 (it names \
         10.9.9.9)",
        "TLS: the peer refused our certificate: our certificate is not valid for it (alert: \
         BadCertificate)",
    );
    // The coordinator's certificate expired: the node refuses it.
    refused(
        &ca.issue("node", &["127.0.0.1"], Flaw::None),
        &ca.issue("old-coordinator", &["coordinator.test"], Flaw::Expired),
        "error: node ADDR refused our TLS certificate: our certificate has expired (alert: \
         CertificateExpired)",
        "TLS: its certificate has expired (valid until 2001-01-01T00:00:00Z)",
    );
}

/// A rustls client configuration from `files`, for a hand-made connection.
fn client_config(files: &Files) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&files.ca).unwrap()).unwrap();
    let chain = vec![CertificateDer::from_pem_file(&files.cert).unwrap()];
    let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

#[test]
fn silent_connections_with_tls_are_closed_at_the_deadline() {
    // tests/faults.rs's silent connections, with TLS on: the handshake runs
    // under the same authentication deadline and pending cap. One pending
    // connection at most: each silent one must give its slot back for the
    // real run at the end to get in.
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "one");
    let node_files = ca.issue("node", &["127.0.0.1"], Flaw::None);
    let extra = ["--auth-timeout", "1s", "--max-pending", "1"];
    let (node, address) = tls_node(&node_files, &extra);

    // Silent before TLS: never sends its hello.
    let mut silent = std::net::TcpStream::connect(&address).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let closed = silent.read(&mut [0; 8]);
    assert!(matches!(closed, Ok(0) | Err(_)), "closed by the node: {closed:?}");
    node.wait_stderr("TLS: no handshake within 1s");

    // Silent after TLS: a good handshake, then nothing.
    let coordinator = ca.issue("coordinator", &["coordinator.test"], Flaw::None);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use tokio::io::AsyncReadExt as _;
        let connector = tokio_rustls::TlsConnector::from(client_config(&coordinator));
        let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut stream = connector.connect(name, tcp).await.expect("the handshake succeeds");
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut [0; 8])).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "closed by the node: {read:?}");
    });
    node.wait_stderr("no authentication within 1s");

    // Both slots were given back: a real run gets in.
    let (code, out, err) = run("smoke", &address, Some(&coordinator), &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("passed 9"), "{out}");
    assert!(!node.stderr().contains("refusing connections"), "{}", node.stderr());
    drop(node);

    // tests/faults.rs's flood, with TLS: a node with 64 file descriptors,
    // more silent connections than that, and a real TLS run still gets in.
    let flags = node_files.flags().join(" ");
    let script = format!(
        "ulimit -n 64 && exec {NODE} serve --listen 127.0.0.1:0 --threads 1 --auth-timeout 1s \
         {flags}"
    );
    let mut command = std::process::Command::new("sh");
    command.args(["-c", &script]);
    let node = start(command);
    let address = node.line().split_whitespace().nth(3).unwrap().to_string();
    let silent: Vec<std::net::TcpStream> =
        (0..200).filter_map(|_| std::net::TcpStream::connect(&address).ok()).collect();
    assert!(silent.len() >= 64, "{} silent connections", silent.len());
    let (code, out, err) = run("smoke", &address, Some(&coordinator), &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("passed 9"), "{out}");
    drop(silent);
    node.wait_stderr("refusing connections");
    node.wait_stderr("TLS: no handshake within 1s");
}

/// A TCP relay on 127.0.0.1 to `target`, on a runtime of its own: its
/// address, and every byte it carried (both ways).
fn relay(runtime: &tokio::runtime::Runtime, target: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let recorded = Arc::clone(&seen);
    runtime.spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else { return };
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else { return };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            for (mut from, mut to) in [(client_read, server_write), (server_read, client_write)] {
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let mut buffer = vec![0; 64 << 10];
                    while let Ok(n @ 1..) = from.read(&mut buffer).await {
                        recorded.lock().unwrap().extend_from_slice(&buffer[..n]);
                        if to.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown().await;
                });
            }
        }
    });
    (address, seen)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn option_values_cross_the_wire_in_plain_text_only_without_tls() {
    // `demo` traced: the node encodes each failed and cancelled walk's
    // record, with its options' values ("Voucher", "Guest"), and sends it
    // to the coordinator. A relay between them sees those bytes.
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "one");
    let coordinator = ca.issue("coordinator", &["coordinator.test"], Flaw::None);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let traced = ["--json", "--log-dir", logs.path().to_str().unwrap()];
    let markers: [&[u8]; 2] = [b"\"Voucher\"", b"\"Guest\""];

    let (_plain, address) = serve(Path::new(NODE), &[], &[]);
    let (through, seen) = relay(&runtime, address);
    let (code, out, err) = run("demo", &through, None, &traced);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(json(&out)["failed"], 2, "{out}");
    let plain = seen.lock().unwrap().clone();
    for marker in markers {
        assert!(contains(&plain, marker), "{} not on the wire", String::from_utf8_lossy(marker));
    }

    let (_node, address) = tls_node(&ca.issue("node", &["127.0.0.1"], Flaw::None), &[]);
    let (through, seen) = relay(&runtime, address);
    let (code, out, err) = run("demo", &through, Some(&coordinator), &traced);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(json(&out)["failed"], 2, "{out}");
    let encrypted = seen.lock().unwrap().clone();
    assert!(encrypted.len() > plain.len() / 2, "the TLS run crossed the relay too");
    for marker in markers {
        assert!(!contains(&encrypted, marker), "{} in plain text", String::from_utf8_lossy(marker));
    }
    assert!(!contains(&encrypted, b"charged"), "a failure's text in plain text");
}

#[test]
fn tls_flag_and_file_errors_are_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "one");
    let good = ca.issue("node", &["127.0.0.1"], Flaw::None);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let p = |path: &Path| path.to_str().unwrap().to_string();
    let one_error = |args: &[&str], needle: &str| {
        let (code, out, err) = coordinate(Path::new(NODE), args);
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{args:?}: {err}");
        assert!(!out.contains("passed"), "{args:?}: no walk ran: {out}");
        assert!(!out.contains("serving on"), "{args:?}: the node did not listen: {out}");
    };
    let (cert, key, ca_file) = (p(&good.cert), p(&good.key), p(&good.ca));
    // Only some of the three.
    let some = ["run", "--suite", "smoke", "--tls-cert", &cert];
    one_error(&some, "TLS needs all three of --tls-cert, --tls-key and --tls-ca");
    let some = ["serve", "--listen", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &key];
    one_error(&some, "tls_ca not set (tls_cert is set by command line, tls_key is set by");
    // A file missing, one of garbage: named, before anything runs.
    let (missing, garbage) = (p(&missing), p(&garbage));
    for command in
        [&["run", "--suite", "smoke"][..], &["soak", "--suite", "smoke", "--rounds", "1"]]
    {
        let args =
            [command, &["--tls-cert", &missing, "--tls-key", &key, "--tls-ca", &ca_file]].concat();
        one_error(&args, &format!("TLS certificate {missing}: cannot read it"));
        let args =
            [command, &["--tls-cert", &cert, "--tls-key", &garbage, "--tls-ca", &ca_file]].concat();
        one_error(&args, &format!("TLS key {garbage}: no PEM private key in it"));
    }
    let serve = ["serve", "--listen", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &key];
    let args = [&serve[..], &["--tls-ca", &garbage]].concat();
    one_error(&args, &format!("TLS CA {garbage}: no PEM certificate in it"));
    // A key of another certificate.
    let other = p(&ca.issue("other", &["127.0.0.1"], Flaw::None).key);
    let args =
        [&serve[..3], &["--tls-cert", &cert, "--tls-key", &other, "--tls-ca", &ca_file]].concat();
    one_error(&args, "is not the key of the certificate");

    // The same keys in combtest.toml; the command line beats the file.
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("combtest.toml"), format!("tls_cert = {cert:?}\n")).unwrap();
    let output = common::node_in(work.path(), &[], &["run", "--suite", "smoke"]);
    assert_eq!(output.status.code(), Some(2));
    let err = common::stderr(&output);
    assert!(err.contains("tls_key and tls_ca not set (tls_cert is set by file"), "{err}");
    let toml = format!("tls_cert = {missing:?}\ntls_key = {key:?}\ntls_ca = {ca_file:?}\n");
    std::fs::write(work.path().join("combtest.toml"), toml).unwrap();
    let output = common::node_in(work.path(), &[], &["run", "--suite", "smoke"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(common::stderr(&output).contains("cannot read it"));
    let output =
        common::node_in(work.path(), &[], &["run", "--suite", "smoke", "--tls-cert", &cert]);
    assert_eq!(output.status.code(), Some(0), "{}", common::stderr(&output));
    let output = common::node_in(work.path(), &[], &["config"]);
    let shown = common::stdout(&output);
    assert!(shown.contains(&format!("tls_key = {key:?} (file combtest.toml)")), "{shown}");

    // --help explains each flag.
    for command in ["run", "soak", "serve"] {
        let output = common::node(&[command, "--help"]);
        let help = common::stdout(&output);
        for flag in ["--tls-cert <PATH>", "--tls-key <PATH>", "--tls-ca <PATH>"] {
            assert!(help.contains(flag), "{command} --help: {help}");
        }
        assert!(help.contains("must be signed by"), "{help}");
    }
}

#[test]
fn a_node_off_loopback_warns_without_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "one");
    let files = ca.issue("node", &["127.0.0.1"], Flaw::None);
    let mut command = std::process::Command::new(NODE);
    command.args(["serve", "--listen", "0.0.0.0:0"]);
    let plain = start(command);
    plain.line();
    let warning = plain.wait_stderr("without TLS");
    assert_eq!(warning.lines().count(), 1, "{warning}");
    assert!(warning.contains("readable on the network"), "{warning}");
    drop(plain);
    // With TLS: no warning. Its whole stderr, up to its ready line and a
    // kill, read to the end.
    let mut child = std::process::Command::new(NODE)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .args(files.flags())
        .env("COMBTEST_COOKIE_FILE", common::cookie_file())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = common::procs::lines(child.stdout.take().unwrap());
    let ready = stdout.recv_timeout(common::procs::BOUND).unwrap();
    assert!(ready.starts_with("combtest-node serving on 0.0.0.0:"), "{ready}");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!err.contains("without TLS"), "{err}");
}

/// Nodes started over SSH (a real sshd on 127.0.0.1) with TLS on: each is
/// given the coordinator's TLS files and dialled with TLS even on
/// loopback (a node given the files takes TLS only, so the run getting
/// through shows both sides spoke it), and the report is the in-process
/// one. Needs root and sshd; skips with a message elsewhere.
#[test]
fn nodes_started_over_ssh_are_given_the_tls_files_and_dialled_with_tls() {
    use common::sshd::{Alias, Keys, Sshd, client_config, cmdline, nodes_below};
    let keys = Keys::new();
    let Some(sshd) = Sshd::start(&keys) else { return };
    let alias = |name| Alias { name, address: "127.0.0.1", port: sshd.port, key: "id" };
    let config = client_config(&keys, &[alias("h1"), alias("h2")]);
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "one");
    // One certificate for every process here: the nodes are all on
    // 127.0.0.1, and each host reads the same paths.
    let files = ca.issue("cluster", &["127.0.0.1"], Flaw::None);
    let flags = files.flags();
    let mut args = vec!["run", "--suite", "demo", "--ssh", "h1,h2", "--json"];
    args.extend(flags.iter().map(String::as_str));
    let options = format!("-F {}", config.display());
    let coordinator =
        spawn_coordinator(Path::new(NODE), &args, &[("COMBTEST_SSH_OPTIONS", options.as_str())]);
    // While it runs or once it ended, the nodes' command lines carry the
    // TLS flags (looked up under sshd; nodes may already be gone).
    let seen: Vec<Vec<String>> = nodes_below(sshd.pid()).into_iter().map(cmdline).collect();
    let (code, out, err) = finish(coordinator);
    assert_eq!(code, Some(1), "{out}{err}"); // demo has 2 failing walks
    assert!(!err.contains("not encrypted"), "loopback hosts: no warning: {err}");
    same_counts_as_in_process_demo(&json(&out));
    for line in seen.iter().filter(|line| line.iter().any(|w| w == "serve")) {
        let ca_path = files.ca.to_str().unwrap();
        assert!(line.windows(2).any(|w| w[0] == "--tls-ca" && w[1] == ca_path), "{line:?}");
    }
}
