//! The console's server side over real sockets: `…/ha/history` from an in-memory store (also a
//! hung one), `…/ha/events` following the snapshot channel, and the page (`/`, `/ui`): its
//! headers, its banner, and its forms for admins only.

mod common;
use common::users;
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenure_election::clock::{self, Nanos};
use tenure_election::records::{self, EpochRecord, FORMAT};
use tenure_election::{Command, LeaseView, Mode, NodeState, Snapshot};
use tenure_http::{ApiState, Users};
use tenure_store::Store;
use tenure_testkit::MemoryStore;
use tokio::sync::{mpsc, oneshot, watch};

const HOUR: Duration = Duration::from_secs(3600);

fn snapshot() -> Snapshot {
    let mut s = Snapshot::initializing("a", "inst-a", "http://127.0.0.1:1", Mode::Auto);
    s.plane_id = "plane-1".into();
    s.base_state = NodeState::Standby;
    s.heartbeat_timeout_ms = 30_000;
    s.poll_period_ms = 1_000;
    s
}

fn lease(holder: &str, epoch: u64, stale_at: Nanos) -> LeaseView {
    LeaseView {
        holder: holder.into(),
        instance_id: format!("inst-{holder}"),
        epoch,
        released: false,
        holder_uri: format!("http://{holder}.example:8081"),
        stale_at,
    }
}

fn as_master(mut s: Snapshot, epoch: u64) -> Snapshot {
    s.base_state = NodeState::Master;
    s.master_until = Some(clock::now() + HOUR);
    s.own_epoch = Some(epoch);
    s.lease = Some(LeaseView {
        holder: "a".into(),
        instance_id: "inst-a".into(),
        epoch,
        released: false,
        holder_uri: s.own_uri.clone(),
        stale_at: clock::now() + 2 * HOUR,
    });
    s
}

fn term(epoch: u64, holder: &str, reason: &str) -> Vec<u8> {
    records::encode(&EpochRecord {
        format: FORMAT,
        cluster_id: "plane-1".into(),
        epoch,
        holder: holder.into(),
        instance_id: format!("inst-{holder}"),
        started_at_ms: 1_700_000_000_000 + epoch as i64 * 1000,
        previous: (epoch > 1).then(|| epoch - 1),
        previous_holder: (epoch > 1).then(|| "x".to_string()),
        reason: reason.into(),
    })
}

struct Server {
    base: String,
    snap: watch::Sender<Arc<Snapshot>>,
    _stop: oneshot::Sender<()>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    fn set(&self, s: Snapshot) {
        self.snap.send_replace(Arc::new(s));
    }
}

