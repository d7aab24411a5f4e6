//! The web console in a real browser: Debian's headless Chromium driven over WebDriver
//! (Debian's chromedriver, spoken to with the harness's HTTP client; chromedriver's log and
//! DevTools extensions for the console errors, the requests made and the login header).
//!
//! - a standby's page loads with no console error and no request leaving the node, shows the
//!   master and the banner naming it; a screenshot is saved (target/console/, and
//!   docs/console.png with TENURE_UPDATE_SCREENSHOT=1);
//! - after kill -9 of the master, the page on a surviving node shows the new master within
//!   T + 2p (plus the margin) without a reload;
//! - with `--users`, a reader sees no buttons; an admin demotes the master through its page.
//!
//! T = 2 s, p = 200 ms. Every wait is bounded; chromedriver and its browser are killed by a
//! drop guard (their process group, then any process left using the session's profile).

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tenure_tests::cluster::free_port;
use tenure_tests::expect::settle_timeout;
use tenure_tests::{
    ADMIN_AND_READER, Cluster, NodeSpec, serial, users_file, wait_for, wait_until, workspace_root,
};

const THREE: [&str; 3] = ["node-a", "node-b", "node-c"];
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver with one headless Chromium session; everything killed on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    profile: PathBuf,
    agent: ureq::Agent,
}

impl Browser {
    fn start(dir: &Path) -> Browser {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: run scripts/install-test-deps.sh (Debian's chromium and chromium-driver)"
            );
        }
        let port = free_port();
        let profile = dir.join(format!("chromium-profile-{port}"));
        std::fs::create_dir_all(&profile).unwrap();
        let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
        let mut cmd = Command::new("/usr/bin/chromedriver");
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd.spawn().expect("start chromedriver");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut b = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            profile,
            agent,
        };
        assert!(
            wait_until(Duration::from_secs(20), || b
                .call("GET", "/status", None)
                .is_ok_and(|v| v["ready"] == true)),
            "chromedriver did not get ready"
        );
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1100", "--no-first-run", "--no-default-browser-check",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-extensions", "--no-proxy-server",
                    format!("--user-data-dir={}", b.profile.display()),
                ],
            },
        }}});
        let v = b.call("POST", "/session", Some(caps)).expect("new session");
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    /// One WebDriver command: its `value`, or the error it answered.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let resp = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .content_type("application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string().as_str()),
        };
        let mut resp = resp.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if status == 200 {
            Ok(v["value"].clone())
        } else {
            Err(format!("{method} {path}: {status} {}", v["value"]))
        }
    }

    fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Result<Value, String> {
        self.call(method, &format!("/session/{}{what}", self.session), body)
    }

    fn open(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })))
            .expect("navigate");
    }

    /// Runs a script in the page (WebDriver's, not subject to the page's CSP).
    fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .unwrap_or(Value::Null)
    }

    fn text(&self, id: &str) -> Option<String> {
        self.eval(&format!(
            "var e = document.getElementById('{id}'); return e ? e.textContent : null;"
        ))
        .as_str()
        .map(str::to_string)
    }

    fn click(&self, css: &str) {
        let el = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .expect("find the element");
        let id = el[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element id for {css}: {el}"))
            .to_string();
        self.cmd("POST", &format!("/element/{id}/click"), None)
            .expect("click");
    }

    /// Sends this header with every request of the page (its basic-auth login).
    fn login(&self, user: &str, password: &str) {
        let token = BASE64_STANDARD.encode(format!("{user}:{password}"));
        let cdp = |cmd: &str, params: Value| {
            self.cmd(
                "POST",
                "/goog/cdp/execute",
                Some(json!({"cmd": cmd, "params": params})),
            )
            .expect(cmd)
        };
        cdp("Network.enable", json!({}));
        cdp(
            "Network.setExtraHTTPHeaders",
            json!({"headers": {"Authorization": format!("Basic {token}")}}),
        );
    }

    /// The browser's log entries since the last call: (level, message).
    fn log(&self, kind: &str) -> Vec<(String, String)> {
        self.cmd("POST", "/se/log", Some(json!({ "type": kind })))
            .expect("read the log")
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Console errors (SEVERE entries of the browser log) since the last call.
    fn errors(&self) -> Vec<String> {
        self.log("browser")
            .into_iter()
            .filter(|(level, _)| level == "SEVERE")
            .map(|(_, m)| m)
            .collect()
    }

    /// Every URL requested since the last call by documents of `origin` (the performance
    /// log also has the browser's own pages, such as its new-tab page).
    fn requests(&self, origin: &str) -> Vec<String> {
        self.log("performance")
            .into_iter()
            .filter_map(|(_, m)| {
                let v: Value = serde_json::from_str(&m).ok()?;
                let params = &v["message"]["params"];
                let ours = params["documentURL"]
                    .as_str()
                    .is_some_and(|d| d.starts_with(origin));
                if v["message"]["method"] != "Network.requestWillBeSent" || !ours {
                    return None;
                }
                params["request"]["url"].as_str().map(String::from)
            })
            .collect()
    }

    fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("GET", "/screenshot", None).expect("screenshot");
        let png = BASE64_STANDARD
            .decode(b64.as_str().expect("base64"))
            .expect("decode the screenshot");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.cmd("DELETE", "", None);
        }
        // chromedriver and the browser it started share its process group.
        let pgid = self.driver.id() as i32;
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.driver.wait();
        // Anything that left the group but still uses this session's profile.
        let marker = self.profile.to_string_lossy().into_owned();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&marker) {
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
        }
    }
}

