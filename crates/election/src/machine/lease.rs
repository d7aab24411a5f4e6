//! The lease as this node sees it (`LeaseObs`), the lease it holds (`OwnLease`, `Term` with its
//! deadline V), and what follows a read or a write of it: observing a new version, taking,
//! renewing, announcing MASTER, demoting at V (docs/DESIGN.md §3.2, §3.3).

use super::*;

/// What a read of the lease returned. A record without a version cannot be represented.
#[derive(Clone, Debug)]
pub(super) enum Seen {
    Absent,
    /// A record this node cannot use (corrupt, forged, another cluster's): an opaque version.
    Unreadable(Version),
    Present(Version, LeaseRecord),
}

/// The lease as this node last read it.
#[derive(Clone, Debug)]
pub(super) struct LeaseObs {
    pub(super) seen: Seen,
    /// When a read first returned this version (r in DESIGN §3.3).
    pub(super) first_returned: Nanos,
    /// The highest epoch this node knew of then. A newer one found before a take means a term
    /// began while we watched: the version we see again may be an old copy written back
    /// (the store lost writes), so the watch starts over.
    pub(super) floor: u64,
    /// Every node record's sequence number at the first scan after `first_returned`: a record
    /// that says MASTER and moved on since belongs to a node that answered MASTER during the
    /// watch, whatever the lease in the store says.
    pub(super) seqs: Option<BTreeMap<String, u64>>,
    /// When a read last returned this version. A watch with a gap (this node paused, or its
    /// storage failing) saw nothing meanwhile: under a store that lost writes, the version it
    /// sees again may have been replaced and written back, so the watch starts over.
    pub(super) last_read: Nanos,
    /// An at-once take of this version was refused by its corroboration: only the T rule
    /// applies to it now.
    pub(super) no_at_once: bool,
}

impl LeaseObs {
    /// A new watch of what a read returned, from `now`, above `floor`.
    pub(super) fn new(seen: Seen, now: Nanos, floor: u64) -> LeaseObs {
        LeaseObs {
            seen,
            first_returned: now,
            floor,
            seqs: None,
            last_read: now,
            no_at_once: false,
        }
    }

    /// `None`: absent.
    pub(super) fn version(&self) -> Option<&Version> {
        match &self.seen {
            Seen::Absent => None,
            Seen::Unreadable(v) | Seen::Present(v, _) => Some(v),
        }
    }

    pub(super) fn lease(&self) -> Option<&LeaseRecord> {
        match &self.seen {
            Seen::Present(_, l) => Some(l),
            _ => None,
        }
    }
}

/// The lease record this node knows it wrote and believes current.
#[derive(Clone, Debug)]
pub(super) struct OwnLease {
    pub(super) version: Version,
    pub(super) record: LeaseRecord,
}

/// What this node holds of the lease. A term always comes with the lease it renews: a master
/// that does not know its lease cannot be represented.
#[derive(Clone, Debug, Default)]
pub(super) enum Holding {
    /// The lease in the store is not ours, or not known to be.
    #[default]
    None,
    /// Our own lease is current in the store but no term is held on it: after a self-demotion
    /// (it may be re-taken), or while its release is written.
    Lease(OwnLease),
    /// A term: this lease is renewed, and MASTER answered while now < V.
    Term(OwnLease, Term),
}

impl Holding {
    pub(super) fn own(&self) -> Option<&OwnLease> {
        match self {
            Holding::None => None,
            Holding::Lease(o) | Holding::Term(o, _) => Some(o),
        }
    }

    pub(super) fn term(&self) -> Option<&Term> {
        match self {
            Holding::Term(_, t) => Some(t),
            _ => None,
        }
    }

    pub(super) fn term_mut(&mut self) -> Option<&mut Term> {
        match self {
            Holding::Term(_, t) => Some(t),
            _ => None,
        }
    }

    /// Our write is the current lease (a renewal keeps the term it renews).
    pub(super) fn set_own(&mut self, own: OwnLease) {
        *self = match std::mem::take(self) {
            Holding::Term(_, t) => Holding::Term(own, t),
            _ => Holding::Lease(own),
        };
    }

    /// Begins a term on our current lease; false (and nothing changes) without one.
    pub(super) fn begin_term(&mut self, term: Term) -> bool {
        match std::mem::take(self) {
            Holding::Lease(o) => {
                *self = Holding::Term(o, term);
                true
            }
            other => {
                *self = other;
                false
            }
        }
    }

