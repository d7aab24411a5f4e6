//! The handlers and the access checks they declare as extractors.

use crate::error::{ApiError, JSON};
use crate::form::{Form, FormError, parse_form};
use crate::summary::{known_epoch, live_lease, summarize};
use crate::wire::HistoryEntry;
use crate::{ApiState, EpochDecided, X_HA_EPOCH, prom};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tenure_election::types::validate_node_name;
use tenure_election::{Command, Mode, Nanos, NodeState, Snapshot, clock};

// ---- access ----

/// Reads (every GET): open without `--users`, else reader or admin.
pub(crate) struct CanRead;
/// `GET …/ha/state` and `…/ha/master`: like [`CanRead`], but open with `--public-state`.
pub(crate) struct CanReadState;
/// Changes: admin only; refused outright without `--users`.
pub(crate) struct CanChange;

/// The caller's login (name and role), `None` on a node without `--users`; 401 for a wrong
/// or missing login.
pub(crate) async fn login(
    state: &ApiState,
    parts: &Parts,
) -> Result<Option<(String, crate::auth::Role)>, ApiError> {
    let Some(users) = &state.inner.users else {
        return Ok(None);
    };
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match users.authenticate(authorization).await {
        Ok(who) => Ok(Some(who)),
        Err(_) => Err(ApiError::unauthorized()),
    }
}

/// The caller's login name (`None` on a node without `--users`); 401 for a wrong login.
pub(crate) struct Login(pub Option<String>);

impl FromRequestParts<ApiState> for Login {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        Ok(Login(login(state, parts).await?.map(|(name, _)| name)))
    }
}

impl FromRequestParts<ApiState> for CanRead {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        login(state, parts).await.map(|_| CanRead)
    }
}

impl FromRequestParts<ApiState> for CanReadState {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        if state.inner.public_state {
            return Ok(CanReadState);
        }
        login(state, parts).await.map(|_| CanReadState)
    }
}

/// A change sent by a browser from another site (CSRF): refused. Browsers mark every request
/// with `Sec-Fetch-Site` (recent ones) or, on a POST, `Origin`; other clients (curl, Brooklyn's
/// clients, `tenure`) send neither and pass. A browser's cached basic-auth credentials would
/// otherwise let any page the operator visits change the cluster.
fn cross_site(parts: &Parts) -> Option<ApiError> {
    let refuse = || {
        Some(ApiError::forbidden(
            "cross-site request refused: a browser sent this change from another site's page; send changes from curl, tenure or a page served by this node",
        ))
    };
    if let Some(site) = parts.headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"same-origin" | b"none" => None,
            _ => refuse(),
        };
    }
    let origin = parts.headers.get(header::ORIGIN)?;
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()));
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, h)| h);
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => None,
        _ => refuse(),
    }
}

impl FromRequestParts<ApiState> for CanChange {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        if let Some(refused) = cross_site(parts) {
            return Err(refused);
        }
        match login(state, parts).await? {
            None => Err(ApiError::forbidden(
                "changes and exports are disabled: this node was started without --users; restart it with --users FILE (a user with role admin may then make them)",
            )),
            Some((_, crate::auth::Role::Admin)) => Ok(CanChange),
            Some((_, crate::auth::Role::Reader)) => Err(ApiError::forbidden(
                "this user has role reader; changes and exports need role admin",
            )),
        }
    }
}

// ---- helpers ----

fn quoted(s: NodeState) -> &'static str {
    match s {
        NodeState::Initializing => "\"INITIALIZING\"",
        NodeState::Standby => "\"STANDBY\"",
        NodeState::HotStandby => "\"HOT_STANDBY\"",
        NodeState::HotBackup => "\"HOT_BACKUP\"",
        NodeState::Master => "\"MASTER\"",
        NodeState::Failed => "\"FAILED\"",
        NodeState::Terminated => "\"TERMINATED\"",
    }
}

