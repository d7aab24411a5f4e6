//! The client side: operator commands (`tenure state|states|promote|demote`) and node-to-node
//! nudges.

use std::time::Duration;
use tenure_election::driver::Peers;
use tenure_election::{Mode, NodeState};

/// TLS settings of a client, for https:// URLs (plain http:// ignores them).
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// Accept any certificate (curl's `-k`): for operators testing a self-signed setup.
    pub insecure: bool,
    /// PEM certificates to trust besides the system's roots: a private CA, or the nodes' own
    /// self-signed certificate.
    pub ca: Option<std::path::PathBuf>,
}

/// Why an HTTP client could not be set up ([`Client::new`], [`NudgeClient::with_tls`]).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The `--tls-ca` file could not be read.
    #[error("cannot read the CA file {}: {source}", path.display())]
    ReadCa {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The `--tls-ca` file holds no usable PEM certificate.
    #[error("{} holds no PEM certificate: {source}", path.display())]
    NoCertificate {
        path: std::path::PathBuf,
        #[source]
        source: reqwest::Error,
    },
    /// reqwest could not build the client.
    #[error("cannot set up the HTTP client: {source}")]
    Build {
        #[source]
        source: reqwest::Error,
    },
}

impl Tls {
    fn apply(&self, mut b: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, SetupError> {
        // reqwest is built without a crypto provider of its own: ring is the only one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if self.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        if let Some(path) = &self.ca {
            let pem = std::fs::read(path).map_err(|e| SetupError::ReadCa {
                path: path.clone(),
                source: e,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                SetupError::NoCertificate {
                    path: path.clone(),
                    source: e,
                }
            })?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        Ok(b)
    }
}

/// A failed call, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {url}: is tenure running there? ({detail})")]
    Connect { url: String, detail: String },
    #[error("{url} did not answer within {}", humantime::format_duration(*timeout))]
    Timeout { url: String, timeout: Duration },
    #[error("{url} asks for a login: give -u user:password")]
    LoginRequired { url: String },
    #[error("{url} refused the login: check the user and password given with -u")]
    LoginRefused { url: String },
    /// Any other error status, with the server's `message`.
    #[error("{url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url} gave an answer tenure does not understand: {detail}")]
    Protocol { url: String, detail: String },
    #[error("{url}: {detail}")]
    Request { url: String, detail: String },
}

impl ClientError {
    /// The HTTP status, when the server answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::LoginRequired { .. } | ClientError::LoginRefused { .. } => Some(401),
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Talks to one node's API.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    timeout: Duration,
    basic_auth: Option<(String, String)>,
}

/// Brooklyn's paths (`/v1/server/ha/…`), which any Brooklyn-compatible node serves.
fn url(base: &str, path: &str) -> String {
    format!("{}/v1/server/ha/{path}", base.trim_end_matches('/'))
}

/// tenure's own paths (`/ha/…`), where the answers carry tenure's fields.
fn tenure_url(base: &str, path: &str) -> String {
    format!("{}/ha/{path}", base.trim_end_matches('/'))
}

impl Client {
    pub fn new(
        timeout: Duration,
        basic_auth: Option<(String, String)>,
    ) -> Result<Client, SetupError> {
        Client::build(timeout, basic_auth, &Tls::default())
    }

    /// Like [`Client::new`], with TLS settings for https:// URLs.
    ///
    /// The error stays a `String` (the [`SetupError`]'s message): the CLI's `query::client`
    /// returns this result as its own `Result<Client, String>`.
    pub fn with_tls(
        timeout: Duration,
        basic_auth: Option<(String, String)>,
        tls: &Tls,
    ) -> Result<Client, String> {
        Client::build(timeout, basic_auth, tls).map_err(|e| e.to_string())
    }

    fn build(
        timeout: Duration,
        basic_auth: Option<(String, String)>,
        tls: &Tls,
    ) -> Result<Client, SetupError> {
        let http = tls
            .apply(reqwest::Client::builder())?
            .timeout(timeout)
            .build()
            .map_err(|e| SetupError::Build { source: e })?;
        Ok(Client {
            http,
            timeout,
            basic_auth,
        })
    }

    /// The node's state and the `X-HA-Epoch` it sent (the master's epoch, if it knows one).
    pub async fn state(&self, base: &str) -> Result<(NodeState, Option<u64>), ClientError> {
        let u = url(base, "state");
        let resp = self.send(self.http.get(&u), &u).await?;
        let epoch = resp
            .headers()
            .get(crate::EPOCH_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok((decode(resp, &u).await?, epoch))
    }

    /// tenure's `/ha/states` view as the node sent it (every field, for printing).
    pub async fn states(&self, base: &str) -> Result<serde_json::Value, ClientError> {
        let u = tenure_url(base, "states");
        let resp = self.send(self.http.get(&u), &u).await?;
        decode(resp, &u).await
    }

    /// tenure's `/ha/states` view, typed (for `tenure check` and `tenure master`).
    pub async fn cluster(&self, base: &str) -> Result<crate::wire::States<'static>, ClientError> {
        let u = tenure_url(base, "states");
        let resp = self.send(self.http.get(&u), &u).await?;
        decode(resp, &u).await
    }

    /// The node's `/ha/metrics` (state, epoch, storage latency, transitions) as JSON.
    pub async fn metrics(&self, base: &str) -> Result<serde_json::Value, ClientError> {
        let u = url(base, "metrics");
        let resp = self.send(self.http.get(&u), &u).await?;
        decode(resp, &u).await
    }

