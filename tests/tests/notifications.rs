//! Notifications end to end (`--notify-email`, `--notify-webhook`; README "Notifications"): a
//! real SMTP server (aiosmtpd, `scripts/smtp.sh`, which writes every message it receives to a
//! directory) and a webhook receiver in this test (a std TcpListener thread answering 200).
//! T = 2 s, p = 200 ms.
//!
//! - The master's promotion sends an e-mail and a webhook POST naming it and its epoch; after a
//!   kill -9 of the master, the new master's "became MASTER" arrives the same two ways, and its
//!   `/metrics` counts the deliveries.
//! - A SIGTERM of that master: "stopped being MASTER … released the lease" leaves before the
//!   process exits.
//! - A forged record and a second process under a live name are notified (webhook).
//! - Storage failing (EIO through the fault filesystem) for longer than D, and working again.
//! - A webhook URL that refuses connections changes nothing for the election: the node becomes
//!   master, and the failure is logged and counted in `/metrics`.
//!
//! Each test mails a recipient of its own, so messages of other runs in the shared mail
//! directory are never counted. Run with `--test-threads=1` (each test holds `serial()`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tenure_tests::cluster::free_port;
use tenure_tests::expect::{settle_timeout, wait_log_contains};
use tenure_tests::{Cluster, NodeSpec, serial, wait_until, workspace_root};

const THREE: [&str; 3] = ["node-a", "node-b", "node-c"];

fn smtp_script(cmd: &str) -> String {
    let script = workspace_root().join("scripts/smtp.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(cmd)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} {cmd} failed ({}): the notification tests need aiosmtpd (scripts/install-test-deps.sh installs it)",
        script.display(),
        out.status
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Stops the SMTP server on drop if this test started it (one already running is left alone),
/// so a test run leaves no process behind.
struct SmtpServer {
    owned: bool,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new("bash")
                .arg(workspace_root().join("scripts/smtp.sh"))
                .arg("stop")
                .status();
        }
    }
}

/// The running SMTP server's endpoint (started if needed), its mail directory and the guard.
fn smtp() -> (String, PathBuf, SmtpServer) {
    let running = Command::new("bash")
        .arg(workspace_root().join("scripts/smtp.sh"))
        .arg("endpoint")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let endpoint = smtp_script("start");
    let guard = SmtpServer { owned: !running };
    assert!(
        endpoint.starts_with("smtp://127.0.0.1:"),
        "unexpected endpoint {endpoint:?}"
    );
    (endpoint, PathBuf::from(smtp_script("maildir")), guard)
}

/// A recipient no other run uses.
fn recipient(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{nanos}@example.test", std::process::id())
}

/// The messages in `dir` sent to `to`.
fn mails_to(dir: &PathBuf, to: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, String)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        // Undo quoted-printable's soft line breaks (long lines are wrapped at 76 characters).
        .filter_map(|p| {
            let t = std::fs::read_to_string(&p).ok()?;
            Some((p, t.replace("=\r\n", "").replace("=\n", "")))
        })
        .filter(|(_, t)| {
            t.lines()
                .find_map(|l| l.strip_prefix("X-Envelope-To: "))
                .is_some_and(|r| r.split(", ").any(|r| r == to))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, t)| t).collect()
}

fn subject(mail: &str) -> &str {
    mail.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
}

