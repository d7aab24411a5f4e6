//! The guard of an `--exec` child (`tenure exec-guard`) with real processes: it holds its own
//! copy of the lease deadline V, so the child stops at V (SIGTERM; SIGKILL at V + G/2) even
//! when tenure itself cannot act — frozen by SIGSTOP (of tenure's process only) or killed with
//! SIGKILL — and two nodes' children never run at once. T = 2 s, p = 200 ms, D = 2/3 T,
//! G = T/6 (the defaults).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tenure_tests::expect::{settle_timeout, wait_log_contains};
use tenure_tests::scenarios::freeze_outside_the_lease_lock;
use tenure_tests::{Cluster, NodeSpec, serial, wait_for, wait_until};

const TWO: [&str; 2] = ["node-a", "node-b"];

/// The child: records its pid, then appends `<node> <pid> <wall ns>` to `beats` every ~20 ms
/// until it is killed. With `ignore_term` it ignores SIGTERM, so only the SIGKILL at V + G/2
/// stops it.
fn child_script(dir: &Path, ignore_term: bool) -> String {
    let script = dir.join("beat.sh");
    let trap = if ignore_term {
        "trap '' TERM"
    } else {
        "trap 'exit 0' TERM"
    };
    std::fs::write(
        &script,
        format!(
            "{trap}\necho $$ >> \"$1/$TENURE_NODE.pids\"\nwhile :; do echo \"$TENURE_NODE $$ $(date +%s%N)\" >> \"$1/beats\"; sleep 0.02; done\n"
        ),
    )
    .unwrap();
    format!("exec sh {} {}", script.display(), dir.display())
}

