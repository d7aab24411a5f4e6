//! Epochs: the highest epoch this node knows of anywhere (files in `epochs/`, leases, node
//! records, a wiped cluster's old records), the create of `epochs/<n>.json` that allocates a new
//! term, and the reuse of an epoch whose create failed (docs/DESIGN.md §3.5).

use super::*;

/// Epoch bookkeeping: everything a new term's number must be above, and what this node did
/// with the epochs it allocated.
#[derive(Clone, Debug, Default)]
pub(super) struct Epochs {
    /// Highest epoch this node has seen in any lease.
    pub(super) max_seen: u64,
    /// Highest (epoch, renewal) of any authentic lease seen: an older one is a replay.
    pub(super) max_lease_seen: (u64, u64),
    /// The highest epoch it saw unreleased: a released lease of that epoch follows the term it
    /// watched.
    pub(super) last_unreleased_seen: Option<u64>,
    /// Whether `epochs/` holds anything (None: not listed yet).
    pub(super) nonempty: Option<bool>,
    /// The highest epoch file in `epochs/`.
    pub(super) max_file: u64,
    /// The last epoch this instance allocated (see `reusable_epoch`).
    pub(super) allocated: Option<u64>,
    /// Don't take a released lease of this epoch at once (we released it ourselves).
    pub(super) yielded: Option<u64>,
    /// Epochs reported by records of other clusters (a wiped store's old nodes): a new term
    /// is numbered above them too, so the fencing token never goes back.
    pub(super) foreign_max: u64,
    /// The highest epoch other nodes of this cluster report in their records.
    pub(super) records_max: u64,
    /// The epoch of a create that failed or whose outcome is unknown: the next attempt uses
    /// it again (see `on_create_epoch`).
    pub(super) tried: Option<u64>,
}

impl Machine {
    /// The highest epoch of a term this node knows of (in a lease, or reported by a record):
    /// what its heartbeat reports. Epoch files alone are not terms (a take may have failed).
    pub(super) fn highest_term_known(&self) -> u64 {
        self.epochs
            .max_seen
            .max(self.epochs.foreign_max)
            .max(self.epochs.records_max)
            .max(self.holding.term().map_or(0, |t| t.epoch))
    }

    /// The highest epoch this node knows of: in leases, `epochs/`, and every record it read
    /// (this cluster's and, from a wiped store's old nodes, other clusters').
    pub(super) fn highest_epoch_known(&self) -> u64 {
        self.epochs
            .max_seen
            .max(self.epochs.max_file)
            .max(self.epochs.foreign_max)
            .max(self.epochs.records_max)
            .max(self.holding.term().map_or(0, |t| t.epoch))
    }

    pub(super) fn on_list_epochs(&mut self, now: Now, result: OpResult) {
        match result {
            Ok(OpOutput::Listed(keys)) => {
                let max = keys
                    .iter()
                    .filter_map(|k| records::parse_epoch_key(k))
                    .filter(|&e| e <= records::MAX_EPOCH)
                    .max()
                    .unwrap_or(0);
                self.epochs.max_file = self.epochs.max_file.max(max);
                // Anything in epochs/, even garbage, means the cluster has had a master.
                self.epochs.nonempty = Some(!keys.is_empty() || self.epochs.nonempty == Some(true));
                if matches!(self.corroboration, Corroboration::Pending(_)) {
                    self.corroboration_listed = true;
                }
                if matches!(self.phase, Phase::Starting(StartStep::ModeCheck)) {
                    return self.mode_check(now);
                }
                if !self.tasks.iter().any(|t| matches!(t, Task::Take { .. })) {
                    // The listing was needed to judge an absent lease: decide now.
                    self.decide(now);
                }
            }
            Ok(other) => self.log(
                Level::Error,
                format!("internal error: unexpected {other:?} for the epochs listing"),
            ),
            Err(e) => {
                if matches!(self.phase, Phase::Starting(_)) {
                    return self.startup_retry(now, "listing epochs/", &e);
                }
                self.log(
                    Level::Warn,
                    format!("listing epochs/ failed: {e}; the takeover waits for the next round"),
                );
                if matches!(self.corroboration, Corroboration::Pending(_)) {
                    self.corroboration = Corroboration::None;
                }
                // Do not continue a takeover on an unknown epoch.
                self.tasks.retain(|t| !matches!(t, Task::Take { .. }));
            }
        }
    }

