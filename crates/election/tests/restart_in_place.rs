//! Restart in place (DESIGN §3.6): a process that knows its previous instance on this host
//! is dead (`Config::previous_instance`, from the state file's free lock) takes its name back
//! at once, and the lease too when the lease names that instance, instead of waiting T; a
//! standby never answers MASTER meanwhile. Without that knowledge, or naming another
//! instance, the T rule applies as before. Simulated time: the bounds are exact.

use std::time::Duration;
use tenure_election::config::Config;
use tenure_election::types::NodeState;
use tenure_testkit::harness::Cluster;

const T: Duration = Duration::from_secs(3);
const P: Duration = Duration::from_millis(100);
const STEP: Duration = Duration::from_millis(5);

fn node(name: &str, instance: &str, previous: Option<&str>) -> Config {
    Config {
        previous_instance: previous.map(str::to_string),
        ..Config::with_defaults(name, instance, format!("http://{name}"), T, P)
    }
}

/// `a` (instance `a-1`) master, `b` (`b-1`) standby, settled for a few polls: the cluster
/// and their indices.
fn master_and_standby() -> (Cluster, usize, usize) {
    let mut c = Cluster::initialised(T);
    let a = c.add(node("a", "a-1", None));
    c.run_until(T, STEP, |c| c.master() == Some(a));
    let b = c.add(node("b", "b-1", None));
    c.run_until(T, STEP, |c| c.state(b) == NodeState::Standby);
    c.run_for(P * 5, STEP);
    (c, a, b)
}

/// `a` master, `b` standby; then `a` is killed (no release) and a new `a` starts at once,
/// naming `previous` as its dead predecessor. Returns the cluster, the new `a`'s index, and
/// how long (simulated) until some node answered MASTER again, and whether it was `b`.
fn restart_master(previous: Option<&str>) -> (Cluster, usize, Duration, bool) {
    let (mut c, a, b) = master_and_standby();
    c.kill(a);
    let a2 = c.add(node("a", "a-2", previous));
    let mut b_was_master = false;
    let took = c.run_until(T * 3, STEP, |c| {
        b_was_master |= c.master() == Some(b);
        c.master().is_some()
    });
    (c, a2, took, b_was_master)
}

#[test]
fn a_restarted_master_takes_its_lease_back_without_waiting_t() {
    let (mut c, a2, took, b_was_master) = restart_master(Some("a-1"));
    assert!(!b_was_master, "the standby answered MASTER");
    assert_eq!(c.master(), Some(a2));
    // Start-up, a corroboration and a cautious take: a few polls, far below T.
    assert!(took < T / 2, "MASTER again only after {took:?} (T = {T:?})");
    let snap = c.snapshot(a2);
    assert!(snap.own_epoch.is_some_and(|e| e >= 2), "{snap:?}");
}

#[test]
fn without_the_state_file_a_restarted_master_waits_and_the_standby_takes_over() {
    for previous in [None, Some("a-0")] {
        let (_, _, took, b_was_master) = restart_master(previous);
        assert!(
            b_was_master,
            "previous {previous:?}: the standby did not take over"
        );
        // The T rule, from the standby's first read of the last renewal: at least T − R
        // after the kill (the master may have died just before its next renewal).
        let r = node("b", "b-1", None).renew_interval;
        assert!(
            took >= T - r,
            "previous {previous:?}: a take after {took:?} < T − R"
        );
    }
}

#[test]
fn a_restarted_standby_serves_standby_within_a_few_polls() {
    let (mut c, a, b) = master_and_standby();
    c.kill(b);
    let b2 = c.add(node("b", "b-2", Some("b-1")));
    let took = c.run_until(T, STEP, |c| c.state(b2) == NodeState::Standby);
    assert!(took < P * 5, "STANDBY only after {took:?}");
    assert_eq!(c.master(), Some(a));
    // Not knowing it: the old record is watched for T first.
    c.kill(b2);
    let b3 = c.add(node("b", "b-3", None));
    let took = c.run_until(T * 2, STEP, |c| c.state(b3) == NodeState::Standby);
    assert!(took >= T, "STANDBY after {took:?}, before T");
}

/// A lone `--mode disabled` node refuses a store with an unreleased lease, except its own dead
/// previous instance's: that one it takes back like any restart in place.
#[test]
fn a_lone_disabled_node_restarted_in_place_takes_its_lease_back() {
    use tenure_election::types::Mode;
    let disabled = |instance: &str, previous: Option<&str>| Config {
        mode: Mode::Disabled,
        ..node("a", instance, previous)
    };
    let mut c = Cluster::initialised(T);
    let a = c.add(disabled("a-1", None));
    c.run_until(T * 2, STEP, |c| c.master() == Some(a));
    c.kill(a);
    let a2 = c.add(disabled("a-2", Some("a-1")));
    let took = c.run_until(T, STEP, |c| c.master() == Some(a2));
    assert!(took < T / 2, "MASTER again only after {took:?}");
    c.kill(a2);
    // Not knowing its predecessor dead, it watches the record for T, then refuses the lease.
    let a3 = c.add(disabled("a-3", None));
    c.run_until(T * 2, STEP, |c| {
        !c.nodes[a3].alive || c.nodes[a3].exit.is_some()
    });
    let (code, why) = c.nodes[a3].exit.clone().expect("an exit");
    assert_eq!(code, 1, "{why}");
    assert!(why.contains("unreleased lease"), "{why}");
}
