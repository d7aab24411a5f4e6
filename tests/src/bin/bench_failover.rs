//! Crash failover and graceful handover, measured with real processes on a real directory and
//! an observer sampling every node's `/v1/server/ha/state` every ~10 ms.
//!
//! usage: bench_failover [RUNS] [T] [p] [STORE]   (defaults: 10 runs, T = 2s, p = 200ms, dir)
//!
//! STORE is `dir` (a local directory), `s3` (a fresh bucket on the S3 server at
//! `$TENURE_S3_ENDPOINT`: moto, or SeaweedFS; see `tenure_testkit::moto`) or `azure` (a fresh
//! container on Azurite at `$TENURE_AZURITE_ENDPOINT`).
//!
//! For each run: a fresh 3-node cluster; kill -9 of the master, time until another node
//! answers MASTER (reported as failover − T); then SIGTERM of the new master, time until a third
//! node answers MASTER (the handover). Onsets are the midpoint between the last non-MASTER and
//! the first MASTER sample, so the resolution is the sampling period. Prints a Markdown table.

use std::time::{Duration, Instant};
use tenure_tests::{Cluster, Timing};

/// A fresh cluster on the chosen store.
fn cluster(store: &str, timing: Timing) -> Cluster {
    match store {
        "dir" => Cluster::new(timing),
        "s3" => tenure_tests::s3::s3_cluster(timing, "bench")
            .expect("no S3 server: unset TENURE_SKIP_S3 to start moto"),
        "azure" => tenure_tests::s3::azure_cluster(timing, "bench")
            .expect("no Azurite: set TENURE_AZURITE_ENDPOINT"),
        other => panic!("STORE is dir, s3 or azure, not {other:?}"),
    }
}

fn parse(arg: Option<String>, default: &str) -> Duration {
    humantime_lite(&arg.unwrap_or_else(|| default.to_string()))
}

/// `2s`, `200ms`, `1.5s`.
fn humantime_lite(s: &str) -> Duration {
    if let Some(ms) = s.strip_suffix("ms") {
        Duration::from_millis(ms.parse().expect("a number of ms"))
    } else if let Some(sec) = s.strip_suffix('s') {
        Duration::from_secs_f64(sec.parse().expect("a number of seconds"))
    } else {
        panic!("give a duration such as 2s or 200ms, not {s:?}")
    }
}

fn midpoint(onset: &tenure_tests::Onset) -> Instant {
    let (a, b) = (onset.earliest(), onset.latest());
    a + (b - a) / 2
}

fn ms(d: f64) -> String {
    format!("{d:.0}")
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = v[v.len() / 2];
    (v[0], median, v[v.len() - 1])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args
        .next()
        .map_or(10, |s| s.parse().expect("RUNS is a number"));
    let t = parse(args.next(), "2s");
    let p = parse(args.next(), "200ms");
    let store = args.next().unwrap_or_else(|| "dir".to_string());
    let timing = Timing {
        t,
        p,
        margin: Duration::from_millis(400),
    };
    let names = ["node-a", "node-b", "node-c"];
    let mut failover_minus_t = Vec::new();
    let mut handover = Vec::new();
    for run in 1..=runs {
        let mut c = cluster(&store, timing);
        c.start_all(&names);
        let (old, _) = c.wait_stable_master(&names, t * 3 + Duration::from_secs(5));
        let killed = c.node_mut(&old).kill9();
        let onset = c.wait_takeover(killed, &[&old], t * 2 + Duration::from_secs(5));
        let f = midpoint(&onset)
            .saturating_duration_since(killed)
            .as_secs_f64()
            * 1e3;
        failover_minus_t.push(f - t.as_secs_f64() * 1e3);
        // Let the survivors read the new lease unreleased before the graceful test.
        let (new, _) = c.wait_stable_master(
            &names
                .iter()
                .copied()
                .filter(|n| *n != old)
                .collect::<Vec<_>>(),
            t * 2,
        );
        std::thread::sleep(p * 3);
        let termed = c.node(&new).sigterm();
        let onset2 = c.wait_takeover(termed, &[&old, &new], t * 2 + Duration::from_secs(5));
        let h = midpoint(&onset2)
            .saturating_duration_since(termed)
            .as_secs_f64()
            * 1e3;
        handover.push(h);
        c.assert_safe();
        eprintln!(
            "run {run}/{runs}: failover {f:.0} ms (T = {} ms), handover {h:.0} ms",
            t.as_millis()
        );
    }
    let (fmin, fmed, fmax) = stats(failover_minus_t);
    let (hmin, hmed, hmax) = stats(handover);
    println!(
        "| T | p | runs | failover − T: min / median / worst (ms) | handover: min / median / worst (ms) |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {} ms | {} ms | {runs} | {} / {} / {} | {} / {} / {} |",
        t.as_millis(),
        p.as_millis(),
        ms(fmin),
        ms(fmed),
        ms(fmax),
        ms(hmin),
        ms(hmed),
        ms(hmax)
    );
}
