//! The API over real sockets: a served router, a hand-made snapshot in a watch channel and a
//! task answering commands like the driver would.

mod common;
use common::users;
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tenure_election::clock::{self, Nanos};
use tenure_election::driver::Peers;
use tenure_election::snapshot::{BadRecord, Transition};
use tenure_election::{Command, CommandError, LeaseView, Mode, NodeRow, NodeState, Snapshot};
use tenure_http::client::{Client, ClientError, NudgeClient};
use tenure_http::{ApiState, Users};
use tokio::sync::{mpsc, oneshot, watch};

const SEC: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);

fn snapshot() -> Snapshot {
    let mut s = Snapshot::initializing("a", "inst-a", "http://127.0.0.1:1", Mode::Auto);
    s.plane_id = "plane-1".into();
    s.base_state = NodeState::Standby;
    s.priority = 3;
    s.heartbeat_timeout_ms = 30_000;
    s.poll_period_ms = 1_000;
    s
}

fn as_master(mut s: Snapshot, until: Nanos, epoch: u64) -> Snapshot {
    s.base_state = NodeState::Master;
    s.master_until = Some(until);
    s.own_epoch = Some(epoch);
    s.lease = Some(LeaseView {
        holder: s.own_name.clone(),
        instance_id: s.own_instance.clone(),
        epoch,
        released: false,
        holder_uri: s.own_uri.clone(),
        stale_at: until + HOUR,
    });
    s
}

fn row(name: &str, status: NodeState, stale_at: Nanos) -> NodeRow {
    NodeRow {
        name: name.into(),
        instance_id: format!("inst-{name}"),
        uri: format!("http://{name}.example:8081"),
        status,
        mode: Mode::Auto,
        priority: 1,
        app_version: Some("1.2.3".into()),
        local_timestamp_ms: 1_700_000_000_000,
        remote_timestamp: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_500)),
        last_change: clock::now().saturating_sub(Duration::from_millis(1500)),
        stale_at,
        epoch: None,
    }
}

fn lease(holder: &str, epoch: u64, released: bool, stale_at: Nanos) -> LeaseView {
    LeaseView {
        holder: holder.into(),
        instance_id: format!("inst-{holder}"),
        epoch,
        released,
        holder_uri: format!("http://{holder}.example:8081"),
        stale_at,
    }
}

/// How the fake driver answers.
#[derive(Clone, Copy, PartialEq)]
enum Driver {
    Answer,
    Silent,
    Gone,
}

struct Server {
    base: String,
    snap: watch::Sender<Arc<Snapshot>>,
    seen: Arc<Mutex<Vec<String>>>,
    nudged: watch::Receiver<u32>,
    _stop: oneshot::Sender<()>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    fn set(&self, s: Snapshot) {
        self.snap.send_replace(Arc::new(s));
    }
    fn commands(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn start(snap: Snapshot, users: Option<Users>, public_state: bool) -> Server {
    start_with(snap, users, public_state, Driver::Answer).await
}

async fn start_with(
    snap: Snapshot,
    users: Option<Users>,
    public_state: bool,
    driver: Driver,
) -> Server {
    let (snap_tx, snap_rx) = watch::channel(Arc::new(snap));
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(8);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (nudge_tx, nudged) = watch::channel(0u32);
    let log = seen.clone();
    if driver == Driver::Gone {
        drop(cmd_rx);
    } else {
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(cmd) = cmd_rx.recv().await {
                let line = match cmd {
                    Command::SetMode { mode, reply } => {
                        let r = match mode {
                            Mode::HotBackup => Err(CommandError::Conflict(
                                "cannot become hot-backup now".into(),
                            )),
                            Mode::Disabled => Err(CommandError::ShuttingDown),
                            _ => Ok(NodeState::Standby),
                        };
                        if driver == Driver::Silent {
                            held.push(reply);
                        } else {
                            let _ = reply.send(r);
                        }
                        format!("mode {mode}")
                    }
                    Command::SetPriority { priority, reply } => {
                        let r = if priority == 999 {
                            Err(CommandError::BadRequest("999 is reserved".into()))
                        } else {
                            Ok(3)
                        };
                        let _ = reply.send(r);
                        format!("priority {priority}")
                    }
                    Command::ClearStates { reply } => {
                        let _ = reply.send(Ok(vec!["c".into()]));
                        "clear".into()
                    }
                    Command::ClearNode { name, reply } => {
                        let _ = reply.send(Ok(()));
                        format!("clear {name}")
                    }
                    Command::Nudge => {
                        nudge_tx.send_modify(|n| *n += 1);
                        "nudge".into()
                    }
                    Command::Shutdown => "shutdown".into(),
                };
                log.lock().unwrap().push(line);
            }
        });
    }
    let state = ApiState::new(snap_rx, cmd_tx, users, public_state)
        .with_command_timeout(Duration::from_millis(300));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    tokio::spawn(tenure_http::serve(listener, state, async move {
        let _ = stop_rx.await;
    }));
    Server {
        base,
        snap: snap_tx,
        seen,
        nudged,
        _stop: stop_tx,
    }
}

