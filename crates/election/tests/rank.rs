//! Ranks at a handover: the best live standby takes a released lease at once, and a node that
//! died a while ago (but less than T ago) no longer ranks ahead of it. Before the fix, a node
//! killed shortly before the handover kept its rank for up to T after its record was last seen
//! to change, so the remaining standby waited one rank delay (one poll period): the ~1 s
//! outlier in docs/BENCHMARKS.md's handover figures at the defaults. Simulated time, one
//! shared in-memory store, the defaults T = 30 s and p = 1 s.

use std::time::Duration;
use tenure_election::config::Config;
use tenure_election::driver::execute;
use tenure_election::machine::{Event, Machine, Now, Request};
use tenure_election::records;
use tenure_election::{Nanos, NodeState};
use tenure_store::Store;
use tenure_testkit::MemoryStore;

const MS: u64 = 1_000_000;
const STEP_MS: u64 = 5;
const T: Duration = Duration::from_secs(30);
const P: Duration = Duration::from_secs(1);

fn now(t_ms: u64) -> Now {
    Now {
        mono: Nanos(t_ms * MS),
        wall_ms: 1_700_000_000_000 + t_ms as i64,
    }
}

fn uri(name: &str) -> String {
    format!("sim://{name}")
}

struct Node {
    name: &'static str,
    m: Machine,
    alive: bool,
}

struct Cluster {
    store: MemoryStore,
    nodes: Vec<Node>,
    t_ms: u64,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            store: {
                // As `tenure init` leaves a store: cluster.json, no term yet.
                let store = MemoryStore::new();
                let bytes = records::init_cluster_bytes(None, "c", T, 10_000);
                store.create(records::CLUSTER_KEY, &bytes).unwrap();
                store
            },
            nodes: Vec::new(),
            t_ms: 0,
        }
    }

    /// Starts a node now.
    fn add(&mut self, name: &'static str, priority: i64) {
        let cfg = Config {
            priority,
            ..Config::with_defaults(name, format!("{name}-1"), uri(name), T, P)
        };
        self.nodes.push(Node {
            name,
            m: Machine::new(cfg, now(self.t_ms)),
            alive: true,
        });
    }

    /// a is master (it started first); b (ranked above c) and c are standbys, all settled.
    fn a_master_then_b_and_c(settle: Duration) -> Cluster {
        let mut c = Cluster::new();
        c.add("a", 10);
        c.run_until(T, |c| c.master() == Some("a"));
        c.add("b", 5);
        c.add("c", 0);
        c.run_for(settle);
        assert_eq!(c.master(), Some("a"));
        c
    }

    /// One step of every live node: timers, storage operations, hooks (all succeed at once)
    /// and nudges (delivered at once, as the HTTP nudge of a release would be). Nodes step in
    /// reverse rank order, so that when two act at once the worse one wins the race: only
    /// the rank delay puts the better one first.
    fn step(&mut self) {
        let n = now(self.t_ms);
        let mut nudged = Vec::new();
        for node in self.nodes.iter_mut().rev().filter(|n| n.alive) {
            node.m.handle_timeout(n);
            loop {
                let mut progressed = false;
                while let Some(op) = node.m.poll_op(n) {
                    let r = execute(&self.store, op);
                    node.m.handle_op_result(n, r);
                    progressed = true;
                }
                while let Some(ev) = node.m.poll_event() {
                    progressed = true;
                    match ev {
                        Event::Transition { hook, .. } => node.m.handle_hook_done(n, hook, true),
                        Event::Nudge(uris) => nudged.extend(uris),
                        Event::Exit { .. } => node.alive = false,
                        _ => {}
                    }
                }
                if !progressed || !node.alive {
                    break;
                }
            }
        }
        for node in self.nodes.iter_mut().filter(|n| n.alive) {
            if nudged.contains(&uri(node.name)) {
                node.m.handle_request(n, 0, Request::Nudge);
            }
        }
        self.t_ms += STEP_MS;
    }

    fn master(&self) -> Option<&'static str> {
        let n = now(self.t_ms).mono;
        let masters: Vec<_> = self
            .nodes
            .iter()
            .filter(|x| x.alive && x.m.state_at(n) == NodeState::Master)
            .map(|x| x.name)
            .collect();
        assert!(
            masters.len() <= 1,
            "two masters at {} ms: {masters:?}",
            self.t_ms
        );
        masters.first().copied()
    }

    /// Runs until `cond` holds, at most `limit` of simulated time; returns the time taken.
    fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Cluster) -> bool) -> Duration {
        let from = self.t_ms;
        while !cond(self) {
            assert!(
                Duration::from_millis(self.t_ms - from) < limit,
                "not within {limit:?}"
            );
            self.step();
        }
        Duration::from_millis(self.t_ms - from)
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.t_ms + d.as_millis() as u64;
        while self.t_ms < until {
            self.step();
        }
    }

    fn node(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    fn shut_down(&mut self, name: &str) {
        let n = now(self.t_ms);
        self.node(name).m.handle_request(n, 1, Request::Shutdown);
    }
}

#[test]
fn a_node_killed_before_a_handover_does_not_delay_it() {
    let mut c = Cluster::a_master_then_b_and_c(Duration::from_secs(10));
    // a crashes: b takes over after T.
    c.node("a").alive = false;
    c.run_until(T * 2, |c| c.master() == Some("b"));
    // b shuts down gracefully 3p later (as in scripts/bench-failover.sh): c is the only live
    // standby and must take over at once, not wait a rank delay behind the dead a.
    c.run_for(P * 3);
    c.shut_down("b");
    let handover = c.run_until(T, |c| c.master() == Some("c"));
    assert!(
        handover < P / 2,
        "handover took {handover:?}: c waited behind the dead node a"
    );
}

#[test]
fn a_live_better_standby_still_ranks_first_whenever_the_master_hands_over() {
    // Hand over at 40 offsets across one scan interval (records are scanned every 7 polls at
    // these settings): the live b, ranked above c, must win every time, and promptly.
    for offset_ms in (0..7_000).step_by(175) {
        let mut c = Cluster::a_master_then_b_and_c(Duration::from_millis(10_000 + offset_ms));
        c.shut_down("a");
        let handover = c.run_until(T, |c| c.master().is_some() && !c.node_alive("a"));
        assert_eq!(c.master(), Some("b"), "offset {offset_ms} ms");
        assert!(handover < P / 2, "offset {offset_ms} ms: took {handover:?}");
    }
}

impl Cluster {
    fn node_alive(&self, name: &str) -> bool {
        self.nodes.iter().any(|n| n.name == name && n.alive)
    }
}
