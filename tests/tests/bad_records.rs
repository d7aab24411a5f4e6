//! Bad records in the store (DESIGN §3.9): never a crash, never a reason to promote early.
//! T = 2 s, p = 200 ms. Run with `--test-threads=1`.

use std::time::{Duration, Instant};
use tenure_tests::cluster::write_file;
use tenure_tests::expect::{assert_kept_answering, assert_takeover_within_bounds, settle_timeout};
use tenure_tests::{Cluster, observe_for, serial};

const THREE: [&str; 3] = ["node-a", "node-b", "node-c"];

/// Deterministic pseudo-random bytes (xorshift64).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn plant_bad_records(c: &Cluster) {
    let store = c.store();
    write_file(
        &store.join("nodes/x.json"),
        br#"{"format":1,"clusterId":"abc","name":"x","instanceId":"#,
    );
    let mut huge = br#"{"format":1,"name":"huge","pad":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    huge.extend_from_slice(br#""}"#);
    write_file(&store.join("nodes/huge.json"), &huge);
    write_file(
        &store.join("nodes/bin.json"),
        &noise(4096, 0x9e37_79b9_7f4a_7c15),
    );
    write_file(
        &store.join("epochs/zzz.json"),
        b"\x00garbage{{{ not an epoch",
    );
    write_file(&store.join("nodes/empty.json"), b"");
    write_file(
        &store.join("cluster.json.bak"),
        b"this is not json at all\n\xff\xfe",
    );
}

#[test]
fn bad_records_neither_crash_nodes_nor_move_the_master() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    c.start_all(&THREE);
    let (master, epoch) = c.wait_stable_master(&THREE, settle_timeout(&tm));

    let planted_at = Instant::now();
    plant_bad_records(&c);
    observe_for(3 * tm.t);
    let until = Instant::now();

    for n in THREE {
        assert!(
            c.node_mut(n).is_running(),
            "{n} died after bad records were written; log:\n{}",
            c.node(n).log_tail(40)
        );
    }
    let h = c.history();
    assert_kept_answering(
        &h,
        &master,
        planted_at,
        until,
        "MASTER",
        Duration::from_millis(500),
    );
    let epochs: Vec<_> = h
        .of(&master)
        .filter(|s| s.sent >= planted_at && s.is_master())
        .filter(|s| s.epoch != Some(epoch))
        .collect();
    assert!(
        epochs.is_empty(),
        "the master's epoch changed from {epoch} to {:?} after bad records",
        epochs[0].epoch
    );
    for n in THREE.iter().filter(|n| **n != master) {
        assert_kept_answering(
            &h,
            n,
            planted_at,
            until,
            "STANDBY",
            Duration::from_millis(500),
        );
    }
    for n in THREE {
        let states = c.node(n).states();
        let states = states.unwrap_or_else(|| panic!("{n}: GET /v1/server/ha/states failed"));
        assert!(
            states.get("nodes").is_some_and(|v| v.is_object()),
            "{n}: /ha/states has no nodes object: {states}"
        );
    }

    // Failover still works, within the usual bounds.
    let killed_at = c.node_mut(&master).kill9();
    let onset = c.wait_takeover(
        killed_at,
        &[&master],
        tm.max_takeover() + Duration::from_secs(3),
    );
    assert_takeover_within_bounds(&c.history(), &onset, killed_at, &tm);
    assert!(onset.epoch.unwrap_or(0) > epoch);
    c.assert_safe();
}