    /// Ends the term, keeping the lease (to re-take or release it).
    pub(super) fn take_term(&mut self) -> Option<Term> {
        match std::mem::take(self) {
            Holding::Term(o, t) => {
                *self = Holding::Lease(o);
                Some(t)
            }
            other => {
                *self = other;
                None
            }
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Term {
    pub(super) epoch: u64,
    /// V: this node answers MASTER only while now < V.
    pub(super) deadline: Nanos,
    /// A cautious take (see `answer_delay`) answers MASTER only from this instant on; until
    /// then it holds and renews the lease but is not announced (no MASTER answer, no hook).
    pub(super) from: Nanos,
    pub(super) announced: bool,
    /// A cautious take announces only after a scan of `nodes/` done since `from` shows no
    /// other node that held this epoch or a later one (a store that lost the writes of a
    /// term just begun shows nothing else of it).
    pub(super) check_records: bool,
    /// `from` has passed; the announcement waits for that scan (no timer meanwhile).
    pub(super) awaiting_scan: bool,
    /// Why the term began (logged, and in the promotion's transition).
    pub(super) reason: Promotion,
}

impl Machine {
    pub(super) fn observe_lease(&mut self, now: Now, rr: ReadResult) {
        let mut forged = false;
        let (version, lease, unusable) = match rr {
            ReadResult::Absent => (None, None, None),
            ReadResult::Unreadable { version, reason } => (Some(version), None, Some(reason)),
            ReadResult::Present(r) => {
                match records::open::<LeaseRecord>(self.keys(), LEASE_KEY, &r.bytes) {
                    Ok(l) if l.epoch > records::MAX_EPOCH => (
                        Some(r.version),
                        None,
                        Some(format!("epoch {} is out of range", l.epoch)),
                    ),
                    // Epochs only grow and a holder's renewals count up: an older record than one
                    // already seen is a replay (or a restored backup), never a live lease.
                    Ok(l) if (l.epoch, l.renew_seq) < self.epochs.max_lease_seen => {
                        forged = true;
                        (
                            Some(r.version),
                            None,
                            Some(format!(
                                "a replayed old lease: epoch {} renewal {} is older than epoch {} renewal {} seen before",
                                l.epoch,
                                l.renew_seq,
                                self.epochs.max_lease_seen.0,
                                self.epochs.max_lease_seen.1
                            )),
                        )
                    }
                    Ok(l)
                        if l.format == FORMAT
                            && self
                                .cluster
                                .as_ref()
                                .is_none_or(|c| c.cluster_id == l.cluster_id) =>
                    {
                        (Some(r.version), Some(l), None)
                    }
                    Ok(l) => (
                        Some(r.version),
                        None,
                        Some(format!(
                            "a lease of another cluster {} or format {}",
                            l.cluster_id, l.format
                        )),
                    ),
                    Err(e) => {
                        forged = e.is_unauthentic();
                        (Some(r.version), None, Some(e.to_string()))
                    }
                }
            }
        };
        if version.is_some() && !self.saw_lease {
            self.saw_lease = true;
        }
        let changed = self
            .obs
            .as_ref()
            .is_none_or(|o| o.version() != version.as_ref());
        if !changed {
            let gap = self.cfg.poll_period * 2 + self.cfg.storage_timeout;
            let floor = self.highest_epoch_known();
            if let Some(o) = self.obs.as_mut() {
                if now.mono > o.last_read + gap {
                    o.first_returned = now.mono;
                    o.floor = floor;
                    o.seqs = None;
                    self.corroboration = Corroboration::None;
                }
                o.last_read = now.mono;
            }
            return;
        }
        if matches!(self.phase, Phase::Running) {
            // A new version ends a wait for the old one to stand still.
            self.stop_waiting();
        }
        // The master's heartbeat rides in its lease: a renewal is news of its holder, whose own
        // record changes only with its state (§3.7).
        if let Some(l) = lease.as_ref().filter(|l| !l.released)
            && let Some(tr) = self.nodes.get_mut(&l.holder)
            && tr.record.instance_id == l.instance_id
        {
            tr.last_change = now.mono;
        }
        // An absent or unusable lease: is this still our cluster's store (a wipe, a restored
        // or foreign copy)? Ask at once rather than at the next periodic check.
        if lease.is_none()
            && self.phase == Phase::Running
            && !self.tasks.iter().any(|t| matches!(t, Task::CheckCluster))
        {
            self.tasks.push_back(Task::CheckCluster);
        }
        if let Some(reason) = &unusable {
            if forged {
                self.alert(format!("the lease in the store is forged or replayed ({reason}); nobody obeys it, and it is replaced after T like any dead lease"));
            }
            self.bad.insert(LEASE_KEY.into(), reason.clone());
            self.log(Level::Warn, format!("the lease record is unusable ({reason}); it counts as an opaque version and expires after T"));
        } else {
            self.bad.remove(LEASE_KEY);
        }
        if let Some(l) = &lease {
            if l.epoch > self.epochs.max_seen {
                self.epochs.max_seen = l.epoch;
            }
            self.epochs.max_lease_seen = self.epochs.max_lease_seen.max((l.epoch, l.renew_seq));
            if !l.released
                && self
                    .epochs
                    .last_unreleased_seen
                    .is_none_or(|e| l.epoch >= e)
            {
                self.epochs.last_unreleased_seen = Some(l.epoch);
            }
        }
        // Our own write (a present lease has a version): keep it for renewals and re-takes.
        let mine = match (&lease, &version) {
            (Some(l), Some(v)) if l.instance_id == self.cfg.instance_id => Some(OwnLease {
                version: v.clone(),
                record: l.clone(),
            }),
            _ => None,
        };
        match mine {
            Some(own) => self.holding.set_own(own),
            None => {
                if self.holding.term().is_some() {
                    self.demote(
                        "the lease no longer names this node: another node took over".into(),
                    );
                }
                self.holding = Holding::None;
            }
        }
        if let (Some(until), Some(prev)) = (self.master_start_until, &self.obs) {
            let was_live = prev.version().is_some() && prev.lease().is_none_or(|l| !l.released);
            // A renewal of this node's dead previous instance may still land (a request it
            // sent before it died): no live master, and taken back at once (see `decide`).
            let foreign = lease.as_ref().is_none_or(|l| {
                l.instance_id != self.cfg.instance_id
                    && self.cfg.previous_instance.as_deref() != Some(&l.instance_id)
            });
            if now.mono < until && was_live && foreign && self.holding.term().is_none() {
                let holder = lease
                    .as_ref()
                    .map_or("unknown (unreadable lease)".into(), |l| {
                        format!("{} (epoch {})", l.holder, l.epoch)
                    });
                self.exit(
                    1,
                    format!("a live master exists: {holder}; its lease was renewed while this --mode master node watched it. A master start never steals a live lease: use `tenure promote` for a planned switchover"),
                );
            }
        }
        let seen = match (version, lease) {
            (None, _) => Seen::Absent,
            (Some(v), None) => Seen::Unreadable(v),
            (Some(v), Some(l)) => Seen::Present(v, l),
        };
        self.obs = Some(LeaseObs::new(seen, now.mono, self.highest_epoch_known()));
    }

    pub(super) fn on_read_lease(&mut self, now: Now, result: OpResult) {
        match result {
            Ok(OpOutput::Read(rr)) => {
                self.observe_lease(now, rr);
                if self.phase == Phase::Exited {
                    return;
                }
                if self.settle && self.holding.term().is_some() {
                    // The unknown renewal is settled: renew at once on the version now known.
                    self.settle = false;
                    self.tasks.push_front(Task::LeaseStep);
                    return;
                }
                if matches!(self.phase, Phase::Starting(StartStep::ModeCheck)) {
                    if matches!(self.mode, Mode::Master | Mode::Disabled)
                        && self.obs.as_ref().is_some_and(|o| o.version().is_none())
                        && self.epochs.nonempty.is_none()
                    {
                        // Absent lease: a cold start only if epochs/ is empty. List it next.
                        self.next_round_at = now.mono;
                        return;
                    }
                    return self.mode_check(now);
                }
                self.decide(now);
            }
            Ok(other) => self.log(
                Level::Error,
                format!("internal error: unexpected {other:?} for the lease read"),
            ),
            Err(e) => {
                if matches!(self.phase, Phase::Starting(_)) {
                    return self.startup_retry(now, "reading the lease", &e);
                }
                self.storage_failed("lease read", &e);
            }
        }
    }

    pub(super) fn on_write_lease(
        &mut self,
        now: Now,
        started: Nanos,
        kind: WriteKind,
        record: LeaseRecord,
        result: OpResult,
    ) {
        match result {
            Ok(OpOutput::Written(version)) => {
                // Our renewal is our heartbeat (§3.7): our own row stays fresh.
                if let Some(tr) = self.nodes.get_mut(&self.cfg.name)
                    && tr.record.instance_id == self.cfg.instance_id
                {
                    tr.last_change = now.mono;
                }
                self.holding.set_own(OwnLease {
                    version: version.clone(),
                    record: record.clone(),
                });
                // Our own write is the newest version: watch it from now.
                self.obs = Some(LeaseObs::new(
                    Seen::Present(version, record.clone()),
                    now.mono,
                    self.highest_epoch_known().max(record.epoch),
                ));
                self.epochs.max_seen = self.epochs.max_seen.max(record.epoch);
                self.epochs.max_lease_seen = self
                    .epochs
                    .max_lease_seen
                    .max((record.epoch, record.renew_seq));
                if !record.released {
                    self.epochs.last_unreleased_seen = Some(record.epoch);
                }
                self.bad.remove(LEASE_KEY);
                let new_deadline = started + self.cfg.renew_deadline;
                match kind {
                    WriteKind::Renew => match self.holding.term_mut() {
                        // Confirmed before V: V := s + D. After V nothing changes (already demoted).
                        Some(t) if now.mono < t.deadline => {
                            t.deadline = t.deadline.max(new_deadline)
                        }
                        _ => {}
                    },
                    WriteKind::Take { reason } => {
                        if now.mono < new_deadline && self.releasing.is_none() {
                            let from = if std::mem::take(&mut self.cautious_take) {
                                now.mono + self.answer_delay()
                            } else {
                                now.mono
                            };
                            self.promote(
                                now,
                                record.epoch,
                                new_deadline,
                                Promotion::Take(reason),
                                from,
                            );
                            if !self.may_take() {
                                // The operator changed the mode while the take was in flight:
                                // hand the lease straight back rather than hold it.
                                let then = match self.mode {
                                    Mode::Disabled => AfterRelease::Disable,
                                    m => AfterRelease::Idle(m.idle_state()),
                                };
                                self.start_release(
                                    now.mono,
                                    None,
                                    then,
                                    None,
                                    "the mode changed while the take was in flight",
                                );
                            }
                        }
                    }
                    WriteKind::Retake => {
                        if now.mono < new_deadline
                            && self.releasing.is_none()
                            && self.may_take()
                            && self.base != NodeState::Failed
                            && self.lost.is_none()
                        {
                            let from = now.mono + self.answer_delay();
                            self.promote(now, record.epoch, new_deadline, Promotion::Retake, from);
                        }
                    }
                    WriteKind::Release => {
                        self.holding = Holding::None;
                        self.epochs.yielded = Some(record.epoch);
                        self.finish_release("released the lease");
                    }
                }
            }
            Ok(other) => self.log(
                Level::Error,
                format!("internal error: unexpected {other:?} for a lease write"),
            ),
            Err(StoreError::Conflict(why)) => {
                // The lease is not ours (any more): the term ends first, with its transition.
                if kind == WriteKind::Renew {
                    self.demote(format!("lost the lease: the renewal's conditional write failed ({why}); another node took over"));
                }
                self.holding = Holding::None;
                match kind {
                    WriteKind::Renew => {}
                    WriteKind::Release => self.finish_release("the lease had already changed"),
                    WriteKind::Take { .. } | WriteKind::Retake => {
                        self.log(
                            Level::Info,
                            format!("lost the race for the lease ({why}); staying {}", self.base),
                        );
                    }
                }
                // Read the lease in the next round to learn who holds it.
                self.obs = None;
            }
            Err(e) => {
                // Unknown outcome: never extends V. The next round's read settles it: the lease
                // carrying our instance and renewSeq means it landed (and may be re-taken).
                self.log(Level::Warn, format!("lease write ({kind:?}) failed or timed out: {e}; the deadline is not extended"));
                match kind {
                    WriteKind::Release => self
                        .finish_release("the release write failed; the others take over after T"),
                    WriteKind::Renew => {
                        self.settle = true;
                        // Settle with a read, then renew in the round after, not R later:
                        // V was not extended, and the margin D − R is all there is.
                        self.renew_sent = None;
                    }
                    _ => {}
                }
            }
        }
    }

    /// Holds the lease from now; answers MASTER from `from` (now, unless a cautious take).
    pub(super) fn promote(
        &mut self,
        now: Now,
        epoch: u64,
        deadline: Nanos,
        reason: Promotion,
        from: Nanos,
    ) {
        let began = self.holding.begin_term(Term {
            epoch,
            deadline,
            from,
            announced: false,
            check_records: from > now.mono,
            awaiting_scan: false,
            reason,
        });
        if !began {
            // Unreachable: promote follows our own successful write, which set the lease.
            self.log(
                Level::Error,
                format!("internal error: a term at epoch {epoch} without its lease"),
            );
            return;
        }
        self.master_start_until = None;
        self.switchover_request = None;
        self.waiting = None;
        self.base = self.mode.idle_state();
        if from > now.mono {
            let take = match reason {
                Promotion::Take(r) => Some(r),
                Promotion::Retake => None,
            };
            self.log_about(
                Level::Info,
                Some(epoch),
                take,
                format!(
                    "holds the lease at epoch {epoch} ({reason}); answers MASTER in {}, once any other master's next renewal has failed (a store that lost writes may still show an older term to it)",
                    humanize(from.since(now.mono))
                ),
            );
        }
        self.announce(now.mono);
    }

    /// A held term becomes MASTER answers (and the promotion transition) at its `from`.
    pub(super) fn announce(&mut self, now: Nanos) {
        let Some(t) = self.holding.term_mut() else {
            return;
        };
        if t.announced || now < t.from || now >= t.deadline {
            return;
        }
        if t.check_records {
            let epoch = t.epoch;
            // A listing since `from`: a node that appeared meanwhile counts too.
            if self.last_list.is_none_or(|s| s < t.from) {
                let queued = self.tasks.iter().any(|t| matches!(t, Task::Scan))
                    || matches!(self.inflight, Some((Purpose::Scan(None), _)));
                if !t.awaiting_scan {
                    t.awaiting_scan = true;
                    if !queued {
                        self.tasks.push_front(Task::Scan);
                    }
                } else if !queued {
                    // That scan failed: list again next round, not at the next 2T listing.
                    self.scan_next_round = true;
                }
                return;
            }
            // Another node that held this epoch or a later one, or saw a later one: seeing ours
            // (in our own lease) is no conflict.
            let conflict = self
                .nodes
                .values()
                .filter(|tr| tr.record.name != self.cfg.name)
                .find(|tr| {
                    tr.record.epoch.is_some_and(|e| e >= epoch)
                        || tr.record.max_epoch.is_some_and(|e| e > epoch)
                })
                .map(|tr| tr.record.name.clone());
            if let Some(other) = conflict.or_else(|| {
                (self.epochs.foreign_max > epoch).then(|| "a node of another cluster".to_string())
            }) {
                self.log(
                    Level::Error,
                    format!("{other} reports a term at or above this one's epoch {epoch}: the store lost the writes of a term; giving this one up unannounced, the lease is taken again after T with a higher epoch"),
                );
                self.holding = Holding::None;
                return;
            }
            if let Some(t) = self.holding.term_mut() {
                t.check_records = false;
            }
        }
        let Some(t) = self.holding.term_mut() else {
            return;
        };
        t.announced = true;
        let (epoch, deadline, reason) = (t.epoch, t.deadline, t.reason);
        let from = self.base;
        self.transition(
            from,
            NodeState::Master,
            Some(epoch),
            format!("promoted to MASTER at epoch {epoch} ({reason}); answers MASTER until {} from now unless renewed", humanize(deadline.since(now))),
        );
        // Tell the others at once: their /ha/states and X-HA-Epoch should not lag a poll.
        self.tasks.push_front(Task::Heartbeat);
    }

    /// How long a cautious take waits before it answers MASTER: the longest poll period of a
    /// live node plus a storage deadline and the answer margin. Any other node that still
    /// believes it is master (the store lost the writes that made it so) sends its next
    /// renewal within its poll period, which then fails on our write and demotes it.
    pub(super) fn answer_delay(&self) -> Duration {
        let mut p = self.cfg.poll_period;
        for tr in self.nodes.values() {
            if let Some(ms) = tr.record.poll_period_ms {
                p = p.max(Duration::from_millis(ms).min(self.cfg.heartbeat_timeout));
            }
        }
        let storage = self
            .cfg
            .storage_timeout
            .max(Config::default_storage_timeout(p));
        cautious_wait(p, storage, self.cfg.clock_drift_ppm)
    }

    /// Stop answering MASTER (if still) and report the transition.
    /// (A node whose deadline already passed stopped answering at V; the transition is still
    /// reported.)
    pub(super) fn demote(&mut self, reason: String) {
        let Some(term) = self.holding.take_term() else {
            return;
        };
        if !term.announced {
            // Never answered MASTER: nothing to report as a transition.
            self.log(
                Level::Info,
                format!(
                    "gave up epoch {} before answering MASTER: {reason}",
                    term.epoch
                ),
            );
            return;
        }
        let to = self.base;
        self.transition(NodeState::Master, to, Some(term.epoch), reason);
        self.tasks.push_front(Task::Heartbeat);
    }

    pub(super) fn check_deadline(&mut self, now: Nanos) {
        self.announce(now);
        if let Some(t) = self.holding.term()
            && now >= t.deadline
            && t.deadline != Nanos::MAX
        {
            let over = now.since(t.deadline);
            self.demote(format!(
                    "self-fenced: no renewal confirmed before the lease deadline (epoch {}, {} ago); standing down before any other node can take over",
                    t.epoch,
                    humanize(over)
                ),
            );
        }
    }
}