async fn start(snap: Snapshot, store: &MemoryStore, users: Option<Users>) -> Server {
    let (snap_tx, snap_rx) = watch::channel(Arc::new(snap));
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(8);
    tokio::spawn(async move {
        while let Some(cmd) = cmd_rx.recv().await {
            match cmd {
                Command::SetMode { reply, .. } => {
                    let _ = reply.send(Ok(NodeState::Master));
                }
                Command::SetPriority { reply, .. } => {
                    let _ = reply.send(Ok(0));
                }
                _ => {}
            }
        }
    });
    let state = ApiState::new(snap_rx, cmd_tx, users, false)
        .with_storage_timeout(Duration::from_millis(200))
        .with_store(Arc::new(store.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    tokio::spawn(tenure_http::serve(listener, state, async move {
        let _ = stop_rx.await;
    }));
    Server {
        base,
        snap: snap_tx,
        _stop: stop_tx,
    }
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn json(c: &reqwest::Client, url: String) -> (StatusCode, Value) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// The terms come newest first with their end, bounded by `?limit=`; a bad record is reported
/// beside them, never as a term; a new epoch in the snapshot makes the next request read it.
#[tokio::test]
async fn history_lists_the_terms_newest_first() {
    let store = MemoryStore::new();
    store
        .create("epochs/1.json", &term(1, "a", "cold-start"))
        .unwrap();
    store
        .create("epochs/2.json", &term(2, "b", "expired"))
        .unwrap();
    store.create("epochs/3.json", b"not json").unwrap();
    store
        .create("epochs/10.json", &term(10, "c", "switchover"))
        .unwrap();
    let mut s = snapshot();
    s.lease = Some(lease("c", 10, clock::now() + HOUR));
    let srv = start(s.clone(), &store, None).await;
    let c = http();
    let (code, v) = json(&c, srv.url("/v1/server/ha/history")).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    let epochs: Vec<u64> = v["terms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, [10, 2, 1], "{v}");
    let newest = &v["terms"][0];
    assert_eq!(newest["holder"], "c");
    assert_eq!(newest["instance"], "inst-c");
    assert_eq!(newest["reason"], "switchover");
    assert_eq!(newest["previous"], 9);
    assert_eq!(newest["started"], 1_700_000_010_000i64);
    assert!(newest["ended"].is_null());
    assert_eq!(v["terms"][1]["ended"], 1_700_000_010_000i64);
    assert_eq!(v["total"], 4);
    assert_eq!(v["bad"][0]["key"], "epochs/3.json");
    assert_eq!(v["stale"], false);

    let (_, v) = json(&c, srv.url("/ha/history?limit=1")).await;
    assert_eq!(v["terms"].as_array().unwrap().len(), 1);
    let (code, _) = json(&c, srv.url("/ha/history?limit=0")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    // A new term: seen at the next request after the refresh gap.
    store
        .create("epochs/11.json", &term(11, "a", "expired"))
        .unwrap();
    s.lease = Some(lease("a", 11, clock::now() + HOUR));
    srv.set(s);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, v) = json(&c, srv.url("/ha/history")).await;
        if v["terms"][0]["epoch"] == 11 {
            break;
        }
        assert!(Instant::now() < deadline, "epoch 11 never listed: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A hung store: the history answers 503 within two storage timeouts, `/ha/state` meanwhile
/// answers at once, and a second request starts no second read.
#[tokio::test]
async fn a_hung_store_never_holds_the_api() {
    let store = MemoryStore::new();
    store
        .create("epochs/1.json", &term(1, "a", "cold-start"))
        .unwrap();
    store.set_delay(HOUR);
    let srv = start(snapshot(), &store, None).await;
    let c = http();
    let t0 = Instant::now();
    let (code, v) = json(&c, srv.url("/ha/history")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let t1 = Instant::now();
    let r = c.get(srv.url("/ha/state")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(t1.elapsed() < Duration::from_millis(500));
    let (code, _) = json(&c, srv.url("/ha/history")).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    // Once the store answers again, so does the history.
    store.set_delay(Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (code, v) = json(&c, srv.url("/ha/history")).await;
        if code == StatusCode::OK {
            assert_eq!(v["terms"][0]["epoch"], 1);
            break;
        }
        assert!(Instant::now() < deadline, "history never recovered: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads one SSE event (`event:` name and `data:` JSON), skipping comments.
async fn next_event(r: &mut reqwest::Response, buf: &mut String) -> (String, Value) {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !name.is_empty() {
                return (name, serde_json::from_str(&data).unwrap());
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), r.chunk())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("the stream is open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

/// The stream starts with the whole picture, then sends each change with its epoch.
#[tokio::test]
async fn events_follow_the_snapshot() {
    let store = MemoryStore::new();
    let mut s = snapshot();
    s.lease = Some(lease("b", 4, clock::now() + HOUR));
    let srv = start(s.clone(), &store, None).await;
    let c = http();
    let mut r = c.get(srv.url("/v1/server/ha/events")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let (name, v) = next_event(&mut r, &mut buf).await;
    assert_eq!(name, "hello");
    assert_eq!(v["node"], "a");
    assert_eq!(v["state"], "STANDBY");
    assert_eq!(v["master"], "b");
    assert_eq!(v["epoch"], 4);

    let t0 = Instant::now();
    srv.set(as_master(s, 5));
    let (name, v) = next_event(&mut r, &mut buf).await;
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(name, "state");
    assert_eq!(
        (v["state"].as_str(), v["previous"].as_str()),
        (Some("MASTER"), Some("STANDBY"))
    );
    assert_eq!(v["epoch"], 5);
    let (name, v) = next_event(&mut r, &mut buf).await;
    assert_eq!(name, "master");
    assert_eq!(
        (v["master"].as_str(), v["previous"].as_str()),
        (Some("a"), Some("b"))
    );
    assert_eq!(v["epoch"], 5);
    let (name, v) = next_event(&mut r, &mut buf).await;
    assert_eq!(name, "members");
    assert_eq!(v["nodes"]["a"], "MASTER");
}

/// Events are reads: 401 without a login when `--users` is set.
#[tokio::test]
async fn events_and_the_page_need_a_reader() {
    let store = MemoryStore::new();
    let srv = start(snapshot(), &store, Some(users())).await;
    let c = http();
    for path in [
        "/v1/server/ha/events",
        "/ha/history",
        "/",
        "/ui",
        "/ui/main",
    ] {
        let r = c.get(srv.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(r.headers().contains_key("www-authenticate"), "{path}");
    }
    // The static assets hold no data.
    let r = c.get(srv.url("/ui/console.js")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(srv.url("/ui"))
        .basic_auth("bob", Some("bob-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

async fn page(c: &reqwest::Client, srv: &Server, user: Option<(&str, &str)>) -> String {
    let mut req = c.get(srv.url("/ui"));
    if let Some((u, p)) = user {
        req = req.basic_auth(u, Some(p));
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    r.text().await.unwrap()
}

/// The page: a standby shows the banner naming the master with its link; a master does not.
/// Admins get the forms, readers none; no inline script, nothing from another origin.
#[tokio::test]
async fn the_page_shows_the_banner_and_forms_for_admins_only() {
    let store = MemoryStore::new();
    store
        .create("epochs/4.json", &term(4, "b", "expired"))
        .unwrap();
    let mut s = snapshot();
    s.lease = Some(lease("b", 4, clock::now() + HOUR));
    let srv = start(s.clone(), &store, Some(users())).await;
    let c = http();
    let reader = page(&c, &srv, Some(("bob", "bob-pw"))).await;
    assert!(
        reader.contains("This node is not the HA master"),
        "{reader}"
    );
    assert!(reader.contains("<b id=\"banner-master\">b</b>"), "{reader}");
    assert!(
        reader.contains("href=\"http://b.example:8081/ui\""),
        "{reader}"
    );
    assert!(reader.contains("Current term: epoch <b>4</b>"), "{reader}");
    assert!(
        !reader.contains("<form"),
        "a reader sees no forms: {reader}"
    );
    assert!(!reader.contains("<script>") && !reader.contains("style=\""));
    assert!(!reader.contains("src=\"http") && !reader.contains("href=\"//"));
    let admin = page(&c, &srv, Some(("alice", "alice-pw"))).await;
    assert!(admin.contains("id=\"promote\""), "{admin}");
    assert!(admin.contains("id=\"set-priority\""), "{admin}");
    assert!(!admin.contains("id=\"demote\""));

    srv.set(as_master(s, 5));
    let admin = page(&c, &srv, Some(("alice", "alice-pw"))).await;
    assert!(!admin.contains("id=\"banner\""), "{admin}");
    assert!(admin.contains("id=\"demote\""), "{admin}");
    assert!(admin.contains("<span id=\"state\" class=\"state master\">MASTER</span>"));

    // The page's own requests pass the API's cross-site check; another site's do not.
    let post = |site: &'static str| {
        c.post(srv.url("/v1/server/ha/state"))
            .basic_auth("alice", Some("alice-pw"))
            .header("sec-fetch-site", site)
            .header("origin", srv.base.clone())
            .form(&[("mode", "STANDBY")])
            .send()
    };
    assert_eq!(post("same-origin").await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        post("same-site").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}

/// The page and its assets stay under 100 KB.
#[tokio::test]
async fn the_page_and_its_assets_are_small() {
    let store = MemoryStore::new();
    for e in 1..=60 {
        store
            .create(&format!("epochs/{e}.json"), &term(e, "a", "expired"))
            .unwrap();
    }
    let srv = start(as_master(snapshot(), 60), &store, None).await;
    let c = http();
    let mut total = page(&c, &srv, None).await.len();
    for asset in ["/ui/console.js", "/ui/console.css", "/ui/favicon.svg"] {
        let r = c.get(srv.url(asset)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
        total += r.bytes().await.unwrap().len();
    }
    assert!(total < 100 * 1024, "{total} bytes");
}
