//! Per-node configuration and the safety inequality (DESIGN §3.4).

use crate::types::Mode;
use std::time::Duration;

/// Answer-latency margin M in the safety inequality.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    /// Fresh per process start.
    pub instance_id: String,
    /// This node's previous instance on this host, known to be dead: its state file's flock
    /// was free when this process took it (`--state-dir`). A record or an unreleased lease of
    /// that instance is taken back at once instead of after T (DESIGN §3.6). `None`: unknown.
    pub previous_instance: Option<String>,
    /// Where other nodes reach this one (`http://host:port`).
    pub uri: String,
    pub mode: Mode,
    /// T: a lease version that stands still this long is presumed dead.
    pub heartbeat_timeout: Duration,
    /// p: one round of store I/O per period.
    pub poll_period: Duration,
    /// D: a confirmed renewal started at s keeps this node MASTER until s + D.
    pub renew_deadline: Duration,
    /// R: how often a master renews (rounds in between only read the lease). At least p, and
    /// D ≥ 2R + storage timeout, so that one slow renewal never demotes a healthy master.
    pub renew_interval: Duration,
    /// H: how often a node that is not master rewrites its record (a master's heartbeat rides
    /// in its lease). Between p and T/3, so a live node's record moves at least three times a T.
    pub heartbeat_interval: Duration,
    /// G: the longest a demote hook may run.
    pub demote_grace: Duration,
    /// Deadline of one storage call.
    pub storage_timeout: Duration,
    /// ρ in parts per million.
    pub clock_drift_ppm: u32,
    pub priority: i64,
    pub app_version: Option<String>,
    pub allow_no_master: bool,
    /// The cluster secret: records are signed with it and records without a valid MAC are
    /// never obeyed. `None`: records are unsigned (anyone who can write the store is trusted).
    pub keys: Option<std::sync::Arc<crate::secret::Keyring>>,
    /// The cluster's expected members (`--expect-nodes`, `--cluster-file`), sorted, without
    /// duplicates; empty when none were declared. Only reported: the snapshot lists the
    /// expected nodes that are absent or silent ([`crate::Snapshot::missing_at`]).
    pub expected_nodes: Vec<String>,
}

impl Config {
    /// A node in mode auto with DESIGN.md's defaults derived from T and p (D, G, the storage
    /// timeout, ρ = 1 %), priority 0, no application version, no secret and no expected
    /// members; change the rest with struct update syntax.
    pub fn with_defaults(
        name: impl Into<String>,
        instance_id: impl Into<String>,
        uri: impl Into<String>,
        t: Duration,
        p: Duration,
    ) -> Config {
        Config {
            name: name.into(),
            instance_id: instance_id.into(),
            previous_instance: None,
            uri: uri.into(),
            mode: Mode::Auto,
            heartbeat_timeout: t,
            poll_period: p,
            renew_deadline: Config::default_renew_deadline(t),
            renew_interval: Config::default_renew_interval(
                Config::default_renew_deadline(t),
                p,
                Config::default_storage_timeout(p),
            ),
            heartbeat_interval: Config::default_heartbeat_interval(t, p),
            demote_grace: Config::default_demote_grace(t),
            storage_timeout: Config::default_storage_timeout(p),
            clock_drift_ppm: 10_000,
            priority: 0,
            app_version: None,
            allow_no_master: false,
            keys: None,
            expected_nodes: Vec::new(),
        }
    }