fn http() -> reqwest::Client {
    // reqwest is built without a crypto provider of its own (ring is the one in the binary).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn epoch_header(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("x-ha-epoch")
        .map(|v| v.to_str().unwrap().to_string())
}

/// Asserts a JSON error body in Brooklyn's `ApiError` shape (`{message, data: {code}, error:
/// <status>}`) and returns it.
async fn json_error(r: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], status.as_u16(), "{v}");
    assert_eq!(v["data"]["code"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v
}

#[tokio::test]
async fn state_is_a_json_string_with_the_epoch() {
    let srv = start(as_master(snapshot(), clock::now() + HOUR, 7), None, false).await;
    let c = http();
    let r = c.get(srv.url("/v1/server/ha/state")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(epoch_header(&r).as_deref(), Some("7"));
    assert_eq!(r.text().await.unwrap(), "\"MASTER\"");

    // A standby that knows no master: no epoch header.
    srv.set(snapshot());
    let r = c.get(srv.url("/v1/server/ha/state")).send().await.unwrap();
    assert_eq!(epoch_header(&r), None);
    assert_eq!(r.text().await.unwrap(), "\"STANDBY\"");

    // A standby that sees another node's live lease reports that master's epoch.
    let mut s = snapshot();
    s.base_state = NodeState::HotStandby;
    s.lease = Some(lease("m", 12, false, clock::now() + HOUR));
    srv.set(s);
    let r = c
        .get(srv.url("/v1/server/ha/state"))
        .header("Brooklyn-Allow-Non-Master-Access", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(epoch_header(&r).as_deref(), Some("12"));
    assert_eq!(r.text().await.unwrap(), "\"HOT_STANDBY\"");

    // Every state has its body.
    for st in NodeState::ALL {
        let mut s = snapshot();
        s.base_state = st;
        srv.set(s);
        let r = c.get(srv.url("/ha/state")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), format!("\"{}\"", st.as_str()));
    }
}

#[tokio::test]
async fn master_answer_ends_at_the_deadline() {
    let deadline = clock::now() + Duration::from_millis(300);
    let srv = start(as_master(snapshot(), deadline, 4), None, false).await;
    let c = http();
    let mut masters = 0;
    let flipped_at = loop {
        let before = clock::now();
        assert!(
            before < deadline + 10 * SEC,
            "still MASTER 10 s after the deadline"
        );
        let r = c.get(srv.url("/ha/state")).send().await.unwrap();
        let epoch = epoch_header(&r);
        let body = r.text().await.unwrap();
        let after = clock::now();
        match body.as_str() {
            "\"MASTER\"" => {
                // Never MASTER once the deadline had passed when the request was sent.
                assert!(before < deadline, "MASTER after the deadline");
                assert_eq!(epoch.as_deref(), Some("4"));
                masters += 1;
            }
            "\"STANDBY\"" => {
                // Never demoted before the deadline.
                assert!(after >= deadline, "STANDBY before the deadline");
                assert_eq!(epoch, None);
                break after;
            }
            other => panic!("unexpected {other}"),
        }
    };
    assert!(
        masters > 0,
        "answered MASTER at least once before {flipped_at:?}"
    );
    for _ in 0..5 {
        let r = c.get(srv.url("/ha/state")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "\"STANDBY\"");
    }
}

#[tokio::test]
async fn master_endpoint_is_for_status_code_checkers() {
    let srv = start(as_master(snapshot(), clock::now() + HOUR, 2), None, false).await;
    let c = http();
    for path in ["/v1/server/ha/master", "/ha/master"] {
        let r = c.get(srv.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(epoch_header(&r).as_deref(), Some("2"));
        assert_eq!(r.text().await.unwrap(), "\"MASTER\"");
    }
    srv.set(snapshot());
    let r = c.get(srv.url("/ha/master")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), "\"STANDBY\"");
    // Expired deadline: 503 too, computed at the request.
    srv.set(as_master(snapshot(), clock::now(), 2));
    let r = c.get(srv.url("/ha/master")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "\"STANDBY\"");
}

#[tokio::test]
async fn states_follow_the_lease_and_heartbeats() {
    let now = clock::now();
    let mut s = snapshot();
    s.base_state = NodeState::HotStandby;
    s.mode = Mode::HotStandby;
    let mut own = row("a", NodeState::HotStandby, now + HOUR);
    own.instance_id = "inst-a".into();
    let stale = row("c", NodeState::Standby, now.saturating_sub(SEC));
    let terminated = row("d", NodeState::Terminated, now.saturating_sub(SEC));
    let mut claims = row("e", NodeState::Master, now + HOUR);
    claims.mode = Mode::HotStandby;
    claims.epoch = Some(5);
    let mut unknown_remote = row("f", NodeState::Standby, now + HOUR);
    unknown_remote.remote_timestamp = None;
    s.nodes = vec![
        own,
        row("b", NodeState::Standby, now + HOUR),
        stale,
        terminated,
        claims,
        unknown_remote,
    ];
    s.lease = Some(lease("m", 6, false, now + HOUR));
    s.bad_records = vec![BadRecord {
        key: "nodes/zz.json".into(),
        reason: "bad checksum".into(),
    }];
    let srv = start(s.clone(), None, false).await;
    let c = http();

    let v: Value = c
        .get(srv.url("/ha/states"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["planeId"], "plane-1");
    assert_eq!(v["ownId"], "a");
    assert_eq!(v["masterId"], "m");
    assert_eq!(v["epoch"], 6);
    assert_eq!(v["links"], serde_json::json!({}));
    assert_eq!(
        v["badRecords"],
        serde_json::json!([{"key": "nodes/zz.json", "reason": "bad checksum"}])
    );
    let nodes = v["nodes"].as_object().unwrap();
    let names: Vec<&str> = nodes.keys().map(String::as_str).collect();
    assert_eq!(names, ["a", "b", "c", "d", "e", "f", "m"]);
    for (name, n) in nodes {
        for field in [
            "nodeId",
            "nodeUri",
            "status",
            "localTimestamp",
            "remoteTimestamp",
            "priority",
        ] {
            assert!(n.get(field).is_some(), "{name} lacks {field}: {n}");
        }
        assert_eq!(n["nodeId"], name.as_str());
    }
    let status = |n: &str| nodes[n]["status"].as_str().unwrap().to_string();
    assert_eq!(status("a"), "HOT_STANDBY");
    assert_eq!(status("b"), "STANDBY");
    assert_eq!(status("c"), "FAILED");
    assert_eq!(status("d"), "TERMINATED");
    assert_eq!(
        status("e"),
        "HOT_STANDBY",
        "a record's MASTER claim is not the lease"
    );
    assert_eq!(status("m"), "MASTER");
    let b = &nodes["b"];
    assert_eq!(b["nodeUri"], "http://b.example:8081");
    assert_eq!(b["localTimestamp"], 1_700_000_000_000i64);
    assert_eq!(b["remoteTimestamp"], 1_700_000_000_500i64);
    assert_eq!(b["priority"], 1);
    assert_eq!(b["instanceId"], "inst-b");
    assert_eq!(b["appVersion"], "1.2.3");
    assert!(b["heartbeatAgeMs"].as_u64().unwrap() >= 1500);
    assert!(nodes["f"]["remoteTimestamp"].is_null());
    // Synthesized from the lease.
    let m = &nodes["m"];
    assert_eq!(m["nodeUri"], "http://m.example:8081");
    assert_eq!(m["epoch"], 6);
    assert_eq!(m["instanceId"], "inst-m");
    assert!(m["localTimestamp"].is_null());
    assert_eq!(nodes["a"]["priority"], 3);
    assert_eq!(nodes["a"]["mode"], "hot-standby");

    // The holder has a record that still says STANDBY: the lease makes it MASTER.
    let mut s2 = s.clone();
    s2.lease = Some(lease("b", 8, false, now + HOUR));
    srv.set(s2);
    let v: Value = c
        .get(srv.url("/ha/states"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["masterId"], "b");
    assert_eq!(v["nodes"]["b"]["status"], "MASTER");
    assert_eq!(v["nodes"]["b"]["epoch"], 8);
    assert!(v["nodes"].get("m").is_none());

    // After a release nobody is master; the old holder's row is its own record.
    let mut s3 = s.clone();
    s3.lease = Some(lease("b", 8, true, now + HOUR));
    srv.set(s3);
    let r = c.get(srv.url("/ha/states")).send().await.unwrap();
    assert_eq!(epoch_header(&r), None);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["masterId"], Value::Null);
    assert_eq!(v["nodes"]["b"]["status"], "STANDBY");

    // This node as master: its own row is MASTER with the time left on its lease.
    let mut s4 = as_master(s.clone(), clock::now() + Duration::from_secs(20), 9);
    s4.nodes.retain(|r| r.name != "e");
    srv.set(s4);
    let v: Value = c
        .get(srv.url("/ha/states"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["masterId"], "a");
    assert_eq!(v["epoch"], 9);
    let a = &v["nodes"]["a"];
    assert_eq!(a["status"], "MASTER");
    assert_eq!(a["epoch"], 9);
    let left = a["leaseDeadlineMs"].as_u64().unwrap();
    assert!(left > 0 && left <= 20_000, "{left}");
    assert!(v["nodes"].get("m").is_none());
}

/// Expected members: `/ha/states` lists them and the missing ones (absent, silent, stopped);
/// Brooklyn's `/v1/server/ha/states` stays exactly Brooklyn's; without a list, neither field.
#[tokio::test]
async fn states_list_the_missing_expected_members() {
    let now = clock::now();
    let mut s = snapshot();
    s.nodes = vec![
        row("b", NodeState::Standby, now + HOUR),
        row("c", NodeState::Standby, now.saturating_sub(SEC)),
        row("d", NodeState::Terminated, now + HOUR),
        row("x", NodeState::Standby, now + HOUR),
    ];
    s.lease = Some(lease("m", 2, false, now + HOUR));
    let srv = start(s.clone(), None, false).await;
    let c = http();
    let get = |path: &'static str| {
        let c = c.clone();
        let url = srv.url(path);
        async move {
            c.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let v = get("/ha/states").await;
    assert!(
        v.get("expected").is_none() && v.get("missing").is_none(),
        "{v}"
    );

    s.expected = ["a", "b", "c", "d", "e", "m"].map(String::from).to_vec();
    srv.set(s.clone());
    let v = get("/ha/states").await;
    assert_eq!(
        v["expected"],
        serde_json::json!(["a", "b", "c", "d", "e", "m"])
    );
    assert_eq!(v["missing"], serde_json::json!(["c", "d", "e"]), "{v}");
    // The rows are unchanged: the silent one is FAILED, the absent one has none.
    assert_eq!(v["nodes"]["c"]["status"], "FAILED");
    assert!(v["nodes"].get("e").is_none());
    let parsed: tenure_http::wire::States = serde_json::from_value(v).unwrap();
    assert_eq!(parsed.missing(), ["c", "d", "e"]);
    let b = get("/v1/server/ha/states").await;
    let mut keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["links", "masterId", "nodes", "ownId", "planeId"]);

    // All present: the list is there and empty.
    s.nodes.retain(|r| r.name == "b" || r.name == "x");
    s.expected = ["a", "b", "m"].map(String::from).to_vec();
    srv.set(s);
    let v = get("/ha/states").await;
    assert_eq!(v["missing"], serde_json::json!([]), "{v}");
}

#[tokio::test]
async fn aliases_answer_like_the_v1_paths() {
    let srv = start(as_master(snapshot(), clock::now() + HOUR, 3), None, false).await;
    let c = http();
    for p in ["state", "master", "priority", "metrics"] {
        let a = c
            .get(srv.url(&format!("/v1/server/ha/{p}")))
            .send()
            .await
            .unwrap();
        let b = c.get(srv.url(&format!("/ha/{p}"))).send().await.unwrap();
        assert_eq!(a.status(), 200, "{p}");
        assert_eq!(b.status(), 200, "{p}");
        assert_eq!(a.headers()["content-type"], b.headers()["content-type"]);
        let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
        if p != "metrics" {
            assert_eq!(a, b, "{p}");
        } else {
            assert_eq!(
                a.as_object().unwrap().keys().collect::<Vec<_>>(),
                b.as_object().unwrap().keys().collect::<Vec<_>>()
            );
        }
    }
    let r = c.get(srv.url("/ha/priority")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "3");
}

#[tokio::test]
async fn without_users_reads_are_open_and_changes_refused() {
    let srv = start(snapshot(), None, false).await;
    let c = http();
    for p in [
        "/ha/state",
        "/ha/states",
        "/ha/priority",
        "/ha/metrics",
        "/metrics",
    ] {
        assert_eq!(c.get(srv.url(p)).send().await.unwrap().status(), 200, "{p}");
    }
    for (p, form) in [
        ("/ha/state", "mode=master"),
        ("/ha/priority", "priority=4"),
        ("/ha/states/clear", ""),
        ("/ha/states/clear/node", "nodeId=b"),
    ] {
        let r = c
            .post(srv.url(p))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        let v = json_error(r, StatusCode::FORBIDDEN, "forbidden").await;
        assert!(v["message"].as_str().unwrap().contains("--users"), "{v}");
    }
    assert!(srv.commands().is_empty());
    // A nudge needs no credentials.
    let r = c.post(srv.url("/v1/server/ha/nudge")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let mut n = srv.nudged.clone();
    tokio::time::timeout(5 * SEC, n.wait_for(|n| *n >= 1))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn with_users_reads_need_a_login_and_changes_need_admin() {
    let srv = start(snapshot(), Some(users()), false).await;
    let c = http();

    for p in ["/ha/state", "/ha/master", "/ha/states", "/metrics"] {
        let r = c.get(srv.url(p)).send().await.unwrap();
        assert_eq!(
            r.headers()["www-authenticate"],
            "Basic realm=\"tenure\"",
            "{p}"
        );
        json_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let r = c
        .get(srv.url("/ha/states"))
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let r = c
        .get(srv.url("/ha/states"))
        .basic_auth("mallory", Some("alice-pw"))
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;

    // Reader: reads yes (twice: the second is served from the verification cache), changes no.
    for _ in 0..2 {
        let r = c
            .get(srv.url("/ha/states"))
            .basic_auth("bob", Some("bob-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = c
        .post(srv.url("/ha/state"))
        .basic_auth("bob", Some("bob-pw"))
        .form(&[("mode", "master")])
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = c
        .post(srv.url("/ha/state"))
        .form(&[("mode", "master")])
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(srv.commands().is_empty());

    // Admin: changes go to the driver; the answer is the previous state.
    let r = c
        .post(srv.url("/v1/server/ha/state"))
        .basic_auth("alice", Some("alice-pw"))
        .form(&[("mode", "MASTER")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), "\"STANDBY\"");
    // The mode may come in the query string too (Brooklyn's clients send either).
    let r = c
        .post(srv.url("/ha/state?mode=hot_standby"))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(srv.url("/ha/priority"))
        .basic_auth("alice", Some("alice-pw"))
        .form(&[("priority", "-4")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "3");
    let r = c
        .post(srv.url("/ha/states/clear"))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        serde_json::json!({"cleared": ["c"]})
    );
    let r = c
        .post(srv.url("/ha/states/clear/node"))
        .basic_auth("alice", Some("alice-pw"))
        .form(&[("nodeId", "b")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        srv.commands(),
        [
            "mode master",
            "mode hot-standby",
            "priority -4",
            "clear",
            "clear b"
        ]
    );

    // Nudges stay open.
    let r = c.post(srv.url("/ha/nudge")).send().await.unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn public_state_opens_only_state_and_master() {
    let srv = start(
        as_master(snapshot(), clock::now() + HOUR, 1),
        Some(users()),
        true,
    )
    .await;
    let c = http();
    for p in ["/ha/state", "/v1/server/ha/master"] {
        let r = c.get(srv.url(p)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
        assert_eq!(r.text().await.unwrap(), "\"MASTER\"");
    }
    for p in ["/ha/states", "/ha/priority", "/ha/metrics", "/metrics"] {
        let r = c.get(srv.url(p)).send().await.unwrap();
        json_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let r = c
        .post(srv.url("/ha/state"))
        .form(&[("mode", "auto")])
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn bad_input_and_driver_errors_are_json() {
    let srv = start(snapshot(), Some(users()), false).await;
    let c = http();
    let post = |path: &str, form: &'static str| {
        c.post(srv.url(path))
            .basic_auth("alice", Some("alice-pw"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
    };
    let v = json_error(
        post("/ha/state", "mode=leader").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad-request",
    )
    .await;
    assert!(
        v["message"].as_str().unwrap().contains("hot-standby"),
        "{v}"
    );
    json_error(
        post("/ha/state", "").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad-request",
    )
    .await;
    json_error(
        post("/ha/priority", "priority=high").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad-request",
    )
    .await;
    json_error(
        post("/ha/states/clear/node", "nodeId=../etc")
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "bad-request",
    )
    .await;
    json_error(
        post("/ha/states/clear/node", "").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad-request",
    )
    .await;
    // From the driver: BadRequest → 400, Conflict → 409, ShuttingDown → 503.
    let v = json_error(
        post("/ha/priority", "priority=999").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad-request",
    )
    .await;
    assert_eq!(v["message"], "999 is reserved");
    let v = json_error(
        post("/ha/state", "mode=hot-backup").await.unwrap(),
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert_eq!(v["message"], "cannot become hot-backup now");
    json_error(
        post("/ha/state", "mode=disabled").await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting-down",
    )
    .await;

    // Unknown path and wrong method: JSON too.
    let r = c.get(srv.url("/v1/server/ha/nope")).send().await.unwrap();
    json_error(r, StatusCode::NOT_FOUND, "not-found").await;
    // (`/` is the web console, tests/console.rs.)
    let r = c.get(srv.url("/nope")).send().await.unwrap();
    json_error(r, StatusCode::NOT_FOUND, "not-found").await;
    let r = c.delete(srv.url("/ha/state")).send().await.unwrap();
    assert!(r.headers().get("allow").is_some());
    json_error(r, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed").await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let srv = start(snapshot(), Some(users()), false).await;
    let c = http();
    let big = format!("mode=master&pad={}", "x".repeat(70 * 1024));
    let r = c
        .post(srv.url("/ha/state"))
        .basic_auth("alice", Some("alice-pw"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;

    // Chunked, so no Content-Length announces it: the body limit catches it while reading.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = srv.base.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = base64_basic("alice", "alice-pw");
    let head = format!(
        "POST /ha/state HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    // The server may answer (and close) before it has read everything.
    let _ = tcp.write_all(chunk.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(10 * SEC, tcp.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload-too-large"), "{answer}");
    assert!(srv.commands().is_empty());
}

fn base64_basic(user: &str, pw: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

#[tokio::test]
async fn driver_gone_or_silent_is_503() {
    let srv = start_with(snapshot(), Some(users()), false, Driver::Gone).await;
    let c = http();
    let r = c
        .post(srv.url("/ha/state"))
        .basic_auth("alice", Some("alice-pw"))
        .form(&[("mode", "auto")])
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    // A nudge into a closed queue is still accepted: it carries nothing to obey.
    assert_eq!(
        c.post(srv.url("/ha/nudge")).send().await.unwrap().status(),
        202
    );

    let srv = start_with(snapshot(), Some(users()), false, Driver::Silent).await;
    let r = c
        .post(srv.url("/ha/state"))
        .basic_auth("alice", Some("alice-pw"))
        .form(&[("mode", "auto")])
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::SERVICE_UNAVAILABLE, "timeout").await;
}

#[tokio::test]
async fn epoch_header_is_on_every_response_when_a_master_is_known() {
    let srv = start(as_master(snapshot(), clock::now() + HOUR, 11), None, false).await;
    let c = http();
    for r in [
        c.get(srv.url("/ha/states")).send().await.unwrap(),
        c.get(srv.url("/metrics")).send().await.unwrap(),
        c.get(srv.url("/nope")).send().await.unwrap(),
        c.post(srv.url("/ha/state"))
            .form(&[("mode", "auto")])
            .send()
            .await
            .unwrap(),
        c.post(srv.url("/ha/nudge")).send().await.unwrap(),
    ] {
        assert_eq!(epoch_header(&r).as_deref(), Some("11"), "{}", r.url());
    }
    srv.set(snapshot());
    for r in [
        c.get(srv.url("/ha/states")).send().await.unwrap(),
        c.get(srv.url("/nope")).send().await.unwrap(),
    ] {
        assert_eq!(epoch_header(&r), None, "{}", r.url());
    }
}

#[tokio::test]
async fn ha_metrics_keep_the_newest_200_transitions() {
    let mut s = as_master(snapshot(), clock::now() + HOUR, 5);
    s.storage_errors = 4;
    s.transitions = (0..250)
        .map(|i| Transition {
            at_ms: 1_700_000_000_000 + i,
            from: NodeState::Standby,
            to: NodeState::Master,
            epoch: Some(i as u64),
            reason: format!("t{i}"),
        })
        .collect();
    let srv = start(s, None, false).await;
    let v: Value = http()
        .get(srv.url("/v1/server/ha/metrics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["state"], "MASTER");
    assert_eq!(v["planeId"], "plane-1");
    assert_eq!(v["nodeId"], "a");
    assert_eq!(v["epoch"], 5);
    assert_eq!(v["heartbeatTimeoutMs"], 30_000);
    assert_eq!(v["pollPeriodMs"], 1_000);
    assert_eq!(v["storageErrors"], 4);
    assert!(v["uptime"].is_string());
    let t = v["transitions"].as_array().unwrap();
    assert_eq!(t.len(), 200);
    assert_eq!(t[0]["reason"], "t50");
    assert_eq!(
        t[199],
        serde_json::json!({"at": 1_700_000_000_249i64, "from": "STANDBY", "to": "MASTER", "epoch": 249, "reason": "t249"})
    );
}

/// name, labels, value
type Sample = (String, Vec<(String, String)>, f64);

/// A small checker of the Prometheus/OpenMetrics text format: comments, then
/// `name{label="value",…} number` samples, and `# EOF` last.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let kind = rest.split(' ').next().unwrap();
            assert!(["HELP", "TYPE", "UNIT"].contains(&kind), "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = value.parse().expect(line);
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').expect(line);
                let labels = inner
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').expect(line);
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .expect(line);
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        samples.push((name.to_string(), labels, value));
    }
    samples
}

#[tokio::test]
async fn prometheus_metrics_are_read_at_scrape_time() {
    let now = clock::now();
    let mut s = as_master(snapshot(), now + HOUR, 9);
    s.storage_errors = 2;
    s.nodes = vec![
        row("b", NodeState::Standby, now + HOUR),
        row("c", NodeState::Standby, now.saturating_sub(SEC)),
    ];
    let srv = start(s, None, false).await;
    let c = http();
    let r = c.get(srv.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().await.unwrap();
    let samples = parse_exposition(&text);
    let get = |name: &str, label: Option<(&str, &str)>| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name && label.is_none_or(|(k, v)| l.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|s| s.2)
            .unwrap_or_else(|| panic!("no {name} {label:?} in\n{text}"))
    };
    assert_eq!(get("tenure_is_master", None), 1.0);
    assert_eq!(get("tenure_state", Some(("state", "MASTER"))), 1.0);
    assert_eq!(get("tenure_state", Some(("state", "STANDBY"))), 0.0);
    assert_eq!(get("tenure_epoch", None), 9.0);
    assert_eq!(get("tenure_storage_errors_total", None), 2.0);
    assert_eq!(get("tenure_transitions_total", None), 0.0);
    assert!(get("tenure_node_heartbeat_age_seconds", Some(("node", "b"))) >= 1.5);
    assert_eq!(get("tenure_nodes", None), 3.0);
    assert_eq!(get("tenure_live_nodes", None), 2.0);

    srv.set(as_master(snapshot(), clock::now(), 9));
    let text = c
        .get(srv.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse_exposition(&text);
    let is_master = samples
        .iter()
        .find(|s| s.0 == "tenure_is_master")
        .unwrap()
        .2;
    assert_eq!(is_master, 0.0, "the deadline has passed");
}

#[tokio::test]
async fn client_calls_the_api() {
    let srv = start(
        as_master(snapshot(), clock::now() + HOUR, 7),
        Some(users()),
        false,
    )
    .await;
    let admin = Client::new(5 * SEC, Some(("alice".into(), "alice-pw".into()))).unwrap();
    let base = format!("{}/", srv.base); // a trailing slash is fine

    assert_eq!(
        admin.state(&base).await.unwrap(),
        (NodeState::Master, Some(7))
    );
    let v = admin.states(&srv.base).await.unwrap();
    assert_eq!(v["ownId"], "a");
    assert_eq!(
        admin.set_mode(&srv.base, Mode::HotStandby).await.unwrap(),
        NodeState::Standby
    );
    assert_eq!(admin.set_priority(&srv.base, 12).await.unwrap(), 3);
    assert_eq!(srv.commands(), ["mode hot-standby", "priority 12"]);

    // The server's message comes through for other errors.
    let e = admin
        .set_mode(&srv.base, Mode::HotBackup)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409));
    assert!(
        e.to_string().contains("cannot become hot-backup now"),
        "{e}"
    );

    let anonymous = Client::new(5 * SEC, None).unwrap();
    let e = anonymous.state(&srv.base).await.unwrap_err();
    assert!(matches!(e, ClientError::LoginRequired { .. }), "{e:?}");
    assert!(e.to_string().contains("-u user:password"), "{e}");
    let wrong = Client::new(5 * SEC, Some(("alice".into(), "nope".into()))).unwrap();
    let e = wrong.state(&srv.base).await.unwrap_err();
    assert!(e.to_string().contains("-u"), "{e}");
    let reader = Client::new(5 * SEC, Some(("bob".into(), "bob-pw".into()))).unwrap();
    let e = reader.set_mode(&srv.base, Mode::Auto).await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert!(e.to_string().contains("role admin"), "{e}");

    // Nothing listening.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let e = anonymous.state(&dead).await.unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains("is tenure running there?"), "{e}");
    assert!(e.to_string().contains(&dead), "{e}");
}

#[tokio::test]
async fn nudges_are_fire_and_forget() {
    let srv = start(snapshot(), None, false).await;
    let peers = NudgeClient::new().unwrap();
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let t = Instant::now();
    peers.nudge(vec![dead, format!("{}/", srv.base)]);
    // From a thread outside the runtime too (the driver may call from anywhere).
    let p2 = peers.clone();
    let b2 = srv.base.clone();
    std::thread::spawn(move || p2.nudge(vec![b2]))
        .join()
        .unwrap();
    assert!(t.elapsed() < SEC, "nudge() must not wait for the requests");
    let mut n = srv.nudged.clone();
    tokio::time::timeout(5 * SEC, n.wait_for(|n| *n >= 2))
        .await
        .expect("both nudges arrive")
        .unwrap();
}

#[tokio::test]
async fn a_nudge_flood_is_coalesced() {
    let srv = start(snapshot(), None, false).await;
    let c = http();
    let t = Instant::now();
    for _ in 0..30 {
        assert_eq!(
            c.post(srv.url("/ha/nudge")).send().await.unwrap().status(),
            202
        );
    }
    let mut n = srv.nudged.clone();
    // The first goes through at once; the rest end up in one deferred nudge per gap.
    tokio::time::timeout(5 * SEC, n.wait_for(|n| *n >= 2))
        .await
        .expect("the deferred nudge arrives")
        .unwrap();
    let gaps = (t.elapsed().as_millis() / 100) as u32;
    let forwarded = *n.borrow();
    assert!(forwarded <= gaps + 2, "{forwarded} nudges in {gaps} gaps");
}
