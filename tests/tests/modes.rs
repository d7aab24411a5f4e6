//! Start-up mode rules and refusals, end to end. T = 2 s, p = 200 ms.
//!
//! Timing-sensitive: run with `cargo test -p tenure-tests -- --test-threads=1`.

use std::time::{Duration, Instant};
use tenure_tests::expect::{
    assert_kept_answering, assert_never_master_since, assert_takeover_within_bounds, expect_exit,
    refusal_timeout, settle_timeout,
};
use tenure_tests::{Cluster, NodeSpec, observe_for, serial};

/// Starts `node-a` in auto mode and waits until it is MASTER. Returns its epoch.
fn cluster_with_master() -> (Cluster, u64) {
    let mut c = Cluster::standard();
    let tm = c.timing;
    c.start(NodeSpec::new("node-a"));
    let (m, e) = c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    assert_eq!(m, "node-a");
    (c, e)
}

/// The log of `node`'s current start, without the harness's own command line.
fn node_output(c: &Cluster, node: &str) -> String {
    let log = c.node(node).last_start_log();
    match log.split_once('\n') {
        Some((_, rest)) => rest.to_string(),
        None => String::new(),
    }
}

fn assert_output_contains(c: &Cluster, node: &str, needle: &str) {
    let out = node_output(c, node);
    assert!(
        out.to_lowercase().contains(&needle.to_lowercase()),
        "{node}'s output does not mention {needle:?}:\n{out}"
    );
}

#[test]
fn master_mode_is_refused_while_a_live_master_exists() {
    let _serial = serial();
    let (mut c, _) = cluster_with_master();
    let tm = c.timing;
    let from = Instant::now();
    c.start(NodeSpec::new("node-b").mode("master"));
    let code = expect_exit(&mut c, "node-b", refusal_timeout(&tm));
    assert_eq!(code, 1, "--mode master with a live master: exit code");
    assert_output_contains(&c, "node-b", "a live master exists");
    let h = c.history();
    assert_kept_answering(
        &h,
        "node-a",
        from,
        Instant::now(),
        "MASTER",
        Duration::from_millis(500),
    );
    assert_never_master_since(&h, "node-b", from);
    c.assert_safe();
}

#[test]
fn master_mode_on_an_empty_store_becomes_master() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    c.start(NodeSpec::new("node-a").mode("master"));
    let (m, _) = c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    assert_eq!(m, "node-a");
    c.assert_safe();
}

#[test]
fn standby_mode_on_an_empty_store_is_refused() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let from = Instant::now();
    c.start(NodeSpec::new("node-a").mode("standby"));
    let code = expect_exit(&mut c, "node-a", refusal_timeout(&tm));
    assert_eq!(code, 1, "--mode standby on an empty store: exit code");
    assert_output_contains(&c, "node-a", "no master");
    assert_never_master_since(&c.history(), "node-a", from);
    c.assert_safe();
}

#[test]
fn standby_mode_with_allow_no_master_runs_as_standby() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    c.start(
        NodeSpec::new("node-a")
            .mode("standby")
            .arg("--allow-no-master"),
    );
    let first = c.wait_answer("node-a", "STANDBY", settle_timeout(&tm));
    // It runs as STANDBY: no cold-start promotion of a standby-mode node.
    observe_for(tm.t + 2 * tm.p);
    assert_kept_answering(
        &c.history(),
        "node-a",
        first.sent,
        Instant::now(),
        "STANDBY",
        Duration::from_millis(500),
    );
    assert!(
        c.node_mut("node-a").is_running(),
        "node-a exited after answering STANDBY"
    );
    c.assert_safe();
}

#[test]
fn hot_backup_is_never_promoted_even_when_alone() {
    let _serial = serial();
    let (mut c, _) = cluster_with_master();
    let tm = c.timing;
    c.start(NodeSpec::new("node-b").mode("hot-backup"));
    c.wait_answer("node-b", "HOT_BACKUP", settle_timeout(&tm));
    c.wait_stable_master(&["node-a", "node-b"], settle_timeout(&tm));

    let killed_at = c.node_mut("node-a").kill9();
    let window = tm.t + 4 * tm.p;
    observe_for(window);
    let h = c.history();
    assert_never_master_since(&h, "node-b", killed_at);
    assert_kept_answering(
        &h,
        "node-b",
        killed_at,
        killed_at + window,
        "HOT_BACKUP",
        Duration::from_millis(500),
    );
    assert!(
        c.node_mut("node-b").is_running(),
        "node-b exited after the master died"
    );
    c.assert_safe();
}

