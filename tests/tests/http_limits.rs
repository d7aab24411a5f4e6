//! The HTTP server's limits on a real node, with raw sockets (docs/security-http.md): 413 for
//! a body over 16 KiB, 431 for a head over 16 KiB, a slowloris client cut off at the 10 s
//! header timeout while others are served, the 256-connection cap (more clients wait, then
//! are served), changes only by POST with a form or JSON, 401 with a challenge, 403 for a
//! reader, error bodies without host details; over HTTPS, a silent client is cut off at the
//! handshake timeout. Waits are bounded generously relative to the 10 s timeouts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tenure_tests::expect::settle_timeout;
use tenure_tests::{Cluster, NodeSpec, serial, tenure_bin, wait_for};

/// The node's header timeout (tenure_http::HEADER_TIMEOUT) and its handshake timeout.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The node's connection cap (tenure_http::MAX_CONNECTIONS).
const MAX_CONNECTIONS: usize = 256;

fn connect(port: u16) -> TcpStream {
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_nodelay(true).unwrap();
    tcp
}

/// Sends `request` on a new connection; reads until the server closes it (at most `limit`).
fn exchange_within(port: u16, request: &[u8], limit: Duration) -> String {
    let mut tcp = connect(port);
    tcp.set_read_timeout(Some(limit)).unwrap();
    // The server may answer and close before it has read everything.
    let _ = tcp.write_all(request);
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn exchange(port: u16, request: &[u8]) -> String {
    exchange_within(port, request, Duration::from_secs(10))
}

fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n")
}

