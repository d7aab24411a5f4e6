//! Brooklyn operations beside the election, with real processes: a runtime DISABLED that is
//! reversible (Brooklyn re-enables a node with AUTO / STANDBY / HOT_STANDBY), the admin-only
//! export of the store's records (`GET …/ha/persist/export`, a zip), and the liveness answers
//! (`/v1/server/up`, `/healthy`, `/shuttingDown`) of a master, a standby, a node still
//! INITIALIZING and a node in the middle of its graceful stop.
//! T = 2 s, p = 200 ms; bounds in T, p and the margin.

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tenure_tests::expect::{
    assert_kept_answering, assert_never_master_since, expect_exit, settle_timeout,
};
use tenure_tests::{
    ADMIN_AND_READER, Cluster, History, Node, NodeSpec, observe_for, serial, users_file, wait_until,
};

const THREE: [&str; 3] = ["node-a", "node-b", "node-c"];
const ADMIN: &str = "admin:s3cret";
const READER: &str = "viewer:look";

// ---- helpers (a raw HTTP client) ----

fn basic(user_pw: &str) -> String {
    format!("Basic {}", BASE64_STANDARD.encode(user_pw))
}

/// One HTTP answer: status, the headers we look at, the raw body.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into()
}

fn answer(mut resp: ureq::http::Response<ureq::Body>) -> Option<Answer> {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .ok()?;
    Some(Answer {
        status,
        headers,
        body,
    })
}

/// `GET base+path` with an optional `user:password`; `None` when the request failed (refused,
/// reset, timed out).
fn get(node: &Node, path: &str, login: Option<&str>) -> Option<Answer> {
    let mut req = agent().get(&format!("{}{path}", node.base_url()));
    if let Some(l) = login {
        req = req.header("Authorization", &basic(l));
    }
    answer(req.call().ok()?)
}

/// `POST base+path` with a form body.
fn post_form(node: &Node, path: &str, form: &str, login: Option<&str>) -> Answer {
    let mut req = agent()
        .post(&format!("{}{path}", node.base_url()))
        .header("Content-Type", "application/x-www-form-urlencoded");
    if let Some(l) = login {
        req = req.header("Authorization", &basic(l));
    }
    let resp = req
        .send(form)
        .unwrap_or_else(|e| panic!("POST {path} to {}: {e}", node.label));
    answer(resp).unwrap_or_else(|| panic!("POST {path} to {}: no body", node.label))
}

/// A liveness endpoint's JSON boolean; `None` when the node did not answer 200 + a boolean.
fn liveness(node: &Node, path: &str) -> Option<bool> {
    let a = get(node, path, None)?;
    if a.status != 200 {
        return None;
    }
    serde_json::from_slice::<serde_json::Value>(&a.body)
        .ok()?
        .as_bool()
}

/// (up, healthy, shuttingDown) as the node answers them now (three requests).
fn up_healthy_stopping(node: &Node) -> (Option<bool>, Option<bool>, Option<bool>) {
    (
        liveness(node, "/v1/server/up"),
        liveness(node, "/v1/server/healthy"),
        liveness(node, "/v1/server/shuttingDown"),
    )
}

/// The row of `of` in `reporter`'s `/ha/states` (tenure's view), read with `login`.
fn states_row(reporter: &Node, of: &str, login: Option<&str>) -> Option<serde_json::Value> {
    let a = get(reporter, "/ha/states", login)?;
    if a.status != 200 {
        return None;
    }
    serde_json::from_slice::<serde_json::Value>(&a.body)
        .ok()?
        .get("nodes")?
        .get(of)
        .cloned()
}

/// Asserts that `node` answered no MASTER in a sample sent in `[from, to]`.
fn assert_no_master_between(h: &History, node: &str, from: Instant, to: Instant) {
    let bad: Vec<_> = h
        .of(node)
        .filter(|s| s.sent >= from && s.sent <= to && s.is_master())
        .collect();
    assert!(
        bad.is_empty(),
        "{node} answered MASTER {} time(s) in [+{}ms, +{}ms] (while disabled), first at +{}ms (epoch {:?}); timeline:\n{}",
        bad.len(),
        h.rel(from),
        h.rel(to),
        h.rel(bad[0].sent),
        bad[0].epoch,
        h.timeline()
    );
}

