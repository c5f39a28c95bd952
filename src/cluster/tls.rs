//! TLS between a coordinator and its nodes (`--tls-cert`, `--tls-key`,
//! `--tls-ca`): mutual TLS, each side verifying the other against one CA.
//!
//! - [`Tls`]: the three PEM files loaded ([`Tls::load`]: an error names the
//!   file and what is wrong with it) and made into a rustls server
//!   configuration (a node's: the coordinator's client certificate is
//!   required and checked against the CA) and a client one (a coordinator's:
//!   the node's certificate is checked against the CA and the node's
//!   address). The crypto provider is aws-lc-rs, picked explicitly
//!   (`builder_with_provider`): rustls never has to choose among providers
//!   a build happens to enable.
//! - [`Tls::connect`]: a coordinator's client handshake (the transport,
//!   `transport::TlsTransport`, runs it after its TCP connect, both within
//!   the connection's timeout).
//! - [`accept`]: a node's server handshake, which the gate runs under the
//!   connection's authentication deadline.
//! - [`reason`], [`io_reason`]: rustls' errors and alerts as one-line
//!   reasons.
//!
//! ARCHITECTURE.md ("Cluster runs", "TLS") has the protocol.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::model::membership::ConnectFailure;

/// The TLS configurations of one process, from its certificate, key and CA
/// files. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// The files it was loaded from (certificate, key, CA), for the nodes
    /// a coordinator starts over SSH.
    files: [std::path::PathBuf; 3],
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

/// Why the TLS files cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// One file: unreadable, not PEM, no usable item in it.
    #[error("TLS {what} {}: {reason}", path.display())]
    File {
        /// `certificate` (`--tls-cert`), `key` (`--tls-key`) or `CA`
        /// (`--tls-ca`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The files do not go together (a key of another certificate).
    #[error("TLS: {0}")]
    Mismatch(String),
}

/// The crypto provider every configuration is built with.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Tls {
    /// Loads a certificate chain (`cert`, the node's or coordinator's own
    /// certificate first), its private key (`key`) and the CA certificates
    /// both sides trust (`ca`), all PEM.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Tls, TlsError> {
        let chain = certificates("certificate", cert)?;
        let private = private_key(key)?;
        let mut roots = RootCertStore::empty();
        for der in certificates("CA", ca)? {
            roots
                .add(der)
                .map_err(|e| file_error("CA", ca, format!("not a CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        // The files as a pair: the key must be the certificate's.
        let paired = |error: rustls::Error| match error {
            rustls::Error::InconsistentKeys(_) => TlsError::Mismatch(format!(
                "the key {} is not the key of the certificate {}",
                key.display(),
                cert.display()
            )),
            rustls::Error::InvalidCertificate(_) | rustls::Error::InvalidMessage(_) => {
                file_error("certificate", cert, format!("not a usable certificate: {error}"))
            }
            other => file_error("key", key, format!("not a usable private key: {other}")),
        };
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider())
            .build()
            .map_err(|e| file_error("CA", ca, format!("cannot verify peers with it: {e}")))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Mismatch(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), private.clone_key())
            .map_err(paired)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Mismatch(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private)
            .map_err(paired)?;
        let files = [cert.to_path_buf(), key.to_path_buf(), ca.to_path_buf()];
        Ok(Tls { server: Arc::new(server), client: Arc::new(client), files })
    }

    /// The `serve` flags naming the same files: what a node started over
    /// SSH is given (the files must be at the same paths on its host).
    pub(crate) fn serve_args(&self) -> Vec<String> {
        let [cert, key, ca] = &self.files;
        ["--tls-cert", "--tls-key", "--tls-ca"]
            .into_iter()
            .zip([cert, key, ca])
            .flat_map(|(flag, path)| [flag.to_string(), path.to_string_lossy().into_owned()])
            .collect()
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.server))
    }

    fn connector(&self) -> TlsConnector {
        TlsConnector::from(Arc::clone(&self.client))
    }
}

fn file_error(what: &'static str, path: &Path, reason: String) -> TlsError {
    TlsError::File { what, path: path.to_path_buf(), reason }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(what, path, format!("cannot read it: {e}")))
}

/// Every certificate of a PEM file (at least one).
fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let found: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(what, path, format!("not valid PEM: {e}")))?;
    if found.is_empty() {
        let reason = "no PEM certificate in it (no -----BEGIN CERTIFICATE----- block)";
        return Err(file_error(what, path, reason.to_string()));
    }
    Ok(found)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| {
        let reason = match error {
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key in it (no \
                -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY block)"
                .to_string(),
            other => format!("not valid PEM: {other}"),
        };
        file_error("key", path, reason)
    })
}

