//! Node processes and the cluster that owns them.

use crate::checker::History;
use crate::observer::{Observer, Sample, query_state};
use crate::spawn::{prepare, run_args};
use crate::{STATE_PATH, STATES_PATH, Timing, dur_arg, tenure_bin, wait_until};
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How to start one node. Built with [`NodeSpec::new`] and the builder methods; the cluster
/// adds `--node-name`, `--store`, `--bind`, `--node-uri` and (unless overridden) the cluster's
/// `--heartbeat-timeout` and `--poll-period`.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The observer's and the cluster's name for this process (defaults to `name`).
    pub label: String,
    /// `--node-name`.
    pub name: String,
    pub mode: Option<String>,
    /// `--heartbeat-timeout` value; `None` = the cluster's T.
    pub heartbeat_timeout: Option<String>,
    /// `--poll-period` value; `None` = the cluster's p.
    pub poll_period: Option<String>,
    /// More arguments after the ones above.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl NodeSpec {
    pub fn new(name: &str) -> Self {
        NodeSpec {
            label: name.to_string(),
            name: name.to_string(),
            mode: None,
            heartbeat_timeout: None,
            poll_period: None,
            args: Vec::new(),
            env: Vec::new(),
        }
    }
    /// A different label, e.g. for a second process with the same `--node-name`.
    pub fn label(mut self, label: &str) -> Self {
        self.label = label.to_string();
        self
    }
    pub fn mode(mut self, mode: &str) -> Self {
        self.mode = Some(mode.to_string());
        self
    }
    pub fn heartbeat_timeout(mut self, v: &str) -> Self {
        self.heartbeat_timeout = Some(v.to_string());
        self
    }
    pub fn poll_period(mut self, v: &str) -> Self {
        self.poll_period = Some(v.to_string());
        self
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }
    pub fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
}

/// One `tenure run` process (and its restarts, on the same port and log file).
pub struct Node {
    pub label: String,
    pub port: u16,
    pub log_path: PathBuf,
    pub spec: NodeSpec,
    /// The `--store` argument: the cluster's directory or object-store URL.
    store: String,
    /// Environment the store needs (e.g. `AWS_*` for `s3://`), before the spec's own.
    store_env: Vec<(String, String)>,
    timing: Timing,
    bin: PathBuf,
    child: Option<Child>,
    status: Option<ExitStatus>,
    /// When the current process was spawned.
    pub started: Instant,
    agent: ureq::Agent,
}

/// Exit code of a status: the code, or 128 + signal number for a death by signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => -1,
    }
}

