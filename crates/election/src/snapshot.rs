//! What the HTTP layer reads: a snapshot published by the driver through a watch channel.
//! The MASTER answer is never stored as a flag: the snapshot carries the deadline V and
//! [`Snapshot::state_at`] compares it with the clock at the moment of the answer.

use crate::clock::Nanos;
use crate::types::{Mode, NodeState};
use std::time::SystemTime;

#[derive(Clone, Debug, PartialEq)]
pub struct LeaseView {
    pub holder: String,
    pub instance_id: String,
    pub epoch: u64,
    pub released: bool,
    pub holder_uri: String,
    /// When the lease, unchanged, counts as expired on this node's clock.
    pub stale_at: Nanos,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeRow {
    pub name: String,
    pub instance_id: String,
    pub uri: String,
    /// The status the node wrote in its record.
    pub status: NodeState,
    pub mode: Mode,
    pub priority: i64,
    pub app_version: Option<String>,
    /// Writer's wall clock (ms since the Unix epoch).
    pub local_timestamp_ms: i64,
    /// The store's clock for the record's last write.
    pub remote_timestamp: Option<SystemTime>,
    /// When this observer last saw the record change.
    pub last_change: Nanos,
    /// When the record, unchanged, makes the node stale (shown FAILED).
    pub stale_at: Nanos,
    pub epoch: Option<u64>,
}

impl NodeRow {
    /// The status to report at `now`: a stale node is FAILED, TERMINATED stays TERMINATED.
    pub fn status_at(&self, now: Nanos) -> NodeState {
        if self.status == NodeState::Terminated {
            NodeState::Terminated
        } else if now >= self.stale_at {
            NodeState::Failed
        } else {
            self.status
        }
    }
}

/// A record that could not be used, for `/ha/states` and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRecord {
    pub key: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub at_ms: i64,
    pub from: NodeState,
    pub to: NodeState,
    pub epoch: Option<u64>,
    pub reason: String,
}

/// What this node waits for before it acts, and until when: a restarted node watching its
/// name's previous instance, or a standby watching a lease that stands still. Logged once when
/// it begins and shown in `/ha/states`, so that an operator sees why nothing happens yet.
#[derive(Clone, Debug, PartialEq)]
pub struct Waiting {
    /// In words, e.g. "the lease of a epoch 3 to stand still for T=30s".
    pub what: String,
    /// When the wait ends at the latest (unless the record changes first), on the election
    /// clock and on the wall clock (ms since the Unix epoch).
    pub until: Nanos,
    pub until_wall_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub plane_id: String,
    pub own_name: String,
    pub own_instance: String,
    pub own_uri: String,
    pub mode: Mode,
    pub priority: i64,
    pub app_version: Option<String>,
    /// The state when not answering MASTER.
    pub base_state: NodeState,
    /// `Some(V)` while this node holds the lease: it answers MASTER only while now < V.
    pub master_until: Option<Nanos>,
    /// The epoch this node holds (meaningful while `master_until` is set).
    pub own_epoch: Option<u64>,
    /// The lease as last observed (or written) by this node.
    pub lease: Option<LeaseView>,
    pub nodes: Vec<NodeRow>,
    pub bad_records: Vec<BadRecord>,
    pub heartbeat_timeout_ms: u64,
    pub poll_period_ms: u64,
    pub storage_errors: u64,
    /// Forged, replayed or wrongly signed records seen (each was logged as an ALERT).
    pub forged_records: u64,
    pub transitions: Vec<Transition>,
    pub waiting: Option<Waiting>,
    /// A shutdown has begun (a signal or a shutdown request): the node releases, then exits.
    pub shutting_down: bool,
    /// REALTIME − BOOTTIME (ns) when the driver published this snapshot. A VM pause may leave
    /// the guest's boot clock behind while the wall clock is corrected, so a MASTER answer also
    /// needs this offset unchanged within a second (DESIGN §3.2); `None` skips the check.
    pub wall_offset_ns: Option<i128>,
    /// The cluster's expected members ([`crate::config::Config::expected_nodes`]): sorted,
    /// empty when none were declared.
    pub expected: Vec<String>,
}

/// How far REALTIME − BOOTTIME may move before a master stops answering MASTER.
pub const CLOCK_JUMP_LIMIT_NS: i128 = 1_000_000_000;

impl Snapshot {
    /// This node's state at `now`, deciding MASTER against the deadline.
    pub fn state_at(&self, now: Nanos) -> NodeState {
        match self.master_until {
            Some(v) if now < v && self.clocks_steady() => NodeState::Master,
            Some(_) => match self.base_state {
                NodeState::Master => NodeState::Standby,
                s => s,
            },
            None => self.base_state,
        }
    }

    /// The wall clock has not jumped against the boot clock since publication.
    fn clocks_steady(&self) -> bool {
        self.wall_offset_ns.is_none_or(|published| {
            (crate::clock::wall_minus_boot() - published).abs() <= CLOCK_JUMP_LIMIT_NS
        })
    }

