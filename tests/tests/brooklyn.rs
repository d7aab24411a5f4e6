//! Brooklyn compatibility, end to end: what real `tenure run` processes answer under
//! `/v1/server/…` must bind to Apache Brooklyn's own REST classes the way Brooklyn's Java client
//! binds them (Jackson, `FAIL_ON_UNKNOWN_PROPERTIES`): an unknown field fails, a missing one
//! fails. The strict mirrors of those classes are in `tenure_tests::brooklyn`.
//!
//! T = 2 s, p = 200 ms. Timing-sensitive like every e2e test: each takes `serial()`.

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use std::process::{Child, Command};
use std::time::Duration;
use tenure_tests::brooklyn::{
    ApiError, HaMetrics, HighAvailabilitySummary, UpExtended, VersionSummary,
    is_management_node_state, parse_strict,
};
use tenure_tests::cluster::free_port;
use tenure_tests::expect::settle_timeout;
use tenure_tests::spawn::{prepare, run_args};
use tenure_tests::{ADMIN_AND_READER, run_tenure, users_file};
use tenure_tests::{
    BROOKLYN_STATES_PATH, Cluster, NodeSpec, STATE_PATH, dur_arg, serial, tenure_bin, wait_for,
    wait_until,
};

const THREE: [&str; 3] = ["node-a", "node-b", "node-c"];
/// The users of [`users_file`], as `user:password`.
const ADMIN: &str = "admin:s3cret";
const VIEWER: &str = "viewer:look";

/// One HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body if it is not.
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A plain HTTP client like Brooklyn's: statuses are answers, not errors; basic auth when given
/// `user:password`. The timeout leaves room for an argon2 run on a loaded machine.
struct Http {
    agent: ureq::Agent,
}

