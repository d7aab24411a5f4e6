//! Notifications (`tenure run --notify-email`, `--notify-webhook`): e-mail through SMTP and a
//! JSON POST when this node becomes or stops being master (and why), when storage has failed
//! for longer than D, when forged or replayed records appear in the store, and when the node
//! exits because another process runs under its name. (`notify.rs` is systemd's sd_notify.)
//!
//! The election never waits for any of it: a watcher task reads the snapshots the driver
//! publishes on its watch channel (a send there never blocks) and the driver's [`Stats`], derives
//! the events ([`Deriver`], pure), rate-limits them ([`Limiter`], pure) and hands them to a
//! sender task through a bounded queue with `try_send`: a full queue drops the notification
//! (WARN, counted as failed) rather than wait. The sender delivers each one to every channel at
//! once, each bounded by --notify-timeout; a failure is logged (WARN, naming the server) and
//! counted in `tenure_notifications_failed_total{channel}`, a delivery in
//! `tenure_notifications_sent_total{channel}`.
//!
//! Rate limit: a notification of a kind already sent less than [`SAME_KIND_WINDOW`] ago with
//! the same content (the same epoch, the same set of bad records, …) is suppressed, and the
//! next one of that kind says how many were; over every [`FLOOD_WINDOW`], at most
//! [`FLOOD_MAX`] notifications leave the node whatever their content (a flapping master must
//! not flood an inbox).

use crate::args::NotifyArgs;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tenure_election::snapshot::Transition;
use tenure_election::stats::Channel;
use tenure_election::{Nanos, NodeState, Snapshot, Stats, clock};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

/// A notification of a kind, with unchanged content, is sent at most once per this long.
pub const SAME_KIND_WINDOW: Duration = Duration::from_secs(5 * 60);
/// At most [`FLOOD_MAX`] notifications per this long, of all kinds together.
pub const FLOOD_WINDOW: Duration = Duration::from_secs(5 * 60);
pub const FLOOD_MAX: usize = 10;
/// Notifications waiting for the sender; beyond this they are dropped (and counted failed).
const QUEUE: usize = 32;
/// How often the watcher looks at the storage-failure clock when no snapshot arrives.
const TICK: Duration = Duration::from_millis(500);
/// The longest a shutdown waits for the last notifications (never longer than --notify-timeout).
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    BecameMaster,
    StoppedMaster,
    StorageFailing,
    StorageRecovered,
    BadRecords,
    DuplicateName,
    /// Expected members (--expect-nodes, --cluster-file) absent or silent.
    NodeMissing,
}

impl Kind {
    /// The `event` field of the webhook's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::BecameMaster => "became_master",
            Kind::StoppedMaster => "stopped_master",
            Kind::StorageFailing => "storage_failing",
            Kind::StorageRecovered => "storage_recovered",
            Kind::BadRecords => "bad_records",
            Kind::DuplicateName => "duplicate_name",
            Kind::NodeMissing => "node_missing",
        }
    }
}

/// One notification.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub kind: Kind,
    /// What makes two notifications of a kind different (the rate limit compares it).
    pub key: String,
    pub node: String,
    pub cluster: String,
    pub epoch: Option<u64>,
    /// The e-mail subject (without the "[tenure] " prefix).
    pub subject: String,
    /// One paragraph: the webhook's `text` and the e-mail's first line.
    pub text: String,
    /// The election's own words (the transition's reason), in the e-mail; may be empty.
    pub detail: String,
    /// Wall clock (ms since the Unix epoch) of the event.
    pub at_ms: i64,
}

/// "promoted to MASTER at epoch 3 (expired); answers …" in words for the notification.
fn promotion_words(reason: &str) -> &'static str {
    let how = reason
        .split_once(" (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map_or("", |(w, _)| w);
    match how {
        "cold-start" => "the first master of a new cluster",
        "expired" => "took over an expired lease (the previous master stopped renewing)",
        "released" => "took over a released lease",
        "switchover" => "planned switchover: the previous master handed over to it",
        "retake" => "retook its own lease",
        _ => "took the lease",
    }
}

fn classify_stop(reason: &str) -> &'static str {
    if reason.starts_with("self-fenced") {
        "self-fenced"
    } else if reason.contains("releasing the lease") {
        "released the lease"
    } else if reason.contains("lost the lease") || reason.contains("another node took over") {
        "lost the lease"
    } else if reason.contains("wall clock jumped") {
        "clock jump"
    } else {
        "stood down"
    }
}

