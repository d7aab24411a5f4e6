//! Assertions shared by the e2e tests. Each one states the bound it checks in terms of T, p and
//! the margin, and prints the measured numbers and the observer's timeline when it fails.

use crate::Timing;
use crate::checker::{History, Onset};
use crate::cluster::Cluster;
use std::time::{Duration, Instant};

/// How long to wait for a fresh cluster to settle (start-up, cold start, first polls).
pub fn settle_timeout(t: &Timing) -> Duration {
    3 * t.t + 10 * t.p + t.margin + Duration::from_secs(2)
}

/// How long to wait for a refused node to exit: it may watch the store for up to T first.
pub fn refusal_timeout(t: &Timing) -> Duration {
    t.t + 4 * t.p + t.margin + Duration::from_secs(3)
}

fn signed_ms(from: Instant, to: Instant) -> i128 {
    crate::ms_since(from, to)
}

impl Cluster {
    /// Waits for the first MASTER answer, sent at or after `since`, of a node not in `exclude`.
    pub fn wait_takeover(&self, since: Instant, exclude: &[&str], timeout: Duration) -> Onset {
        let found = crate::wait_until(timeout, || {
            self.history().first_master_after(since, exclude).is_some()
        });
        let h = self.history();
        match h.first_master_after(since, exclude) {
            Some(o) if found => o,
            _ => panic!(
                "no node other than {exclude:?} answered MASTER within {timeout:?} after +{}ms; timeline:\n{}",
                h.rel(since),
                h.timeline()
            ),
        }
    }
}

/// Asserts that a takeover after the master died (was killed or frozen) at `dead_at` came
/// neither before T − R (the renew interval, at least p) nor after T + 2p + margin. The onset is placed conservatively: too
/// early only if even the first MASTER sample's `received` is before the bound, too late only
/// if even the previous (non-MASTER) sample's `sent` is after it.
pub fn assert_takeover_within_bounds(h: &History, onset: &Onset, dead_at: Instant, t: &Timing) {
    assert!(
        !onset.already_master(),
        "{} was already MASTER before the takeover window; timeline:\n{}",
        onset.node,
        h.timeline()
    );
    let latest = signed_ms(dead_at, onset.latest());
    let earliest = signed_ms(dead_at, onset.earliest());
    let min = t.min_takeover().as_millis() as i128;
    let max = t.max_takeover().as_millis() as i128;
    assert!(
        latest >= min,
        "takeover too early: {} answered MASTER (epoch {:?}) at most {latest} ms after the old master died, \
         but a takeover must wait at least T − R = {min} ms (T = {:?}, p = {:?}); timeline:\n{}",
        onset.node,
        onset.epoch,
        t.t,
        t.p,
        h.timeline()
    );
    assert!(
        earliest <= max,
        "takeover too late: {} became MASTER (epoch {:?}) no earlier than {earliest} ms after the old master died, \
         but the bound is T + 2p + margin = {max} ms (T = {:?}, p = {:?}, margin = {:?}); timeline:\n{}",
        onset.node,
        onset.epoch,
        t.t,
        t.p,
        t.margin,
        h.timeline()
    );
    eprintln!(
        "takeover by {} (epoch {:?}) between {earliest} and {latest} ms after the old master died (allowed {min}..={max} ms)",
        onset.node, onset.epoch
    );
}

/// Asserts that every answer of `node` sent in `[from, to]` was `answer`. A failed request
/// (DOWN, e.g. a timeout on a loaded machine) is tolerated only in runs shorter than `max_gap`.
pub fn assert_kept_answering(
    h: &History,
    node: &str,
    from: Instant,
    to: Instant,
    answer: &str,
    max_gap: Duration,
) {
    let samples: Vec<_> = h
        .of(node)
        .filter(|s| s.sent >= from && s.sent <= to)
        .collect();
    assert!(
        !samples.is_empty(),
        "no samples of {node} between +{}ms and +{}ms",
        h.rel(from),
        h.rel(to)
    );
    let mut down_since: Option<Instant> = None;
    for s in &samples {
        if s.is_down() {
            let since = *down_since.get_or_insert(s.sent);
            assert!(
                s.received.duration_since(since) <= max_gap,
                "{node} stopped answering from +{}ms to +{}ms (expected it to keep answering {answer}); timeline:\n{}",
                h.rel(since),
                h.rel(s.received),
                h.timeline()
            );
            continue;
        }
        down_since = None;
        assert_eq!(
            s.answer,
            answer,
            "{node} answered {} (epoch {:?}) at +{}ms, expected {answer} throughout [+{}ms, +{}ms]; timeline:\n{}",
            s.answer,
            s.epoch,
            h.rel(s.sent),
            h.rel(from),
            h.rel(to),
            h.timeline()
        );
    }
}

/// Asserts that `node` never answered MASTER in a sample sent at or after `from`.
pub fn assert_never_master_since(h: &History, node: &str, from: Instant) {
    let bad: Vec<_> = h
        .of(node)
        .filter(|s| s.sent >= from && s.is_master())
        .collect();
    assert!(
        bad.is_empty(),
        "{node} answered MASTER {} time(s) after +{}ms, first in [+{}ms, +{}ms] (epoch {:?}); timeline:\n{}",
        bad.len(),
        h.rel(from),
        h.rel(bad[0].sent),
        h.rel(bad[0].received),
        bad[0].epoch,
        h.timeline()
    );
}

/// Waits until `node`'s log (current start) contains `needle`; panics with the log if not.
pub fn wait_log_contains(c: &Cluster, node: &str, needle: &str, timeout: Duration) {
    let ok = crate::wait_until(timeout, || c.node(node).last_start_log().contains(needle));
    assert!(
        ok,
        "{node}'s log does not contain {needle:?} after {timeout:?}; log:\n{}",
        c.node(node).last_start_log()
    );
}

/// Waits until `reporter`'s `/ha/states` shows `node` with `status`.
pub fn wait_status_in_states(
    c: &Cluster,
    reporter: &str,
    node: &str,
    status: &str,
    timeout: Duration,
) {
    let mut last = None;
    let ok = crate::wait_until(timeout, || {
        last = c.node(reporter).status_of(node);
        last.as_deref() == Some(status)
    });
    assert!(
        ok,
        "{reporter}'s /ha/states shows {node} as {last:?} after {timeout:?}, expected {status:?}; states: {}",
        c.node(reporter)
            .states()
            .map_or("<no answer>".to_string(), |v| v.to_string())
    );
}

/// Waits for a node to exit and returns its exit code; panics with its log if it does not.
pub fn expect_exit(c: &mut Cluster, node: &str, timeout: Duration) -> i32 {
    let code = c.node_mut(node).wait_exit(timeout);
    match code {
        Some(code) => code,
        None => panic!(
            "{node} is still running after {timeout:?} (expected it to exit); log:\n{}",
            c.node(node).log_tail(40)
        ),
    }
}
