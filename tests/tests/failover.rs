//! Failover end to end: kill -9, SIGTERM and SIGSTOP of the master, and a cold start of five
//! nodes. T = 2 s, p = 200 ms; bounds are stated in T, p and the margin (see `Timing`).
//!
//! Timing-sensitive: run with `cargo test -p tenure-tests -- --test-threads=1` (each test also
//! holds `serial()`), with `TENURE_BIN` pointing at the binary or `cargo build -p tenure` done.

use std::time::{Duration, Instant};
use tenure_tests::expect::{assert_takeover_within_bounds, settle_timeout};
use tenure_tests::scenarios::{self, THREE, freeze_outside_the_lease_lock, holds_write_flock};
use tenure_tests::{Cluster, serial};

// The scenarios are shared with the object-store backend (tests/s3_failover.rs).

#[test]
fn kill9_of_the_master_fails_over_within_t_plus_2p() {
    let _serial = serial();
    scenarios::kill9_fails_over(&mut Cluster::standard());
}

#[test]
fn sigterm_of_the_master_hands_over_within_p() {
    let _serial = serial();
    scenarios::sigterm_hands_over(&mut Cluster::standard());
}

#[test]
fn sigstop_of_the_master_self_fences_and_a_standby_takes_over() {
    let _serial = serial();
    // Freeze it outside its ~1 ms locked lease write (a freeze inside it is the known
    // limitation tested, ignored, below): if /proc/locks shows the lock held, thaw and retry.
    scenarios::sigstop_self_fences(&mut Cluster::standard(), freeze_outside_the_lease_lock);
}

#[test]
fn five_nodes_started_together_elect_exactly_one_master() {
    let _serial = serial();
    scenarios::five_started_together_elect_one(&mut Cluster::standard());
}

/// A master frozen at the worst moment — while it holds the exclusive flock on `lease.lock`
/// for a write — must still be replaced: the freeze is indistinguishable from a crash.
/// Known to fail on one machine's disk: the standbys read the lease without a lock and see it
/// stand still, but their takeover write needs the lock the frozen process holds ("lease.lock
/// is held by another process"), so nobody takes over until SIGCONT or kill. Safety holds (the
/// frozen master's answers end at its deadline). On NFSv4 the server revokes a frozen client's
/// locks when its lease expires (90 s by default). README "Known limitations" says so.
#[test]
#[ignore = "known liveness gap: a master frozen while holding the lease flock blocks takeover; run with --ignored"]
fn sigstop_while_the_master_holds_the_lease_lock_still_fails_over() {
    use std::os::unix::fs::MetadataExt;
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    c.start_all(&THREE);
    let (old, _) = c.wait_stable_master(&THREE, settle_timeout(&tm));
    let pid = c.node(&old).pid().expect("running");
    let ino = std::fs::metadata(c.store().join("lease.lock"))
        .expect("lease.lock exists")
        .ino();

    // Freeze it while it holds the lock: poll /proc/locks, SIGSTOP, confirm, else thaw and retry.
    let mut stopped_at = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while stopped_at.is_none() && Instant::now() < deadline {
        if holds_write_flock(pid, ino) {
            let at = c.node(&old).sigstop();
            std::thread::sleep(Duration::from_millis(5));
            if holds_write_flock(pid, ino) {
                stopped_at = Some(at);
            } else {
                c.node(&old).sigcont();
            }
        }
    }
    let stopped_at = stopped_at.expect("caught the master holding the lease lock");
    let onset = c.wait_takeover(
        stopped_at,
        &[&old],
        tm.max_takeover() + Duration::from_secs(3),
    );
    assert_takeover_within_bounds(&c.history(), &onset, stopped_at, &tm);
    c.node(&old).sigcont();
    c.assert_safe();
}
