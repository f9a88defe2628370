//! TLS on rustls (feature `tls`): the server's certificates (PEM, SNI, reload) and ALPN, the
//! client's roots, and [`stream`], the layer that sits between a non-blocking socket and the
//! sans-IO core.
//!
//! The core never sees TLS: rustls is sans-IO itself (`read_tls` / `process_new_packets` /
//! `write_tls`), so the event loop reads ciphertext from the socket into rustls and hands the
//! plaintext to the core exactly as it would a plain socket's bytes.
//!
//! Crypto provider: `ring`. It builds with a C compiler alone (gcc); aws-lc-rs, rustls'
//! default, needs cmake (and clang on some targets). No OpenSSL anywhere.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub(crate) mod stream;

pub use rustls;

/// Why a TLS setting could not be made.
#[derive(Debug)]
pub enum TlsError {
    /// A PEM file could not be read.
    Read { path: String, error: std::io::Error },
    /// The certificate PEM held no `CERTIFICATE` block, or a malformed one.
    NoCertificate(String),
    /// The key PEM held no private key (PKCS#8, PKCS#1 or SEC1), or a malformed one.
    NoKey(String),
    /// rustls refused the key or the pair (unsupported key type, key not matching the
    /// certificate, bad root).
    Rustls(rustls::Error),
    /// A name for SNI or for the client's server-name check that is not a DNS name or IP.
    BadName(String),
    /// The platform's root store could not be read, or held nothing usable.
    NoRoots(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, error } => write!(f, "cannot read {path}: {error}"),
            TlsError::NoCertificate(why) => write!(f, "no certificate in the PEM: {why}"),
            TlsError::NoKey(why) => write!(f, "no private key in the PEM: {why}"),
            TlsError::Rustls(e) => write!(f, "TLS configuration refused: {e}"),
            TlsError::BadName(n) => write!(f, "not a DNS name or IP address: {n:?}"),
            TlsError::NoRoots(why) => write!(f, "no root certificates: {why}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Rustls(e)
    }
}

/// The crypto provider every config here is built with. rustls marks ring's provider deprecated
/// because ring has no post-quantum key exchange (X25519MLKEM768 needs aws-lc-rs); X25519 and
/// the P-curves remain, which is what browsers fall back to.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.display().to_string(),
        error,
    })
}

/// Parses a PEM certificate chain (leaf first).
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NoCertificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certs_from_pem(chain_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey(e.to_string()))?;
    let certified = CertifiedKey::from_der(chain, key, &provider())?;
    Ok(Arc::new(certified))
}

/// The certificates a server presents: a default one, and others by SNI name.
#[derive(Debug)]
struct Certs {
    default: Arc<CertifiedKey>,
    /// Lower-cased DNS name → certificate.
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

/// Picks the certificate for a ClientHello; swapped whole on reload, so that a handshake
/// under way keeps the certificate it started with and open sessions are not touched.
#[derive(Debug)]
struct CertStore(RwLock<Certs>);

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.0.read().unwrap_or_else(|e| e.into_inner());
        let named = hello
            .server_name()
            .and_then(|n| certs.by_name.get(&n.to_ascii_lowercase()));
        Some(named.unwrap_or(&certs.default).clone())
    }
}

/// A server's TLS settings: certificates (one default, more by SNI name, all replaceable while
/// the server runs) and ALPN. Cheap to clone; clones share the certificates, so a reload
/// through any clone reaches every worker.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    certs: Arc<CertStore>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let certs = self.certs.0.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&String> = certs.by_name.keys().collect();
        names.sort();
        f.debug_struct("ServerTls")
            .field("alpn", &self.config.alpn_protocols.len())
            .field("sni_names", &names)
            .finish()
    }
}