/// A JSON state string with a static body (the hot path allocates no body).
fn state_body(status: StatusCode, s: NodeState) -> Response {
    let mut resp = Response::new(Body::from(quoted(s)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, JSON);
    resp
}

/// The state answer with its epoch header, both decided at one instant.
fn state_now(state: &ApiState, master_only: bool) -> Response {
    // Borrowed rather than cloned: the hot path touches no shared reference count.
    let (s, epoch) = {
        let snap = state.inner.snapshot.borrow();
        let now = clock::now();
        (snap.state_at(now), snap.master_at(now).map(|(_, e)| e))
    };
    let code = if master_only && s != NodeState::Master {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut resp = state_body(code, s);
    if let Some(epoch) = epoch {
        resp.headers_mut()
            .insert(X_HA_EPOCH, HeaderValue::from(epoch));
    }
    resp.extensions_mut().insert(EpochDecided);
    resp
}

pub(crate) fn json_response(value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, JSON)], body).into_response(),
        Err(_) => ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    }
}

fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE)
    } else {
        ApiError::bad_request("the request body could not be read")
    }
}

/// The fields of a change request (see [`parse_form`]): 415 for a body that is neither a form
/// nor JSON.
pub(crate) struct ChangeForm(Form);

impl FromRequest<ApiState> for ChangeForm {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        // A header that is not visible ASCII is still a content type, just not an accepted one.
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("(not text)").to_string());
        let query = req.uri().query().map(str::to_string);
        let body = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_form(content_type.as_deref(), query.as_deref(), &body)
            .map(ChangeForm)
            .map_err(|e| match e {
                FormError::UnsupportedMediaType(m) => ApiError::unsupported_media_type(m),
                FormError::Malformed(m) => ApiError::bad_request(m),
            })
    }
}

fn required(form: &ChangeForm, name: &str, hint: &'static str) -> Result<String, ApiError> {
    form.0
        .get(name)
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request(format!("missing form field {name}: {hint}")))
}

/// User input echoed in an error, cut to a sane length.
fn echo(s: &str) -> Cow<'_, str> {
    if s.chars().count() <= 64 {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.chars().take(64).chain("…".chars()).collect())
    }
}

// ---- handlers ----

pub(crate) async fn get_state(_: CanReadState, State(state): State<ApiState>) -> Response {
    state_now(&state, false)
}

pub(crate) async fn get_master(_: CanReadState, State(state): State<ApiState>) -> Response {
    state_now(&state, true)
}

pub(crate) async fn set_mode(
    _: CanChange,
    State(state): State<ApiState>,
    form: ChangeForm,
) -> Result<Response, ApiError> {
    let raw = required(
        &form,
        "mode",
        "mode=auto, master, standby, hot-standby, hot-backup or disabled",
    )?;
    let mode: Mode = raw.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "unknown mode {:?}: use auto, master, standby, hot-standby, hot-backup or disabled (Brooklyn spellings such as HOT_STANDBY are accepted)",
            echo(&raw)
        ))
    })?;
    let previous = state.ask(|reply| Command::SetMode { mode, reply }).await?;
    Ok(state_body(StatusCode::OK, previous))
}

/// The two shapes of the cluster's states.
#[derive(Clone, Copy)]
enum Shape {
    /// `/ha/states`: tenure's view ([`crate::wire::States`]).
    Tenure = 0,
    /// `/v1/server/ha/states`: Brooklyn's `HighAvailabilitySummary`.
    Brooklyn = 1,
}

/// The last states body encoded (of one shape) and what it was computed from.
struct EncodedStates {
    snap: Arc<Snapshot>,
    at: Nanos,
    own: NodeState,
    lease_live: bool,
    body: Bytes,
}

/// How long an encoded states body is reused (its ages are in whole milliseconds).
const STATES_REUSE: Duration = Duration::from_millis(1);