fn secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// Derives the events from successive snapshots (and the driver's storage-failure clock).
#[derive(Debug, Default)]
pub struct Deriver {
    last_transition: Option<Transition>,
    forged_seen: u64,
    /// The failing episode already notified (its start).
    storage_alerted: Option<Nanos>,
    /// Expected members missing since (this node's clock), and whether already notified.
    missing: Vec<(String, Nanos, bool)>,
}

impl Deriver {
    /// The events since the last call. `failing_since`: [`Stats::storage_failing_since`];
    /// `now` on the same clock; `d`: the renew deadline D; `wall_ms`: the wall clock.
    pub fn derive(
        &mut self,
        snap: &Snapshot,
        failing_since: Option<Nanos>,
        now: Nanos,
        d: Duration,
        wall_ms: i64,
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        let alert = |kind, key: String, epoch, subject: String, text: String, at_ms| Alert {
            kind,
            key,
            node: snap.own_name.clone(),
            cluster: snap.plane_id.clone(),
            epoch,
            subject,
            text,
            detail: String::new(),
            at_ms,
        };
        // Transitions: the snapshot keeps the latest ones; those after the last one seen are new
        // (all of them when it has scrolled out).
        let start = self
            .last_transition
            .as_ref()
            .and_then(|last| snap.transitions.iter().rposition(|t| t == last))
            .map_or(0, |i| i + 1);
        for t in &snap.transitions[start..] {
            let name = &snap.own_name;
            let epoch = t.epoch.map_or("?".to_string(), |e| e.to_string());
            let at_ms = if t.at_ms != 0 { t.at_ms } else { wall_ms };
            if t.to == NodeState::Master && t.from != NodeState::Master {
                let mut a = alert(
                    Kind::BecameMaster,
                    epoch.clone(),
                    t.epoch,
                    format!("{name} became MASTER (epoch {epoch})"),
                    format!(
                        "{name} became MASTER at epoch {epoch}: {}",
                        promotion_words(&t.reason)
                    ),
                    at_ms,
                );
                a.detail = t.reason.clone();
                out.push(a);
            } else if t.from == NodeState::Master && t.to != NodeState::Master {
                let why = classify_stop(&t.reason);
                let mut a = alert(
                    Kind::StoppedMaster,
                    format!("{epoch} {why}"),
                    t.epoch,
                    format!("{name} stopped being MASTER (epoch {epoch}): {why}"),
                    format!(
                        "{name} stopped being MASTER (epoch {epoch}), now {}: {why}: {}",
                        t.to, t.reason
                    ),
                    at_ms,
                );
                a.detail = t.reason.clone();
                out.push(a);
            }
        }
        if let Some(t) = snap.transitions.last() {
            self.last_transition = Some(t.clone());
        }
        // Storage: one notification per failing episode, once it outlasts D; one when it ends.
        match failing_since {
            Some(since) if now.since(since) > d && self.storage_alerted != Some(since) => {
                self.storage_alerted = Some(since);
                let name = &snap.own_name;
                out.push(alert(
                    Kind::StorageFailing,
                    since.0.to_string(),
                    snap.own_epoch,
                    format!("{name}: storage failing for {}", secs(now.since(since))),
                    format!(
                        "{name}: every storage call has failed for {}, longer than the renew deadline D={} ({} storage errors since start); a master stands down when it cannot renew within D",
                        secs(now.since(since)),
                        secs(d),
                        snap.storage_errors
                    ),
                    wall_ms,
                ));
            }
            None => {
                if let Some(since) = self.storage_alerted.take() {
                    let name = &snap.own_name;
                    out.push(alert(
                        Kind::StorageRecovered,
                        since.0.to_string(),
                        snap.own_epoch,
                        format!("{name}: storage works again"),
                        format!(
                            "{name}: storage works again after failing for {}",
                            secs(now.since(since))
                        ),
                        wall_ms,
                    ));
                }
            }
            Some(_) => {}
        }
        // Forged or replayed records: a notification when the count grows, keyed by the set of
        // bad records so that one forger rewriting one record is one notification per window.
        if snap.forged_records > self.forged_seen {
            let new = snap.forged_records - self.forged_seen;
            self.forged_seen = snap.forged_records;
            let mut keys: Vec<&str> = snap.bad_records.iter().map(|b| b.key.as_str()).collect();
            keys.sort_unstable();
            let list = snap
                .bad_records
                .iter()
                .map(|b| format!("{}: {}", b.key, b.reason))
                .collect::<Vec<_>>()
                .join("; ");
            let name = &snap.own_name;
            out.push(alert(
                Kind::BadRecords,
                keys.join(","),
                snap.own_epoch,
                format!("{name}: forged or replayed records in the store"),
                format!(
                    "{name}: {new} forged, replayed or wrongly signed record(s) seen ({} in all), ignored{}; someone who can write the store wrote them",
                    snap.forged_records,
                    if list.is_empty() {
                        String::new()
                    } else {
                        format!(" ({list})")
                    }
                ),
                wall_ms,
            ));
        }
        // Expected members missing (`Snapshot::missing_at`: no record, silent for T, or
        // stopped) for longer than D, once this node has read the store: a cluster whose nodes
        // start a few seconds apart is not a missing node. One notification per new name.
        let initializing = snap.state_at(now) == NodeState::Initializing;
        let now_missing: Vec<&str> = if initializing {
            Vec::new()
        } else {
            snap.missing_at(now)
        };
        self.missing
            .retain(|(n, _, _)| now_missing.contains(&n.as_str()));
        for n in &now_missing {
            if !self.missing.iter().any(|(m, _, _)| m == n) {
                self.missing.push((n.to_string(), now, false));
            }
        }
        let due: Vec<String> = self
            .missing
            .iter_mut()
            .filter(|(_, since, told)| !*told && now.since(*since) >= d)
            .map(|(n, _, told)| {
                *told = true;
                n.clone()
            })
            .collect();
        if !due.is_empty() {
            let name = &snap.own_name;
            let all: Vec<&str> = self.missing.iter().map(|(n, _, _)| n.as_str()).collect();
            out.push(alert(
                Kind::NodeMissing,
                all.join(","),
                snap.own_epoch,
                format!("{name}: expected node(s) missing: {}", due.join(", ")),
                format!(
                    "{name}: expected node(s) {} missing (no heartbeat, silent for T, or stopped); missing now: {}",
                    due.join(", "),
                    all.join(", ")
                ),
                wall_ms,
            ));
        }
        out
    }
}