impl Node {
    fn command_args(&self) -> Vec<String> {
        let s = &self.spec;
        let mut a = run_args(
            &s.name,
            &self.store,
            self.port,
            &s.heartbeat_timeout
                .clone()
                .unwrap_or_else(|| dur_arg(self.timing.t)),
            &s.poll_period
                .clone()
                .unwrap_or_else(|| dur_arg(self.timing.p)),
        );
        if let Some(m) = &s.mode {
            a.push("--mode".into());
            a.push(m.clone());
        }
        a.extend(s.args.iter().cloned());
        a
    }

    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "{}: spawn while a process is running",
            self.label
        );
        let args = self.command_args();
        let banner = format!(
            "=== harness: starting {} {}",
            self.bin.display(),
            args.join(" ")
        );
        let mut cmd = Command::new(&self.bin);
        cmd.args(&args);
        let env = self.store_env.iter().chain(&self.spec.env);
        prepare(&mut cmd, &self.log_path, &banner, env);
        self.started = Instant::now();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.status = None;
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The URL of `GET /v1/server/ha/state`.
    pub fn state_url(&self) -> String {
        format!("{}{STATE_PATH}", self.base_url())
    }

    /// The process id while the process has not been reaped.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Sends `sig`; returns the instant just before the signal was sent.
    pub fn signal(&self, sig: libc::c_int) -> Instant {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{}: no process to signal", self.label));
        let at = Instant::now();
        // SAFETY: plain kill(2) on our own, not yet reaped, child.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "{}: kill({pid}, {sig}): {}",
            self.label,
            std::io::Error::last_os_error()
        );
        at
    }

    /// SIGKILL, then reaps the process. Returns the instant just before the signal.
    pub fn kill9(&mut self) -> Instant {
        let at = self.signal(libc::SIGKILL);
        let code = self.wait_exit(Duration::from_secs(10));
        assert!(
            code.is_some(),
            "{}: still running after SIGKILL",
            self.label
        );
        at
    }

    /// SIGTERM (graceful stop). Returns the instant just before the signal.
    pub fn sigterm(&self) -> Instant {
        self.signal(libc::SIGTERM)
    }

    /// SIGSTOP (freeze). Returns the instant just before the signal.
    pub fn sigstop(&self) -> Instant {
        self.signal(libc::SIGSTOP)
    }

    /// SIGCONT (thaw). Returns the instant just before the signal.
    pub fn sigcont(&self) -> Instant {
        self.signal(libc::SIGCONT)
    }

    /// The exit code if the process has exited (reaping it), without waiting.
    /// A death by signal n is reported as 128 + n.
    pub fn try_exit(&mut self) -> Option<i32> {
        if let Some(s) = self.status {
            return Some(exit_code(s));
        }
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(s)) => {
                self.status = Some(s);
                self.child = None;
                Some(exit_code(s))
            }
            Ok(None) => None,
            Err(e) => panic!("{}: wait: {e}", self.label),
        }
    }

    /// Waits up to `timeout` for the process to exit; its exit code, or `None` if it is still
    /// running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut code = None;
        wait_until(timeout, || {
            code = self.try_exit();
            code.is_some()
        });
        code
    }

    /// Is the process alive (not exited)?
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none() && self.child.is_some()
    }

    /// Kills the process if it runs, then starts it again with the same arguments (same port,
    /// same log file, a fresh instance).
    pub fn restart(&mut self) {
        if self.is_running() {
            self.kill9();
        }
        self.child = None;
        self.spawn();
    }

    /// Like [`Node::restart`] with a changed spec.
    pub fn restart_with(&mut self, change: impl FnOnce(NodeSpec) -> NodeSpec) {
        self.spec = change(self.spec.clone());
        self.restart();
    }

    /// The whole log (stdout and stderr of every start), without ANSI colour codes.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| strip_ansi(&String::from_utf8_lossy(&b)))
            .unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The log of the current (latest) start only.
    pub fn last_start_log(&self) -> String {
        let log = self.log();
        match log.rfind("=== harness: starting") {
            Some(i) => log[i..].to_string(),
            None => log,
        }
    }

    /// The answer of `GET /v1/server/ha/state` now (as in a [`Sample`]: `DOWN` on failure).
    pub fn state(&self) -> String {
        query_state(&self.agent, &self.state_url()).0
    }

    /// `GET` of a path: (status, body), or `None` when the request failed.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut resp = self
            .agent
            .get(&format!("{}{path}", self.base_url()))
            .call()
            .ok()?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().ok()?;
        Some((status, body))
    }

    /// `GET /ha/states` (tenure's view) parsed, or `None` when it failed or was not 200 + JSON.
    pub fn states(&self) -> Option<serde_json::Value> {
        match self.get(STATES_PATH)? {
            (200, body) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// The status of `node` in this node's `/ha/states`.
    pub fn status_of(&self, node: &str) -> Option<String> {
        let states = self.states()?;
        states
            .get("nodes")?
            .get(node)?
            .get("status")?
            .as_str()
            .map(String::from)
    }

    fn kill_quietly(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            if let Ok(s) = c.wait() {
                self.status = Some(s);
            }
        }
    }
}

/// Removes ANSI escape sequences (`ESC [ … letter`) from text.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Ports handed out in this process, so two nodes never get the same one.
static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free TCP port on 127.0.0.1 (bound to :0 and released), never the same twice.
pub fn free_port() -> u16 {
    let mut used = USED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let used = used.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        drop(l);
        if used.insert(port) {
            return port;
        }
    }
    panic!("no free port found");
}

/// A temporary store directory, the node processes using it and an observer sampling them.
/// Dropping it kills every node; after a failed test it prints the logs and the timeline and
/// keeps the directory (as it does when `TENURE_KEEP_TMP=1`).
///
/// [`Cluster::with_store_url`] makes one whose nodes use an object store instead (the
/// temporary directory then holds only the logs).
pub struct Cluster {
    tmp: Option<tempfile::TempDir>,
    root: PathBuf,
    store: PathBuf,
    /// The `--store` argument and the environment it needs.
    store_arg: String,
    store_env: Vec<(String, String)>,
    pub timing: Timing,
    nodes: Vec<Node>,
    observer: Observer,
    bin: PathBuf,
    /// Whether `tenure init` ran on the store (the first `start` runs it unless told not to:
    /// `tenure run` never creates a cluster).
    initialized: bool,
    auto_init: bool,
}

