//! The failover scenarios every backend must pass, run on a cluster the caller made (a directory
//! in `tests/failover.rs`, S3 in `tests/s3_failover.rs`): kill -9, SIGTERM and SIGSTOP of the
//! master, and a cold start of five nodes. Bounds are stated in T, p and the margin (see
//! [`crate::Timing`]); every scenario ends with the safety checker over the whole history.

use crate::expect::{
    assert_kept_answering, assert_never_master_since, assert_takeover_within_bounds, expect_exit,
    settle_timeout, wait_status_in_states,
};
use crate::{Cluster, History};
use crate::{observe_for, wait_until};
use std::path::Path;
use std::time::{Duration, Instant};

pub const THREE: [&str; 3] = ["node-a", "node-b", "node-c"];

fn others<'a>(all: &[&'a str], but: &str) -> Vec<&'a str> {
    all.iter().copied().filter(|n| *n != but).collect()
}

/// kill -9 of the master: another node answers MASTER within [T − p, T + 2p + margin], with a
/// higher epoch, and the survivors agree on it.
pub fn kill9_fails_over(c: &mut Cluster) {
    let tm = c.timing;
    c.start_all(&THREE);
    let (old, old_epoch) = c.wait_stable_master(&THREE, settle_timeout(&tm));

    let killed_at = c.node_mut(&old).kill9();
    let onset = c.wait_takeover(
        killed_at,
        &[&old],
        tm.max_takeover() + Duration::from_secs(3),
    );
    let h = c.history();
    assert_takeover_within_bounds(&h, &onset, killed_at, &tm);
    let new_epoch = onset.epoch.expect("a MASTER answer carries X-HA-Epoch");
    assert!(
        new_epoch > old_epoch,
        "new epoch {new_epoch} is not above the old {old_epoch}"
    );

    // The survivors agree on the new master.
    let survivors = others(&THREE, &old);
    let (m, e) = c.wait_stable_master(&survivors, 2 * tm.t);
    assert_eq!((m.as_str(), e), (onset.node.as_str(), new_epoch));
    c.assert_safe();
}

/// SIGTERM of the master: it exits 0, another node answers MASTER within p + margin of the old
/// master's last MASTER answer, and the others show the old one TERMINATED.
pub fn sigterm_hands_over(c: &mut Cluster) {
    let tm = c.timing;
    c.start_all(&THREE);
    let (old, old_epoch) = c.wait_stable_master(&THREE, settle_timeout(&tm));

    let term_at = c.node(&old).sigterm();
    let onset = c.wait_takeover(term_at, &[&old], tm.max_takeover() + Duration::from_secs(3));
    let code = expect_exit(c, &old, tm.t + tm.margin + Duration::from_secs(2));
    assert_eq!(
        code, 0,
        "{old} exited with {code} after SIGTERM, expected 0"
    );

    let h = c.history();
    let last = h
        .last_master_answer(&old)
        .expect("the old master answered MASTER before")
        .clone();
    assert!(
        onset.epoch.unwrap_or(0) > old_epoch,
        "new epoch {:?} is not above the old {old_epoch}",
        onset.epoch
    );
    // The handover: the new master starts answering within p + margin of the old master's
    // last MASTER answer (conservatively: from the latest instant of that answer to the
    // earliest instant the new one can have started).
    let gap = onset.earliest().saturating_duration_since(last.received);
    let bound = tm.p + tm.margin;
    assert!(
        gap <= bound,
        "handover too slow: {} became MASTER no earlier than {gap:?} after {old}'s last MASTER answer (+{}ms), \
         bound p + margin = {bound:?}; timeline:\n{}",
        onset.node,
        h.rel(last.received),
        h.timeline()
    );
    eprintln!(
        "handover {old} -> {} in at most {:?} (bound {bound:?})",
        onset.node,
        onset.latest().saturating_duration_since(last.sent)
    );

    for o in others(&THREE, &old) {
        wait_status_in_states(c, o, &old, "TERMINATED", 3 * tm.t);
    }
    c.assert_safe();
}