fn artifact(name: &str) -> PathBuf {
    workspace_root().join("target/console").join(name)
}

/// Loads `url` and waits until the page's script is live (its event stream open).
fn open_live(b: &Browser, url: &str) {
    // What the browser loaded before (its start page) is not the console's.
    let _ = b.log("performance");
    b.open(url);
    let live = wait_for(Duration::from_secs(10), "the page to go live", || {
        b.text("live").filter(|t| t == "live")
    });
    assert_eq!(live, "live");
}

fn assert_only_local(b: &Browser, origin: &str) {
    let requests = b.requests(origin);
    assert!(
        !requests.is_empty(),
        "no requests seen in the performance log"
    );
    let outside: Vec<&String> = requests
        .iter()
        .filter(|u| !u.starts_with(&format!("{origin}/")))
        .collect();
    assert!(
        outside.is_empty(),
        "requests that left the node: {outside:?}"
    );
}

#[test]
fn the_console_shows_the_master_and_follows_a_failover_live() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    for n in THREE {
        c.start(NodeSpec::new(n));
    }
    let (master, epoch) = c.wait_stable_master(&THREE, settle_timeout(&tm));
    let watcher = THREE.iter().find(|n| **n != master).unwrap().to_string();
    let origin = c.node(&watcher).base_url();
    let b = Browser::start(c.root());
    open_live(&b, &format!("{origin}/ui"));

    // A standby: its state, the master, the banner naming it with its link.
    assert_eq!(b.text("state").as_deref(), Some("STANDBY"));
    assert_eq!(b.text("master").as_deref(), Some(master.as_str()));
    assert_eq!(b.text("banner-master").as_deref(), Some(master.as_str()));
    let banner = b.text("banner").unwrap_or_default();
    assert!(
        banner.starts_with("This node is not the HA master — the master is"),
        "{banner}"
    );
    let link = b.eval("return document.querySelector('#banner a').getAttribute('href');");
    assert_eq!(
        link.as_str(),
        Some(format!("{}/ui", c.node(&master).base_url()).as_str())
    );
    assert_eq!(b.text("epoch").as_deref(), Some(epoch.to_string().as_str()));
    let rows = b.eval("return document.querySelectorAll('#cluster tbody tr').length;");
    assert_eq!(rows, 3);
    assert!(b.text("term").unwrap_or_default().contains(&master));
    // No buttons without --users: changes are refused there.
    assert_eq!(
        b.eval("return document.querySelectorAll('button').length;"),
        0
    );
    assert_eq!(b.errors(), Vec::<String>::new(), "console errors");
    assert_only_local(&b, &origin);
    // The page and its assets (script, style, icon), as decoded: under 100 KB.
    let size = b.eval(
        "var n = performance.getEntriesByType('navigation')[0].decodedBodySize; \
         performance.getEntriesByType('resource').forEach(function (r) { \
           if (/\\/ui\\/(console|favicon)/.test(r.name)) { n += r.decodedBodySize; } }); \
         return n;",
    );
    let size = size.as_u64().expect("a size");
    eprintln!("console page and assets: {size} bytes");
    assert!(size > 5_000 && size < 100 * 1024, "{size} bytes");
    b.screenshot(&artifact("standby.png"));
    if std::env::var_os("TENURE_UPDATE_SCREENSHOT").is_some_and(|v| v != "0") {
        std::fs::copy(
            artifact("standby.png"),
            workspace_root().join("docs/console.png"),
        )
        .unwrap();
    }

    // kill -9 of the master: the open page shows the new master without a reload.
    b.eval("window.__notReloaded = true; return 1;");
    let killed = c.node_mut(&master).kill9();
    let shown = wait_for(
        tm.max_takeover() + Duration::from_secs(2),
        "the page to show a new master",
        || {
            b.text("master")
                .filter(|m| m != &master && m != "none")
                .map(|m| (m, Instant::now()))
        },
    );
    let took = shown.1.duration_since(killed);
    assert!(
        took <= tm.max_takeover(),
        "the page showed {} after {took:?}, above T + 2p + margin = {:?}",
        shown.0,
        tm.max_takeover()
    );
    assert_eq!(b.eval("return window.__notReloaded === true;"), true);
    let new_master = shown.0;
    let states = c.node(&watcher).states().unwrap();
    assert_eq!(states["masterId"], new_master.as_str());
    if new_master == watcher {
        assert!(wait_until(Duration::from_secs(2), || b
            .text("banner")
            .is_none()));
        assert_eq!(b.text("state").as_deref(), Some("MASTER"));
    } else {
        assert!(wait_until(Duration::from_secs(2), || b
            .text("banner-master")
            .as_deref()
            == Some(new_master.as_str())));
    }
    assert_eq!(b.errors(), Vec::<String>::new(), "console errors");
    assert_only_local(&b, &origin);
    b.screenshot(&artifact("after-failover.png"));
    c.assert_safe();
}

