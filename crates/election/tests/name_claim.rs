//! Taking over a node name at start-up: the record of a previous instance under our name must
//! stand still for T. A live process moves its `seq` forward, so a change means a duplicate
//! (exit 1); the same instance's record gone back to an earlier `seq` is an older copy written
//! back (a store rollback, found by the fault campaign), which only restarts the watch, as
//! does a later copy written back again: only a seq beyond the highest seen is a live writer.

use std::time::Duration;
use tenure_election::config::Config;
use tenure_election::driver::execute;
use tenure_election::machine::{Event, Machine, Now};
use tenure_election::records::{self, ClusterRecord, HeartbeatRecord};
use tenure_election::types::{Mode, NodeState};
use tenure_election::{Nanos, Snapshot};
use tenure_store::Store;
use tenure_testkit::MemoryStore;

const MS: u64 = 1_000_000;

fn now(t: u64) -> Now {
    Now {
        mono: Nanos(t * MS),
        wall_ms: 1_700_000_000_000 + t as i64,
    }
}

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
    })
}

/// A cluster whose node `b` (instance `b-old`, seq 8) is gone.
fn store() -> MemoryStore {
    let store = MemoryStore::new();
    let cluster = ClusterRecord {
        format: records::FORMAT,
        cluster_id: "c".into(),
        heartbeat_timeout_ms: 1_000,
        clock_drift_ppm: 10_000,
        created_at: "2026-12-02T00:00:00Z".into(),
        created_by: "a".into(),
        fresh: false,
    };
    store
        .create(records::CLUSTER_KEY, &records::encode(&cluster))
        .unwrap();
    store
        .create(&records::node_key("b"), &old_record(8))
        .unwrap();
    store
}

/// Drives the machine from `from` to `until` ms; returns the exit (code, message) if any.
fn run(m: &mut Machine, store: &MemoryStore, from: u64, until: u64) -> Option<(i32, String)> {
    let mut t = from;
    while t < until {
        m.handle_timeout(now(t));
        while let Some(op) = m.poll_op(now(t)) {
            let r = execute(store, op);
            m.handle_op_result(now(t), r);
        }
        while let Some(ev) = m.poll_event() {
            if let Event::Exit { code, message } = ev {
                return Some((code, message));
            }
        }
        t += 10;
    }
    None
}

fn snapshot(m: &mut Machine, t: u64) -> Snapshot {
    m.snapshot(now(t))
}

#[test]
fn an_older_copy_of_the_previous_instances_record_is_not_a_duplicate() {
    let store = store();
    let mut m = Machine::new(cfg(), now(0));
    assert_eq!(run(&mut m, &store, 0, 400), None);
    // The store rolls back: the previous instance's record at an earlier seq.
    store.put(&records::node_key("b"), &old_record(4)).unwrap();
    let exit = run(&mut m, &store, 400, 3_000);
    assert_eq!(
        exit, None,
        "a rolled-back record taken for a live duplicate"
    );
    let snap = snapshot(&mut m, 3_000);
    assert_eq!(snap.base_state, NodeState::Standby, "{snap:?}");
    // The name is ours now: our record, our instance.
    let ours = store.read(&records::node_key("b")).unwrap();
    let tenure_store::ReadResult::Present(r) = ours else {
        panic!("no record of b");
    };
    let h: HeartbeatRecord = records::parse(&r.bytes).unwrap();
    assert_eq!(h.instance_id, "b-new");
}

#[test]
fn a_record_that_moves_forward_is_a_live_duplicate() {
    let store = store();
    let mut m = Machine::new(cfg(), now(0));
    assert_eq!(run(&mut m, &store, 0, 400), None);
    store.put(&records::node_key("b"), &old_record(9)).unwrap();
    let exit = run(&mut m, &store, 400, 3_000);
    let (code, message) = exit.expect("a live process under our name must stop this one");
    assert_eq!(code, 1);
    assert!(message.contains("duplicate node name"), "{message}");
}

/// Two rollbacks in a row (campaign trial 0x0a5d2ce31409e744): the record goes back from seq 8
/// to 4, then a second, later copy writes seq 8 back. 8 is not beyond what this node already
/// saw, so it is still an old copy, not a live process.
#[test]
fn a_copy_written_back_again_is_not_a_duplicate() {
    let store = store();
    let mut m = Machine::new(cfg(), now(0));
    assert_eq!(run(&mut m, &store, 0, 400), None);
    store.put(&records::node_key("b"), &old_record(4)).unwrap();
    assert_eq!(run(&mut m, &store, 400, 700), None);
    store.put(&records::node_key("b"), &old_record(8)).unwrap();
    let exit = run(&mut m, &store, 700, 3_500);
    assert_eq!(
        exit, None,
        "a record written back again taken for a live duplicate"
    );
    assert_eq!(snapshot(&mut m, 3_500).base_state, NodeState::Standby);
}

/// ...but a seq beyond the highest this node saw is a live writer, even after a rollback.
#[test]
fn a_record_beyond_the_highest_seq_seen_is_a_live_duplicate() {
    let store = store();
    let mut m = Machine::new(cfg(), now(0));
    assert_eq!(run(&mut m, &store, 0, 400), None);
    store.put(&records::node_key("b"), &old_record(4)).unwrap();
    assert_eq!(run(&mut m, &store, 400, 700), None);
    store.put(&records::node_key("b"), &old_record(9)).unwrap();
    let (code, message) = run(&mut m, &store, 700, 3_500).expect("a live writer under our name");
    assert_eq!(code, 1);
    assert!(message.contains("duplicate node name"), "{message}");
}
