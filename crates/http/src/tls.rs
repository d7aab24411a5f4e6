//! HTTPS (`--tls-cert/--tls-key`): the same router and the same accept loop and limits as
//! plain HTTP ([`crate::server`]), behind rustls with the ring provider.

use crate::{ApiState, router};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// A loaded certificate and key, ready to serve.
#[derive(Clone)]
pub struct TlsConfig(Arc<ServerConfig>);

impl TlsConfig {
    /// Reads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub async fn load(cert: &Path, key: &Path) -> Result<TlsConfig, String> {
        let (cert, key) = (cert.to_path_buf(), key.to_path_buf());
        tokio::task::spawn_blocking(move || Self::load_blocking(&cert, &key))
            .await
            .map_err(|e| format!("loading the TLS certificate: {e}"))?
    }

    fn load_blocking(cert: &Path, key: &Path) -> Result<TlsConfig, String> {
        let what = || {
            format!(
                "cannot use --tls-cert {} with --tls-key {}",
                cert.display(),
                key.display()
            )
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {}: {e}", what(), cert.display()))?;
        if chain.is_empty() {
            return Err(format!(
                "{}: {} holds no PEM certificate",
                what(),
                cert.display()
            ));
        }
        let private = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("{}: {}: {e}", what(), key.display()))?;
        // Only ring is compiled in: name it, rather than rely on a process default.
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("{}: {e}", what()))?
                .with_no_client_auth()
                .with_single_cert(chain, private)
                .map_err(|e| format!("{}: {e}", what()))?;
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
