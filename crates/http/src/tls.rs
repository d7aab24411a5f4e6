//! HTTPS (`--tls-cert/--tls-key`): the same router and the same accept loop and limits as
//! plain HTTP ([`crate::server`]), behind rustls with the ring provider.

use crate::{ApiState, router};
use axum_server::tls_rustls::RustlsConfig;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// A loaded certificate and key, ready to serve.
#[derive(Clone)]
pub struct TlsConfig(RustlsConfig);

impl TlsConfig {
    /// Reads a PEM certificate chain and a PEM private key.
    pub async fn load(cert: &Path, key: &Path) -> Result<TlsConfig, String> {
        // Only ring is compiled in; installing it explicitly keeps rustls from guessing.
        let _ = rustls::crypto::ring::default_provider().install_default();
        RustlsConfig::from_pem_file(cert, key)
            .await
            .map(TlsConfig)
            .map_err(|e| {
                format!(
                    "cannot use --tls-cert {} with --tls-key {}: {e}",
                    cert.display(),
                    key.display()
                )
            })
    }

    fn acceptor(&self) -> TlsAcceptor {
        let mut config = (*self.0.get_inner()).clone();
        // The server speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
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