/// A node's server handshake on `stream`, until `deadline`: the TLS stream,
/// or why not (one line, for the node's log).
pub(crate) async fn accept(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    deadline: Instant,
    timeout: Duration,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, String> {
    match tokio::time::timeout_at(deadline.into(), acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(io_reason(&error)),
        Err(_) => Err(format!("no handshake within {}", humantime::format_duration(timeout))),
    }
}

impl Tls {
    /// A coordinator's client handshake with node `address` over `stream`,
    /// within `left` (what is left of the connection's `timeout`): the TLS
    /// stream, or why not, naming the node (a certificate refused is
    /// permanent; a close or a timeout, which a node at its cap or without
    /// TLS gives, is transient).
    pub(crate) async fn connect(
        &self,
        address: &str,
        stream: TcpStream,
        left: Duration,
        timeout: Duration,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectFailure> {
        let name = server_name(address).map_err(|reason| {
            ConnectFailure::Permanent(format!("TLS with node {address} failed: {reason}"))
        })?;
        match tokio::time::timeout(left, self.connector().connect(name, stream)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) if is_certificate_error(&error) => {
                let reason = io_reason(&error);
                Err(ConnectFailure::Permanent(format!("TLS with node {address} failed: {reason}")))
            }
            // Closed before TLS said anything: what a plain node or a node
            // at its cap does.
            Ok(Err(error)) if rustls_error(&error).is_none() => {
                Err(ConnectFailure::Transient(format!(
                    "node {address} closed the connection during the TLS handshake: it is at \
                     its cap of unauthenticated connections, or it runs without --tls-* ({}); \
                     see its log",
                    io_reason(&error)
                )))
            }
            Ok(Err(error)) => Err(ConnectFailure::Transient(format!(
                "TLS with node {address} failed: {} (does the node run with --tls-*?)",
                io_reason(&error)
            ))),
            Err(_) => Err(ConnectFailure::Transient(format!(
                "TLS with node {address} failed: no handshake within {} (does the node run \
                 with --tls-*?)",
                humantime::format_duration(timeout)
            ))),
        }
    }
}

/// The name a node's certificate must hold: the host of its address (an
/// IP address or a DNS name).
fn server_name(address: &str) -> Result<ServerName<'static>, String> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is neither an IP address nor a DNS name"))
}

/// The rustls error inside an I/O error, if there is one.
fn rustls_error(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Whether an I/O error is a refused certificate (on either side): a
/// change of files is needed, retrying will not help.
fn is_certificate_error(error: &io::Error) -> bool {
    match rustls_error(error) {
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => true,
        Some(rustls::Error::AlertReceived(alert)) => refused_certificate(*alert).is_some(),
        _ => false,
    }
}

/// An I/O error of a TLS stream, in words.
pub(crate) fn io_reason(error: &io::Error) -> String {
    if let Some(error) = rustls_error(error) {
        return reason(error);
    }
    match error.kind() {
        io::ErrorKind::UnexpectedEof => {
            "the peer closed the connection during the handshake".to_string()
        }
        _ => error.to_string(),
    }
}

/// The alert a peer sends when it refuses our certificate, in words; `None`
/// for the other alerts.
fn refused_certificate(alert: AlertDescription) -> Option<&'static str> {
    Some(match alert {
        AlertDescription::UnknownCA => "our certificate is not signed by its --tls-ca CA",
        AlertDescription::CertificateExpired => "our certificate has expired",
        AlertDescription::BadCertificate => "our certificate is not valid for it",
        AlertDescription::CertificateRequired => "we sent no certificate",
        AlertDescription::UnsupportedCertificate
        | AlertDescription::CertificateRevoked
        | AlertDescription::CertificateUnknown
        | AlertDescription::AccessDenied => "it refused our certificate",
        _ => return None,
    })
}

/// The TLS alert a read failed with, if it says the peer refused our
/// certificate: in words, with the alert.
pub(crate) fn refusal(error: &io::Error) -> Option<String> {
    match rustls_error(error)? {
        rustls::Error::AlertReceived(alert) => {
            refused_certificate(*alert).map(|why| format!("{why} (alert: {alert:?})"))
        }
        _ => None,
    }
}

/// A rustls error in words, from the side that saw it.
pub(crate) fn reason(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(error) => certificate_reason(error),
        rustls::Error::AlertReceived(alert) => match refused_certificate(*alert) {
            Some(why) => format!("the peer refused our certificate: {why} (alert: {alert:?})"),
            None => format!("the peer ended the handshake (alert: {alert:?})"),
        },
        rustls::Error::NoCertificatesPresented => {
            "it presented no certificate (a coordinator without --tls-*?)".to_string()
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "not a TLS peer (is it started without --tls-*?)".to_string()
        }
        other => other.to_string(),
    }
}

