//! Other nodes' records: the periodic scan of `nodes/` (liveness, bad and forged records,
//! switchover requests, epochs other nodes report), the rank delay among live standbys, and
//! clearing TERMINATED records (docs/DESIGN.md §3.4, §3.6).

use super::*;

#[derive(Clone, Debug)]
pub(super) struct Tracked {
    pub(super) version: Version,
    pub(super) record: HeartbeatRecord,
    pub(super) last_change: Nanos,
    pub(super) modified: Option<SystemTime>,
}

impl Machine {
    /// A stable offset in [0, p) derived from the instance id.
    pub(super) fn phase_offset(&self) -> Duration {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.cfg.instance_id.hash(&mut h);
        let p = self.cfg.poll_period.as_nanos().max(1) as u64;
        Duration::from_nanos(h.finish() % p)
    }

    /// This node's rank among live, eligible candidates (DESIGN §2's order).
    pub(super) fn rank(&self, now: Nanos) -> u32 {
        let me = Candidate {
            priority: self.priority,
            version: self.cfg.app_version.clone(),
            state: self.base,
            name: self.cfg.name.clone(),
        };
        // The holder of the lease being replaced (dead, or releasing it) is no candidate, even
        // while its last heartbeat still says MASTER.
        let holder = self
            .obs
            .as_ref()
            .and_then(|o| o.lease())
            .map(|l| l.instance_id.as_str());
        let others: Vec<(Candidate, bool)> = self
            .nodes
            .iter()
            .filter(|(name, tr)| {
                **name != self.cfg.name
                    && self.heard_lately(tr, now)
                    && Some(tr.record.instance_id.as_str()) != holder
                    && tr.record.mode.eligible()
                    && !matches!(
                        tr.record.status,
                        NodeState::Failed | NodeState::Terminated | NodeState::Initializing
                    )
            })
            .map(|(name, tr)| {
                let r = &tr.record;
                let c = Candidate {
                    priority: r.priority,
                    version: r.app_version.clone(),
                    state: r.status,
                    name: name.clone(),
                };
                (c, r.mode == Mode::Master)
            })
            .collect();
        rank_of(&me, self.mode == Mode::Master, &others)
    }

    /// Whether a node still counts as a live candidate. Every node that is not master writes
    /// its record every heartbeat interval H (T/3 by default; every poll before issue 18), so
    /// a record the scans found unchanged for three of the writer's intervals (at most T)
    /// belongs to a node that is dead or cut off, though T may not have passed yet.
    /// Without this, a node killed up to T ago (and seen late: scans run every few polls) kept
    /// its rank and made the next-best standby wait one rank delay at a handover. Ranks order
    /// candidates only; they never affect safety.
    pub(super) fn heard_lately(&self, tr: &Tracked, now: Nanos) -> bool {
        let t = self.cfg.heartbeat_timeout;
        let writer = tr
            .record
            .heartbeat_interval_ms
            .or(tr.record.poll_period_ms)
            .map(Duration::from_millis);
        // Our scans re-read it every H of ours.
        let silence = rank_silence(writer, self.cfg.heartbeat_interval, t);
        now < tr.last_change + t && self.last_scan.is_none_or(|s| s < tr.last_change + silence)
    }