    /// The master's name at `now`, as far as this node knows: itself while it answers MASTER,
    /// otherwise the holder of an unreleased, unexpired lease; `None` after a release.
    pub fn master_at(&self, now: Nanos) -> Option<(&str, u64)> {
        if self.state_at(now) == NodeState::Master {
            return Some((self.own_name.as_str(), self.own_epoch.unwrap_or(0)));
        }
        match &self.lease {
            Some(l) if !l.released && now < l.stale_at && l.instance_id != self.own_instance => {
                Some((l.holder.as_str(), l.epoch))
            }
            _ => None,
        }
    }

    /// The expected members that are absent or silent at `now`, sorted: no heartbeat record
    /// read, a record unchanged for T (the rule that shows a node FAILED, [`NodeRow::stale_at`])
    /// or a TERMINATED record (stopped gracefully). This node itself is never missing, nor the
    /// holder of a live lease whose record has not been read yet. Empty without an expected list.
    pub fn missing_at(&self, now: Nanos) -> Vec<&str> {
        if self.expected.is_empty() {
            return Vec::new();
        }
        let master = self.master_at(now).map(|(m, _)| m);
        self.expected
            .iter()
            .map(String::as_str)
            .filter(|name| *name != self.own_name && Some(*name) != master)
            .filter(|name| {
                self.nodes
                    .iter()
                    .find(|r| r.name == *name)
                    .is_none_or(|r| r.status == NodeState::Terminated || now >= r.stale_at)
            })
            .collect()
    }

    /// A snapshot of a node that is starting (before its first observation).
    pub fn initializing(own_name: &str, own_instance: &str, own_uri: &str, mode: Mode) -> Self {
        Snapshot {
            plane_id: String::new(),
            own_name: own_name.into(),
            own_instance: own_instance.into(),
            own_uri: own_uri.into(),
            mode,
            priority: 0,
            app_version: None,
            base_state: NodeState::Initializing,
            master_until: None,
            own_epoch: None,
            lease: None,
            nodes: Vec::new(),
            bad_records: Vec::new(),
            heartbeat_timeout_ms: 0,
            poll_period_ms: 0,
            storage_errors: 0,
            forged_records: 0,
            transitions: Vec::new(),
            waiting: None,
            shutting_down: false,
            wall_offset_ns: None,
            expected: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_answer_is_decided_by_the_deadline() {
        let mut s = Snapshot::initializing("a", "i1", "http://127.0.0.1:1", Mode::Auto);
        s.base_state = NodeState::Master;
        s.master_until = Some(Nanos(1_000));
        s.own_epoch = Some(3);
        assert_eq!(s.state_at(Nanos(999)), NodeState::Master);
        assert_eq!(s.state_at(Nanos(1_000)), NodeState::Standby);
        assert_eq!(s.master_at(Nanos(999)), Some(("a", 3)));
        assert_eq!(s.master_at(Nanos(1_000)), None);
    }

    fn row(name: &str, status: NodeState, stale_at: u64) -> NodeRow {
        NodeRow {
            name: name.into(),
            instance_id: format!("{name}-1"),
            uri: String::new(),
            status,
            mode: Mode::Auto,
            priority: 0,
            app_version: None,
            local_timestamp_ms: 0,
            remote_timestamp: None,
            last_change: Nanos(0),
            stale_at: Nanos(stale_at),
            epoch: None,
        }
    }

    #[test]
    fn missing_members_are_the_absent_the_silent_and_the_stopped() {
        let mut s = Snapshot::initializing("a", "a-1", "http://127.0.0.1:1", Mode::Auto);
        // No expected list: nothing is missing, whatever the records say.
        assert!(s.missing_at(Nanos(0)).is_empty());
        s.expected = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        s.nodes = vec![
            // Its own record may be stale or not read yet: this node is never missing.
            row("a", NodeState::Standby, 0),
            row("b", NodeState::Standby, 1_000),
            row("c", NodeState::Terminated, 1_000),
            // A disabled node writes FAILED but keeps writing: present.
            row("d", NodeState::Failed, 1_000),
            // Not expected: never listed.
            row("x", NodeState::Standby, 0),
        ];
        assert_eq!(s.missing_at(Nanos(999)), ["c", "e"]);
        // b's and d's records stood still for T: silent.
        assert_eq!(s.missing_at(Nanos(1_000)), ["b", "c", "d", "e"]);
        // The holder of a live lease is present even before its record is read.
        s.lease = Some(LeaseView {
            holder: "e".into(),
            instance_id: "e-1".into(),
            epoch: 2,
            released: false,
            holder_uri: String::new(),
            stale_at: Nanos(2_000),
        });
        assert_eq!(s.missing_at(Nanos(999)), ["c"]);
        assert_eq!(s.missing_at(Nanos(2_000)), ["b", "c", "d", "e"]);
    }

    #[test]
    fn a_jumped_wall_clock_ends_the_master_answer_at_once() {
        let mut s = Snapshot::initializing("a", "i1", "http://127.0.0.1:1", Mode::Auto);
        s.base_state = NodeState::Master;
        s.master_until = Some(Nanos::MAX);
        s.wall_offset_ns = Some(crate::clock::wall_minus_boot());
        assert_eq!(s.state_at(crate::clock::now()), NodeState::Master);
        // As if the guest slept 5 s without its boot clock advancing, then its wall clock was
        // corrected.
        s.wall_offset_ns = Some(crate::clock::wall_minus_boot() - 5_000_000_000);
        assert_eq!(s.state_at(crate::clock::now()), NodeState::Standby);
    }
}
