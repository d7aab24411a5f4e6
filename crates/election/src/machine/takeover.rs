//! The takeover decision: whether and when this node takes the lease (the T rule on an
//! unchanged version, at once on a released lease when ranked first, a re-take of its own
//! lease), and the corroboration of an at-once take against `epochs/` and `nodes/`
//! (docs/DESIGN.md §3.3, §3.4, §3.10).

use super::*;

/// See `Machine::corroboration`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Corroboration {
    None,
    Pending(Option<Version>),
    /// With the time it was complete: evidence is used only while fresh (see
    /// `corroboration_for`).
    Done(Option<Version>, Evidence, Nanos),
}

impl Machine {
    /// A self-demoted node whose own last lease write is still current may re-take it.
    pub(super) fn retake_candidate(&self) -> Option<OwnLease> {
        if self.holding.term().is_some()
            || self.releasing.is_some()
            || !self.may_take()
            || (self.base == NodeState::Failed && self.mode != Mode::Disabled)
            || self.lost.is_some()
        {
            return None;
        }
        let own = self.holding.own().cloned()?;
        if own.record.released {
            return None;
        }
        Some(own)
    }

    /// After a lease read, decide whether to stand for election now (DESIGN §2 and §3.3).
    pub(super) fn decide(&mut self, now: Now) {
        if self.phase != Phase::Running || self.holding.term().is_some() || self.releasing.is_some()
        {
            return;
        }
        // FAILED is a disabled node's idle state (it reports MASTER only under its lease), not
        // a fault that forbids taking.
        let failed = self.base == NodeState::Failed && self.mode != Mode::Disabled;
        if !self.may_take() || failed || self.lost.is_some() {
            return;
        }
        let Some(obs) = self.obs.clone() else { return };
        if self.tasks.iter().any(|t| {
            matches!(
                t,
                Task::Take { .. } | Task::CreateEpoch { .. } | Task::WriteLease { .. }
            )
        }) {
            // A take is already on its way.
            return;
        }
        let t = self.takeover_timeout(&obs, now.mono);
        let starting_master = self.master_start_until.is_some_and(|u| now.mono < u);
        // The cases in which a node may act without waiting T: a cold start of a store made
        // by `tenure init`, and a released lease. Both trust the store's memory, so both are
        // corroborated first (see `corroborate`).
        let at_once: Option<TakeReason> = match &obs.seen {
            Seen::Absent => match self.epochs.nonempty {
                None => {
                    if !self.tasks.iter().any(|t| matches!(t, Task::ListEpochs)) {
                        self.tasks.push_front(Task::ListEpochs);
                    }
                    return;
                }
                // A standby waits for a master (Brooklyn): it is promoted when a master's lease
                // expires or is released, never by a cold start.
                Some(false)
                    if self.may_cold_start()
                        && matches!(self.mode, Mode::Standby | Mode::HotStandby) =>
                {
                    return;
                }
                Some(false) if self.may_cold_start() => Some(TakeReason::ColdStart),
                // Absence after presence (a lease or an epoch seen, anywhere), or a store that
                // `tenure init` did not mark fresh: a version like any other, the T rule.
                _ => None,
            },
            Seen::Present(_, l) if l.released => take_released_at_once(
                Released {
                    mine: l.instance_id == self.cfg.instance_id
                        || self.epochs.yielded == Some(l.epoch),
                    successor: l.successor.as_deref(),
                    follows_watched_term: self.epochs.last_unreleased_seen == Some(l.epoch)
                        && l.epoch >= self.epochs.max_seen,
                },
                &self.cfg.name,
                starting_master,
            ),
            // The unreleased lease of this node's previous instance on this host, which is
            // dead: nobody renews it, and the T rule would only wait out a process known to
            // be gone. Corroborated and cautious like every take that trusts the store's
            // memory (a restored copy may show that instance's lease over a later term).
            Seen::Present(_, l)
                if l.holder == self.cfg.name
                    && self.cfg.previous_instance.as_deref() == Some(&l.instance_id) =>
            {
                Some(TakeReason::Restart)
            }
            _ => None,
        };
        let lease_epoch = obs.lease().map_or(0, |l| l.epoch);
        let at_once = at_once.filter(|_| !obs.no_at_once);
        let (expiry, reason) = match at_once {
            Some(r) => match self.corroboration_for(&obs.version().cloned(), now.mono) {
                None => return self.corroborate(obs.version().cloned()),
                Some(ev) => match ev.allows(lease_epoch, lease_epoch) {
                    Ok(()) => (obs.first_returned, r),
                    Err(why) => {
                        let level = if obs.version().is_some() {
                            Level::Error
                        } else {
                            Level::Info
                        };
                        self.restart_watch(now, level, why);
                        if let Some(o) = self.obs.as_mut() {
                            o.no_at_once = true;
                        }
                        return;
                    }
                },
            },
            None => (obs.first_returned + t, TakeReason::Expired),
        };
        // Rank among live eligible candidates; the best acts first, each next one p later.
        let rank =
            if starting_master || matches!(reason, TakeReason::Switchover | TakeReason::Restart) {
                0
            } else {
                self.rank(now.mono)
            };
        let at = expiry + self.cfg.poll_period * rank;
        // A lease that stood still for T/2 (and three of this node's polls) is not being
        // renewed — a live master renews every R < D/2 < T/2 — : say once what this node
        // waits for and until when (a renewed lease ends the wait, see observe_lease).
        let quiet = (self.cfg.poll_period * 3).max(self.cfg.heartbeat_timeout / 2);
        if now.mono < at && reason == TakeReason::Expired && now.mono >= obs.first_returned + quiet
        {
            if let Some(w) = self.waiting.as_mut() {
                // Already said; only the rank delay may have moved the end.
                if w.until != at {
                    w.until_wall_ms = wall_at(now, at);
                    w.until = at;
                }
            } else {
                let holder = match &obs.seen {
                    Seen::Present(_, l) => format!("the lease of {} epoch {}", l.holder, l.epoch),
                    Seen::Absent => "the absent lease".into(),
                    Seen::Unreadable(_) => "an unreadable lease".into(),
                };
                let delay = if rank > 0 {
                    format!(" plus {rank} poll period(s) of rank delay")
                } else {
                    String::new()
                };
                self.wait_for(
                    now,
                    format!(
                        "{holder}, unchanged since this node read it, to stand still for T={}{delay} before taking it over",
                        humanize(t)
                    ),
                    at,
                );
            }
        }
        if now.mono < at {
            // Read again right when this node may act, not up to a poll period later.
            self.election_wake = Some(at);
            return;
        }
        if reason == TakeReason::Expired {
            // The T rule trusts that the version seen again is the one seen at r: corroborate
            // that no term began meanwhile (a store that lost writes can show an old copy).
            match self.corroboration_for(&obs.version().cloned(), now.mono) {
                None => return self.corroborate(obs.version().cloned()),
                Some(ev) => {
                    if let Err(why) = ev.allows(lease_epoch, obs.floor) {
                        return self.restart_watch(now, Level::Warn, why);
                    }
                }
            }
        }
        if reason == TakeReason::ColdStart {
            // Exactly one node clears `fresh`; it alone cold-starts (see on_claim_fresh).
            if !self.tasks.iter().any(|t| matches!(t, Task::ClaimFresh)) {
                self.log(
                    Level::Info,
                    "a new cluster (made by tenure init) with no term yet: claiming the first term"
                        .into(),
                );
                self.tasks.push_front(Task::ClaimFresh);
            }
            return;
        }
        let why = match reason {
            TakeReason::Expired => format!(
                "the lease ({}) stood still for T={} since this node first read it",
                match &obs.seen {
                    Seen::Present(_, l) => format!("holder {} epoch {}", l.holder, l.epoch),
                    Seen::Absent => "absent".into(),
                    Seen::Unreadable(_) => "unreadable".into(),
                },
                humanize(t)
            ),
            TakeReason::Released => format!(
                "the master {} released the lease",
                obs.lease().map_or("?".into(), |l| l.holder.clone())
            ),
            TakeReason::Restart => format!(
                "restart in place: the lease (epoch {lease_epoch}) names this node's previous instance {}, which is dead (its state file was not locked)",
                obs.lease().map_or("?".into(), |l| l.instance_id.clone())
            ),
            _ => "planned switchover to this node".into(),
        };
        self.log_about(
            Level::Info,
            None,
            Some(reason),
            format!("standing for election (rank {rank}): {why}"),
        );
        // A `--mode master` start taking a released lease it never saw unreleased trusts the
        // store's memory more than a standby does: it answers MASTER a little later.
        self.cautious_take = (reason == TakeReason::Released
            && obs
                .lease()
                .is_some_and(|l| self.epochs.last_unreleased_seen != Some(l.epoch)))
            // An absent or unusable lease replaced after T: the store lost or garbled it, and
            // may have lost a term just begun with it.
            || obs.lease().is_none()
            // A restarted process has watched nothing: the lease it takes back may be an
            // old copy written over a later term (DESIGN §3.10 e).
            || reason == TakeReason::Restart;
        self.tasks.push_front(Task::Take { reason });
        // The corroboration just listed epochs/ and scanned every node's record, so the
        // epoch allocated next is above every epoch anywhere (epochs never go back, even when
        // the store has lost its epochs/).
    }

