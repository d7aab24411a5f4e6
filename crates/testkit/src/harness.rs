//! One way to drive [`Machine`]s outside a process: simulated time, one shared
//! [`MemoryStore`], every storage call performed at once (through
//! [`tenure_election::driver::execute`], as the real driver does), every hook finished at
//! once, nudges delivered at once. Used by the election's rank, epoch-reuse and name-claim
//! tests and by its benchmark; the seeded simulation (`crates/election/tests/simulation.rs`)
//! drives its machines through an event queue of its own, because it models what this
//! harness leaves out on purpose: storage latency, operations in flight and lost replies.
//!
//! Two ways to move time: [`Cluster::step`] moves every live node in fixed steps (in reverse
//! order of [`Cluster::add`], so that when two nodes act at the same step the later-added one
//! acts first: a test then sees only what the rules order, not the order of the loop), and
//! [`Cluster::advance_to`] jumps from one node's timer to the next (the benchmark's way: no
//! idle steps).

use std::time::Duration;
use tenure_election::config::Config;
use tenure_election::driver::execute;
use tenure_election::machine::{Event, Machine, Now, Op, OpResult, Request};
use tenure_election::records;
use tenure_election::{Nanos, NodeState, Snapshot};
use tenure_store::Store;

use crate::MemoryStore;

/// The wall clock that goes with simulated time 0 (any fixed instant will do).
const WALL_EPOCH_MS: i64 = 1_700_000_000_000;

/// Answers a storage call instead of the store (`Some`), or lets it through (`None`).
pub type Intercept = Box<dyn FnMut(&str, &Op) -> Option<OpResult>>;

/// One machine and what became of it.
pub struct Node {
    pub name: String,
    pub machine: Machine,
    /// False once it exited or was killed: it is stepped no more.
    pub alive: bool,
    /// The exit the machine asked for, if any.
    pub exit: Option<(i32, String)>,
    /// Every transition it reported, in order: (from, to, epoch).
    pub transitions: Vec<(NodeState, NodeState, Option<u64>)>,
}

