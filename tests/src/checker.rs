//! The safety checker over an observer history, and helpers to measure failovers.
//!
//! A sample says only that the node gave its answer at some instant in `[sent, received]`.
//! The checker reports a violation only when the samples prove one, whatever the exact
//! instants of the answers were (it is conservative, never flaky by construction):
//!
//! - (a) A run of consecutive MASTER samples of one node with the same epoch gives a *definite*
//!   MASTER interval `[received of the first, sent of the last]` (a run of one sample gives
//!   none). Two different nodes' definite intervals must not overlap, and no MASTER sample of
//!   one node may lie entirely (`[sent, received]`) inside another node's definite interval.
//! - (b) An epoch value is reported in MASTER answers by one node only.
//! - (c) Epochs in MASTER answers never go back: if a MASTER answer with epoch e was received
//!   before another MASTER request (of any node) was sent, that later answer's epoch is ≥ e.
//!   (Ordering by `sent` alone would not be sound when the two requests overlap in time.)
//!
//! Samples of a node that are not MASTER (STANDBY, DOWN, …) end a run but are never
//! violations by themselves.

use crate::ms_since;
use crate::observer::Sample;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

/// A proven breach of the single-master promise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// When it happened (as far as the samples place it).
    pub at: Instant,
    /// `at` in ms since the history's origin.
    pub at_ms: i128,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}ms: {}", self.at_ms, self.message)
    }
}

/// A run of MASTER answers of one node during which it was certainly MASTER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterInterval {
    pub node: String,
    pub epoch: Option<u64>,
    /// Received time of the run's first sample.
    pub start: Instant,
    /// Sent time of the run's last sample.
    pub end: Instant,
    pub samples: usize,
}

/// The first MASTER answer of a node after some instant, with what bounds its start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Onset {
    pub node: String,
    pub epoch: Option<u64>,
    /// The first MASTER sample.
    pub sample: Sample,
    /// The node's sample before it, if any.
    pub previous: Option<Sample>,
}

impl Onset {
    /// The node was answering MASTER no later than this (the first MASTER sample's `received`).
    pub fn latest(&self) -> Instant {
        self.sample.received
    }
    /// The node became MASTER no earlier than this: the `sent` of its previous, non-MASTER
    /// sample (or of the first MASTER sample when there is no earlier sample).
    pub fn earliest(&self) -> Instant {
        match &self.previous {
            Some(p) => p.sent,
            None => self.sample.sent,
        }
    }
    /// The node's previous sample was already MASTER (so this is no real onset).
    pub fn already_master(&self) -> bool {
        self.previous.as_ref().is_some_and(Sample::is_master)
    }
}

/// Everything an observer recorded, sorted by `sent`.
#[derive(Clone, Debug)]
pub struct History {
    pub origin: Instant,
    pub samples: Vec<Sample>,
}

impl History {
    pub fn new(origin: Instant, mut samples: Vec<Sample>) -> Self {
        samples.sort_by_key(|s| s.sent);
        History { origin, samples }
    }

    /// Milliseconds since the origin.
    pub fn rel(&self, t: Instant) -> i128 {
        ms_since(self.origin, t)
    }

    /// The names of all observed nodes, sorted.
    pub fn nodes(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.samples.iter().map(|s| s.node.as_str()).collect();
        set.into_iter().map(String::from).collect()
    }