impl Http {
    fn new() -> Self {
        Http {
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    fn reply(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Option<Reply> {
        let mut resp = resp.ok()?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.body_mut().read_to_string().ok()?;
        Some(Reply {
            status,
            headers,
            body,
        })
    }

    fn auth(creds: &str) -> String {
        format!("Basic {}", BASE64_STANDARD.encode(creds))
    }

    /// `GET base + path`; `None` when no answer came (connection refused, timeout).
    fn try_get(&self, base: &str, path: &str, creds: Option<&str>) -> Option<Reply> {
        let mut req = self.agent.get(&format!("{base}{path}"));
        if let Some(c) = creds {
            req = req.header("Authorization", &Self::auth(c));
        }
        Self::reply(req.call())
    }

    fn get(&self, base: &str, path: &str, creds: Option<&str>) -> Reply {
        self.try_get(base, path, creds)
            .unwrap_or_else(|| panic!("GET {base}{path}: no answer"))
    }

    /// `GET` that must answer 200.
    fn get_ok(&self, base: &str, path: &str, creds: Option<&str>) -> Reply {
        let r = self.get(base, path, creds);
        assert_eq!(r.status, 200, "GET {base}{path}: {r:?}");
        r
    }

    /// `POST base + path` with `body` of `content_type`.
    fn post(
        &self,
        base: &str,
        path: &str,
        creds: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> Reply {
        let mut req = self
            .agent
            .post(&format!("{base}{path}"))
            .header("Content-Type", content_type);
        if let Some(c) = creds {
            req = req.header("Authorization", &Self::auth(c));
        }
        Self::reply(req.send(body)).unwrap_or_else(|| panic!("POST {base}{path}: no answer"))
    }
}

/// The state a node answers to `viewer` (a JSON string), or `None` (no answer yet, not 200).
fn state_as_viewer(http: &Http, base: &str) -> Option<String> {
    let r = http.try_get(base, STATE_PATH, Some(VIEWER))?;
    if r.status != 200 {
        return None;
    }
    serde_json::from_str::<String>(&r.body).ok()
}

/// Waits until exactly one of `names` answers MASTER, the others an idle state, and every
/// node's Brooklyn summary names that master and lists all of `names` with a status, the
/// master's as MASTER. All through `viewer`'s login: without `--public-state` the harness's
/// observer (anonymous) only sees 401s, so `Cluster::wait_stable_master` cannot be used.
fn wait_stable_master_as_viewer(c: &Cluster, http: &Http, names: &[&str]) -> String {
    let timeout = settle_timeout(&c.timing);
    let mut last = String::from("no answer yet");
    let mut master = None;
    let ok = wait_until(timeout, || {
        let states: Vec<Option<String>> = names
            .iter()
            .map(|n| state_as_viewer(http, &c.node(n).base_url()))
            .collect();
        last = format!("states {states:?}");
        let masters: Vec<&str> = names
            .iter()
            .zip(&states)
            .filter(|(_, s)| s.as_deref() == Some("MASTER"))
            .map(|(n, _)| *n)
            .collect();
        let idle = |s: &Option<String>| {
            matches!(
                s.as_deref(),
                Some("MASTER" | "STANDBY" | "HOT_STANDBY" | "HOT_BACKUP")
            )
        };
        if masters.len() != 1 || !states.iter().all(idle) {
            return false;
        }
        let m = masters[0];
        for n in names {
            let Some(r) = http.try_get(&c.node(n).base_url(), BROOKLYN_STATES_PATH, Some(VIEWER))
            else {
                return false;
            };
            last = format!("{last}; {n}'s summary: {} {}", r.status, r.body);
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body) else {
                return false;
            };
            let listed = names
                .iter()
                .all(|o| v["nodes"][o]["status"].as_str().is_some());
            if v["masterId"] != m || !listed || v["nodes"][m]["status"] != "MASTER" {
                return false;
            }
        }
        master = Some(m.to_string());
        true
    });
    match master.filter(|_| ok) {
        Some(m) => m,
        None => panic!("timed out after {timeout:?} waiting for a stable master; last: {last}"),
    }
}

/// The version `tenure --version` prints (`tenure 0.1.0` → `0.1.0`).
fn tenure_version() -> String {
    let (code, out, err) = run_tenure(&["--version"], None);
    assert_eq!(code, 0, "tenure --version: {err}");
    out.split_whitespace()
        .last()
        .unwrap_or_else(|| panic!("tenure --version printed nothing"))
        .to_string()
}

/// Every Brooklyn read endpoint of the node `own` (at `base`), as the reader `viewer`, bound
/// strictly to Brooklyn's classes; `master` is the cluster's master.
fn check_brooklyn_reads(c: &Cluster, http: &Http, own: &str, master: &str) {
    let base = c.node(own).base_url();
    let get = |path: &str| http.get_ok(&base, path, Some(VIEWER));

    // GET /v1/server/ha/states: HighAvailabilitySummary.
    let raw = get(BROOKLYN_STATES_PATH);
    let summary: HighAvailabilitySummary = parse_strict(&raw.body);
    assert_eq!(summary.own_id, own, "ownId on {own}: {}", raw.body);
    assert_eq!(
        summary.master_id.as_deref(),
        Some(master),
        "masterId on {own}: {}",
        raw.body
    );
    let mut listed: Vec<&str> = summary.nodes.keys().map(String::as_str).collect();
    listed.sort_unstable();
    assert_eq!(listed, THREE, "nodes on {own}: {}", raw.body);
    for (name, n) in &summary.nodes {
        assert_eq!(&n.node_id, name, "nodeId of {name} on {own}");
        let status = n.status.as_deref().unwrap_or("<null>");
        assert!(
            is_management_node_state(status),
            "status of {name} on {own} is not a ManagementNodeState: {status}"
        );
        // The harness gives every node --node-uri http://127.0.0.1:<port>.
        let uri = n.node_uri.as_ref().map(|u| u.0.as_str()).unwrap_or("");
        assert!(
            uri.starts_with("http://127.0.0.1:"),
            "nodeUri of {name} on {own}: {uri:?}"
        );
    }
    assert_eq!(
        summary.nodes[master].status.as_deref(),
        Some("MASTER"),
        "{master}'s status on {own}: {}",
        raw.body
    );
    let plane_id = summary
        .plane_id
        .clone()
        .unwrap_or_else(|| panic!("planeId is null on {own}: {}", raw.body));
    assert!(!plane_id.is_empty(), "planeId is empty on {own}");

    // GET /v1/server/ha/state: a ManagementNodeState, as a JSON string.
    let state = get(STATE_PATH).json();
    let state = state
        .as_str()
        .unwrap_or_else(|| panic!("ha/state on {own} is not a string: {state}"));
    assert!(
        is_management_node_state(state),
        "ha/state on {own}: {state}"
    );
    assert_eq!(
        state == "MASTER",
        own == master,
        "ha/state on {own}: {state}"
    );

    // GET /v1/server/ha/priority: a Java long.
    let priority = get("/v1/server/ha/priority").json();
    let priority = priority
        .as_i64()
        .unwrap_or_else(|| panic!("ha/priority on {own} is not an integer: {priority}"));

    // GET /v1/server/ha/metrics: Brooklyn's getMetrics() map.
    let raw = get("/v1/server/ha/metrics");
    let metrics: HaMetrics = parse_strict(&raw.body);
    assert!(is_management_node_state(&metrics.state), "{}", raw.body);
    let ha = &metrics.high_availability;
    assert_eq!(ha.priority, priority, "metrics priority on {own}");
    assert_eq!(
        ha.poll_period,
        c.timing.p.as_millis() as i64,
        "{}",
        raw.body
    );
    assert_eq!(
        ha.heartbeat_timeout,
        c.timing.t.as_millis() as i64,
        "{}",
        raw.body
    );
    assert!(
        !ha.history.is_empty(),
        "empty history on {own}: {}",
        raw.body
    );
    for h in &ha.history {
        assert!(is_management_node_state(&h.state), "{}", raw.body);
    }
    assert!(
        ha.history
            .windows(2)
            .all(|w| w[0].timestamp >= w[1].timestamp),
        "history on {own} is not newest first: {}",
        raw.body
    );
    if own == master {
        assert_eq!(
            ha.history[0].state, "MASTER",
            "newest on {own}: {}",
            raw.body
        );
    }

    // GET /v1/server/up, /healthy, /shuttingDown: Java booleans.
    for (path, want) in [
        ("/v1/server/up", true),
        ("/v1/server/healthy", true),
        ("/v1/server/shuttingDown", false),
    ] {
        assert_eq!(get(path).json(), want, "{path} on {own}");
    }

    // GET /v1/server/up/extended: ServerResource's map with the summary in it.
    let raw = get("/v1/server/up/extended");
    let ext: UpExtended = parse_strict(&raw.body);
    assert!(ext.up && ext.healthy && !ext.shutting_down, "{}", raw.body);
    let ha = ext
        .ha
        .unwrap_or_else(|| panic!("up/extended ha is null on {own}: {}", raw.body));
    assert_eq!(ha.own_id, own);
    assert_eq!(ha.master_id.as_deref(), Some(master));
    assert_eq!(ha.nodes.len(), THREE.len(), "{}", raw.body);

    // GET /v1/server/version: VersionSummary.
    let raw = get("/v1/server/version");
    let v: VersionSummary = parse_strict(&raw.body);
    assert_eq!(v.version, tenure_version(), "{}", raw.body);
    if let Some(sha) = &v.build_sha1 {
        assert!(
            sha.len() == 40 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "buildSha1 is not a git commit: {sha:?}"
        );
    }

    // GET /v1/server/planeid: the summary's planeId as a JSON string.
    assert_eq!(
        get("/v1/server/planeid").json(),
        plane_id.as_str(),
        "planeid on {own}"
    );

    // GET /v1/server/user: the caller's login as a JSON string.
    assert_eq!(get("/v1/server/user").json(), "viewer", "user on {own}");
}

#[test]
fn every_brooklyn_read_binds_strictly_on_the_master_and_a_standby() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let users = users_file(c.root(), ADMIN_AND_READER);
    for n in THREE {
        // No --public-state: every read below needs the reader's login.
        c.start(NodeSpec::new(n).args(&["--users", &users]));
    }
    let http = Http::new();
    let master = wait_stable_master_as_viewer(&c, &http, &THREE);
    let standby = *THREE.iter().find(|n| **n != master).unwrap();
    check_brooklyn_reads(&c, &http, &master, &master);
    check_brooklyn_reads(&c, &http, standby, &master);
    c.assert_safe();
}

/// `r` is an error answer with `status` whose body binds to Brooklyn's `ApiError` with
/// `error` = the status (what Brooklyn's `ApiError.asResponse` sends).
fn assert_api_error(r: &Reply, status: u16, what: &str) -> ApiError {
    assert_eq!(r.status, status, "{what}: {r:?}");
    let e: ApiError = parse_strict(&r.body);
    assert_eq!(e.error, Some(i32::from(status)), "{what}: {}", r.body);
    assert!(!e.message.is_empty(), "{what}: empty message");
    e
}

#[test]
fn errors_are_brooklyn_api_errors_with_the_status() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let users = users_file(c.root(), ADMIN_AND_READER);
    c.start(NodeSpec::new("node-a").args(&["--users", &users]));
    let base = c.node("node-a").base_url();
    let http = Http::new();
    // Up once it answers the reader (any state: errors do not need a master).
    wait_for(settle_timeout(&c.timing), "node-a to answer", || {
        state_as_viewer(&http, &base)
    });

    let r = http.get(&base, BROOKLYN_STATES_PATH, None);
    assert_api_error(&r, 401, "no credentials");
    let challenge = r.header("www-authenticate").unwrap_or("");
    assert!(
        challenge.starts_with("Basic "),
        "401 without a Basic challenge: {r:?}"
    );

    let r = http.get(&base, BROOKLYN_STATES_PATH, Some("viewer:wrong"));
    assert_api_error(&r, 401, "wrong password");

    // Brooklyn's client sends the priority as a form field (@FormParam("priority")).
    let r = http.post(
        &base,
        "/v1/server/ha/priority",
        Some(VIEWER),
        "application/x-www-form-urlencoded",
        b"priority=3",
    );
    assert_api_error(&r, 403, "a reader setting the priority");
    assert_eq!(
        http.get_ok(&base, "/v1/server/ha/priority", Some(VIEWER))
            .json(),
        0,
        "the refused change changed the priority"
    );

    let r = http.get(&base, "/v1/server/no-such", Some(VIEWER));
    assert_api_error(&r, 404, "an unknown path");

    // The endpoints tenure does not provide say so (501) in Brooklyn's error shape. The import
    // gets what Brooklyn's client sends, an archive (here an empty zip).
    let empty_zip: &[u8] = b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    let r = http.post(
        &base,
        "/v1/server/ha/persist/import",
        Some(ADMIN),
        "application/zip",
        empty_zip,
    );
    assert_api_error(&r, 501, "persist/import");
    let r = http.post(
        &base,
        "/v1/server/properties/reload",
        Some(ADMIN),
        "application/x-www-form-urlencoded",
        b"",
    );
    assert_api_error(&r, 501, "properties/reload");
    let r = http.get(&base, "/v1/server/config/some.key", Some(VIEWER));
    assert_api_error(&r, 501, "config/some.key");
    c.assert_safe();
}

#[test]
fn master_id_is_null_while_no_master_is_known() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    // A fresh store and a node that may never take the lease: no master exists.
    c.start(
        NodeSpec::new("node-a")
            .mode("standby")
            .arg("--allow-no-master"),
    );
    c.wait_answer("node-a", "STANDBY", settle_timeout(&tm));
    let base = c.node("node-a").base_url();
    let http = Http::new();
    // Its own record may land a poll after it answers STANDBY.
    let raw = wait_for(2 * tm.t, "node-a's row in its summary", || {
        let r = http.try_get(&base, BROOKLYN_STATES_PATH, None)?;
        (r.status == 200 && r.json()["nodes"]["node-a"].is_object()).then_some(r)
    });
    let v = raw.json();
    // null, not "": Brooklyn's client reads "" as a master named "".
    assert_eq!(v["masterId"], serde_json::Value::Null, "{}", raw.body);
    let summary: HighAvailabilitySummary = parse_strict(&raw.body);
    assert_eq!(summary.master_id, None);
    assert_eq!(summary.own_id, "node-a");
    assert_eq!(
        summary.nodes["node-a"].status.as_deref(),
        Some("STANDBY"),
        "{}",
        raw.body
    );

