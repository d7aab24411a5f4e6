//! `cluster.json`: read and adopted at start-up, re-read at every scan (a vanished or foreign
//! cluster is storage unavailable or exit 1, a changed T or ρ exit 2), re-signed during a secret
//! rotation, and its `fresh` flag claimed by the first term of a store made by `tenure init`
//! (docs/DESIGN.md §3.10).

use super::*;

impl Machine {
    pub(super) fn on_read_cluster(&mut self, now: Now, result: OpResult) {
        match result {
            // A store without cluster.json is never made a cluster by `run`: a mistyped path,
            // a mount that is not there (the empty directory beneath it) and a wiped store all
            // look like this, and a cold start there would be a second cluster beside the real
            // one. Creating a cluster is the operator's explicit step (DESIGN §3.3, §3.8).
            Ok(OpOutput::Read(ReadResult::Absent)) => self.exit(
                1,
                "the store holds no cluster.json, so it is not a tenure cluster: create a new cluster once with `tenure init` on this --store (and the same --heartbeat-timeout); if this cluster exists already, its store is not mounted here or was wiped — then do not init it, mount or restore it".into(),
            ),
            Ok(OpOutput::Read(ReadResult::Present(r))) => match records::open_verified::<ClusterRecord>(self.keys(), CLUSTER_KEY, &r.bytes) {
                Ok((c, Some(Verified::Accepted))) => {
                    let keys = self.keys().expect("a verified record means a keyring");
                    self.log(Level::Info, format!("cluster.json is signed with the accepted key {}, not with the current key {}: re-signing it", keys.accepted_id().unwrap_or("?"), keys.current_id()));
                    self.pending_cluster = Some((c, r.version));
                    self.next_round_at = now.mono;
                }
                Ok((c, _)) => self.adopt_cluster(now, c, r.version),
                Err(OpenError::Unauthentic(e)) => {
                    self.alert(format!("cluster.json is not signed with this node's cluster secret ({e})"));
                    self.exit(
                        1,
                        format!("cluster.json is not signed with this node's cluster secret ({e}): give every node the same --secret-file; if the cluster was created without a secret, stop all nodes and remove cluster.json so that it is recreated signed"),
                    )
                }
                Err(OpenError::Malformed(e)) => self.exit(
                    1,
                    format!("cluster.json in the store is not a tenure cluster record ({e}); restore it from a backup or use an empty --store"),
                ),
            },
            Ok(OpOutput::Read(ReadResult::Unreadable { reason, .. })) => self.exit(
                1,
                format!("cluster.json in the store is unreadable ({reason}); restore it from a backup or use an empty --store"),
            ),
            Ok(other) => self.exit(1, format!("internal error: unexpected {other:?} for cluster.json")),
            Err(e) => self.startup_retry(now, "reading cluster.json", &e),
        }
    }

    pub(super) fn on_create_cluster(&mut self, now: Now, rec: ClusterRecord, result: OpResult) {
        match result {
            Ok(OpOutput::Written(version)) => {
                self.log(
                    Level::Info,
                    format!("re-signed cluster.json of cluster {}", rec.cluster_id),
                );
                self.adopt_cluster(now, rec, version);
            }
            Ok(_) => self.next_round_at = now.mono,
            // Someone else re-signed it first, or our write may have landed: read it.
            Err(StoreError::Conflict(_)) => self.next_round_at = now.mono,
            Err(e) => self.startup_retry(now, "re-signing cluster.json", &e),
        }
    }