#[test]
fn readers_see_no_buttons_and_an_admin_demotes_the_master_through_the_page() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let users = users_file(c.root(), ADMIN_AND_READER);
    for n in THREE {
        c.start(NodeSpec::new(n).args(&["--users", &users, "--public-state"]));
    }
    let (master, _) = c.wait_stable_master(&THREE, settle_timeout(&tm));
    let origin = c.node(&master).base_url();

    // A reader: the page, but no forms and no buttons.
    {
        let b = Browser::start(c.root());
        b.login("viewer", "look");
        open_live(&b, &format!("{origin}/"));
        assert_eq!(b.text("state").as_deref(), Some("MASTER"));
        assert!(b.text("banner").is_none(), "the master shows no banner");
        assert_eq!(
            b.eval("return document.querySelectorAll('button, form').length;"),
            0
        );
        assert_eq!(b.errors(), Vec::<String>::new(), "console errors");
    }

    // An admin: demotes the master with its button; another node takes over and the page,
    // without a reload, shows this node as a standby with the banner naming the new master.
    let b = Browser::start(c.root());
    b.login("admin", "s3cret");
    open_live(&b, &format!("{origin}/ui"));
    assert_eq!(
        b.eval("return document.querySelectorAll('#promote').length;"),
        0
    );
    b.eval("window.__notReloaded = true; return 1;");
    let asked = Instant::now();
    b.click("#demote");
    // The confirmation dialog.
    assert!(wait_until(Duration::from_secs(5), || b
        .cmd("POST", "/alert/accept", None)
        .is_ok()));
    let onset = c.wait_takeover(asked, &[&master], tm.t + tm.margin);
    let new_master = onset.node.clone();
    assert_ne!(new_master, master);
    let notice = wait_for(
        Duration::from_secs(5),
        "the page to report the demote",
        || b.text("notice").filter(|t| !t.is_empty()),
    );
    assert!(notice.starts_with("demote: done"), "{notice}");
    assert!(
        wait_until(tm.t, || b.text("banner-master").as_deref()
            == Some(new_master.as_str())),
        "banner: {:?}",
        b.text("banner")
    );
    assert_eq!(b.text("state").as_deref(), Some("STANDBY"));
    // Now a standby: the admin is offered the switchover back instead.
    assert_eq!(
        b.eval("return document.querySelectorAll('#promote').length;"),
        1
    );
    assert_eq!(b.eval("return window.__notReloaded === true;"), true);
    assert_eq!(b.errors(), Vec::<String>::new(), "console errors");
    b.screenshot(&artifact("admin-after-demote.png"));
    c.assert_safe();
}

