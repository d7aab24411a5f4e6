//! The op cycle: one round per poll period p (the lease step, the heartbeat, every few rounds a
//! scan), the queue of tasks, the one storage operation in flight, and the dispatch of its
//! result. `Task` is what is to be done; `Purpose` is what the operation in flight is for.

use super::*;

/// What the lease write is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum WriteKind {
    Renew,
    Take { reason: TakeReason },
    Retake,
    Release,
}

#[derive(Clone, Debug)]
pub(super) enum Purpose {
    ReadCluster,
    /// Re-signing cluster.json with the current secret (start-up, during a rotation).
    CreateCluster(ClusterRecord),
    /// The periodic re-read of cluster.json: the store's identity and the cluster's T and ρ.
    CheckCluster,
    /// Clearing cluster.json's `fresh` flag before the first term (see `ClaimFresh`).
    ClaimFresh(ClusterRecord),
    ReadOwnRecord,
    /// Claiming this node's name: its record created, or replaced on the version watched.
    ClaimName,
    ReadLease,
    ListEpochs,
    CreateEpoch(u64),
    /// Whether an epoch file whose create had an unknown outcome is ours.
    ReadEpoch(u64),
    WriteLease {
        kind: WriteKind,
        record: LeaseRecord,
    },
    Heartbeat,
    /// The listing of `nodes/` with every record (`None`), or these known records only.
    Scan(Option<Vec<String>>),
    ClearList,
    Delete(String),
}

#[derive(Clone, Debug)]
pub(super) enum Task {
    LeaseStep,
    Heartbeat,
    /// The full scan: list `nodes/` and read every record.
    Scan,
    /// Re-read the records of the nodes already known (but our own, and the lease holder's
    /// once it shows the lease's term: the lease shows its liveness): the scans between two
    /// listings.
    ReadKnown,
    ListEpochs,
    CheckCluster,
    /// The first term of a store made by `tenure init`: clear `fresh` in cluster.json by a
    /// conditional replace; exactly one node wins and cold-starts at once.
    ClaimFresh,
    /// Continue a takeover with a freshly allocated epoch.
    Take {
        reason: TakeReason,
    },
    CreateEpoch {
        epoch: u64,
        reason: TakeReason,
    },
    WriteLease {
        kind: WriteKind,
        record: LeaseRecord,
    },
    ClearStates,
    Delete(String),
    ReadEpoch(u64),
}