/// The notification for an exit because the node's name is taken, if `message` says so.
pub fn exit_alert(snap: &Snapshot, message: &str, wall_ms: i64) -> Option<Alert> {
    message.starts_with("duplicate node name").then(|| Alert {
        kind: Kind::DuplicateName,
        key: String::new(),
        node: snap.own_name.clone(),
        cluster: snap.plane_id.clone(),
        epoch: None,
        subject: format!("{}: duplicate node name, exited", snap.own_name),
        text: format!("{} exited: {message}", snap.own_name),
        detail: String::new(),
        at_ms: wall_ms,
    })
}

/// The rate limit (module documentation); instants are passed in.
#[derive(Debug, Default)]
pub struct Limiter {
    last: HashMap<Kind, (String, Instant)>,
    suppressed: HashMap<Kind, u64>,
    sent: VecDeque<Instant>,
}

impl Limiter {
    /// Whether `a` may be sent at `now` (then it is recorded as sent, and its text mentions the
    /// notifications of its kind suppressed before it).
    pub fn admit(&mut self, a: &mut Alert, now: Instant) -> bool {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= FLOOD_WINDOW)
        {
            self.sent.pop_front();
        }
        let repeat = self
            .last
            .get(&a.kind)
            .is_some_and(|(key, at)| *key == a.key && now.duration_since(*at) < SAME_KIND_WINDOW);
        if repeat || self.sent.len() >= FLOOD_MAX {
            *self.suppressed.entry(a.kind).or_default() += 1;
            return false;
        }
        if let Some(n) = self.suppressed.remove(&a.kind) {
            a.text.push_str(&format!(
                " ({n} similar notification(s) suppressed before this one)"
            ));
        }
        self.last.insert(a.kind, (a.key.clone(), now));
        self.sent.push_back(now);
        true
    }
}

/// Where the notifications go, checked at start-up.
pub struct Channels {
    email: Option<Email>,
    webhook: Option<Webhook>,
    timeout: Duration,
}

struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// The server as logged (no credentials: they are never in the URL).
    server: String,
}