// ---- 1. runtime DISABLED, and back ----

/// Brooklyn disables a node with `POST /v1/server/ha/state mode=DISABLED` and re-enables it
/// with AUTO. A disabled master hands over at once (a release, not an expiry) and answers
/// FAILED; while disabled it never answers MASTER, not even as the only node left running on
/// a released lease (observed for more than T + 2p, so neither a take of the released lease
/// nor one after expiry can hide). Set back to AUTO it takes the lease, being the only eligible
/// node.
#[test]
fn a_runtime_disabled_node_holds_no_lease_until_it_is_set_back_to_auto() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    // Changes need an admin (without --users every change is refused); --public-state keeps
    // the observer's unauthenticated state requests working.
    let users = users_file(c.root(), ADMIN_AND_READER);
    for n in THREE {
        c.start(NodeSpec::new(n).args(&["--users", &users, "--public-state"]));
    }
    let (m, first_epoch) = c.wait_stable_master(&THREE, settle_timeout(&tm));

    // A reader may not disable anything: 403, and the master stays.
    let refused = post_form(
        c.node(&m),
        "/v1/server/ha/state",
        "mode=DISABLED",
        Some(READER),
    );
    assert_eq!(refused.status, 403, "reader's DISABLED: {}", refused.text());
    assert_eq!(c.node(&m).state(), "MASTER");

    // The admin disables the master (Brooklyn's spelling); the answer is the previous state
    // and comes once the release is written.
    let asked = Instant::now();
    let reply = post_form(
        c.node(&m),
        "/v1/server/ha/state",
        "mode=DISABLED",
        Some(ADMIN),
    );
    let disabled_at = Instant::now();
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "\"MASTER\""),
        "DISABLED on the master"
    );
    // Another node takes the released lease within a couple of polls: a handover, far sooner
    // than the T − p an expiry would need.
    let onset = c.wait_takeover(asked, &[&m], tm.max_takeover());
    let handover = onset.earliest().saturating_duration_since(asked);
    eprintln!(
        "handover after DISABLED: {} took over within {handover:?}",
        onset.node
    );
    assert!(
        handover <= 2 * tm.p + tm.margin,
        "handover after DISABLED took {handover:?} (expected ≤ 2p + margin: the lease was released); timeline:\n{}",
        c.history().timeline()
    );
    let n = onset.node.clone();
    let second_epoch = onset.epoch.expect("a MASTER answer carries X-HA-Epoch");
    assert!(second_epoch > first_epoch);
    let x = THREE
        .iter()
        .find(|name| **name != m && **name != n)
        .unwrap()
        .to_string();

    // Disabled = Brooklyn's FAILED: up (it runs and serves) but not healthy; its own row and,
    // once its next heartbeat is read, the others' rows say FAILED in mode disabled.
    c.wait_answer(&m, "FAILED", 2 * tm.p + tm.margin);
    let own = states_row(c.node(&m), &m, Some(ADMIN)).expect("M's /ha/states");
    assert_eq!(own["status"], "FAILED", "M's own row: {own}");
    assert_eq!(own["mode"], "disabled", "M's own row: {own}");
    let mut seen = None;
    let ok = wait_until(tm.t, || {
        seen = states_row(c.node(&n), &m, Some(ADMIN));
        seen.as_ref()
            .is_some_and(|r| r["status"] == "FAILED" && r["mode"] == "disabled")
    });
    assert!(ok, "{n}'s row of the disabled {m}: {seen:?}");
    assert_eq!(
        up_healthy_stopping(c.node(&m)),
        (Some(true), Some(false), Some(false)),
        "(up, healthy, shuttingDown) of the disabled node"
    );

    // A standby is disabled and re-enabled the same way, here as HOT_STANDBY: FAILED while
    // disabled, then the idle state of its new mode (the answers are the previous states).
    let reply = post_form(
        c.node(&x),
        "/v1/server/ha/state",
        "mode=DISABLED",
        Some(ADMIN),
    );
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "\"STANDBY\""),
        "DISABLED on the standby {x}"
    );
    c.wait_answer(&x, "FAILED", 2 * tm.p + tm.margin);
    let reply = post_form(
        c.node(&x),
        "/v1/server/ha/state",
        "mode=HOT_STANDBY",
        Some(ADMIN),
    );
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "\"FAILED\""),
        "HOT_STANDBY on the disabled standby {x}"
    );
    c.wait_answer(&x, "HOT_STANDBY", 2 * tm.p + tm.margin);
    assert_eq!(c.node(&n).state(), "MASTER", "{n} stays master throughout");

    // Stop the two others gracefully (the standby first, then the master, which releases):
    // the disabled node is then the only one running, on a released lease.
    c.node(&x).sigterm();
    assert_eq!(expect_exit(&mut c, &x, 2 * tm.t), 0, "{x}'s graceful stop");
    c.node(&n).sigterm();
    assert_eq!(expect_exit(&mut c, &n, 2 * tm.t), 0, "{n}'s graceful stop");
    let alone_from = Instant::now();
    // Longer than T + 2p: an eligible node would have taken the released lease at once, and
    // even an expired one by now.
    observe_for(tm.t + 3 * tm.p + tm.margin);
    let alone_to = Instant::now();
    let h = c.history();
    for node in THREE {
        assert_never_master_since(&h, node, alone_from);
    }
    assert_kept_answering(
        &h,
        &m,
        alone_from,
        alone_to,
        "FAILED",
        Duration::from_millis(500),
    );
    assert_eq!(c.node(&m).state(), "FAILED");

    // AUTO again: the previous state is FAILED, and the node, the only eligible one, takes
    // the lease under a new epoch.
    let enabled_at = Instant::now();
    let reply = post_form(c.node(&m), "/v1/server/ha/state", "mode=AUTO", Some(ADMIN));
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "\"FAILED\""),
        "AUTO on the disabled node"
    );
    let onset = c.wait_takeover(enabled_at, &[&n, &x], tm.max_takeover());
    assert_eq!(onset.node, m);
    let retake = onset.earliest().saturating_duration_since(enabled_at);
    eprintln!(
        "after AUTO: {m} MASTER (epoch {:?}) within {retake:?}",
        onset.epoch
    );
    assert!(onset.epoch.is_some_and(|e| e > second_epoch));
    let own = states_row(c.node(&m), &m, Some(ADMIN)).expect("M's /ha/states");
    assert_eq!(own["mode"], "auto", "M's own row after AUTO: {own}");
    assert_eq!(
        up_healthy_stopping(c.node(&m)),
        (Some(true), Some(true), Some(false)),
        "(up, healthy, shuttingDown) of the re-enabled master"
    );

    // (a): from the moment the DISABLED request returned until AUTO was sent, never MASTER.
    let h = c.history();
    assert_no_master_between(&h, &m, disabled_at, enabled_at);
    c.assert_safe();
}