    /// Asks the node to change mode; returns its state before the change.
    pub async fn set_mode(&self, base: &str, mode: Mode) -> Result<NodeState, ClientError> {
        let u = url(base, "state");
        let req = self.http.post(&u).form(&[("mode", mode.as_str())]);
        let resp = self.send(req, &u).await?;
        decode(resp, &u).await
    }

    /// Sets the node's priority; returns the previous one.
    pub async fn set_priority(&self, base: &str, priority: i64) -> Result<i64, ClientError> {
        let u = url(base, "priority");
        let req = self
            .http
            .post(&u)
            .form(&[("priority", priority.to_string())]);
        let resp = self.send(req, &u).await?;
        decode(resp, &u).await
    }

    async fn send(
        &self,
        mut req: reqwest::RequestBuilder,
        u: &str,
    ) -> Result<reqwest::Response, ClientError> {
        if let Some((user, password)) = &self.basic_auth {
            req = req.basic_auth(user, Some(password));
        }
        let resp = req.send().await.map_err(|e| self.transport_error(e, u))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(if self.basic_auth.is_some() {
                ClientError::LoginRefused { url: u.into() }
            } else {
                ClientError::LoginRequired { url: u.into() }
            });
        }
        let text = resp.text().await.unwrap_or_default();
        // Only `message` is read: it is in Brooklyn's ApiError and in older tenure's bodies.
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("unexpected status")
                    .to_string()
            });
        Err(ClientError::Status {
            url: u.into(),
            status: status.as_u16(),
            message,
        })
    }

    fn transport_error(&self, e: reqwest::Error, u: &str) -> ClientError {
        if e.is_timeout() {
            ClientError::Timeout {
                url: u.into(),
                timeout: self.timeout,
            }
        } else if e.is_connect() {
            ClientError::Connect {
                url: u.into(),
                detail: root_cause(&e),
            }
        } else {
            ClientError::Request {
                url: u.into(),
                detail: root_cause(&e),
            }
        }
    }
}

/// The innermost error's text ("Connection refused (os error 111)") is the one to show.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

async fn decode<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    u: &str,
) -> Result<T, ClientError> {
    let bytes = resp.bytes().await.map_err(|e| ClientError::Request {
        url: u.into(),
        detail: root_cause(&e),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
        url: u.into(),
        detail: e.to_string(),
    })
}

/// Sends nudges ("read the store now") to other nodes: fire and forget, 500 ms each.
#[derive(Clone, Debug)]
pub struct NudgeClient {
    http: reqwest::Client,
    runtime: Option<tokio::runtime::Handle>,
    /// Nudges still being sent: a releasing node drains them before it exits, or the
    /// runtime's shutdown would drop the very nudges that make the handover fast.
    in_flight: std::sync::Arc<tokio::sync::watch::Sender<usize>>,
    /// The cluster secret: nudges carry a token signed with it.
    keys: Option<std::sync::Arc<tenure_election::secret::Keyring>>,
}

impl NudgeClient {
    /// Call from within the tokio runtime the nudges should run on.
    pub fn new() -> Result<NudgeClient, SetupError> {
        NudgeClient::with_tls(&Tls::default())
    }

    /// Like [`NudgeClient::new`], trusting `tls` for peers with https:// URIs.
    pub fn with_tls(tls: &Tls) -> Result<NudgeClient, SetupError> {
        let http = tls
            .apply(reqwest::Client::builder())?
            .timeout(Duration::from_millis(500))
            // Nudges go to peers' own URIs; a proxy in the environment must not intercept them.
            .no_proxy()
            .build()
            .map_err(|e| SetupError::Build { source: e })?;
        Ok(NudgeClient {
            http,
            runtime: tokio::runtime::Handle::try_current().ok(),
            in_flight: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
            keys: None,
        })
    }

    /// Sign nudges with the cluster secret (peers with a secret ignore unsigned ones).
    pub fn with_keys(
        mut self,
        keys: Option<std::sync::Arc<tenure_election::secret::Keyring>>,
    ) -> NudgeClient {
        self.keys = keys;
        self
    }

    /// Wait until every nudge sent so far has been delivered or has failed, at most `limit`.
    pub async fn drain(&self, limit: Duration) {
        let mut rx = self.in_flight.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
    }
}

impl Peers for NudgeClient {
    fn nudge(&self, uris: Vec<String>) {
        let Some(rt) = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| self.runtime.clone())
        else {
            tracing::debug!("no tokio runtime to send nudges on");
            return;
        };
        let token = self
            .keys
            .as_ref()
            .map(|k| crate::nudge::nudge_token(k, tenure_election::clock::wall_millis()));
        for base in uris {
            let http = self.http.clone();
            let token = token.clone();
            let in_flight = self.in_flight.clone();
            in_flight.send_modify(|n| *n += 1);
            rt.spawn(async move {
                let u = url(&base, "nudge");
                let mut req = http.post(&u);
                if let Some(t) = token {
                    req = req.header(crate::nudge::NUDGE_AUTH_HEADER, t);
                }
                match req.send().await {
                    Ok(_) => tracing::debug!(url = %u, "nudged"),
                    Err(e) => tracing::debug!(url = %u, error = %root_cause(&e), "nudge failed"),
                }
                in_flight.send_modify(|n| *n -= 1);
            });
        }
    }
}