struct Webhook {
    client: reqwest::Client,
    url: String,
    /// Scheme, host and port only: an incoming-webhook URL's path is its secret.
    server: String,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `user:password` on one line, or the user and the password on two; the file must not be
/// readable by group or others.
pub fn read_credentials(path: &Path) -> Result<(String, String), String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let shown = path.display();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("cannot open {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} has mode {mode:o}: it holds a password, so group and others must not read it (chmod 600 {shown})"
        ));
    }
    let mut text = String::new();
    file.by_ref()
        .take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    parse_credentials(&text).ok_or_else(|| {
        format!("{shown} holds no credentials: give `user:password`, or the user and the password on two lines")
    })
}

fn parse_credentials(text: &str) -> Option<(String, String)> {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .collect();
    match lines.as_slice() {
        [one] => {
            let (u, p) = one.split_once(':')?;
            (!u.trim().is_empty() && !p.is_empty()).then(|| (u.trim().to_string(), p.to_string()))
        }
        [u, p] if !u.trim().is_empty() => Some((u.trim().to_string(), p.to_string())),
        _ => None,
    }
}

impl Channels {
    /// The channels `a` asks for (`None`: no notifications), or why they cannot be used.
    pub fn from_args(a: &NotifyArgs) -> Result<Option<Channels>, String> {
        if a.notify_email.is_empty() && a.notify_webhook.is_none() {
            if a.smtp_url.is_some() {
                return Err("--smtp-url without --notify-email: say whom to e-mail".into());
            }
            return Ok(None);
        }
        if a.notify_timeout.is_some_and(|t| t.is_zero()) {
            return Err("--notify-timeout must be more than 0".into());
        }
        let email = if a.notify_email.is_empty() {
            None
        } else {
            Some(Self::email(a)?)
        };
        let webhook = match &a.notify_webhook {
            None => None,
            Some(url) => {
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| format!("--notify-webhook {url:?} is not a URL: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(format!(
                        "--notify-webhook {url:?}: give an http:// or https:// URL"
                    ));
                }
                let server = format!(
                    "{}://{}{}",
                    parsed.scheme(),
                    parsed.host_str().unwrap_or(""),
                    parsed.port().map_or(String::new(), |p| format!(":{p}"))
                );
                // reqwest is built without a crypto provider of its own: ring is the only one.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let client = reqwest::Client::builder()
                    .timeout(timeout_of(a))
                    .user_agent(concat!("tenure/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("--notify-webhook: cannot set up the HTTP client: {e}"))?;
                Some(Webhook {
                    client,
                    url: url.clone(),
                    server,
                })
            }
        };
        Ok(Some(Channels {
            email,
            webhook,
            timeout: timeout_of(a),
        }))
    }

    fn email(a: &NotifyArgs) -> Result<Email, String> {
        let Some(url) = &a.smtp_url else {
            return Err("--notify-email needs --smtp-url, e.g. smtp://localhost:25".into());
        };
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| format!("--smtp-url {url:?} is not a URL: {e}"))?;
        if parsed.password().is_some() || !parsed.username().is_empty() {
            return Err("--smtp-url: give the login with --smtp-credentials-file, not in the URL (other users see flags in `ps`)".into());
        }
        let server = format!(
            "{}://{}{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or(""),
            parsed.port().map_or(String::new(), |p| format!(":{p}"))
        );
        // The TLS parameters are built here (rustls on ring, the platform's roots).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::from_url(url).map_err(|e| {
            format!("--smtp-url {url:?}: {e} (give smtp://host:25, smtps://host:465 or smtp://host:587?tls=required)")
        })?;
        let host = hostname();
        if parsed.path().len() <= 1 {
            b = b.hello_name(ClientId::Domain(host.clone()));
        }
        if let Some(path) = &a.smtp_credentials_file {
            let (user, password) =
                read_credentials(path).map_err(|e| format!("--smtp-credentials-file: {e}"))?;
            b = b.credentials(Credentials::new(user, password));
        }
        let transport = b.timeout(Some(timeout_of(a))).build();
        let from_text = a
            .notify_from
            .clone()
            .unwrap_or_else(|| format!("tenure@{host}"));
        let from: Mailbox = from_text
            .parse()
            .map_err(|e| format!("--notify-from {from_text:?} is not an e-mail address: {e}"))?;
        let to = a
            .notify_email
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<Mailbox>()
                    .map_err(|e| format!("--notify-email {s:?} is not an e-mail address: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err("--notify-email names no address".into());
        }
        Ok(Email {
            transport,
            from,
            to,
            server,
        })
    }

    /// For the start-up log.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(e) = &self.email {
            let to: Vec<String> = e.to.iter().map(|m| m.email.to_string()).collect();
            parts.push(format!("e-mail to {} via {}", to.join(", "), e.server));
        }
        if let Some(w) = &self.webhook {
            parts.push(format!("webhook {}", w.server));
        }
        parts.join(" and ")
    }

    fn channels(&self) -> impl Iterator<Item = Channel> + '_ {
        [
            self.email.as_ref().map(|_| Channel::Email),
            self.webhook.as_ref().map(|_| Channel::Webhook),
        ]
        .into_iter()
        .flatten()
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The webhook's JSON body.
pub fn webhook_body(a: &Alert) -> serde_json::Value {
    serde_json::json!({
        "text": format!("tenure: {}", a.text),
        "event": a.kind.as_str(),
        "node": a.node,
        "epoch": a.epoch,
        "cluster": a.cluster,
        "time": rfc3339(a.at_ms),
    })
}