impl Cluster {
    /// An empty cluster with timings `timing` (T and p are passed to every node).
    pub fn new(timing: Timing) -> Self {
        Self::with_bin(tenure_bin(), timing)
    }

    /// A cluster whose nodes run `bin` instead of the located `tenure` (for harness tests).
    pub fn with_bin(bin: PathBuf, timing: Timing) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("tenure-e2e-")
            .tempdir()
            .expect("create temp dir");
        let root = tmp.path().to_path_buf();
        let store = root.join("store");
        std::fs::create_dir_all(&store).expect("create store dir");
        // Whatever the umask: tenure refuses a store others may write to.
        std::fs::set_permissions(
            &store,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
        )
        .expect("chmod store dir");
        Cluster {
            tmp: Some(tmp),
            root,
            store_arg: store.display().to_string(),
            store_env: Vec::new(),
            store,
            timing,
            nodes: Vec::new(),
            observer: Observer::new(),
            bin,
            initialized: false,
            auto_init: true,
        }
    }

    /// A cluster whose store the harness does not initialize: its nodes find no cluster.json
    /// unless the test writes one (or calls [`Cluster::init`]).
    pub fn without_init(mut self) -> Self {
        self.auto_init = false;
        self
    }

    /// Runs `tenure init` on the store with the cluster's T and `extra` arguments (e.g. a
    /// `--secret-file`), as an operator does once before the first `tenure run`; panics with
    /// its output if it fails. The first [`Cluster::start`] calls it with no extra arguments
    /// unless it ran already.
    pub fn init(&mut self, extra: &[&str]) {
        crate::init_store(
            &self.store_arg,
            &dur_arg(self.timing.t),
            extra,
            &self.store_env,
        );
        self.initialized = true;
    }

    /// A cluster with T = 2 s, p = 200 ms.
    pub fn standard() -> Self {
        Self::new(Timing::standard())
    }

    /// A cluster whose nodes use the store `url` (e.g. `s3://bucket/prefix`), with `env` added
    /// to every node's environment (e.g. `AWS_ENDPOINT_URL`, credentials).
    pub fn with_store_url(timing: Timing, url: &str, env: Vec<(String, String)>) -> Self {
        let mut c = Self::new(timing);
        c.store_arg = url.to_string();
        c.store_env = env;
        c
    }

    /// The `--store` argument every node gets: the store directory or the store URL.
    pub fn store_arg(&self) -> &str {
        &self.store_arg
    }

    /// The store directory (unused by a [`Cluster::with_store_url`] cluster).
    pub fn store(&self) -> &Path {
        &self.store
    }

    /// The temporary directory (store and logs).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The observer's origin (t = 0 of messages and timelines).
    pub fn origin(&self) -> Instant {
        self.observer.origin()
    }

    /// Starts a node and has the observer sample it.
    pub fn start(&mut self, spec: NodeSpec) -> &mut Node {
        if self.auto_init && !self.initialized {
            self.init(&[]);
        }
        assert!(
            self.nodes.iter().all(|n| n.label != spec.label),
            "a node labelled {} exists already",
            spec.label
        );
        let port = free_port();
        let mut node = Node {
            label: spec.label.clone(),
            port,
            log_path: self.root.join(format!("{}.log", spec.label)),
            spec,
            store: self.store_arg.clone(),
            store_env: self.store_env.clone(),
            timing: self.timing,
            bin: self.bin.clone(),
            child: None,
            status: None,
            started: Instant::now(),
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(2)))
                .http_status_as_error(false)
                .build()
                .into(),
        };
        node.spawn();
        self.observer.add(&node.label, &node.state_url());
        self.nodes.push(node);
        self.nodes.last_mut().expect("just pushed")
    }

    /// Starts auto-mode nodes with these names, back to back.
    pub fn start_all(&mut self, names: &[&str]) {
        for n in names {
            self.start(NodeSpec::new(n));
        }
    }

    pub fn node(&self, label: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.label == label)
            .unwrap_or_else(|| panic!("no node labelled {label}"))
    }

    pub fn node_mut(&mut self, label: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.label == label)
            .unwrap_or_else(|| panic!("no node labelled {label}"))
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn labels(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.label.clone()).collect()
    }

    /// What the observer recorded so far.
    pub fn history(&self) -> History {
        self.observer.history()
    }

    /// The observer's latest sample of a node.
    pub fn latest(&self, label: &str) -> Option<Sample> {
        self.history().latest(label).cloned()
    }

    /// Waits until, in the observer's latest samples of `labels`, exactly one node answers
    /// MASTER with an epoch and every other one answers an idle state (STANDBY, HOT_STANDBY,
    /// HOT_BACKUP). Then waits (up to 3p more) for the idle nodes to report the master's epoch
    /// in `X-HA-Epoch`, so they have seen the lease. Returns (master, epoch).
    pub fn wait_stable_master(&self, labels: &[&str], timeout: Duration) -> (String, u64) {
        let idle = |a: &str| matches!(a, "STANDBY" | "HOT_STANDBY" | "HOT_BACKUP");
        let mut found: Option<(String, u64)> = None;
        let ok = wait_until(timeout, || {
            let h = self.history();
            let latest: Vec<Option<&Sample>> = labels.iter().map(|l| h.latest(l)).collect();
            if latest.iter().any(Option::is_none) {
                return false;
            }
            let latest: Vec<&Sample> = latest.into_iter().flatten().collect();
            let masters: Vec<&&Sample> = latest.iter().filter(|s| s.is_master()).collect();
            if masters.len() != 1 || masters[0].epoch.is_none() {
                return false;
            }
            if !latest.iter().all(|s| s.is_master() || idle(&s.answer)) {
                return false;
            }
            found = Some((masters[0].node.clone(), masters[0].epoch.unwrap_or(0)));
            true
        });
        let Some((master, epoch)) = found.filter(|_| ok) else {
            let h = self.history();
            panic!(
                "timed out after {timeout:?} waiting for exactly one MASTER among {labels:?} and the others idle; timeline:\n{}",
                h.timeline()
            );
        };
        wait_until(3 * self.timing.p, || {
            let h = self.history();
            labels
                .iter()
                .filter(|l| **l != master)
                .all(|l| h.latest(l).is_some_and(|s| s.epoch == Some(epoch)))
        });
        (master, epoch)
    }

    /// Waits until the observer's latest sample of `label` is `answer`; panics on timeout.
    pub fn wait_answer(&self, label: &str, answer: &str, timeout: Duration) -> Sample {
        let mut got = None;
        if wait_until(timeout, || {
            got = self.latest(label).filter(|s| s.answer == answer);
            got.is_some()
        }) {
            return got.expect("set when true");
        }
        panic!(
            "timed out after {timeout:?} waiting for {label} to answer {answer}; latest: {:?}; timeline:\n{}",
            self.latest(label).map(|s| s.answer),
            self.history().timeline()
        );
    }

    /// Runs the safety checker over the whole history so far; panics on any violation.
    pub fn assert_safe(&self) {
        self.history().assert_safe();
    }

    /// Every node's log path, exit status and log tail, for failure reports.
    pub fn report(&mut self, tail: usize) -> String {
        let mut out = format!(
            "cluster directory: {} (store {})\n",
            self.root.display(),
            self.store_arg
        );
        for n in &mut self.nodes {
            let status = match n.try_exit() {
                Some(c) => format!("exited with {c}"),
                None => "running".to_string(),
            };
            out.push_str(&format!(
                "--- node {} (port {}, {status}) log {}:\n{}\n",
                n.label,
                n.port,
                n.log_path.display(),
                n.log_tail(tail)
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let history = self.observer.stop();
        for n in &mut self.nodes {
            n.kill_quietly();
        }
        let keep = std::env::var_os("TENURE_KEEP_TMP").is_some_and(|v| v != "0");
        if std::thread::panicking() {
            let report = self.report(40);
            eprintln!(
                "\n===== tenure e2e failure report =====\n{report}--- observer timeline (ms since start):\n{}=====",
                history.timeline()
            );
        }
        if (keep || std::thread::panicking())
            && let Some(tmp) = self.tmp.take()
        {
            let path = tmp.keep();
            eprintln!("kept the cluster directory {}", path.display());
        }
    }
}

/// Writes `bytes` to `path` (creating parent directories), for planting bad records.
pub fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create parent dir");
    }
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(bytes)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
