//! The TLS workload (issue 18): N1, the same traced cluster run on one
//! node without TLS and on one node with TLS, alternated in one child
//! process (P T P T ...), so the TLS cost is a ratio of same-moment runs.
//! The suite is `Add x5, AddCancelOrFail`: 10^6 walks, a tenth of them
//! cancelled, so each run sends 10^5 walk records (with their options;
//! `trace_mb` of them) from the node to the coordinator besides the
//! batches. Each round opens a fresh
//! `Cluster` (connection, TLS handshake, cookie, join: `open_ms`), runs the
//! suite (`elapsed_s`) and closes it.
//!
//! The nodes are this bench binary itself (`throughput --node [CERT KEY
//! CA]`), serving the workload's suite on 127.0.0.1 with 2 runner threads;
//! they are killed when the child ends. Certificates are made by rcgen.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use combtest::WalkOrder;
use combtest::cluster::{Cluster, ClusterOptions, ServeOptions, Tls};
use combtest::suites::{Fixture, Suite, SuiteOptions};
use serde_json::{Value, json};

use super::{Add, AddCancelOrFail, K, result, timed};

/// The cookie of the workload's nodes.
const COOKIE: &str = "bench-tls";
/// The suite's walks.
const WALKS: u64 = 1_000_000;
/// Rounds: each runs the suite once without TLS and once with it.
const ROUNDS: usize = 5;

fn suite() -> Box<dyn Suite> {
    let order = WalkOrder::<K>::new()
        .then::<Add<1, 10>>()
        .then::<Add<2, 10>>()
        .then::<Add<3, 10>>()
        .then::<Add<4, 10>>()
        .then::<Add<5, 10>>()
        .then::<AddCancelOrFail>();
    combtest::suites::suite("wire", "N1: 10^6 walks, a tenth cancelled", order, || {
        Ok(Fixture::new(K::default()))
    })
}

/// `throughput --node [CERT KEY CA]`: a node serving the workload's suite
/// until it is killed.
pub(super) fn node(args: &[String]) {
    let mut options = ServeOptions::new("127.0.0.1:0", COOKIE);
    options.threads = Some(2);
    if let [cert, key, ca] = args {
        let tls = Tls::load(Path::new(cert), Path::new(key), Path::new(ca));
        options.tls = Some(tls.expect("the bench's certificates load"));
    }
    let served = combtest::cluster::serve(vec![suite()], options);
    panic!("the node stopped: {served:?}");
}

/// A node process, killed on drop.
struct NodeProc {
    child: Child,
    address: String,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(tls: Option<&[PathBuf; 3]>) -> NodeProc {
    let exe = std::env::current_exe().expect("the bench knows its own path");
    let mut command = Command::new(exe);
    command.arg("--node").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    if let Some(files) = tls {
        command.args(files);
    }
    let mut child = command.spawn().expect("the node starts");
    let stdout = child.stdout.take().expect("piped");
    let mut ready = String::new();
    std::io::BufReader::new(stdout).read_line(&mut ready).expect("the ready line");
    let address = ready
        .strip_prefix("combtest-node serving on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("not a ready line: {ready:?}"))
        .to_string();
    NodeProc { child, address }
}

/// One CA, a node certificate for 127.0.0.1 and a coordinator certificate,
/// as `[cert, key, ca]` files in `dir`.
fn certificates(dir: &Path) -> ([PathBuf; 3], [PathBuf; 3]) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, KeyUsagePurpose,
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let issue = |who: &str, name: &str| {
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let (cert_file, key_file) =
            (dir.join(format!("{who}.pem")), dir.join(format!("{who}.key")));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        [cert_file, key_file, ca_file.clone()]
    };
    (issue("node", "127.0.0.1"), issue("coordinator", "coordinator.bench"))
}

/// One round on `node`: the open's and the run's elapsed seconds, and the
/// MB of trace lines the node sent.
fn round(suite: &dyn Suite, node: &NodeProc, tls: Option<&Tls>, logs: &Path) -> (f64, f64, f64) {
    let mut options = ClusterOptions::nodes([node.address.clone()]).cookie(COOKIE);
    if let Some(tls) = tls {
        options = options.tls(tls.clone());
    }
    let (cluster, open_s) = timed(|| Cluster::open(options).expect("the cluster opens"));
    let mut run = SuiteOptions::default();
    run.cluster = Some(cluster.clone());
    run.log_dir = Some(logs.to_path_buf());
    let (report, run_s) = timed(|| suite.run(&run).expect("the run completes"));
    assert_eq!(
        (report.walks, report.counts.cancelled, report.counts.failed),
        (WALKS, WALKS / 10, 1)
    );
    cluster.close();
    let dir = report.run_dir.expect("a traced run has its directory");
    let trace = std::fs::metadata(dir.join("walks.jsonl")).expect("walks.jsonl").len();
    std::fs::remove_dir_all(dir).expect("the run directory is removed");
    (open_s, run_s, trace as f64 / 1e6)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub(super) fn child(workload: &str) -> Option<serde_json::Map<String, Value>> {
    if workload != "N1" {
        return None;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let (node_files, coordinator_files) = certificates(dir.path());
    let [cert, key, ca] = &coordinator_files;
    let tls = Tls::load(cert, key, ca).expect("the coordinator's certificates load");
    let plain_node = start_node(None);
    let tls_node = start_node(Some(&node_files));
    let suite = suite();
    let logs = tempfile::tempdir().expect("a temp dir");
    let (mut plain, mut with_tls, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let p = round(suite.as_ref(), &plain_node, None, logs.path());
        let t = round(suite.as_ref(), &tls_node, Some(&tls), logs.path());
        ratios.push(t.1 / p.1);
        plain.push(p);
        with_tls.push(t);
    }
    let run_s = |v: &[(f64, f64, f64)]| median(v.iter().map(|r| r.1).collect());
    let open_ms = |v: &[(f64, f64, f64)]| median(v.iter().map(|r| r.0 * 1e3).collect());
    let mut out = result(workload, WALKS, 2, run_s(&with_tls), None);
    out.insert("trace_mb".into(), json!(median(with_tls.iter().map(|r| r.2).collect())));
    out.insert("plain_s".into(), json!(run_s(&plain)));
    out.insert("tls_vs_plain".into(), json!(median(ratios.clone())));
    let (min, max) =
        ratios.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    out.insert("tls_vs_plain_min".into(), json!(min));
    out.insert("tls_vs_plain_max".into(), json!(max));
    out.insert("open_plain_ms".into(), json!(open_ms(&plain)));
    out.insert("open_tls_ms".into(), json!(open_ms(&with_tls)));
    Some(out)
}
