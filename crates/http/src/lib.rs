//! tenure's HTTP API (DESIGN §5): Apache Brooklyn's `/v1/server/…` endpoints in Brooklyn's
//! shapes, tenure's own view under `/ha/…`, Prometheus metrics, basic auth, and the client used by the CLI and for nudges.
//!
//! Every answer is computed from the election's [`Snapshot`] at the moment of the request:
//! MASTER is decided by comparing the lease deadline with the clock, never read from a flag.

mod api;
pub mod auth;
mod build;
pub mod client;
mod console;
mod error;
mod events;
mod export;
mod form;
pub mod history;
pub mod nudge;
mod prom;
mod server;
mod server_info;
mod summary;
mod tls;
pub mod wire;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tenure_election::{Command, CommandError, Nanos, Snapshot, clock};
use tokio::sync::{mpsc, oneshot, watch};

pub use auth::{Users, UsersError, hash_password};
pub use client::{Client, ClientError, NudgeClient, SetupError, Tls};
pub use form::{Form, FormError, parse_form};
pub use nudge::NudgeError;
pub use tls::{TlsConfig, TlsError, TlsFiles, serve_tls};

use error::ApiError;

/// Largest request body accepted (413 above): change requests carry one short field.
pub const MAX_BODY: usize = 16 * 1024;
/// Largest request head (request line and headers) accepted (431 above).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most headers in one request (431 above).
pub const MAX_HEADERS: usize = 64;
/// Time allowed for a request's head to arrive, from when the server waits for it (so also
/// the longest a keep-alive connection stays idle). Slower clients are disconnected.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a request's body to arrive once its head has (408 after).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A response write that makes no progress this long (the client stopped reading) drops the
/// connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once; more wait in the listen backlog until one closes.
pub const MAX_CONNECTIONS: usize = 256;

/// The limits of the HTTP server (see `docs/security-http.md`). [`Limits::default`] holds the
/// constants above; tests shorten them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_body: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub write_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: MAX_BODY,
            max_header_bytes: MAX_HEADER_BYTES,
            max_headers: MAX_HEADERS,
            header_timeout: HEADER_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}
/// Header carrying the fencing token of the master this node knows of.
pub const EPOCH_HEADER: &str = "x-ha-epoch";
const X_HA_EPOCH: HeaderName = HeaderName::from_static(EPOCH_HEADER);

/// Least time between two nudges passed to the driver.
const NUDGE_GAP: Duration = Duration::from_millis(100);

#[derive(Default)]
struct NudgeGate {
    last: Option<Nanos>,
    pending: bool,
}

struct Inner {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    commands: mpsc::Sender<Command>,
    users: Option<Users>,
    public_state: bool,
    started: Nanos,
    started_wall_ms: i64,
    nudges: std::sync::Mutex<NudgeGate>,
    registry: prometheus_client::registry::Registry,
    stats: Option<Arc<tenure_election::Stats>>,
    /// With a cluster secret, only nudges signed with it are passed on.
    nudge_keys: Option<Arc<tenure_election::secret::Keyring>>,
    /// The store, for `/ha/persist/export` only (the driver does all the election's I/O).
    store: Option<Arc<dyn tenure_store::Store>>,
    /// The cached terms of `…/ha/history` (read from `epochs/` by the HTTP layer).
    history: history::History,
    /// The `…/ha/events` streams: their count and the digest they share.
    events: events::Hub,
}

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
    command_timeout: Duration,
    limits: Limits,
    /// The deadline of one storage call (`--storage-timeout`), for the history's reads.
    storage_timeout: Option<Duration>,
}

impl ApiState {
    pub fn new(
        snapshot: watch::Receiver<Arc<Snapshot>>,
        commands: mpsc::Sender<Command>,
        users: Option<Users>,
        public_state: bool,
    ) -> Self {
        ApiState {
            inner: Arc::new(Inner {
                registry: prom::registry(snapshot.clone(), None),
                stats: None,
                snapshot,
                commands,
                users,
                public_state,
                started: clock::now(),
                started_wall_ms: clock::wall_millis(),
                nudges: std::sync::Mutex::new(NudgeGate::default()),
                nudge_keys: None,
                store: None,
                history: history::History::default(),
                events: events::Hub::default(),
            }),
            command_timeout: Duration::from_secs(60),
            limits: Limits::default(),
            storage_timeout: None,
        }
    }

