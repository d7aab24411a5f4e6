//! `/ha/states` (tenure's view) and, projected from it, `/v1/server/ha/states` (Brooklyn's
//! `HighAvailabilitySummary`), computed from a snapshot at one instant. Only the lease decides
//! who is master; heartbeat records only describe nodes.

use crate::wire::{BadRecordView, NodeView, States, WaitingView};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};
use tenure_election::{LeaseView, Nanos, NodeState, Snapshot};

fn millis(t: SystemTime) -> Option<i64> {
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
}

fn non_empty(s: &str) -> Option<Cow<'_, str>> {
    (!s.is_empty()).then_some(Cow::Borrowed(s))
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn summarize(snap: &Snapshot, now: Nanos) -> States<'_> {
    let master = snap.master_at(now);
    let live_lease = live_lease(snap, now);

    let mut nodes = BTreeMap::new();

    let own_rec = snap.nodes.iter().find(|r| r.name == snap.own_name);
    let own_state = snap.state_at(now);
    let lease_deadline_ms = snap
        .master_until
        .filter(|v| now < *v)
        .map(|v| ms(v.since(now)));
    nodes.insert(
        Cow::Borrowed(snap.own_name.as_str()),
        NodeView {
            node_id: Cow::Borrowed(&snap.own_name),
            node_uri: non_empty(&snap.own_uri),
            status: own_state,
            local_timestamp: own_rec.map(|r| r.local_timestamp_ms),
            remote_timestamp: own_rec.and_then(|r| r.remote_timestamp).and_then(millis),
            priority: Some(snap.priority),
            epoch: if own_state == NodeState::Master {
                snap.own_epoch
            } else {
                None
            },
            instance_id: Cow::Borrowed(&snap.own_instance),
            app_version: snap.app_version.as_deref().map(Cow::Borrowed),
            mode: Some(snap.mode),
            heartbeat_age_ms: own_rec.map(|r| ms(now.since(r.last_change))),
            lease_deadline_ms,
            waiting: snap.waiting.as_ref().map(|w| WaitingView {
                what: Cow::Borrowed(&w.what),
                until_timestamp: w.until_wall_ms,
                remaining_ms: ms(w.until.since(now)),
            }),
        },
    );

    for r in snap.nodes.iter().filter(|r| r.name != snap.own_name) {
        let holds =
            live_lease.is_some_and(|l| l.holder == r.name && l.instance_id == r.instance_id);
        let status = if holds {
            NodeState::Master
        } else {
            match r.status_at(now) {
                // A record may claim MASTER; only the lease makes it so.
                NodeState::Master => r.mode.idle_state(),
                s => s,
            }
        };
        nodes.insert(
            Cow::Borrowed(r.name.as_str()),
            NodeView {
                node_id: Cow::Borrowed(&r.name),
                node_uri: non_empty(&r.uri),
                status,
                local_timestamp: Some(r.local_timestamp_ms),
                remote_timestamp: r.remote_timestamp.and_then(millis),
                priority: Some(r.priority),
                epoch: if holds {
                    live_lease.map(|l| l.epoch)
                } else {
                    r.epoch
                },
                instance_id: Cow::Borrowed(&r.instance_id),
                app_version: r.app_version.as_deref().map(Cow::Borrowed),
                mode: Some(r.mode),
                heartbeat_age_ms: Some(ms(now.since(r.last_change))),
                lease_deadline_ms: None,
                waiting: None,
            },
        );
    }

    // A live holder whose heartbeat record we have not read (yet): its row comes from the lease.
    if let Some(l) = live_lease
        && !nodes.contains_key(l.holder.as_str())
    {
        nodes.insert(
            Cow::Borrowed(l.holder.as_str()),
            NodeView {
                node_id: Cow::Borrowed(&l.holder),
                node_uri: non_empty(&l.holder_uri),
                status: NodeState::Master,
                local_timestamp: None,
                remote_timestamp: None,
                priority: None,
                epoch: Some(l.epoch),
                instance_id: Cow::Borrowed(&l.instance_id),
                app_version: None,
                mode: None,
                heartbeat_age_ms: None,
                lease_deadline_ms: None,
                waiting: None,
            },
        );
    }

    States {
        plane_id: Cow::Borrowed(&snap.plane_id),
        own_id: Cow::Borrowed(&snap.own_name),
        master_id: master.map(|(name, _)| Cow::Borrowed(name)),
        nodes,
        links: BTreeMap::new(),
        epoch: known_epoch(snap, now),
        bad_records: snap
            .bad_records
            .iter()
            .map(|b| BadRecordView {
                key: Cow::Borrowed(&b.key),
                reason: Cow::Borrowed(&b.reason),
            })
            .collect(),
        expected: (!snap.expected.is_empty()).then(|| {
            snap.expected
                .iter()
                .map(|n| Cow::Borrowed(n.as_str()))
                .collect()
        }),
        missing: (!snap.expected.is_empty()).then(|| {
            snap.missing_at(now)
                .into_iter()
                .map(Cow::Borrowed)
                .collect()
        }),
    }
}

/// Another node's unreleased, unexpired lease: the same condition as `master_at` uses.
pub(crate) fn live_lease(snap: &Snapshot, now: Nanos) -> Option<&LeaseView> {
    snap.lease
        .as_ref()
        .filter(|l| !l.released && now < l.stale_at && l.instance_id != snap.own_instance)
}

/// The current master's epoch if one is known, else the last lease epoch seen.
pub(crate) fn known_epoch(snap: &Snapshot, now: Nanos) -> Option<u64> {
    snap.master_at(now)
        .map(|(_, e)| e)
        .or(snap.lease.as_ref().map(|l| l.epoch))
}
