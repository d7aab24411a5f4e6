//! `--exec CMD`: a command that runs only while this node is MASTER (a singleton job).
//!
//! It is started at promotion and restarted with backoff if it exits while the node is still
//! master. When the node stops being master (release, self-demotion, shutdown) the whole
//! process group gets SIGTERM, then SIGKILL at half the demote grace G, and the stop completes
//! only once the child is reaped: the hook runner waits for that before the release is written,
//! and a self-demoted master is silent for G beyond its deadline anyway (DESIGN §3.4), so the
//! child is gone before any other node can start its own.
//!
//! Each run of the child is watched by a guard, `tenure exec-guard` ([`crate::guard`]): this
//! same binary, started in a session of its own, which starts `sh -c CMD` in a process group of
//! its own (so a terminal's Ctrl-C reaches only tenure, which then stops it in order) and holds
//! its own copy of the lease deadline V. tenure sends it every new V (whenever the published
//! snapshot's `master_until` changes) and asks it to stop the child; the guard stops the child
//! by itself when V passes without an extension — SIGTERM at V, SIGKILL at V + G/2 — so the
//! child is gone within the G the safety inequality reserves even when tenure cannot act:
//! frozen (SIGSTOP), wedged, or killed with SIGKILL (the guard keeps the last deadline it got).
//! A child is never started without a deadline that has not passed. If the guard itself dies,
//! `sh` gets SIGKILL (parent-death signal) and tenure SIGKILLs the child's process group.
//! What remains unguarded is a freeze of the whole host (or of tenure's cgroup): nothing runs
//! on it, the guard included, until it thaws; then the guard, whose timer counts on
//! CLOCK_BOOTTIME, acts at once (SIGKILL straight away if V + G/2 has passed meanwhile).

use crate::args::LogFormat;
use crate::guard::{self, Ended};
use crate::statefile::{ExecProcs, StateFile, start_time};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tenure_election::Snapshot;
use tenure_election::clock::{self, Nanos};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// First restart delay; doubles per quick exit up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long before exiting restarts after [`BACKOFF_MIN`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// How long past the SIGKILL time of a stop tenure waits for the guard before it kills the
/// child's process group and the guard itself (a guard that is stopped or hung).
const GUARD_SLACK: Duration = Duration::from_secs(1);

pub struct Exec {
    settings: Arc<Settings>,
    running: Mutex<Option<Running>>,
    /// Held by a supervisor for its whole life: after a quick MASTER -> X -> MASTER the new one
    /// starts its child only once the old child is gone.
    slot: Arc<tokio::sync::Mutex<()>>,
}

struct Settings {
    cmd: String,
    node: String,
    /// From a passed deadline, or a stop, to SIGKILL: G/2.
    kill_after: Duration,
    log: LogFormat,
    /// The program that runs `tenure exec-guard`: this binary.
    program: PathBuf,
    /// The driver's snapshots, for the lease deadline V (`master_until`).
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// `--state-dir`: where the running guard and child are recorded, so that a restart in
    /// place after a SIGKILL stops them before it can start its own.
    state_file: Option<Arc<StateFile>>,
}

struct Running {
    /// Sends the instant at which SIGTERM turns into SIGKILL.
    stop: oneshot::Sender<Instant>,
    task: JoinHandle<()>,
}