/// `--notify-timeout` (or a cluster file's `notifTimeout`), 10 s when neither is given.
pub(crate) const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

fn timeout_of(a: &NotifyArgs) -> Duration {
    a.notify_timeout.unwrap_or(DEFAULT_NOTIFY_TIMEOUT)
}

fn email_body(a: &Alert) -> String {
    format!(
        "{}\n\n{}event:   {}\nnode:    {}\nepoch:   {}\ncluster: {}\ntime:    {}\n\n-- \ntenure (README \"Notifications\")\n",
        a.text,
        if a.detail.is_empty() || a.text.contains(&a.detail) {
            String::new()
        } else {
            format!("reason:  {}\n", a.detail)
        },
        a.kind.as_str(),
        a.node,
        a.epoch.map_or("-".to_string(), |e| e.to_string()),
        if a.cluster.is_empty() {
            "-"
        } else {
            &a.cluster
        },
        rfc3339(a.at_ms),
    )
}

/// An error with its causes ("error sending request: … Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

fn count(stats: &Stats, ch: Channel, ok: bool) {
    let n = stats.notifications(ch);
    if ok { &n.sent } else { &n.failed }.fetch_add(1, Ordering::Relaxed);
}

async fn send_email(e: &Email, a: &Alert, timeout: Duration) -> Result<(), String> {
    let mut m = Message::builder()
        .from(e.from.clone())
        .subject(format!("[tenure] {}", a.subject))
        .header(ContentType::TEXT_PLAIN);
    for to in &e.to {
        m = m.to(to.clone());
    }
    let msg = m.body(email_body(a)).map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, e.transport.send(msg)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(chain(&err)),
        Err(_) => Err(format!("no answer within {}", secs(timeout))),
    }
}

async fn send_webhook(w: &Webhook, a: &Alert, timeout: Duration) -> Result<(), String> {
    let req = w.client.post(&w.url).json(&webhook_body(a)).send();
    match tokio::time::timeout(timeout, req).await {
        Ok(Ok(r)) if r.status().is_success() => Ok(()),
        Ok(Ok(r)) => Err(format!("answered {}", r.status())),
        // Without the URL: its path may be the webhook's secret.
        Ok(Err(err)) => Err(chain(&err.without_url())),
        Err(_) => Err(format!("no answer within {}", secs(timeout))),
    }
}

/// Logs a failed delivery (`how`: "by e-mail via SERVER") and counts the outcome.
fn settle(stats: &Stats, a: &Alert, channel: Channel, how: &str, r: Result<(), String>) {
    if let Err(err) = &r {
        tracing::warn!(event = a.kind.as_str(), "notification {how} failed: {err}");
    }
    count(stats, channel, r.is_ok());
}

async fn sender(ch: Arc<Channels>, stats: Arc<Stats>, mut rx: mpsc::Receiver<Alert>) {
    while let Some(a) = rx.recv().await {
        let email = async {
            if let Some(e) = &ch.email {
                let r = send_email(e, &a, ch.timeout).await;
                let how = format!("by e-mail via {}", e.server);
                settle(&stats, &a, Channel::Email, &how, r);
            }
        };
        let webhook = async {
            if let Some(w) = &ch.webhook {
                let r = send_webhook(w, &a, ch.timeout).await;
                let how = format!("by webhook to {}", w.server);
                settle(&stats, &a, Channel::Webhook, &how, r);
            }
        };
        tokio::join!(email, webhook);
        tracing::debug!(event = a.kind.as_str(), "notification sent: {}", a.text);
    }
}

/// Runs the notifications; [`Notifications::finish`] at shutdown.
pub struct Notifications {
    stop: Option<oneshot::Sender<Option<String>>>,
    done: tokio::task::JoinHandle<()>,
    timeout: Duration,
}

