//! A node's local files: `--pid-file` (written once serving, refused to a second process while
//! the first runs, removed at a clean exit, taken over after kill -9) and `--log-file` (with
//! `{node}` replaced, beside stderr, reopened on SIGHUP as logrotate expects).

use std::process::{Command, Stdio};
use std::time::Duration;
use tenure_tests::cluster::free_port;
use tenure_tests::{Cluster, NodeSpec, Timing, dur_arg, serial, tenure_bin, wait_until};

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn pid_file_and_log_file_behave_as_init_scripts_and_logrotate_expect() {
    let _serial = serial();
    let tm = Timing::standard();
    let mut c = Cluster::new(tm);
    let logs = c.root().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let pid_path = c.root().join("tenure.pid");
    let template = logs.join("tenure.{node}.log");
    c.start(
        NodeSpec::new("a")
            .arg(&format!("--pid-file={}", pid_path.display()))
            .arg(&format!("--log-file={}", template.display())),
    );
    c.wait_stable_master(&["a"], Duration::from_secs(20));
    let pid = c.node("a").pid().expect("a runs");
    assert!(
        wait_until(Duration::from_secs(5), || read(&pid_path)
            == format!("{pid}\n")),
        "the pid file holds {:?}, not {pid}",
        read(&pid_path)
    );
    let log_path = logs.join("tenure.a.log");
    assert!(
        read(&log_path).contains("promoted to MASTER"),
        "{} lacks the promotion:\n{}",
        log_path.display(),
        read(&log_path)
    );
    assert!(
        c.node("a").log().contains("promoted to MASTER"),
        "stderr too"
    );

    // A second process given the same pid file is refused at once, naming the holder.
    let out = Command::new(tenure_bin())
        .args([
            "run",
            "--node-name",
            "b",
            "--store",
            c.store_arg(),
            "--bind",
            &format!("127.0.0.1:{}", free_port()),
            "--heartbeat-timeout",
            &dur_arg(tm.t),
            "--poll-period",
            &dur_arg(tm.p),
            "--pid-file",
            pid_path.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is held by a running tenure") && err.contains(&format!("(pid {pid})")),
        "{err}"
    );
    assert_eq!(
        read(&pid_path),
        format!("{pid}\n"),
        "the holder's file is untouched"
    );

    // logrotate: move the file away, SIGHUP; the node writes to a new file and keeps running.
    let rotated = logs.join("tenure.a.log.1");
    std::fs::rename(&log_path, &rotated).unwrap();
    c.node("a").signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || read(&log_path)
            .contains("SIGHUP: reopened the log file")),
        "no new log file after SIGHUP; the old one ends:\n{}",
        c.node("a").log_tail(10)
    );
    assert!(!read(&rotated).contains("SIGHUP: reopened"));
    assert_eq!(
        c.node("a").state(),
        "MASTER",
        "SIGHUP does not stop the node"
    );

    // A clean exit removes the pid file.
    c.node("a").sigterm();
    assert_eq!(c.node_mut("a").wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!pid_path.exists(), "the pid file outlived a clean exit");

    // After kill -9 the file stays, but the lock died with the process: a new one takes over.
    c.node_mut("a").restart();
    c.wait_stable_master(&["a"], Duration::from_secs(30));
    c.node_mut("a").kill9();
    assert!(pid_path.exists());
    c.node_mut("a").restart();
    let new_pid = c.node("a").pid().expect("a runs again");
    assert!(
        wait_until(Duration::from_secs(10), || read(&pid_path)
            == format!("{new_pid}\n")),
        "the restarted node did not take the pid file over: {:?}",
        read(&pid_path)
    );
}

#[test]
fn an_unwritable_log_file_is_refused_naming_the_fix() {
    let _serial = serial();
    let c = Cluster::standard();
    let out = Command::new(tenure_bin())
        .args([
            "run",
            "--node-name",
            "a",
            "--store",
            c.store_arg(),
            "--log-file",
            "/nonexistent-dir/tenure.{node}.log",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/nonexistent-dir/tenure.a.log") && err.contains("create its directory"),
        "{err}"
    );
}