    /// A full scan (`asked` is `None`) or a re-read of the `asked` known records.
    pub(super) fn on_scan(&mut self, now: Now, asked: Option<Vec<String>>, result: OpResult) {
        let full = asked.is_none();
        let entries = match result {
            Ok(OpOutput::Scanned(e)) => e,
            Ok(other) => {
                return self.log(
                    Level::Error,
                    format!("internal error: unexpected {other:?} for a scan"),
                );
            }
            Err(e) => {
                if full && matches!(self.corroboration, Corroboration::Pending(_)) {
                    self.corroboration = Corroboration::None;
                    // No take on what could not be corroborated: the next round tries again.
                    self.tasks.retain(|t| !matches!(t, Task::Take { .. }));
                }
                return self.storage_failed("reading nodes/", &e);
            }
        };
        self.last_scan = Some(now.mono);
        if full {
            self.last_list = Some(now.mono);
            self.list_soon = None;
        }
        self.rounds_since_scan = 0;
        let mut seen = std::collections::BTreeSet::new();
        let cluster_id = self.cluster_id().to_string();
        for (key, rr) in entries {
            let Some(name) = records::parse_node_key(&key).map(str::to_string) else {
                self.note_bad(&key, "not a node record name".into());
                continue;
            };
            let (version, record, modified) = match rr {
                ReadResult::Absent => continue,
                ReadResult::Unreadable { reason, .. } => {
                    self.note_bad(&key, reason);
                    continue;
                }
                ReadResult::Present(r) => {
                    match records::open::<HeartbeatRecord>(self.cfg.keys.as_deref(), &key, &r.bytes)
                    {
                        Ok(h) if h.name != name => {
                            self.note_bad(&key, format!("the record names node {:?}", h.name));
                            continue;
                        }
                        Ok(h) if h.cluster_id != cluster_id => {
                            // A wiped store's old nodes: not ours, but a new term is numbered
                            // above what they report, so the fencing token never goes back.
                            let theirs = h.max_epoch.max(h.epoch).unwrap_or(0);
                            if theirs <= records::MAX_EPOCH {
                                self.epochs.foreign_max = self.epochs.foreign_max.max(theirs);
                            }
                            self.note_bad(
                                &key,
                                format!("the record belongs to cluster {}", h.cluster_id),
                            );
                            continue;
                        }
                        Ok(h) => (r.version, h, r.modified),
                        Err(e) => {
                            if e.is_unauthentic() && !self.bad.contains_key(&key) {
                                self.alert(format!("{key} is forged ({e}); it is ignored: never a candidate, never a master"));
                            }
                            self.note_bad(&key, e.to_string());
                            continue;
                        }
                    }
                }
            };
            // A node's writes count up: an older record of the same instance is a replay.
            if let Some(newer) = self
                .nodes
                .get(&name)
                .filter(|t| t.record.instance_id == record.instance_id && record.seq < t.record.seq)
                .map(|t| t.record.seq)
            {
                let reason = format!("a replayed old record: seq {} after {newer}", record.seq);
                if !self.bad.contains_key(&key) {
                    self.alert(format!("{key} is {reason}; it is ignored"));
                }
                self.note_bad(&key, reason);
                seen.insert(name);
                continue;
            }
            self.bad.remove(&key);
            seen.insert(name.clone());
            let reported = record.max_epoch.max(record.epoch).unwrap_or(0);
            if name != self.cfg.name && reported <= records::MAX_EPOCH {
                self.epochs.records_max = self.epochs.records_max.max(reported);
            }
            if name == self.cfg.name && record.instance_id != self.cfg.instance_id {
                // Our own record is tracked (for /ha/states) only while it is ours.
                self.log(
                    Level::Error,
                    format!(
                        "another instance ({}) wrote this node's record: two processes run as {}",
                        record.instance_id, self.cfg.name
                    ),
                );
                continue;
            }
            if name == self.cfg.name && self.nodes.get(&name).is_some_and(|t| t.version != version)
            {
                // Not what we last wrote (a store that lost or rolled back our write): a master
                // rewrites its record only on a change, so write it again now.
                self.hb_written = None;
            }
            match self.nodes.get_mut(&name) {
                Some(t) if t.version == version => {}
                Some(t) => {
                    t.version = version;
                    t.record = record;
                    t.last_change = now.mono;
                    t.modified = modified;
                }
                None => {
                    self.nodes.insert(
                        name.clone(),
                        Tracked {
                            version,
                            record,
                            last_change: now.mono,
                            modified,
                        },
                    );
                }
            }
        }
        match &asked {
            None => self.nodes.retain(|n, _| seen.contains(n)),
            // A known record now absent: removed (`tenure clear`, or the node's record wiped).
            Some(keys) => {
                let before = self.nodes.len();
                self.nodes.retain(|n, _| {
                    seen.contains(n) || !keys.iter().any(|k| *k == records::node_key(n))
                });
                if self.nodes.len() < before {
                    self.list_again_soon(now.mono);
                }
            }
        }
        // A planned switchover: a live, eligible node asks for our epoch. (A lone `--mode
        // disabled` node never hands over.)
        if let Some(term) = self.holding.term()
            && self.releasing.is_none()
            && self.mode != Mode::Disabled
        {
            let epoch = term.epoch;
            let t = self.cfg.heartbeat_timeout;
            let requester = self
                .nodes
                .values()
                .find(|tr| {
                    tr.record.switchover_request == Some(epoch)
                        && now.mono < tr.last_change + t
                        && tr.record.mode.eligible()
                })
                .map(|tr| tr.record.name.clone());
            if let Some(succ) = requester {
                self.log(
                    Level::Info,
                    format!("node {succ} asked for a planned switchover"),
                );
                self.start_release(
                    now.mono,
                    Some(succ),
                    AfterRelease::Idle(self.mode.idle_state()),
                    None,
                    "planned switchover",
                );
            }
        }
        // A cautious take waiting for this scan may announce now.
        self.announce(now.mono);
        // The first scan of a watch records where every node's record stood.
        if let Some(o) = self.obs.as_mut()
            && o.seqs.is_none()
        {
            o.seqs = Some(
                self.nodes
                    .iter()
                    .map(|(n, tr)| (n.clone(), tr.record.seq))
                    .collect(),
            );
        }
        if full && !self.greeted && self.phase == Phase::Running {
            // Make ourselves known now: a master that does not know us would not nudge us at
            // its release, and ranks would leave us out until the next listing.
            self.greeted = true;
            let uris: Vec<String> = self
                .nodes
                .values()
                .filter(|tr| tr.record.name != self.cfg.name && self.heard_lately(tr, now.mono))
                .map(|tr| tr.record.uri.clone())
                .collect();
            if !uris.is_empty() {
                self.events.push_back(Event::Nudge(uris));
            }
        }
        if full {
            self.finish_corroboration(now);
        }
    }