/// Starts the watcher and the sender (in the current runtime). `d`: the renew deadline.
pub fn spawn(
    channels: Channels,
    stats: Arc<Stats>,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    d: Duration,
) -> Notifications {
    let channels = Arc::new(channels);
    let timeout = channels.timeout;
    let (tx, rx) = mpsc::channel::<Alert>(QUEUE);
    // In the caller's span (the node's name), like every other line of the node.
    let span = tracing::Span::current();
    let done = tokio::spawn(sender(channels.clone(), stats.clone(), rx).instrument(span.clone()));
    let (stop_tx, mut stop_rx) = oneshot::channel::<Option<String>>();
    let watcher = async move {
        let mut deriver = Deriver::default();
        let mut limiter = Limiter::default();
        let enqueue = |limiter: &mut Limiter, mut a: Alert| {
            if !limiter.admit(&mut a, Instant::now()) {
                tracing::debug!(
                    event = a.kind.as_str(),
                    "notification suppressed (rate limit): {}",
                    a.text
                );
                return;
            }
            if tx.try_send(a).is_err() {
                tracing::warn!("notification queue full: dropping a notification");
                for c in channels.channels() {
                    count(&stats, c, false);
                }
            }
        };
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The driver drops its end of the channel when it returns, before `finish` is called:
        // keep waiting for that (and the exit's message), on the last snapshot.
        let mut open = true;
        loop {
            let exit = tokio::select! {
                r = &mut stop_rx => Some(r.ok().flatten()),
                r = snapshots.changed(), if open => {
                    open = r.is_ok();
                    None
                }
                _ = ticker.tick() => None,
            };
            let snap = snapshots.borrow_and_update().clone();
            let alerts = deriver.derive(
                &snap,
                stats.storage_failing_since(),
                clock::now(),
                d,
                clock::wall_millis(),
            );
            for a in alerts {
                enqueue(&mut limiter, a);
            }
            if let Some(exit) = exit {
                if let Some(a) = exit.and_then(|m| exit_alert(&snap, &m, clock::wall_millis())) {
                    enqueue(&mut limiter, a);
                }
                // Dropping the queue's sender ends the sender task once it is empty.
                return;
            }
        }
    };
    tokio::spawn(watcher.instrument(span));
    Notifications {
        stop: Some(stop_tx),
        done,
        timeout,
    }
}

