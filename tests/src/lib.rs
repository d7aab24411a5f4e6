//! End-to-end test harness for tenure: real `tenure run` processes on a real store directory.
//!
//! - [`Cluster`] owns a temporary directory (the store and one log file per node) and the node
//!   processes; it kills every child on drop and, when a test fails, prints each node's log tail
//!   and a timeline of what the observer saw (and keeps the directory).
//! - [`Observer`] samples every node's `GET /v1/server/ha/state` about every 10 ms from one
//!   thread per node and records [`Sample`]s.
//! - [`History`] holds the samples; [`History::violations`] is the safety checker (see
//!   [`checker`]), and helpers such as [`History::first_master_after`] measure failovers.
//! - [`wait_until`] / [`wait_for`] poll with a deadline: tests never sleep and then assert.
//!
//! The e2e tests are timing-sensitive: run them one at a time (`--test-threads=1`); each test
//! also takes [`serial`], a process-wide lock, so a parallel run cannot overlap them.

pub mod brooklyn;
pub mod checker;
pub mod cluster;
pub mod expect;
pub mod faultfs;
pub mod faultfs_proxy;
pub mod observer;
pub mod s3;
pub mod scenarios;
pub mod seaweedfs;
pub mod spawn;

pub use checker::{History, Onset, Violation};
pub use cluster::{Cluster, Node, NodeSpec};
pub use observer::{Observer, Sample};

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The state path every node serves.
pub const STATE_PATH: &str = "/v1/server/ha/state";
/// tenure's view of the cluster every node serves (epochs, bad records, …).
pub const STATES_PATH: &str = "/ha/states";
/// Brooklyn's `HighAvailabilitySummary` of the cluster.
pub const BROOKLYN_STATES_PATH: &str = "/v1/server/ha/states";

/// Cluster timings used by a test: heartbeat timeout T, poll period p, and the slack allowed
/// for a loaded machine when comparing measured times against bounds derived from T and p.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub t: Duration,
    pub p: Duration,
    pub margin: Duration,
}

impl Timing {
    /// T = 2 s, p = 200 ms, margin 400 ms (or `TENURE_TEST_MARGIN_MS`).
    pub fn standard() -> Self {
        Timing {
            t: Duration::from_secs(2),
            p: Duration::from_millis(200),
            margin: margin_from_env(Duration::from_millis(400)),
        }
    }

    /// The master's renew interval R at these timings (the default: D/4, at least p).
    pub fn renew_interval(&self) -> Duration {
        use tenure_election::config::Config;
        Config::default_renew_interval(
            Config::default_renew_deadline(self.t),
            self.p,
            Config::default_storage_timeout(self.p),
        )
    }

    /// Earliest allowed takeover after the master dies: T − R (it may die just before its
    /// next renewal, R after the last one a standby saw) and never before T − p.
    pub fn min_takeover(&self) -> Duration {
        self.t.saturating_sub(self.renew_interval().max(self.p))
    }

    /// Latest allowed takeover after the master dies: T + 2p + margin.
    pub fn max_takeover(&self) -> Duration {
        self.t + 2 * self.p + self.margin
    }
}

fn margin_from_env(default: Duration) -> Duration {
    std::env::var("TENURE_TEST_MARGIN_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(default)
}

/// Formats a duration as `--flag` value: whole milliseconds, e.g. `2000ms`.
pub fn dur_arg(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The workspace root: the parent of this package's directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `tenure` binary under test: `$TENURE_BIN`; else `target/release/tenure` if it exists
/// and is newer than `target/debug/tenure`; else `target/debug/tenure`.
/// Panics with "build it first: cargo build -p tenure" when there is none.
pub fn tenure_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TENURE_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "TENURE_BIN={} is not a file; build it first: cargo build -p tenure",
            p.display()
        );
        return p;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_relative() {
                workspace_root().join(t)
            } else {
                t
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"));
    let release = target.join("release").join("tenure");
    let debug = target.join("debug").join("tenure");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (mtime(&release), mtime(&debug)) {
        (Some(r), Some(d)) if r > d => release,
        (Some(_), None) => release,
        (_, Some(_)) => debug,
        (None, None) => panic!(
            "no tenure binary at {} or {} (and TENURE_BIN is not set): build it first: cargo build -p tenure",
            release.display(),
            debug.display()
        ),
    }
}

/// `tenure <args>` with `stdin` as its input (none: /dev/null) → (exit code, stdout, stderr),
/// both trimmed.
pub fn run_tenure(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(tenure_bin())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tenure");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("tenure finished");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// `tenure hash-password` of `pw`: its PHC string (argon2), checked to be one.
pub fn hash_password(pw: &str) -> String {
    let (code, out, err) = run_tenure(&["hash-password"], Some(&format!("{pw}\n")));
    assert_eq!(code, 0, "hash-password failed: {err}");
    assert!(out.starts_with("$argon2"), "not a PHC hash: {out}");
    out
}

/// The users most API tests use: an admin `admin:s3cret` and a reader `viewer:look`.
pub const ADMIN_AND_READER: &[(&str, &str, &str)] =
    &[("admin", "s3cret", "admin"), ("viewer", "look", "reader")];

/// A `--users` file `users.json` in `dir` for `(name, password, role)`s, the passwords hashed
/// with `tenure hash-password`; returns its path.
pub fn users_file(dir: &Path, users: &[(&str, &str, &str)]) -> String {
    let users: serde_json::Map<String, serde_json::Value> = users
        .iter()
        .map(|(name, pw, role)| {
            (
                name.to_string(),
                serde_json::json!({"password": hash_password(pw), "role": role}),
            )
        })
        .collect();
    let path = dir.join("users.json");
    std::fs::write(&path, serde_json::json!({ "users": users }).to_string())
        .expect("write users.json");
    path.to_string_lossy().into_owned()
}

/// Runs `tenure init --store STORE --heartbeat-timeout T EXTRA…` with `env` (and no other
/// `TENURE_*` variable), as an operator does once before the first `tenure run` of a cluster
/// (`run` never creates one); panics with its output if it fails.
pub fn init_store(store: &str, heartbeat_timeout: &str, extra: &[&str], env: &[(String, String)]) {
    let mut cmd = std::process::Command::new(tenure_bin());
    cmd.args([
        "init",
        "--store",
        store,
        "--heartbeat-timeout",
        heartbeat_timeout,
    ])
    .args(extra)
    .stdin(std::process::Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TENURE_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run tenure init");
    assert!(
        out.status.success(),
        "tenure init --store {store} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A process-wide lock that e2e tests hold for their whole run, so they never overlap even
/// when the harness runs tests in parallel. A test that panicked does not poison it for others.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Polls `cond` every 10 ms until it is true (returns true) or `timeout` passes (returns the
/// value of one last evaluation).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return cond();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `f` every 10 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            if let Some(v) = f() {
                return v;
            }
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lets time pass while the observer keeps recording (for assertions over a window of the
/// history afterwards, never for a bare state assertion).
pub fn observe_for(d: Duration) {
    std::thread::sleep(d);
}

/// Milliseconds from `origin` to `t` (negative when `t` is earlier), for messages.
pub fn ms_since(origin: Instant, t: Instant) -> i128 {
    if t >= origin {
        (t - origin).as_millis() as i128
    } else {
        -((origin - t).as_millis() as i128)
    }
}
