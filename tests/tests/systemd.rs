//! systemd integration. systemd itself cannot run here (it needs to be PID 1 of a booted
//! system, and the tests run in a plain container), so the test plays its part: a unix datagram
//! socket as NOTIFY_SOCKET and WATCHDOG_USEC in the environment, as systemd sets them for a
//! `Type=notify` unit with `WatchdogSec=`. The unit file is checked with `systemd-analyze
//! verify`, which works without a running systemd (Debian package `systemd`).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};
use tenure_tests::expect::settle_timeout;
use tenure_tests::{Cluster, NodeSpec, Timing, serial, tenure_bin, workspace_root};

/// Every notification received until `until` returns true or `timeout` passes, with its time.
fn receive(
    sock: &UnixDatagram,
    timeout: Duration,
    mut until: impl FnMut(&[(Instant, String)]) -> bool,
) -> Vec<(Instant, String)> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !until(&got) {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            for line in msg.lines() {
                got.push((Instant::now(), line.to_string()));
            }
        }
    }
    got
}

#[test]
fn notifies_ready_status_and_watchdog() {
    let _serial = serial();
    // systemd sets WATCHDOG_PID to the main process's pid; a wrapper does the same.
    let wrap_dir = tempfile::tempdir().unwrap();
    let wrapper = wrap_dir.path().join("tenure");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport WATCHDOG_PID=$$\nexec {} \"$@\"\n",
            tenure_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = Cluster::with_bin(wrapper, Timing::standard());
    let tm = c.timing;
    let path = c.root().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    c.start(
        NodeSpec::new("node-a")
            .env("NOTIFY_SOCKET", path.to_str().unwrap())
            .env("WATCHDOG_USEC", "3000000"),
    );
    let (_, epoch) = c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    let want_status = format!("STATUS=MASTER (epoch {epoch})");
    let got = receive(&sock, 4 * tm.t + Duration::from_secs(2), |g| {
        g.iter().any(|(_, m)| *m == want_status)
            && g.iter().filter(|(_, m)| m == "WATCHDOG=1").count() >= 3
    });
    let msgs: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(msgs.first(), Some(&"READY=1"), "READY first: {msgs:?}");
    assert!(
        msgs.contains(&want_status.as_str()),
        "no {want_status}: {msgs:?}"
    );
    // Pings at half of WATCHDOG_USEC (1.5 s), each proving the loop turned.
    let pings: Vec<Instant> = got
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    assert!(pings.len() >= 3, "too few WATCHDOG=1: {msgs:?}");
    for w in pings.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(1200) && gap <= Duration::from_millis(1500) + tm.margin,
            "watchdog pings {gap:?} apart; expected about 1.5 s"
        );
    }

    // SIGTERM: STOPPING=1 once the driver has finished (lease released).
    c.node("node-a").sigterm();
    let got = receive(&sock, tm.t, |g| g.iter().any(|(_, m)| m == "STOPPING=1"));
    let msgs: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
    assert!(msgs.contains(&"STOPPING=1"), "no STOPPING=1: {msgs:?}");
}

#[test]
fn unit_file_verifies() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        // CI installs it (scripts/install-test-deps.sh): there a missing tool is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing: scripts/install-test-deps.sh installs it"
        );
        eprintln!(
            "SKIPPED: systemd-analyze not installed (scripts/install-test-deps.sh installs it)"
        );
        return;
    };
    assert!(out.status.success());
    // `verify` checks that ExecStart exists: point it at the binary under test.
    let unit = std::fs::read_to_string(workspace_root().join("deploy/systemd/tenure.service"))
        .unwrap()
        .replace(
            "/usr/local/bin/tenure",
            tenure_bin().to_str().expect("a UTF-8 path"),
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenure.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    // Unknown or misspelt keys are only warnings: refuse them too.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned: {stderr}"
    );
}

/// The environment file example configures a node on its own (as the unit's
/// `EnvironmentFile=` does): only the host-specific store, address and URI are replaced.
#[test]
fn environment_file_example_configures_a_node() {
    let _serial = serial();
    let text = std::fs::read_to_string(workspace_root().join("deploy/systemd/tenure.env.example"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = tenure_tests::cluster::free_port();
    let mut cmd = Command::new(tenure_bin());
    cmd.arg("run");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TENURE_") {
            cmd.env_remove(k);
        }
    }
    // The cluster is created once with `tenure init` (which also makes the directory; `run`
    // never creates a store); the unit's RequiresMountsFor= waits for its mount.
    tenure_tests::init_store(dir.path().join("store").to_str().unwrap(), "30s", &[], &[]);
    let mut vars = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').expect("KEY=VALUE");
        let v = match k {
            "TENURE_STORE" => dir.path().join("store").to_string_lossy().into_owned(),
            "TENURE_BIND" => format!("127.0.0.1:{port}"),
            "TENURE_NODE_URI" => format!("http://127.0.0.1:{port}"),
            _ => v.to_string(),
        };
        cmd.env(k, v);
        vars += 1;
    }
    assert!(vars >= 5, "the example sets the essentials");
    let log = dir.path().join("node.log");
    cmd.stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = cmd.spawn().expect("spawn tenure");
    let base = format!("http://127.0.0.1:{port}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .into();
    let get = |path: &str| -> Option<String> {
        agent
            .get(&format!("{base}{path}"))
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()
    };
    // A lone node on an empty store starts the cluster at once (a cold start needs no T).
    let master = tenure_tests::wait_until(Duration::from_secs(10), || {
        get("/v1/server/ha/state").as_deref() == Some("\"MASTER\"")
    });
    let metrics: serde_json::Value =
        serde_json::from_str(&get("/v1/server/ha/metrics").unwrap_or_default()).unwrap_or_default();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(master, "no MASTER from the env-file node; log:\n{logged}");
    assert_eq!(metrics["nodeId"], "node-a", "{metrics}");
    assert_eq!(metrics["heartbeatTimeoutMs"], 30_000, "{metrics}");
    assert_eq!(metrics["pollPeriodMs"], 1_000, "{metrics}");
    assert_eq!(status.code(), Some(0), "log:\n{logged}");
    // TENURE_LOG_FORMAT=json: every log line is a JSON object.
    let first = logged.lines().next().expect("a log line");
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok_and(|v| v.is_object()),
        "not a JSON log line: {first}"
    );
}
