//! What the node reports: state transitions (with their hooks), what it waits for, and the
//! snapshot the HTTP layer serves (the driver publishes it when it differs from the last one).

use super::*;

impl Machine {
    /// Begin waiting for `what` until `until` (logged once, shown in the snapshot).
    pub(super) fn wait_for(&mut self, now: Now, what: String, until: Nanos) {
        let until_wall_ms = wall_at(now, until);
        self.log(
            Level::Info,
            format!(
                "waiting for {what}: until {} at the latest",
                chrono_ms(until_wall_ms)
            ),
        );
        self.waiting = Some(Waiting {
            what,
            until,
            until_wall_ms,
        });
    }

    pub(super) fn stop_waiting(&mut self) {
        self.waiting = None;
    }

    pub(super) fn transition(
        &mut self,
        from: NodeState,
        to: NodeState,
        epoch: Option<u64>,
        reason: String,
    ) -> u64 {
        let hook = self.next_hook;
        self.next_hook += 1;
        let master = match to {
            NodeState::Master => Some(self.cfg.name.clone()),
            _ => None,
        };
        self.transitions.push_back(Transition {
            at_ms: 0,
            from,
            to,
            epoch,
            reason: reason.clone(),
        });
        if self.transitions.len() > MAX_TRANSITIONS {
            self.transitions.pop_front();
        }
        self.events.push_back(Event::Transition {
            from,
            to,
            epoch,
            master,
            reason,
            hook,
        });
        hook
    }

    /// Stamp wall time on transitions recorded since the last call (the machine reads no clock).
    pub(super) fn stamp_transitions(&mut self, wall_ms: i64) {
        for t in self.transitions.iter_mut().rev() {
            if t.at_ms != 0 {
                break;
            }
            t.at_ms = wall_ms;
        }
    }

    /// The view the HTTP layer serves.
    pub fn snapshot(&mut self, now: Now) -> Snapshot {
        self.stamp_transitions(now.wall_ms);
        let t = self.cfg.heartbeat_timeout;
        let lease = match &self.holding {
            Holding::Term(own, term) => Some(LeaseView {
                holder: own.record.holder.clone(),
                instance_id: own.record.instance_id.clone(),
                epoch: term.epoch,
                released: false,
                holder_uri: self.cfg.uri.clone(),
                stale_at: term.deadline,
            }),
            _ => self.obs.as_ref().and_then(|o| {
                o.lease().map(|l| LeaseView {
                    holder: l.holder.clone(),
                    instance_id: l.instance_id.clone(),
                    epoch: l.epoch,
                    released: l.released,
                    holder_uri: l.holder_uri.clone(),
                    stale_at: o.first_returned + t,
                })
            }),
        };
        // The lease holder's heartbeat rides in its lease: its row shows the latest renewal.
        let holder = match &self.holding {
            Holding::Term(own, _) => Some(&own.record),
            _ => self
                .obs
                .as_ref()
                .and_then(|o| o.lease())
                .filter(|l| !l.released),
        }
        .map(|l| (l.instance_id.clone(), l.written_at_ms));
        let nodes = self
            .nodes
            .values()
            .map(|tr| NodeRow {
                name: tr.record.name.clone(),
                instance_id: tr.record.instance_id.clone(),
                uri: tr.record.uri.clone(),
                status: tr.record.status,
                mode: tr.record.mode,
                priority: tr.record.priority,
                app_version: tr.record.app_version.clone(),
                local_timestamp_ms: match &holder {
                    Some((i, at)) if *i == tr.record.instance_id => {
                        tr.record.local_timestamp_ms.max(*at)
                    }
                    _ => tr.record.local_timestamp_ms,
                },
                remote_timestamp: tr.modified,
                last_change: tr.last_change,
                stale_at: tr.last_change + t,
                epoch: tr.record.epoch,
            })
            .collect();
        Snapshot {
            plane_id: self.cluster_id().to_string(),
            own_name: self.cfg.name.clone(),
            own_instance: self.cfg.instance_id.clone(),
            own_uri: self.cfg.uri.clone(),
            mode: self.mode,
            priority: self.priority,
            app_version: self.cfg.app_version.clone(),
            base_state: self.base,
            master_until: self
                .holding
                .term()
                .filter(|t| t.announced)
                .map(|t| t.deadline),
            own_epoch: self.holding.term().map(|t| t.epoch),
            lease,
            nodes,
            bad_records: self
                .bad
                .iter()
                .map(|(k, r)| BadRecord {
                    key: k.clone(),
                    reason: r.clone(),
                })
                .collect(),
            heartbeat_timeout_ms: t.as_millis() as u64,
            poll_period_ms: self.cfg.poll_period.as_millis() as u64,
            storage_errors: self.storage_errors,
            forged_records: self.forged_records,
            transitions: self.transitions.iter().cloned().collect(),
            waiting: self.waiting.clone(),
            shutting_down: self.exit_after_tasks
                || self.phase == Phase::Exited
                || self
                    .releasing
                    .as_ref()
                    .is_some_and(|r| matches!(r.then, AfterRelease::Shutdown)),
            // The machine reads no clock; the driver stamps this when it publishes.
            wall_offset_ns: None,
            expected: self.cfg.expected_nodes.clone(),
        }
    }
}
