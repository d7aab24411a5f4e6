//! The web console (`GET /` and `/ui`): one page, rendered here from the snapshot, the stats
//! and the history, so it reads without JavaScript; its script (an embedded asset, never
//! inline: the Content-Security-Policy allows scripts from this origin only) follows
//! `…/ha/events` and re-fetches the page's main part (`/ui/main`) when something changes.
//!
//! Access is the API's: the page and its main part are reads (`reader` or `admin` with
//! `--users`; `--public-state` does not open them, since they show the whole cluster). The
//! admin forms post to the API's own endpoints (`…/ha/state`, `…/ha/priority`) from this
//! origin, so the browser marks them `Sec-Fetch-Site: same-origin` and the API's cross-site
//! check lets them through; readers, and every user of a node without `--users` (where changes
//! are refused), get no forms. The static assets hold no data and are served to anyone.

use crate::ApiState;
use crate::api::login;
use crate::auth::Role;
use crate::history::{self, Term};
use crate::summary::{known_epoch, summarize};
use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::fmt::Write as _;
use std::time::Duration;
use tenure_election::{NodeState, clock};

const JS: &str = include_str!("../assets/console.js");
const CSS: &str = include_str!("../assets/console.css");
const ICON: &str = include_str!("../assets/favicon.svg");

/// Terms shown on the page.
const PAGE_TERMS: usize = 20;
/// Transitions of this node shown on the page.
const PAGE_TRANSITIONS: usize = 15;

/// No inline script or style, nothing from elsewhere, no framing, forms only to this origin.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(page))
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/main", get(main_part))
        .route(
            "/ui/console.js",
            get(|| asset(JS, "text/javascript; charset=utf-8")),
        )
        .route(
            "/ui/console.css",
            get(|| asset(CSS, "text/css; charset=utf-8")),
        )
        .route("/ui/favicon.svg", get(|| asset(ICON, "image/svg+xml")))
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

fn html(body: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            ),
        ],
        body,
    )
        .into_response()
}

/// A reader of the page (the same check as every read: open without `--users`, else a valid
/// login, 401 otherwise), and whether it may change things (an admin on a node with `--users`).
struct Viewer {
    admin: bool,
    name: Option<String>,
}

impl FromRequestParts<ApiState> for Viewer {
    type Rejection = crate::error::ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let who = login(state, parts).await?;
        Ok(Viewer {
            admin: who.as_ref().is_some_and(|(_, r)| *r == Role::Admin),
            name: who.map(|(n, _)| n),
        })
    }
}

async fn page(viewer: Viewer, State(state): State<ApiState>) -> Response {
    let main = render_main(&state, &viewer).await;
    let snap = state.snapshot();
    let st = snap.state_at(clock::now());
    let mut out = String::with_capacity(main.len() + 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{st} · {node} · tenure</title>\
<link rel=\"stylesheet\" href=\"/ui/console.css\">\
<link rel=\"icon\" href=\"/ui/favicon.svg\" type=\"image/svg+xml\">\
<script src=\"/ui/console.js\" defer></script></head>\n<body>\
<header><h1>tenure <span class=\"node\">{node}</span></h1>\
<span class=\"who\">{who}</span><span id=\"live\" class=\"live\" hidden></span></header>\n\
<p id=\"notice\" class=\"notice\" role=\"status\" hidden></p>\n\
<main id=\"main\">{main}</main>\n\
<footer>cluster <code>{plane}</code> · tenure {version} · \
<a href=\"/v1/server/ha/events\">events</a> · <a href=\"/v1/server/ha/history\">history</a> · \
<a href=\"/ha/states\">states</a> · <a href=\"/metrics\">metrics</a></footer>\n</body></html>\n",
        node = esc(&snap.own_name),
        plane = esc(&snap.plane_id),
        version = env!("CARGO_PKG_VERSION"),
        who = viewer.name.as_deref().map_or(String::new(), |n| format!(
            "signed in as {}{}",
            esc(n),
            if viewer.admin { " (admin)" } else { "" }
        )),
    );
    html(out)
}

async fn main_part(viewer: Viewer, State(state): State<ApiState>) -> Response {
    html(render_main(&state, &viewer).await)
}