/// SIGSTOP of the master for 1.5 T: a standby takes over within the kill -9 bounds; after
/// SIGCONT the old master answers again and never MASTER. `freeze` stops the node and returns
/// the instant just before the signal (a backend may need to pick the moment).
pub fn sigstop_self_fences(c: &mut Cluster, freeze: impl Fn(&Cluster, &str) -> Instant) {
    let tm = c.timing;
    c.start_all(&THREE);
    let (old, old_epoch) = c.wait_stable_master(&THREE, settle_timeout(&tm));

    let stopped_at = freeze(c, &old);
    let frozen_for = tm.t * 3 / 2;
    let onset = c.wait_takeover(stopped_at, &[&old], frozen_for);
    let h = c.history();
    assert_takeover_within_bounds(&h, &onset, stopped_at, &tm);
    assert!(onset.epoch.unwrap_or(0) > old_epoch);

    let now = Instant::now();
    if stopped_at + frozen_for > now {
        observe_for(stopped_at + frozen_for - now);
    }
    let cont_at = c.node(&old).sigcont();

    // The woken node answers again, and never MASTER.
    let answered = wait_until(2 * tm.t, || {
        c.history()
            .of(&old)
            .any(|s| s.sent >= cont_at && !s.is_down())
    });
    assert!(
        answered,
        "{old} did not answer within {:?} after SIGCONT; timeline:\n{}",
        2 * tm.t,
        c.history().timeline()
    );
    observe_for(tm.t + 2 * tm.p);
    let h = c.history();
    // Requests sent while it was frozen are answered after SIGCONT: they count too.
    let frozen = stopped_at + Duration::from_millis(20);
    let bad: Vec<_> = h
        .of(&old)
        .filter(|s| s.sent >= frozen && s.received >= cont_at && s.is_master())
        .collect();
    assert!(
        bad.is_empty(),
        "{old} answered MASTER after SIGCONT (+{}ms): first in [+{}ms, +{}ms] epoch {:?}; timeline:\n{}",
        h.rel(cont_at),
        h.rel(bad[0].sent),
        h.rel(bad[0].received),
        bad[0].epoch,
        h.timeline()
    );
    assert_never_master_since(&h, &old, cont_at);
    let (m, _) = c.wait_stable_master(&THREE, 2 * tm.t);
    assert_eq!(m, onset.node, "the master changed again after SIGCONT");
    c.assert_safe();
}

/// Five nodes started at once: exactly one MASTER and four STANDBY within T + 2p + margin of
/// the moment the last of them began answering, and it stays so for a few polls. (The bound
/// starts there, not at the spawn: exec and start-up of five debug binaries on a busy
/// two-core machine is not election time, and varies by a second.)
pub fn five_started_together_elect_one(c: &mut Cluster) {
    let tm = c.timing;
    let five = ["node-1", "node-2", "node-3", "node-4", "node-5"];
    let t0 = Instant::now();
    c.start_all(&five);
    let bound = tm.max_takeover();
    // When every node had answered once: the first answered request of each was sent before
    // it answered, so the bound counted from there is, if anything, strict.
    let all_up = |h: &History| -> Option<Instant> {
        five.iter()
            .map(|n| h.of(n).find(|s| !s.is_down()).map(|s| s.sent))
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().max())
    };

    let mut settled: Option<(String, Instant)> = None;
    let ok = wait_until(settle_timeout(&tm), || {
        let h = c.history();
        let latest: Vec<_> = five.iter().filter_map(|n| h.latest(n)).collect();
        if latest.len() != five.len() {
            return false;
        }
        let masters: Vec<_> = latest.iter().filter(|s| s.is_master()).collect();
        if masters.len() == 1
            && latest
                .iter()
                .all(|s| s.is_master() || s.answer == "STANDBY")
        {
            let at = latest
                .iter()
                .map(|s| s.received)
                .max()
                .expect("five samples");
            settled = Some((masters[0].node.clone(), at));
            true
        } else {
            false
        }
    });
    let h = c.history();
    let up = all_up(&h);
    let within = |at: Instant| up.is_some_and(|u| at.saturating_duration_since(u) <= bound);
    let Some((master, at)) = settled.filter(|(_, at)| ok && within(*at)) else {
        panic!(
            "within T + 2p + margin = {bound:?} of all five answering ({} ms after the spawn), \
             not exactly one MASTER and four STANDBY; timeline:\n{}",
            up.map_or("never".into(), |u| h.rel(u).to_string()),
            h.timeline()
        );
    };
    eprintln!(
        "{master} elected {:?} after the start, {:?} after all five answered",
        at.saturating_duration_since(t0),
        at.saturating_duration_since(up.expect("checked"))
    );

    // It stays so for a few polls.
    observe_for(5 * tm.p);
    let h = c.history();
    let until = Instant::now();
    let gap = 4 * tm.p;
    assert_kept_answering(&h, &master, at, until, "MASTER", gap);
    for n in five.iter().filter(|n| **n != master) {
        assert_kept_answering(&h, n, at, until, "STANDBY", gap);
    }
    c.assert_safe();
}

/// SIGSTOP at any moment (object stores hold no lock a frozen process could keep).
pub fn freeze_now(c: &Cluster, label: &str) -> Instant {
    c.node(label).sigstop()
}

