//! Brooklyn's `/v1/server/…` endpoints beside the HA ones: liveness (`up`, `healthy`,
//! `shuttingDown`, `up/extended`), `version`, `planeid`, `user`, `shutdown`, and plain answers
//! for the ones tenure deliberately does not provide.

use crate::api::{CanChange, CanRead, CanReadState, json_response};
use crate::error::ApiError;
use crate::summary::summarize;
use crate::wire::VersionSummary;
use crate::{ApiState, build};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::borrow::Cow;
use tenure_election::{Command, Nanos, NodeState, Snapshot, clock};

/// What the liveness endpoints answer, all decided at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Liveness {
    /// Started (past INITIALIZING) and not shutting down: Brooklyn's "startup complete and
    /// running".
    pub up: bool,
    /// A shutdown has begun (or the node has stopped): it releases and exits.
    pub shutting_down: bool,
    /// Up and not FAILED (store lost, disabled, a failed hook, …): Brooklyn's "up and no
    /// errors".
    pub healthy: bool,
}

pub(crate) fn liveness(snap: &Snapshot, now: Nanos) -> Liveness {
    let state = snap.state_at(now);
    let shutting_down = snap.shutting_down || state == NodeState::Terminated;
    let up = !shutting_down && state != NodeState::Initializing;
    Liveness {
        up,
        shutting_down,
        healthy: up && state != NodeState::Failed,
    }
}

fn now_liveness(state: &ApiState) -> Liveness {
    liveness(&state.inner.snapshot.borrow(), clock::now())
}

pub(crate) async fn up(_: CanReadState, State(state): State<ApiState>) -> Response {
    json_response(&now_liveness(&state).up)
}

pub(crate) async fn healthy(_: CanReadState, State(state): State<ApiState>) -> Response {
    json_response(&now_liveness(&state).healthy)
}

pub(crate) async fn shutting_down(_: CanReadState, State(state): State<ApiState>) -> Response {
    json_response(&now_liveness(&state).shutting_down)
}

/// Brooklyn's `up/extended`: the three booleans and the HA summary, from one snapshot.
pub(crate) async fn up_extended(_: CanRead, State(state): State<ApiState>) -> Response {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Extended<'a> {
        up: bool,
        shutting_down: bool,
        healthy: bool,
        ha: crate::wire::HaSummary<'a>,
    }
    let snap = state.snapshot();
    let now = clock::now();
    let l = liveness(&snap, now);
    let view = summarize(&snap, now);
    json_response(&Extended {
        up: l.up,
        shutting_down: l.shutting_down,
        healthy: l.healthy,
        ha: view.brooklyn(),
    })
}

pub(crate) async fn version(_: CanRead) -> Response {
    json_response(&VersionSummary {
        version: Cow::Borrowed(env!("CARGO_PKG_VERSION")),
        build_sha1: build::SHA1.map(Cow::Borrowed),
        build_branch: build::BRANCH.map(Cow::Borrowed),
        features: Vec::new(),
    })
}

/// The cluster id, as a JSON string (empty until the node has read `cluster.json`).
pub(crate) async fn plane_id(_: CanRead, State(state): State<ApiState>) -> Response {
    json_response(&state.snapshot().plane_id)
}

/// The login name of the caller, or null on a node without `--users` (the login is the check:
/// any user may ask who they are).
pub(crate) async fn user(user: crate::api::Login) -> Response {
    json_response(&user.0)
}

/// Brooklyn's `POST /v1/server/shutdown`: the same graceful stop as SIGTERM (release the lease
/// if held, then exit 0). Brooklyn's parameters (stopAppsFirst, …) do not apply and are
/// ignored; the answer comes before the release.
pub(crate) async fn shutdown(_: CanChange, State(state): State<ApiState>) -> Response {
    match state.inner.commands.send(Command::Shutdown).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(_) => ApiError::unavailable("the election driver is not running").into_response(),
    }
}

/// A Brooklyn endpoint tenure does not provide, with the reason.
fn not_provided(what: &'static str) -> ApiError {
    ApiError::new(StatusCode::NOT_IMPLEMENTED, "not-provided", what)
}

pub(crate) async fn properties_reload(_: CanChange) -> ApiError {
    not_provided(
        "tenure has no properties file to reload: its settings are flags (or --config); restart the node to change them",
    )
}

pub(crate) async fn config(_: CanRead) -> ApiError {
    not_provided(
        "tenure does not serve its configuration over HTTP: see the flags in the node's log line 'serving the HA API' or its unit file",
    )
}