    /// Accept only nudges signed with the cluster secret.
    pub fn with_nudge_keys(mut self, keys: Option<Arc<tenure_election::secret::Keyring>>) -> Self {
        let inner =
            Arc::get_mut(&mut self.inner).expect("with_nudge_keys is called before cloning");
        inner.nudge_keys = keys;
        self
    }

    /// Lets admins export the store's records (`GET /v1/server/ha/persist/export`).
    pub fn with_store(mut self, store: Arc<dyn tenure_store::Store>) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("with_store is called before cloning");
        inner.store = Some(store);
        self
    }

    /// The deadline of one storage call (`--storage-timeout`); the history reads `epochs/`
    /// within two of them. Default: the default for the snapshot's poll period.
    pub fn with_storage_timeout(mut self, timeout: Duration) -> Self {
        self.storage_timeout = Some(timeout);
        self
    }

    fn storage_timeout(&self) -> Duration {
        self.storage_timeout.unwrap_or_else(|| {
            tenure_election::config::Config::default_storage_timeout(Duration::from_millis(
                self.inner.snapshot.borrow().poll_period_ms,
            ))
        })
    }

    /// The server's limits (default [`Limits::default`]).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Adds the driver's counters to `/metrics` (latency histograms; transitions since start).
    /// Call before the state is cloned.
    pub fn with_stats(mut self, stats: Arc<tenure_election::Stats>) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("with_stats is called before cloning");
        inner.registry = prom::registry(inner.snapshot.clone(), Some(stats.clone()));
        inner.stats = Some(stats);
        self
    }

    /// How long a change request waits for the driver's answer (default 60 s; then 503).
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Passes a nudge on to the driver, at most one per [`NUDGE_GAP`]: nudges need no login,
    /// so a flood must not turn into a flood of store reads. One arriving within the gap is
    /// sent when the gap ends (coalesced with any others), so none is lost.
    fn nudge(&self) {
        let now = clock::now();
        let delay = {
            let mut gate = self.inner.nudges.lock().unwrap_or_else(|e| e.into_inner());
            match gate.last {
                Some(last) if now < last + NUDGE_GAP => {
                    if gate.pending {
                        return;
                    }
                    gate.pending = true;
                    (last + NUDGE_GAP).since(now)
                }
                _ => {
                    gate.last = Some(now);
                    Duration::ZERO
                }
            }
        };
        if delay.is_zero() {
            // A full queue means a read is already due.
            let _ = self.inner.commands.try_send(Command::Nudge);
            return;
        }
        let state = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            {
                let mut gate = state.inner.nudges.lock().unwrap_or_else(|e| e.into_inner());
                gate.pending = false;
                gate.last = Some(clock::now());
            }
            let _ = state.inner.commands.try_send(Command::Nudge);
        });
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.borrow().clone()
    }

    /// Sends a command to the driver and waits for its reply.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, CommandError>>) -> Command,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let cmd = make(tx);
        let work = async {
            self.inner
                .commands
                .send(cmd)
                .await
                .map_err(|_| ApiError::unavailable("the election driver is not running"))?;
            rx.await
                .map_err(|_| ApiError::unavailable("the election driver stopped before answering"))?
                .map_err(ApiError::from)
        };
        match tokio::time::timeout(self.command_timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the node did not carry out the request within {}",
                    humantime::format_duration(self.command_timeout)
                ),
            )),
        }
    }
}

