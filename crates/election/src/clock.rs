//! Time as the protocol sees it: CLOCK_BOOTTIME, which keeps counting through suspend, so a
//! deadline computed before a VM freeze or a laptop suspend has passed when the node wakes.

use std::time::Duration;

/// Nanoseconds on CLOCK_BOOTTIME (or, in simulation, on a node's simulated clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Nanos(pub u64);

impl Nanos {
    pub const ZERO: Nanos = Nanos(0);
    pub const MAX: Nanos = Nanos(u64::MAX);

    pub fn saturating_add(self, d: Duration) -> Nanos {
        Nanos(
            self.0
                .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }
    pub fn saturating_sub(self, d: Duration) -> Nanos {
        Nanos(
            self.0
                .saturating_sub(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }
    /// `self - earlier`, zero if `earlier` is later.
    pub fn since(self, earlier: Nanos) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Nanos {
    type Output = Nanos;
    fn add(self, d: Duration) -> Nanos {
        self.saturating_add(d)
    }
}

fn read_clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass; both clocks exist on Linux.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The current CLOCK_BOOTTIME reading.
pub fn now() -> Nanos {
    Nanos(read_clock(libc::CLOCK_BOOTTIME).as_nanos() as u64)
}

/// REALTIME − BOOTTIME in nanoseconds. It changes only when the wall clock is stepped, or when
/// the guest's clocks stood still during a VM pause and were then corrected; a change of more
/// than a second makes a master demote at once (DESIGN §3.2).
pub fn wall_minus_boot() -> i128 {
    let real = read_clock(libc::CLOCK_REALTIME).as_nanos() as i128;
    let boot = read_clock(libc::CLOCK_BOOTTIME).as_nanos() as i128;
    real - boot
}

/// Wall-clock milliseconds since the Unix epoch (for records and the API, never for decisions).
pub fn wall_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