impl Machine {
    /// When the caller must call [`Machine::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        let mut t: Option<Nanos> = None;
        let mut consider = |x: Nanos| t = Some(t.map_or(x, |t| t.min(x)));
        if let Some(term) = self.holding.term() {
            consider(term.deadline);
            if !term.announced && !term.awaiting_scan {
                consider(term.from);
            }
        }
        if let Some(r) = &self.releasing
            && r.hook.is_some()
        {
            consider(r.started + self.cfg.demote_grace);
        }
        match self.phase {
            Phase::Exited => {}
            _ => {
                // While a release waits for its demote hook, rounds are suspended: only the
                // grace deadline above may wake the machine.
                let waiting_release = self.releasing.as_ref().is_some_and(|r| !r.written);
                if self.inflight.is_none() && self.tasks.is_empty() && !waiting_release {
                    consider(self.next_round_at);
                }
            }
        }
        t
    }

    /// The next storage operation to perform, if any. At most one is outstanding: after an
    /// `Op` is returned, nothing more is returned until its result is handled.
    pub fn poll_op(&mut self, now: Now) -> Option<Op> {
        self.check_deadline(now.mono);
        if self.inflight.is_some() {
            return None;
        }
        loop {
            match &self.phase {
                Phase::Exited => return None,
                Phase::Starting(step) => {
                    if now.mono < self.next_round_at {
                        return None;
                    }
                    let step = step.clone();
                    return Some(self.start_op(now, step));
                }
                Phase::Running => {}
            }
            if let Some(op) = self.release_op(now) {
                return Some(op);
            }
            if self.releasing.as_ref().is_some_and(|r| !r.written) {
                // Waiting for the demote hook.
                return None;
            }
            if let Some(task) = self.tasks.pop_front() {
                if let Some(op) = self.task_op(now, task) {
                    return Some(op);
                }
                continue;
            }
            if self.exit_after_tasks {
                self.exit(0, "shut down".into());
                return None;
            }
            if self.round_active {
                self.round_active = false;
                let normal = (self.round_started + self.cfg.poll_period).max(now.mono);
                self.next_round_at = if self.nudge_pending {
                    self.last_nudge.map_or(now.mono, |l| l.max(now.mono))
                } else {
                    match self.election_wake.take() {
                        Some(w) if w < normal => w.max(now.mono),
                        _ => normal,
                    }
                };
            }
            if now.mono < self.next_round_at {
                return None;
            }
            self.start_round(now);
        }
    }

    pub(super) fn start_round(&mut self, now: Now) {
        self.nudge_pending = false;
        self.round_active = true;
        self.round_started = now.mono;
        self.tasks.push_back(Task::LeaseStep);
        if self.heartbeat_due(now) {
            self.tasks.push_back(Task::Heartbeat);
        }
        self.rounds_since_scan += 1;
        let listing_due = self
            .last_list
            .is_none_or(|l| now.mono + self.cfg.poll_period / 2 >= l + self.list_interval())
            || self.list_soon.is_some_and(|at| now.mono >= at);
        if self.scan_next_round || listing_due {
            self.scan_next_round = false;
            self.tasks.push_back(Task::Scan);
        } else if self.rounds_since_scan >= self.scan_every() {
            self.tasks.push_back(Task::ReadKnown);
        }
        // Is the store still this cluster's, with the same T and ρ? Every T (§3.10 a); also
        // whenever the lease reads absent or unusable (a wiped or replaced store) and before
        // taking such a lease (the corroboration), which is what makes a wipe harmless.
        if self
            .last_cluster_check
            .is_none_or(|c| now.mono + self.cfg.poll_period / 2 >= c + self.cfg.heartbeat_timeout)
        {
            self.tasks.push_back(Task::CheckCluster);
        }
    }

    /// Re-read the known records every H (they change every H at most, a master's not at all:
    /// its lease shows it live), not every poll: n nodes reading n records every p is O(n²).
    pub(super) fn scan_every(&self) -> u32 {
        let p = self.cfg.poll_period.as_nanos().max(1);
        ((self.cfg.heartbeat_interval.as_nanos() + p / 2) / p).max(1) as u32
    }

    /// How often the full scan lists `nodes/` (new nodes appear in `/ha/states` and in ranks
    /// within it): 2T. A listing costs as much as a write on S3; removed records are seen at
    /// the next re-read.
    pub(super) fn list_interval(&self) -> Duration {
        self.cfg.heartbeat_timeout * 2
    }

    /// Whether this round writes the heartbeat: the first one, any change of what the record
    /// says, and every H for a node that is not answering MASTER. A master's record stands
    /// still while its renewals move the lease (its liveness rides in the lease, §3.7).
    pub(super) fn heartbeat_due(&self, now: Now) -> bool {
        let Some((sent, last)) = &self.hb_written else {
            return true;
        };
        let next = self.heartbeat_fields(now, last.seq);
        let same = HeartbeatRecord {
            seq: last.seq,
            local_timestamp_ms: last.local_timestamp_ms,
            ..next
        } == *last;
        if !same {
            return true;
        }
        last.status != NodeState::Master
            && now.mono + self.cfg.poll_period / 2 >= *sent + self.cfg.heartbeat_interval
    }

    pub(super) fn issue(&mut self, now: Now, purpose: Purpose, op: Op) -> Op {
        if let Purpose::WriteLease { kind, .. } = &purpose
            && *kind != WriteKind::Release
        {
            self.renew_sent = Some(now.mono);
        }
        self.inflight = Some((purpose, now.mono));
        op
    }

    /// Whether a master's round renews the lease: once R has passed since its last lease
    /// write was sent (to the nearest round: rounds start every p, R is a few of them).
    /// Rounds in between read the lease, so a lease replaced by another node (the store lost
    /// our writes) still demotes this one within a round (DESIGN §3.1, §3.10 e).
    pub(super) fn renewal_due(&self, now: Nanos) -> bool {
        self.renew_sent
            .is_none_or(|s| now + self.cfg.poll_period / 2 >= s + self.cfg.renew_interval)
    }

    pub(super) fn start_op(&mut self, now: Now, step: StartStep) -> Op {
        match step {
            StartStep::Cluster => match self.pending_cluster.take() {
                Some((rec, version)) => {
                    let bytes = self.seal(CLUSTER_KEY, &rec);
                    let op = Op::Replace(CLUSTER_KEY.into(), bytes, version);
                    self.issue(now, Purpose::CreateCluster(rec), op)
                }
                None => self.issue(now, Purpose::ReadCluster, Op::Read(CLUSTER_KEY.into())),
            },
            StartStep::Identity(_) => {
                // With the lease: a live master's record stands still, its lease does not.
                let key = records::node_key(&self.cfg.name);
                self.issue(
                    now,
                    Purpose::ReadOwnRecord,
                    Op::ReadMany(vec![key, LEASE_KEY.into()]),
                )
            }
            StartStep::Claim(version) => {
                let key = records::node_key(&self.cfg.name);
                let rec = self.heartbeat_record(now);
                let bytes = self.seal(&key, &rec);
                let op = match version {
                    None => Op::Create(key, bytes),
                    Some(v) => Op::Replace(key, bytes, v),
                };
                self.issue(now, Purpose::ClaimName, op)
            }
            StartStep::ModeCheck => {
                if matches!(self.mode, Mode::Master | Mode::Disabled)
                    && self.obs.as_ref().is_some_and(|o| o.version().is_none())
                    && self.epochs.nonempty.is_none()
                {
                    return self.issue(now, Purpose::ListEpochs, Op::List(EPOCHS_PREFIX.into()));
                }
                self.issue(now, Purpose::ReadLease, Op::Read(LEASE_KEY.into()))
            }
        }
    }

    pub(super) fn task_op(&mut self, now: Now, task: Task) -> Option<Op> {
        match task {
            Task::LeaseStep => {
                if self.holding.term().is_some() && (self.settle || !self.renewal_due(now.mono)) {
                    return Some(self.issue(now, Purpose::ReadLease, Op::Read(LEASE_KEY.into())));
                }
                if let Holding::Term(own, term) = &self.holding {
                    let own = own.clone();
                    let mut rec = own.record.clone();
                    rec.renew_seq += 1;
                    rec.written_at_ms = now.wall_ms;
                    rec.holder_uri = self.cfg.uri.clone();
                    debug_assert_eq!(rec.epoch, term.epoch);
                    let bytes = self.seal(LEASE_KEY, &rec);
                    return Some(self.issue(
                        now,
                        Purpose::WriteLease {
                            kind: WriteKind::Renew,
                            record: rec,
                        },
                        Op::Replace(LEASE_KEY.into(), bytes, own.version),
                    ));
                }
                if let Some(own) = self.retake_candidate() {
                    // Our own lease is still current as far as the store tells: corroborate
                    // that first (a rolled-back store shows its old self here).
                    let key = Some(own.version.clone());
                    let epoch = own.record.epoch;
                    match self
                        .corroboration_for(&key, now.mono)
                        .map(|ev| ev.allows(epoch, epoch))
                    {
                        Some(Ok(())) => {}
                        Some(Err(why)) => {
                            self.log(
                                Level::Error,
                                format!("not re-taking this node's own lease (epoch {epoch}): {why}; the store may have rolled back"),
                            );
                            self.holding = Holding::None;
                            return Some(self.issue(
                                now,
                                Purpose::ReadLease,
                                Op::Read(LEASE_KEY.into()),
                            ));
                        }
                        None => {
                            self.corroborate(key);
                            return Some(self.issue(
                                now,
                                Purpose::ReadLease,
                                Op::Read(LEASE_KEY.into()),
                            ));
                        }
                    }
                    let mut rec = own.record.clone();
                    rec.renew_seq += 1;
                    rec.written_at_ms = now.wall_ms;
                    let bytes = self.seal(LEASE_KEY, &rec);
                    return Some(self.issue(
                        now,
                        Purpose::WriteLease {
                            kind: WriteKind::Retake,
                            record: rec,
                        },
                        Op::Replace(LEASE_KEY.into(), bytes, own.version),
                    ));
                }
                Some(self.issue(now, Purpose::ReadLease, Op::Read(LEASE_KEY.into())))
            }
            Task::Heartbeat => {
                let rec = self.heartbeat_record(now);
                self.hb_written = Some((now.mono, rec.clone()));
                let key = records::node_key(&self.cfg.name);
                let bytes = self.seal(&key, &rec);
                Some(self.issue(now, Purpose::Heartbeat, Op::Put(key, bytes)))
            }
            Task::Scan => Some(self.issue(now, Purpose::Scan(None), Op::ScanNodes)),
            Task::ReadKnown => {
                // The lease holder's record changes only with its state: once it shows the
                // term of the lease, the lease tells the rest. Our own is ours.
                let holder = self
                    .obs
                    .as_ref()
                    .and_then(|o| o.lease())
                    .filter(|l| !l.released)
                    .map(|l| (l.instance_id.clone(), l.epoch));
                let known_master = |tr: &Tracked| {
                    holder.as_ref().is_some_and(|(i, e)| {
                        tr.record.instance_id == *i
                            && tr.record.status == NodeState::Master
                            && tr.record.epoch == Some(*e)
                    })
                };
                let keys: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|(name, tr)| **name != self.cfg.name && !known_master(tr))
                    .map(|(name, _)| records::node_key(name))
                    .collect();
                if keys.is_empty() {
                    self.rounds_since_scan = 0;
                    return None;
                }
                Some(self.issue(now, Purpose::Scan(Some(keys.clone())), Op::ReadMany(keys)))
            }
            Task::CheckCluster => {
                self.last_cluster_check = Some(now.mono);
                Some(self.issue(now, Purpose::CheckCluster, Op::Read(CLUSTER_KEY.into())))
            }
            Task::ClaimFresh => {
                let (Some(c), Some(v)) = (self.cluster.clone(), self.cluster_version.clone())
                else {
                    return None;
                };
                let rec = ClusterRecord { fresh: false, ..c };
                let bytes = self.seal(CLUSTER_KEY, &rec);
                Some(self.issue(
                    now,
                    Purpose::ClaimFresh(rec),
                    Op::Replace(CLUSTER_KEY.into(), bytes, v),
                ))
            }
            Task::ListEpochs => {
                Some(self.issue(now, Purpose::ListEpochs, Op::List(EPOCHS_PREFIX.into())))
            }
            Task::Take { reason } => {
                if self.lost.is_some() {
                    // cluster.json is gone or foreign: nothing is taken (§3.10 a).
                    return None;
                }
                // Allocate on what the store shows now: after a pause the evidence is stale.
                let version = self.obs.as_ref().and_then(|o| o.version().cloned());
                if self.corroboration_for(&version, now.mono).is_none() {
                    // Behind the listing and the scan (queued now, or already).
                    self.corroborate(version);
                    self.tasks.push_back(Task::Take { reason });
                    return None;
                }
                if let Some(epoch) = self.reusable_epoch() {
                    // Our earlier attempt allocated this epoch and no lease has used it: try
                    // again with it rather than burning a new epoch file on every attempt.
                    let record = self.fresh_lease(epoch, now);
                    return self.task_op(
                        now,
                        Task::WriteLease {
                            kind: WriteKind::Take { reason },
                            record,
                        },
                    );
                }
                // Allocate the epoch: 1 + the highest known anywhere.
                let lease_epoch = self
                    .obs
                    .as_ref()
                    .and_then(|o| o.lease())
                    .map_or(0, |l| l.epoch);
                let highest = lease_epoch.max(self.highest_epoch_known());
                // An earlier create whose outcome is unknown (or that failed) is tried again
                // with the same number, even if a listing since showed it: no epoch is burnt
                // on a failure (the conflict then tells whether the file is ours).
                let others = lease_epoch
                    .max(self.epochs.max_seen)
                    .max(self.epochs.records_max)
                    .max(self.epochs.foreign_max);
                if let Some(n) = self.epochs.tried
                    && n > others
                    && self.epochs.max_file <= n
                {
                    return self.task_op(now, Task::CreateEpoch { epoch: n, reason });
                }
                if highest >= records::MAX_EPOCH {
                    self.log(
                        Level::Error,
                        format!(
                            "no epoch left to allocate: {} is the highest tenure uses ({}), so this cluster cannot elect a master; stop every node, remove {} (garbage, or a writer exhausting the range) and restart them",
                            records::epoch_key(highest),
                            records::MAX_EPOCH,
                            records::epoch_key(highest)
                        ),
                    );
                    return None;
                }
                self.task_op(
                    now,
                    Task::CreateEpoch {
                        epoch: highest + 1,
                        reason,
                    },
                )
            }
            Task::CreateEpoch { epoch, reason } => {
                let prev = self.obs.as_ref().and_then(|o| o.lease().cloned());
                let rec = EpochRecord {
                    format: FORMAT,
                    cluster_id: self.cluster_id().to_string(),
                    epoch,
                    holder: self.cfg.name.clone(),
                    instance_id: self.cfg.instance_id.clone(),
                    started_at_ms: now.wall_ms,
                    previous: prev.as_ref().map(|l| l.epoch),
                    previous_holder: prev.as_ref().map(|l| l.holder.clone()),
                    reason: reason.as_str().to_string(),
                };
                let lease = self.fresh_lease(epoch, now);
                self.tasks.push_front(Task::WriteLease {
                    kind: WriteKind::Take { reason },
                    record: lease,
                });
                let key = records::epoch_key(epoch);
                let bytes = self.seal(&key, &rec);
                Some(self.issue(now, Purpose::CreateEpoch(epoch), Op::Create(key, bytes)))
            }
            Task::WriteLease { kind, mut record } => {
                record.written_at_ms = now.wall_ms;
                let bytes = self.seal(LEASE_KEY, &record);
                let op = match self.obs.as_ref().and_then(|o| o.version().cloned()) {
                    Some(v) => Op::Replace(LEASE_KEY.into(), bytes, v),
                    None => Op::Create(LEASE_KEY.into(), bytes),
                };
                Some(self.issue(now, Purpose::WriteLease { kind, record }, op))
            }
            Task::ClearStates => Some(self.issue(
                now,
                Purpose::ClearList,
                Op::List(records::NODES_PREFIX.into()),
            )),
            Task::Delete(name) => {
                let key = records::node_key(&name);
                Some(self.issue(now, Purpose::Delete(name), Op::Delete(key)))
            }
            Task::ReadEpoch(epoch) => Some(self.issue(
                now,
                Purpose::ReadEpoch(epoch),
                Op::Read(records::epoch_key(epoch)),
            )),
        }
    }

    /// This node's heartbeat record, with the next sequence number.
    pub(super) fn heartbeat_record(&mut self, now: Now) -> HeartbeatRecord {
        self.hb_seq += 1;
        self.heartbeat_fields(now, self.hb_seq)
    }

    /// What this node's record says now, with this sequence number.
    pub(super) fn heartbeat_fields(&self, now: Now, seq: u64) -> HeartbeatRecord {
        let status = self.state_at(now.mono);
        HeartbeatRecord {
            format: FORMAT,
            cluster_id: self.cluster_id().to_string(),
            name: self.cfg.name.clone(),
            instance_id: self.cfg.instance_id.clone(),
            seq,
            status,
            mode: self.mode,
            priority: self.priority,
            app_version: self.cfg.app_version.clone(),
            uri: self.cfg.uri.clone(),
            local_timestamp_ms: now.wall_ms,
            epoch: self.master_epoch_at(now.mono),
            switchover_request: self.switchover_request,
            poll_period_ms: Some(self.cfg.poll_period.as_millis() as u64),
            max_epoch: Some(self.highest_term_known()).filter(|&e| e > 0),
            heartbeat_timeout_ms: Some(self.cfg.heartbeat_timeout.as_millis() as u64),
            renew_interval_ms: Some(self.cfg.renew_interval.as_millis() as u64),
            heartbeat_interval_ms: Some(
                if status == NodeState::Master {
                    self.cfg.renew_interval
                } else {
                    self.cfg.heartbeat_interval
                }
                .as_millis() as u64,
            ),
        }
    }

    /// During a release: once the hook is done, write the released lease.
    pub(super) fn release_op(&mut self, now: Now) -> Option<Op> {
        let r = self.releasing.as_ref()?;
        if r.written || r.hook.is_some() {
            return None;
        }
        let successor = r.successor.clone();
        let Some(own) = self.holding.own().cloned() else {
            self.finish_release("the lease was not ours any more");
            return None;
        };
        let mut rec = own.record.clone();
        rec.renew_seq += 1;
        rec.released = true;
        rec.successor = successor;
        rec.written_at_ms = now.wall_ms;
        let bytes = self.seal(LEASE_KEY, &rec);
        if let Some(r) = &mut self.releasing {
            r.written = true;
        }
        Some(self.issue(
            now,
            Purpose::WriteLease {
                kind: WriteKind::Release,
                record: rec,
            },
            Op::Replace(LEASE_KEY.into(), bytes, own.version),
        ))
    }

    /// The result of the operation last returned by [`Machine::poll_op`].
    pub fn handle_op_result(&mut self, now: Now, result: OpResult) {
        let Some((purpose, started)) = self.inflight.take() else {
            return;
        };
        if let Err(e) = &result
            && !matches!(e, StoreError::Conflict(_))
        {
            self.storage_errors += 1;
        }
        match purpose {
            Purpose::ReadCluster => self.on_read_cluster(now, result),
            Purpose::CreateCluster(rec) => self.on_create_cluster(now, rec, result),
            Purpose::CheckCluster => self.on_check_cluster(now, result),
            Purpose::ClaimFresh(rec) => self.on_claim_fresh(now, rec, result),
            Purpose::ReadOwnRecord => self.on_read_own(now, result),
            Purpose::ClaimName => self.on_claim_name(now, result),
            Purpose::ReadLease => self.on_read_lease(now, result),
            Purpose::ListEpochs => self.on_list_epochs(now, result),
            Purpose::CreateEpoch(epoch) => self.on_create_epoch(now, epoch, result),
            Purpose::ReadEpoch(epoch) => self.on_read_epoch(epoch, result),
            Purpose::WriteLease { kind, record } => {
                self.on_write_lease(now, started, kind, record, result)
            }
            Purpose::Heartbeat => match result {
                Ok(out) => {
                    // Our own row in /ha/states is what we wrote: the scans between listings
                    // do not re-read it.
                    if let (OpOutput::Written(version), Some((_, rec))) = (out, &self.hb_written) {
                        let modified = self.nodes.get(&self.cfg.name).and_then(|t| t.modified);
                        self.nodes.insert(
                            self.cfg.name.clone(),
                            Tracked {
                                version,
                                record: rec.clone(),
                                last_change: now.mono,
                                modified,
                            },
                        );
                    }
                    if let Some(uri) = self.nudge_after_heartbeat.take() {
                        self.events.push_back(Event::Nudge(vec![uri]));
                    }
                }
                Err(e) => {
                    // Write it again next round.
                    self.hb_written = None;
                    self.storage_failed("heartbeat write", &e)
                }
            },
            Purpose::Scan(asked) => self.on_scan(now, asked, result),
            Purpose::ClearList => self.on_clear_list(now, result),
            Purpose::Delete(name) => match result {
                Ok(_) => {
                    self.nodes.remove(&name);
                    self.list_again_soon(now.mono);
                    self.bad.remove(&records::node_key(&name));
                    self.log(Level::Info, format!("cleared the record of node {name}"));
                }
                Err(e) => self.log(
                    Level::Warn,
                    format!("could not clear the record of node {name}: {e}"),
                ),
            },
        }
        self.check_deadline(now.mono);
    }
}