// ---- 2. export ----

/// Every entry of a zip, by name, checking each is Stored (the server writes no compression).
fn unzip(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("the body is a zip");
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).expect("zip entry");
        let name = f.name().expect("entry name").to_string();
        assert_eq!(
            f.compression(),
            zip::CompressionMethod::Stored,
            "entry {name} is not Stored"
        );
        let mut data = Vec::new();
        f.read_to_end(&mut data).expect("read zip entry");
        assert!(out.insert(name.clone(), data).is_none(), "{name} twice");
    }
    out
}

fn entry_json(entries: &BTreeMap<String, Vec<u8>>, name: &str) -> serde_json::Value {
    let bytes = entries.get(name).unwrap_or_else(|| {
        panic!(
            "no {name} in the export; entries: {:?}",
            entries.keys().collect::<Vec<_>>()
        )
    });
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "{name} is not JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// Asserts the answer is a refusal in Brooklyn's `ApiError` shape with `status`.
fn assert_refused(a: &Answer, status: u16, what: &str) {
    assert_eq!(a.status, status, "{what}: {}", a.text());
    let body = a.json();
    assert_eq!(body["error"], status, "{what}: {body}");
    assert!(body["message"].is_string(), "{what}: {body}");
}

/// An admin downloads the store's records as a zip from any node (Brooklyn's `curl … >
/// backup.zip`), under both the Brooklyn path and tenure's `/ha` alias; readers get 403 and
/// anonymous callers 401 with a challenge.
#[test]
fn an_admin_exports_the_stores_records_as_a_zip() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let users = users_file(c.root(), ADMIN_AND_READER);
    for n in THREE {
        c.start(NodeSpec::new(n).args(&["--users", &users, "--public-state"]));
    }
    let (m, epoch) = c.wait_stable_master(&THREE, settle_timeout(&tm));
    let s = THREE.iter().find(|n| **n != m).unwrap().to_string();
    let plane = get(c.node(&s), "/v1/server/planeid", Some(ADMIN)).expect("planeid");
    assert_eq!(plane.status, 200, "planeid: {}", plane.text());
    let plane_id = plane
        .json()
        .as_str()
        .expect("planeid is a string")
        .to_string();
    assert!(!plane_id.is_empty());

    for (node, path) in [
        (&s, "/v1/server/ha/persist/export"),
        (&m, "/ha/persist/export"),
    ] {
        let what = format!("export of {node} at {path}");
        let a = get(c.node(node), path, Some(ADMIN)).unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(a.status, 200, "{what}: {}", a.text());
        assert_eq!(a.header("content-type"), Some("application/zip"), "{what}");
        let disposition = a.header("content-disposition").unwrap_or_default();
        assert!(
            disposition.starts_with(&format!("attachment; filename=\"tenure-{node}-"))
                && disposition.ends_with(".zip\""),
            "{what}: Content-Disposition {disposition:?}"
        );
        let entries = unzip(&a.body);
        eprintln!("{what}: {:?}", entries.keys().collect::<Vec<_>>());

        let cluster = entry_json(&entries, "cluster.json");
        assert_eq!(cluster["clusterId"], plane_id.as_str(), "{what}: {cluster}");
        assert_eq!(
            cluster["heartbeatTimeoutMs"],
            tm.t.as_millis() as u64,
            "{what}: {cluster}"
        );
        let lease = entry_json(&entries, "lease");
        assert_eq!(lease["holder"], m.as_str(), "{what}: {lease}");
        assert_eq!(lease["epoch"], epoch, "{what}: {lease}");
        assert_eq!(lease["clusterId"], plane_id.as_str(), "{what}: {lease}");
        let term = entry_json(&entries, &format!("epochs/{epoch}.json"));
        assert_eq!(term["holder"], m.as_str(), "{what}: {term}");
        for n in THREE {
            let rec = entry_json(&entries, &format!("nodes/{n}.json"));
            assert_eq!(rec["name"], n, "{what}: {rec}");
            assert_eq!(rec["mode"], "auto", "{what}: {rec}");
            let want = if n == m { "MASTER" } else { "STANDBY" };
            assert_eq!(rec["status"], want, "{what}: {rec}");
        }
        let manifest = entry_json(&entries, "export.json");
        assert_eq!(manifest["exportedBy"], node.as_str(), "{what}: {manifest}");
        assert_eq!(manifest["planeId"], plane_id.as_str(), "{what}: {manifest}");
        assert_eq!(
            manifest["records"],
            entries.len() as u64 - 1,
            "{what}: every entry but the manifest is a record: {manifest}"
        );
        assert_eq!(
            manifest["absent"],
            serde_json::json!([]),
            "{what}: {manifest}"
        );
        assert_eq!(
            manifest["unreadable"],
            serde_json::json!([]),
            "{what}: {manifest}"
        );
        // Nothing but the records and the manifest.
        assert!(
            entries.keys().all(|k| k == "cluster.json"
                || k == "lease"
                || k == "export.json"
                || (k.starts_with("epochs/") || k.starts_with("nodes/")) && k.ends_with(".json")),
            "{what}: unexpected entries {:?}",
            entries.keys().collect::<Vec<_>>()
        );

        // Exports are changes' kin: a reader is refused, an anonymous caller challenged.
        let a = get(c.node(node), path, Some(READER)).expect("reader's export");
        assert_refused(&a, 403, &format!("reader's {what}"));
        let a = get(c.node(node), path, None).expect("anonymous export");
        assert_refused(&a, 401, &format!("anonymous {what}"));
        assert!(
            a.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Basic")),
            "anonymous {what}: WWW-Authenticate {:?}",
            a.header("www-authenticate")
        );
        let a = get(c.node(node), path, Some("admin:wrong")).expect("wrong password export");
        assert_refused(&a, 401, &format!("wrong password {what}"));
    }
    c.assert_safe();
}