    let raw = http.get_ok(&base, "/v1/server/up/extended", None);
    assert_eq!(
        raw.json()["ha"]["masterId"],
        serde_json::Value::Null,
        "{}",
        raw.body
    );
    let ext: UpExtended = parse_strict(&raw.body);
    assert_eq!(ext.ha.map(|h| h.master_id), Some(None));
    c.assert_safe();
}

/// A node process started outside the cluster's bookkeeping, killed (and reaped) on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_default_node_uri_ends_with_a_slash() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    c.init(&[]);
    // The harness always passes --node-uri (and a repeated flag cannot unset it), so this node
    // is spawned from the harness's own command line minus that flag.
    let port = free_port();
    let mut args = run_args(
        "node-d",
        c.store_arg(),
        port,
        &dur_arg(tm.t),
        &dur_arg(tm.p),
    );
    let i = args
        .iter()
        .position(|a| a == "--node-uri")
        .expect("run_args passes --node-uri");
    args.drain(i..i + 2);
    let log = c.root().join("node-d.log");
    let mut cmd = Command::new(tenure_bin());
    cmd.args(&args);
    let no_env: &[(String, String)] = &[];
    prepare(
        &mut cmd,
        &log,
        &format!("=== harness: starting tenure {}", args.join(" ")),
        no_env,
    );
    let _node = Process(cmd.spawn().expect("spawn tenure"));

    let base = format!("http://127.0.0.1:{port}");
    let http = Http::new();
    let want = format!("http://127.0.0.1:{port}/");
    let mut last = String::new();
    let found = wait_until(settle_timeout(&tm), || {
        let Some(r) = http.try_get(&base, BROOKLYN_STATES_PATH, None) else {
            return false;
        };
        last = format!("{} {}", r.status, r.body);
        if r.status != 200 || !r.json()["nodes"]["node-d"].is_object() {
            return false;
        }
        let summary: HighAvailabilitySummary = parse_strict(&r.body);
        let uri = summary.nodes["node-d"].node_uri.clone();
        assert_eq!(
            uri.as_ref().map(|u| u.0.as_str()),
            Some(want.as_str()),
            "default nodeUri: {}",
            r.body
        );
        true
    });
    assert!(
        found,
        "node-d never listed itself; last answer: {last}\nlog:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
