//! systemd integration (`Type=notify`): READY=1 once the API is serving, STATUS=<state> on
//! every change, and WATCHDOG=1 only while the election loop keeps turning, so systemd restarts
//! a wedged loop (`WatchdogSec=`). Nothing is sent when NOTIFY_SOCKET is unset.

use sd_notify::NotifyState;
use std::sync::Arc;
use std::time::Duration;
use tenure_election::{Snapshot, Stats, clock};
use tokio::sync::watch;

/// The driver loop wakes at least every `MAX_SLEEP` (1 s): a check interval above that always
/// sees it turn, so the watchdog needs `WatchdogSec=` of at least twice this.
const MIN_INTERVAL: Duration = Duration::from_millis(1500);
/// How often STATUS is refreshed when there is no watchdog.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty())
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

fn status(snap: &Snapshot) -> String {
    let now = clock::now();
    match snap.master_at(now) {
        Some((_, epoch)) if snap.state_at(now) == tenure_election::NodeState::Master => {
            format!("MASTER (epoch {epoch})")
        }
        Some((master, epoch)) => format!("{} (master {master}, epoch {epoch})", snap.state_at(now)),
        None => snap.state_at(now).to_string(),
    }
}

/// Says READY=1, then keeps STATUS and the watchdog going until the task is dropped.
pub async fn run(stats: Arc<Stats>, snapshot: watch::Receiver<Arc<Snapshot>>) {
    run_with(stats, snapshot, MIN_INTERVAL).await
}

/// [`run`] with the shortest watchdog check interval given (a test's loop turns faster).
async fn run_with(
    stats: Arc<Stats>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    min_interval: Duration,
) {
    if !enabled() {
        return;
    }
    let mut last_status = status(&snapshot.borrow());
    send(&[NotifyState::Ready, NotifyState::Status(&last_status)]);
    let mut usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec);
    // Ping at half the watchdog period, as systemd recommends.
    let interval = if watchdog {
        (Duration::from_micros(usec) / 2).max(min_interval)
    } else {
        STATUS_INTERVAL
    };
    let mut last_loops = stats.loops();
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let s = status(&snapshot.borrow());
        if s != last_status {
            send(&[NotifyState::Status(&s)]);
            last_status = s;
        }
        if watchdog {
            let loops = stats.loops();
            if loops != last_loops {
                send(&[NotifyState::Watchdog]);
            } else {
                tracing::error!(
                    "the election loop has not turned for {interval:?}: withholding the watchdog ping"
                );
            }
            last_loops = loops;
        }
    }
}

/// STOPPING=1, at the start of a shutdown.
pub fn stopping() {
    if enabled() {
        send(&[NotifyState::Stopping]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    /// A loop that stops turning gets no more WATCHDOG=1 (systemd then restarts the service).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watchdog_pings_only_while_the_loop_turns() {
        let dir = std::env::temp_dir().join(format!("tenure-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        // SAFETY: no other test in this binary reads or writes these variables.
        unsafe {
            std::env::set_var("NOTIFY_SOCKET", &path);
            std::env::set_var("WATCHDOG_USEC", "600000");
            std::env::set_var("WATCHDOG_PID", std::process::id().to_string());
        }
        let stats = Arc::new(Stats::default());
        let snap =
            Snapshot::initializing("n", "i", "http://127.0.0.1:1", tenure_election::Mode::Auto);
        let (_tx, rx) = watch::channel(Arc::new(snap));
        // This loop turns every 50 ms: a 300 ms check interval always sees it turn.
        let notifier = tokio::spawn(run_with(stats.clone(), rx, Duration::from_millis(300)));
        let turning = stats.clone();
        let started = Instant::now();
        // The "loop" turns for 1 s, then wedges.
        tokio::spawn(async move {
            while started.elapsed() < Duration::from_secs(1) {
                turning.loop_iterations.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let got = tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while started.elapsed() < Duration::from_millis(2500) {
                if let Ok(n) = sock.recv(&mut buf) {
                    for l in String::from_utf8_lossy(&buf[..n]).lines() {
                        got.push((started.elapsed(), l.to_string()));
                    }
                }
            }
            got
        })
        .await
        .unwrap();
        notifier.abort();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            got.first().map(|g| g.1.as_str()),
            Some("READY=1"),
            "{got:?}"
        );
        let pings: Vec<Duration> = got
            .iter()
            .filter(|g| g.1 == "WATCHDOG=1")
            .map(|g| g.0)
            .collect();
        assert!(
            pings.len() >= 2,
            "pings every 300 ms while turning: {got:?}"
        );
        // The check after the wedge may still see the last turns; none after that.
        assert!(
            pings.iter().all(|t| *t < Duration::from_millis(1400)),
            "pinged although the loop stopped at 1 s: {pings:?}"
        );
    }
}
