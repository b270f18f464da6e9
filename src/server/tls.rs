//! TLS (feature `tls`): the listener's certificate and key, reloadable while serving,
//! and the client side for `--upstream wss://` and `wsgate bench wss://`. rustls with
//! the `ring` provider, through futures-rustls; PEM through rustls-pki-types.
//!
//! - [`Tls`] holds the server configuration built from `--tls-cert` (a PEM chain,
//!   leaf first) and `--tls-key` (PKCS#8, PKCS#1 or SEC1): TLS 1.2 and 1.3, ALPN
//!   `http/1.1`. [`Tls::reload`] re-reads both files and swaps the configuration
//!   atomically, or changes nothing and says why; connections already open keep the
//!   configuration they started with (`docs/operations.md#tls`).
//! - [`TlsClient`] trusts the system's roots plus an optional PEM file of extra CAs.
//!
//! Errors name the file and say what is wrong with it in a fixed phrase: never a
//! byte of the file (a key file's content is secret).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use futures_rustls::rustls::crypto::CryptoProvider;
use futures_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use futures_rustls::{TlsAcceptor, TlsConnector};
use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::{ConfigError, io_reason};
use crate::session::BoxedConnection;

/// The ALPN protocol offered and accepted: wsgate speaks HTTP/1.1 only.
const ALPN: &[u8] = b"http/1.1";

/// Largest PEM file read (a long chain is a few KiB): a wrong path to a huge file
/// fails fast instead of filling memory.
pub const MAX_PEM_FILE: u64 = 1 << 20;

/// rustls's `ring` provider: no C toolchain beyond ring's own, no cmake (aws-lc-rs
/// needs both). rustls 0.23.48 deprecates it because it has no post-quantum key
/// exchange (X25519MLKEM768); X25519, P-256 and P-384 remain (`docs/operations.md#tls`).
///
/// Key exchange prefers X25519 (then P-256, then P-384): the provider's default puts
/// P-384 first, which rustls clients (the bench, `wss://` upstreams) then offer, and
/// ring's P-384 costs ~600 µs per handshake here (measured: 94 % of a TLS round trip).
/// Browsers offer X25519 first anyway.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::kx_group;
    let mut p = rustls::crypto::ring::default_provider();
    p.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    Arc::new(p)
}

/// The listener's TLS configuration, swappable while serving (SIGHUP).
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A configuration read by [`Tls::prepare`], ready for [`Tls::install`].
pub struct Prepared(Arc<ServerConfig>);

impl Tls {
    /// Reads `cert` (PEM chain) and `key` (PEM private key) and checks that they match.
    /// The error names the setting (`tls_cert`, `tls_key`) and the file at fault.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, ConfigError> {
        let config = server_config(cert, key)?;
        Ok(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// Re-reads both files; on success new connections get the new certificate, on
    /// failure nothing changes and the error says why.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let config = self.prepare()?;
        self.install(config);
        Ok(())
    }

    /// Re-reads both files into a configuration, without using it yet (a reload of
    /// several things checks them all before it changes any).
    pub fn prepare(&self) -> Result<Prepared, ConfigError> {
        Ok(Prepared(Arc::new(server_config(&self.cert, &self.key)?)))
    }

    /// New connections get `config` from now on.
    pub fn install(&self, config: Prepared) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config.0;
    }

    /// An acceptor with the current configuration.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        TlsAcceptor::from(config)
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

fn read_pem(setting: &str, path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, ConfigError> {
    let what = || format!("{setting} {}", path.display());
    let len = std::fs::metadata(path)
        .map_err(|e| ConfigError::new(what(), io_reason(&e)))?
        .len();
    if len > MAX_PEM_FILE {
        return Err(ConfigError::new(what(), "over 1 MiB: not a PEM file"));
    }
    std::fs::read(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| ConfigError::new(what(), io_reason(&e)))
}

/// A PEM error as a fixed phrase: the library's own messages quote lines of the file.
fn pem_reason(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "not valid PEM (a section has no END line)",
        pem::Error::IllegalSectionStart { .. } => "not valid PEM (a bad BEGIN line)",
        pem::Error::Base64Decode(_) => "not valid PEM (bad base64)",
        pem::Error::SectionTooLarge => "not valid PEM (a section is too large)",
        _ => "not valid PEM",
    }
}

/// The certificates of a PEM file given to `setting`; `expected` ends the message for
/// a file that holds none.
fn load_certs(
    setting: &str,
    path: &Path,
    expected: &str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let what = || format!("{setting} {}", path.display());
    let bytes = read_pem(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(what(), pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            what(),
            format_args!(
                "no certificate in it (expected PEM `BEGIN CERTIFICATE` sections{expected})"
            ),
        ));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let what = || format!("tls_key {}", path.display());
    let bytes = read_pem("tls_key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let why = match e {
            pem::Error::NoItemsFound => {
                "no private key in it (expected PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)"
            }
            e => pem_reason(&e),
        };
        ConfigError::new(what(), why)
    })
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, ConfigError> {
    let certs = load_certs("tls_cert", cert, ", leaf first")?;
    let private = load_key(key)?;
    let key_what = || format!("tls_key {}", key.display());
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError::new("tls_cert", e))?
        .with_no_client_auth();
    let mut config = builder
        .with_single_cert(certs, private)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => ConfigError::new(
                key_what(),
                format_args!("does not match the certificate in {}", cert.display()),
            ),
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                ConfigError::new(
                    format!("tls_cert {}", cert.display()),
                    "not a usable X.509 certificate",
                )
            }
            _ => ConfigError::new(
                key_what(),
                "not a usable private key (RSA, ECDSA P-256/P-384 or Ed25519)",
            ),
        })?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// Client TLS for `wss://` URLs: the system's roots plus, optionally, the CAs of a
/// PEM file.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsClient")
    }
}

impl TlsClient {
    /// Trusts the system's roots and the certificates in `extra_ca` (PEM); errors name
    /// `setting` (`upstream_ca`; `wsgate bench` gives its `--ca`). Without any root at
    /// all (no system store, no file) it is an error: nothing could be verified.
    pub fn new(extra_ca: Option<&Path>, setting: &str) -> Result<TlsClient, ConfigError> {
        let mut roots = RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            // A system root rustls cannot parse is skipped, as browsers do.
            let _ = roots.add(cert);
        }
        if let Some(path) = extra_ca {
            let what = || format!("{setting} {}", path.display());
            for cert in load_certs(setting, path, "")? {
                roots
                    .add(cert)
                    .map_err(|_| ConfigError::new(what(), "not a usable CA certificate"))?;
            }
        }
        if roots.is_empty() {
            return Err(ConfigError::new(
                setting,
                "no trusted root certificates on this system: give a CA file",
            ));
        }
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ConfigError::new(setting, e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// The TLS handshake over `stream` with `host` (a DNS name or an IP address,
    /// without brackets), verifying its certificate. Unbounded in time: the caller
    /// puts its deadline around it.
    pub async fn connect<S>(&self, host: &str, stream: S) -> std::io::Result<BoxedConnection>
    where
        S: crate::session::Connection,
    {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a valid host name")
        })?;
        let tls = self.connector.connect(name, stream).await?;
        Ok(Box::new(tls))
    }
}

/// Why a TLS handshake failed, for the log line: rustls's reason (it holds no secret),
/// or the IO error's kind.
pub fn handshake_reason(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidMessage(_)) => "not TLS (or a corrupt record)".into(),
        Some(inner) => inner.to_string(),
        None => e.kind().to_string(),
    }
}
