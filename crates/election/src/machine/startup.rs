//! Start-up after `cluster.json`: taking this node's name (a previous instance's record must
//! stand still for T; same-name starts settled by a conditional claim) and the mode check
//! (`--mode master` with a live master, `--mode standby` without one), with retries of a
//! failing store (docs/DESIGN.md §3.7).

use super::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum StartStep {
    Cluster,
    /// Watching a foreign instance's record under our name: (version, first seen, that
    /// record's instance and the highest seq seen of it when it could be read, and the
    /// version of the lease when that instance holds it: a master's record stands still
    /// while its renewals move the lease).
    Identity(Option<(Version, Nanos, Option<InstanceSeq>, Option<Version>)>),
    /// Writing our own record conditionally: created if absent, or replaced on this version.
    /// Of two processes started with one name at the same instant, exactly one succeeds.
    Claim(Option<Version>),
    ModeCheck,
}

/// A node record's writer and sequence number: (instance id, seq).
pub(super) type InstanceSeq = (String, u64);

impl Machine {
    pub(super) fn startup_retry(&mut self, now: Now, what: &str, e: &StoreError) {
        self.startup_attempts += 1;
        // About 3T (at least 30 polls): start-up now writes (the claim of the name), and a
        // store that is merely slow (a first fsync on a busy disk) must not stop a node.
        let limit = (3 * self.cfg.heartbeat_timeout.as_nanos()
            / self.cfg.poll_period.as_nanos().max(1))
        .max(30) as u32;
        if self.startup_attempts >= limit {
            self.exit(
                1,
                format!(
                    "the store (--store) stayed unusable during start-up ({what}): {e}; check that it is mounted and writable"
                ),
            );
        } else {
            self.log(
                Level::Warn,
                format!("start-up: {what} failed: {e}; retrying"),
            );
            self.next_round_at = now.mono + self.cfg.poll_period;
        }
    }

