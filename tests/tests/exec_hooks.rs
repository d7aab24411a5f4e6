//! `--exec` and the hooks with real processes: the singleton child runs on the master only,
//! is gone before the released lease is written, is stopped by its guard at the lease deadline
//! after a kill -9 of tenure (more in exec_guard.rs), and is restarted with backoff if it dies
//! while master. Hooks receive the TENURE_* variables, and a hanging hook is killed at the demote
//! grace G without blocking the election. T = 2 s, p = 200 ms, G = T/6.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tenure_tests::expect::{assert_kept_answering, settle_timeout, wait_log_contains};
use tenure_tests::{Cluster, NodeSpec, serial, wait_for, wait_until};

const THREE: [&str; 3] = ["node-a", "node-b", "node-c"];

/// The child: records its pid, then beats until stopped. With `ignore_term` it ignores SIGTERM,
/// so only the SIGKILL at G/2 can stop it.
fn child_script(dir: &Path, ignore_term: bool) -> String {
    let script = dir.join(if ignore_term {
        "stubborn.sh"
    } else {
        "child.sh"
    });
    let trap = if ignore_term {
        "trap '' TERM"
    } else {
        "trap 'exit 0' TERM"
    };
    std::fs::write(
        &script,
        format!(
            "{trap}\necho $$ >> \"$1/$TENURE_NODE.pids\"\necho \"$TENURE_EPOCH\" >> \"$1/$TENURE_NODE.epochs\"\nwhile :; do sleep 0.05; done\n"
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

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn running(dir: &Path, node: &str) -> Vec<i32> {
    pids(dir, node).into_iter().filter(|p| alive(*p)).collect()
}

/// Kills every recorded child's process group: children outlive tenure by design.
struct Reaper(PathBuf, Vec<&'static str>);
impl Drop for Reaper {
    fn drop(&mut self) {
        for n in &self.1 {
            for p in pids(&self.0, n) {
                // SAFETY: signalling the test's own children's process groups.
                unsafe { libc::kill(-p, libc::SIGKILL) };
            }
        }
    }
}

#[derive(Default)]
struct Seen {
    /// Samples in which children of two nodes ran at once: (node, node).
    overlaps: Vec<(String, String)>,
    /// Samples in which the lease file already held a released record and a child still ran.
    alive_after_release: Vec<String>,
    released_at: Option<Instant>,
}

/// Samples every ~5 ms: first the lease file (has a released record appeared?), then which
/// nodes' children are alive.
fn sampler(
    dir: PathBuf,
    store: PathBuf,
    nodes: Vec<&'static str>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let lease = std::fs::read(store.join("lease.lock")).unwrap_or_default();
            let released = lease.windows(15).any(|w| w == b"\"released\":true");
            let now = Instant::now();
            let alive: Vec<&str> = nodes
                .iter()
                .copied()
                .filter(|n| !running(&dir, n).is_empty())
                .collect();
            let mut s = seen.lock().unwrap();
            if alive.len() > 1 {
                s.overlaps.push((alive[0].into(), alive[1].into()));
            }
            if released {
                s.released_at.get_or_insert(now);
                if !alive.is_empty() {
                    s.alive_after_release.push(alive.join(","));
                }
            }
            drop(s);
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

#[test]
fn exec_child_runs_on_the_master_only_and_is_gone_before_the_release() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let dir = c.root().join("exec");
    std::fs::create_dir_all(&dir).unwrap();
    let _reaper = Reaper(dir.clone(), THREE.to_vec());
    // The child ignores SIGTERM: only the SIGKILL at G/2 stops it, still before the release.
    let cmd = child_script(&dir, true);
    for n in THREE {
        c.start(NodeSpec::new(n).args(&["--exec", &cmd]));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sampling = sampler(
        dir.clone(),
        c.store().to_path_buf(),
        THREE.to_vec(),
        stop.clone(),
        seen.clone(),
    );

    let (first, epoch) = c.wait_stable_master(&THREE, settle_timeout(&tm));
    let child = wait_for(2 * tm.p + tm.margin, "the master's --exec child", || {
        running(&dir, &first).first().copied()
    });
    let epochs = std::fs::read_to_string(dir.join(format!("{first}.epochs"))).unwrap();
    assert_eq!(
        epochs.trim(),
        epoch.to_string(),
        "TENURE_EPOCH of the child"
    );
    // A while of normal running: only the master's child, and only one instance of it.
    std::thread::sleep(tm.t);
    for n in THREE.iter().filter(|n| **n != first) {
        assert!(
            pids(&dir, n).is_empty(),
            "{n} is a standby but started a child"
        );
    }
    assert_eq!(
        pids(&dir, &first),
        vec![child],
        "one child, never restarted"
    );

    // SIGTERM: the child must be gone before the released lease appears, and within G/2
    // (+ margin) since it ignores SIGTERM.
    let g = tm.t / 6;
    let term_at = c.node(&first).sigterm();
    assert!(
        wait_until(g + tm.margin, || !alive(child)),
        "the --exec child still runs {:?} after SIGTERM to tenure",
        g + tm.margin
    );
    let gone_after = term_at.elapsed();
    let others: Vec<&str> = THREE.iter().copied().filter(|n| *n != first).collect();
    let (second, _) = c.wait_stable_master(&others, tm.t + 4 * tm.p + tm.margin);
    wait_for(2 * tm.p + tm.margin, "the new master's child", || {
        running(&dir, &second).first().copied()
    });
    std::thread::sleep(2 * tm.p);
    stop.store(true, Ordering::Relaxed);
    sampling.join().unwrap();
    let s = seen.lock().unwrap();
    assert!(s.released_at.is_some(), "no released lease was written");
    assert!(
        s.alive_after_release.is_empty() || s.alive_after_release.iter().all(|a| a == &second),
        "a child of the releasing master ran after the released lease appeared: {:?}",
        s.alive_after_release
    );
    assert!(
        s.overlaps.is_empty(),
        "two nodes' children ran at once: {:?}",
        s.overlaps
    );
    assert!(
        gone_after >= g / 2 - Duration::from_millis(50),
        "the child ignores SIGTERM, so it can only have been killed at G/2; gone after {gone_after:?}"
    );
    assert!(
        c.node_mut(&first).wait_exit(tm.t).is_some(),
        "{first} did not exit"
    );
    c.assert_safe();
}

#[test]
fn exec_child_outlives_kill_9_of_tenure_only_until_the_deadline() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let dir = c.root().join("exec");
    std::fs::create_dir_all(&dir).unwrap();
    let _reaper = Reaper(dir.clone(), vec!["node-a"]);
    let cmd = child_script(&dir, false);
    c.start(NodeSpec::new("node-a").args(&["--exec", &cmd]));
    c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    let child = wait_for(2 * tm.p + tm.margin, "the --exec child", || {
        running(&dir, "node-a").first().copied()
    });
    c.node_mut("node-a").kill9();
    assert!(c.node_mut("node-a").wait_exit(tm.t).is_some());
    // Documented behaviour: tenure cannot stop anything once SIGKILLed, but the child's guard
    // (`tenure exec-guard`, not in tenure's process group) stops it at the last lease deadline
    // it received: at most D (2/3 T) later, SIGKILL G/2 (T/12) after that.
    let bound = tm.t * 2 / 3 + tm.t / 12 + tm.margin;
    assert!(
        wait_until(bound, || !alive(child)),
        "the child still runs {bound:?} after tenure was killed: its guard did not stop it"
    );
}

#[test]
fn exec_child_that_dies_is_restarted_with_backoff() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let dir = c.root().join("exec");
    std::fs::create_dir_all(&dir).unwrap();
    let starts = dir.join("starts");
    let cmd = format!(
        "date +%s%N >> {}; echo $$ >> {}/node-a.pids; exit 3",
        starts.display(),
        dir.display()
    );
    let _reaper = Reaper(dir.clone(), vec!["node-a"]);
    c.start(NodeSpec::new("node-a").args(&["--exec", &cmd]));
    c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    // Backoff 0.5 s, 1 s, 2 s: four starts within about 3.5 s.
    let times: Vec<u128> = wait_for(Duration::from_secs(6), "four starts of the child", || {
        let t: Vec<u128> = std::fs::read_to_string(&starts)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        (t.len() >= 4).then_some(t)
    });
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    assert!(gaps[0] >= 400, "restarted too soon: gaps {gaps:?} ms");
    assert!(
        gaps[1] >= gaps[0] * 3 / 2 && gaps[2] >= gaps[1] * 3 / 2,
        "the restart delay must grow: gaps {gaps:?} ms"
    );
    assert_eq!(
        c.node("node-a").state(),
        "MASTER",
        "restarts never touch the election"
    );
}

/// How long the hooks of the next test hang if nobody kills them.
const HANG: Duration = Duration::from_secs(30);

/// The hooks get the TENURE_* variables, and a hanging hook never blocks the election: the
/// promote hook is killed while the node stays MASTER, and the demote hook is killed at G so
/// the release (and with it the standby's immediate takeover) still happens.
///
/// Nothing here is timed against the wall clock (a loaded machine would make that flaky):
/// every effect is waited for with a bound far below [`HANG`], so a hook that is gone within
/// the bound was killed, not left to finish; the master's release is done within the bound too
/// (it is written only after the demote hook is over), and when it lands the standby's
/// promotion must come from the released lease, not from its expiry after T.
#[test]
fn hooks_get_the_variables_and_a_hanging_hook_never_blocks_the_election() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    // The bound of every wait below: generous for a loaded machine, far below HANG.
    let bound = HANG / 3;
    // Slack for slow storage calls on a loaded machine (the largest storage timeout the rule
    // D ≥ 2p + storage timeout allows, 933 ms instead of p): see the release below.
    let storage_timeout = tenure_tests::dur_arg(tm.t * 2 / 3 - 2 * tm.p);
    let dir = c.root().join("hooks");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display().to_string();
    let on_change = format!(
        "echo \"$TENURE_NODE $TENURE_PREVIOUS_STATE $TENURE_STATE $TENURE_EPOCH $TENURE_MASTER\" >> {d}/$TENURE_NODE.events"
    );
    // Both hang far beyond G; each records its pid first.
    let hang = HANG.as_secs();
    let on_promote = format!("echo $$ > {d}/$TENURE_NODE.promote.pid; sleep {hang}");
    let on_demote = format!("echo $$ > {d}/$TENURE_NODE.demote.pid; sleep {hang}");
    for n in ["node-a", "node-b"] {
        c.start(NodeSpec::new(n).args(&[
            "--on-change",
            &on_change,
            "--on-promote",
            &on_promote,
            "--on-demote",
            &on_demote,
            "--storage-timeout",
            &storage_timeout,
        ]));
    }
    let (first, epoch) = c.wait_stable_master(&["node-a", "node-b"], settle_timeout(&tm));
    let second = if first == "node-a" {
        "node-b"
    } else {
        "node-a"
    };
    let pid_of = |f: &str| -> Option<i32> {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };
    // The hooks run asynchronously: wait for what they write, never read it once and assert.
    let events =
        |n: &str| std::fs::read_to_string(dir.join(format!("{n}.events"))).unwrap_or_default();
    let promote_pid = wait_for(bound, "the promote hook's pid", || {
        pid_of(&format!("{first}.promote.pid"))
    });
    assert!(
        wait_until(bound, || !alive(promote_pid)),
        "the hanging promote hook (sleep {HANG:?}) still runs {bound:?} after it started: it was not killed (hooks are killed at G)"
    );
    let promote_hook_gone = Instant::now();
    // The hang blocked nothing: the node answered MASTER from its promotion until the hook was
    // gone, and still does; and the on-change hook ran with the variables.
    let h = c.history();
    let promoted = h
        .of(&first)
        .find(|s| s.is_master() && s.epoch == Some(epoch))
        .map(|s| s.sent)
        .expect("wait_stable_master saw the master's answer");
    assert_kept_answering(&h, &first, promoted, promote_hook_gone, "MASTER", tm.t);
    assert_eq!(c.node(&first).state(), "MASTER");
    let promotion_line = |l: &str| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() == 5
            && f[0] == first
            && !f[1].is_empty()
            && f[2] == "MASTER"
            && f[3] == epoch.to_string()
            && f[4] == first
    };
    assert!(
        wait_until(bound, || events(&first).lines().any(promotion_line)),
        "no on-change line `{first} <previous> MASTER {epoch} {first}` within {bound:?} in:\n{}",
        events(&first)
    );

    // A demote hook that hangs: the release waits at most G, then the standby takes over.
    let term_at = c.node(&first).sigterm();
    let demote_pid = wait_for(bound, "the demote hook's pid", || {
        pid_of(&format!("{first}.demote.pid"))
    });
    let onset = c.wait_takeover(term_at, &[first.as_str()], bound);
    assert_eq!(onset.node, second);
    let new_epoch = onset.epoch.expect("a MASTER answer carries X-HA-Epoch");
    assert!(new_epoch > epoch, "epoch {new_epoch} after {epoch}");
    // The hang did not hold the release back: the node wrote its release (far before the
    // hook's own end) ...
    wait_log_contains(&c, &first, "release finished: ", bound);
    let log = c.node(&first).last_start_log();
    if log.contains("release finished: released the lease") {
        // ... and the standby took the released lease at once, not after the lease expired.
        wait_log_contains(
            &c,
            second,
            &format!("promoted to MASTER at epoch {new_epoch} (released)"),
            bound,
        );
    } else {
        // The release is a conditional write on the last version the node knows: after a
        // renewal whose outcome it never learnt, it finds the lease changed (by that renewal),
        // or the release write itself fails or times out; then the standby takes over after T.
        // Accepted only with such a lease write in the log (a storage call over its timeout).
        assert!(
            log.lines()
                .any(|l| l.contains("lease write (") && l.contains("failed or timed out")),
            "{first}'s release did not land, and no lease write of it failed; log:\n{log}"
        );
        eprintln!(
            "{first}'s release did not land after a slow storage call: {second} took over after T"
        );
    }
    assert!(
        wait_until(bound, || !alive(demote_pid)),
        "the hanging demote hook (sleep {HANG:?}) still runs {bound:?} after the takeover: it was not killed"
    );
    assert!(
        c.node_mut(&first).wait_exit(bound).is_some(),
        "{first} did not exit after SIGTERM"
    );
    let promoted_line = |l: &str| l.starts_with(&format!("{second} ")) && l.contains(" MASTER ");
    assert!(
        wait_until(bound, || events(second).lines().any(promoted_line)),
        "{second} had no on-change call for its promotion within {bound:?}:\n{}",
        events(second)
    );
    c.assert_safe();
}

#[test]
fn exec_child_is_gone_before_the_release_on_demote() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let dir = c.root().join("exec");
    std::fs::create_dir_all(&dir).unwrap();
    let two = ["node-a", "node-b"];
    let _reaper = Reaper(dir.clone(), two.to_vec());
    let hash = std::process::Command::new(tenure_tests::tenure_bin())
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(b"s3cret\n")?;
            ch.wait_with_output()
        })
        .unwrap();
    let hash = String::from_utf8(hash.stdout).unwrap();
    let users = c.root().join("users.json");
    std::fs::write(
        &users,
        serde_json::json!({"users": {"admin": {"password": hash.trim(), "role": "admin"}}})
            .to_string(),
    )
    .unwrap();
    let cmd = child_script(&dir, false);
    for n in two {
        c.start(NodeSpec::new(n).args(&[
            "--exec",
            &cmd,
            "--users",
            users.to_str().unwrap(),
            "--public-state",
        ]));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sampling = sampler(
        dir.clone(),
        c.store().to_path_buf(),
        two.to_vec(),
        stop.clone(),
        seen.clone(),
    );
    let (first, _) = c.wait_stable_master(&two, settle_timeout(&tm));
    let second = if first == "node-a" {
        "node-b"
    } else {
        "node-a"
    };
    let child = wait_for(2 * tm.p + tm.margin, "the master's --exec child", || {
        running(&dir, &first).first().copied()
    });
    let out = std::process::Command::new(tenure_tests::tenure_bin())
        .args([
            "demote",
            "-u",
            "admin:s3cret",
            "--url",
            &c.node(&first).base_url(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !alive(child),
        "the child outlived the demote request's answer"
    );
    c.wait_stable_master(&two, tm.t + 4 * tm.p + tm.margin);
    wait_for(2 * tm.p + tm.margin, "the new master's child", || {
        running(&dir, second).first().copied()
    });
    std::thread::sleep(2 * tm.p);
    stop.store(true, Ordering::Relaxed);
    sampling.join().unwrap();
    let s = seen.lock().unwrap();
    assert!(s.released_at.is_some(), "no released lease was written");
    assert!(
        s.alive_after_release.iter().all(|a| a == second),
        "{first}'s child ran after its released lease appeared: {:?}",
        s.alive_after_release
    );
    assert!(
        s.overlaps.is_empty(),
        "two children at once: {:?}",
        s.overlaps
    );
    assert!(
        running(&dir, &first).is_empty(),
        "{first} is a standby now; its child must not run"
    );
    c.assert_safe();
}
