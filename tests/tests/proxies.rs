//! The reverse-proxy examples in `deploy/` with the real programs (Debian's haproxy, apache2,
//! nginx; `scripts/install-test-deps.sh` installs them): three tenure nodes, one stand-in
//! application per node (a few lines of Python answering the node's name), the proxy on a free
//! loopback port, filled in from the very template in `deploy/`.
//!
//! Each test asserts that requests through the proxy reach only the master's application, then
//! kills the master's tenure with kill -9 (its application keeps running, as a service started
//! by a hook does) and asserts that the proxy stops sending to it within its check bound, sends
//! to no standby, and reaches the new master's application within
//! T + 2p (the takeover bound) + 2 × the proxy's check interval + margin.
//! T = 2 s, p = 200 ms. Run with `--test-threads=1` (each test also holds `serial()`).
//!
//! With `TENURE_PROXY_BENCH_OUT=FILE`, each test appends `proxy switch_ms interval_ms T_ms p_ms`
//! to FILE (scripts/bench-proxies.sh).

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tenure_tests::cluster::free_port;
use tenure_tests::expect::settle_timeout;
use tenure_tests::users_file;
use tenure_tests::{
    Cluster, NodeSpec, Timing, serial, spawn, wait_for, wait_until, workspace_root,
};

const THREE: [&str; 3] = ["node-a", "node-b", "node-c"];

/// The stand-in application: `GET /` answers the node's name; `…/v1/server/ha/…` is forwarded to
/// the node's tenure (mod_proxy_hcheck can only check the member's own address).
const APP_PY: &str = r#"
import sys, urllib.request, urllib.error
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
port, name, tenure = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, code, body, ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path.startswith("/v1/server/ha/"):
            try:
                with urllib.request.urlopen(tenure + self.path, timeout=1) as r:
                    self.reply(r.status, r.read(), r.headers.get("Content-Type", "text/plain"))
            except urllib.error.HTTPError as e:
                self.reply(e.code, e.read())
            except Exception as e:
                self.reply(502, str(e).encode())
        else:
            self.reply(200, name.encode())
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

/// A process started by this test in its own process group; the whole group is stopped on
/// drop (SIGTERM, then SIGKILL), so forked workers (apache, nginx) go too.
struct Daemon {
    what: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(what: &str, cmd: &mut Command, log: &Path) -> Daemon {
        let out = std::fs::File::create(log).expect("create daemon log");
        let err = out.try_clone().expect("clone log handle");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        spawn::die_with_spawner(cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {what} ({cmd:?}): {e}; run scripts/install-test-deps.sh")
        });
        Daemon {
            what: what.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log if the process has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(s)) = self.child.try_wait() {
            panic!("{} exited ({s}); log:\n{}", self.what, self.log());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group of a child this test started.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let stopped = wait_until(Duration::from_secs(3), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        // SAFETY: as above; workers may outlive their parent's exit by a moment.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        if !stopped {
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- {} log {}:\n{}",
                self.what,
                self.log.display(),
                self.log()
            );
        }
    }
}

fn wait_listening(port: u16, what: &str, d: &mut Daemon) {
    let ok = wait_until(Duration::from_secs(10), || {
        d.assert_running();
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(
        ok,
        "{what} does not listen on 127.0.0.1:{port}; log:\n{}",
        d.log()
    );
}

/// A template from `deploy/` with its `@NAME@` placeholders replaced; panics if any is left.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    let path = workspace_root().join("deploy").join(template);
    let mut text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for (k, v) in values {
        text = text.replace(&format!("@{k}@"), v);
    }
    let left: Vec<&str> = text
        .split('@')
        .skip(1)
        .step_by(2)
        .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(
        left.is_empty(),
        "{template}: unfilled placeholders {left:?}"
    );
    text
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// One stand-in application per node; `apps[i]` belongs to `THREE[i]`.
struct Apps {
    ports: Vec<u16>,
    _procs: Vec<Daemon>,
}

impl Apps {
    fn start(c: &Cluster) -> Apps {
        let script = write(c.root(), "app.py", APP_PY);
        let mut ports = Vec::new();
        let mut procs = Vec::new();
        for n in THREE {
            let port = free_port();
            let mut d = Daemon::start(
                &format!("app of {n}"),
                Command::new("python3")
                    .arg(&script)
                    .arg(port.to_string())
                    .arg(n)
                    .arg(c.node(n).base_url()),
                &c.root().join(format!("app-{n}.log")),
            );
            wait_listening(port, &format!("the app of {n}"), &mut d);
            ports.push(port);
            procs.push(d);
        }
        Apps {
            ports,
            _procs: procs,
        }
    }

    fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }
}

/// One request through the proxy.
#[derive(Debug)]
struct Hit {
    sent: Instant,
    received: Instant,
    status: u16,
    body: String,
}

struct Client {
    agent: ureq::Agent,
    url: String,
}

impl Client {
    fn new(port: u16) -> Client {
        Client {
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(2)))
                .http_status_as_error(false)
                .build()
                .into(),
            url: format!("http://127.0.0.1:{port}/"),
        }
    }

    fn get(&self) -> Hit {
        let sent = Instant::now();
        let (status, body) = match self.agent.get(&self.url).call() {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(e) => (0, e.to_string()),
        };
        Hit {
            sent,
            received: Instant::now(),
            status,
            body,
        }
    }
}