    /// Something newer than the lease exists: a term began while this node watched, or the
    /// lease is an old copy written back. Nobody takes it at once; the T rule starts over from
    /// now, with what is now known as the floor.
    pub(super) fn restart_watch(&mut self, now: Now, level: Level, why: String) {
        if level != Level::Info {
            self.log(
                level,
                format!("not taking the lease now: {why}. The store may have lost writes (a rollback, a restored snapshot, a wipe) or an old lease was written back; the lease is watched for T again from now, like a dead one"),
            );
        }
        let floor = self.highest_epoch_known();
        if let Some(o) = self.obs.as_mut() {
            o.first_returned = now.mono;
            o.floor = floor;
            o.seqs = None;
        }
        self.corroboration = Corroboration::None;
        self.tasks.retain(|t| !matches!(t, Task::Take { .. }));
        self.stop_waiting();
    }

    /// Whether this node may hold the lease: the eligible modes, and a lone `--mode
    /// disabled` node (which takes the lease like `--mode master`, so that no other node can
    /// become master beside it).
    pub(super) fn may_take(&self) -> bool {
        self.mode.eligible() || (self.mode == Mode::Disabled && self.lone)
    }

    /// An absent lease is a cold start only on a store that `tenure init` made (and nobody
    /// has claimed since), and only for a node that has seen no sign of an earlier term: no
    /// lease ever, no epoch file, no record reporting an epoch.
    pub(super) fn may_cold_start(&self) -> bool {
        !self.saw_lease
            && self.highest_epoch_known() == 0
            && self.epochs.nonempty == Some(false)
            && self.cluster.as_ref().is_some_and(|c| c.fresh)
    }