/// The last body encoded of each shape, shared by every request: pollers asking many times a
/// millisecond get the same bytes instead of a fresh summary and JSON encoding each.
static LAST_STATES: [Mutex<Option<EncodedStates>>; 2] = [Mutex::new(None), Mutex::new(None)];

pub(crate) async fn get_states(_: CanRead, State(state): State<ApiState>) -> Response {
    states(&state, Shape::Tenure)
}

pub(crate) async fn get_ha_summary(_: CanRead, State(state): State<ApiState>) -> Response {
    states(&state, Shape::Brooklyn)
}

fn states(state: &ApiState, shape: Shape) -> Response {
    let snap = state.snapshot();
    let now = clock::now();
    // Whether a MASTER in the body still holds is decided now, not when it was encoded: the
    // body is reused only while the snapshot is the same, within STATES_REUSE, and with the
    // same own state and the same live lease, so no MASTER outlives its deadline.
    let own = snap.state_at(now);
    let lease_live = live_lease(&snap, now).is_some();
    let reusable = |c: &EncodedStates| {
        Arc::ptr_eq(&c.snap, &snap)
            && c.at <= now
            && now < c.at + STATES_REUSE
            && c.own == own
            && c.lease_live == lease_live
    };
    let cache = &LAST_STATES[shape as usize];
    if let Ok(last) = cache.try_lock()
        && let Some(c) = last.as_ref().filter(|c| reusable(c))
    {
        return states_response(c.body.clone());
    }
    let view = summarize(&snap, now);
    let encoded = match shape {
        Shape::Tenure => serde_json::to_vec(&view),
        Shape::Brooklyn => serde_json::to_vec(&view.brooklyn()),
    };
    let Ok(body) = encoded else {
        return ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR).into_response();
    };
    let body = Bytes::from(body);
    if let Ok(mut last) = cache.try_lock() {
        *last = Some(EncodedStates {
            snap,
            at: now,
            own,
            lease_live,
            body: body.clone(),
        });
    }
    states_response(body)
}

fn states_response(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, JSON)], body).into_response()
}

pub(crate) async fn get_priority(_: CanRead, State(state): State<ApiState>) -> Response {
    json_response(&state.snapshot().priority)
}

pub(crate) async fn set_priority(
    _: CanChange,
    State(state): State<ApiState>,
    form: ChangeForm,
) -> Result<Response, ApiError> {
    let raw = required(&form, "priority", "priority=<integer>, e.g. priority=10")?;
    let priority: i64 = raw.trim().parse().map_err(|_| {
        ApiError::bad_request(format!(
            "priority {:?} is not an integer: give e.g. priority=10",
            echo(&raw)
        ))
    })?;
    let previous = state
        .ask(|reply| Command::SetPriority { priority, reply })
        .await?;
    Ok(json_response(&previous))
}

pub(crate) async fn clear_states(
    _: CanChange,
    State(state): State<ApiState>,
    _: ChangeForm,
) -> Result<Response, ApiError> {
    let cleared = state.ask(|reply| Command::ClearStates { reply }).await?;
    Ok(json_response(&serde_json::json!({ "cleared": cleared })))
}

pub(crate) async fn clear_node(
    _: CanChange,
    State(state): State<ApiState>,
    form: ChangeForm,
) -> Result<Response, ApiError> {
    let name = required(&form, "nodeId", "nodeId=<node name>")?;
    validate_node_name(&name).map_err(|_| {
        ApiError::bad_request(format!(
            "nodeId {:?} is not a node name: use 1 to 64 letters, digits, '.', '_' or '-'",
            echo(&name)
        ))
    })?;
    let cleared = name.clone();
    state
        .ask(|reply| Command::ClearNode { name, reply })
        .await?;
    Ok(json_response(&serde_json::json!({ "cleared": [cleared] })))
}

#[derive(serde::Serialize)]
struct TransitionView<'a> {
    at: i64,
    from: NodeState,
    to: NodeState,
    epoch: Option<u64>,
    reason: &'a str,
}

