//! What the election core costs, without I/O: `cargo bench -p tenure-election`.
//!
//! - `machine/*`: three nodes' state machines on simulated time against
//!   `tenure_testkit::MemoryStore` through `driver::execute`, every storage call answered
//!   at once (as `tests/simulation.rs` drives them, without faults or latency); the figures
//!   include that store's own work per call (key checks, locks, copies). `steady_poll_period`
//!   advances a settled cluster (one master renewing, two standbys reading) by one poll period
//!   p: every node's round, the operations it issues and their results. `first_master` starts
//!   a new cluster and runs it until a node is MASTER. `failover` kills the master of a settled
//!   cluster and runs the survivors until one of them is MASTER (T/p rounds of each survivor).
//! - `records/*`: parsing and encoding the lease and heartbeat records as the nodes wrote them.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use tenure_election::config::Config;
use tenure_election::driver::execute;
use tenure_election::machine::{Event, Machine, Now};
use tenure_election::records::{self, HeartbeatRecord, LeaseRecord};
use tenure_election::{Nanos, NodeState};
use tenure_store::{LEASE_KEY, ReadResult, Store};
use tenure_testkit::MemoryStore;

const T: Duration = Duration::from_secs(2);
const P: Duration = Duration::from_millis(200);

/// Nodes on one simulated clock (no drift), each storage call answered at once.
struct Cluster {
    store: MemoryStore,
    nodes: Vec<Option<Machine>>,
    t: Nanos,
}

fn now(t: Nanos) -> Now {
    Now {
        mono: t,
        wall_ms: 1_700_000_000_000 + (t.0 / 1_000_000) as i64,
    }
}

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

impl Cluster {
    fn new(n: usize) -> Self {
        let t = Nanos(1_000_000_000);
        let mut c = Cluster {
            store: {
                // As `tenure init` leaves a store: cluster.json, no term yet.
                let store = MemoryStore::new();
                let bytes = tenure_election::records::init_cluster_bytes(None, "c", T, 10_000);
                store
                    .create(tenure_election::records::CLUSTER_KEY, &bytes)
                    .unwrap();
                store
            },
            nodes: (0..n)
                .map(|i| Some(Machine::new(config(i), now(t))))
                .collect(),
            t,
        };
        for i in 0..n {
            c.pump(i);
        }
        c
    }

    /// Runs node i's operations to completion and answers its hooks at once.
    fn pump(&mut self, i: usize) {
        let n = now(self.t);
        let Some(m) = self.nodes[i].as_mut() else {
            return;
        };
        loop {
            let op = if m.has_inflight() { None } else { m.poll_op(n) };
            let mut hooks = Vec::new();
            while let Some(e) = m.poll_event() {
                if let Event::Transition { hook, .. } = e {
                    hooks.push(hook);
                }
            }
            for h in hooks {
                m.handle_hook_done(n, h, true);
            }
            match op {
                Some(op) => {
                    let r = execute(&self.store, op);
                    m.handle_op_result(n, r);
                }
                None => break,
            }
        }
    }

    /// Advances simulated time to `until`, waking each node at its own timers.
    fn run_until(&mut self, until: Nanos) {
        loop {
            let next = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, m)| m.as_ref().and_then(|m| m.poll_timeout().map(|t| (t, i))))
                .min();
            match next {
                Some((at, i)) if at <= until => {
                    self.t = at.max(self.t);
                    let n = now(self.t);
                    if let Some(m) = self.nodes[i].as_mut() {
                        m.handle_timeout(n);
                    }
                    self.pump(i);
                }
                _ => break,
            }
        }
        self.t = until.max(self.t);
    }

    fn master(&self) -> Option<usize> {
        self.nodes.iter().position(|m| {
            m.as_ref()
                .is_some_and(|m| m.state_at(self.t) == NodeState::Master)
        })
    }

    /// Runs until some node is MASTER (at most `limit` of simulated time).
    fn run_until_master(&mut self, limit: Duration) -> usize {
        let end = self.t + limit;
        while self.t < end {
            if let Some(m) = self.master() {
                return m;
            }
            let step = self.t + Duration::from_millis(10);
            self.run_until(step);
        }
        self.master().expect("a master within the limit")
    }

    /// A started cluster, run for a few timeouts so that every node has settled.
    fn settled(n: usize) -> Self {
        let mut c = Cluster::new(n);
        c.run_until_master(T * 4);
        let until = c.t + T * 3;
        c.run_until(until);
        c
    }
}

fn machine(c: &mut Criterion) {
    let mut g = c.benchmark_group("machine");
    g.bench_function("steady_poll_period_3_nodes", |b| {
        let mut cl = Cluster::settled(3);
        b.iter(|| {
            let until = cl.t + P;
            cl.run_until(until);
            black_box(cl.master())
        })
    });
    g.bench_function("first_master_3_nodes", |b| {
        b.iter(|| {
            let mut cl = Cluster::new(3);
            black_box(cl.run_until_master(T * 4))
        })
    });
    g.bench_function("failover_3_nodes", |b| {
        b.iter_batched(
            || Cluster::settled(3),
            |mut cl| {
                let m = cl.master().expect("a settled cluster has a master");
                cl.nodes[m] = None;
                black_box(cl.run_until_master(T * 3))
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn record_bytes() -> (Vec<u8>, Vec<u8>) {
    let c = Cluster::settled(3);
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
