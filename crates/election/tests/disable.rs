//! A runtime DISABLED is reversible (Brooklyn re-enables with AUTO, STANDBY or HOT_STANDBY) and
//! a disabled node holds no lease: the master releases when disabled, a disabled node never
//! takes a free lease, and once enabled again it takes over under the usual rules. Simulated
//! time, one shared in-memory store.

use std::time::Duration;
use tenure_election::config::Config;
use tenure_election::machine::Request;
use tenure_election::{Mode, NodeState};
use tenure_testkit::harness::Cluster;

const STEP: Duration = Duration::from_millis(5);
const T: Duration = Duration::from_secs(3);
const P: Duration = Duration::from_millis(300);

fn two_nodes() -> Cluster {
    let mut c = Cluster::initialised(T);
    for name in ["a", "b"] {
        c.add(Config::with_defaults(
            name,
            format!("{name}-1"),
            format!("sim://{name}"),
            T,
            P,
        ));
    }
    c.run_until(T * 3, STEP, |c| {
        c.master().is_some() && (0..2).all(|i| c.state(i) != NodeState::Initializing)
    });
    c
}

#[test]
fn a_disabled_master_hands_over_and_comes_back_as_a_standby() {
    let mut c = two_nodes();
    let first = c.master().expect("a master");
    let other = 1 - first;

    c.request(first, Request::SetMode(Mode::Disabled));
    c.run_until(P * 3, STEP, |c| c.master() == Some(other));
    assert_eq!(c.state(first), NodeState::Failed);
    assert_eq!(c.snapshot(first).mode, Mode::Disabled);

    c.request(first, Request::SetMode(Mode::Auto));
    c.run_for(P * 2, STEP);
    assert_eq!(c.state(first), NodeState::Standby);
    assert_eq!(c.master(), Some(other));

    // Enabled again, it takes over like any standby.
    c.request(other, Request::Shutdown);
    c.run_until(P * 3, STEP, |c| c.master() == Some(first));
}

#[test]
fn a_disabled_node_never_takes_a_free_lease_until_enabled() {
    let mut c = two_nodes();
    let master = c.master().expect("a master");
    let standby = 1 - master;

    c.request(standby, Request::SetMode(Mode::Disabled));
    c.run_for(P * 2, STEP);
    c.request(master, Request::Shutdown);
    // Released, and the only other node is disabled: nobody may take it, for 2T.
    let end = c.now().mono + T * 2;
    while c.now().mono < end {
        c.step(STEP);
        assert_eq!(c.master(), None, "a disabled node took the lease");
        assert_eq!(c.state(standby), NodeState::Failed);
    }
    c.request(standby, Request::SetMode(Mode::Standby));
    c.run_until(P * 3, STEP, |c| c.master() == Some(standby));
}
