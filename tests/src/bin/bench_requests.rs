//! S3 requests per node, counted by the S3 server: a 3-node cluster on a fresh bucket of the
//! local moto server, each node signing with its own access key; after it has settled, moto's
//! request recorder runs for POLLS poll periods and every request to the bucket is attributed
//! to its node and kind. Prints a Markdown table per role (master, standby) with requests per
//! poll, per hour, and the monthly cost at the given list prices.
//!
//! usage: bench_requests [T] [p] [POLLS] [PUT_PRICE] [GET_PRICE]
//!        (defaults: T = 30s, p = 1s, 60 polls; prices in USD per 1,000 requests, default
//!        S3 Standard us-east-1: 0.005 for PUT/COPY/POST/LIST, 0.0004 for GET and others)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tenure_tests::s3::{Recorder, bucket_of, s3_cluster, tally};
use tenure_tests::{NodeSpec, Timing};

fn dur(s: &str) -> Duration {
    if let Some(ms) = s.strip_suffix("ms") {
        Duration::from_millis(ms.parse().expect("a number of ms"))
    } else if let Some(sec) = s.strip_suffix('s') {
        Duration::from_secs_f64(sec.parse().expect("a number of seconds"))
    } else {
        panic!("give a duration such as 30s or 500ms, not {s:?}")
    }
}

const KINDS: [&str; 6] = [
    "lease GET",
    "lease PUT",
    "heartbeat PUT",
    "nodes LIST",
    "node GET",
    "cluster GET",
];

/// PUT-class requests (PUT, COPY, POST, LIST) are billed at the higher rate.
fn put_class(kind: &str) -> bool {
    kind.ends_with("PUT") || kind.ends_with("LIST")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let t = dur(&args.next().unwrap_or_else(|| "30s".into()));
    let p = dur(&args.next().unwrap_or_else(|| "1s".into()));
    let polls: u32 = args
        .next()
        .map_or(60, |s| s.parse().expect("POLLS is a number"));
    let put_price: f64 = args.next().map_or(0.005, |s| s.parse().expect("a price"));
    let get_price: f64 = args.next().map_or(0.0004, |s| s.parse().expect("a price"));
    let timing = Timing {
        t,
        p,
        margin: Duration::from_millis(400),
    };
    let mut c = s3_cluster(timing, "requests").expect("no S3 server (TENURE_SKIP_S3 is set)");
    let names = ["node-a", "node-b", "node-c"];
    for n in names {
        c.start(NodeSpec::new(n).env("AWS_ACCESS_KEY_ID", n));
    }
    let (master, _) = c.wait_stable_master(&names, 3 * t + 10 * p + Duration::from_secs(10));
    // Past start-up: the first scans and the nudges of the election.
    std::thread::sleep(2 * p + Duration::from_secs(1));
    let endpoint = tenure_testkit::moto::endpoint().expect("moto is running");
    let started = Instant::now();
    let rec = Recorder::start(&endpoint);
    std::thread::sleep(p * polls);
    let recorded = rec.stop(&bucket_of(&c));
    let window = started.elapsed();
    c.assert_safe();
    let counts = tally(&recorded, "tenure");
    let others: Vec<String> = counts
        .values()
        .flat_map(|k| k.keys())
        .filter(|k| !KINDS.contains(&k.as_str()))
        .cloned()
        .collect();
    if !others.is_empty() {
        eprintln!("also seen (not in the table): {others:?}");
    }
    let polls_seen = window.as_secs_f64() / p.as_secs_f64();
    let per_hour = 3600.0 / window.as_secs_f64();
    // Average the standbys; the master is one node.
    let mut roles: BTreeMap<&str, (Vec<&str>, BTreeMap<&str, f64>)> = BTreeMap::new();
    for n in names {
        let role = if n == master { "master" } else { "standby" };
        let entry = roles.entry(role).or_default();
        entry.0.push(n);
        for k in KINDS {
            let v = counts.get(n).and_then(|m| m.get(k)).copied().unwrap_or(0) as f64;
            *entry.1.entry(k).or_default() += v;
        }
    }
    eprintln!("window {window:?} = {polls_seen:.1} polls; raw counts per node: {counts:?}");
    println!(
        "| role | lease GET | lease PUT | heartbeat PUT | nodes LIST | node GET | cluster GET | requests / poll | requests / hour | USD / month |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut cluster_hour = 0.0;
    let mut cluster_month = 0.0;
    for role in ["master", "standby"] {
        let (nodes, sums) = &roles[role];
        let n = nodes.len() as f64;
        let mut cells = Vec::new();
        let (mut total_poll, mut total_hour, mut month) = (0.0, 0.0, 0.0);
        for k in KINDS {
            let per_node = sums[k] / n;
            let poll = per_node / polls_seen;
            let hour = per_node * per_hour;
            total_poll += poll;
            total_hour += hour;
            let price = if put_class(k) { put_price } else { get_price };
            month += hour * 730.0 / 1000.0 * price;
            cells.push(format!("{poll:.2}"));
        }
        cluster_hour += total_hour * n;
        cluster_month += month * n;
        println!(
            "| {role} | {} | {total_poll:.2} | {total_hour:.0} | {month:.2} |",
            cells.join(" | ")
        );
    }
    println!(
        "| **3 nodes** (1 master, 2 standbys) | | | | | | | | {cluster_hour:.0} | **{cluster_month:.2}** |"
    );
}
