//! TLS for rtq connections: TLS 1.3 only (RFC 9001), ALPN `rtq/1`.
//!
//! The receiver presents a certificate: loaded from PEM files, or generated (rcgen) when none is
//! given. The sender checks it one of four ways, chosen by flags:
//! - `--ca FILE`: chain to the given CA certificate(s), and the name or IP in `--connect` (or
//!   `--server-name`) must be in the certificate;
//! - `--cert-sha256 HEX`: the certificate's SHA-256 fingerprint must match (pinning; the name
//!   is not checked, the handshake signature is);
//! - neither: the operating system's trust store (for receivers with public certificates);
//! - `--insecure`: anything goes, with a warning — for tests only.
//!
//! Session keys are written to the file named by `SSLKEYLOGFILE` when, and only when, that
//! variable is set (for Wireshark).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::wire::ALPN;

/// Why a TLS set-up step failed. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate file could not be read.
    #[error(
        "cannot read certificate file {path}: {source} (check the path, or create a pair with `rtq-recv --make-cert certs`)"
    )]
    ReadCert {
        /// The file.
        path: PathBuf,
        /// The I/O or PEM error.
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate file held no certificate.
    #[error("no PEM certificate (-----BEGIN CERTIFICATE-----) in {0}")]
    NoCert(PathBuf),
    /// A key file could not be read or held no key.
    #[error(
        "cannot read a PEM private key from {path}: {source} (pass the key that belongs to --cert)"
    )]
    ReadKey {
        /// The file.
        path: PathBuf,
        /// The I/O or PEM error.
        source: rustls::pki_types::pem::Error,
    },
    /// Certificate and key do not belong together, or are unusable.
    #[error("certificate and key are not usable together: {0}")]
    Rustls(#[from] rustls::Error),
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing generated files failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The system trust store could not be loaded.
    #[error("cannot load the system's trust store ({0}): pass --ca FILE or --cert-sha256 HEX")]
    Platform(rustls::Error),
    /// QUIC refused the TLS configuration.
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(String),
}

/// The crypto provider rtq uses everywhere (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of a DER certificate, as `openssl x509 -fingerprint -sha256` prints it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of `cert`.
    pub fn of(cert: &CertificateDer<'_>) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
        let mut out = [0; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = String;

    /// Accepts 64 hex digits, with or without colons, in either case; an `openssl` prefix such
    /// as `sha256 Fingerprint=` or `SHA256:` is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "certificate fingerprint `{s}`: expected the SHA-256 of the DER certificate as 64 hex digits, with or without colons (as rtq-recv or `openssl x509 -noout -fingerprint -sha256` print it)"
            )
        };
        let hex = s.rsplit(['=', ' ']).next().unwrap_or(s);
        let hex = hex.strip_prefix("SHA256:").unwrap_or(hex);
        let digits: Vec<u8> = hex.bytes().filter(|&b| b != b':').collect();
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let txt = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(txt, 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    /// End-entity certificate first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The key.
    pub key: PrivateKeyDer<'static>,
}

/// Names put in generated certificates unless others are given.
pub const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A freshly generated self-signed certificate, with its PEM text.
#[derive(Debug)]
pub struct Generated {
    /// The identity.
    pub identity: Identity,
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
}

impl Identity {
    /// Generates a self-signed certificate (ECDSA P-256) for `names` (DNS names or IP
    /// addresses).
    pub fn self_signed(names: &[String]) -> Result<Generated, TlsError> {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(names.to_vec())?;
        let key_der = PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
        Ok(Generated {
            cert_pem: cert.pem(),
            key_pem: signing_key.serialize_pem(),
            identity: Identity {
                certs: vec![cert.der().clone()],
                key: key_der,
            },
        })
    }

    /// Loads a PEM certificate chain and key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let certs = load_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::ReadKey {
            path: key.to_owned(),
            source,
        })?;
        Ok(Self { certs, key })
    }

    /// Fingerprint of the end-entity certificate.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.certs.first().map(Fingerprint::of)
    }
}

/// Loads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::ReadCert {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(path.to_owned()));
    }
    Ok(certs)
}