    /// How long a lease version must stand still before this node may take it: T, or the
    /// larger T of the holder (in the lease) or of any live node (in its record), so that a
    /// node started with another T than its peers never takes over early.
    pub(super) fn takeover_timeout(&self, obs: &LeaseObs, now: Nanos) -> Duration {
        let ms = |v: Option<u64>| Duration::from_millis(v.unwrap_or(0));
        let own = self.cfg.heartbeat_timeout;
        let live = self.nodes.values().filter_map(|tr| {
            let theirs = ms(tr.record.heartbeat_timeout_ms);
            (now < tr.last_change + theirs.max(own)).then_some(theirs)
        });
        let holder = obs.lease().map(|l| ms(l.heartbeat_timeout_ms));
        takeover_wait(own, holder, live)
    }

    /// The verdict of a finished corroboration of this lease version, if there is one.
    /// Evidence older than a poll period and a storage call (the node was paused, say) is
    /// gathered again: a take acts on what the store shows now.
    pub(super) fn corroboration_for(
        &self,
        version: &Option<Version>,
        now: Nanos,
    ) -> Option<Evidence> {
        match &self.corroboration {
            Corroboration::Done(v, evidence, at)
                if v == version && now < *at + self.cfg.poll_period + self.cfg.storage_timeout =>
            {
                Some(evidence.clone())
            }
            _ => None,
        }
    }

