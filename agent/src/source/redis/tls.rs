//! TLS for the one connection to Redis: redis-cli's flags (`--tls`, `--cacert`,
//! `--cert`, `--key`, `--insecure`, `--sni`) as [`TlsOptions`], turned into a
//! rustls client configuration ([`TlsClient`]) that wraps the TCP stream the agent
//! opened itself (see `conn`).
//!
//! Unlike redis-cli (hiredis checks the certificate chain, not the name), the
//! server's certificate must also name the host connected to (a DNS name or an IP
//! address in its subjectAltName), or the name given with `--sni`. `--insecure`
//! checks neither, as redis-cli's does.
//!
//! Everything a file can get wrong (missing, unreadable, not PEM, no certificate,
//! a key that does not match the certificate) is found when the flags are read,
//! before anything is loaded, and reported as one line naming the flag and the file:
//! a usage error ([`TlsSetupError`], which the target turns into its `TlsSetupError`). What only the server can get wrong (an unknown
//! issuer, another name, an expired certificate, a client certificate it refuses)
//! is a failed handshake, reported as the connection's `tls_failed` status by
//! [`describe`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A TLS flag that cannot be used (a file missing, unreadable, not PEM …): one line
/// naming the flag and the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSetupError(pub String);

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsSetupError {}

/// The TLS flags, as given (redis-cli's names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsOptions {
    /// CA certificates (PEM) that sign the server's certificate. Default: the host's
    /// CA store.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM), for a server with `tls-auth-clients yes`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Check neither the chain nor the name of the server's certificate.
    pub insecure: bool,
    /// The name sent as SNI and checked against the server's certificate, instead
    /// of the host of the URL.
    pub sni: Option<String>,
}

impl TlsOptions {
    /// Whether any option is set (they need TLS to mean anything).
    pub fn any(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.insecure
            || self.sni.is_some()
    }

    /// The first flag given, for "needs TLS" messages.
    pub(super) fn first_flag(&self) -> &'static str {
        if self.ca_file.is_some() {
            "--cacert"
        } else if self.cert_file.is_some() {
            "--cert"
        } else if self.key_file.is_some() {
            "--key"
        } else if self.insecure {
            "--insecure"
        } else {
            "--sni"
        }
    }
}

/// A rustls client configuration and the name to verify, built once from
/// [`TlsOptions`].
#[derive(Clone)]
pub struct TlsClient {
    pub(super) config: Arc<ClientConfig>,
    /// `--sni`, else the target's host.
    pub(super) server_name: ServerName<'static>,
    /// What verifies the server, for messages: "--cacert ca.pem", "the system's CA
    /// store", or "nothing (--insecure)".
    pub(super) trust: String,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

fn arg_err(msg: impl Into<String>) -> TlsSetupError {
    TlsSetupError(msg.into())
}

/// The ring provider: the one crypto backend built in (see agent/Cargo.toml).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsClient {
    /// Reads the files and builds the configuration for a connection to `host`.
    /// Every failure names the flag and the file, on one line.
    pub fn new(opts: &TlsOptions, host: &str) -> Result<Self, TlsSetupError> {
        let name = opts.sni.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_string()).map_err(|_| {
            arg_err(format!(
                "{name:?} is not a valid TLS server name{}",
                if opts.sni.is_some() { " (--sni)" } else { "" }
            ))
        })?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| arg_err(format!("TLS set-up: {e}")))?;
        let (builder, trust) = if opts.insecure {
            if let Some(ca) = &opts.ca_file {
                // Still read it: a wrong path is a mistake worth a word.
                load_roots(ca)?;
            }
            let verifier = Arc::new(NoVerification(provider()));
            (
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier),
                "nothing (--insecure)".to_string(),
            )
        } else {
            let (roots, trust) = match &opts.ca_file {
                Some(ca) => (load_roots(ca)?, format!("--cacert {}", ca.display())),
                None => (system_roots()?, "the system's CA store".to_string()),
            };
            (builder.with_root_certificates(roots), trust)
        };
        let config = match (&opts.cert_file, &opts.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => return Err(arg_err("--cert needs --key (the certificate's key)")),
            (None, Some(_)) => return Err(arg_err("--key needs --cert (its certificate)")),
            (Some(cert), Some(key)) => {
                let chain = load_certs(cert, "--cert")?;
                let key_der = load_key(key)?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    arg_err(format!(
                        "--cert {} with --key {}: {}",
                        cert.display(),
                        key.display(),
                        client_cert_problem(&e)
                    ))
                })?
            }
        };
        Ok(TlsClient {
            config: Arc::new(config),
            server_name,
            trust,
        })
    }
}