fn time(at: UnixTime) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(at.as_secs());
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A name a certificate presents, as rustls spells it (`IpAddress(1.2.3.4)`,
/// `DnsName("a.b")`), without the wrapping.
fn bare_name(name: &str) -> &str {
    let inner = name.split_once('(').and_then(|(_, rest)| rest.strip_suffix(')'));
    let inner = inner.unwrap_or(name);
    inner.strip_prefix('"').and_then(|n| n.strip_suffix('"')).unwrap_or(inner)
}

/// A refused peer certificate in words.
fn certificate_reason(error: &CertificateError) -> String {
    match error {
        CertificateError::UnknownIssuer => {
            "its certificate is not signed by the --tls-ca CA (unknown issuer)".to_string()
        }
        CertificateError::BadSignature => {
            "its certificate's signature does not verify (not signed by the --tls-ca CA?)"
                .to_string()
        }
        CertificateError::Expired => "its certificate has expired".to_string(),
        CertificateError::ExpiredContext { not_after, .. } => {
            format!("its certificate has expired (valid until {})", time(*not_after))
        }
        CertificateError::NotValidYet => "its certificate is not valid yet".to_string(),
        CertificateError::NotValidYetContext { not_before, .. } => {
            format!("its certificate is not valid yet (valid from {})", time(*not_before))
        }
        CertificateError::NotValidForName => {
            "its certificate is not valid for the address it was reached at".to_string()
        }
        CertificateError::NotValidForNameContext { expected, presented } => format!(
            "its certificate is not valid for {} (it names {})",
            expected.to_str(),
            match presented.is_empty() {
                true => "nothing".to_string(),
                false => presented.iter().map(|n| bare_name(n)).collect::<Vec<_>>().join(", "),
            }
        ),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "its certificate does not allow this use (extended key usage: a node needs \
             serverAuth, a coordinator clientAuth)"
                .to_string()
        }
        other => format!("its certificate is refused: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_read_as_one_line_each() {
        let unknown = reason(&rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
        assert!(unknown.contains("not signed by the --tls-ca CA"), "{unknown}");
        let expired = rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(2_000_000_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_000_000_000)),
        });
        assert_eq!(
            reason(&expired),
            "its certificate has expired (valid until 2001-09-09T01:46:40Z)"
        );
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("127.0.0.1").unwrap(),
            presented: vec!["IpAddress(10.9.9.9)".to_string(), "DnsName(\"a.test\")".to_string()],
        });
        assert_eq!(
            reason(&name),
            "its certificate is not valid for 127.0.0.1 (it names 10.9.9.9, a.test)"
        );
        let alert = reason(&rustls::Error::AlertReceived(AlertDescription::UnknownCA));
        assert!(alert.contains("the peer refused our certificate: our certificate is not signed"));
        for text in [unknown, alert] {
            assert_eq!(text.lines().count(), 1, "{text}");
        }
    }

    #[test]
    fn a_refusal_is_told_apart_from_other_read_errors() {
        let refused = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateExpired),
        );
        assert_eq!(
            refusal(&refused).as_deref(),
            Some("our certificate has expired (alert: CertificateExpired)")
        );
        assert!(is_certificate_error(&refused));
        let closed = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(refusal(&closed), None);
        assert!(!is_certificate_error(&closed));
        assert_eq!(io_reason(&closed), "the peer closed the connection during the handshake");
    }

    #[test]
    fn the_server_name_is_the_host_of_the_address() {
        assert_eq!(server_name("127.0.0.1:7878").unwrap().to_str(), "127.0.0.1");
        assert_eq!(server_name("[::1]:7878").unwrap().to_str(), "::1");
        assert_eq!(server_name("node-1.example:9").unwrap().to_str(), "node-1.example");
        assert!(server_name("bad name:9").is_err());
    }

    #[test]
    fn unusable_files_are_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let error = Tls::load(&missing, &garbage, &garbage).unwrap_err().to_string();
        assert!(
            error.starts_with("TLS certificate ") && error.contains("cannot read it"),
            "{error}"
        );
        assert!(error.contains("missing.pem"), "{error}");
        let error = Tls::load(&garbage, &garbage, &garbage).unwrap_err().to_string();
        assert!(error.contains("garbage.pem: no PEM certificate in it"), "{error}");
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
            .unwrap();
        let error = Tls::load(&broken, &garbage, &garbage).unwrap_err().to_string();
        assert!(error.contains("broken.pem: not valid PEM"), "{error}");
        assert_eq!(error.lines().count(), 1, "{error}");
    }

    #[test]
    fn pem_of_garbled_der_is_named_as_the_file_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let error = Tls::load(&junk, &key, &junk).unwrap_err().to_string();
        assert!(
            error.contains("CA ") && error.contains("junk.pem: not a CA certificate"),
            "{error}"
        );
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert.pem()).unwrap();
        let error = Tls::load(&junk, &key, &ca_file).unwrap_err().to_string();
        assert!(
            error.starts_with("TLS certificate ") && error.contains("not a usable certificate")
        );
        let junk_key = dir.path().join("junk.key");
        std::fs::write(&junk_key, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .unwrap();
        let error = Tls::load(&ca_file, &junk_key, &ca_file).unwrap_err().to_string();
        assert!(error.contains("junk.key: not a usable private key"), "{error}");
    }
}