/// Writes a new self-signed `cert.pem` and `key.pem` into `dir` (created if missing; the key
/// readable by its owner only). Returns the two paths and the fingerprint.
pub fn make_cert(
    dir: &Path,
    names: &[String],
) -> Result<(PathBuf, PathBuf, Fingerprint), TlsError> {
    let g = Identity::self_signed(names)?;
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, &g.cert_pem).map_err(write_err(&cert_path))?;
    write_private(&key_path, g.key_pem.as_bytes()).map_err(write_err(&key_path))?;
    let fp = g
        .identity
        .fingerprint()
        .ok_or_else(|| TlsError::NoCert(cert_path.clone()))?;
    Ok((cert_path, key_path, fp))
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(data)
}

/// How the sender checks the receiver's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Chain to these CA certificates and check the server name.
    Ca(Vec<CertificateDer<'static>>),
    /// Accept exactly the certificate with this fingerprint.
    Pin(Fingerprint),
    /// The operating system's trust store.
    System,
    /// Accept any certificate. Insecure.
    Insecure,
}

/// TLS configuration for a receiver.
pub fn server_config(identity: Identity) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.certs, identity.key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    tls.key_log = Arc::new(rustls::KeyLogFile::new());
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}

/// TLS configuration for a sender.
pub fn client_config(trust: Trust) -> Result<quinn::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut tls = match trust {
        Trust::Ca(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots.add(c)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Pin(fp) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier::new(Some(fp))))
            .with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier::new(None)))
            .with_no_client_auth(),
        Trust::System => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .map_err(TlsError::Platform)?
                .with_no_client_auth()
        }
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    tls.key_log = Arc::new(rustls::KeyLogFile::new());
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// Accepts the certificate whose SHA-256 is pinned (or, unpinned, any certificate), and checks
/// the handshake signature with it either way.
#[derive(Debug)]
struct PinVerifier {
    pin: Option<Fingerprint>,
    provider: Arc<CryptoProvider>,
}

impl PinVerifier {
    fn new(pin: Option<Fingerprint>) -> Self {
        Self {
            pin,
            provider: provider(),
        }
    }
}

/// The error a pinned sender reports when the certificate is not the pinned one.
#[derive(Debug)]
struct PinMismatch {
    got: Fingerprint,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate SHA-256 {} does not match --cert-sha256",
            self.got
        )
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.pin {
            None => Ok(ServerCertVerified::assertion()),
            Some(pin) => {
                let got = Fingerprint::of(end_entity);
                if got == pin {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::Other(rustls::OtherError(Arc::new(
                            PinMismatch { got },
                        ))),
                    ))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_every_common_form() {
        let fp = Fingerprint([0xab; 32]);
        let colons = fp.to_string();
        assert_eq!(colons.len(), 95);
        assert_eq!(colons.parse::<Fingerprint>(), Ok(fp));
        assert_eq!(
            colons
                .replace(':', "")
                .to_lowercase()
                .parse::<Fingerprint>(),
            Ok(fp)
        );
        assert_eq!(
            format!("sha256 Fingerprint={colons}").parse::<Fingerprint>(),
            Ok(fp)
        );
        for bad in ["", "abcd", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(
                bad.parse::<Fingerprint>()
                    .unwrap_err()
                    .contains("64 hex digits")
            );
        }
    }

    #[test]
    fn generated_certificates_cover_the_default_names_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
        let (cert, key, fp) = make_cert(dir.path(), &names).unwrap();
        let id = Identity::load(&cert, &key).unwrap();
        assert_eq!(id.fingerprint(), Some(fp));
        assert!(server_config(id).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is private");
        }
    }

    #[test]
    fn load_errors_name_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let err = Identity::load(&missing, &missing).unwrap_err().to_string();
        assert!(
            err.contains("nope.pem") && err.contains("--make-cert"),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem").unwrap();
        let err = load_certs(&empty).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn a_key_that_does_not_match_is_refused() {
        let a = Identity::self_signed(&["a".into()]).unwrap().identity;
        let b = Identity::self_signed(&["b".into()]).unwrap().identity;
        let mixed = Identity {
            certs: a.certs,
            key: b.key,
        };
        assert!(server_config(mixed).is_err());
    }

    #[test]
    fn client_configs_build_for_every_trust_mode() {
        let g = Identity::self_signed(&["localhost".into()]).unwrap();
        assert!(client_config(Trust::Ca(g.identity.certs.clone())).is_ok());
        assert!(client_config(Trust::Pin(g.identity.fingerprint().unwrap())).is_ok());
        assert!(client_config(Trust::Insecure).is_ok());
    }
}