fn pids(dir: &Path, node: &str) -> Vec<i32> {
    std::fs::read_to_string(dir.join(format!("{node}.pids")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// `/proc/<pid>/stat` after the command name: state, ppid, pgrp, session, ...
fn stat(pid: i32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    Some(rest.split_whitespace().map(String::from).collect())
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|f| f[0] != "Z")
}

fn ppid(pid: i32) -> Option<i32> {
    stat(pid)?.get(1)?.parse().ok()
}

fn session(pid: i32) -> Option<i32> {
    stat(pid)?.get(3)?.parse().ok()
}

/// Stopped by a signal (state T)?
fn frozen(pid: i32) -> bool {
    stat(pid).is_some_and(|f| f[0] == "T")
}

/// Live processes started for this test: a command line naming the test's directory (guards,
/// children, nodes) or a member of one of the children's process groups.
fn leftovers(root: &Path, groups: &BTreeSet<i32>) -> Vec<String> {
    let root = root.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let Some(f) = stat(pid) else { continue };
        if f[0] == "Z" {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        let pgrp: i32 = f[2].parse().unwrap_or(0);
        if cmdline.contains(&root) || groups.contains(&pgrp) {
            found.push(format!("{pid} (pgrp {pgrp}): {cmdline}"));
        }
    }
    found
}

/// Kills what a failed test may leave: every recorded child's process group.
struct Reaper(std::path::PathBuf);
impl Drop for Reaper {
    fn drop(&mut self) {
        for n in TWO {
            for p in pids(&self.0, n) {
                // SAFETY: signalling the test's own children's process groups.
                unsafe { libc::kill(-p, libc::SIGKILL) };
            }
        }
    }
}

/// (node, pid, wall ns) of every beat.
fn beats(dir: &Path) -> Vec<(String, i32, u128)> {
    std::fs::read_to_string(dir.join("beats"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            if f.len() != 3 {
                return None;
            }
            Some((f[0].to_string(), f[1].parse().ok()?, f[2].parse().ok()?))
        })
        .collect()
}

fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Issue 12, item 7: tenure's own process is frozen (SIGSTOP; its guard and child are not in
/// its process group, so they run on) for 2.5 T. The guard stops the child at the deadline
/// while tenure is still frozen, before the standby takes over and starts its own child; after
/// SIGCONT the old tenure demotes without starting anything, and nothing is left behind.
#[test]
fn a_frozen_tenure_cannot_keep_its_exec_child_running_beside_the_new_masters() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let (d, g) = (tm.t * 2 / 3, tm.t / 6);
    let dir = c.root().join("exec");
    std::fs::create_dir_all(&dir).unwrap();
    let _reaper = Reaper(dir.clone());
    // The old child ignores SIGTERM: it runs until the guard's SIGKILL at V + G/2, the latest
    // the guard allows.
    let cmd = child_script(&dir, true);
    for n in TWO {
        c.start(NodeSpec::new(n).args(&["--exec", &cmd]));
    }
    let (first, _) = c.wait_stable_master(&TWO, settle_timeout(&tm));
    let second = TWO.into_iter().find(|n| *n != first).unwrap();
    let tenure = c.node(&first).pid().unwrap();
    let child = wait_for(2 * tm.p + tm.margin, "the master's --exec child", || {
        pids(&dir, &first).first().copied().filter(|p| alive(*p))
    });
    let guard = ppid(child).expect("the child's parent");
    assert_ne!(
        guard, tenure,
        "the child must run under a guard, not tenure"
    );
    assert_eq!(ppid(guard), Some(tenure), "the guard is tenure's child");
    assert_ne!(
        session(guard),
        session(tenure),
        "the guard runs in a session of its own"
    );
    assert!(
        wait_until(tm.t, || beats(&dir).len() >= 3),
        "the child does not beat"
    );

    let stop_at = freeze_outside_the_lease_lock(&c, &first);
    let stop_wall = wall_ns() - stop_at.elapsed().as_nanos();
    // V is at most D after the freeze (the last renewal was sent before it): the child is gone
    // by V + G/2, and tenure is still frozen then, so it was the guard.
    let bound = d + g / 2 + tm.margin;
    assert!(
        wait_until(bound, || !alive(child)),
        "the old child still runs {bound:?} after its tenure froze"
    );
    let gone_after = stop_at.elapsed();
    assert!(
        frozen(tenure),
        "{first}'s tenure was thawed before its child stopped"
    );
    assert!(
        wait_until(tm.margin, || !alive(guard)),
        "the guard outlived the child it stopped"
    );
    // The takeover, while the old tenure is still frozen: the standby starts its own child.
    // (Its timing is other tests' business: the bound only keeps a loaded machine, whose
    // storage calls time out, from failing this one.)
    let takeover = 3 * tm.t + tm.margin + Duration::from_secs(2);
    c.wait_answer(second, "MASTER", takeover);
    let new_child = wait_for(tm.t, "the new master's --exec child", || {
        pids(&dir, second).first().copied().filter(|p| alive(*p))
    });
    assert!(
        wait_until(tm.t, || beats(&dir)
            .iter()
            .filter(|b| b.1 == new_child)
            .count()
            >= 3),
        "the new master's child does not beat"
    );
    // The freeze lasts 2.5 T (longer only if the takeover came late).
    std::thread::sleep((tm.t * 5 / 2).saturating_sub(stop_at.elapsed()));
    assert!(
        frozen(tenure),
        "{first}'s tenure was thawed during the test"
    );
    c.node(&first).sigcont();

    // The old tenure demotes cleanly: STANDBY, its guard reaped, no child started again.
    c.wait_answer(&first, "STANDBY", tm.t + tm.margin);
    wait_log_contains(&c, &first, "self-fenced", tm.margin);
    wait_log_contains(&c, &first, "by its guard at the lease deadline", tm.margin);
    wait_log_contains(&c, &first, "the lease deadline passed", tm.margin);
    assert!(
        wait_until(tm.margin, || stat(guard).is_none()),
        "the old guard was not reaped after SIGCONT"
    );
    // Unless it became master again (a loaded machine's store can make the new master
    // self-fence too), the old master starts nothing.
    let thawed = Instant::now();
    std::thread::sleep(2 * tm.p);
    let again = c
        .history()
        .of(&first)
        .any(|s| s.is_master() && s.sent >= thawed);
    if !again {
        assert_eq!(
            pids(&dir, &first),
            vec![child],
            "the old master restarted its child"
        );
    }

    // The record, child by child (pid): each one's beats span an interval, and no two
    // intervals overlap. Each beat's time is taken just before its write; the inequality leaves
    // T − D − G/2 ≈ 500 ms between the guard's SIGKILL at V + G/2 and the earliest takeover,
    // so a gap of at least M = 100 ms (DESIGN's answer-latency margin) absorbs the
    // time-to-write and scheduling delays, and the bug (the old child running on for the whole
    // freeze) fails it by seconds.
    let mut spans: BTreeMap<i32, (String, u128, u128)> = BTreeMap::new();
    for (node, pid, t) in beats(&dir) {
        let e = spans.entry(pid).or_insert((node, t, t));
        e.1 = e.1.min(t);
        e.2 = e.2.max(t);
    }
    let old = spans.get(&child).expect("the old child's beats").clone();
    assert!(spans.contains_key(&new_child), "no beats of the new child");
    // The old child beat on while its tenure was frozen: the guard, not tenure, stopped it.
    assert!(
        old.2 > stop_wall,
        "the old child did not run on after its tenure froze (it should, until V)"
    );
    let mut order: Vec<(i32, (String, u128, u128))> = spans.into_iter().collect();
    order.sort_by_key(|(_, s)| s.1);
    for w in order.windows(2) {
        let ((p0, (n0, _, last)), (p1, (n1, first_beat, _))) = (&w[0], &w[1]);
        let gap_ms = (*first_beat as i128 - *last as i128) / 1_000_000;
        eprintln!("{n0}'s child {p0} -> {n1}'s child {p1}: {gap_ms} ms between the beats");
        assert!(
            gap_ms >= 100,
            "two children ran at once or too close: {n1}'s child {p1} beat first {gap_ms} ms after {n0}'s child {p0} beat last"
        );
    }
    eprintln!(
        "old child gone {gone_after:?} after the freeze; its last beat {} ms after the freeze",
        (old.2 - stop_wall) / 1_000_000
    );
    c.assert_safe();

    // Nothing is left once the nodes are gone: kill -9 leaves the new master's guard to stop
    // its child at the last deadline (at most D + G/2).
    let groups: BTreeSet<i32> = TWO.iter().flat_map(|n| pids(&dir, n)).collect();
    for n in TWO {
        c.node_mut(n).kill9();
    }
    let bound = d + g / 2 + tm.margin;
    let mut left = Vec::new();
    assert!(
        wait_until(bound, || {
            left = leftovers(c.root(), &groups);
            left.is_empty()
        }),
        "left running {bound:?} after the nodes were killed: {left:#?}"
    );
}

/// kill -9 of tenure: the guard keeps the last deadline it received and stops the child then
/// (not at once, not never), then exits; nothing of the child's process group is left.
#[test]
fn after_kill_9_of_tenure_the_guard_stops_the_child_at_the_last_deadline() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let (d, g) = (tm.t * 2 / 3, tm.t / 6);
    let dir = c.root().join("exec");
    std::fs::create_dir_all(&dir).unwrap();
    let _reaper = Reaper(dir.clone());
    let cmd = child_script(&dir, false);
    c.start(NodeSpec::new("node-a").args(&["--exec", &cmd]));
    c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    let child = wait_for(2 * tm.p + tm.margin, "the --exec child", || {
        pids(&dir, "node-a").first().copied().filter(|p| alive(*p))
    });
    let guard = ppid(child).expect("the child's parent");
    // A renewal every R: the last deadline lies at least D − R ahead of any moment.
    std::thread::sleep(3 * tm.p);
    let killed_at = c.node_mut("node-a").kill9();
    // Right after the kill the deadline is still ahead: the child runs on.
    assert!(
        alive(child),
        "the child stopped with tenure, before its deadline"
    );
    let bound = d + g / 2 + tm.margin;
    assert!(
        wait_until(bound, || !alive(child)),
        "the child still runs {bound:?} after tenure was killed: its guard did not stop it"
    );
    let gone_after = killed_at.elapsed();
    assert!(
        wait_until(tm.margin, || !alive(guard)),
        "the guard outlived its child"
    );
    wait_log_contains(
        &c,
        "node-a",
        "tenure closed the channel to its guard",
        tm.margin,
    );
    wait_log_contains(&c, "node-a", "the lease deadline passed", tm.margin);
    // The guard logged, on the end of file (which came after the kill), how far its last
    // deadline still lay: the child must not have stopped before that. A renewal every R keeps
    // it at least D − R ahead; under p only if renewals were already failing.
    let log = c.node("node-a").last_start_log();
    let remaining = log
        .split("remaining_ms=")
        .nth(1)
        .and_then(|r| r.split(|ch: char| !ch.is_ascii_digit()).next())
        .and_then(|r| r.parse::<u64>().ok())
        .map(Duration::from_millis)
        .expect("remaining_ms in the guard's log line");
    eprintln!(
        "child gone {gone_after:?} after kill -9 of tenure; the guard's last deadline was {remaining:?} ahead"
    );
    assert!(
        remaining >= tm.p,
        "the last deadline lay only {remaining:?} ahead at the kill"
    );
    // No tolerance needed: the end of file came after `killed_at`, `remaining` is rounded down,
    // and the child's death is seen late (polling), all of which only make `gone_after` larger.
    assert!(
        gone_after >= remaining,
        "the child was stopped {gone_after:?} after the kill, before its deadline {remaining:?} after"
    );
    let groups = BTreeSet::from([child]);
    let mut left = Vec::new();
    assert!(
        wait_until(tm.margin, || {
            left = leftovers(c.root(), &groups);
            left.is_empty()
        }),
        "left running: {left:#?}"
    );
}
