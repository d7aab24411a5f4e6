//! The accept loop shared by HTTP and HTTPS, with the limits that keep one client from
//! starving the others (docs/security-http.md):
//!
//! - at most [`Limits::max_connections`] connections at once: the loop stops accepting while
//!   they are all taken, so further clients wait in the kernel's listen backlog (they are
//!   served, in order, as soon as a connection closes) instead of being turned away;
//! - a request's head (request line and headers) must arrive within
//!   [`Limits::header_timeout`], counted from when the server starts waiting for it — so this
//!   is also how long an idle keep-alive connection stays open — and be at most
//!   [`Limits::max_header_bytes`] and [`Limits::max_headers`] headers (431 above);
//! - a TLS handshake must finish within [`Limits::handshake_timeout`];
//! - a response write that makes no progress for [`Limits::write_timeout`] (a client that
//!   stopped reading) drops the connection;
//! - HTTP/1.1 only (TLS offers ALPN `http/1.1`).
//!
//! Body size and body read time are enforced per request by the router's middleware.
//!
//! An event stream (`…/ha/events`, [`crate::events`]) is long-lived: it gives its
//! connection's slot back ([`ConnSlot`]) and holds a place among the streams instead, so idle
//! subscribers never keep pollers out; its connection closes when the stream ends.

use crate::Limits;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// How long open requests may still finish after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` completes; then stops
/// accepting, lets open requests finish for at most [`SHUTDOWN_GRACE`] and returns.
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let max = limits.max_connections.clamp(1, u32::MAX as usize);
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        // Headers plus a read-ahead of the body; never below hyper's minimum.
        .max_buf_size((2 * limits.max_header_bytes).max(8192))
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        // Wait for a free slot before accepting: excess clients queue in the backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _peer)) => tcp,
                Err(e) => {
                    if !is_connection_error(&e) {
                        // Out of descriptors or similar: let it ease instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(200)) => {}
                            () = &mut shutdown => break,
                        }
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small answers to pollers: do not let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
        let slot = ConnSlot(Arc::new(std::sync::Mutex::new(Some(permit))));
        let conn = Conn {
            service: WithSlot {
                router: router.clone(),
                slot: slot.clone(),
            },
            builder: builder.clone(),
            write_timeout: limits.write_timeout,
            stop: stop_rx.clone(),
        };
        let tls = tls.clone();
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => conn.serve(tcp).await,
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => conn.serve(stream).await,
                        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot: all slots free means all connections are closed.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(max as u32)).await;
    Ok(())
}

/// Errors of one incoming connection, not of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A connection's place among [`Limits::max_connections`], until the connection closes or
/// [`ConnSlot::release`] gives it back.
#[derive(Clone)]
pub(crate) struct ConnSlot(Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>);

impl ConnSlot {
    /// Frees the connection's slot now (an event stream, which is limited on its own).
    pub(crate) fn release(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The router, handing event-stream requests their connection's [`ConnSlot`] (only those: the
/// other requests pay nothing for it).
#[derive(Clone)]
struct WithSlot {
    router: Router,
    slot: ConnSlot,
}

impl<B> tower_service::Service<hyper::Request<B>> for WithSlot
where
    Router: tower_service::Service<
            hyper::Request<B>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future = axum::routing::future::RouteFuture<std::convert::Infallible>,
        >,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::<hyper::Request<B>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut req: hyper::Request<B>) -> Self::Future {
        if req.uri().path().ends_with(crate::events::PATH_SUFFIX) {
            req.extensions_mut().insert(self.slot.clone());
        }
        self.router.call(req)
    }
}

struct Conn {
    service: WithSlot,
    builder: http1::Builder,
    write_timeout: Duration,
    stop: watch::Receiver<bool>,
}

impl Conn {
    async fn serve<IO>(mut self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(WriteDeadline::new(io, self.write_timeout));
        let conn = self
            .builder
            .serve_connection(io, TowerToHyperService::new(self.service));
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection closed: {e}");
                }
            }
            _ = async { self.stop.wait_for(|s| *s).await.map(|_| ()) } => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}

/// Fails a write (or flush) that has made no progress for `limit`: a client that stops
/// reading its answers cannot hold a connection (and a slot) forever.
struct WriteDeadline<IO> {
    io: IO,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> WriteDeadline<IO> {
    fn new(io: IO, limit: Duration) -> Self {
        WriteDeadline {
            io,
            limit,
            stalled: None,
        }
    }

    /// Called when the inner write is pending: `Ready(err)` once it has been for `limit`.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not read the answer in time",
        ))
    }

    fn progress<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_stall(cx).map(Err),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteDeadline<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.progress(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.progress(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_stalled_write_fails_after_the_limit_and_progress_resets_it() {
        use tokio::io::AsyncReadExt;
        let limit = Duration::from_millis(300);
        // A pipe with a 16-byte buffer.
        let (a, mut b) = tokio::io::duplex(16);
        let mut w = WriteDeadline::new(a, limit);
        w.write_all(&[0; 16]).await.unwrap();
        // The reader takes a byte every 100 ms: slow, but progress, so no error.
        let reader = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            for _ in 0..16 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                b.read_exact(&mut byte).await.unwrap();
            }
            b
        });
        w.write_all(&[0; 16]).await.unwrap();
        let _b = reader.await.unwrap();
        // Nobody reads any more: the write fails after the limit.
        let start = tokio::time::Instant::now();
        let err = w.write_all(&[0; 1]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = start.elapsed();
        assert!(took >= limit && took < limit * 10, "{took:?}");
    }
}
