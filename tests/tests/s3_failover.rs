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

/// Restart in place on S3 (`--state-dir`): a killed master started again at once is master
/// again without a failover, a standby serves STANDBY again at once. T = 10 s.
#[test]
fn s3_a_killed_master_restarted_in_place_is_master_again_without_a_failover() {
    let _serial = serial();
    let timing = Timing {
        t: std::time::Duration::from_secs(10),
        ..Timing::standard()
    };
    let Some(mut c) = s3_cluster(timing, "restart") else {
        return;
    };
    let state = c.root().join("state").display().to_string();
    let names = ["node-a", "node-b"];
    for n in names {
        c.start(tenure_tests::cluster::NodeSpec::new(n).args(&["--state-dir", &state]));
    }
    scenarios::restart_in_place(&mut c, &names);
}

/// Request economy, counted by the S3 server itself (moto's request recorder; each node signs
/// with its own access key): per round a standby sends one GET of the lease, the master one
/// conditional PUT of the lease (R = p here: the storage timeout below leaves no room for
/// more); a standby writes its heartbeat every H = T/3 (a few rounds), the master not at all
/// while its state stands (its heartbeat rides in its lease); the known records are re-read
/// every H, `nodes/` is listed every 2T, cluster.json read every T (issue 18).
///
/// Counted per round where it can be, not per wall-clock period, so that a slow moto (on a
/// loaded machine) cannot fail it: each node's lease requests count its rounds (one lease step
/// per round; the next round starts at max(start + p, end of the previous)). The nodes get the
/// largest storage timeout the timing rules allow, so a slow answer is a slow call and not a
/// timeout; a call that failed all the same (each node's own `storageErrors`) may shift its
/// counts by one, and is discounted as such, nothing more. Upper bounds in wall-clock periods
/// (at most one round per p, one heartbeat per H − p/2) hold whatever the load.
#[test]
fn s3_request_economy_per_poll() {
    use std::time::Instant;
    use tenure_tests::NodeSpec;
    use tenure_tests::expect::settle_timeout;
    use tenure_tests::s3::{Recorder, bucket_of, tally};
    let _serial = serial();
    if tenure_testkit::moto::server() != "moto" {
        // The counts come from moto's request recorder, an API of moto's own.
        eprintln!(
            "not run on {}: it counts requests with moto's recorder",
            tenure_testkit::moto::server()
        );
        return;
    }
    let tm = Timing::standard();
    let Some(mut c) = s3_cluster(tm, "economy") else {
        return;
    };
    let three = scenarios::THREE;
    // D ≥ 2p + storage timeout with the default D = 2/3 T: 933 ms instead of p.
    let storage_timeout = tenure_tests::dur_arg(tm.t * 2 / 3 - 2 * tm.p);
    for n in three {
        c.start(
            NodeSpec::new(n)
                .env("AWS_ACCESS_KEY_ID", n)
                .args(&["--storage-timeout", &storage_timeout]),
        );
    }
    let (master, _) = c.wait_stable_master(&three, settle_timeout(&tm));
    // Past start-up, the greeting nudges and the listings they cause.
    tenure_tests::observe_for(4 * tm.p);
    let endpoint = tenure_testkit::moto::endpoint().expect("moto is running");
    let bucket = bucket_of(&c);
    // Failed storage calls of each node, from its own metrics.
    let storage_errors = |n: &str| -> u64 {
        let (status, body) = c
            .node(n)
            .get("/v1/server/ha/metrics")
            .unwrap_or_else(|| panic!("{n}: GET /v1/server/ha/metrics failed"));
        assert_eq!(status, 200, "{n}: /ha/metrics: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v.get("storageErrors")
            .and_then(|e| e.as_u64())
            .unwrap_or_else(|| panic!("{n}: no storageErrors in /ha/metrics: {body}"))
    };
    let errors_before: Vec<u64> = three.iter().map(|n| storage_errors(n)).collect();
    let polls = 30u32;
    let started = Instant::now();
    let rec = Recorder::start(&endpoint);
    tenure_tests::observe_for(tm.p * polls);
    let recorded = rec.stop(&bucket);
    let window = started.elapsed();
    let errors: Vec<u64> = three
        .iter()
        .zip(&errors_before)
        .map(|(n, before)| storage_errors(n) - before)
        .collect();
    let counts = tally(&recorded, "tenure");
    // Rounds start every p at most: an upper bound for any load.
    let rounds = (window.as_nanos() / tm.p.as_nanos()) as usize + 1;
    let h = tenure_election::config::Config::default_heartbeat_interval(tm.t, tm.p);
    // A heartbeat is due once H − p/2 has passed since the last (rounds start every p).
    let hb_max = (window.as_nanos() / (h - tm.p / 2).as_nanos()) as usize + 1;
    let get = |node: &str, kind: &str| {
        counts
            .get(node)
            .and_then(|k| k.get(kind))
            .copied()
            .unwrap_or(0)
    };
    let report = format!(
        "{counts:#?} over {window:?} ({rounds} periods of p, H = {h:?}; failed storage calls {:?})",
        three.iter().zip(&errors).collect::<Vec<_>>()
    );
    eprintln!("requests per node over {window:?}: {counts:?}; failed storage calls {errors:?}");
    for (n, e) in three
        .iter()
        .copied()
        .zip(errors.iter().map(|e| *e as usize))
    {
        let kinds = counts
            .get(n)
            .unwrap_or_else(|| panic!("no requests from {n}: {report}"));
        for (kind, count) in kinds {
            assert!(
                !kind.starts_with("other"),
                "{n} sent {count} × {kind} in steady state: {report}"
            );
        }
        // One lease step per round: the node's own rounds.
        let own_rounds = get(n, "lease GET") + get(n, "lease PUT");
        assert!(
            own_rounds <= rounds + e && own_rounds * 2 >= polls as usize,
            "{n}: {own_rounds} lease requests (rounds) in {window:?}: {report}"
        );
        let heartbeats = get(n, "heartbeat PUT");
        if n == master {
            // Its state stands still, so does its record: the lease carries its liveness.
            assert!(
                heartbeats <= e,
                "master {n} wrote {heartbeats} heartbeats while its state stood still: {report}"
            );
            // The master knows its lease: it reads it only to settle a renewal that failed.
            assert!(
                get(n, "lease GET") <= e,
                "the master read the lease {} times with {e} failed storage calls: {report}",
                get(n, "lease GET")
            );
        } else {
            assert_eq!(
                get(n, "lease PUT"),
                0,
                "standby {n} wrote the lease: {report}"
            );
            // Every H, not every round: at most one per H − p/2, and at least one per H + p
            // of its own rounds.
            let per = (h + tm.p).as_nanos() as usize;
            let least = own_rounds * tm.p.as_nanos() as usize / per;
            assert!(
                heartbeats <= hb_max && heartbeats + 1 + e >= least,
                "standby {n}: {heartbeats} heartbeats in {own_rounds} rounds, expected one per H = {h:?}: {report}"
            );
        }
        // Listings every 2T (a window shorter than that holds one at most, and a nudge's).
        let lists = get(n, "nodes LIST");
        let lists_max = (window.as_nanos() / (2 * tm.t).as_nanos()) as usize + 1;
        assert!(
            lists <= lists_max + e,
            "{n}: {lists} listings of nodes/ in {window:?}, at most one per 2T: {report}"
        );
        // The others' records re-read every H: two others at most (the master's not by the
        // standbys), plus what the listings read.
        let rereads_max = 2 * (hb_max + 1) + 3 * (lists + 1);
        assert!(
            get(n, "node GET") <= rereads_max,
            "{n}: {} record reads, more than {rereads_max}: {report}",
            get(n, "node GET")
        );
        assert!(
            get(n, "node GET") + 1 + e
                >= own_rounds * tm.p.as_nanos() as usize / (h + tm.p).as_nanos() as usize,
            "{n}: {} record reads in {own_rounds} rounds, expected the others' every H: {report}",
            get(n, "node GET")
        );
        // The store's identity (cluster.json) every T.
        let cluster_reads = get(n, "cluster GET");
        let cluster_max = (window.as_nanos() / (tm.t - tm.p / 2).as_nanos()) as usize + 1;
        assert!(
            cluster_reads <= cluster_max + e,
            "{n}: {cluster_reads} reads of cluster.json in {window:?}, more than one per T: {report}"
        );
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
    c.assert_safe();
}
