//! A takeover whose lease write keeps failing (e.g. the old master froze holding the lease
//! lock) retries with the epoch it already allocated instead of creating a new
//! `epochs/<n>.json` at every attempt (found by the fault campaign: 283 epoch files in 28 s).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use tenure_election::config::Config;
use tenure_election::machine::Op;
use tenure_election::records::{self, ClusterRecord, LeaseRecord};
use tenure_store::{LEASE_KEY, Store, StoreError};
use tenure_testkit::harness::Cluster;

const STEP: Duration = Duration::from_millis(10);

fn cfg() -> Config {
    Config::with_defaults(
        "b",
        "b-1",
        "http://127.0.0.1:2",
        Duration::from_secs(1),
        Duration::from_millis(100),
    )
}

#[test]
fn failed_takeovers_reuse_the_allocated_epoch() {
    let mut c = Cluster::new();
    let store = c.store.clone();
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

    // Every epoch file created, and every lease write failed while `fail` says so.
    let (creates, fail) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(true)));
    let (counted, failing) = (creates.clone(), fail.clone());
    c.intercept(move |_, op| {
        if matches!(op, Op::Create(k, _) if k.starts_with(records::EPOCHS_PREFIX)) {
            counted.set(counted.get() + 1);
        }
        let lease_write = matches!(op, Op::Create(k, _) | Op::Replace(k, _, _) if k == LEASE_KEY);
        (failing.get() && lease_write)
            .then(|| Err(StoreError::Unavailable("the lease lock is held".into())))
    });
    let b = c.add(cfg());

    // For 10 s (10 T) every takeover write fails: one epoch file, however many attempts.
    c.run_for(Duration::from_millis(10_050), STEP);
    assert_eq!(creates.get(), 1, "a new epoch file per failed attempt");
    assert_eq!(c.snapshot(b).own_epoch, None);
    // Then the write goes through, with the epoch allocated first.
    fail.set(false);
    c.run_for(Duration::from_millis(1_950), STEP);
    assert_eq!(
        creates.get(),
        1,
        "a new epoch file after the write went through"
    );
    let snap = c.snapshot(b);
    assert_eq!(snap.own_epoch, Some(6), "{snap:?}");
}