pub struct Cluster {
    pub store: MemoryStore,
    pub nodes: Vec<Node>,
    /// The simulated protocol clock.
    pub t: Nanos,
    intercept: Option<Intercept>,
    next_ticket: u64,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl Cluster {
    /// An empty store at time 0.
    pub fn new() -> Cluster {
        Cluster {
            store: MemoryStore::new(),
            nodes: Vec::new(),
            t: Nanos(0),
            intercept: None,
            next_ticket: 1,
        }
    }

    /// A store as `tenure init` leaves it: `cluster.json` (id `c`, this T, ρ = 1 %), no term.
    pub fn initialised(t: Duration) -> Cluster {
        let c = Cluster::new();
        let bytes = records::init_cluster_bytes(None, "c", t, 10_000);
        c.store
            .create(records::CLUSTER_KEY, &bytes)
            .expect("a new store takes cluster.json");
        c
    }

    /// Starts the clock at `t` instead of 0.
    pub fn starting_at(mut self, t: Nanos) -> Cluster {
        self.t = t;
        self
    }

    /// Every storage call of every node goes to `f` first (to fail, count or change it).
    pub fn intercept(&mut self, f: impl FnMut(&str, &Op) -> Option<OpResult> + 'static) {
        self.intercept = Some(Box::new(f));
    }

    /// The time as a node is told it.
    pub fn now(&self) -> Now {
        Now {
            mono: self.t,
            wall_ms: WALL_EPOCH_MS + (self.t.0 / 1_000_000) as i64,
        }
    }

    /// Starts a node now; returns its index.
    pub fn add(&mut self, cfg: Config) -> usize {
        let name = cfg.name.clone();
        let machine = Machine::new(cfg, self.now());
        self.nodes.push(Node {
            name,
            machine,
            alive: true,
            exit: None,
            transitions: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// The index of the node with this name.
    pub fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Stops a node as kill -9 would: no release, no last write.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
    }

    /// Hands a request to a node (its reply is dropped) and runs what follows.
    pub fn request(&mut self, i: usize, r: Request) {
        let now = self.now();
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.nodes[i].machine.handle_request(now, ticket, r);
        let nudged = self.pump(i);
        self.deliver_nudges(nudged);
    }

    /// Runs node i's storage calls and events to quiescence at the current time; returns
    /// the URIs it asked to nudge.
    pub fn pump(&mut self, i: usize) -> Vec<String> {
        let now = self.now();
        let mut nudged = Vec::new();
        let node = &mut self.nodes[i];
        while node.alive {
            let mut progressed = false;
            while !node.machine.has_inflight()
                && let Some(op) = node.machine.poll_op(now)
            {
                let r = match self.intercept.as_mut().and_then(|f| f(&node.name, &op)) {
                    Some(r) => r,
                    None => execute(&self.store, op),
                };
                node.machine.handle_op_result(now, r);
                progressed = true;
            }
            while let Some(ev) = node.machine.poll_event() {
                progressed = true;
                match ev {
                    Event::Transition {
                        from,
                        to,
                        epoch,
                        hook,
                        ..
                    } => {
                        node.transitions.push((from, to, epoch));
                        node.machine.handle_hook_done(now, hook, true);
                    }
                    Event::Nudge(uris) => nudged.extend(uris),
                    Event::Exit { code, message } => {
                        node.exit = Some((code, message));
                        node.alive = false;
                    }
                    Event::Reply { .. } | Event::Log { .. } => {}
                }
            }
            if !progressed {
                break;
            }
        }
        nudged
    }

    /// A nudge reaches every live node with that URI at once, as the HTTP nudge would; the
    /// node acts on it at its next step (or timer, under [`Cluster::advance_to`]).
    fn deliver_nudges(&mut self, uris: Vec<String>) {
        let now = self.now();
        for n in self.nodes.iter_mut().filter(|n| n.alive) {
            if uris.contains(&n.machine.config().uri) {
                n.machine.handle_request(now, 0, Request::Nudge);
            }
        }
    }

    /// One step of every live node at the current time (timers, storage calls, hooks, then
    /// nudges), then the clock moves on by `dt`.
    pub fn step(&mut self, dt: Duration) {
        let now = self.now();
        let mut nudged = Vec::new();
        for i in (0..self.nodes.len()).rev() {
            if self.nodes[i].alive {
                self.nodes[i].machine.handle_timeout(now);
                nudged.extend(self.pump(i));
            }
        }
        self.deliver_nudges(nudged);
        self.t = self.t + dt;
    }

    /// Steps for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration, dt: Duration) {
        let until = self.t + d;
        while self.t < until {
            self.step(dt);
        }
    }

    /// Steps until `cond` holds; panics after `limit`. Returns the simulated time it took.
    pub fn run_until(
        &mut self,
        limit: Duration,
        dt: Duration,
        mut cond: impl FnMut(&Cluster) -> bool,
    ) -> Duration {
        let from = self.t;
        while !cond(self) {
            let took = self.t.since(from);
            assert!(took < limit, "not within {limit:?} (at {took:?})");
            self.step(dt);
        }
        self.t.since(from)
    }

    /// Moves time to `until`, waking each node exactly at its own timers.
    pub fn advance_to(&mut self, until: Nanos) {
        loop {
            let next = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.alive)
                .filter_map(|(i, n)| n.machine.poll_timeout().map(|t| (t, i)))
                .min();
            match next {
                Some((at, i)) if at <= until => {
                    self.t = at.max(self.t);
                    let now = self.now();
                    self.nodes[i].machine.handle_timeout(now);
                    let nudged = self.pump(i);
                    self.deliver_nudges(nudged);
                }
                _ => break,
            }
        }
        self.t = until.max(self.t);
    }

    /// The one live node answering MASTER now, if any; panics on two (the property every
    /// user of this harness relies on).
    pub fn master(&self) -> Option<usize> {
        let masters: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive && self.state(i) == NodeState::Master)
            .collect();
        assert!(
            masters.len() <= 1,
            "two masters at {:?}: {:?}",
            self.t,
            masters
                .iter()
                .map(|&i| self.nodes[i].name.as_str())
                .collect::<Vec<_>>()
        );
        masters.first().copied()
    }

    /// The name of the master, if any.
    pub fn master_name(&self) -> Option<&str> {
        self.master().map(|i| self.nodes[i].name.as_str())
    }

    /// What node i answers now.
    pub fn state(&self, i: usize) -> NodeState {
        self.nodes[i].machine.state_at(self.t)
    }

    /// Node i's snapshot now (as the HTTP layer would see it).
    pub fn snapshot(&mut self, i: usize) -> Snapshot {
        let now = self.now();
        self.nodes[i].machine.snapshot(now)
    }
}