/// Brooklyn's `getMetrics` map (`state`, `uptime`, `currentTimeUtc`, `startTimeUtc`,
/// `highAvailability: {priority, pollPeriod, heartbeatTimeout, history}`), with tenure's own
/// keys beside it: Brooklyn's clients read it as a map.
pub(crate) async fn ha_metrics(_: CanRead, State(state): State<ApiState>) -> Response {
    const MAX_TRANSITIONS: usize = 200;
    let snap = state.snapshot();
    let now = clock::now();
    let st = snap.state_at(now);
    let uptime = now.since(state.inner.started);
    let skip = snap.transitions.len().saturating_sub(MAX_TRANSITIONS);
    let recent = &snap.transitions[skip..];
    let transitions: Vec<TransitionView> = recent
        .iter()
        .map(|t| TransitionView {
            at: t.at_ms,
            from: t.from,
            to: t.to,
            epoch: t.epoch,
            reason: &t.reason,
        })
        .collect();
    // Brooklyn's history: newest first, starting from INITIALIZING at start-up.
    let mut history: Vec<HistoryEntry> = recent
        .iter()
        .rev()
        .map(|t| HistoryEntry {
            state: t.to,
            timestamp: t.at_ms,
        })
        .collect();
    if skip == 0 {
        history.push(HistoryEntry {
            state: NodeState::Initializing,
            timestamp: state.inner.started_wall_ms,
        });
    }
    let body = serde_json::json!({
        "state": st,
        "uptime": humantime::format_duration(Duration::from_secs(uptime.as_secs())).to_string(),
        "currentTimeUtc": clock::wall_millis(),
        "startTimeUtc": state.inner.started_wall_ms,
        "highAvailability": {
            "priority": snap.priority,
            "pollPeriod": snap.poll_period_ms,
            "heartbeatTimeout": snap.heartbeat_timeout_ms,
            "history": history,
        },
        "planeId": snap.plane_id,
        "nodeId": snap.own_name,
        "instanceId": snap.own_instance,
        "mode": snap.mode,
        "priority": snap.priority,
        "masterId": snap.master_at(now).map(|(n, _)| n),
        "epoch": known_epoch(&snap, now),
        "uptimeMs": u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
        "heartbeatTimeoutMs": snap.heartbeat_timeout_ms,
        "pollPeriodMs": snap.poll_period_ms,
        "storageErrors": snap.storage_errors,
        "forgedRecords": snap.forged_records,
        // The latest storage call and lease write, for monitors (`tenure check`): null
        // before the first one.
        "storageLatencyMs": last_ms(state.inner.stats.as_ref().and_then(|s| s.storage_latency.last())),
        "renewLatencyMs": last_ms(state.inner.stats.as_ref().and_then(|s| s.renew_latency.last())),
        "badRecords": snap.bad_records.len(),
        "transitions": transitions,
    });
    json_response(&body)
}

fn last_ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1e3)
}

pub(crate) async fn prometheus(_: CanRead, State(state): State<ApiState>) -> Response {
    match prom::encode(&state.inner.registry) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Err(_) => ApiError::from_status(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    }
}

/// A nudge only makes this node read the store sooner; it carries nothing to obey. Open to all
/// without a cluster secret; with one, it must carry a token signed with it (403 otherwise).
pub(crate) async fn nudge(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(keys) = &state.inner.nudge_keys {
        let token = headers
            .get(crate::nudge::NUDGE_AUTH_HEADER)
            .and_then(|v| v.to_str().ok());
        if let Err(e) = crate::nudge::check_nudge_token(keys, token, clock::wall_millis()) {
            tracing::debug!("refused a nudge: {e}");
            return ApiError::forbidden("the nudge is not signed with this cluster's secret")
                .into_response();
        }
    }
    state.nudge();
    StatusCode::ACCEPTED.into_response()
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::from_status(StatusCode::NOT_FOUND)
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::from_status(StatusCode::METHOD_NOT_ALLOWED)
}