    /// Before trusting the store's memory (an at-once take, a re-take of our own lease), list
    /// `epochs/` and scan `nodes/` again: a store that rolled back, was wiped, or had an old
    /// record written back shows a newer epoch there than in the lease (DESIGN §3.10).
    pub(super) fn corroborate(&mut self, version: Option<Version>) {
        if self.corroboration == Corroboration::Pending(version.clone())
            && self
                .tasks
                .iter()
                .any(|t| matches!(t, Task::ListEpochs | Task::Scan))
        {
            return;
        }
        self.corroboration = Corroboration::Pending(version);
        self.corroboration_listed = false;
        self.tasks.push_front(Task::Scan);
        self.tasks.push_front(Task::ListEpochs);
        // Before taking an absent or unusable lease: is the store still this cluster's (a
        // wiped one is not, §3.10 a)? A present lease of ours says so already.
        if self.obs.as_ref().is_none_or(|o| o.lease().is_none()) {
            self.tasks.push_front(Task::CheckCluster);
        }
    }

    /// Called when a scan finished: a pending corroboration whose listing is in gets its
    /// verdict.
    pub(super) fn finish_corroboration(&mut self, now: Now) {
        let Corroboration::Pending(version) = self.corroboration.clone() else {
            return;
        };
        if !self.corroboration_listed {
            // The listing failed or came first from another task: ask again.
            self.corroboration = Corroboration::None;
            return;
        }
        let seqs = self
            .obs
            .as_ref()
            .filter(|o| o.version() == version.as_ref())
            .and_then(|o| o.seqs.clone())
            .unwrap_or_default();
        let live_master = self
            .nodes
            .values()
            .find(|tr| {
                tr.record.name != self.cfg.name
                    && tr.record.status == NodeState::Master
                    // A master writes a heartbeat every round but renews every R: one that
                    // died may have written up to R/p (+ the same round's) after its last
                    // renewal; a live one writes one every round, T/p over the watch.
                    && seqs
                        .get(&tr.record.name)
                        .is_some_and(|&seq| tr.record.seq >= seq + 2 + after_renewal(&tr.record))
            })
            .map(|tr| (tr.record.name.clone(), tr.record.epoch));
        // Epoch files this node allocated (or tried to) are no sign of another term.
        let own_file = Some(self.epochs.max_file) == self.epochs.allocated
            || Some(self.epochs.max_file) == self.epochs.tried;
        let files = if own_file { 0 } else { self.epochs.max_file };
        let evidence = Evidence {
            newest: self
                .epochs
                .max_seen
                .max(self.epochs.records_max)
                .max(self.epochs.foreign_max)
                .max(files),
            live_master,
        };
        self.corroboration = Corroboration::Done(version, evidence, now.mono);
        self.decide(now);
    }
}

/// How many heartbeats a master may write between its last renewal and the next one: ⌈R/p⌉ − 1
/// from the writer's record (0 for a record without R: it renewed every round).
fn after_renewal(r: &HeartbeatRecord) -> u64 {
    match (r.renew_interval_ms, r.poll_period_ms) {
        (Some(ri), Some(p)) if p > 0 => ri.div_ceil(p).saturating_sub(1),
        _ => 0,
    }
}