// ---- 3. liveness ----

/// The `--exec` child: records its pid and ignores SIGTERM, so tenure's stop of it lasts until
/// the SIGKILL at G/2 and the node's graceful stop can be watched from outside.
fn stubborn_child(dir: &Path) -> String {
    let script = dir.join("stubborn.sh");
    std::fs::write(
        &script,
        "trap '' TERM\necho $$ >> \"$1/pids\"\nwhile :; do sleep 0.05; done\n",
    )
    .unwrap();
    format!("exec sh {} {}", script.display(), dir.display())
}

fn child_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Kills whatever a failed test leaves of the children (each leads its own process group).
struct Reaper(PathBuf);
impl Drop for Reaper {
    fn drop(&mut self) {
        for p in child_pids(&self.0) {
            // SAFETY: signalling the process groups of this test's own children.
            unsafe { libc::kill(-p, libc::SIGKILL) };
        }
    }
}

/// Brooklyn's liveness answers: a master and a standby are up and healthy and not shutting
/// down; a node still INITIALIZING (a restart after kill -9 watches its old record for T
/// before it takes its name back) is not up; a master in its graceful stop (its `--exec`
/// child ignores SIGTERM, so the stop lasts until the SIGKILL at G/2) still serves HTTP and
/// answers shuttingDown = true, up = false.
#[test]
fn liveness_answers_of_master_standby_initializing_and_stopping_nodes() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let dir = c.root().join("exec");
    std::fs::create_dir_all(&dir).unwrap();
    let _reaper = Reaper(dir.clone());
    // G = 1 s (SIGKILL of the child 500 ms after its SIGTERM) instead of T/6 = 333 ms, to
    // widen the window; D = 700 ms keeps (D + G)(1+ρ) + 100 ms below T(1−ρ) and D ≥ 2p + p.
    let cmd = stubborn_child(&dir);
    let grace = Duration::from_secs(1);
    c.start(NodeSpec::new("node-a").args(&[
        "--exec",
        &cmd,
        "--demote-grace",
        "1s",
        "--renew-deadline",
        "700ms",
    ]));
    let (m, _) = c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    assert_eq!(m, "node-a");
    c.start(NodeSpec::new("node-b"));
    let (m, _) = c.wait_stable_master(&["node-a", "node-b"], settle_timeout(&tm));
    assert_eq!(m, "node-a", "the first node stays master");
    let child = tenure_tests::wait_for(settle_timeout(&tm), "the --exec child's pid", || {
        child_pids(&dir).first().copied()
    });
    assert!(alive(child));

    // Master and standby: up, healthy, not shutting down (JSON booleans).
    for n in ["node-a", "node-b"] {
        assert_eq!(
            up_healthy_stopping(c.node(n)),
            (Some(true), Some(true), Some(false)),
            "(up, healthy, shuttingDown) of {n} ({})",
            c.node(n).state()
        );
    }
    let ext = get(c.node("node-b"), "/v1/server/up/extended", None).expect("up/extended");
    let ext = ext.json();
    assert_eq!(
        (&ext["up"], &ext["healthy"], &ext["shuttingDown"]),
        (
            &serde_json::json!(true),
            &serde_json::json!(true),
            &serde_json::json!(false)
        ),
        "up/extended: {ext}"
    );
    assert_eq!(ext["ha"]["masterId"], "node-a", "up/extended: {ext}");

    // INITIALIZING: kill -9 the standby and start it again. Its old record (another instance,
    // not TERMINATED) must stand still for T before it takes its name back; meanwhile it serves
    // HTTP as INITIALIZING. The state is read before and after the liveness answers: both
    // INITIALIZING (a node never goes back to it) puts the answers inside the phase.
    c.node_mut("node-b").restart();
    let mut inside = None;
    let found = wait_until(settle_timeout(&tm), || {
        let node = c.node("node-b");
        if node.state() != "INITIALIZING" {
            return false;
        }
        let answers = up_healthy_stopping(node);
        let row = states_row(node, "node-b", None);
        if node.state() != "INITIALIZING" {
            return false;
        }
        inside = Some((answers, row));
        true
    });
    assert!(
        found,
        "node-b never answered INITIALIZING after its restart; timeline:\n{}",
        c.history().timeline()
    );
    let (answers, row) = inside.expect("set when found");
    assert_eq!(
        answers,
        (Some(false), Some(false), Some(false)),
        "(up, healthy, shuttingDown) while INITIALIZING"
    );
    let row = row.expect("node-b's own /ha/states row while INITIALIZING");
    assert_eq!(row["status"], "INITIALIZING", "{row}");
    assert!(
        row["waiting"].is_object(),
        "an INITIALIZING node says what it waits for: {row}"
    );
    // After T it is a standby again, and up.
    c.wait_answer("node-b", "STANDBY", tm.t + settle_timeout(&tm));
    assert!(
        wait_until(2 * tm.p, || liveness(c.node("node-b"), "/v1/server/up")
            == Some(true)),
        "node-b is STANDBY but not up"
    );

    // Graceful stop of the master: from the SIGTERM on it answers shuttingDown = true while it
    // waits for its child (SIGKILL at G/2), and up = false (shuttingDown never turns false
    // again, so every later up answer must be false).
    let term_at = c.node("node-a").sigterm();
    let mut stopping = None;
    let ok = wait_until(grace, || {
        let node = c.node("node-a");
        if liveness(node, "/v1/server/shuttingDown") != Some(true) {
            return false;
        }
        let seen_at = Instant::now();
        stopping = Some((
            seen_at,
            liveness(node, "/v1/server/up"),
            liveness(node, "/v1/server/healthy"),
            node.state(),
        ));
        true
    });
    assert!(
        ok,
        "node-a never answered shuttingDown = true within {grace:?} after SIGTERM (latest: {:?}); log:\n{}",
        up_healthy_stopping(c.node("node-a")),
        c.node("node-a").log_tail(30)
    );
    let (seen_at, up, healthy, state) = stopping.expect("set when ok");
    eprintln!(
        "node-a answered shuttingDown = true {:?} after SIGTERM; then up = {up:?}, healthy = {healthy:?}, state {state}",
        seen_at.duration_since(term_at)
    );
    assert_eq!(
        (up, healthy),
        (Some(false), Some(false)),
        "(up, healthy) of a node that said shuttingDown = true"
    );
    assert_eq!(state, "TERMINATED", "state of the stopping node");
    // The stop completes: the child is gone, node-a exits 0 and node-b takes over.
    assert_eq!(expect_exit(&mut c, "node-a", grace + 2 * tm.t), 0);
    assert!(!alive(child), "the --exec child {child} outlived node-a");
    let onset = c.wait_takeover(term_at, &["node-a"], grace + tm.max_takeover());
    assert_eq!(onset.node, "node-b");
    assert_eq!(
        up_healthy_stopping(c.node("node-b")),
        (Some(true), Some(true), Some(false)),
        "(up, healthy, shuttingDown) of the new master"
    );
    c.assert_safe();
}
