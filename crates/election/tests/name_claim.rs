//! Taking over a node name at start-up: the record of a previous instance under our name must
//! stand still for T. A live process moves its `seq` forward, so a change means a duplicate
//! (exit 1); the same instance's record gone back to an earlier `seq` is an older copy written
//! back (a store rollback, found by the fault campaign), which only restarts the watch, as
//! does a later copy written back again: only a seq beyond the highest seen is a live writer.

use std::time::Duration;
use tenure_election::Nanos;
use tenure_election::config::Config;
use tenure_election::records::{self, ClusterRecord, HeartbeatRecord};
use tenure_election::types::{Mode, NodeState};
use tenure_store::Store;
use tenure_testkit::harness::Cluster;

const STEP: Duration = Duration::from_millis(10);

fn cfg() -> Config {
    Config::with_defaults(
        "b",
        "b-new",
        "http://127.0.0.1:2",
        Duration::from_secs(1),
        Duration::from_millis(100),
    )
}

fn old_record(seq: u64) -> Vec<u8> {
    records::encode(&HeartbeatRecord {
        format: records::FORMAT,
        cluster_id: "c".into(),
        name: "b".into(),
        instance_id: "b-old".into(),
        seq,
        status: NodeState::Standby,
        mode: Mode::Auto,
        priority: 0,
        app_version: None,
        uri: "http://127.0.0.1:2".into(),
        local_timestamp_ms: 0,
        epoch: None,
        switchover_request: None,
        poll_period_ms: Some(100),
        max_epoch: None,
        heartbeat_timeout_ms: Some(1_000),
        renew_interval_ms: None,
        heartbeat_interval_ms: None,
    })
}

/// A cluster whose node `b` (instance `b-old`, seq 8) is gone, and the new `b` just started.
fn cluster() -> Cluster {
    let mut c = Cluster::new();
    let cluster = ClusterRecord {
        format: records::FORMAT,
        cluster_id: "c".into(),
        heartbeat_timeout_ms: 1_000,
        clock_drift_ppm: 10_000,
        created_at: "2026-12-02T00:00:00Z".into(),
        created_by: "a".into(),
        fresh: false,
    };
    c.store
        .create(records::CLUSTER_KEY, &records::encode(&cluster))
        .unwrap();
    c.store
        .create(&records::node_key("b"), &old_record(8))
        .unwrap();
    c.add(cfg());
    c
}

/// Steps until `until_ms`, or until the node exits; returns its exit (code, message) if any.
fn run(c: &mut Cluster, until_ms: u64) -> Option<(i32, String)> {
    let until = Nanos(until_ms * 1_000_000);
    while c.t < until && c.nodes[0].alive {
        c.step(STEP);
    }
    c.nodes[0].exit.clone()
}

/// The store (rolled back, or a live duplicate) shows the previous instance at this seq.
fn put_old(c: &Cluster, seq: u64) {
    c.store
        .put(&records::node_key("b"), &old_record(seq))
        .unwrap();
}

#[test]
fn an_older_copy_of_the_previous_instances_record_is_not_a_duplicate() {
    let mut c = cluster();
    assert_eq!(run(&mut c, 400), None);
    // The store rolls back: the previous instance's record at an earlier seq.
    put_old(&c, 4);
    let exit = run(&mut c, 3_000);
    assert_eq!(
        exit, None,
        "a rolled-back record taken for a live duplicate"
    );
    let snap = c.snapshot(0);
    assert_eq!(snap.base_state, NodeState::Standby, "{snap:?}");
    // The name is ours now: our record, our instance.
    let ours = c.store.read(&records::node_key("b")).unwrap();
    let tenure_store::ReadResult::Present(r) = ours else {
        panic!("no record of b");
    };
    let h: HeartbeatRecord = records::parse(&r.bytes).unwrap();
    assert_eq!(h.instance_id, "b-new");
}

#[test]
fn a_record_that_moves_forward_is_a_live_duplicate() {
    let mut c = cluster();
    assert_eq!(run(&mut c, 400), None);
    put_old(&c, 9);
    let exit = run(&mut c, 3_000);
    let (code, message) = exit.expect("a live process under our name must stop this one");
    assert_eq!(code, 1);
    assert!(message.contains("duplicate node name"), "{message}");
}

/// The previous instance's record goes back from seq 8 to 4 while the new node watches it,
/// then shows `second`; returns the cluster and the new node's exit, if any.
fn two_rollbacks(second: u64) -> (Cluster, Option<(i32, String)>) {
    let mut c = cluster();
    assert_eq!(run(&mut c, 400), None);
    put_old(&c, 4);
    assert_eq!(run(&mut c, 700), None);
    put_old(&c, second);
    let exit = run(&mut c, 3_500);
    (c, exit)
}

/// Two rollbacks in a row (campaign trial 0x0a5d2ce31409e744): the record goes back from seq 8
/// to 4, then a second, later copy writes seq 8 back. 8 is not beyond what this node already
/// saw, so it is still an old copy, not a live process.
#[test]
fn a_copy_written_back_again_is_not_a_duplicate() {
    let (mut c, exit) = two_rollbacks(8);
    assert_eq!(
        exit, None,
        "a record written back again taken for a live duplicate"
    );
    assert_eq!(c.snapshot(0).base_state, NodeState::Standby);
}

/// ...but a seq beyond the highest this node saw is a live writer, even after a rollback.
#[test]
fn a_record_beyond_the_highest_seq_seen_is_a_live_duplicate() {
    let (_, exit) = two_rollbacks(9);
    let (code, message) = exit.expect("a live writer under our name");
    assert_eq!(code, 1);
    assert!(message.contains("duplicate node name"), "{message}");
}