impl Exec {
    /// `demote_grace`: G (the child gets SIGKILL G/2 after SIGTERM); `snapshots`: the driver's,
    /// whose `master_until` the guard enforces.
    pub fn new(
        cmd: String,
        node: String,
        demote_grace: Duration,
        log: LogFormat,
        snapshots: watch::Receiver<Arc<Snapshot>>,
    ) -> Exec {
        // /proc/self/exe still runs this binary after an upgrade replaced the file.
        let proc_exe = Path::new("/proc/self/exe");
        let program = if proc_exe.exists() {
            proc_exe.to_path_buf()
        } else {
            std::env::current_exe().unwrap_or_else(|_| "tenure".into())
        };
        Exec {
            settings: Arc::new(Settings {
                cmd,
                node,
                kill_after: demote_grace / 2,
                log,
                program,
                snapshots,
                state_file: None,
            }),
            running: Mutex::new(None),
            slot: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Records every guard and child in this node's state file (see [`StateFile`]).
    pub fn with_state_file(mut self, state: Option<Arc<StateFile>>) -> Exec {
        if let Some(settings) = Arc::get_mut(&mut self.settings) {
            settings.state_file = state;
        }
        self
    }

    /// Starts the supervisor (if not already running). Called synchronously, in transition
    /// order, so a start and a later stop can never be reordered.
    pub fn start(&self, epoch: Option<u64>) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.is_some() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(supervise(
            self.settings.clone(),
            epoch,
            self.slot.clone(),
            rx,
        ));
        *running = Some(Running { stop: tx, task });
    }

    /// Stops the child: SIGTERM now, SIGKILL at `kill_at`. The returned future completes once
    /// the child is gone (immediately if none runs). Called synchronously, like [`Exec::start`].
    pub fn stop(&self, kill_at: Instant) -> impl Future<Output = ()> + Send + 'static {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        async move {
            if let Some(r) = running {
                let _ = r.stop.send(kill_at);
                let _ = r.task.await;
            }
        }
    }
}