    /// Defaults derived from T as DESIGN.md states them: D = 2/3 T, G = T/6.
    pub fn default_renew_deadline(t: Duration) -> Duration {
        t * 2 / 3
    }
    pub fn default_demote_grace(t: Duration) -> Duration {
        t / 6
    }
    /// Default renew interval: D/4 (three renewals in a row may fail before D), but never
    /// below p, and short enough for the liveness rule D ≥ 2R + storage timeout.
    pub fn default_renew_interval(d: Duration, p: Duration, storage: Duration) -> Duration {
        (d / 4).min(d.saturating_sub(storage) / 2).max(p)
    }
    /// Default heartbeat interval: T/3 (a record silent for three of them is silent for T),
    /// never below p.
    pub fn default_heartbeat_interval(t: Duration, p: Duration) -> Duration {
        (t / 3).max(p)
    }
    /// Default storage call deadline: a poll period, at least 100 ms, at most 5 s.
    pub fn default_storage_timeout(p: Duration) -> Duration {
        p.clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Check the timings against the safety inequality `(D + G)(1+ρ) + M < T(1−ρ)` and the
    /// liveness rule `D ≥ 2R + storage timeout` (R ≥ p). The message gives the numbers.
    pub fn validate_timings(&self) -> Result<(), TimingsError> {
        let t = self.heartbeat_timeout;
        let p = self.poll_period;
        let d = self.renew_deadline;
        let g = self.demote_grace;
        let st = self.storage_timeout;
        let rho = self.clock_drift_ppm as f64 / 1e6;
        if p.is_zero() || t.is_zero() || d.is_zero() {
            return Err(TimingsError::NotPositive);
        }
        if rho >= 0.5 {
            return Err(TimingsError::ImplausibleDrift { rho });
        }
        let lhs = (d + g).as_secs_f64() * (1.0 + rho) + ANSWER_MARGIN.as_secs_f64();
        let rhs = t.as_secs_f64() * (1.0 - rho);
        if lhs >= rhs {
            return Err(TimingsError::Unsafe {
                d,
                g,
                rho,
                lhs,
                t,
                rhs,
            });
        }
        let r = self.renew_interval;
        if r < p {
            return Err(TimingsError::RenewIntervalBelowPoll { r, p });
        }
        if d < 2 * r + st {
            return Err(TimingsError::RenewTooShort { d, r, st });
        }
        let h = self.heartbeat_interval;
        if h < p || h * 3 > t {
            return Err(TimingsError::HeartbeatInterval { h, p, t });
        }
        Ok(())
    }
}

/// Why [`Config::validate_timings`] refused the timings; the message gives the numbers.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TimingsError {
    #[error("--heartbeat-timeout, --poll-period and --renew-deadline must be positive")]
    NotPositive,
    /// ρ of 0.5 or more.
    #[error("clock drift bound ρ = {rho} is not plausible; use at most 0.1 (10%)")]
    ImplausibleDrift { rho: f64 },
    /// The safety inequality `(D + G)(1+ρ) + M < T(1−ρ)` fails: `lhs` and `rhs` are its two
    /// sides in seconds.
    #[error(
        "unsafe timings: (renew deadline D {} + demote grace G {})·(1+ρ {rho}) + margin {} = {lhs:.3}s must be below heartbeat timeout T {}·(1−ρ) = {rhs:.3}s; lower --renew-deadline/--demote-grace or raise --heartbeat-timeout",
        fmt(*d),
        fmt(*g),
        fmt(ANSWER_MARGIN),
        fmt(*t)
    )]
    Unsafe {
        d: Duration,
        g: Duration,
        rho: f64,
        lhs: f64,
        t: Duration,
        rhs: f64,
    },
    /// The liveness rule `D ≥ 2R + storage timeout` fails.
    #[error(
        "renew deadline D {} must be at least 2 × renew interval {} + storage timeout {} = {}, or one slow write demotes the master; raise --renew-deadline (and --heartbeat-timeout) or lower --renew-interval (at least --poll-period)",
        fmt(*d),
        fmt(*r),
        fmt(*st),
        fmt(2 * *r + *st)
    )]
    RenewTooShort {
        d: Duration,
        r: Duration,
        st: Duration,
    },
    #[error(
        "renew interval {} is below the poll period {}: a master renews at most once a round; raise --renew-interval or lower --poll-period",
        fmt(*r),
        fmt(*p)
    )]
    RenewIntervalBelowPoll { r: Duration, p: Duration },
    #[error(
        "heartbeat interval {} must be between the poll period {} and T/3 = {} (a record silent for three of them is stale at T); change --heartbeat-interval",
        fmt(*h),
        fmt(*p),
        fmt(*t / 3)
    )]
    HeartbeatInterval {
        h: Duration,
        p: Duration,
        t: Duration,
    },
}