impl TlsClient {
    /// The configuration and the name to verify, for a TLS stream of another
    /// protocol (the OTLP exporter's HTTPS).
    pub fn parts(&self) -> (Arc<ClientConfig>, ServerName<'static>) {
        (self.config.clone(), self.server_name.clone())
    }
}

/// Why rustls will not use a client certificate and key, in a few words.
fn client_cert_problem(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => "the key does not belong to the certificate".into(),
        // webpki's reason sits behind an opaque error; its name is the only handle.
        rustls::Error::InvalidCertificate(c)
            if format!("{c:?}").contains("UnsupportedCertVersion") =>
        {
            "the certificate is X.509 version 1, and rustls takes version 3 only (sign it \
             with extensions, e.g. `openssl x509 -req … -extfile FILE`)"
                .into()
        }
        rustls::Error::InvalidCertificate(c) => format!("the certificate is unusable ({c:?})"),
        other => other.to_string(),
    }
}

/// A file's certificates, at least one.
fn load_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bad = |why: String| arg_err(format!("{flag} {}: {why}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_error(&e)))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".to_string()));
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "--cacert")? {
        roots.add(cert).map_err(|e| {
            arg_err(format!(
                "--cacert {}: a certificate in it is unusable as a CA: {e}",
                path.display()
            ))
        })?;
    }
    Ok(roots)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsSetupError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        let why = match e {
            pem::Error::NoItemsFound => "no PEM private key in it".to_string(),
            other => pem_error(&other),
        };
        arg_err(format!("--key {}: {why}", path.display()))
    })
}

/// A PEM error in a few words, never quoting the file (it may hold a key).
fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::Io(io) => io_message(io),
        pem::Error::NoItemsFound => "nothing usable in it".to_string(),
        pem::Error::MissingSectionEnd { .. } => "not a PEM file (a section has no END line)".into(),
        pem::Error::IllegalSectionStart { .. } => "not a PEM file (a bad BEGIN line)".into(),
        pem::Error::Base64Decode(_) => "not a PEM file (bad base64)".to_string(),
        pem::Error::SectionTooLarge => "not a PEM file (a section is too large)".to_string(),
        _ => "not a PEM file".to_string(),
    }
}

fn io_message(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        // Reading a directory fails with EISDIR.
        _ if e.raw_os_error() == Some(libc::EISDIR) => "is a directory".to_string(),
        _ => e.to_string(),
    }
}

/// The host's CA store. Certificates it cannot parse are skipped; none at all is
/// an error (TLS could never verify a server).
fn system_roots() -> Result<RootCertStore, TlsSetupError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(arg_err(format!(
            "no CA certificate found in the system's store{why}: give the CA that signs \
             the server's certificate with --cacert FILE"
        )));
    }
    Ok(roots)
}

/// `--insecure`: accepts any certificate for any name, but still checks that the
/// handshake is signed by the certificate's key (as every TLS client must, or the
/// session keys mean nothing).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The rustls error inside an I/O error from the TLS stream, if that is what it is.
pub(super) fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A TLS failure in one line that names its cause, with what to check.
pub(super) fn describe(e: &rustls::Error, client: &TlsClient) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let name = server_name_text(&client.server_name);
    match e {
        E::InvalidCertificate(C::UnknownIssuer) => format!(
            "the server's certificate is not signed by a CA in {} (unknown issuer)",
            client.trust
        ),
        E::InvalidCertificate(C::BadSignature) => format!(
            "the server's certificate does not verify against {} (bad signature)",
            client.trust
        ),
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "the server's certificate does not name {name} (give the name it has with --sni NAME)"
        ),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the server's certificate has expired".to_string()
        }
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "the server's certificate is not valid yet".to_string()
        }
        E::InvalidCertificate(C::Revoked) => "the server's certificate is revoked".to_string(),
        E::InvalidCertificate(other) => format!("the server's certificate is invalid: {other:?}"),
        E::AlertReceived(A::CertificateRequired) => {
            "the server wants a client certificate (give --cert FILE and --key FILE)".to_string()
        }
        E::AlertReceived(
            A::BadCertificate
            | A::UnknownCA
            | A::UnsupportedCertificate
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::DecryptError,
        ) if client.config.client_auth_cert_resolver.has_certs() => format!(
            "the server refused our client certificate (alert {:?}; is --cert signed by \
             the CA in its tls-ca-cert-file?)",
            alert_of(e)
        ),
        E::AlertReceived(alert) => format!("the server ended the handshake (alert {alert:?})"),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            format!("the server does not speak TLS here ({e}): is this its tls-port?")
        }
        other => other.to_string(),
    }
}

fn alert_of(e: &rustls::Error) -> Option<rustls::AlertDescription> {
    match e {
        rustls::Error::AlertReceived(a) => Some(*a),
        _ => None,
    }
}

