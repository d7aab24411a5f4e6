//! JSON error bodies in Brooklyn's `ApiError` shape: `{"message": "<human text>", "data":
//! {"code": "<short-code>"}, "error": <status>}` (see [`crate::wire::ErrorBody`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;
use tenure_election::CommandError;

pub(crate) const JSON: HeaderValue = HeaderValue::from_static("application/json");

#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong login: send basic auth credentials of a user in this node's --users file",
        )
    }
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("the request body is larger than {} KiB", limit / 1024),
        )
    }
    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            format!(
                "the request body did not arrive within {}",
                humantime::format_duration(limit)
            ),
        )
    }
    pub fn unsupported_media_type(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            message,
        )
    }
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// A body for a bare status produced outside our handlers (e.g. by an axum rejection).
    pub fn from_status(status: StatusCode) -> Self {
        let (code, message): (&'static str, &'static str) = match status {
            StatusCode::BAD_REQUEST => ("bad-request", "the request is malformed"),
            StatusCode::UNAUTHORIZED => return Self::unauthorized(),
            StatusCode::FORBIDDEN => ("forbidden", "not allowed"),
            StatusCode::NOT_FOUND => (
                "not-found",
                "no such path: the API is under /v1/server/… (Brooklyn's), /ha/… (tenure's) and /metrics",
            ),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method-not-allowed",
                "this path does not accept that method (see the Allow header)",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "the request body is too large"),
            StatusCode::REQUEST_TIMEOUT => {
                ("request-timeout", "the request did not arrive in time")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported-media-type",
                "send form fields as application/x-www-form-urlencoded, application/json or in the query string",
            ),
            s if s.is_server_error() => ("internal", "the server could not answer this request"),
            _ => ("error", "the request failed"),
        };
        Self::new(status, code, message)
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            CommandError::BadRequest(m) => Self::bad_request(m),
            CommandError::ShuttingDown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                "the node is shutting down",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = crate::wire::ErrorBody {
            message: self.message,
            details: None,
            data: Some(crate::wire::ErrorData {
                code: Cow::Borrowed(self.code),
            }),
            error: self.status.as_u16(),
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (self.status, [(header::CONTENT_TYPE, JSON)], body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tenure\""),
            );
        }
        resp
    }
}