fn post(path: &str, headers: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Whether the server closed `tcp` (EOF or reset) within `limit`, ignoring anything it sent.
fn closed_within(tcp: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        tcp.set_read_timeout(Some(left)).unwrap();
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn hash(pw: &str) -> String {
    let mut child = Command::new(tenure_bin())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{pw}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// One node, MASTER, with an admin (`admin:s3cret`) and a reader (`viewer:look`).
fn one_node_with_users() -> (Cluster, u16) {
    let mut c = Cluster::standard();
    let users = serde_json::json!({"users": {
        "admin": {"password": hash("s3cret"), "role": "admin"},
        "viewer": {"password": hash("look"), "role": "reader"},
    }});
    let path = c.root().join("users.json");
    std::fs::write(&path, users.to_string()).unwrap();
    c.start(NodeSpec::new("node-a").args(&["--users", path.to_str().unwrap(), "--public-state"]));
    let tm = c.timing;
    c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    let port = c.node("node-a").port;
    (c, port)
}

const ADMIN: &str = "Authorization: Basic YWRtaW46czNjcmV0\r\n"; // admin:s3cret
const VIEWER: &str = "Authorization: Basic dmlld2VyOmxvb2s=\r\n"; // viewer:look
const FORM: &str = "Content-Type: application/x-www-form-urlencoded\r\n";

#[test]
fn oversized_bodies_and_heads_are_refused() {
    let _serial = serial();
    let (c, port) = one_node_with_users();
    let big = format!("mode=standby&pad={}", "x".repeat(16 * 1024));
    let answer = exchange(
        port,
        post("/v1/server/ha/state", &format!("{ADMIN}{FORM}"), &big).as_bytes(),
    );
    assert_eq!(status(&answer), 413, "{answer:.300}");
    assert!(body(&answer).contains("payload-too-large"), "{answer:.300}");
    let head = get(
        "/v1/server/ha/state",
        &format!("X-Pad: {}\r\n", "a".repeat(17 * 1024)),
    );
    let answer = exchange(port, head.as_bytes());
    assert_eq!(status(&answer), 431, "{answer:.300}");
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = exchange(port, get("/v1/server/ha/state", &many).as_bytes());
    assert_eq!(status(&answer), 431, "{answer:.300}");
    // Nothing changed, and normal requests are still served.
    assert_eq!(c.node("node-a").state(), "MASTER");
}

/// A client that sends its head a byte every 300 ms is disconnected at the header timeout
/// (counted from the first byte, not reset by each one); requests from others are answered
/// all along.
#[test]
fn a_slowloris_client_is_cut_off_while_others_are_served() {
    let _serial = serial();
    let (c, port) = one_node_with_users();
    let mut slow = connect(port);
    let started = Instant::now();
    let mut served = 0;
    let mut cut_off = None;
    let head = format!(
        "GET /v1/server/ha/state HTTP/1.1\r\nHost: x\r\nX-Slow: {}",
        "a".repeat(200)
    );
    for b in head.bytes() {
        if slow.write_all(&[b]).is_err() || closed_within(&mut slow, Duration::from_millis(300)) {
            cut_off = Some(started.elapsed());
            break;
        }
        let answer = exchange(port, get("/v1/server/ha/state", "").as_bytes());
        assert_eq!(
            status(&answer),
            200,
            "a normal request during the slowloris: {answer}"
        );
        served += 1;
        assert!(
            started.elapsed() < 3 * HEADER_TIMEOUT,
            "the slow client was not disconnected"
        );
    }
    let took = cut_off.expect("the head was sent in full: make it longer");
    assert!(
        took >= HEADER_TIMEOUT - Duration::from_millis(500) && took < 2 * HEADER_TIMEOUT,
        "disconnected after {took:?} (header timeout {HEADER_TIMEOUT:?})"
    );
    assert!(served >= 10, "only {served} requests served meanwhile");
    assert_eq!(c.node("node-a").state(), "MASTER");
}

/// All 256 connection slots taken by silent clients: a new client is not refused but waits;
/// it is served as soon as slots free up.
#[test]
fn the_connection_cap_holds_and_service_resumes() {
    let _serial = serial();
    let (c, port) = one_node_with_users();
    let held: Vec<TcpStream> = (0..MAX_CONNECTIONS).map(|_| connect(port)).collect();
    let mut waiting = connect(port);
    waiting
        .write_all(get("/v1/server/ha/state", "").as_bytes())
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 512];
    let early = waiting.read(&mut buf);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "a client beyond the cap was answered (or refused) at once: {early:?}"
    );
    let freed = Instant::now();
    drop(held);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = waiting.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(
        freed.elapsed() < Duration::from_secs(5),
        "{:?}",
        freed.elapsed()
    );
    assert_eq!(c.node("node-a").state(), "MASTER");
}

#[test]
fn changes_need_an_admin_a_post_and_a_form_or_json() {
    let _serial = serial();
    let (c, port) = one_node_with_users();
    // GET with a change parameter only reads.
    for path in [
        "/v1/server/ha/state?mode=standby",
        "/v1/server/ha/priority?priority=9",
        "/ha/states/clear?x=1",
    ] {
        let answer = exchange(port, get(path, ADMIN).as_bytes());
        assert!(matches!(status(&answer), 200 | 405), "{path}: {answer}");
    }
    assert_eq!(c.node("node-a").state(), "MASTER");
    let answer = exchange(port, get("/v1/server/ha/priority", ADMIN).as_bytes());
    assert_eq!(body(&answer), "0", "{answer}");
    // Other content types: 415.
    for ct in [
        "text/plain",
        "multipart/form-data; boundary=b",
        "application/xml",
    ] {
        let answer = exchange(
            port,
            post(
                "/v1/server/ha/priority",
                &format!("{ADMIN}Content-Type: {ct}\r\n"),
                "priority=7",
            )
            .as_bytes(),
        );
        assert_eq!(status(&answer), 415, "{ct}: {answer}");
    }
    // From another site's page: 403.
    let answer = exchange(
        port,
        post(
            "/v1/server/ha/priority",
            &format!("{ADMIN}{FORM}Origin: http://evil.example\r\n"),
            "priority=7",
        )
        .as_bytes(),
    );
    assert_eq!(status(&answer), 403, "{answer}");
    // No or a wrong login: 401 with a challenge; a reader: 403.
    for login in ["", "Authorization: Basic YWRtaW46d3Jvbmc=\r\n"] {
        let answer = exchange(
            port,
            post(
                "/v1/server/ha/priority",
                &format!("{login}{FORM}"),
                "priority=7",
            )
            .as_bytes(),
        );
        assert_eq!(status(&answer), 401, "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("\r\nwww-authenticate: basic realm=\"tenure\"\r\n"),
            "{answer}"
        );
    }
    let answer = exchange(
        port,
        post(
            "/v1/server/ha/priority",
            &format!("{VIEWER}{FORM}"),
            "priority=7",
        )
        .as_bytes(),
    );
    assert_eq!(status(&answer), 403, "{answer}");
    let answer = exchange(port, get("/v1/server/ha/priority", ADMIN).as_bytes());
    assert_eq!(body(&answer), "0", "nothing changed: {answer}");
    // A form and JSON from an admin work.
    let answer = exchange(
        port,
        post(
            "/v1/server/ha/priority",
            &format!("{ADMIN}{FORM}"),
            "priority=7",
        )
        .as_bytes(),
    );
    assert_eq!((status(&answer), body(&answer)), (200, "0"), "{answer}");
    let answer = exchange(
        port,
        post(
            "/v1/server/ha/priority",
            &format!("{ADMIN}Content-Type: application/json\r\n"),
            r#"{"priority": 8}"#,
        )
        .as_bytes(),
    );
    assert_eq!((status(&answer), body(&answer)), (200, "7"), "{answer}");
}

