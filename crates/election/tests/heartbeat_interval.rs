//! Heartbeats decoupled from rounds (issue 18): a standby rewrites its record every H = T/3,
//! not every poll; the master's record stands still while its state does, its heartbeat riding
//! in its lease, and the others still see it live; the known records are re-read every H and
//! `nodes/` listed every 2T. And since a live master's record stands still, a second process
//! starting under its name must watch the lease too: it is refused, not let in after T.
//! Simulated time, one shared in-memory store, the defaults T = 30 s and p = 1 s.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;
use tenure_election::config::Config;
use tenure_election::machine::Op;
use tenure_election::records;
use tenure_election::types::NodeState;
use tenure_testkit::harness::Cluster;

const STEP: Duration = Duration::from_millis(10);
const T: Duration = Duration::from_secs(30);
const P: Duration = Duration::from_secs(1);

fn node(name: &str, instance: &str) -> Config {
    Config::with_defaults(name, instance, format!("sim://{name}"), T, P)
}

/// a is master, b and c standbys, settled past the greetings.
fn three() -> Cluster {
    let mut c = Cluster::initialised(T);
    c.add(node("a", "a-1"));
    c.run_until(T, STEP, |c| c.master_name() == Some("a"));
    c.add(node("b", "b-1"));
    c.add(node("c", "c-1"));
    c.run_for(3 * P, STEP);
    assert_eq!(c.master_name(), Some("a"));
    c
}

/// Counts every node's storage calls by kind: (node, kind) → calls.
type Counts = Rc<RefCell<BTreeMap<(String, String), usize>>>;

fn count(c: &mut Cluster) -> Counts {
    let counts: Counts = Rc::default();
    let sink = counts.clone();
    c.intercept(move |node, op| {
        let kind = match op {
            Op::Put(k, _) if k.starts_with(records::NODES_PREFIX) => "heartbeat".to_string(),
            Op::Read(k) if k == tenure_store::LEASE_KEY => "lease read".into(),
            Op::Replace(k, _, _) if k == tenure_store::LEASE_KEY => "lease write".into(),
            Op::ScanNodes => "listing".into(),
            Op::ReadMany(keys) => format!("re-read of {}", keys.len()),
            Op::Read(k) if k == records::CLUSTER_KEY => "cluster read".into(),
            other => format!("other: {}", other.describe()),
        };
        *sink
            .borrow_mut()
            .entry((node.to_string(), kind))
            .or_default() += 1;
        None
    });
    counts
}

fn get(counts: &Counts, node: &str, kind: &str) -> usize {
    counts
        .borrow()
        .get(&(node.to_string(), kind.to_string()))
        .copied()
        .unwrap_or(0)
}

#[test]
fn a_standby_writes_every_h_and_the_master_only_on_a_change() {
    let mut c = three();
    let counts = count(&mut c);
    // Four listing intervals (2T each).
    let window = 8 * T;
    c.run_for(window, STEP);
    assert_eq!(c.master_name(), Some("a"));
    let h = Config::default_heartbeat_interval(T, P);
    let rounds = (window.as_secs() / P.as_secs()) as usize;
    let per_h = (window.as_secs() / h.as_secs()) as usize;
    let all = counts.borrow().clone();
    assert_eq!(
        get(&counts, "a", "heartbeat"),
        0,
        "the master rewrote its unchanged record: {all:?}"
    );
    for n in ["b", "c"] {
        let hb = get(&counts, n, "heartbeat");
        assert!(
            (per_h - 1..=per_h + 1).contains(&hb),
            "{n}: {hb} heartbeats in {window:?}, expected one per H = {h:?} ({per_h}): {all:?}"
        );
        let reads = get(&counts, n, "lease read");
        assert!(
            (rounds - 2..=rounds + 1).contains(&reads),
            "{n}: {reads} lease reads in {rounds} rounds: {all:?}"
        );
        // The other standby's record only: the master's stands still, its lease shows it.
        let rereads = get(&counts, n, "re-read of 1");
        assert!(
            rereads + 4 >= per_h && rereads <= per_h + 1,
            "{n}: {rereads} re-reads of the other standby's record, expected about {per_h}: {all:?}"
        );
    }
    // The master re-reads both standbys' records every H.
    let rereads = get(&counts, "a", "re-read of 2");
    assert!(
        rereads + 4 >= per_h && rereads <= per_h + 1,
        "a: {rereads} re-reads of the standbys' records: {all:?}"
    );
    for n in ["a", "b", "c"] {
        let lists = get(&counts, n, "listing");
        assert!(
            (3..=5).contains(&lists),
            "{n}: {lists} listings of nodes/ in {window:?}, expected one per 2T: {all:?}"
        );
        let checks = get(&counts, n, "cluster read");
        assert!(
            (7..=9).contains(&checks),
            "{n}: {checks} reads of cluster.json in {window:?}, expected one per T: {all:?}"
        );
        let others: Vec<_> = all
            .iter()
            .filter(|((node, kind), _)| node == n && kind.starts_with("other"))
            .collect();
        assert!(others.is_empty(), "{n} sent {others:?} in steady state");
    }
    // The master's record stood still for 8T, but its renewals kept it live for the others.
    for n in ["b", "c"] {
        let i = c.index(n);
        let snap = c.snapshot(i);
        let row = snap
            .nodes
            .iter()
            .find(|r| r.name == "a")
            .unwrap_or_else(|| panic!("{n} does not list a"));
        assert_eq!(row.status, NodeState::Master, "{n}'s row for a");
        assert!(
            c.now().mono < row.stale_at,
            "{n} sees the master's record as stale although its lease moves"
        );
    }
}