    /// A known record is gone (cleared, or lost by the store): its node, if alive, writes it
    /// again within its H (at most T/3), so list `nodes/` then, not up to 2T later.
    pub(super) fn list_again_soon(&mut self, now: Nanos) {
        if self.list_soon.is_none() {
            self.list_soon = Some(now + self.cfg.heartbeat_timeout / 3 + self.cfg.poll_period);
        }
    }

    pub(super) fn note_bad(&mut self, key: &str, reason: String) {
        if self.bad.get(key) != Some(&reason) {
            self.log(Level::Warn, format!("ignoring bad record {key}: {reason}"));
            self.bad.insert(key.to_string(), reason);
        }
    }

    pub(super) fn on_clear_list(&mut self, now: Now, result: OpResult) {
        let tickets = std::mem::take(&mut self.pending_clear);
        match result {
            Ok(OpOutput::Listed(keys)) => {
                let master = self.current_master_name(now.mono);
                let mut names = Vec::new();
                for key in keys {
                    if let Some(name) = records::parse_node_key(&key)
                        && Some(name) != master.as_deref()
                    {
                        names.push(name.to_string());
                    }
                }
                for n in &names {
                    self.tasks.push_front(Task::Delete(n.clone()));
                }
                for t in tickets {
                    self.reply(t, Ok(Reply::Cleared(names.clone())));
                }
            }
            Ok(_) | Err(_) => {
                for t in tickets {
                    self.reply(
                        t,
                        Err(CommandError::Conflict(
                            "listing nodes/ failed; try again".into(),
                        )),
                    );
                }
            }
        }
    }

    pub(super) fn current_master_name(&self, now: Nanos) -> Option<String> {
        if self.state_at(now) == NodeState::Master {
            return Some(self.cfg.name.clone());
        }
        self.obs
            .as_ref()
            .and_then(LeaseObs::lease)
            .filter(|l| !l.released)
            .map(|l| l.holder.clone())
    }
}