    /// One node's samples, in order.
    pub fn of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.node == node)
    }

    /// The samples sent at or after `t`.
    pub fn since(&self, t: Instant) -> impl Iterator<Item = &Sample> + '_ {
        self.samples.iter().filter(move |s| s.sent >= t)
    }

    /// A node's latest sample.
    pub fn latest(&self, node: &str) -> Option<&Sample> {
        self.samples.iter().rev().find(|s| s.node == node)
    }

    /// A node's latest answer that is not DOWN.
    pub fn latest_answer(&self, node: &str) -> Option<&Sample> {
        self.samples
            .iter()
            .rev()
            .find(|s| s.node == node && !s.is_down())
    }

    /// The nodes whose latest sample is MASTER.
    pub fn masters_at_end(&self) -> Vec<String> {
        self.nodes()
            .into_iter()
            .filter(|n| self.latest(n).is_some_and(Sample::is_master))
            .collect()
    }

    /// A node's last MASTER sample.
    pub fn last_master_answer(&self, node: &str) -> Option<&Sample> {
        self.samples
            .iter()
            .rev()
            .find(|s| s.node == node && s.is_master())
    }

    /// The first MASTER sample sent at or after `t` by a node not in `exclude`.
    pub fn first_master_after(&self, t: Instant, exclude: &[&str]) -> Option<Onset> {
        let sample = self
            .samples
            .iter()
            .find(|s| s.sent >= t && s.is_master() && !exclude.contains(&s.node.as_str()))?;
        let previous = self
            .samples
            .iter()
            .rev()
            .find(|s| s.node == sample.node && s.sent < sample.sent)
            .cloned();
        Some(Onset {
            node: sample.node.clone(),
            epoch: sample.epoch,
            sample: sample.clone(),
            previous,
        })
    }

    /// The definite MASTER intervals (see the module docs), in order of start.
    pub fn definite_intervals(&self) -> Vec<MasterInterval> {
        let mut out = Vec::new();
        for node in self.nodes() {
            let mut run: Option<(&Sample, &Sample, usize)> = None;
            let close = |run: Option<(&Sample, &Sample, usize)>, out: &mut Vec<_>| {
                if let Some((first, last, n)) = run
                    && first.received < last.sent
                {
                    out.push(MasterInterval {
                        node: first.node.clone(),
                        epoch: first.epoch,
                        start: first.received,
                        end: last.sent,
                        samples: n,
                    });
                }
            };
            for s in self.of(&node) {
                run = match run {
                    Some((first, _, n)) if s.is_master() && s.epoch == first.epoch => {
                        Some((first, s, n + 1))
                    }
                    r => {
                        close(r, &mut out);
                        s.is_master().then_some((s, s, 1))
                    }
                };
            }
            close(run, &mut out);
        }
        out.sort_by_key(|i| i.start);
        out
    }

    /// Every proven violation of the single-master promise (empty when none).
    pub fn violations(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        let intervals = self.definite_intervals();
        let ep = |e: Option<u64>| e.map_or("none".to_string(), |e| e.to_string());

        // (a) overlapping definite intervals of different nodes.
        for (i, a) in intervals.iter().enumerate() {
            for b in &intervals[i + 1..] {
                if b.start >= a.end {
                    break; // sorted by start: no later interval overlaps `a`
                }
                if a.node != b.node && b.start < a.end {
                    v.push(self.violation(
                        b.start,
                        format!(
                            "two masters: {} (epoch {}) was MASTER throughout [+{}ms, +{}ms] and {} (epoch {}) throughout [+{}ms, +{}ms]",
                            a.node, ep(a.epoch), self.rel(a.start), self.rel(a.end),
                            b.node, ep(b.epoch), self.rel(b.start), self.rel(b.end)
                        ),
                    ));
                }
            }
        }

        // (a) a MASTER answer entirely inside another node's definite interval.
        for iv in &intervals {
            let inside: Vec<&Sample> = self
                .samples
                .iter()
                .filter(|s| {
                    s.is_master() && s.node != iv.node && s.sent >= iv.start && s.received <= iv.end
                })
                .collect();
            if let Some(first) = inside.first() {
                v.push(self.violation(
                    first.sent,
                    format!(
                        "two masters: {} answered MASTER (epoch {}) in [+{}ms, +{}ms] ({} such answers) while {} (epoch {}) was MASTER throughout [+{}ms, +{}ms]",
                        first.node, ep(first.epoch), self.rel(first.sent), self.rel(first.received),
                        inside.len(), iv.node, ep(iv.epoch), self.rel(iv.start), self.rel(iv.end)
                    ),
                ));
            }
        }

        // (b) one epoch, one node.
        let mut by_epoch: BTreeMap<u64, BTreeMap<&str, &Sample>> = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.is_master()) {
            if let Some(e) = s.epoch {
                by_epoch
                    .entry(e)
                    .or_default()
                    .entry(s.node.as_str())
                    .or_insert(s);
            }
        }
        for (e, nodes) in &by_epoch {
            if nodes.len() > 1 {
                let at = nodes.values().map(|s| s.sent).max().expect("non-empty");
                let who: Vec<String> = nodes
                    .iter()
                    .map(|(n, s)| format!("{n} (first at +{}ms)", self.rel(s.sent)))
                    .collect();
                v.push(self.violation(
                    at,
                    format!(
                        "epoch {e} reported in MASTER answers by several nodes: {}",
                        who.join(", ")
                    ),
                ));
            }
        }

        // (c) epochs never go back.
        let mut by_received: Vec<(&Sample, u64)> = self
            .samples
            .iter()
            .filter(|s| s.is_master())
            .filter_map(|s| s.epoch.map(|e| (s, e)))
            .collect();
        by_received.sort_by_key(|(s, _)| s.received);
        // prefix_max[i] = the sample with the highest epoch among by_received[..=i].
        let mut prefix_max: Vec<(&Sample, u64)> = Vec::with_capacity(by_received.len());
        for &(s, e) in &by_received {
            match prefix_max.last() {
                Some(&(m, me)) if me >= e => prefix_max.push((m, me)),
                _ => prefix_max.push((s, e)),
            }
        }
        let mut reported: BTreeSet<(u64, u64)> = BTreeSet::new();
        for s in self.samples.iter().filter(|s| s.is_master()) {
            let Some(e) = s.epoch else { continue };
            let n = by_received.partition_point(|(a, _)| a.received < s.sent);
            if n == 0 {
                continue;
            }
            let (m, me) = prefix_max[n - 1];
            if me > e && reported.insert((me, e)) {
                v.push(self.violation(
                    s.sent,
                    format!(
                        "epoch went back: {} answered MASTER with epoch {} (received +{}ms), then {} answered MASTER with epoch {} (sent +{}ms)",
                        m.node, me, self.rel(m.received), s.node, e, self.rel(s.sent)
                    ),
                ));
            }
        }

        v.sort_by_key(|x| x.at);
        v
    }

    /// Every MASTER answer's epoch must be a term this node was granted: `holders_of(epoch)`
    /// are the holders the store's record of that epoch (`epochs/<n>.json`) named over the run
    /// (one, or none when there is no such record; more than one only if a store that lost
    /// its memory let the epoch be granted again, which the caller reports). One violation per
    /// (node, epoch) that does not match.
    pub fn epoch_holder_violations(
        &self,
        holders_of: impl Fn(u64) -> BTreeSet<String>,
    ) -> Vec<Violation> {
        let mut seen: BTreeSet<(&str, u64)> = BTreeSet::new();
        let mut v = Vec::new();
        for s in self.samples.iter().filter(|s| s.is_master()) {
            let Some(e) = s.epoch else {
                v.push(self.violation(
                    s.sent,
                    format!("{} answered MASTER without an epoch", s.node),
                ));
                continue;
            };
            if !seen.insert((s.node.as_str(), e)) {
                continue;
            }
            let holders = holders_of(e);
            match holders.iter().next() {
                _ if holders.contains(&s.node) => {}
                other => v.push(self.violation(
                    s.sent,
                    format!(
                        "{} answered MASTER with epoch {e} (first at +{}ms), but the store's record of epoch {e} names {}",
                        s.node,
                        self.rel(s.sent),
                        other.map_or("no holder (no record)".to_string(), |h| format!("holder {h}"))
                    ),
                )),
            }
        }
        v
    }

    /// The longest stretch after `from` in which no node is known to have answered MASTER, as
    /// an upper bound: between consecutive MASTER answers (of any node), from the `sent` of one
    /// to the `received` of the next. `None` when fewer than one MASTER answer follows `from`.
    pub fn longest_no_master_after(&self, from: Instant) -> Option<Duration> {
        let masters: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.is_master() && s.sent >= from)
            .collect();
        masters
            .windows(2)
            .map(|w| w[1].received.saturating_duration_since(w[0].sent))
            .max()
            .or_else(|| masters.first().map(|_| Duration::ZERO))
    }

    fn violation(&self, at: Instant, message: String) -> Violation {
        Violation {
            at,
            at_ms: self.rel(at),
            message,
        }
    }

    /// Panics listing every violation and the timeline, if there is any violation.
    pub fn assert_safe(&self) {
        let v = self.violations();
        if !v.is_empty() {
            let list: Vec<String> = v.iter().map(|x| format!("  {x}")).collect();
            panic!(
                "the observer saw {} safety violation(s):\n{}\ntimeline:\n{}",
                v.len(),
                list.join("\n"),
                self.timeline()
            );
        }
    }

    /// Each node's answers collapsed into segments of equal (answer, epoch), for messages.
    pub fn timeline(&self) -> String {
        const MAX_SEGMENTS: usize = 80;
        let mut out = String::new();
        for node in self.nodes() {
            let mut segs: Vec<(String, Option<u64>, Instant, Instant, usize)> = Vec::new();
            for s in self.of(&node) {
                match segs.last_mut() {
                    Some(last) if last.0 == s.answer && last.1 == s.epoch => {
                        last.3 = s.received;
                        last.4 += 1;
                    }
                    _ => segs.push((s.answer.clone(), s.epoch, s.sent, s.received, 1)),
                }
            }
            out.push_str(&format!("  {node}: {} samples\n", self.of(&node).count()));
            let skip = segs.len().saturating_sub(MAX_SEGMENTS);
            if skip > 0 {
                out.push_str(&format!("    … {skip} earlier segments\n"));
            }
            for (answer, epoch, from, to, n) in segs.into_iter().skip(skip) {
                let e = epoch.map_or(String::new(), |e| format!(" epoch={e}"));
                out.push_str(&format!(
                    "    [+{}ms .. +{}ms] {answer}{e} ×{n}\n",
                    self.rel(from),
                    self.rel(to)
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Builds synthetic histories: samples every 10 ms taking 2 ms each.
    struct Synth {
        origin: Instant,
        samples: Vec<Sample>,
    }

    impl Synth {
        fn new() -> Self {
            Synth {
                origin: Instant::now(),
                samples: Vec::new(),
            }
        }
        fn at(&self, ms: u64) -> Instant {
            self.origin + Duration::from_millis(ms)
        }
        /// One sample of `node` sent at `sent_ms`, answered `dur_ms` later.
        fn one(&mut self, node: &str, sent_ms: u64, dur_ms: u64, answer: &str, epoch: Option<u64>) {
            self.samples.push(Sample {
                node: node.into(),
                sent: self.at(sent_ms),
                received: self.at(sent_ms + dur_ms),
                answer: answer.into(),
                epoch,
            });
        }
        /// Samples of `node` every 10 ms over [from, to).
        fn run(&mut self, node: &str, from: u64, to: u64, answer: &str, epoch: Option<u64>) {
            let mut t = from;
            while t < to {
                self.one(node, t, 2, answer, epoch);
                t += 10;
            }
        }
        fn history(self) -> History {
            History::new(self.origin, self.samples)
        }
    }

    #[test]
    fn clean_handover_passes() {
        let mut s = Synth::new();
        s.run("a", 0, 1000, "MASTER", Some(1));
        s.run("a", 1000, 1500, "DOWN", None);
        s.run("b", 0, 1200, "STANDBY", Some(1));
        s.run("b", 1200, 2000, "MASTER", Some(2));
        s.run("c", 0, 2000, "STANDBY", Some(1));
        let h = s.history();
        assert_eq!(h.violations(), vec![], "{}", h.timeline());
        let on = h.first_master_after(h.origin + Duration::from_millis(1000), &["a"]);
        let on = on.expect("b takes over");
        assert_eq!(on.node, "b");
        assert_eq!(on.epoch, Some(2));
        assert!(!on.already_master());
        assert_eq!(on.earliest(), h.origin + Duration::from_millis(1190));
        assert_eq!(on.latest(), h.origin + Duration::from_millis(1202));
        assert_eq!(h.masters_at_end(), vec!["b".to_string()]);
        assert_eq!(h.definite_intervals().len(), 2);
    }

    #[test]
    fn answers_that_only_might_overlap_pass() {
        // a's last MASTER request is slow ([990, 1100]); b's first MASTER answer is sent at 1010.
        // a may have answered at 990 and b at 1100: no proof of two masters.
        let mut s = Synth::new();
        s.run("a", 0, 990, "MASTER", Some(1));
        s.one("a", 990, 110, "MASTER", Some(1));
        s.run("b", 0, 1010, "STANDBY", Some(1));
        s.one("b", 1010, 95, "MASTER", Some(2));
        s.run("b", 1110, 1500, "MASTER", Some(2));
        let h = s.history();
        assert_eq!(h.violations(), vec![], "{}", h.timeline());
    }

    #[test]
    fn overlapping_masters_fail() {
        let mut s = Synth::new();
        s.run("a", 0, 1000, "MASTER", Some(1));
        s.run("b", 0, 800, "STANDBY", Some(1));
        s.run("b", 800, 1500, "MASTER", Some(2));
        let v = s.history().violations();
        assert!(v.iter().any(|x| x.message.contains("two masters")), "{v:?}");
        // b's first MASTER request (sent at 800 ms) lies inside a's definite interval.
        assert_eq!(v[0].at_ms, 800);
    }

    #[test]
    fn a_single_master_answer_inside_another_masters_interval_fails() {
        let mut s = Synth::new();
        s.run("a", 0, 1000, "MASTER", Some(1));
        s.run("b", 0, 1000, "STANDBY", Some(1));
        // A lone MASTER answer of b (no definite interval of its own).
        s.samples
            .retain(|x| !(x.node == "b" && x.sent == s.origin + Duration::from_millis(500)));
        s.one("b", 500, 3, "MASTER", Some(2));
        let v = s.history().violations();
        assert!(
            v.iter().any(|x| x.message.contains("b answered MASTER")),
            "{v:?}"
        );
        // a's later epoch-1 answers also come after b's epoch-2 answer.
        assert!(
            v.iter().any(|x| x.message.contains("epoch went back")),
            "{v:?}"
        );
    }

    #[test]
    fn epoch_reuse_fails() {
        let mut s = Synth::new();
        s.run("a", 0, 1000, "MASTER", Some(3));
        s.run("a", 1000, 2000, "DOWN", None);
        s.run("b", 0, 1500, "STANDBY", Some(3));
        s.run("b", 1500, 2000, "MASTER", Some(3));
        let v = s.history().violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].message.contains("epoch 3"), "{v:?}");
    }

    #[test]
    fn epoch_going_back_fails() {
        let mut s = Synth::new();
        s.run("a", 0, 1000, "MASTER", Some(5));
        s.run("a", 1000, 2000, "DOWN", None);
        s.run("b", 0, 1500, "STANDBY", Some(5));
        s.run("b", 1500, 2000, "MASTER", Some(4));
        let v = s.history().violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].message.contains("epoch went back"), "{v:?}");
    }

    #[test]
    fn epoch_order_is_only_judged_when_requests_do_not_overlap() {
        // b's epoch-4 request was sent before a's epoch-5 answer arrived: not provably later.
        let mut s = Synth::new();
        s.one("a", 100, 50, "MASTER", Some(5));
        s.one("b", 120, 5, "MASTER", Some(4));
        let v = s.history().violations();
        assert!(!v.iter().any(|x| x.message.contains("went back")), "{v:?}");
    }

    #[test]
    fn epochs_must_name_the_node_that_answered_master() {
        let mut s = Synth::new();
        s.run("a", 0, 500, "MASTER", Some(1));
        s.run("b", 600, 1000, "MASTER", Some(2));
        let h = s.history();
        let holder = |e: u64| match e {
            1 | 2 => BTreeSet::from(["a".to_string()]),
            _ => BTreeSet::new(),
        };
        let v = h.epoch_holder_violations(holder);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].message.contains("b answered MASTER with epoch 2"),
            "{v:?}"
        );
        assert!(h.epoch_holder_violations(|_| BTreeSet::new()).len() == 2);
        // An epoch granted again after the store lost its record (reported by the caller):
        // either holder's MASTER answers match.
        let twice = |_: u64| BTreeSet::from(["a".to_string(), "b".to_string()]);
        assert!(h.epoch_holder_violations(twice).is_empty());
        // The longest gap: a's last answer sent at 490, b's first received at 602.
        assert_eq!(
            h.longest_no_master_after(h.origin),
            Some(Duration::from_millis(112))
        );
    }

    #[test]
    fn the_same_node_may_be_master_again_with_a_new_epoch() {
        let mut s = Synth::new();
        s.run("a", 0, 500, "MASTER", Some(1));
        s.run("a", 500, 700, "STANDBY", Some(1));
        s.run("a", 700, 1000, "MASTER", Some(2));
        s.run("b", 0, 1000, "STANDBY", None);
        let h = s.history();
        assert_eq!(h.violations(), vec![]);
        assert_eq!(h.definite_intervals().len(), 2);
    }
}