/// Escapes text for HTML content and quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A link to a node's URI, only for http(s) URIs (a record's URI is written by whoever can
/// write the store: no `javascript:` link).
fn uri_link(uri: &str) -> String {
    if uri.starts_with("http://") || uri.starts_with("https://") {
        format!("<a href=\"{0}/ui\">{0}</a>", esc(uri.trim_end_matches('/')))
    } else {
        esc(uri)
    }
}

fn wall(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |d| d.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string(),
    )
}

fn age(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1e3)
    } else {
        humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
    }
}

fn state_class(s: NodeState) -> &'static str {
    match s {
        NodeState::Master => "master",
        NodeState::Failed => "failed",
        NodeState::Terminated => "terminated",
        NodeState::Initializing => "initializing",
        _ => "standby",
    }
}

fn reason_words(r: &str) -> &str {
    match r {
        "cold-start" => "cold start",
        "expired" => "expiry",
        "released" => "release",
        "switchover" => "switchover",
        other => other,
    }
}

fn ms_of(d: Option<Duration>) -> String {
    d.map_or("—".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
}

/// The page's main part: everything that changes.
async fn render_main(state: &ApiState, viewer: &Viewer) -> String {
    let history = history::terms(state, PAGE_TERMS).await;
    let snap = state.snapshot();
    let now = clock::now();
    let view = summarize(&snap, now);
    let own = snap.state_at(now);
    let master = view.master();
    let epoch = known_epoch(&snap, now);
    let master_uri = master.and_then(|m| {
        view.nodes
            .get(m)
            .and_then(|n| n.node_uri.as_deref().map(str::to_string))
    });
    let mut o = String::with_capacity(8 * 1024);

    // The banner on every non-master.
    if own != NodeState::Master {
        let _ = write!(
            o,
            "<div id=\"banner\" class=\"banner\" role=\"alert\">This node is not the HA master — "
        );
        match master {
            Some(m) => {
                let _ = write!(o, "the master is <b id=\"banner-master\">{}</b>", esc(m));
                if let Some(u) = &master_uri {
                    let _ = write!(o, " at {}", uri_link(u));
                }
            }
            None => o.push_str("no master is known right now"),
        }
        o.push_str(".</div>\n");
    }

    // This node.
    let _ = write!(
        o,
        "<section class=\"this\"><h2>This node</h2><dl>\
<dt>state</dt><dd><span id=\"state\" class=\"state {cls}\">{own}</span></dd>\
<dt>master</dt><dd id=\"master\">{master}</dd>\
<dt>epoch</dt><dd id=\"epoch\">{epoch}</dd>\
<dt>mode</dt><dd>{mode}</dd><dt>priority</dt><dd id=\"priority\">{prio}</dd>\
<dt>app version</dt><dd>{appv}</dd><dt>instance</dt><dd><code>{inst}</code></dd>",
        cls = state_class(own),
        master = master.map_or("none".into(), esc),
        epoch = epoch.map_or("—".into(), |e| e.to_string()),
        mode = snap.mode,
        prio = snap.priority,
        appv = snap.app_version.as_deref().map_or("—".into(), esc),
        inst = esc(&snap.own_instance),
    );
    if let Some(v) = snap
        .master_until
        .filter(|v| now < *v && own == NodeState::Master)
    {
        let _ = write!(
            o,
            "<dt>lease deadline</dt><dd>in {}</dd>",
            age(u64::try_from(v.since(now).as_millis()).unwrap_or(u64::MAX))
        );
    }
    if let Some(w) = &snap.waiting {
        let _ = write!(
            o,
            "<dt>waiting</dt><dd>for {} (until {})</dd>",
            esc(&w.what),
            wall(w.until_wall_ms)
        );
    }
    o.push_str("</dl></section>\n");

    // Admin actions, through the API's own endpoints.
    if viewer.admin {
        o.push_str("<section class=\"actions\"><h2>Actions</h2>");
        if own == NodeState::Master {
            o.push_str(
                "<form method=\"post\" action=\"/v1/server/ha/state\" data-api=\"demote\" data-confirm=\"Demote this node? Another node takes over.\">\
<input type=\"hidden\" name=\"mode\" value=\"STANDBY\">\
<button id=\"demote\" type=\"submit\">Demote this master</button> <span class=\"hint\">it hands the lease over and becomes a standby</span></form>",
            );
        } else {
            o.push_str(
                "<form method=\"post\" action=\"/v1/server/ha/state\" data-api=\"promote\" data-confirm=\"Make this node the master (a planned switchover)?\">\
<input type=\"hidden\" name=\"mode\" value=\"MASTER\">\
<button id=\"promote\" type=\"submit\">Promote this node</button> <span class=\"hint\">planned switchover: the master hands over to it</span></form>",
            );
            if let Some(u) = master_uri
                .as_deref()
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            {
                let _ = write!(
                    o,
                    "<p class=\"hint\">To demote the master, use <a href=\"{}/ui\">its console</a>.</p>",
                    esc(u.trim_end_matches('/'))
                );
            }
        }
        let _ = writeln!(
            o,
            "<form method=\"post\" action=\"/v1/server/ha/priority\" data-api=\"priority\">\
<label>priority <input id=\"priority-input\" type=\"number\" name=\"priority\" value=\"{}\" step=\"1\"></label> \
<button id=\"set-priority\" type=\"submit\">Set priority</button></form></section>",
            snap.priority
        );
    }

    // The cluster.
    o.push_str(
        "<section><h2>Cluster</h2><table id=\"cluster\"><thead><tr><th>node</th><th>state</th><th>priority</th>\
<th>app version</th><th>heartbeat age</th><th>epoch</th><th>URI</th></tr></thead><tbody>",
    );
    for (name, n) in &view.nodes {
        let _ = write!(
            o,
            "<tr data-node=\"{name}\"{own}><td>{name}</td><td><span class=\"state {cls}\">{st}</span></td>\
<td>{prio}</td><td>{appv}</td><td>{age}</td><td>{epoch}</td><td>{uri}</td></tr>",
            name = esc(name),
            own = if name.as_ref() == snap.own_name {
                " class=\"own\""
            } else {
                ""
            },
            cls = state_class(n.status),
            st = n.status,
            prio = n.priority.map_or("—".into(), |p| p.to_string()),
            appv = n.app_version.as_deref().map_or("—".into(), esc),
            age = n.heartbeat_age_ms.map_or("—".into(), age),
            epoch = n.epoch.map_or("—".into(), |e| e.to_string()),
            uri = n.node_uri.as_deref().map_or("—".into(), uri_link),
        );
    }
    for m in view.missing() {
        if !view.nodes.contains_key(m.as_ref()) {
            let _ = write!(
                o,
                "<tr data-node=\"{0}\" class=\"missing\"><td>{0}</td><td><span class=\"state failed\">MISSING</span></td>\
<td>—</td><td>—</td><td>—</td><td>—</td><td>—</td></tr>",
                esc(m)
            );
        }
    }
    o.push_str("</tbody></table>");
    if !view.missing().is_empty() {
        let names: Vec<String> = view.missing().iter().map(|m| esc(m)).collect();
        let _ = write!(
            o,
            "<p class=\"warn\">Expected but missing: {}</p>",
            names.join(", ")
        );
    }
    o.push_str("</section>\n");

    // Terms.
    o.push_str("<section><h2>Terms</h2>");
    match &history {
        Ok((terms, bad, total, stale)) => {
            if let Some(t) = terms.first() {
                let _ = write!(
                    o,
                    "<p id=\"term\">Current term: epoch <b>{}</b>, held by <b>{}</b> since {} ({}).</p>",
                    t.epoch,
                    esc(&t.holder),
                    wall(t.started),
                    reason_words(&t.reason)
                );
            } else {
                o.push_str("<p id=\"term\">No term has begun yet.</p>");
            }
            render_terms(&mut o, terms);
            let _ = write!(
                o,
                "<p class=\"hint\">{} of {} terms{}.</p>",
                terms.len(),
                total,
                if *stale {
                    " (the store could not be read just now: this list may be behind)"
                } else {
                    ""
                }
            );
            for b in bad {
                let _ = write!(
                    o,
                    "<p class=\"warn\">{}: {}</p>",
                    esc(&b.key),
                    esc(&b.reason)
                );
            }
        }
        Err(e) => {
            let _ = write!(
                o,
                "<p class=\"warn\">The history is unavailable: {}</p>",
                esc(&e.message)
            );
        }
    }
    o.push_str("</section>\n");

    // This node's transitions.
    o.push_str("<section><h2>Transitions of this node</h2>");
    if snap.transitions.is_empty() {
        o.push_str("<p>None yet.</p>");
    } else {
        o.push_str("<table id=\"transitions\"><thead><tr><th>when</th><th>from</th><th>to</th><th>epoch</th><th>why</th></tr></thead><tbody>");
        for t in snap.transitions.iter().rev().take(PAGE_TRANSITIONS) {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                wall(t.at_ms),
                t.from,
                t.to,
                t.epoch.map_or("—".into(), |e| e.to_string()),
                esc(&t.reason)
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>\n");

    // Alerts, bad records, storage.
    o.push_str("<section><h2>Health</h2><dl>");
    let stats = state.inner.stats.as_ref();
    let _ = write!(
        o,
        "<dt>storage latency</dt><dd id=\"storage-latency\">last {}{}</dd>\
<dt>lease writes</dt><dd>last {}</dd><dt>storage errors</dt><dd>{}</dd>\
<dt>forged records</dt><dd>{}</dd>",
        ms_of(stats.and_then(|s| s.storage_latency.last())),
        stats
            .map(|s| s.storage_latency.read())
            .filter(|(_, n, _)| *n > 0)
            .map_or(String::new(), |(sum, n, _)| format!(
                ", mean {:.1} ms over {n} calls",
                sum * 1e3 / n as f64
            )),
        ms_of(stats.and_then(|s| s.renew_latency.last())),
        snap.storage_errors,
        snap.forged_records,
    );
    o.push_str("</dl>");
    let failing = stats
        .map(|s| {
            s.storage_failing_since
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .filter(|&t| t != 0);
    if let Some(since) = failing {
        let since = tenure_election::Nanos(since);
        let _ = write!(
            o,
            "<p class=\"alert\">ALERT: every storage call has failed for {}.</p>",
            age(u64::try_from(now.since(since).as_millis()).unwrap_or(u64::MAX))
        );
    }
    if snap.forged_records > 0 {
        let _ = write!(
            o,
            "<p class=\"alert\">ALERT: {} forged, replayed or wrongly signed record(s) seen and ignored.</p>",
            snap.forged_records
        );
    }
    if !snap.bad_records.is_empty() {
        o.push_str("<table id=\"bad-records\"><thead><tr><th>record</th><th>why it is not used</th></tr></thead><tbody>");
        for b in &snap.bad_records {
            let _ = write!(
                o,
                "<tr><td><code>{}</code></td><td>{}</td></tr>",
                esc(&b.key),
                esc(&b.reason)
            );
        }
        o.push_str("</tbody></table>");
    }
    o.push_str("</section>\n");
    o
}

fn render_terms(o: &mut String, terms: &[Term]) {
    if terms.is_empty() {
        return;
    }
    o.push_str("<table id=\"terms\"><thead><tr><th>epoch</th><th>holder</th><th>began</th><th>ended</th><th>why it began</th><th>after</th></tr></thead><tbody>");
    for t in terms {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            t.epoch,
            esc(&t.holder),
            wall(t.started),
            t.ended.map_or("—".into(), wall),
            esc(reason_words(&t.reason)),
            match (&t.previous, &t.previous_holder) {
                (Some(e), Some(h)) => format!("epoch {e} of {}", esc(h)),
                (Some(e), None) => format!("epoch {e}"),
                _ => "—".into(),
            }
        );
    }
    o.push_str("</tbody></table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_links_are_escaped() {
        assert_eq!(
            esc("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
        assert_eq!(uri_link("javascript:alert(1)"), "javascript:alert(1)");
        assert_eq!(
            uri_link("http://b:8081/"),
            "<a href=\"http://b:8081/ui\">http://b:8081</a>"
        );
    }

    #[test]
    fn assets_are_small() {
        assert!(JS.len() + CSS.len() + ICON.len() < 40 * 1024);
    }
}