    pub(super) fn on_read_own(&mut self, now: Now, result: OpResult) {
        let watching = match &self.phase {
            Phase::Starting(StartStep::Identity(w)) => w.clone(),
            _ => None,
        };
        // The record and the lease, read together (see `StartStep::Identity`).
        let (result, lease_read) = match result {
            Ok(OpOutput::Scanned(entries)) => {
                let key = records::node_key(&self.cfg.name);
                let mut own = ReadResult::Absent;
                let mut lease = None;
                for (k, rr) in entries {
                    if k == key {
                        own = rr;
                    } else if k == LEASE_KEY {
                        lease = Some(rr);
                    }
                }
                (Ok(OpOutput::Read(own)), lease)
            }
            other => (other, None),
        };
        let (version, desc, seen) = match result {
            Ok(OpOutput::Read(ReadResult::Absent)) => return self.claim_name(now, None),
            Ok(OpOutput::Read(ReadResult::Present(r))) => {
                match records::open::<HeartbeatRecord>(
                    self.keys(),
                    &records::node_key(&self.cfg.name),
                    &r.bytes,
                ) {
                    Ok(h)
                        if h.status == NodeState::Terminated
                            || h.instance_id == self.cfg.instance_id =>
                    {
                        return self.claim_name(now, Some(r.version));
                    }
                    // Written by this node's previous instance on this host, which is dead
                    // (the state file's lock was free): no live process writes it any more,
                    // so there is nothing to watch for T (DESIGN §3.6).
                    Ok(h) if self.cfg.previous_instance.as_deref() == Some(&h.instance_id) => {
                        self.log(
                            Level::Info,
                            format!(
                                "restart in place: nodes/{}.json was written by this node's previous instance {} (status {}), which is dead (its state file was not locked): taking the name back at once",
                                self.cfg.name, h.instance_id, h.status
                            ),
                        );
                        return self.claim_name(now, Some(r.version));
                    }
                    Ok(h) => (
                        r.version,
                        format!(
                            "instance {} (status {}, seq {})",
                            h.instance_id, h.status, h.seq
                        ),
                        Some((h.instance_id.clone(), h.seq)),
                    ),
                    Err(OpenError::Unauthentic(_)) => (
                        r.version,
                        "a record not signed with this cluster's secret".to_string(),
                        None,
                    ),
                    Err(OpenError::Malformed(_)) => {
                        (r.version, "an unreadable record".to_string(), None)
                    }
                }
            }
            Ok(OpOutput::Read(ReadResult::Unreadable { version, .. })) => {
                (version, "an unreadable record".to_string(), None)
            }
            Ok(_) => return self.identity_ok(now),
            Err(e) => return self.startup_retry(now, "reading this node's record", &e),
        };
        let held = match (&lease_read, &seen) {
            (Some(ReadResult::Present(r)), Some((instance, _))) => {
                records::open::<LeaseRecord>(self.keys(), LEASE_KEY, &r.bytes)
                    .ok()
                    .filter(|l| {
                        !l.released && l.holder == self.cfg.name && l.instance_id == *instance
                    })
                    .map(|_| r.version.clone())
            }
            _ => None,
        };
        match watching {
            Some((v, _, _, Some(was))) if v == version && held.as_ref().is_some_and(|h| *h != was) => {
                self.exit(
                    1,
                    format!(
                        "duplicate node name: a live master already runs as {} ({desc}, it renewed the lease while this one watched); stop it or choose another --node-name",
                        self.cfg.name
                    ),
                )
            }
            None => {
                self.wait_for(
                    now,
                    format!(
                        "nodes/{}.json, which holds {desc}, to stand still for T={} before taking the name over (a live process changes it: then this one exits as a duplicate)",
                        self.cfg.name,
                        humanize(self.cfg.heartbeat_timeout)
                    ),
                    now.mono + self.cfg.heartbeat_timeout,
                );
                self.phase = Phase::Starting(StartStep::Identity(Some((
                    version, now.mono, seen, held,
                ))));
                self.next_round_at = now.mono + self.cfg.poll_period;
            }
            // The same instance's record at a seq no higher than the highest seen: a live
            // process only moves its seq beyond every seq it wrote, so this is an older copy
            // written back (a rollback, a restored snapshot; twice in a row, the second copy
            // may be newer than the first but is still old), not a duplicate. Watch the new
            // version for T again, remembering the highest seq seen.
            Some((v, _, Some((was_instance, highest)), _))
                if v != version
                    && seen
                        .as_ref()
                        .is_some_and(|(i, q)| *i == was_instance && *q <= highest) =>
            {
                self.log(
                    Level::Warn,
                    format!(
                        "nodes/{}.json went back to an earlier copy ({desc}, seq {highest} seen before): the store may have rolled back; watching it for T again",
                        self.cfg.name
                    ),
                );
                self.phase = Phase::Starting(StartStep::Identity(Some((
                    version,
                    now.mono,
                    Some((was_instance, highest)),
                    held,
                ))));
                self.next_round_at = now.mono + self.cfg.poll_period;
            }
            Some((v, since, seen_before, was_held)) if v == version => {
                if now.mono >= since + self.cfg.heartbeat_timeout {
                    self.log(Level::Info, format!("the previous instance of {} stood still for T: taking the name over", self.cfg.name));
                    self.claim_name(now, Some(v));
                } else {
                    self.phase = Phase::Starting(StartStep::Identity(Some((
                        v,
                        since,
                        seen_before,
                        was_held.or(held),
                    ))));
                    self.next_round_at = now.mono + self.cfg.poll_period;
                }
            }
            Some(_) => self.exit(
                1,
                format!(
                    "duplicate node name: a live process already runs as {} ({desc}, its record changed while this one watched); stop it or choose another --node-name",
                    self.cfg.name
                ),
            ),
        }
    }