/// A webhook receiver: every POST body (JSON) it got, answered 200.
struct Hook {
    url: String,
    got: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Hook {
    fn start() -> Hook {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook/secret-token", l.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut r = BufReader::new(conn.try_clone().expect("clone"));
                let mut len = 0usize;
                let mut line = String::new();
                let mut first = true;
                let mut post = false;
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if first {
                        post = line.starts_with("POST /hook/secret-token ");
                        first = false;
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_ok()
                    && post
                    && let Ok(v) = serde_json::from_slice(&body)
                {
                    sink.lock().unwrap().push(v);
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        Hook { url, got }
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.got.lock().unwrap().clone()
    }
}

/// The value of the sample line `name` (labels included) in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Both channels carried `master`'s "became MASTER" at `epoch`.
fn wait_became_master(
    mail_dir: &PathBuf,
    to: &str,
    hook: &Hook,
    master: &str,
    epoch: u64,
    timeout: Duration,
) {
    let want = format!("[tenure] {master} became MASTER (epoch {epoch})");
    let mailed = wait_until(timeout, || {
        mails_to(mail_dir, to).iter().any(|m| subject(m) == want)
    });
    let mails = mails_to(mail_dir, to);
    assert!(
        mailed,
        "no e-mail {want:?} to {to} within {timeout:?}; got subjects {:?}",
        mails.iter().map(|m| subject(m)).collect::<Vec<_>>()
    );
    let mail = mails.iter().find(|m| subject(m) == want).unwrap();
    assert!(
        mail.contains(&format!(
            "{master} became MASTER at epoch {epoch}: took over"
        )) || mail.contains(&format!(
            "{master} became MASTER at epoch {epoch}: the first master"
        )),
        "{mail}"
    );
    let posted = wait_until(timeout, || {
        hook.bodies()
            .iter()
            .any(|b| b["event"] == "became_master" && b["node"] == master && b["epoch"] == epoch)
    });
    assert!(
        posted,
        "no webhook POST of {master} becoming master at epoch {epoch}; got {:?}",
        hook.bodies()
    );
    let b = hook
        .bodies()
        .into_iter()
        .find(|b| b["event"] == "became_master" && b["node"] == master)
        .unwrap();
    let text = b["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with(&format!("tenure: {master} became MASTER at epoch {epoch}")),
        "{b}"
    );
    assert!(b["cluster"].as_str().is_some_and(|c| !c.is_empty()), "{b}");
    assert!(b["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{b}");
}

#[test]
fn promotion_and_failover_are_notified_by_email_and_webhook() {
    let _serial = serial();
    let (endpoint, mail_dir, _smtp) = smtp();
    let hook = Hook::start();
    let to = recipient("failover");
    let mut c = Cluster::standard();
    let tm = c.timing;
    // Well within the send timeout, on a loaded machine too.
    let delivery = Duration::from_secs(10) + tm.margin;
    for n in THREE {
        c.start(NodeSpec::new(n).args(&[
            "--notify-email",
            &to,
            "--smtp-url",
            &endpoint,
            "--notify-from",
            "tenure-test@example.test",
            "--notify-webhook",
            &hook.url,
            "--notify-timeout",
            "5s",
        ]));
    }
    let (first, epoch) = c.wait_stable_master(&THREE, settle_timeout(&tm));
    wait_became_master(&mail_dir, &to, &hook, &first, epoch, delivery);
    // Only the master became master: nobody else mailed so.
    for m in mails_to(&mail_dir, &to) {
        assert!(
            !subject(&m).contains("became MASTER") || subject(&m).contains(&first),
            "{m}"
        );
    }
    let mail = mails_to(&mail_dir, &to).into_iter().next().unwrap();
    assert!(mail.contains("From: tenure-test@example.test"), "{mail}");
    assert!(
        mail.contains(&format!("reason:  promoted to MASTER at epoch {epoch}")),
        "{mail}"
    );

    c.node_mut(&first).kill9();
    let rest: Vec<&str> = THREE.iter().copied().filter(|n| *n != first).collect();
    let (second, epoch2) = c.wait_stable_master(&rest, settle_timeout(&tm));
    assert!(epoch2 > epoch, "epoch {epoch2} after {epoch}");
    wait_became_master(&mail_dir, &to, &hook, &second, epoch2, delivery);

    let scrape = || c.node(&second).get("/metrics").map(|(_, b)| b);
    let text = scrape().expect("/metrics answers");
    for ch in ["email", "webhook"] {
        let sent = metric(
            &text,
            &format!("tenure_notifications_sent_total{{channel=\"{ch}\"}}"),
        );
        assert!(sent.is_some_and(|v| v >= 1.0), "{ch}: {sent:?} in\n{text}");
        let failed = metric(
            &text,
            &format!("tenure_notifications_failed_total{{channel=\"{ch}\"}}"),
        );
        assert_eq!(failed, Some(0.0), "{ch} in\n{text}");
    }

    // A graceful stop: the release is notified before the process exits.
    c.node(&second).sigterm();
    let want =
        format!("[tenure] {second} stopped being MASTER (epoch {epoch2}): released the lease");
    let mailed = wait_until(delivery, || {
        mails_to(&mail_dir, &to).iter().any(|m| subject(m) == want)
    });
    assert!(
        mailed,
        "no e-mail {want:?}; got subjects {:?}",
        mails_to(&mail_dir, &to)
            .iter()
            .map(|m| subject(m).to_string())
            .collect::<Vec<_>>()
    );
    assert!(
        wait_until(delivery, || hook
            .bodies()
            .iter()
            .any(|b| b["event"] == "stopped_master"
                && b["node"] == second.as_str()
                && b["epoch"] == epoch2)),
        "no webhook POST of {second} stopping; got {:?}",
        hook.bodies()
    );
    c.assert_safe();
}

#[test]
fn a_refusing_webhook_is_counted_and_the_node_still_elects() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    // Nothing listens there: every POST is refused.
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    c.start(NodeSpec::new("node-a").args(&["--notify-webhook", &url, "--notify-timeout", "2s"]));
    c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    let failed = "tenure_notifications_failed_total{channel=\"webhook\"}";
    let mut last = String::new();
    let counted = wait_until(Duration::from_secs(5) + tm.margin, || {
        last = c
            .node("node-a")
            .get("/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        metric(&last, failed).is_some_and(|v| v >= 1.0)
    });
    assert!(counted, "no {failed} >= 1 in\n{last}");
    assert_eq!(
        metric(
            &last,
            "tenure_notifications_sent_total{channel=\"webhook\"}"
        ),
        Some(0.0),
        "{last}"
    );
    // The WARN names the server, never the URL's path (an incoming webhook's secret).
    let server = url.trim_end_matches("/hook");
    wait_log_contains(
        &c,
        "node-a",
        &format!("notification by webhook to {server} failed"),
        Duration::from_secs(5),
    );
    // Still the master, answering.
    assert!(
        metric(&last, "tenure_is_master").is_some_and(|v| v == 1.0),
        "{last}"
    );
    c.assert_safe();
}

/// With expected members, a node that never comes (here node-c) is a `node_missing`
/// notification from each running node once it has been missing for D, naming it; node-b,
/// which runs, is never named.
#[test]
fn an_expected_node_that_never_comes_is_notified() {
    let _serial = serial();
    let hook = Hook::start();
    let mut c = Cluster::standard();
    let tm = c.timing;
    for n in ["node-a", "node-b"] {
        c.start(NodeSpec::new(n).args(&[
            "--expect-nodes",
            "node-a,node-b,node-c",
            "--notify-webhook",
            &hook.url,
        ]));
    }
    c.wait_stable_master(&["node-a", "node-b"], settle_timeout(&tm));
    let missing = |b: &serde_json::Value| b["event"] == "node_missing";
    let told = wait_until(tm.t + Duration::from_secs(10), || {
        let got = hook.bodies();
        ["node-a", "node-b"]
            .iter()
            .all(|n| got.iter().any(|b| missing(b) && b["node"] == *n))
    });
    let got = hook.bodies();
    assert!(told, "not every node told of node-c missing: {got:?}");
    for b in got.iter().filter(|b| missing(b)) {
        let text = b["text"].as_str().unwrap_or_default();
        assert!(
            text.contains("expected node(s) node-c missing")
                && text.ends_with("missing now: node-c"),
            "{text}"
        );
    }
    c.assert_safe();
}

/// OpenSpecimen's cluster file names the recipients (`notifErrorRcpts`) and the timeout
/// (`notifTimeout`): with `--smtp-url` and no `--notify-email`, the promotion is mailed to them.
#[test]
fn a_cluster_files_recipients_are_mailed() {
    let _serial = serial();
    let (endpoint, maildir, _smtp) = smtp();
    let to = recipient("cluster-file");
    let mut c = Cluster::standard();
    let tm = c.timing;
    let file = c.root().join("cluster.json");
    std::fs::write(
        &file,
        serde_json::json!({
            "nodes": [{"name": "node-a", "url": "http://127.0.0.1:8080/openspecimen"}],
            "notifErrorRcpts": [to],
            "notifTimeout": 5,
        })
        .to_string(),
    )
    .unwrap();
    c.start(NodeSpec::new("node-a").args(&[
        "--cluster-file",
        file.to_str().unwrap(),
        "--smtp-url",
        &endpoint,
    ]));
    let (_, epoch) = c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    let mut got = Vec::new();
    let mailed = wait_until(Duration::from_secs(10) + tm.margin, || {
        got = mails_to(&maildir, &to);
        got.iter()
            .any(|m| subject(m).contains("node-a") && m.contains(&format!("epoch {epoch}")))
    });
    assert!(
        mailed,
        "no promotion mail to {to}: {got:?}\n{}",
        c.node("node-a").log_tail(20)
    );
    c.assert_safe();
}

/// A forged heartbeat in a signed cluster is a `bad_records` notification naming it; a second
/// process started under a live node's name exits, and says so (`duplicate_name`) first.
#[test]
fn forged_records_and_a_duplicate_name_are_notified() {
    use std::os::unix::fs::PermissionsExt;
    use tenure_election::records;
    use tenure_persistence::{DirOptions, DirStore};
    use tenure_store::{ReadResult, Store};
    let _serial = serial();
    let hook = Hook::start();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let secret = c.root().join("secret");
    std::fs::write(&secret, "cluster-secret-for-the-notification-tests\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let secret = secret.to_str().unwrap().to_string();
    c.init(&["--secret-file", &secret]);
    let spec = |label: &str| {
        NodeSpec::new("node-a").label(label).args(&[
            "--secret-file",
            &secret,
            "--notify-webhook",
            &hook.url,
        ])
    };
    c.start(spec("node-a"));
    c.wait_stable_master(&["node-a"], settle_timeout(&tm));

    // Someone who can write the store but lacks the secret: an unsigned heartbeat.
    let store = DirStore::open(
        c.store(),
        DirOptions {
            check_mount: false,
            ..DirOptions::default()
        },
    )
    .unwrap();
    let hb = serde_json::json!({
        "format": 1, "clusterId": "x", "name": "evil", "instanceId": "forged", "seq": 1,
        "status": "STANDBY", "mode": "AUTO", "priority": 0, "uri": "http://127.0.0.1:9",
        "localTimestampMs": 0,
    });
    assert!(matches!(
        store.read("nodes/evil.json").unwrap(),
        ReadResult::Absent
    ));
    store
        .create("nodes/evil.json", &records::encode(&hb))
        .unwrap();
    let forged = |b: &serde_json::Value| {
        b["event"] == "bad_records"
            && b["node"] == "node-a"
            && b["text"]
                .as_str()
                .is_some_and(|t| t.contains("nodes/evil.json"))
    };
    assert!(
        wait_until(tm.t + Duration::from_secs(5), || hook
            .bodies()
            .iter()
            .any(forged)),
        "no bad_records POST naming nodes/evil.json; got {:?}",
        hook.bodies()
    );

    c.start(spec("node-a-duplicate"));
    let code = tenure_tests::expect::expect_exit(
        &mut c,
        "node-a-duplicate",
        tenure_tests::expect::refusal_timeout(&tm),
    );
    assert_eq!(code, 1, "a duplicate node name: exit code");
    // Sent before the process exited (the shutdown waits for its last notifications).
    let dup = hook
        .bodies()
        .into_iter()
        .find(|b| b["event"] == "duplicate_name");
    let dup = dup.unwrap_or_else(|| panic!("no duplicate_name POST; got {:?}", hook.bodies()));
    assert_eq!(dup["node"], "node-a", "{dup}");
    assert!(
        dup["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("tenure: node-a exited: duplicate node name")),
        "{dup}"
    );
    // The genuine node-a is still master, and only it ever said it became master.
    let masters: Vec<_> = hook
        .bodies()
        .into_iter()
        .filter(|b| b["event"] == "became_master")
        .collect();
    assert_eq!(masters.len(), 1, "{masters:?}");
    c.assert_safe();
}

/// The store failing (every call EIO, through the fault filesystem of the chaos campaign) for
/// longer than D is a `storage_failing` notification, and a master that self-fences says so
/// (`stopped_master`, self-fenced); storage working again is `storage_recovered`. Needs
/// /dev/fuse and root, as tests/tests/faultfs.rs.
#[test]
fn storage_failing_longer_than_d_is_notified_and_so_is_its_end() {
    use tenure_tests::faultfs::{Fault, FaultFs};
    let _serial = serial();
    let hook = Hook::start();
    let tmp = tempfile::Builder::new()
        .prefix("tenure-notify-fuse-")
        .tempdir()
        .unwrap();
    let (backing, mnt) = (tmp.path().join("backing"), tmp.path().join("mnt"));
    for d in [&backing, &mnt] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::set_permissions(
        &backing,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
    )
    .unwrap();
    let fs = FaultFs::mount(&backing, &mnt)
        .expect("mount the fault filesystem (needs /dev/fuse and root)");
    // Dropped before the mount (declared after it), so no node still uses the store.
    let mut c = Cluster::with_store_url(
        tenure_tests::Timing::standard(),
        mnt.to_str().unwrap(),
        Vec::new(),
    );
    let tm = c.timing;
    c.start(NodeSpec::new("node-a").args(&["--notify-webhook", &hook.url]));
    c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    let has = |event: &str, text: &str| {
        hook.bodies().iter().any(|b| {
            b["event"] == event
                && b["node"] == "node-a"
                && b["text"].as_str().is_some_and(|t| t.contains(text))
        })
    };
    assert!(!has("storage_failing", ""), "{:?}", hook.bodies());

    fs.ctl.set(Fault::Error(libc::EIO));
    // D = 2T/3 after the first failed call, and a storage deadline for that call to fail.
    let within = tm.t + 2 * tm.p + tm.margin + Duration::from_secs(3);
    assert!(
        wait_until(within, || has(
            "storage_failing",
            "longer than the renew deadline D="
        )),
        "no storage_failing POST; got {:?}",
        hook.bodies()
    );
    assert!(
        wait_until(within, || has("stopped_master", "self-fenced")),
        "no self-fenced stopped_master POST; got {:?}",
        hook.bodies()
    );

    fs.ctl.set(Fault::None);
    assert!(
        wait_until(within, || has("storage_recovered", "storage works again")),
        "no storage_recovered POST; got {:?}",
        hook.bodies()
    );
    // One notification per outage, not one per failed call.
    let failing = hook
        .bodies()
        .iter()
        .filter(|b| b["event"] == "storage_failing")
        .count();
    assert_eq!(failing, 1, "{:?}", hook.bodies());
    c.assert_safe();
    drop(c);
    drop(fs);
}