/// SIGSTOP the node at a moment it does not hold the write lock of the directory store's
/// `lease.lock` (a freeze inside its ~1 ms locked write blocks every takeover: README "Known
/// limitations"); returns the instant just before the signal.
pub fn freeze_outside_the_lease_lock(c: &Cluster, label: &str) -> Instant {
    freeze_outside_the_lease_lock_of(c, c.store(), label)
}

/// [`freeze_outside_the_lease_lock`] for the directory store at `store`.
pub fn freeze_outside_the_lease_lock_of(c: &Cluster, store: &Path, label: &str) -> Instant {
    use std::os::unix::fs::MetadataExt;
    let pid = c.node(label).pid().expect("running");
    let ino = std::fs::metadata(store.join("lease.lock"))
        .expect("lease.lock exists")
        .ino();
    for _ in 0..100 {
        let at = c.node(label).sigstop();
        // The stop takes effect asynchronously: look once it surely has.
        std::thread::sleep(Duration::from_millis(2));
        if !holds_write_flock(pid, ino) {
            return at;
        }
        c.node(label).sigcont();
        std::thread::sleep(Duration::from_millis(7));
    }
    panic!("{label} held the lease lock at 100 attempts to freeze it");
}

/// Does process `pid` hold an exclusive flock on the file with inode `ino` (per /proc/locks)?
pub fn holds_write_flock(pid: i32, ino: u64) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (blocked waiters have "->")
        f.len() >= 6
            && f[1] == "FLOCK"
            && f[3] == "WRITE"
            && f[4].parse::<i32>().ok() == Some(pid)
            && f[5].rsplit(':').next().and_then(|i| i.parse::<u64>().ok()) == Some(ino)
    })
}

/// Restart in place (`--state-dir`): kill -9 of the master and an immediate restart with the
/// same state directory. The restarted process answers MASTER again well before T (it knows
/// its previous instance is dead), and no other node answers MASTER meanwhile; then the same
/// for a standby, which serves STANDBY again without watching its old record for T. The
/// cluster's T must be long (≥ 5 s) so that a failover could not pass for a resume.
/// `state_dir` is the node's `--state-dir`, already in the specs the caller started.
pub fn restart_in_place(c: &mut Cluster, labels: &[&str]) {
    let tm = c.timing;
    assert!(
        tm.t >= Duration::from_secs(5),
        "T too short to tell a resume from a failover"
    );
    let (old, old_epoch) = c.wait_stable_master(labels, settle_timeout(&tm));
    let killed_at = Instant::now();
    c.node_mut(&old).restart();
    // Bounded by T/2: a restart that waited T would let a standby take over first.
    let back = answer_since(c, &old, "MASTER", killed_at, tm.t / 2);
    let epoch = back.epoch.expect("a MASTER answer carries X-HA-Epoch");
    assert!(epoch > old_epoch, "epoch {epoch} is not above {old_epoch}");
    let h = c.history();
    for other in others(labels, &old) {
        assert_never_master_since(&h, other, killed_at);
    }
    let log = c.node(&old).last_start_log();
    assert!(
        log.contains("standing for election (rank 0): restart in place"),
        "{old} did not take its lease back as a restart in place:\n{log}"
    );
    // A standby: STANDBY again at once, the master untouched.
    let standby = others(labels, &old)[0].to_string();
    let restarted_at = Instant::now();
    c.node_mut(&standby).restart();
    answer_since(c, &standby, "STANDBY", restarted_at, tm.t / 2);
    let log = c.node(&standby).last_start_log();
    assert!(
        log.contains("restart in place: nodes/") && !log.contains("to stand still for T"),
        "{standby} watched its old record instead of taking its name back:\n{log}"
    );
    let h = c.history();
    assert_kept_answering(
        &h,
        &old,
        restarted_at,
        Instant::now(),
        "MASTER",
        tm.p + tm.margin,
    );
    c.assert_safe();
}

/// The first sample of `label` answering `answer` that was sent at or after `since` (the
/// observer's latest sample may still be one from before a restart); panics after `timeout`.
pub fn answer_since(
    c: &Cluster,
    label: &str,
    answer: &str,
    since: Instant,
    timeout: Duration,
) -> crate::Sample {
    let mut got = None;
    let ok = wait_until(timeout, || {
        got = c
            .history()
            .of(label)
            .find(|s| s.sent >= since && s.answer == answer)
            .cloned();
        got.is_some()
    });
    assert!(
        ok,
        "{label} did not answer {answer} within {timeout:?} of its restart; timeline:\n{}",
        c.history().timeline()
    );
    got.expect("set when true")
}
