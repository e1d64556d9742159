//! TLS with rustls from certificate and key files, reloaded when they
//! change (certificates renewed by an ACME client need no restart).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How often the files' modification times are compared.
const RELOAD_CHECK: Duration = Duration::from_secs(5);

fn load(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no certificate in it",
        cert.display()
    );
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow::anyhow!("unsupported private key: {e}"))?;
    Ok(CertifiedKey::new(certs, signing))
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Hands out the current certificate; a background task swaps it when the
/// files change.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certificate").clone())
    }
}

/// An acceptor for `config`'s files, and a task that reloads them.
pub fn acceptor(config: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let first = load(&config.cert, &config.key)?;
    let resolver = Arc::new(Reloading {
        current: RwLock::new(Arc::new(first)),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let (cert, key) = (config.cert.clone(), config.key.clone());
    tokio::spawn(async move {
        let mut seen = (modified(&cert), modified(&key));
        loop {
            tokio::time::sleep(RELOAD_CHECK).await;
            let now = (modified(&cert), modified(&key));
            if now == seen {
                continue;
            }
            seen = now;
            match load(&cert, &key) {
                Ok(fresh) => {
                    *resolver.current.write().expect("certificate") = Arc::new(fresh);
                    tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS files changed but could not be loaded; keeping the old certificate")
                }
            }
        }
    });
    Ok(TlsAcceptor::from(Arc::new(server)))
}