#[test]
fn a_new_masters_record_is_written_and_seen_within_h() {
    let mut c = three();
    let counts = count(&mut c);
    // The master shuts down: b or c takes over at once and writes its record at once, not at
    // its next H; the other standby sees it as MASTER at its next re-read (within H), though
    // it no longer re-reads the holder's record once that shows the term.
    let a = c.index("a");
    c.request(a, tenure_election::machine::Request::Shutdown);
    c.run_until(T, STEP, |c| c.master().is_some() && !c.nodes[0].alive);
    let m = c.master_name().expect("a new master").to_string();
    c.run_for(2 * P, STEP);
    assert!(
        get(&counts, &m, "heartbeat") >= 1,
        "the new master {m} did not write its record at its promotion"
    );
    let other = if m == "b" { "c" } else { "b" };
    let j = c.index(other);
    let h = Config::default_heartbeat_interval(T, P);
    let shows_master = |c: &mut Cluster| {
        c.snapshot(j)
            .nodes
            .iter()
            .any(|r| r.name == m && r.status == NodeState::Master)
    };
    let mut waited = Duration::ZERO;
    while !shows_master(&mut c) {
        assert!(
            waited < h + 2 * P,
            "{other} does not show {m} as MASTER within H = {h:?}"
        );
        c.step(STEP);
        waited += STEP;
    }
}

#[test]
fn a_second_process_under_a_live_masters_name_is_refused() {
    let mut c = three();
    // Another host starts "a" (no state file to tell it anything): the record of "a" stands
    // still, as a master's does, but its lease moves. Before the start-up watch also read the
    // lease, this process took the name over after T.
    let dup = c.add(node("a", "a-2"));
    c.run_until(3 * T, STEP, |c| c.nodes[dup].exit.is_some());
    let (code, why) = c.nodes[dup]
        .exit
        .clone()
        .expect("the second process under the name a did not exit");
    assert_eq!(code, 1, "{why}");
    assert!(why.contains("duplicate node name"), "{why}");
    assert_eq!(c.master_name(), Some("a"));
    let now = c.now();
    let first = c.nodes[0].machine.snapshot(now);
    assert_eq!(first.own_instance, "a-1");
    assert!(
        first.master_until.is_some_and(|v| now.mono < v),
        "the first a is no longer master"
    );
}

#[test]
fn a_live_standbys_record_cleared_by_an_operator_is_back_everywhere_within_h() {
    let mut c = three();
    // An operator clears b's record through a (`POST …/states/clear`): a deletes it, c finds
    // it absent at its next re-read. b writes it again within its H; both list `nodes/` again
    // then rather than at their next 2T listing, so b is back in their /ha/states and ranks.
    let a = c.index("a");
    let cc = c.index("c");
    c.request(a, tenure_election::machine::Request::ClearNode("b".into()));
    let lists = |c: &mut Cluster, i: usize| c.snapshot(i).nodes.iter().any(|r| r.name == "b");
    c.run_for(2 * P, STEP);
    assert!(
        !lists(&mut c, a),
        "a still lists b after clearing its record"
    );
    let h = Config::default_heartbeat_interval(T, P);
    let mut gone_at_c = false;
    let mut waited = Duration::ZERO;
    while !(lists(&mut c, a) && lists(&mut c, cc) && gone_at_c) {
        gone_at_c |= !lists(&mut c, cc);
        assert!(
            waited < 2 * h + 3 * P,
            "b is not back in both listings within 2H: a {}, c {} (c saw it gone: {gone_at_c})",
            lists(&mut c, a),
            lists(&mut c, cc)
        );
        c.step(STEP);
        waited += STEP;
    }
}