fn server_name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => "the host".to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh empty directory under the temp dir.
    pub(crate) fn temp_dir(tag: &str) -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "connwatch-tls-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn options_that_need_tls_are_named() {
        assert!(!TlsOptions::default().any());
        let sni = TlsOptions {
            sni: Some("redis.example".into()),
            ..TlsOptions::default()
        };
        assert!(sni.any());
        assert_eq!(sni.first_flag(), "--sni");
        let ca = TlsOptions {
            ca_file: Some("ca.pem".into()),
            insecure: true,
            ..TlsOptions::default()
        };
        assert_eq!(ca.first_flag(), "--cacert");
    }

    #[test]
    fn bad_files_are_one_line_usage_errors_naming_flag_and_file() {
        let dir = temp_dir("files");
        let missing = dir.join("missing.pem");
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n",
        )
        .unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "just words, no PEM\n").unwrap();

        let with_ca = |path: &Path| TlsOptions {
            ca_file: Some(path.to_path_buf()),
            ..TlsOptions::default()
        };
        let cases = [
            (
                with_ca(&missing),
                format!("--cacert {}: no such file", missing.display()),
            ),
            (
                with_ca(&dir),
                format!("--cacert {}: is a directory", dir.display()),
            ),
            (
                with_ca(&empty),
                format!("--cacert {}: no PEM certificate in it", empty.display()),
            ),
            (
                TlsOptions {
                    cert_file: Some(garbage.clone()),
                    ..TlsOptions::default()
                },
                "--cert needs --key (the certificate's key)".to_string(),
            ),
            (
                TlsOptions {
                    key_file: Some(garbage.clone()),
                    ..TlsOptions::default()
                },
                "--key needs --cert (its certificate)".to_string(),
            ),
            (
                TlsOptions {
                    ca_file: Some(empty.clone()),
                    insecure: true,
                    ..TlsOptions::default()
                },
                format!("--cacert {}: no PEM certificate in it", empty.display()),
            ),
            (
                TlsOptions {
                    sni: Some("bad name!".into()),
                    insecure: true,
                    ..TlsOptions::default()
                },
                "\"bad name!\" is not a valid TLS server name (--sni)".to_string(),
            ),
        ];
        for (opts, want) in cases {
            let e = TlsClient::new(&opts, "127.0.0.1").unwrap_err();
            assert_eq!(e.0, want, "{opts:?}");
            assert!(!e.0.contains('\n'));
        }
        let e = TlsClient::new(&with_ca(&garbage), "127.0.0.1").unwrap_err();
        assert!(
            e.0.starts_with(&format!("--cacert {}: not a PEM file", garbage.display())),
            "{e}"
        );
        assert!(!e.0.contains("base64 at all"), "never quotes the file: {e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn insecure_needs_no_file_and_names_what_it_trusts() {
        let opts = TlsOptions {
            insecure: true,
            ..TlsOptions::default()
        };
        let client = TlsClient::new(&opts, "redis.internal").unwrap();
        assert_eq!(client.trust, "nothing (--insecure)");
        assert_eq!(server_name_text(&client.server_name), "redis.internal");
        let client = TlsClient::new(
            &TlsOptions {
                sni: Some("cache.example".into()),
                ..opts
            },
            "10.1.2.3",
        )
        .unwrap();
        assert_eq!(server_name_text(&client.server_name), "cache.example");
    }

    #[test]
    fn handshake_failures_name_their_cause() {
        let client = TlsClient::new(
            &TlsOptions {
                insecure: true,
                ..TlsOptions::default()
            },
            "127.0.0.1",
        )
        .unwrap();
        let client = TlsClient {
            trust: "--cacert /etc/ca.pem".into(),
            ..client
        };
        use rustls::{AlertDescription as A, CertificateError as C, Error as E};
        let cases = [
            (
                E::InvalidCertificate(C::UnknownIssuer),
                "the server's certificate is not signed by a CA in --cacert /etc/ca.pem (unknown issuer)",
            ),
            (
                E::InvalidCertificate(C::NotValidForName),
                "the server's certificate does not name 127.0.0.1 (give the name it has with --sni NAME)",
            ),
            (
                E::InvalidCertificate(C::Expired),
                "the server's certificate has expired",
            ),
            (
                E::AlertReceived(A::CertificateRequired),
                "the server wants a client certificate (give --cert FILE and --key FILE)",
            ),
            (
                E::AlertReceived(A::HandshakeFailure),
                "the server ended the handshake (alert HandshakeFailure)",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(describe(&e, &client), want);
        }
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            E::InvalidCertificate(C::UnknownIssuer),
        );
        assert_eq!(
            rustls_error(&io),
            Some(&E::InvalidCertificate(C::UnknownIssuer))
        );
        assert_eq!(rustls_error(&io::ErrorKind::UnexpectedEof.into()), None);
    }
}