impl Notifications {
    /// At shutdown: derive from the last snapshot, add the exit's own notification (a duplicate
    /// name), and let the queue drain for at most --notify-timeout (and 5 s).
    pub async fn finish(mut self, exit_message: &str) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(Some(exit_message.to_string()));
        }
        let limit = self.timeout.min(DRAIN_LIMIT);
        if tokio::time::timeout(limit, &mut self.done).await.is_err() {
            tracing::warn!(
                "notifications still unsent after {}: exiting without them",
                secs(limit)
            );
            self.done.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenure_election::Mode;
    use tenure_election::snapshot::BadRecord;

    const D: Duration = Duration::from_secs(2);

    fn snap() -> Snapshot {
        let mut s = Snapshot::initializing("node-a", "i1", "http://127.0.0.1:1/", Mode::Auto);
        s.plane_id = "c1".into();
        s
    }

    fn tr(from: NodeState, to: NodeState, epoch: u64, at_ms: i64, reason: &str) -> Transition {
        Transition {
            at_ms,
            from,
            to,
            epoch: Some(epoch),
            reason: reason.into(),
        }
    }

    fn kinds(v: &[Alert]) -> Vec<Kind> {
        v.iter().map(|a| a.kind).collect()
    }

    #[test]
    fn an_expected_node_missing_longer_than_d_is_notified_once() {
        let mut d = Deriver::default();
        let mut s = snap();
        s.expected = vec!["node-a".into(), "node-b".into()];
        // Still starting: nothing read yet, nothing missing.
        assert!(d.derive(&s, None, Nanos(0), D, 0).is_empty());
        s.base_state = NodeState::Standby;
        assert!(d.derive(&s, None, Nanos(1), D, 0).is_empty(), "not yet D");
        let got = d.derive(&s, None, Nanos(1) + D, D, 0);
        assert_eq!(kinds(&got), [Kind::NodeMissing]);
        assert!(got[0].text.contains("node-b"), "{}", got[0].text);
        assert!(
            d.derive(&s, None, Nanos(1) + 10 * D, D, 0).is_empty(),
            "once per absence"
        );
    }

    #[test]
    fn promotion_and_each_way_of_stopping_are_events_once() {
        let mut d = Deriver::default();
        let mut s = snap();
        s.transitions.push(tr(
            NodeState::Initializing,
            NodeState::Standby,
            0,
            1,
            "started",
        ));
        assert!(d.derive(&s, None, Nanos(0), D, 0).is_empty());
        s.transitions.push(tr(
            NodeState::Standby,
            NodeState::Master,
            3,
            2,
            "promoted to MASTER at epoch 3 (expired); answers MASTER until 1s from now unless renewed",
        ));
        let got = d.derive(&s, None, Nanos(0), D, 0);
        assert_eq!(kinds(&got), [Kind::BecameMaster]);
        assert_eq!(got[0].epoch, Some(3));
        assert_eq!(
            got[0].text,
            "node-a became MASTER at epoch 3: took over an expired lease (the previous master stopped renewing)"
        );
        assert_eq!(got[0].cluster, "c1");
        // The same snapshot again: nothing new.
        assert!(d.derive(&s, None, Nanos(0), D, 0).is_empty());
        for (reason, why) in [
            (
                "self-fenced: no renewal confirmed before the lease deadline (epoch 3, 1ms ago); standing down",
                "self-fenced",
            ),
            (
                "shutting down: stopped answering MASTER (epoch 3); releasing the lease to node-b",
                "released the lease",
            ),
            (
                "lost the lease: the renewal's conditional write failed (x); another node took over",
                "lost the lease",
            ),
            (
                "the lease no longer names this node: another node took over",
                "lost the lease",
            ),
        ] {
            s.transitions
                .push(tr(NodeState::Master, NodeState::Standby, 3, 3, reason));
            let got = d.derive(&s, None, Nanos(0), D, 0);
            assert_eq!(kinds(&got), [Kind::StoppedMaster], "{reason}");
            assert_eq!(
                got[0].subject,
                format!("node-a stopped being MASTER (epoch 3): {why}")
            );
            assert!(got[0].text.contains(reason), "{}", got[0].text);
        }
    }

    #[test]
    fn transitions_scrolled_out_of_the_snapshot_are_not_repeated() {
        let mut d = Deriver::default();
        let mut s = snap();
        s.transitions = (0..200)
            .map(|i| {
                tr(
                    NodeState::Standby,
                    NodeState::HotStandby,
                    i,
                    i as i64 + 1,
                    "x",
                )
            })
            .collect();
        assert!(d.derive(&s, None, Nanos(0), D, 0).is_empty());
        s.transitions.remove(0);
        s.transitions.push(tr(
            NodeState::Standby,
            NodeState::Master,
            9,
            500,
            "promoted",
        ));
        assert_eq!(
            kinds(&d.derive(&s, None, Nanos(0), D, 0)),
            [Kind::BecameMaster]
        );
    }

    #[test]
    fn storage_failing_longer_than_d_is_one_event_per_episode() {
        let mut d = Deriver::default();
        let s = snap();
        let since = Nanos(1_000_000_000);
        // Failing, but not yet for D.
        assert!(d.derive(&s, Some(since), since + D, D, 0).is_empty());
        let got = d.derive(&s, Some(since), since + D + Duration::from_millis(1), D, 0);
        assert_eq!(kinds(&got), [Kind::StorageFailing]);
        assert!(
            got[0].text.contains("longer than the renew deadline D=2s"),
            "{}",
            got[0].text
        );
        // Still the same episode: nothing more.
        assert!(d.derive(&s, Some(since), since + 10 * D, D, 0).is_empty());
        // It works again: one recovery notice.
        assert_eq!(
            kinds(&d.derive(&s, None, since + 11 * D, D, 0)),
            [Kind::StorageRecovered]
        );
        assert!(d.derive(&s, None, since + 12 * D, D, 0).is_empty());
        // A short failure later: nothing at all.
        let again = since + 20 * D;
        assert!(d.derive(&s, Some(again), again + D / 2, D, 0).is_empty());
        assert!(d.derive(&s, None, again + D, D, 0).is_empty());
    }

    #[test]
    fn forged_records_are_reported_when_the_count_grows() {
        let mut d = Deriver::default();
        let mut s = snap();
        assert!(d.derive(&s, None, Nanos(0), D, 0).is_empty());
        s.forged_records = 1;
        s.bad_records = vec![BadRecord {
            key: "nodes/x.json".into(),
            reason: "a replayed old record: seq 3 after 5".into(),
        }];
        let got = d.derive(&s, None, Nanos(0), D, 0);
        assert_eq!(kinds(&got), [Kind::BadRecords]);
        assert_eq!(got[0].key, "nodes/x.json");
        assert!(
            got[0]
                .text
                .contains("nodes/x.json: a replayed old record: seq 3 after 5"),
            "{}",
            got[0].text
        );
        assert!(d.derive(&s, None, Nanos(0), D, 0).is_empty());
    }

    #[test]
    fn a_duplicate_name_exit_is_an_event() {
        let s = snap();
        let a = exit_alert(
            &s,
            "duplicate node name: a live process already runs as node-a",
            0,
        )
        .unwrap();
        assert_eq!(a.kind, Kind::DuplicateName);
        assert!(exit_alert(&s, "shut down", 0).is_none());
    }

    fn alert(kind: Kind, key: &str) -> Alert {
        Alert {
            kind,
            key: key.into(),
            node: "node-a".into(),
            cluster: "c1".into(),
            epoch: None,
            subject: "s".into(),
            text: "t".into(),
            detail: String::new(),
            at_ms: 0,
        }
    }

    #[test]
    fn the_same_event_is_sent_once_per_window_unless_its_content_changes() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        assert!(l.admit(&mut alert(Kind::BadRecords, "k1"), t0));
        assert!(!l.admit(
            &mut alert(Kind::BadRecords, "k1"),
            t0 + Duration::from_secs(1)
        ));
        assert!(!l.admit(
            &mut alert(Kind::BadRecords, "k1"),
            t0 + SAME_KIND_WINDOW / 2
        ));
        // Other kinds are not held back by it.
        assert!(l.admit(
            &mut alert(Kind::BecameMaster, "3"),
            t0 + Duration::from_secs(2)
        ));
        // Changed content goes out at once, and says what was suppressed.
        let mut changed = alert(Kind::BadRecords, "k1,k2");
        assert!(l.admit(&mut changed, t0 + Duration::from_secs(3)));
        assert!(
            changed
                .text
                .ends_with("(2 similar notification(s) suppressed before this one)")
        );
        // The same content again after the window.
        let later = t0 + Duration::from_secs(3) + SAME_KIND_WINDOW;
        let mut again = alert(Kind::BadRecords, "k1,k2");
        assert!(l.admit(&mut again, later));
        assert_eq!(again.text, "t");
    }

    #[test]
    fn never_a_flood() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        // A flapping master: every promotion has a new epoch, so only the flood limit holds.
        let sent = (0..100)
            .filter(|i| {
                l.admit(
                    &mut alert(Kind::BecameMaster, &i.to_string()),
                    t0 + Duration::from_secs(*i),
                )
            })
            .count();
        assert_eq!(sent, FLOOD_MAX);
        // Once the window has passed, notifications flow again.
        assert!(l.admit(
            &mut alert(Kind::BecameMaster, "x"),
            t0 + FLOOD_WINDOW + Duration::from_secs(100)
        ));
    }

    #[test]
    fn credentials_files() {
        assert_eq!(
            parse_credentials("user:pa:ss\n"),
            Some(("user".into(), "pa:ss".into()))
        );
        assert_eq!(
            parse_credentials("user\npass word\n"),
            Some(("user".into(), "pass word".into()))
        );
        assert_eq!(parse_credentials("user\n"), None);
        assert_eq!(parse_credentials(""), None);
        let dir = std::env::temp_dir().join(format!("tenure-alerts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("smtp");
        std::fs::write(&p, "u:p\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_credentials(&p).unwrap_err();
        assert!(err.contains("mode 640"), "{err}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_credentials(&p).unwrap(), ("u".into(), "p".into()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn webhook_json_has_a_plain_text_field() {
        let mut a = alert(Kind::BecameMaster, "3");
        a.epoch = Some(3);
        a.text = "node-a became MASTER at epoch 3: promoted".into();
        a.at_ms = 1_700_000_000_000;
        let v = webhook_body(&a);
        assert_eq!(
            v["text"],
            "tenure: node-a became MASTER at epoch 3: promoted"
        );
        assert_eq!(v["event"], "became_master");
        assert_eq!(v["node"], "node-a");
        assert_eq!(v["epoch"], 3);
        assert_eq!(v["cluster"], "c1");
        assert_eq!(v["time"], "2023-11-14T22:13:20.000Z");
    }
}
