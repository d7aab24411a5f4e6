//! Failover end to end on an object store: the directory backend's scenarios (kill -9,
//! SIGTERM, SIGSTOP of the master, five nodes started at once; `tenure_tests::scenarios`)
//! against a real S3 server, moto on 127.0.0.1, with the same checker and bounds.
//! T = 2 s, p = 200 ms (the storage timeout defaults to p).
//!
//! Timing-sensitive: run with `--test-threads=1` (each test also holds `serial()`).

use tenure_tests::s3::s3_cluster;
use tenure_tests::{Timing, scenarios, serial};

#[test]
fn s3_kill9_of_the_master_fails_over_within_t_plus_2p() {
    let _serial = serial();
    let Some(mut c) = s3_cluster(Timing::standard(), "kill9") else {
        return;
    };
    scenarios::kill9_fails_over(&mut c);
}

#[test]
fn s3_sigterm_of_the_master_hands_over_within_p() {
    let _serial = serial();
    let Some(mut c) = s3_cluster(Timing::standard(), "sigterm") else {
        return;
    };
    scenarios::sigterm_hands_over(&mut c);
}

#[test]
fn s3_sigstop_of_the_master_self_fences_and_a_standby_takes_over() {
    let _serial = serial();
    let Some(mut c) = s3_cluster(Timing::standard(), "sigstop") else {
        return;
    };
    // No lock to avoid: an object store's conditional write holds nothing while frozen.
    scenarios::sigstop_self_fences(&mut c, scenarios::freeze_now);
}

#[test]
fn s3_five_nodes_started_together_elect_exactly_one_master() {
    let _serial = serial();
    let Some(mut c) = s3_cluster(Timing::standard(), "five") else {
        return;
    };
    scenarios::five_started_together_elect_one(&mut c);
}

/// Request economy, counted by the S3 server itself (moto's request recorder; each node signs
/// with its own access key): per poll a standby sends one GET of the lease and its own
/// heartbeat PUT, the master one conditional PUT of the lease and its heartbeat, and every node
/// lists `nodes/` (and reads each record) only every max(1, T/(4p)) polls, here every 2.
#[test]
fn s3_request_economy_per_poll() {
    use std::time::{Duration, Instant};
    use tenure_tests::NodeSpec;
    use tenure_tests::expect::settle_timeout;
    use tenure_tests::s3::{Recorder, bucket_of, tally};
    let _serial = serial();
    let tm = Timing::standard();
    let Some(mut c) = s3_cluster(tm, "economy") else {
        return;
    };
    let three = scenarios::THREE;
    for n in three {
        c.start(NodeSpec::new(n).env("AWS_ACCESS_KEY_ID", n));
    }
    let (master, _) = c.wait_stable_master(&three, settle_timeout(&tm));
    // Past start-up, a nudge or two and the first scans.
    tenure_tests::observe_for(4 * tm.p);
    let endpoint = tenure_persistence::moto::endpoint().expect("moto is running");
    let polls = 25u32;
    let started = Instant::now();
    let rec = Recorder::start(&endpoint);
    tenure_tests::observe_for(tm.p * polls);
    let recorded = rec.stop(&bucket_of(&c));
    let window = started.elapsed();
    let counts = tally(&recorded, "tenure");
    // Rounds start every p at most; the recording window is a little longer than polls·p.
    let rounds = (window.as_nanos() / tm.p.as_nanos()) as usize + 1;
    let scan_every = (tm.t.as_nanos() / 4 / tm.p.as_nanos()).clamp(1, 10) as usize;
    let scans_max = rounds / scan_every + 2;
    let get = |node: &str, kind: &str| {
        counts
            .get(node)
            .and_then(|k| k.get(kind))
            .copied()
            .unwrap_or(0)
    };
    let report = format!("{counts:#?} over {window:?} ({rounds} rounds at most)");
    eprintln!("requests per node over {window:?}: {counts:?}");
    for n in three {
        let kinds = counts
            .get(n)
            .unwrap_or_else(|| panic!("no requests from {n}: {report}"));
        for (kind, count) in kinds {
            assert!(
                !kind.starts_with("other"),
                "{n} sent {count} × {kind} in steady state: {report}"
            );
        }
        assert!(
            get(n, "heartbeat PUT") <= rounds && get(n, "heartbeat PUT") + 3 >= polls as usize,
            "{n}: heartbeats {}: {report}",
            get(n, "heartbeat PUT")
        );
        assert!(
            get(n, "nodes LIST") <= scans_max && get(n, "nodes LIST") >= 1,
            "{n}: {} listings, at most {scans_max}: {report}",
            get(n, "nodes LIST")
        );
        // A scan's listing may fall just before the recording started.
        assert!(
            get(n, "node GET") <= 3 * (get(n, "nodes LIST") + 1),
            "{n}: more record reads than 3 per listing: {report}"
        );
        if n == master {
            assert_eq!(
                get(n, "lease GET"),
                0,
                "the master read the lease: {report}"
            );
            assert!(
                get(n, "lease PUT") <= rounds && get(n, "lease PUT") + 3 >= polls as usize,
                "master {n}: {} renewals: {report}",
                get(n, "lease PUT")
            );
        } else {
            assert_eq!(
                get(n, "lease PUT"),
                0,
                "standby {n} wrote the lease: {report}"
            );
            assert!(
                get(n, "lease GET") <= rounds && get(n, "lease GET") + 3 >= polls as usize,
                "standby {n}: {} lease reads: {report}",
                get(n, "lease GET")
            );
        }
    }
    // Heartbeats are each node's own: one key per node.
    let hb_keys: std::collections::BTreeSet<_> = recorded
        .iter()
        .filter(|r| r.kind("tenure") == "heartbeat PUT")
        .map(|r| (r.access_key.clone(), r.key.clone()))
        .collect();
    for (node, key) in &hb_keys {
        assert_eq!(key, &format!("tenure/nodes/{node}.json"), "{hb_keys:?}");
    }
    // No write repeats the bytes before it (an S3 ETag is the MD5 of the body: a repeat would
    // keep the version, and a stale conditional write would pass).
    let mut last: std::collections::HashMap<&str, &str> = Default::default();
    for r in recorded.iter().filter(|r| r.method == "PUT") {
        assert!(!r.body.is_empty(), "a PUT of {} without a body", r.key);
        let before = last.insert(&r.key, &r.body);
        assert_ne!(
            before,
            Some(r.body.as_str()),
            "two consecutive writes of {} had the same bytes",
            r.key
        );
    }
    assert!(window < tm.p * polls + Duration::from_secs(2));
    c.assert_safe();
}