impl ServerTls {
    /// A certificate chain (PEM, leaf first) and its private key (PEM), ALPN `http/1.1`.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<ServerTls, TlsError> {
        let certs = Arc::new(CertStore(RwLock::new(Certs {
            default: certified_key(chain_pem, key_pem)?,
            by_name: HashMap::new(),
        })));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            certs,
        })
    }

    /// [`from_pem`](Self::from_pem) from two files.
    pub fn from_pem_files(chain: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        ServerTls::from_pem(&read_file(chain)?, &read_file(key)?)
    }

    /// The same certificates with other ALPN protocols (empty: no ALPN, as for a STOMP
    /// listener, whose clients offer none).
    pub fn with_alpn(&self, protocols: Vec<Vec<u8>>) -> ServerTls {
        let mut config = (*self.config).clone();
        config.alpn_protocols = protocols;
        ServerTls {
            config: Arc::new(config),
            certs: self.certs.clone(),
        }
    }

    /// Presents this chain to clients that ask for `name` by SNI (others get the default).
    pub fn add_sni(&self, name: &str, chain_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        ServerName::try_from(name).map_err(|_| TlsError::BadName(name.into()))?;
        let key = certified_key(chain_pem, key_pem)?;
        let mut certs = self.certs.0.write().unwrap_or_else(|e| e.into_inner());
        certs.by_name.insert(name.to_ascii_lowercase(), key);
        Ok(())
    }

    /// Replaces the default certificate. Handshakes from now on present the new one; open
    /// connections keep going on the keys they negotiated. On error nothing changes.
    pub fn reload(&self, chain_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let key = certified_key(chain_pem, key_pem)?;
        self.certs
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .default = key;
        Ok(())
    }

    /// [`reload`](Self::reload) from two files.
    pub fn reload_files(&self, chain: &Path, key: &Path) -> Result<(), TlsError> {
        self.reload(&read_file(chain)?, &read_file(key)?)
    }

    /// The rustls configuration (for servers built on other loops).
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    pub(crate) fn accept(&self) -> Result<rustls::ServerConnection, rustls::Error> {
        rustls::ServerConnection::new(self.config.clone())
    }
}

/// A client's TLS settings: which roots it trusts. The server's name (the URL's host) is always
/// checked against its certificate.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    /// Trusts exactly these roots (PEM, one or more certificates): a private CA.
    pub fn with_roots_pem(pem: &[u8]) -> Result<ClientTls, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs_from_pem(pem)? {
            roots.add(cert)?;
        }
        ClientTls::with_roots(roots)
    }

    /// [`with_roots_pem`](Self::with_roots_pem) from a file.
    pub fn with_roots_file(path: &Path) -> Result<ClientTls, TlsError> {
        ClientTls::with_roots_pem(&read_file(path)?)
    }

    /// Trusts the platform's roots (on Linux the system store, `/etc/ssl/certs`, or the files
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` name).
    pub fn platform() -> Result<ClientTls, TlsError> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = rustls::RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = match found.errors.first() {
                Some(e) => e.to_string(),
                None => "the platform's store is empty".into(),
            };
            return Err(TlsError::NoRoots(why));
        }
        ClientTls::with_roots(roots)
    }

    /// [`platform`](Self::platform), read once per process and shared: what the clients use
    /// when given no roots (reading the system store costs milliseconds, too much per
    /// connect). A failure is not kept: the next call reads again.
    pub fn platform_shared() -> Result<ClientTls, TlsError> {
        static LOADED: std::sync::OnceLock<ClientTls> = std::sync::OnceLock::new();
        if let Some(tls) = LOADED.get() {
            return Ok(tls.clone());
        }
        let tls = ClientTls::platform()?;
        Ok(LOADED.get_or_init(|| tls).clone())
    }

    fn with_roots(roots: rustls::RootCertStore) -> Result<ClientTls, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    /// The rustls configuration.
    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    /// A client connection to `host` (checked against the server's certificate).
    pub(crate) fn connect(&self, host: &str) -> Result<rustls::ClientConnection, TlsError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name =
            ServerName::try_from(host.to_string()).map_err(|_| TlsError::BadName(host.into()))?;
        Ok(rustls::ClientConnection::new(self.config.clone(), name)?)
    }
}

/// The rustls error inside an I/O error, if TLS is what failed.
pub fn tls_failure(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}
