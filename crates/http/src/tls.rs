//! HTTPS (`--tls-cert/--tls-key`): the same router behind rustls, with the ring provider.

use crate::{ApiState, router};
use axum_server::tls_rustls::RustlsConfig;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

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
}

/// Serves the API over HTTPS on `listener` until `shutdown` completes (then lets open requests
/// finish, at most 2 s), like [`crate::serve`] does over HTTP.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    state: ApiState,
    tls: TlsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.into_std()?;
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h.graceful_shutdown(Some(Duration::from_secs(2)));
    });
    axum_server::from_tcp_rustls(listener, tls.0)
        .handle(handle)
        .serve(router(state).into_make_service())
        .await
}
