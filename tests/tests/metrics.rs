//! `GET /metrics`: the lease-write (renewal) and storage latency histograms are recorded by the
//! driver and grow while the master renews; transitions are counted since start.
//! T = 2 s, p = 200 ms.

use tenure_tests::expect::settle_timeout;
use tenure_tests::{Cluster, NodeSpec, serial, wait_for};

/// The value of the sample line `name` (exact, labels included) in Prometheus text.
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn renew_latency_histogram_grows_while_master() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    c.start(NodeSpec::new("node-a"));
    c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    let scrape = || c.node("node-a").get("/metrics").map(|(_, b)| b);
    let first = scrape().expect("/metrics answers");
    for line in [
        "# TYPE tenure_renew_latency_seconds histogram",
        "# TYPE tenure_storage_latency_seconds histogram",
        "tenure_renew_latency_seconds_bucket{le=\"+Inf\"}",
        "tenure_is_master 1",
    ] {
        assert!(first.contains(line), "no {line:?} in:\n{first}");
    }
    let renewals = value(&first, "tenure_renew_latency_seconds_count").unwrap();
    let transitions = value(&first, "tenure_transitions_total").unwrap();
    assert!(
        transitions >= 2.0,
        "INITIALIZING -> STANDBY -> MASTER: {transitions}"
    );
    // A renewal every R: five more within 5R (+ margin).
    let later = wait_for(
        5 * tm.renew_interval() + tm.margin,
        "five more renewals",
        || {
            let t = scrape()?;
            (value(&t, "tenure_renew_latency_seconds_count")? >= renewals + 5.0).then_some(t)
        },
    );
    let count = value(&later, "tenure_renew_latency_seconds_count").unwrap();
    let inf = value(&later, "tenure_renew_latency_seconds_bucket{le=\"+Inf\"}").unwrap();
    assert!(inf >= count, "+Inf bucket {inf} < count {count}");
    let storage = value(&later, "tenure_storage_latency_seconds_count").unwrap();
    assert!(
        storage >= count,
        "every renewal is a storage call: {storage} < {count}"
    );
}