    /// The periodic re-read of cluster.json (every scan): the store must still show the
    /// cluster this node joined, with the same T and ρ (DESIGN §3.3, §3.4).
    pub(super) fn on_check_cluster(&mut self, now: Now, result: OpResult) {
        let joined = self.cluster_id().to_string();
        let problem = match result {
            Err(e) => {
                // Storage trouble is handled like any failing call: a master that cannot renew
                // self-fences; nothing here.
                self.storage_failed("reading cluster.json", &e);
                return;
            }
            Ok(OpOutput::Read(ReadResult::Absent)) => {
                "cluster.json vanished from the store (wiped, or an earlier copy restored)"
                    .to_string()
            }
            Ok(OpOutput::Read(ReadResult::Unreadable { reason, .. })) => {
                format!("cluster.json became unreadable ({reason})")
            }
            Ok(OpOutput::Read(ReadResult::Present(r))) => {
                match records::open_verified::<ClusterRecord>(self.keys(), CLUSTER_KEY, &r.bytes) {
                    Ok((c, _)) if c.cluster_id != joined => {
                        self.lose(now, format!("cluster.json now names cluster {}, not cluster {joined} that this node joined", c.cluster_id));
                        return self.exit(
                            1,
                            format!("the store now belongs to cluster {} (cluster.json was replaced or re-created), not to cluster {joined} that this node joined; restart this node to join it, or restore the store", c.cluster_id),
                        );
                    }
                    Ok((c, _))
                        if c.heartbeat_timeout_ms
                            != self.cfg.heartbeat_timeout.as_millis() as u64
                            || c.clock_drift_ppm != self.cfg.clock_drift_ppm =>
                    {
                        let stored = format!(
                            "--heartbeat-timeout {} --clock-drift {}ppm",
                            humanize(Duration::from_millis(c.heartbeat_timeout_ms)),
                            c.clock_drift_ppm
                        );
                        self.lose(now, format!("cluster.json now says {stored}"));
                        return self.exit(
                            2,
                            format!("cluster.json now says {stored}, but this node runs with --heartbeat-timeout {} --clock-drift {}ppm: T and ρ are cluster-wide; stopped answering MASTER; restart it with {stored}", humanize(self.cfg.heartbeat_timeout), self.cfg.clock_drift_ppm),
                        );
                    }
                    Ok((c, _)) => {
                        self.cluster_version = Some(r.version);
                        self.cluster = Some(c);
                        if let Some(was) = self.lost.take() {
                            self.log(Level::Info, format!("the store shows this node's cluster again (it had lost it: {was})"));
                            if self.base == NodeState::Failed && self.mode.eligible() {
                                let from = self.state_at(now.mono);
                                self.base = self.mode.idle_state();
                                self.transition(
                                    from,
                                    self.base,
                                    None,
                                    "the store shows this node's cluster again".into(),
                                );
                            }
                        }
                        return;
                    }
                    Err(e) => format!("cluster.json can no longer be used ({e})"),
                }
            }
            Ok(other) => {
                return self.log(
                    Level::Error,
                    format!("internal error: unexpected {other:?} for cluster.json"),
                );
            }
        };
        self.lose(now, problem);
    }

    /// The store no longer shows this node's cluster: stop answering MASTER at once and take
    /// nothing until it does again. Absence is never a new, empty cluster.
    pub(super) fn lose(&mut self, now: Now, why: String) {
        if self.lost.as_deref() == Some(why.as_str()) {
            return;
        }
        self.log(
            Level::Error,
            format!("{why}: the store is unavailable to this node, which will not be master until it shows cluster {} again", self.cluster_id()),
        );
        self.lost = Some(why.clone());
        let from = self.state_at(now.mono);
        // Nothing of the lease is ours while the store does not show our cluster.
        self.holding = Holding::None;
        if self.base != NodeState::Failed || from == NodeState::Master {
            self.base = NodeState::Failed;
            self.transition(from, NodeState::Failed, None, why);
        }
    }

    pub(super) fn on_claim_fresh(&mut self, now: Now, rec: ClusterRecord, result: OpResult) {
        match result {
            Ok(OpOutput::Written(version)) => {
                self.log(
                    Level::Info,
                    "claimed the first term of this new cluster (cleared `fresh` in cluster.json)"
                        .into(),
                );
                self.cluster = Some(rec);
                self.cluster_version = Some(version);
                // A store rolled back to before its first term looks fresh too.
                self.cautious_take = true;
                self.tasks.push_front(Task::Take {
                    reason: TakeReason::ColdStart,
                });
            }
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {
                self.log(
                    Level::Info,
                    "another node claimed the first term of this cluster; staying standby".into(),
                );
                self.tasks.push_front(Task::CheckCluster);
            }
            Err(e) => {
                // Maybe it landed: read cluster.json again before deciding anything.
                self.log(Level::Warn, format!("claiming the first term failed: {e}"));
                self.tasks.push_front(Task::CheckCluster);
            }
        }
        let _ = now;
    }

    pub(super) fn adopt_cluster(&mut self, now: Now, c: ClusterRecord, version: Version) {
        if c.format != FORMAT {
            return self.exit(1, format!("cluster.json has format {} but this tenure understands format {FORMAT}; upgrade tenure", c.format));
        }
        let t = self.cfg.heartbeat_timeout.as_millis() as u64;
        if c.heartbeat_timeout_ms != t {
            return self.exit(
                2,
                format!(
                    "this cluster's heartbeat timeout is {} (stored in cluster.json) but this node was started with --heartbeat-timeout {}; T is cluster-wide: start with --heartbeat-timeout {}",
                    humanize(Duration::from_millis(c.heartbeat_timeout_ms)),
                    humanize(self.cfg.heartbeat_timeout),
                    humanize(Duration::from_millis(c.heartbeat_timeout_ms)),
                ),
            );
        }
        if c.clock_drift_ppm != self.cfg.clock_drift_ppm {
            return self.exit(
                2,
                format!(
                    "this cluster's clock drift bound is {} ppm (stored in cluster.json) but this node uses {} ppm; start with --clock-drift {}ppm",
                    c.clock_drift_ppm, self.cfg.clock_drift_ppm, c.clock_drift_ppm
                ),
            );
        }
        self.cluster = Some(c);
        self.cluster_version = Some(version);
        self.phase = Phase::Starting(StartStep::Identity(None));
        self.next_round_at = now.mono;
    }
}
