//! What the election core costs, without I/O: `cargo bench -p tenure-election`.
//!
//! - `machine/*`: three nodes' state machines on simulated time against
//!   `tenure_testkit::MemoryStore`, driven by `tenure_testkit::harness` (every storage call
//!   answered at once through `driver::execute`, each node woken at its own timers); the figures
//!   include that store's own work per call (key checks, locks, copies). `steady_poll_period`
//!   advances a settled cluster (one master renewing, two standbys reading) by one poll period
//!   p: every node's round, the operations it issues and their results. `first_master` starts
//!   a new cluster and runs it until a node is MASTER. `failover` kills the master of a settled
//!   cluster and runs the survivors until one of them is MASTER (T/p rounds of each survivor).
//! - `records/*`: parsing and encoding the lease and heartbeat records as the nodes wrote them.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use tenure_election::Nanos;
use tenure_election::config::Config;
use tenure_election::records::{self, HeartbeatRecord, LeaseRecord};
use tenure_store::{LEASE_KEY, ReadResult, Store};
use tenure_testkit::harness::Cluster;

const T: Duration = Duration::from_secs(2);
const P: Duration = Duration::from_millis(200);

fn config(i: usize) -> Config {
    Config {
        allow_no_master: true,
        ..Config::with_defaults(
            format!("node-{i}"),
            format!("node-{i}-1"),
            format!("sim://{i}"),
            T,
            P,
        )
    }
}

/// n nodes started together on a store made by `tenure init`, at simulated time 1 s.
fn cluster(n: usize) -> Cluster {
    let mut c = Cluster::initialised(T).starting_at(Nanos(1_000_000_000));
    for i in 0..n {
        let node = c.add(config(i));
        c.pump(node);
    }
    c
}

/// Runs until some node is MASTER (at most `limit` of simulated time).
fn run_until_master(c: &mut Cluster, limit: Duration) -> usize {
    let end = c.t + limit;
    while c.t < end {
        if let Some(m) = c.master() {
            return m;
        }
        let step = c.t + Duration::from_millis(10);
        c.advance_to(step);
    }
    c.master().expect("a master within the limit")
}

/// A started cluster, run for a few timeouts so that every node has settled.
fn settled(n: usize) -> Cluster {
    let mut c = cluster(n);
    run_until_master(&mut c, T * 4);
    let until = c.t + T * 3;
    c.advance_to(until);
    c
}

fn machine(c: &mut Criterion) {
    let mut g = c.benchmark_group("machine");
    g.bench_function("steady_poll_period_3_nodes", |b| {
        let mut cl = settled(3);
        b.iter(|| {
            let until = cl.t + P;
            cl.advance_to(until);
            black_box(cl.master())
        })
    });
    g.bench_function("first_master_3_nodes", |b| {
        b.iter(|| {
            let mut cl = cluster(3);
            black_box(run_until_master(&mut cl, T * 4))
        })
    });
    g.bench_function("failover_3_nodes", |b| {
        b.iter_batched(
            || settled(3),
            |mut cl| {
                let m = cl.master().expect("a settled cluster has a master");
                cl.kill(m);
                black_box(run_until_master(&mut cl, T * 3))
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn record_bytes() -> (Vec<u8>, Vec<u8>) {
    let c = settled(3);
    let read = |key: &str| match c.store.read(key) {
        Ok(ReadResult::Present(r)) => r.bytes,
        other => panic!("{key}: {other:?}"),
    };
    (read(LEASE_KEY), read(&records::node_key("node-1")))
}

fn records_bench(c: &mut Criterion) {
    let (lease, hb) = record_bytes();
    let lease_rec: LeaseRecord = records::parse(&lease).expect("lease parses");
    let hb_rec: HeartbeatRecord = records::parse(&hb).expect("heartbeat parses");
    let mut g = c.benchmark_group("records");
    g.bench_function("parse_lease", |b| {
        b.iter(|| records::parse::<LeaseRecord>(black_box(&lease)).unwrap())
    });
    g.bench_function("encode_lease", |b| {
        b.iter(|| records::encode(black_box(&lease_rec)))
    });
    g.bench_function("parse_heartbeat", |b| {
        b.iter(|| records::parse::<HeartbeatRecord>(black_box(&hb)).unwrap())
    });
    g.bench_function("encode_heartbeat", |b| {
        b.iter(|| records::encode(black_box(&hb_rec)))
    });
    g.finish();
    eprintln!(
        "record sizes: lease {} bytes, heartbeat {} bytes",
        lease.len(),
        hb.len()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = machine, records_bench
}
criterion_main!(benches);
