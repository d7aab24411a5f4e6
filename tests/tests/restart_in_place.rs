//! Restart in place end to end (`--state-dir`, DESIGN §3.6): a node killed with SIGKILL and
//! started again on the same host takes its name, and its lease if it was master, back at
//! once instead of after T; a second process of that name on this host is refused at once;
//! and an `--exec` child left running by the killed process is stopped before the restarted
//! one starts its own. T = 10 s, p = 200 ms, so a resume cannot pass for a failover.

use std::time::Duration;
use tenure_tests::cluster::NodeSpec;
use tenure_tests::expect::{expect_exit, settle_timeout};
use tenure_tests::scenarios;
use tenure_tests::{Cluster, Timing, serial, wait_until};

fn timing() -> Timing {
    Timing {
        t: Duration::from_secs(10),
        ..Timing::standard()
    }
}

const TWO: [&str; 2] = ["node-a", "node-b"];

fn start(c: &mut Cluster, exec: Option<&str>) {
    let state = c.root().join("state");
    for n in TWO {
        let mut spec = NodeSpec::new(n).args(&["--state-dir", &state.display().to_string()]);
        if let Some(cmd) = exec {
            spec = spec.args(&["--exec", cmd]);
        }
        c.start(spec);
    }
}

#[test]
fn a_killed_master_restarted_in_place_is_master_again_without_a_failover() {
    let _serial = serial();
    let mut c = Cluster::new(timing());
    start(&mut c, None);
    scenarios::restart_in_place(&mut c, &TWO);
}

#[test]
fn a_second_process_of_the_same_name_on_this_host_is_refused_at_once() {
    let _serial = serial();
    let mut c = Cluster::new(timing());
    start(&mut c, None);
    let tm = c.timing;
    let (master, _) = c.wait_stable_master(&TWO, settle_timeout(&tm));
    let state = c.root().join("state");
    c.start(
        NodeSpec::new(&master)
            .label("twin")
            .args(&["--state-dir", &state.display().to_string()]),
    );
    // At once: not after watching the record for T.
    let code = expect_exit(&mut c, "twin", tm.t / 2);
    assert_eq!(code, 1);
    let log = c.node("twin").log();
    assert!(
        log.contains("duplicate node name: another tenure on this host runs as"),
        "{log}"
    );
    c.wait_answer(&master, "MASTER", tm.p * 3);
    c.assert_safe();
}

/// The killed master's `--exec` child outlives it (its guard keeps it until the last lease
/// deadline); the restarted master stops it before it starts its own: never two at once.
#[test]
fn the_previous_exec_child_is_stopped_before_the_restarted_master_starts_one() {
    let _serial = serial();
    let mut c = Cluster::new(timing());
    let dir = c.root().join("exec");
    std::fs::create_dir_all(&dir).unwrap();
    // Each child records its pid, and an overlap if an earlier child still runs.
    let cmd = format!(
        "for p in $(cat {d}/pids 2>/dev/null); do kill -0 $p 2>/dev/null && echo $p >> {d}/overlaps; done; echo $$ >> {d}/pids; exec sleep 600",
        d = dir.display()
    );
    start(&mut c, Some(&cmd));
    let tm = c.timing;
    let (master, _) = c.wait_stable_master(&TWO, settle_timeout(&tm));
    let pids = || -> Vec<i32> {
        std::fs::read_to_string(dir.join("pids"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    assert!(
        wait_until(tm.t / 2, || pids().len() == 1),
        "no --exec child"
    );
    let first = pids()[0];
    let killed_at = std::time::Instant::now();
    c.node_mut(&master).restart();
    scenarios::answer_since(&c, &master, "MASTER", killed_at, tm.t / 2);
    assert!(
        wait_until(tm.t / 2, || pids().len() == 2),
        "the restarted master started no --exec child: {:?}",
        pids()
    );
    assert!(
        !dir.join("overlaps").exists(),
        "two --exec children ran at once: {}",
        std::fs::read_to_string(dir.join("overlaps")).unwrap_or_default()
    );
    // SAFETY: probing (signal 0) a pid the test recorded.
    assert_ne!(
        unsafe { libc::kill(first, 0) },
        0,
        "the first child still runs"
    );
    let log = c.node(&master).last_start_log();
    assert!(
        log.contains("still ran: stopped before this node may be master"),
        "{log}"
    );
    c.assert_safe();
}
