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
//! the first MASTER sample, so the resolution is the sampling period. Then the restart in
//! place (`--state-dir`): kill -9 of the master and an immediate restart of the same node,
//! time until it answers at all (start-up) and until it answers MASTER again (no other node
//! may answer MASTER meanwhile); the same for a standby, until it answers STANDBY again.
//! Prints Markdown tables.

use std::time::{Duration, Instant};
use tenure_tests::cluster::NodeSpec;
use tenure_tests::{Cluster, Timing, wait_until};

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
    let (mut master_up, mut master_back, mut standby_up, mut standby_back) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let mut c = cluster(&store, timing);
        let state = c.root().join("state").display().to_string();
        for n in names {
            c.start(NodeSpec::new(n).args(&["--state-dir", &state]));
        }
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
        // Restart in place: the master, then a standby, killed and started again at once
        // (the two stopped above first join again).
        c.node_mut(&old).restart();
        c.node_mut(&new).restart();
        let (m, _) = c.wait_stable_master(&names, t * 2);
        std::thread::sleep(p * 3);
        let (up, back) = restart(&mut c, &m, "MASTER", t);
        let others: Vec<&str> = names.iter().copied().filter(|n| *n != m).collect();
        let h = c.history();
        for o in &others {
            tenure_tests::expect::assert_never_master_since(&h, o, back.0);
        }
        master_up.push(up);
        master_back.push(back.1);
        let (sup, sback) = restart(&mut c, others[0], "STANDBY", t);
        standby_up.push(sup);
        standby_back.push(sback.1);
        c.assert_safe();
        eprintln!(
            "run {run}/{runs}: failover {f:.0} ms (T = {} ms), handover {h:.0} ms, restart in place: MASTER again {:.0} ms (up {up:.0} ms), STANDBY again {:.0} ms (up {sup:.0} ms)",
            t.as_millis(),
            back.1,
            sback.1,
            h = handover.last().unwrap()
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
    let row = |what: &str, up: Vec<f64>, back: Vec<f64>| {
        let (umin, umed, umax) = stats(up);
        let (bmin, bmed, bmax) = stats(back);
        println!(
            "| {what} | {} / {} / {} | {} / {} / {} |",
            ms(umin),
            ms(umed),
            ms(umax),
            ms(bmin),
            ms(bmed),
            ms(bmax)
        );
    };
    println!();
    println!(
        "| restart in place (kill -9, started again at once, same --state-dir; {runs} runs) | serving HTTP again: min / median / worst (ms) | back in its role: min / median / worst (ms) |"
    );
    println!("|---|---|---|");
    row(
        "the master (MASTER again; no other node answered MASTER)",
        master_up,
        master_back,
    );
    row("a standby (STANDBY again)", standby_up, standby_back);
}

/// Kills `node` and starts it again at once; returns (ms from the kill until it answered
/// anything, (the kill, ms until it answered `role`)), from the observer's samples.
fn restart(c: &mut Cluster, node: &str, role: &str, t: Duration) -> (f64, (Instant, f64)) {
    let killed = Instant::now();
    c.node_mut(node).restart();
    // Measured, not bounded here: on an object store the start-up (the conditional-write
    // probe) and the scan a cautious take waits for take a while.
    let ok = wait_until(t * 2 + Duration::from_secs(5), || {
        c.history()
            .of(node)
            .any(|s| s.sent >= killed && s.answer == role)
    });
    assert!(
        ok,
        "{node} did not answer {role} within 2T + 5 s after its restart"
    );
    let h = c.history();
    let first = |pred: &dyn Fn(&tenure_tests::Sample) -> bool| {
        let s = h.of(node).find(|s| s.sent >= killed && pred(s)).unwrap();
        s.received.saturating_duration_since(killed).as_secs_f64() * 1e3
    };
    let up = first(&|s| !s.is_down());
    let back = first(&|s| s.answer == role);
    (up, (killed, back))
}
