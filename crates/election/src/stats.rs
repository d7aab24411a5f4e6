//! Counters the driver updates and the metrics endpoint and the systemd watchdog read:
//! plain atomics, so recording costs nothing and no lock is shared with the election loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets; a last, unbounded bucket follows.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Latency {
    /// Per-bucket (not cumulative) counts; the last is the unbounded bucket.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
    /// The most recent observation (ns): what `tenure check` compares with its thresholds.
    last_ns: AtomicU64,
}

impl Latency {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.last_ns
            .store(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// The most recent observation, if any.
    pub fn last(&self) -> Option<Duration> {
        (self.count.load(Ordering::Relaxed) > 0)
            .then(|| Duration::from_nanos(self.last_ns.load(Ordering::Relaxed)))
    }

    /// (sum in seconds, count, per-bucket counts with their upper bounds, the last `f64::MAX`).
    pub fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        (
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            self.count.load(Ordering::Relaxed),
            buckets,
        )
    }
}

/// Shared between the driver (writer) and readers; hand it over with [`crate::driver::Driver::with_stats`].
#[derive(Debug, Default)]
pub struct Stats {
    /// Conditional writes of the lease (renewals; also retakes and releases), from issue to result.
    pub renew_latency: Latency,
    /// Every storage call, from issue to result.
    pub storage_latency: Latency,
    /// Turns of the election loop: it wakes at least every second (`driver::MAX_SLEEP`), so a counter that stops
    /// means a wedged loop (the systemd watchdog checks it).
    pub loop_iterations: AtomicU64,
    /// State transitions since start (the snapshot keeps only the last 200).
    pub transitions: AtomicU64,
    /// When storage calls began failing with no success since (CLOCK_BOOTTIME ns, see
    /// [`crate::clock::now`]); 0 while the last call succeeded (a lost conditional write is an
    /// answer, not a failure). Read by the notifications ("storage failing for longer than D").
    pub storage_failing_since: AtomicU64,
    /// Notifications (`tenure run --notify-*`) delivered and failed, per channel.
    pub notifications: [NotificationCounts; Channel::ALL.len()],
}

/// A notification channel, the `channel` label of the notification counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    Email,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::Email, Channel::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }
}

/// Delivered and failed notifications of one channel.
#[derive(Debug, Default)]
pub struct NotificationCounts {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
}

impl Stats {
    pub fn loops(&self) -> u64 {
        self.loop_iterations.load(Ordering::Relaxed)
    }

    pub fn transitions(&self) -> u64 {
        self.transitions.load(Ordering::Relaxed)
    }

    /// Record the outcome of one storage call made at `at` (`ok`: it succeeded or lost a
    /// conditional write).
    pub fn storage_outcome(&self, ok: bool, at: crate::clock::Nanos) {
        if ok {
            self.storage_failing_since.store(0, Ordering::Relaxed);
        } else {
            let _ = self.storage_failing_since.compare_exchange(
                0,
                at.0.max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Since when every storage call has failed, if the last one did.
    pub fn storage_failing_since(&self) -> Option<crate::clock::Nanos> {
        match self.storage_failing_since.load(Ordering::Relaxed) {
            0 => None,
            n => Some(crate::clock::Nanos(n)),
        }
    }

    /// The counters of `channel`.
    pub fn notifications(&self, channel: Channel) -> &NotificationCounts {
        &self.notifications[channel as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets() {
        let l = Latency::default();
        l.observe(Duration::from_micros(500));
        l.observe(Duration::from_millis(30));
        l.observe(Duration::from_secs(10));
        let (sum, count, buckets) = l.read();
        assert_eq!(count, 3);
        assert!((sum - 10.0305).abs() < 1e-6, "{sum}");
        assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(buckets[0], (0.001, 1));
        assert_eq!(buckets[5], (0.05, 1));
        assert_eq!(buckets.last().unwrap(), &(f64::MAX, 1));
    }

    #[test]
    fn storage_failing_since_the_first_failure_until_a_success() {
        use crate::clock::Nanos;
        let s = Stats::default();
        assert_eq!(s.storage_failing_since(), None);
        s.storage_outcome(false, Nanos(10));
        s.storage_outcome(false, Nanos(20));
        assert_eq!(s.storage_failing_since(), Some(Nanos(10)));
        s.storage_outcome(true, Nanos(30));
        assert_eq!(s.storage_failing_since(), None);
        s.storage_outcome(false, Nanos(40));
        assert_eq!(s.storage_failing_since(), Some(Nanos(40)));
    }
}
