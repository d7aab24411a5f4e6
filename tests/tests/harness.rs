//! Tests of the harness itself (process control, logs, clean-up), with a fake node: a shell
//! script instead of `tenure`, so they run before the real binary exists.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;
use tenure_tests::{Cluster, NodeSpec, Timing, wait_until};

fn fake_bin(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("fake-tenure");
    std::fs::write(
        &path,
        "#!/bin/sh\n\
         echo \"fake tenure: $* env=$FAKE_ENV\" >&2\n\
         trap 'echo got TERM; exit 0' TERM\n\
         while :; do sleep 0.05; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn nodes_are_started_signalled_restarted_and_killed_on_drop() {
    let bin_dir = tempfile::tempdir().unwrap();
    let bin = fake_bin(bin_dir.path());
    let mut c = Cluster::with_bin(bin, Timing::standard());
    let store = c.store().display().to_string();
    c.start(
        NodeSpec::new("node-a")
            .mode("hot-standby")
            .env("FAKE_ENV", "yes"),
    );
    c.start(NodeSpec::new("node-b"));

    // Arguments and environment reach the process; its output lands in its log.
    let a = c.node("node-a");
    assert!(wait_until(Duration::from_secs(5), || a
        .log()
        .contains("fake tenure")));
    let log = a.log();
    for part in [
        "run --node-name node-a",
        &format!("--store {store}"),
        &format!("--bind 127.0.0.1:{}", a.port),
        &format!("--node-uri http://127.0.0.1:{}", a.port),
        "--heartbeat-timeout 2000ms --poll-period 200ms",
        "--mode hot-standby",
        "env=yes",
    ] {
        assert!(log.contains(part), "log lacks {part:?}:\n{log}");
    }
    assert_ne!(c.node("node-a").port, c.node("node-b").port);

    // Nothing serves HTTP: the observer records DOWN.
    assert!(wait_until(Duration::from_secs(5), || {
        c.history().of("node-a").count() >= 3
    }));
    assert!(c.history().of("node-a").all(|s| s.is_down()));
    assert_eq!(c.node("node-a").state(), "DOWN");

    // SIGSTOP / SIGCONT keep it alive; SIGTERM lets it exit 0 (the script traps it).
    c.node("node-a").sigstop();
    c.node("node-a").sigcont();
    assert!(c.node_mut("node-a").is_running());
    c.node("node-a").sigterm();
    assert_eq!(
        c.node_mut("node-a").wait_exit(Duration::from_secs(5)),
        Some(0)
    );
    assert!(c.node("node-a").log().contains("got TERM"));

    // kill -9 is reported as 128 + 9.
    c.node_mut("node-b").kill9();
    assert_eq!(c.node_mut("node-b").try_exit(), Some(137));

    // Restart: same port, same log, a new process.
    let port = c.node("node-a").port;
    c.node_mut("node-a")
        .restart_with(|s| s.heartbeat_timeout("3s"));
    assert_eq!(c.node("node-a").port, port);
    let a = c.node("node-a");
    assert!(wait_until(Duration::from_secs(5), || {
        a.last_start_log().contains("--heartbeat-timeout 3s")
            && a.last_start_log().contains("fake tenure")
    }));
    assert_eq!(a.log().matches("=== harness: starting").count(), 2);

    // Dropping the cluster kills what still runs and removes the directory.
    let pid = c.node("node-a").pid().expect("running");
    let root = c.root().to_path_buf();
    assert!(alive(pid));
    drop(c);
    assert!(!alive(pid), "node-a survived the cluster");
    assert!(!root.exists(), "the cluster directory was kept");
}

#[test]
fn wait_helpers_poll_until_a_deadline() {
    let start = std::time::Instant::now();
    assert!(!wait_until(Duration::from_millis(100), || false));
    assert!(start.elapsed() >= Duration::from_millis(100));
    let mut n = 0;
    assert!(wait_until(Duration::from_secs(5), || {
        n += 1;
        n >= 3
    }));
    let v = tenure_tests::wait_for(Duration::from_secs(1), "a value", || Some(42));
    assert_eq!(v, 42);
}
