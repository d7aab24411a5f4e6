//! `--exec CMD`: a command that runs only while this node is MASTER (a singleton job).
//!
//! It is started at promotion and restarted with backoff if it exits while the node is still
//! master. When the node stops being master (release, self-demotion, shutdown) the whole
//! process group gets SIGTERM, then SIGKILL at half the demote grace G, and the stop completes
//! only once the child is reaped: the hook runner waits for that before the release is written,
//! and a self-demoted master is silent for G beyond its deadline anyway (DESIGN §3.4), so the
//! child is gone before any other node can start its own.
//!
//! The child runs in a process group of its own (so a terminal's Ctrl-C reaches only tenure,
//! which then stops it in order) and with no parent-death signal: if tenure itself is killed
//! with SIGKILL the child keeps running, like a service started by a hook (DESIGN §3, "what
//! tenure promises"). Under systemd the unit's cgroup (KillMode=mixed) cleans it up.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// First restart delay; doubles per quick exit up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long before exiting restarts after [`BACKOFF_MIN`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

pub struct Exec {
    cmd: String,
    node: String,
    running: Mutex<Option<Running>>,
    /// Held by a supervisor for its whole life: after a quick MASTER -> X -> MASTER the new one
    /// starts its child only once the old child is gone.
    slot: Arc<tokio::sync::Mutex<()>>,
}

struct Running {
    /// Sends the instant at which SIGTERM turns into SIGKILL.
    stop: oneshot::Sender<Instant>,
    task: JoinHandle<()>,
}

impl Exec {
    pub fn new(cmd: String, node: String) -> Exec {
        Exec {
            cmd,
            node,
            running: Mutex::new(None),
            slot: Arc::new(tokio::sync::Mutex::new(())),
        }
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
            self.cmd.clone(),
            self.node.clone(),
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
    cmd: String,
    node: String,
    epoch: Option<u64>,
    slot: Arc<tokio::sync::Mutex<()>>,
    mut stop: oneshot::Receiver<Instant>,
) {
    let _slot = tokio::select! {
        g = slot.lock_owned() => g,
        _ = &mut stop => return,
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c")
            .arg(&cmd)
            .env("TENURE_STATE", "MASTER")
            .env("TENURE_NODE", &node)
            .env("TENURE_MASTER", &node)
            .env(
                "TENURE_EPOCH",
                epoch.map(|e| e.to_string()).unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .process_group(0);
        let started = Instant::now();
        let spawned = c.spawn();
        let mut child = match spawned {
            Ok(ch) => ch,
            Err(e) => {
                tracing::error!("--exec {cmd:?} could not start: {e}; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut stop => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let pid = child.id().map(|p| p as i32);
        tracing::info!(pid, "--exec started: {cmd}");
        tokio::select! {
            status = child.wait() => {
                let ran = started.elapsed();
                if ran >= HEALTHY_RUN {
                    backoff = BACKOFF_MIN;
                }
                tracing::warn!(
                    "--exec child exited ({}) after {}; restarting in {}",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                    humantime::format_duration(Duration::from_millis(ran.as_millis() as u64)),
                    humantime::format_duration(backoff)
                );
                // Its process group may outlive it; a restart must not run beside leftovers.
                if let Some(pid) = pid {
                    signal_group(pid, libc::SIGKILL);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut stop => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            kill_at = &mut stop => {
                let kill_at = kill_at.unwrap_or_else(|_| Instant::now());
                if let Some(pid) = pid {
                    signal_group(pid, libc::SIGTERM);
                }
                let wait = kill_at.saturating_duration_since(Instant::now());
                if tokio::time::timeout(wait, child.wait()).await.is_ok() {
                    tracing::info!("--exec child stopped (SIGTERM)");
                    // Leftovers in its group get no second chance.
                    if let Some(pid) = pid {
                        signal_group(pid, libc::SIGKILL);
                    }
                    return;
                }
                if let Some(pid) = pid {
                    signal_group(pid, libc::SIGKILL);
                }
                let _ = child.wait().await;
                tracing::warn!("--exec child did not stop on SIGTERM within {wait:?}; killed");
                return;
            }
        }
    }
}

fn signal_group(pgid: i32, sig: libc::c_int) {
    // SAFETY: signalling the process group we created for the child (pgid = its pid).
    unsafe { libc::kill(-pgid, sig) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pids(f: &std::path::Path) -> Vec<i32> {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    async fn wait_pids(f: &std::path::Path, n: usize) -> Vec<i32> {
        for _ in 0..300 {
            let p = pids(f);
            if p.len() >= n {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} starts in {}", f.display());
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
        let x = Exec::new(cmd, "n".into());
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
}