/// The API's routes: Brooklyn's `/v1/server/…` (its shapes exactly), tenure's own `/ha/…` (the
/// same endpoints; `/ha/states` with tenure's richer rows) and `/metrics`. Each route is
/// registered flat rather than `nest`ed: a nested router costs a second dispatch and a URI
/// rewrite per request (flat: +8 % requests/s, docs/BENCHMARKS.md).
pub fn router(state: ApiState) -> Router {
    let mut r = Router::new();
    for prefix in ["/v1/server/ha", "/ha"] {
        r = r
            .route(
                &format!("{prefix}/state"),
                get(api::get_state).post(api::set_mode),
            )
            .route(&format!("{prefix}/states/clear"), post(api::clear_states))
            .route(
                &format!("{prefix}/states/clear/node"),
                post(api::clear_node),
            )
            .route(&format!("{prefix}/master"), get(api::get_master))
            .route(
                &format!("{prefix}/priority"),
                get(api::get_priority).post(api::set_priority),
            )
            .route(&format!("{prefix}/metrics"), get(api::ha_metrics))
            .route(&format!("{prefix}/history"), get(history::history))
            .route(&format!("{prefix}/events"), get(events::events))
            .route(&format!("{prefix}/nudge"), post(api::nudge))
            .route(&format!("{prefix}/persist/export"), get(export::export))
            .route(&format!("{prefix}/persist/import"), post(export::import));
    }
    r.route("/v1/server/ha/states", get(api::get_ha_summary))
        .route("/ha/states", get(api::get_states))
        .route("/v1/server/up", get(server_info::up))
        .route("/v1/server/healthy", get(server_info::healthy))
        .route("/v1/server/shuttingDown", get(server_info::shutting_down))
        .route("/v1/server/up/extended", get(server_info::up_extended))
        .route("/v1/server/version", get(server_info::version))
        .route("/v1/server/planeid", get(server_info::plane_id))
        .route("/v1/server/user", get(server_info::user))
        .route("/v1/server/shutdown", post(server_info::shutdown))
        .route(
            "/v1/server/properties/reload",
            post(server_info::properties_reload),
        )
        .route("/v1/server/config/{key}", get(server_info::config))
        .route("/metrics", get(api::prometheus))
        .merge(console::routes())
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits.max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), finish))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes (then lets open requests finish,
/// at most 2 s), with the state's [`Limits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits;
    server::run(listener, router(state), limits, None, shutdown).await
}

/// Marks a response whose `X-HA-Epoch` was decided by the handler at the same instant as its
/// body, so the middleware leaves it alone.
#[derive(Clone, Copy)]
struct EpochDecided;

/// Runs around every request: the body read (size limit, time limit), JSON bodies for every
/// error, and the `X-HA-Epoch` header.
async fn finish(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let mut resp = match read_body(&state.limits, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    };

    let status = resp.status();
    if (status.is_client_error() || status.is_server_error()) && !is_json(&resp) {
        let mut replaced = ApiError::from_status(status).into_response();
        for (name, value) in resp.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                replaced.headers_mut().append(name, value.clone());
            }
        }
        resp = replaced;
    }

    if resp.extensions_mut().remove::<EpochDecided>().is_none() {
        let snap = state.snapshot();
        if let Some((_, epoch)) = snap.master_at(clock::now()) {
            resp.headers_mut()
                .insert(X_HA_EPOCH, HeaderValue::from(epoch));
        }
    }
    resp
}

/// Reads the whole body before any handler runs: at most `max_body` bytes (413) within
/// `body_timeout` (408), so a slow or endless body cannot hold a handler.
async fn read_body(limits: &Limits, req: Request) -> Result<Request, ApiError> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limits.max_body as u64) {
        return Err(ApiError::too_large(limits.max_body));
    }
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, limits.max_body);
    match tokio::time::timeout(limits.body_timeout, limited.collect()).await {
        Err(_) => Err(ApiError::body_timeout(limits.body_timeout)),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::too_large(limits.max_body))
        }
        Ok(Err(_)) => Err(ApiError::bad_request("the request body could not be read")),
        Ok(Ok(collected)) => Ok(Request::from_parts(parts, Body::from(collected.to_bytes()))),
    }
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}
