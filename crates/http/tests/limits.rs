//! The server's limits over raw sockets (docs/security-http.md): header size and count,
//! header and body timeouts (slowloris), the connection cap, content types of changes,
//! cross-site changes, and error bodies that reveal nothing about the host.
//!
//! Limits are shortened here (1 s timeouts); every wait is bounded generously relative to them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tenure_election::{Command, Mode, NodeState, Snapshot};
use tenure_http::{ApiState, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

const SEC: Duration = Duration::from_secs(1);

struct Server {
    addr: String,
    seen: Arc<Mutex<Vec<String>>>,
    _snap: watch::Sender<Arc<Snapshot>>,
    _stop: oneshot::Sender<()>,
}

impl Server {
    fn commands(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn short_limits() -> Limits {
    Limits {
        header_timeout: SEC,
        body_timeout: SEC,
        write_timeout: SEC,
        handshake_timeout: SEC,
        ..Limits::default()
    }
}

/// A server without `--users` whose changes are refused, or with an open change gate when
/// `users` is given.
async fn start(limits: Limits, users: Option<tenure_http::Users>) -> Server {
    let mut s = Snapshot::initializing("a", "inst-a", "http://127.0.0.1:1", Mode::Auto);
    s.base_state = NodeState::Standby;
    let (snap_tx, snap_rx) = watch::channel(Arc::new(s));
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(8);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some(cmd) = cmd_rx.recv().await {
            let line = match cmd {
                Command::SetMode { mode, reply } => {
                    let _ = reply.send(Ok(NodeState::Standby));
                    format!("mode {mode}")
                }
                Command::SetPriority { priority, reply } => {
                    let _ = reply.send(Ok(0));
                    format!("priority {priority}")
                }
                Command::ClearStates { reply } => {
                    let _ = reply.send(Ok(vec![]));
                    "clear".into()
                }
                Command::ClearNode { name, reply } => {
                    let _ = reply.send(Ok(()));
                    format!("clear {name}")
                }
                _ => "other".into(),
            };
            log.lock().unwrap().push(line);
        }
    });
    let state = ApiState::new(snap_rx, cmd_tx, users, false)
        .with_command_timeout(SEC)
        .with_limits(limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    tokio::spawn(tenure_http::serve(listener, state, async move {
        let _ = stop_rx.await;
    }));
    Server {
        addr,
        seen,
        _snap: snap_tx,
        _stop: stop_tx,
    }
}

/// Sends `request` on a new connection and reads until the server closes it (at most 10 s).
async fn exchange(addr: &str, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = tcp.write_all(request).await;
    read_all(&mut tcp, 10 * SEC).await
}

async fn read_all(tcp: &mut TcpStream, limit: Duration) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, tcp.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Reads one response head (and whatever body arrived with it).
async fn read_response(tcp: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&got).into_owned())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

/// The connection was closed by the server: EOF (or a reset) when reading.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let srv = start(short_limits(), None).await;
    // One big header (more than 16 KiB).
    let big = format!(
        "GET /ha/state HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    let answer = exchange(&srv.addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    // Many small ones (more than 64).
    let mut many = String::from("GET /ha/state HTTP/1.1\r\nHost: x\r\n");
    for i in 0..80 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("Connection: close\r\n\r\n");
    let answer = exchange(&srv.addr, many.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    // Just under the limits is fine.
    let ok = format!(
        "GET /ha/state HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(8 * 1024)
    );
    let answer = exchange(&srv.addr, ok.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
}

#[tokio::test]
async fn oversized_bodies_get_413_before_and_while_reading() {
    let srv = start(short_limits(), None).await;
    let body = "x".repeat(16 * 1024 + 1);
    // Announced by Content-Length: refused without reading it.
    let req = format!(
        "POST /ha/state HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(&srv.addr, req.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.300}");
    assert!(answer.contains("larger than 16 KiB"), "{answer:.300}");
    // Chunked: caught while reading.
    let req = format!(
        "POST /ha/nudge HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let answer = exchange(&srv.addr, req.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.300}");
    assert!(srv.commands().is_empty());
}

/// A client sending its head a byte at a time is cut off at the header timeout, counted from
/// the start of the request (not reset by each byte); others are served meanwhile.
#[tokio::test]
async fn slowloris_heads_are_cut_off_and_others_served_meanwhile() {
    let srv = start(short_limits(), None).await;
    let mut slow = TcpStream::connect(&srv.addr).await.unwrap();
    let started = Instant::now();
    let head =
        b"GET /ha/state HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut_off = None;
    for &b in head.iter() {
        if slow.write_all(&[b]).await.is_err() {
            cut_off = Some(started.elapsed());
            break;
        }
        // A normal request is answered while the slow one dribbles.
        let answer = exchange(&srv.addr, get("/ha/state").as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
        let mut probe = [0u8; 64];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), slow.read(&mut probe)).await
        {
            assert!(matches!(r, Ok(0) | Err(_)), "the slow client got an answer");
            cut_off = Some(started.elapsed());
            break;
        }
        if started.elapsed() > 8 * SEC {
            break;
        }
    }
    let took = cut_off.expect("the slow client was never disconnected");
    assert!(
        took >= Duration::from_millis(900) && took < 5 * SEC,
        "disconnected after {took:?} (header timeout 1 s)"
    );
}

#[tokio::test]
async fn idle_and_silent_connections_are_closed_at_the_header_timeout() {
    let srv = start(short_limits(), None).await;
    // Connected, never sends a byte.
    let mut silent = TcpStream::connect(&srv.addr).await.unwrap();
    // Keep-alive: one request answered, then idle.
    let mut idle = TcpStream::connect(&srv.addr).await.unwrap();
    idle.write_all(b"GET /ha/state HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut idle, 5 * SEC).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let t = Instant::now();
    assert!(closed_within(&mut silent, 5 * SEC).await);
    assert!(closed_within(&mut idle, 5 * SEC).await);
    assert!(t.elapsed() < 5 * SEC);
}

#[tokio::test]
async fn a_slow_body_gets_408() {
    let srv = start(short_limits(), None).await;
    let mut tcp = TcpStream::connect(&srv.addr).await.unwrap();
    tcp.write_all(
        b"POST /ha/state HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 20\r\n\r\nmode=",
    )
    .await
    .unwrap();
    let t = Instant::now();
    let answer = read_response(&mut tcp, 5 * SEC).await.expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request-timeout"), "{answer}");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert!(srv.commands().is_empty());
}

/// With all connection slots taken, a new client waits (it is not refused) and is served as
/// soon as one closes.
#[tokio::test]
async fn the_connection_cap_queues_then_serves() {
    let limits = Limits {
        max_connections: 4,
        header_timeout: 30 * SEC,
        ..short_limits()
    };
    let srv = start(limits, None).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut tcp = TcpStream::connect(&srv.addr).await.unwrap();
        // A served request proves the connection holds a slot.
        tcp.write_all(b"GET /ha/state HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut tcp, 5 * SEC).await.is_some());
        held.push(tcp);
    }
    let mut fifth = TcpStream::connect(&srv.addr).await.unwrap();
    fifth.write_all(get("/ha/state").as_bytes()).await.unwrap();
    assert!(
        read_response(&mut fifth, Duration::from_millis(700))
            .await
            .is_none(),
        "a fifth connection was served while four held every slot"
    );
    drop(held.pop());
    let answer = read_all(&mut fifth, 5 * SEC).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
}

fn cheap_users() -> tenure_http::Users {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(256, 1, 1, None).unwrap();
    let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
    let hash = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(b"pw", &salt)
        .unwrap()
        .to_string();
    let text = serde_json::json!({"users": {
        "admin": {"password": hash, "role": "admin"},
        "viewer": {"password": hash, "role": "reader"},
    }})
    .to_string();
    tenure_http::Users::parse(&text).unwrap()
}

const ADMIN: &str = "Authorization: Basic YWRtaW46cHc="; // admin:pw
const VIEWER: &str = "Authorization: Basic dmlld2VyOnB3"; // viewer:pw

fn post(path: &str, headers: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn changes_need_post_a_form_or_json_and_the_same_site() {
    let srv = start(short_limits(), Some(cheap_users())).await;
    let a = &srv.addr;
    // GET with a change parameter only reads.
    for path in ["/ha/state?mode=master", "/v1/server/ha/priority?priority=9"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{ADMIN}\r\nConnection: close\r\n\r\n");
        assert_eq!(status(&exchange(a, req.as_bytes()).await), 200, "{path}");
    }
    assert!(srv.commands().is_empty());
    // Other content types: 415, nothing done.
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    for ct in [
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/xml",
    ] {
        let h = format!("{ADMIN}\r\nContent-Type: {ct}\r\n");
        let answer = exchange(a, post("/ha/state", &h, "mode=master").as_bytes()).await;
        assert_eq!(status(&answer), 415, "{ct}: {answer}");
        assert!(answer.contains("unsupported-media-type"), "{answer}");
    }
    let answer = exchange(
        a,
        post("/ha/state", &format!("{ADMIN}\r\n"), "mode=master").as_bytes(),
    )
    .await;
    assert_eq!(
        status(&answer),
        415,
        "a body without a content type: {answer}"
    );
    assert!(srv.commands().is_empty());
    // A browser on another site: 403 (before any password check).
    for site in [
        "Origin: http://evil.example\r\n",
        "Sec-Fetch-Site: cross-site\r\n",
        "Sec-Fetch-Site: same-site\r\nOrigin: http://x\r\n",
        "Origin: null\r\n",
    ] {
        let h = format!("{ADMIN}\r\n{form}{site}");
        let answer = exchange(a, post("/ha/priority", &h, "priority=1").as_bytes()).await;
        assert_eq!(status(&answer), 403, "{site}: {answer}");
        assert!(answer.contains("cross-site"), "{answer}");
    }
    assert!(srv.commands().is_empty());
    // The same origin, a form, JSON, and the query string are accepted.
    let h = format!("{ADMIN}\r\n{form}Origin: http://x\r\nSec-Fetch-Site: same-origin\r\n");
    assert_eq!(
        status(&exchange(a, post("/ha/priority", &h, "priority=1").as_bytes()).await),
        200
    );
    let h = format!("{ADMIN}\r\n{form}Origin: http://x\r\n");
    assert_eq!(
        status(&exchange(a, post("/ha/priority", &h, "priority=2").as_bytes()).await),
        200
    );
    let h = format!("{ADMIN}\r\nContent-Type: application/json; charset=utf-8\r\n");
    let answer = exchange(
        a,
        post("/ha/state", &h, r#"{"mode": "hot-standby"}"#).as_bytes(),
    )
    .await;
    assert_eq!(status(&answer), 200, "{answer}");
    let answer = exchange(
        a,
        post("/ha/state?mode=standby", &format!("{ADMIN}\r\n"), "").as_bytes(),
    )
    .await;
    assert_eq!(status(&answer), 200, "{answer}");
    assert_eq!(
        srv.commands(),
        [
            "priority 1",
            "priority 2",
            "mode hot-standby",
            "mode standby"
        ]
    );
    // 401 with a challenge without (or with a wrong) login; 403 for a reader.
    for login in ["", "Authorization: Basic YWRtaW46bm9wZQ==\r\n"] {
        let answer = exchange(
            a,
            post("/ha/state", &format!("{login}{form}"), "mode=master").as_bytes(),
        )
        .await;
        assert_eq!(status(&answer), 401, "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("www-authenticate: basic realm=\"tenure\""),
            "{answer}"
        );
    }
    let answer = exchange(
        a,
        post("/ha/state", &format!("{VIEWER}\r\n{form}"), "mode=master").as_bytes(),
    )
    .await;
    assert_eq!(status(&answer), 403, "{answer}");
    assert_eq!(srv.commands().len(), 4);
}

/// Every error answer is a short JSON message: no file paths, no source locations, no panic
/// text, whatever the request.
#[tokio::test]
async fn error_bodies_reveal_nothing_about_the_host() {
    let srv = start(short_limits(), Some(cheap_users())).await;
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    let requests = [
        get("/etc/passwd"),
        get("/ha/../../etc/passwd"),
        get("/ha/state/%2e%2e/%2e%2e"),
        format!("DELETE /ha/state HTTP/1.1\r\nHost: x\r\n{ADMIN}\r\nConnection: close\r\n\r\n"),
        post("/ha/state", &format!("{ADMIN}\r\n{form}"), "mode=%ff%fe"),
        post(
            "/ha/priority",
            &format!("{ADMIN}\r\n{form}"),
            "priority=99999999999999999999999",
        ),
        post(
            "/ha/states/clear/node",
            &format!("{ADMIN}\r\n{form}"),
            "nodeId=../../x",
        ),
        post(
            "/ha/state",
            &format!("{ADMIN}\r\nContent-Type: application/json\r\n"),
            "{\"mode\": [1]}",
        ),
        post(
            "/ha/state",
            &format!("{ADMIN}\r\nContent-Type: application/json\r\n"),
            "{\"mode\"",
        ),
        post("/ha/state", "Authorization: Basic !!!\r\n", ""),
        "GARBAGE\r\n\r\n".to_string(),
        "GET / HTTP/9.9\r\n\r\n".to_string(),
        format!("GET /ha/state HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n{ADMIN}\r\n\r\n"),
    ];
    for req in &requests {
        let answer = exchange(&srv.addr, req.as_bytes()).await;
        let code = status(&answer);
        assert!((400..500).contains(&code), "{req:?} → {answer}");
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        for bad in [
            "panicked",
            ".rs:",
            "src/",
            "/home",
            "/root",
            "/tmp",
            "/work",
            "/etc",
            "/usr",
            "RUST_BACKTRACE",
        ] {
            assert!(
                !body.contains(bad),
                "{req:?} → body contains {bad:?}: {body}"
            );
        }
        if !body.is_empty() {
            let v: serde_json::Value =
                serde_json::from_str(body).unwrap_or_else(|e| panic!("{req:?} → {body}: {e}"));
            assert!(v["error"].is_u64() && v["message"].is_string(), "{body}");
        }
    }
    assert!(srv.commands().is_empty());
}