    /// Write our own record conditionally (create if absent, else replace on the version
    /// read): two processes started with one name at the same instant cannot both win.
    pub(super) fn claim_name(&mut self, now: Now, version: Option<Version>) {
        self.phase = Phase::Starting(StartStep::Claim(version));
        self.next_round_at = now.mono;
    }

    pub(super) fn on_claim_name(&mut self, now: Now, result: OpResult) {
        match result {
            Ok(_) => self.identity_ok(now),
            Err(StoreError::Conflict(why)) => self.exit(
                1,
                format!(
                    "duplicate node name: another process wrote nodes/{}.json while this one claimed the name ({why}); two processes run as {} — stop the other one or choose another --node-name",
                    self.cfg.name, self.cfg.name
                ),
            ),
            Err(e) => {
                // The claim may have landed: read the record again (ours: claim it again).
                self.phase = Phase::Starting(StartStep::Identity(None));
                self.startup_retry(now, "claiming this node's record", &e)
            }
        }
    }

    pub(super) fn identity_ok(&mut self, now: Now) {
        self.stop_waiting();
        self.phase = Phase::Starting(StartStep::ModeCheck);
        self.next_round_at = now.mono;
    }

    /// The end of a `--mode master` start's privileges (rank 0, a released lease at once, exit
    /// 1 if the lease is renewed meanwhile): T from its first read, plus the whole round after
    /// the watched lease expires, so a plain standby cannot win that round.
    pub(super) fn master_head_start(&self, now: Now) -> Nanos {
        now.mono + self.cfg.heartbeat_timeout + self.cfg.poll_period * 2 + self.cfg.storage_timeout
    }

    /// Start-up rules of the modes, applied to the first lease read (DESIGN §2).
    pub(super) fn mode_check(&mut self, now: Now) {
        let obs = self.obs.clone().expect("mode check after a lease read");
        let unreleased = obs.version().is_some() && obs.lease().is_none_or(|l| !l.released);
        match self.mode {
            Mode::Disabled => {
                // The lease of this node's own dead previous instance (a restart in place) is
                // no other master: it is taken back at once (see `decide`).
                let own_previous = obs.lease().is_some_and(|l| {
                    l.holder == self.cfg.name
                        && self.cfg.previous_instance.as_deref() == Some(&l.instance_id)
                });
                if unreleased && !own_previous {
                    let who = obs.lease().map_or("an unreadable lease".to_string(), |l| {
                        format!("{} holds epoch {}", l.holder, l.epoch)
                    });
                    return self.exit(
                        1,
                        format!("--mode disabled runs a lone node that reports MASTER, but the store holds an unreleased lease ({who}); use another --store or another mode"),
                    );
                }
                // A lone node, made safe: it holds the lease like a `--mode master` start (and
                // never hands it over), so no other node can be master beside it; it reports
                // MASTER only under the lease's deadline, FAILED otherwise.
                self.master_start_until = Some(self.master_head_start(now));
            }
            Mode::Standby | Mode::HotStandby if !unreleased && !self.cfg.allow_no_master => {
                return self.exit(
                    1,
                    format!(
                        "no master: a --mode {} node starts only while a master holds the lease (Brooklyn's rule); start a master first, or pass --allow-no-master",
                        self.mode
                    ),
                );
            }
            Mode::Master => {
                self.master_start_until = Some(self.master_head_start(now));
            }
            _ => {}
        }
        self.phase = Phase::Running;
        self.base = self.mode.idle_state();
        // Nodes started together would poll in lock-step, a standby reading just before each
        // renewal lands and so learning every lease version a whole period late (failover
        // ≈ T + p). A per-instance phase in [0, p) spreads them; the machine stays
        // deterministic (no RNG: the offset comes from the instance id).
        self.next_round_at = now.mono + self.phase_offset();
        self.transition(
            NodeState::Initializing,
            self.base,
            None,
            format!("joined cluster {} in mode {}", self.cluster_id(), self.mode),
        );
        // Decide on what we just read instead of waiting for the next round.
        self.decide(now);
    }
}