#[test]
fn hot_standby_reports_hot_standby_and_is_promoted() {
    let _serial = serial();
    let (mut c, epoch) = cluster_with_master();
    let tm = c.timing;
    c.start(NodeSpec::new("node-b").mode("hot-standby"));
    c.wait_answer("node-b", "HOT_STANDBY", settle_timeout(&tm));
    c.wait_stable_master(&["node-a", "node-b"], settle_timeout(&tm));

    let killed_at = c.node_mut("node-a").kill9();
    let onset = c.wait_takeover(
        killed_at,
        &["node-a"],
        tm.max_takeover() + Duration::from_secs(3),
    );
    assert_eq!(onset.node, "node-b");
    assert_takeover_within_bounds(&c.history(), &onset, killed_at, &tm);
    assert!(onset.epoch.unwrap_or(0) > epoch);
    c.assert_safe();
}

#[test]
fn disabled_mode_is_refused_while_a_live_lease_exists() {
    let _serial = serial();
    let (mut c, _) = cluster_with_master();
    let tm = c.timing;
    let from = Instant::now();
    c.start(NodeSpec::new("node-c").mode("disabled"));
    let code = expect_exit(&mut c, "node-c", refusal_timeout(&tm));
    assert_ne!(code, 0, "--mode disabled with a live lease must be refused");
    let h = c.history();
    assert_never_master_since(&h, "node-c", from);
    assert_kept_answering(
        &h,
        "node-a",
        from,
        Instant::now(),
        "MASTER",
        Duration::from_millis(500),
    );
    c.assert_safe();
}

#[test]
fn a_second_process_with_a_live_nodes_name_is_refused() {
    let _serial = serial();
    let (mut c, _) = cluster_with_master();
    let tm = c.timing;
    let from = Instant::now();
    c.start(NodeSpec::new("node-a").label("node-a-duplicate"));
    let code = expect_exit(&mut c, "node-a-duplicate", refusal_timeout(&tm));
    assert_eq!(code, 1, "a duplicate node name: exit code");
    assert_output_contains(&c, "node-a-duplicate", "duplicate");
    let h = c.history();
    assert_never_master_since(&h, "node-a-duplicate", from);
    assert_kept_answering(
        &h,
        "node-a",
        from,
        Instant::now(),
        "MASTER",
        Duration::from_millis(500),
    );
    assert!(c.node_mut("node-a").is_running());
    c.assert_safe();
}

#[test]
fn a_node_name_with_whitespace_is_a_usage_error() {
    let _serial = serial();
    let mut c = Cluster::standard();
    c.start(NodeSpec::new("node a").label("node-ws"));
    let code = expect_exit(&mut c, "node-ws", Duration::from_secs(10));
    assert_eq!(code, 2, "a node name with whitespace: exit code");
    assert_output_contains(&c, "node-ws", "whitespace");
}

#[test]
fn a_different_heartbeat_timeout_than_the_clusters_is_a_usage_error() {
    let _serial = serial();
    let (mut c, _) = cluster_with_master();
    c.node_mut("node-a").kill9();
    c.node_mut("node-a")
        .restart_with(|s| s.heartbeat_timeout("3s"));
    let code = expect_exit(&mut c, "node-a", Duration::from_secs(10));
    assert_eq!(
        code, 2,
        "restart with --heartbeat-timeout 3s in a 2 s cluster: exit code"
    );
    let out = node_output(&c, "node-a");
    assert!(
        ["2s", "2000", "2 s", "2.0"].iter().any(|v| out.contains(v)),
        "the message does not name the stored heartbeat timeout (2s):\n{out}"
    );
}

#[test]
fn timings_that_break_the_safety_inequality_are_a_usage_error() {
    let _serial = serial();
    let mut c = Cluster::standard();
    c.start(NodeSpec::new("node-a").args(&["--renew-deadline", "1900ms"]));
    let code = expect_exit(&mut c, "node-a", Duration::from_secs(10));
    assert_eq!(
        code,
        2,
        "--heartbeat-timeout 2s --renew-deadline 1900ms: exit code; output:\n{}",
        node_output(&c, "node-a")
    );
    assert_never_master_since(&c.history(), "node-a", c.origin());
}