    pub(super) fn on_create_epoch(&mut self, _now: Now, epoch: u64, result: OpResult) {
        match result {
            Ok(_) => {
                self.epochs.max_file = self.epochs.max_file.max(epoch);
                self.epochs.nonempty = Some(true);
                self.epochs.allocated = Some(epoch);
                self.epochs.tried = None;
            }
            Err(StoreError::Conflict(_)) if self.epochs.tried == Some(epoch) => {
                // Our earlier create of this epoch had an unknown outcome: is the file ours?
                // (The lease write stays queued behind the answer.)
                self.tasks.push_front(Task::ReadEpoch(epoch));
            }
            Err(e) => {
                if !matches!(e, StoreError::Conflict(_)) {
                    self.epochs.tried = Some(epoch);
                }
                // Conflict: another node allocated this epoch first (it is taking over), or an
                // earlier attempt of ours whose outcome we did not learn landed: the next attempt
                // allocates a higher one. Any other error: the file was not created as far as
                // anyone can tell (disk full, permissions) or the outcome is unknown; the next
                // attempt tries the same number again, so failing writes burn no epochs (an
                // unknown outcome that landed costs one, at the conflict).
                if matches!(e, StoreError::Conflict(_)) {
                    self.epochs.max_file = self.epochs.max_file.max(epoch);
                }
                self.tasks.retain(|t| !matches!(t, Task::WriteLease { .. }));
                let level = if matches!(e, StoreError::Conflict(_)) {
                    Level::Info
                } else {
                    Level::Warn
                };
                self.log_about(
                    level,
                    Some(epoch),
                    None,
                    format!(
                        "could not allocate epoch {epoch}: {e}; staying {}",
                        self.base
                    ),
                );
            }
        }
    }

    pub(super) fn on_read_epoch(&mut self, epoch: u64, result: OpResult) {
        self.epochs.tried = None;
        let ours = match &result {
            Ok(OpOutput::Read(ReadResult::Present(r))) => {
                records::open::<EpochRecord>(self.keys(), &records::epoch_key(epoch), &r.bytes)
                    .is_ok_and(|e| e.instance_id == self.cfg.instance_id)
            }
            _ => false,
        };
        self.epochs.max_file = self.epochs.max_file.max(epoch);
        self.epochs.nonempty = Some(true);
        if ours {
            // It landed: the term goes on with it, no epoch burnt.
            self.epochs.allocated = Some(epoch);
        } else {
            self.tasks.retain(|t| !matches!(t, Task::WriteLease { .. }));
            self.log(
                Level::Info,
                format!(
                    "epoch {epoch} was allocated by another node; staying {}",
                    self.base
                ),
            );
        }
    }

    /// An epoch this instance allocated (its `epochs/<n>.json` names us) that no lease carries
    /// yet and that is still above every epoch seen: a failed take may retry with it. Epochs
    /// stay unique to one instance and lease epochs still only grow.
    pub(super) fn reusable_epoch(&self) -> Option<u64> {
        let lease_epoch = self
            .obs
            .as_ref()
            .and_then(|o| o.lease())
            .map_or(0, |l| l.epoch);
        self.epochs
            .allocated
            .filter(|&e| e > lease_epoch.max(self.epochs.max_seen))
    }

    pub(super) fn fresh_lease(&self, epoch: u64, now: Now) -> LeaseRecord {
        LeaseRecord {
            format: FORMAT,
            cluster_id: self.cluster_id().to_string(),
            epoch,
            holder: self.cfg.name.clone(),
            instance_id: self.cfg.instance_id.clone(),
            renew_seq: 1,
            released: false,
            successor: None,
            holder_uri: self.cfg.uri.clone(),
            written_at_ms: now.wall_ms,
            heartbeat_timeout_ms: Some(self.cfg.heartbeat_timeout.as_millis() as u64),
        }
    }
}