async fn supervise(
    s: Arc<Settings>,
    epoch: Option<u64>,
    slot: Arc<tokio::sync::Mutex<()>>,
    mut stop: oneshot::Receiver<Instant>,
) {
    let _slot = tokio::select! {
        g = slot.lock_owned() => g,
        _ = &mut stop => return,
    };
    let mut snaps = s.snapshots.clone();
    let mut backoff = BACKOFF_MIN;
    loop {
        // A child runs only under a lease deadline that has not passed.
        let deadline = tokio::select! {
            d = lease_deadline(&mut snaps) => d,
            _ = &mut stop => return,
        };
        let Some(deadline) = deadline else {
            // The driver is gone: no deadline will come.
            let _ = (&mut stop).await;
            return;
        };
        let started = Instant::now();
        let end = match run_guarded(&s, epoch, deadline, &mut snaps, &mut stop).await {
            Run::Stopped => return,
            Run::Ended(end) => end,
        };
        let ran = started.elapsed();
        if ran >= HEALTHY_RUN {
            backoff = BACKOFF_MIN;
        }
        let ran = humantime::format_duration(Duration::from_millis(ran.as_millis() as u64));
        let next = humantime::format_duration(backoff);
        let cmd = &s.cmd;
        match end {
            End::Spawn(e) => {
                tracing::error!("--exec {cmd:?} could not start its guard: {e}; retrying in {next}")
            }
            End::Reported(Ended::Failed, _) => {
                tracing::error!(
                    "--exec {cmd:?} could not start (see the guard's message); retrying in {next}"
                )
            }
            End::Reported(Ended::Refused, _) => {
                tracing::warn!("--exec child not started: the lease deadline passed first")
            }
            End::Reported(Ended::Deadline, status) => tracing::warn!(
                "--exec child stopped by its guard at the lease deadline ({status}) after {ran}: no renewal reached the guard in time; it starts again only under a new deadline, in {next} at the earliest"
            ),
            End::Reported(Ended::Stopped, status) => tracing::warn!(
                "--exec child stopped ({status}) after {ran} by its guard, which got a stop signal; restarting in {next}"
            ),
            End::Reported(Ended::Exited, status) => {
                tracing::warn!("--exec child exited ({status}) after {ran}; restarting in {next}")
            }
            End::Lost(status) => tracing::error!(
                "--exec guard exited without a report ({}) after {ran}; its child's process group was killed; restarting in {next}",
                status.map_or_else(|e| e.to_string(), |s| s.to_string())
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = &mut stop => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The lease deadline V of the latest snapshot once it lies ahead; `None` if the driver is gone.
async fn lease_deadline(snaps: &mut watch::Receiver<Arc<Snapshot>>) -> Option<Nanos> {
    loop {
        let v = snaps.borrow_and_update().master_until;
        if let Some(v) = v
            && v > clock::now()
        {
            return Some(v);
        }
        snaps.changed().await.ok()?;
    }
}

enum Run {
    /// Stopped on request: the child is gone.
    Stopped,
    /// Ended by itself (the child exited, or the guard stopped it).
    Ended(End),
}

enum End {
    /// The guard could not be started.
    Spawn(std::io::Error),
    /// The guard's report: why it ended, and the child's status.
    Reported(Ended, ExitStatus),
    /// The guard exited without a report (killed, or it crashed).
    Lost(std::io::Result<ExitStatus>),
}

/// One run of the child under its guard, until the guard exits.
async fn run_guarded(
    s: &Settings,
    epoch: Option<u64>,
    deadline: Nanos,
    snaps: &mut watch::Receiver<Arc<Snapshot>>,
    stop: &mut oneshot::Receiver<Instant>,
) -> Run {
    // The channel: a socket pair (both ends close-on-exec; the guard gets its end as stdin).
    let pair = std::os::unix::net::UnixStream::pair().and_then(|(ours, theirs)| {
        ours.set_nonblocking(true)?;
        Ok((tokio::net::UnixStream::from_std(ours)?, theirs))
    });
    let (ours, theirs) = match pair {
        Ok(p) => p,
        Err(e) => return Run::Ended(End::Spawn(e)),
    };
    let params = guard::Params {
        log: s.log,
        kill_after: s.kill_after,
        deadline: deadline.0,
        cmd: s.cmd.clone(),
    };
    let spawned = {
        let mut c = tokio::process::Command::new(&s.program);
        c.arg0("tenure")
            .arg(guard::SUBCOMMAND)
            .args(params.to_args())
            .env("TENURE_STATE", "MASTER")
            .env("TENURE_NODE", &s.node)
            .env("TENURE_MASTER", &s.node)
            .env(
                "TENURE_EPOCH",
                epoch.map(|e| e.to_string()).unwrap_or_default(),
            )
            .stdin(Stdio::from(OwnedFd::from(theirs)));
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent. A session
        // of its own: no signal to tenure's process group or terminal reaches the guard.
        unsafe {
            c.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c.spawn()
        // The command, holding our copy of the guard's end, is dropped here: the guard's exit
        // is then an end of file on ours.
    };
    let mut guard = match spawned {
        Ok(g) => g,
        Err(e) => return Run::Ended(End::Spawn(e)),
    };
    let guard_pid = guard.id();
    let record = |child: Option<i32>| {
        let (Some(state), Some(g)) = (&s.state_file, guard_pid) else {
            return;
        };
        let g = g as i32;
        let Some(g_start) = start_time(g) else { return };
        let child = child.and_then(|c| start_time(c).map(|t| (c, t)));
        state.set_exec(Some(ExecProcs {
            guard: (g, g_start),
            child,
        }));
    };
    record(None);
    let (rd, wr) = ours.into_split();
    let mut lines = BufReader::new(rd).lines();
    let mut seen = Seen::default();
    let mut sent = deadline;
    let mut open = true;
    let mut watching = true;
    // Set once tenure asked for the stop: the SIGKILL time.
    let mut kill_at: Option<Instant> = None;
    let mut term_wait = Duration::ZERO;
    let mut forced = false;
    let status = loop {
        let fallback = tokio::time::Instant::from_std(
            kill_at.map_or_else(|| Instant::now() + BACKOFF_MAX, |k| k + GUARD_SLACK),
        );
        tokio::select! {
            biased;
            k = &mut *stop, if kill_at.is_none() => {
                let k = k.unwrap_or_else(|_| Instant::now());
                term_wait = k.saturating_duration_since(Instant::now());
                let at = clock::now().saturating_add(term_wait);
                send(&wr, &format!("S {}\n", at.0));
                kill_at = Some(k);
            }
            st = guard.wait() => break st,
            l = lines.next_line(), if open => match l {
                Ok(Some(l)) => {
                    let had = seen.pid;
                    seen.line(&l, guard_pid, &s.cmd);
                    if seen.pid != had {
                        record(seen.pid);
                    }
                }
                _ => open = false,
            },
            ch = snaps.changed(), if watching && kill_at.is_none() => match ch {
                Err(_) => watching = false,
                Ok(()) => {
                    let v = snaps.borrow_and_update().master_until;
                    if let Some(v) = v && v != sent {
                        send(&wr, &format!("D {}\n", v.0));
                        sent = v;
                    }
                }
            },
            _ = tokio::time::sleep_until(fallback), if kill_at.is_some() && !forced => {
                forced = true;
                tracing::error!(guard = guard_pid, "the --exec guard did not end the child by its SIGKILL time: killing the child's process group and the guard");
                if let Some(pid) = seen.pid {
                    signal_group(pid, libc::SIGKILL);
                }
                let _ = guard.start_kill();
            }
        }
    };
    if let Some(state) = &s.state_file {
        state.set_exec(None);
    }
    // The report may still be in the channel: read it to the end (the guard has exited).
    while open {
        match tokio::time::timeout(Duration::from_secs(1), lines.next_line()).await {
            Ok(Ok(Some(l))) => seen.line(&l, guard_pid, &s.cmd),
            _ => open = false,
        }
    }
    if seen.report.is_none()
        && let Some(pid) = seen.pid
    {
        // No guard left to stop leftovers of the child's group.
        signal_group(pid, libc::SIGKILL);
    }
    if kill_at.is_some() {
        match seen.report {
            Some((Ended::Deadline, st)) => tracing::warn!(
                "--exec child had been stopped by its guard at the lease deadline ({st})"
            ),
            Some((_, st)) if st.signal() == Some(libc::SIGKILL) => {
                tracing::warn!("--exec child did not stop on SIGTERM within {term_wait:?}; killed")
            }
            Some((_, st)) => tracing::info!("--exec child stopped (SIGTERM; {st})"),
            None => tracing::warn!(
                "--exec guard exited without a report ({}); its child's process group was killed",
                status.map_or_else(|e| e.to_string(), |s| s.to_string())
            ),
        }
        return Run::Stopped;
    }
    Run::Ended(match seen.report {
        Some((why, st)) => End::Reported(why, st),
        None => End::Lost(status),
    })
}

/// What the guard told: the child's pid, and its report at the end.
#[derive(Default)]
struct Seen {
    pid: Option<i32>,
    report: Option<(Ended, ExitStatus)>,
}

impl Seen {
    fn line(&mut self, l: &str, guard: Option<u32>, cmd: &str) {
        let mut f = l.split(' ');
        match (f.next(), f.next(), f.next()) {
            (Some("P"), Some(pid), None) => {
                self.pid = pid.parse().ok();
                tracing::info!(pid = self.pid, guard, "--exec started: {cmd}");
            }
            (Some("X"), Some(why), Some(st)) => {
                if let (Some(why), Ok(st)) = (Ended::parse(why), st.parse()) {
                    self.report = Some((why, ExitStatus::from_raw(st)));
                }
            }
            _ => tracing::debug!("--exec guard said {l:?}"),
        }
    }
}

/// A line to the guard. Never waits: a guard that does not read (stopped) loses updates, and a
/// partial line is one it ignores.
fn send(wr: &OwnedWriteHalf, line: &str) {
    let _ = wr.try_write(line.as_bytes());
}

fn signal_group(pgid: i32, sig: libc::c_int) {
    // SAFETY: signalling the process group the guard created for the child (pgid = its pid).
    unsafe { libc::kill(-pgid, sig) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pids(f: &Path) -> Vec<i32> {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    async fn wait_pids(f: &Path, n: usize) -> Vec<i32> {
        for _ in 0..300 {
            let p = pids(f);
            if p.len() >= n {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} starts in {}", f.display());
    }

    /// The guard is the `tenure` binary, not this test binary: `$TENURE_BIN`, else the one
    /// cargo built beside `deps/` (`cargo build -p tenure`).
    fn tenure_bin() -> PathBuf {
        let bin = std::env::var_os("TENURE_BIN")
            .filter(|b| !b.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let exe = std::env::current_exe().unwrap();
                exe.parent().and_then(Path::parent).unwrap().join("tenure")
            });
        let knows_guard = std::process::Command::new(&bin)
            .arg(guard::SUBCOMMAND)
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("internal command"));
        assert!(
            knows_guard,
            "{} is missing or predates `tenure exec-guard`: build it first: cargo build -p tenure",
            bin.display()
        );
        bin
    }

    fn exec(cmd: String) -> (Exec, watch::Sender<Arc<Snapshot>>) {
        let mut snap =
            Snapshot::initializing("n", "i", "http://127.0.0.1:1", tenure_election::Mode::Auto);
        snap.master_until = Some(clock::now() + Duration::from_secs(600));
        let (tx, rx) = watch::channel(Arc::new(snap));
        let mut x = Exec::new(
            cmd,
            "n".into(),
            Duration::from_millis(800),
            LogFormat::Text,
            rx,
        );
        Arc::get_mut(&mut x.settings).unwrap().program = tenure_bin();
        (x, tx)
    }

    /// MASTER -> STANDBY -> MASTER in quick succession: the new child starts only after the old
    /// one (which ignores SIGTERM) has been killed, never beside it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_waits_for_the_previous_child() {
        let dir = std::env::temp_dir().join(format!("tenure-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pids");
        let _ = std::fs::remove_file(&file);
        let cmd = format!(
            "trap '' TERM; echo $$ >> {}; while :; do sleep 0.05; done",
            file.display()
        );
        let (x, _snaps) = exec(cmd);
        x.start(Some(1));
        let first = wait_pids(&file, 1).await[0];
        let stop_at = Instant::now();
        let stopping = tokio::spawn(x.stop(stop_at + Duration::from_millis(400)));
        x.start(Some(2));
        let second = wait_pids(&file, 2).await[1];
        let started_after = stop_at.elapsed();
        // SAFETY: probing (signal 0) the pid of our own former child.
        let first_alive = unsafe { libc::kill(first, 0) } == 0;
        assert!(
            !first_alive,
            "the old child still ran when the new one started"
        );
        assert!(
            started_after >= Duration::from_millis(380),
            "the new child started {started_after:?} after the stop, before the SIGKILL at 400 ms"
        );
        stopping.await.unwrap();
        x.stop(Instant::now()).await;
        // SAFETY: as above.
        assert_ne!(
            unsafe { libc::kill(second, 0) },
            0,
            "stop left the child running"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The guard enforces the deadline by itself: with no renewal, the child gets SIGTERM at V
    /// and SIGKILL at V + G/2 though tenure never asks; and no child starts again until a new
    /// deadline lies ahead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_guard_stops_the_child_at_the_deadline_and_waits_for_a_new_one() {
        let dir = std::env::temp_dir().join(format!("tenure-exec-v-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pids");
        let _ = std::fs::remove_file(&file);
        let cmd = format!(
            "trap '' TERM; echo $$ >> {}; while :; do sleep 0.05; done",
            file.display()
        );
        let (x, snaps) = exec(cmd);
        let v = clock::now() + Duration::from_millis(600);
        snaps.send_modify(|s| Arc::make_mut(s).master_until = Some(v));
        x.start(Some(1));
        let first = wait_pids(&file, 1).await[0];
        // Gone by V + G/2 (400 ms), not before V + G/2 (it ignores SIGTERM).
        let mut gone_at = None;
        for _ in 0..300 {
            // SAFETY: probing our own former child.
            if unsafe { libc::kill(first, 0) } != 0 {
                gone_at = Some(clock::now());
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let gone_at = gone_at.expect("the guard did not stop the child");
        let kill_at = v + Duration::from_millis(400);
        assert!(
            gone_at >= kill_at,
            "gone {:?} before V + G/2",
            kill_at.since(gone_at)
        );
        assert!(
            gone_at.since(kill_at) < Duration::from_millis(300),
            "gone {:?} after V + G/2",
            gone_at.since(kill_at)
        );
        // No new deadline: no restart, even after the backoff.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(pids(&file).len(), 1, "restarted without a deadline");
        snaps.send_modify(|s| {
            Arc::make_mut(s).master_until = Some(clock::now() + Duration::from_secs(600))
        });
        let second = wait_pids(&file, 2).await[1];
        x.stop(Instant::now()).await;
        // SAFETY: as above.
        assert_ne!(unsafe { libc::kill(second, 0) }, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
