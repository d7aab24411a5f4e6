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
            .env("WATCHDOG_USEC", "1000000"),
    );
    let (_, epoch) = c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    let want_status = format!("STATUS=MASTER (epoch {epoch})");
    let got = receive(&sock, 3 * tm.t, |g| {
        g.iter().any(|(_, m)| *m == want_status)
            && g.iter().filter(|(_, m)| m == "WATCHDOG=1").count() >= 4
    });
    let msgs: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(msgs.first(), Some(&"READY=1"), "READY first: {msgs:?}");
    assert!(
        msgs.contains(&want_status.as_str()),
        "no {want_status}: {msgs:?}"
    );
    // Pings at half of WATCHDOG_USEC (500 ms), each proving the loop turned.
    let pings: Vec<Instant> = got
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    assert!(pings.len() >= 4, "too few WATCHDOG=1: {msgs:?}");
    for w in pings.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(300) && gap <= Duration::from_millis(500) + tm.margin,
            "watchdog pings {gap:?} apart; expected about 500 ms"
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
