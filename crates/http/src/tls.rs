//! HTTPS (`--tls-cert/--tls-key`): the same router and the same accept loop and limits as
//! plain HTTP ([`crate::server`]), behind rustls with the ring provider.

use crate::{ApiState, router};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// A loaded certificate and key, ready to serve.
#[derive(Clone)]
pub struct TlsConfig(Arc<ServerConfig>);

/// The pair of files `--tls-cert` and `--tls-key` name; its `Display` reads
/// "cannot use --tls-cert C with --tls-key K".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl std::fmt::Display for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot use --tls-cert {} with --tls-key {}",
            self.cert.display(),
            self.key.display()
        )
    }
}

/// Why [`TlsConfig::load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The blocking task loading the files did not finish (panicked or was cancelled).
    #[error("loading the TLS certificate: {source}")]
    Task {
        #[source]
        source: tokio::task::JoinError,
    },
    /// The certificate file could not be read or parsed as PEM.
    #[error("{files}: {}: {source}", files.cert.display())]
    Cert {
        files: TlsFiles,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{files}: {} holds no PEM certificate", files.cert.display())]
    NoCert { files: TlsFiles },
    /// The key file could not be read or holds no PEM private key.
    #[error("{files}: {}: {source}", files.key.display())]
    Key {
        files: TlsFiles,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the configuration (e.g. a key that does not match the certificate).
    #[error("{files}: {source}")]
    Rustls {
        files: TlsFiles,
        #[source]
        source: rustls::Error,
    },
}

impl TlsConfig {
    /// Reads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub async fn load(cert: &Path, key: &Path) -> Result<TlsConfig, TlsError> {
        let (cert, key) = (cert.to_path_buf(), key.to_path_buf());
        tokio::task::spawn_blocking(move || Self::load_blocking(&cert, &key))
            .await
            .map_err(|e| TlsError::Task { source: e })?
    }

    fn load_blocking(cert: &Path, key: &Path) -> Result<TlsConfig, TlsError> {
        let files = || TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsError::Cert {
                files: files(),
                source: e,
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCert { files: files() });
        }
        let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
            files: files(),
            source: e,
        })?;
        let refused = |e| TlsError::Rustls {
            files: files(),
            source: e,
        };
        // Only ring is compiled in: name it, rather than rely on a process default.
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(refused)?
                .with_no_client_auth()
                .with_single_cert(chain, private)
                .map_err(refused)?;
        // The server speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig(Arc::new(config)))
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.0.clone())
    }
}

/// Serves the API over HTTPS on `listener` until `shutdown` completes (then lets open requests
/// finish, at most 2 s), like [`crate::serve`] does over HTTP, with the same limits.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    state: ApiState,
    tls: TlsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits;
    crate::server::run(
        listener,
        router(state),
        limits,
        Some(tls.acceptor()),
        shutdown,
    )
    .await
}
