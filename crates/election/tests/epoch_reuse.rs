//! A takeover whose lease write keeps failing (e.g. the old master froze holding the lease
//! lock) retries with the epoch it already allocated instead of creating a new
//! `epochs/<n>.json` at every attempt (found by the fault campaign: 283 epoch files in 28 s).

use std::time::Duration;
use tenure_election::config::Config;
use tenure_election::driver::execute;
use tenure_election::machine::{Machine, Now, Op};
use tenure_election::records::{self, ClusterRecord, LeaseRecord};
use tenure_election::{Nanos, Snapshot};
use tenure_store::{LEASE_KEY, Store, StoreError};
use tenure_testkit::MemoryStore;

const MS: u64 = 1_000_000;

fn cfg() -> Config {
    Config::with_defaults(
        "b",
        "b-1",
        "http://127.0.0.1:2",
        Duration::from_secs(1),
        Duration::from_millis(100),
    )
}

/// Runs the machine against `store` from `from` to `until` (ms), failing every lease write
/// while `fail_lease` says so. Returns the epoch files created and the last snapshot.
fn run(
    m: &mut Machine,
    store: &MemoryStore,
    from: u64,
    until: u64,
    fail_lease: bool,
) -> (usize, Snapshot) {
    let mut creates = 0;
    let mut t = from;
    while t < until {
        let now = Now {
            mono: Nanos(t * MS),
            wall_ms: 1_700_000_000_000 + t as i64,
        };
        m.handle_timeout(now);
        while let Some(op) = m.poll_op(now) {
            let lease_write =
                matches!(&op, Op::Create(k, _) | Op::Replace(k, _, _) if k == LEASE_KEY);
            if matches!(&op, Op::Create(k, _) if k.starts_with(records::EPOCHS_PREFIX)) {
                creates += 1;
            }
            let r = if fail_lease && lease_write {
                Err(StoreError::Unavailable("the lease lock is held".into()))
            } else {
                execute(store, op)
            };
            m.handle_op_result(now, r);
        }
        t += 10;
    }
    let now = Now {
        mono: Nanos(t * MS),
        wall_ms: 1_700_000_000_000 + t as i64,
    };
    (creates, m.snapshot(now))
}

#[test]
fn failed_takeovers_reuse_the_allocated_epoch() {
    let store = MemoryStore::new();
    let mut m = Machine::new(
        cfg(),
        Now {
            mono: Nanos(0),
            wall_ms: 1_700_000_000_000,
        },
    );
    // A cluster whose master died holding epoch 5.
    let cluster = ClusterRecord {
        format: records::FORMAT,
        cluster_id: "c".into(),
        heartbeat_timeout_ms: 1_000,
        clock_drift_ppm: 10_000,
        created_at: "2026-11-22T00:00:00Z".into(),
        created_by: "a".into(),
        fresh: false,
    };
    store
        .create(records::CLUSTER_KEY, &records::encode(&cluster))
        .unwrap();
    let lease = LeaseRecord {
        format: records::FORMAT,
        cluster_id: "c".into(),
        epoch: 5,
        holder: "a".into(),
        instance_id: "a-1".into(),
        renew_seq: 9,
        released: false,
        successor: None,
        holder_uri: "http://127.0.0.1:1".into(),
        written_at_ms: 0,
        heartbeat_timeout_ms: None,
    };
    store.create(LEASE_KEY, &records::encode(&lease)).unwrap();
    store.create(&records::epoch_key(5), b"{}").unwrap();

    // For 10 s (10 T) every takeover write fails: one epoch file, however many attempts.
    let (creates, snap) = run(&mut m, &store, 0, 10_050, true);
    assert_eq!(creates, 1, "a new epoch file per failed attempt");
    assert_eq!(snap.own_epoch, None);
    // Then the write goes through, with the epoch allocated first.
    let (creates, snap) = run(&mut m, &store, 10_050, 12_000, false);
    assert_eq!(creates, 0);
    assert_eq!(snap.own_epoch, Some(6), "{snap:?}");
}
