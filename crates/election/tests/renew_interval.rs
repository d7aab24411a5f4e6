//! The renew interval R (DESIGN §3.1): a master renews the lease once every R and only reads
//! it in the rounds between; a lease that anyone else wrote still demotes it within a round,
//! not R later; and a renewal whose outcome is unknown is retried in the round after the
//! settling read. Simulated time: the counts are exact up to the window's edges.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use tenure_election::config::Config;
use tenure_election::machine::Op;
use tenure_election::records::{self, LeaseRecord};
use tenure_election::types::NodeState;
use tenure_store::{LEASE_KEY, ReadResult, Store, StoreError};
use tenure_testkit::harness::Cluster;

const T: Duration = Duration::from_secs(3);
const P: Duration = Duration::from_millis(100);
const R: Duration = Duration::from_millis(400);
const STEP: Duration = Duration::from_millis(5);

/// The cluster with its master, the counts of lease writes and reads, and the switch that
/// fails lease writes.
type Counted = (Cluster, Rc<Cell<u32>>, Rc<Cell<u32>>, Rc<Cell<bool>>);

fn master() -> Counted {
    let mut c = Cluster::initialised(T);
    let (writes, reads, fail) = (
        Rc::new(Cell::new(0)),
        Rc::new(Cell::new(0)),
        Rc::new(Cell::new(false)),
    );
    let (w, r, f) = (writes.clone(), reads.clone(), fail.clone());
    c.intercept(move |_, op| {
        match op {
            Op::Replace(k, _, _) if k == LEASE_KEY => {
                w.set(w.get() + 1);
                if f.get() {
                    return Some(Err(StoreError::Unavailable("timed out".into())));
                }
            }
            Op::Read(k) if k == LEASE_KEY => r.set(r.get() + 1),
            _ => {}
        }
        None
    });
    let a = c.add(Config {
        renew_interval: R,
        ..Config::with_defaults("a", "a-1", "sim://a", T, P)
    });
    c.run_until(T, STEP, |c| c.master() == Some(a));
    (c, writes, reads, fail)
}

#[test]
fn a_master_renews_every_r_and_reads_the_lease_in_between() {
    let (mut c, writes, reads, _) = master();
    let (w0, r0) = (writes.get(), reads.get());
    c.run_for(Duration::from_secs(4), STEP);
    let (w, r) = (writes.get() - w0, reads.get() - r0);
    // 4 s: 10 renewals of R = 400 ms, and a read in each of the other 30 rounds of p.
    assert!((9..=11).contains(&w), "{w} renewals in 4 s at R = 400 ms");
    assert!(
        (27..=32).contains(&r),
        "{r} lease reads in 4 s beside {w} renewals"
    );
    assert_eq!(c.master(), Some(0), "the master stood down");
}

#[test]
fn a_lease_written_by_another_node_demotes_the_master_within_a_round() {
    let (mut c, writes, _, _) = master();
    // Just after a renewal: the next one is R away.
    let before = writes.get();
    c.run_until(R * 2, STEP, |_| writes.get() > before);
    c.run_for(STEP * 4, STEP);
    let ReadResult::Present(cur) = c.store.read(LEASE_KEY).unwrap() else {
        panic!("no lease")
    };
    let mut l: LeaseRecord = records::parse(&cur.bytes).unwrap();
    l.holder = "b".into();
    l.instance_id = "b-1".into();
    l.epoch += 1;
    c.store
        .replace(LEASE_KEY, &records::encode(&l), &cur.version)
        .unwrap();
    let took = c.run_until(R, STEP, |c| c.state(0) != NodeState::Master);
    assert!(
        took <= P + STEP * 2,
        "MASTER for {took:?} after another node's lease"
    );
}

#[test]
fn a_renewal_of_unknown_outcome_is_retried_in_the_round_after_the_settling_read() {
    let (mut c, writes, _, fail) = master();
    // Fail the next renewal (unknown outcome), then let everything through.
    fail.set(true);
    let before = writes.get();
    c.run_until(R * 2, STEP, |_| writes.get() > before);
    let failed_at = c.now().mono;
    fail.set(false);
    c.run_until(R * 2, STEP, |_| writes.get() > before + 1);
    let retried = c.now().mono.since(failed_at);
    // A settling read in the next round, the renewal in the one after: 2p, not R.
    assert!(
        retried <= P * 2 + STEP * 2,
        "retried only {retried:?} later"
    );
    assert_eq!(c.master(), Some(0));
}