fn fmt(d: Duration) -> String {
    humanize(d)
}

/// `1.5s`, `200ms`: short human durations for messages.
pub fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms.is_multiple_of(100) {
        let s = d.as_secs_f64();
        if s.fract() == 0.0 {
            format!("{}s", s as u64)
        } else {
            format!("{s:.1}s")
        }
    } else if ms >= 1 {
        format!("{ms}ms")
    } else {
        format!("{}µs", d.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(t: u64, p: u64, d: u64, g: u64) -> Config {
        let p_ = Duration::from_millis(p);
        Config {
            renew_deadline: Duration::from_millis(d),
            renew_interval: Config::default_renew_interval(
                Duration::from_millis(d),
                p_,
                Config::default_storage_timeout(p_),
            ),
            demote_grace: Duration::from_millis(g),
            ..Config::with_defaults(
                "a",
                "i",
                "http://127.0.0.1:1",
                Duration::from_millis(t),
                Duration::from_millis(p),
            )
        }
    }

    #[test]
    fn defaults_are_safe() {
        for (t, p) in [(30_000, 1_000), (2_000, 200), (1_000, 100), (60_000, 5_000)] {
            let tt = Duration::from_millis(t);
            let c = cfg(
                t,
                p,
                Config::default_renew_deadline(tt).as_millis() as u64,
                Config::default_demote_grace(tt).as_millis() as u64,
            );
            assert!(
                c.validate_timings().is_ok(),
                "T={t} p={p}: {:?}",
                c.validate_timings()
            );
        }
    }

    #[test]
    fn unsafe_timings_are_refused_with_numbers() {
        let e = cfg(2_000, 200, 1_900, 333)
            .validate_timings()
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsafe timings") && e.contains("1.9s"), "{e}");
        let e = cfg(2_000, 500, 1_000, 100)
            .validate_timings()
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 2 × renew interval 500ms"), "{e}");
        let mut c = cfg(2_000, 200, 1_333, 333);
        c.renew_interval = Duration::from_millis(100);
        let e = c.validate_timings().unwrap_err().to_string();
        assert!(e.contains("below the poll period"), "{e}");
        c.renew_interval = Duration::from_millis(600);
        let e = c.validate_timings().unwrap_err().to_string();
        assert!(e.contains("at least 2 × renew interval 600ms"), "{e}");
        c.renew_interval = Duration::from_millis(200);
        c.heartbeat_interval = Duration::from_millis(100);
        let e = c.validate_timings().unwrap_err().to_string();
        assert!(
            e.contains("heartbeat interval 100ms must be between"),
            "{e}"
        );
        c.heartbeat_interval = Duration::from_millis(700);
        let e = c.validate_timings().unwrap_err().to_string();
        assert!(e.contains("T/3 = 666ms"), "{e}");
        c.heartbeat_interval = Duration::from_millis(666);
        assert_eq!(c.validate_timings(), Ok(()));
    }

    #[test]
    fn the_default_renew_interval_is_a_quarter_of_d_within_p_and_the_liveness_rule() {
        let ms = Duration::from_millis;
        // T = 30 s defaults: D = 20 s, storage 1 s: R = 5 s.
        assert_eq!(
            Config::default_renew_interval(ms(20_000), ms(1_000), ms(1_000)),
            ms(5_000)
        );
        // Never below p.
        assert_eq!(
            Config::default_renew_interval(ms(1_333), ms(500), ms(100)),
            ms(500)
        );
        // A long storage timeout: (D − S)/2 keeps D ≥ 2R + S.
        assert_eq!(
            Config::default_renew_interval(ms(1_333), ms(200), ms(933)),
            ms(200)
        );
    }
}
