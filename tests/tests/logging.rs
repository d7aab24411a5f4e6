//! What a node tells its operator while nothing visible happens, and how its log reads:
//! a wait (for a name's previous instance, for a lease that stands still) is logged once with
//! when it ends and shown in `/ha/states`; text logs carry colour codes only on a terminal.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tenure_tests::{Cluster, Timing, serial, tenure_bin, wait_for, wait_until};

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The `waiting` object of `node`'s own row in its `/ha/states`, if any.
fn waiting(c: &Cluster, node: &str) -> Option<serde_json::Value> {
    let states = c.node(node).states()?;
    let w = states["nodes"][node].get("waiting")?;
    (!w.is_null()).then(|| w.clone())
}

#[test]
fn a_waiting_node_says_what_it_waits_for_and_until_when() {
    let _serial = serial();
    // T long enough that both waits below last a few seconds on a busy machine.
    let mut c = Cluster::new(Timing {
        t: Duration::from_secs(4),
        ..Timing::standard()
    });
    c.start_all(&["a", "b"]);
    let (master, epoch) = c.wait_stable_master(&["a", "b"], Duration::from_secs(20));
    let standby = if master == "a" { "b" } else { "a" };
    assert!(
        waiting(&c, standby).is_none(),
        "a standby beside a live master waits for nothing"
    );

    // kill -9 of the master and an immediate restart: its name's previous instance looks
    // alive until its record has stood still for T.
    c.node_mut(&master).kill9();
    let killed_ms = wall_ms();
    c.node_mut(&master).restart();
    let w = wait_for(
        Duration::from_secs(3),
        "the restarted node to show its wait",
        || waiting(&c, &master),
    );
    let what = w["for"].as_str().unwrap_or_default();
    assert!(
        what.contains(&format!("nodes/{master}.json")) && what.contains("stand still for T=4s"),
        "{w}"
    );
    let until = w["untilTimestamp"].as_i64().expect("untilTimestamp");
    assert!(
        until > killed_ms && until <= wall_ms() + 4_500,
        "ends within T of now: {w}"
    );

    // The standby sees the lease stand still and says until when it waits for it.
    let w = wait_for(
        Duration::from_secs(3),
        "the standby to show its wait for the lease",
        || waiting(&c, standby),
    );
    let what = w["for"].as_str().unwrap_or_default();
    assert!(
        what.contains(&format!("the lease of {master} epoch {epoch}")),
        "{w}"
    );
    assert!(
        w["untilTimestamp"].as_i64().expect("untilTimestamp") > killed_ms,
        "{w}"
    );

    // A master again, and then nobody waits any more.
    c.wait_stable_master(&["a", "b"], Duration::from_secs(20));
    assert!(
        wait_until(Duration::from_secs(5), || waiting(&c, "a").is_none()
            && waiting(&c, "b").is_none()),
        "a wait outlived its end: a {:?}, b {:?}",
        waiting(&c, "a"),
        waiting(&c, "b")
    );
    // Each wait was logged once, with its end.
    let restarted = c.node(&master).last_start_log();
    assert_eq!(
        restarted
            .matches(&format!("waiting for nodes/{master}.json"))
            .count(),
        1,
        "{restarted}"
    );
    assert!(restarted.contains("at the latest"), "{restarted}");
    let standby_log = c.node(standby).log();
    assert_eq!(
        standby_log
            .matches(&format!("waiting for the lease of {master} epoch {epoch}"))
            .count(),
        1,
        "{standby_log}"
    );
    c.assert_safe();
}

/// Starts a lone node on a fresh store, its standard error a file or (`on_a_terminal`) a
/// pseudo-terminal, waits for its first MASTER line in the log, stops it and returns the raw log bytes.
fn raw_log(no_color: Option<&str>, on_a_terminal: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    tenure_tests::init_store(store.to_str().unwrap(), "2s", &[], &[]);
    let log = dir.path().join("node.log");
    let port = tenure_tests::cluster::free_port();
    let args = tenure_tests::spawn::run_args("a", store.to_str().unwrap(), port, "2s", "200ms");
    let mut cmd = if on_a_terminal {
        // util-linux `script` runs the command on a pseudo-terminal and copies what it
        // printed into the log file.
        let line = std::iter::once(tenure_bin().display().to_string())
            .chain(args)
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new("script");
        cmd.args(["-q", "-f", "-e", "-c", &line]).arg(&log);
        // script's own notes ("Session terminated…") are not the node's log.
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    } else {
        let mut cmd = Command::new(tenure_bin());
        cmd.args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        cmd
    };
    cmd.stdin(Stdio::null()).env_remove("NO_COLOR");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TENURE_") {
            cmd.env_remove(k);
        }
    }
    if let Some(v) = no_color {
        cmd.env("NO_COLOR", v);
    }
    tenure_tests::spawn::die_with_spawner(&mut cmd);
    let mut child = cmd.spawn().expect("spawn");
    let promoted = wait_until(Duration::from_secs(15), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("MASTER"))
    });
    // SIGTERM to the whole command (script forwards it to its child's terminal session).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = wait_until(Duration::from_secs(10), || {
        child.try_wait().ok().flatten().is_some()
    });
    let _ = child.kill();
    let _ = child.wait();
    let bytes = std::fs::read(&log).unwrap_or_default();
    assert!(
        promoted,
        "no MASTER in the log:\n{}",
        String::from_utf8_lossy(&bytes)
    );
    bytes
}

#[test]
fn colour_codes_only_on_a_terminal_and_never_with_no_color() {
    let _serial = serial();
    let has_escape = |b: &[u8]| b.contains(&0x1b);
    let to_file = raw_log(None, false);
    assert!(
        !has_escape(&to_file),
        "a log written to a file has colour codes:\n{}",
        String::from_utf8_lossy(&to_file)
    );
    let on_tty = raw_log(None, true);
    assert!(
        has_escape(&on_tty),
        "no colour on a terminal:\n{}",
        String::from_utf8_lossy(&on_tty)
    );
    let no_color = raw_log(Some("1"), true);
    assert!(
        !has_escape(&no_color),
        "NO_COLOR=1 still coloured:\n{}",
        String::from_utf8_lossy(&no_color)
    );
}