#[test]
fn error_bodies_name_no_files_and_no_panics() {
    let _serial = serial();
    let (c, port) = one_node_with_users();
    let requests = [
        get("/etc/passwd", ""),
        get("/v1/server/ha/../../../etc/passwd", ""),
        get("/v1/server/ha/states", ""),
        get(
            "/v1/server/ha/states",
            "Authorization: Basic Zm9vOmJhcg==\r\n",
        ),
        get("/v1/server/ha/states", "Authorization: Basic %%%\r\n"),
        format!(
            "DELETE /v1/server/ha/state HTTP/1.1\r\nHost: x\r\n{ADMIN}Connection: close\r\n\r\n"
        ),
        post(
            "/v1/server/ha/state",
            &format!("{ADMIN}{FORM}"),
            "mode=%ff%fe",
        ),
        post("/v1/server/ha/state", &format!("{ADMIN}{FORM}"), ""),
        post(
            "/v1/server/ha/priority",
            &format!("{ADMIN}{FORM}"),
            "priority=1e999",
        ),
        post(
            "/v1/server/ha/states/clear/node",
            &format!("{ADMIN}{FORM}"),
            "nodeId=..%2F..%2Fx",
        ),
        post(
            "/v1/server/ha/states/clear/node",
            &format!("{ADMIN}{FORM}"),
            "nodeId=node-a",
        ),
        post(
            "/v1/server/ha/state",
            &format!("{ADMIN}Content-Type: application/json\r\n"),
            "{\"mode\": {}}",
        ),
        "NONSENSE\r\n\r\n".to_string(),
        "GET /v1/server/ha/state HTTP/7.0\r\n\r\n".to_string(),
        format!(
            "POST /v1/server/ha/state HTTP/1.1\r\nHost: x\r\n{ADMIN}{FORM}Content-Length: zz\r\n\r\n"
        ),
    ];
    for req in &requests {
        let answer = exchange(port, req.as_bytes());
        let code = status(&answer);
        assert!((400..500).contains(&code), "{req:?} → {answer}");
        let b = body(&answer);
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
            c.root().to_str().unwrap(),
        ] {
            assert!(!b.contains(bad), "{req:?} → the body names {bad:?}: {b}");
        }
        if !b.is_empty() {
            let v: serde_json::Value =
                serde_json::from_str(b).unwrap_or_else(|e| panic!("{req:?} → {b}: {e}"));
            assert!(v["error"].is_u64() && v["message"].is_string(), "{b}");
        }
    }
    assert_eq!(c.node("node-a").state(), "MASTER");
}

/// Over HTTPS, a client that connects and never completes a handshake is disconnected at the
/// handshake timeout; `tenure state` over https works meanwhile.
#[test]
fn a_silent_tls_client_is_cut_off() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let store = dir.path().join("store");
    tenure_tests::init_store(store.to_str().unwrap(), "2s", &[], &[]);
    let port = tenure_tests::cluster::free_port();
    let url = format!("https://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
    let mut node = Command::new(tenure_bin())
        .args(["run", "--node-name", "node-a", "--store"])
        .arg(&store)
        .args(["--bind", &format!("127.0.0.1:{port}"), "--node-uri", &url])
        .args(["--heartbeat-timeout", "2s", "--poll-period", "200ms"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let state = || {
        let out = Command::new(tenure_bin())
            .args(["state", "--url", &url, "--tls-ca", cert.to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    wait_for(Duration::from_secs(15), "node-a MASTER over https", || {
        (state() == "MASTER").then_some(())
    });
    let mut silent = connect(port);
    let mut half = connect(port);
    // The first bytes of a TLS record header, then nothing.
    half.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let t = Instant::now();
    // HTTPS still serves others meanwhile. (MASTER or STANDBY: a lone master self-fences, as it
    // must, if a storage stall of this VM's disk outlasts its renew deadline.)
    let serves = |s: String| matches!(s.as_str(), "MASTER" | "STANDBY");
    assert!(serves(state()), "tenure state over https got no answer");
    assert!(
        closed_within(&mut silent, 2 * HEADER_TIMEOUT),
        "the silent client is still connected"
    );
    assert!(closed_within(&mut half, Duration::from_secs(2)));
    let took = t.elapsed();
    assert!(
        took >= HEADER_TIMEOUT - Duration::from_secs(1) && took < 2 * HEADER_TIMEOUT,
        "{took:?}"
    );
    assert!(serves(state()), "tenure state over https got no answer");
    let _ = node.kill();
    let _ = node.wait();
}