/// Sequential `GET …/ha/state` latencies: (median, p99) of `n`.
fn state_latency(url: &str, n: usize) -> (Duration, Duration) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut lat: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let mut r = agent.get(url).call().expect("GET state");
            let _ = r.body_mut().read_to_string();
            t.elapsed()
        })
        .collect();
    lat.sort_unstable();
    (lat[n / 2], lat[n * 99 / 100])
}

/// Opens an event stream on a raw socket and reads up to its first event (or its refusal).
fn subscribe(port: u16) -> (std::net::TcpStream, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /v1/server/ha/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(12).any(|w| w == b"event: hello") {
        let n = s.read(&mut buf).expect("read the stream");
        if n == 0 || got.starts_with(b"HTTP/1.1 503") {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    (s, String::from_utf8_lossy(&got).into_owned())
}

/// 1000 idle subscribers on one node: each gets its `hello`, `GET …/ha/state` answers as fast
/// as before they came, pollers still find connection slots (streams give theirs back), and
/// the stream beyond the limit (1024) is refused with 503.
#[test]
fn a_thousand_idle_subscribers_do_not_slow_the_state_answer() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    c.start(NodeSpec::new("node-a"));
    c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    let port = c.node("node-a").port;
    let url = c.node("node-a").state_url();
    let before = state_latency(&url, 400);
    let t0 = Instant::now();
    let subs: Vec<std::net::TcpStream> = (0..1000)
        .map(|i| {
            let (s, head) = subscribe(port);
            assert!(
                head.starts_with("HTTP/1.1 200") && head.contains("event: hello"),
                "subscriber {i}: {head}"
            );
            s
        })
        .collect();
    eprintln!("1000 subscribers connected in {:?}", t0.elapsed());
    // Idle streams for a while (the node publishes a snapshot every poll, each wakes them).
    let during = state_latency(&url, 400);
    eprintln!("GET state (median, p99): before {before:?}, with 1000 subscribers {during:?}");
    assert!(
        during.0 <= before.0 * 2 + Duration::from_millis(2)
            && during.1 <= before.1 * 2 + Duration::from_millis(20),
        "before {before:?}, with 1000 subscribers {during:?}"
    );
    // More pollers than the connection cap allows streams to hold: all served.
    let pollers: Vec<_> = (0..300)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || state_latency(&url, 3))
        })
        .collect();
    for p in pollers {
        p.join().expect("a poller");
    }
    // The limit: 24 more streams fit, the next is refused.
    let more: Vec<_> = (0..24).map(|_| subscribe(port).0).collect();
    let (_, refused) = subscribe(port);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    drop((subs, more));
    c.assert_safe();
}