/// What a proxy test needs to know about the proxy under test.
struct ProxyUnderTest<'a> {
    name: &'a str,
    port: u16,
    /// The check (or poll) period.
    interval: Duration,
    /// How long after the master's tenure dies the proxy may still send to its application:
    /// fall × interval plus one interval of phase.
    drain: Duration,
}

/// The scenario shared by every proxy: master only, then kill -9 and the switch.
fn exercise(c: &mut Cluster, proxy: &ProxyUnderTest, daemon: &mut Daemon, auth: Option<&str>) {
    let tm: Timing = c.timing;
    let master = match auth {
        None => c.wait_stable_master(&THREE, settle_timeout(&tm)).0,
        Some(a) => wait_for(settle_timeout(&tm), "exactly one MASTER", || {
            let m: Vec<&str> = THREE
                .into_iter()
                .filter(|n| state_of(c, n, Some(a)) == "MASTER")
                .collect();
            (m.len() == 1).then(|| m[0].to_string())
        }),
    };
    let client = Client::new(proxy.port);

    // Until its first checks have run, a proxy may still send to a standby (HAProxy 2.x starts
    // servers UP): wait until ten requests in a row reach the master.
    let mut last = None;
    let mut in_a_row = 0;
    let routed = wait_until(Duration::from_secs(15), || {
        daemon.assert_running();
        let h = client.get();
        if h.status == 200 && h.body == master {
            in_a_row += 1;
        } else {
            in_a_row = 0;
        }
        last = Some(h);
        in_a_row >= 10
    });
    assert!(
        routed,
        "{} never sent a request to the master {master}'s app; last: {last:?}; log:\n{}",
        proxy.name,
        daemon.log()
    );
    for _ in 0..40 {
        let h = client.get();
        assert_eq!(
            (h.status, h.body.as_str()),
            (200, master.as_str()),
            "{}: a request did not reach the master {master}'s app",
            proxy.name
        );
    }

    let killed_at = c.node_mut(&master).kill9();
    let bound = tm.max_takeover() + 2 * proxy.interval + tm.margin;
    let mut hits = Vec::new();
    let got_new = wait_until(bound + Duration::from_secs(5), || {
        let h = client.get();
        let done = h.status == 200 && h.body != master;
        hits.push(h);
        done
    });
    let describe = |hits: &[Hit]| {
        hits.iter()
            .map(|h| {
                format!(
                    "+{}..{}ms {} {}",
                    h.sent.duration_since(killed_at).as_millis(),
                    h.received.duration_since(killed_at).as_millis(),
                    h.status,
                    h.body.chars().take(40).collect::<String>()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        got_new,
        "{}: no request reached another app within {bound:?} + 5 s of killing {master}; requests:\n{}",
        proxy.name,
        describe(&hits)
    );
    let first = hits.last().expect("at least one");
    let new_master = first.body.clone();
    let elapsed = first.received.duration_since(killed_at);
    assert_eq!(
        state_of(c, &new_master, auth),
        "MASTER",
        "{}: the first request after the kill went to {new_master}, which is not MASTER",
        proxy.name
    );
    assert!(
        elapsed <= bound,
        "{}: the new master {new_master}'s app was first reached {elapsed:?} after kill -9 of {master}, \
         bound T + 2p + 2 × interval + margin = {bound:?} (T = {:?}, p = {:?}, interval = {:?}); requests:\n{}",
        proxy.name,
        tm.t,
        tm.p,
        proxy.interval,
        describe(&hits)
    );
    // The old master's app (still running) got nothing once the proxy's checks had failed.
    let late_old: Vec<&Hit> = hits
        .iter()
        .filter(|h| h.body == master && h.sent > killed_at + proxy.drain + tm.margin)
        .collect();
    assert!(
        late_old.is_empty(),
        "{}: requests reached the dead master {master}'s app more than drain {:?} + margin after the kill; requests:\n{}",
        proxy.name,
        proxy.drain,
        describe(&hits)
    );
    // Then only the new master, many times over.
    for _ in 0..40 {
        let h = client.get();
        assert_eq!(
            (h.status, h.body.as_str()),
            (200, new_master.as_str()),
            "{}: a request after the switch did not reach the new master",
            proxy.name
        );
    }
    eprintln!(
        "{}: switch to {new_master} {} ms after kill -9 of {master} (T = {:?}, p = {:?}, interval = {:?}, bound {:?})",
        proxy.name,
        elapsed.as_millis(),
        tm.t,
        tm.p,
        proxy.interval,
        bound
    );
    if let Some(out) = std::env::var_os("TENURE_PROXY_BENCH_OUT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .expect("open TENURE_PROXY_BENCH_OUT");
        let _ = writeln!(
            f,
            "{} {} {} {} {}",
            proxy.name,
            elapsed.as_millis(),
            proxy.interval.as_millis(),
            tm.t.as_millis(),
            tm.p.as_millis()
        );
    }
    c.assert_safe();
}

/// A node's answer to `GET …/ha/state` without the quotes, logging in with `auth`
/// (`user:password`) if given; `DOWN` when the request failed.
fn state_of(c: &Cluster, node: &str, auth: Option<&str>) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(c.node(node).state_url());
    if let Some(a) = auth {
        use base64::Engine;
        let token = base64::prelude::BASE64_STANDARD.encode(a);
        req = req.header("Authorization", format!("Basic {token}"));
    }
    match req.call() {
        Ok(mut r) => r
            .body_mut()
            .read_to_string()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string(),
        Err(_) => "DOWN".to_string(),
    }
}

fn node_values(c: &Cluster, apps: &Apps) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    for (i, (app, ha)) in [
        ("NODE_A_APP", "NODE_A_HA_PORT"),
        ("NODE_B_APP", "NODE_B_HA_PORT"),
        ("NODE_C_APP", "NODE_C_HA_PORT"),
    ]
    .into_iter()
    .enumerate()
    {
        v.push((app, apps.addr(i)));
        v.push((ha, c.node(THREE[i]).port.to_string()));
    }
    v
}

/// With `auth`, the nodes require a login (`--users`, no `--public-state`) and the template
/// gets the reader's credentials.
fn haproxy(template: &str, auth: bool) {
    let _serial = serial();
    let mut c = Cluster::standard();
    let mut node_args = Vec::new();
    if auth {
        node_args = vec![
            "--users".to_string(),
            users_file(c.root(), &[("monitor", "secret", "reader")]),
        ];
    }
    for n in THREE {
        c.start(NodeSpec::new(n).args(&node_args.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    let apps = Apps::start(&c);
    if auth {
        let (status, _) = c
            .node(THREE[0])
            .get("/v1/server/ha/state")
            .expect("an answer");
        assert_eq!(
            status, 401,
            "the state must need a login for this test to mean anything"
        );
    }
    let port = free_port();
    let mut values = node_values(&c, &apps);
    values.push(("LISTEN", format!("127.0.0.1:{port}")));
    {
        use base64::Engine;
        let token = base64::prelude::BASE64_STANDARD.encode("monitor:secret");
        values.push(("BASIC_AUTH", token));
    }
    let cfg = write(c.root(), "haproxy.cfg", &fill(template, &values));
    let mut d = Daemon::start(
        "haproxy",
        Command::new("haproxy").arg("-f").arg(&cfg).arg("-db"),
        &c.root().join("haproxy.log"),
    );
    wait_listening(port, "haproxy", &mut d);
    // inter 250ms, fall 2 in the template.
    let interval = Duration::from_millis(250);
    let proxy = ProxyUnderTest {
        name: template,
        port,
        interval,
        drain: 3 * interval,
    };
    exercise(&mut c, &proxy, &mut d, auth.then_some("monitor:secret"));
}

#[test]
fn haproxy_sends_traffic_to_the_master_only_and_follows_a_failover() {
    haproxy("haproxy/haproxy.cfg", false);
}

#[test]
fn haproxy_with_credentials_checks_nodes_that_require_a_login() {
    haproxy("haproxy/haproxy-auth.cfg", true);
}

#[test]
fn apache_hcheck_sends_traffic_to_the_master_only_and_follows_a_failover() {
    let _serial = serial();
    let mut c = Cluster::standard();
    // Apache cannot send credentials: the state stays public.
    let users = users_file(c.root(), &[("monitor", "secret", "reader")]);
    for n in THREE {
        c.start(NodeSpec::new(n).args(&["--users", &users, "--public-state"]));
    }
    let apps = Apps::start(&c);
    let port = free_port();
    let run_dir = c.root().join("apache");
    std::fs::create_dir_all(&run_dir).expect("create apache dir");
    let mut values = node_values(&c, &apps);
    values.push(("LISTEN", format!("127.0.0.1:{port}")));
    let vhost = write(
        &run_dir,
        "tenure-balancer.conf",
        &fill("apache/tenure-balancer.conf", &values),
    );
    let conf = write(
        &run_dir,
        "httpd.conf",
        &fill(
            "apache/standalone.conf",
            &[
                ("RUN_DIR", run_dir.display().to_string()),
                ("MODULES", "/usr/lib/apache2/modules".to_string()),
                ("LISTEN", format!("127.0.0.1:{port}")),
                ("VHOST", vhost.display().to_string()),
            ],
        ),
    );
    let mut d = Daemon::start(
        "apache2",
        Command::new("apache2")
            .arg("-f")
            .arg(&conf)
            .arg("-DFOREGROUND")
            .env("APACHE_RUN_DIR", &run_dir),
        &run_dir.join("stdout.log"),
    );
    wait_listening(port, "apache2", &mut d);
    let interval = Duration::from_millis(250);
    let proxy = ProxyUnderTest {
        name: "apache/tenure-balancer.conf",
        port,
        interval,
        drain: 2 * interval,
    };
    exercise(&mut c, &proxy, &mut d, None);
}

#[test]
fn nginx_upstream_follows_the_master_through_the_sync_script() {
    let _serial = serial();
    let mut c = Cluster::standard();
    c.start_all(&THREE);
    let apps = Apps::start(&c);
    let port = free_port();
    let run_dir = c.root().join("nginx");
    std::fs::create_dir_all(&run_dir).expect("create nginx dir");
    let upstream = write(&run_dir, "upstream.conf", "server 127.0.0.1:9 down;\n");
    let conf = write(
        &run_dir,
        "nginx.conf",
        &fill(
            "nginx/nginx.conf",
            &[
                ("RUN_DIR", run_dir.display().to_string()),
                ("LISTEN", format!("127.0.0.1:{port}")),
                ("UPSTREAM", upstream.display().to_string()),
            ],
        ),
    );
    let mut d = Daemon::start(
        "nginx",
        Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-g")
            .arg("daemon off;"),
        &run_dir.join("stdout.log"),
    );
    wait_listening(port, "nginx", &mut d);
    let interval = Duration::from_millis(200);
    let mut sync = Command::new(workspace_root().join("deploy/nginx/tenure-upstream-sync.sh"));
    sync.arg(&upstream)
        .env("INTERVAL", "0.2")
        .env("CURL_TIMEOUT", "1")
        .env(
            "RELOAD",
            format!("kill -HUP $(cat {}/nginx.pid)", run_dir.display()),
        );
    for (i, n) in THREE.iter().enumerate() {
        sync.arg(format!("{}={}", c.node(n).base_url(), apps.addr(i)));
    }
    let mut s = Daemon::start(
        "tenure-upstream-sync.sh",
        &mut sync,
        &run_dir.join("sync.log"),
    );
    s.assert_running();
    let proxy = ProxyUnderTest {
        name: "nginx/nginx.conf+tenure-upstream-sync.sh",
        port,
        interval,
        // FALL = 2 rounds without a master, plus one round of phase and the reload.
        drain: 3 * interval + Duration::from_millis(300),
    };
    exercise(&mut c, &proxy, &mut d, None);
    s.assert_running();
}
