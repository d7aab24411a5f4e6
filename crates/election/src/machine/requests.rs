//! Operator requests (mode, priority, clearing records, nudges) as the HTTP layer hands them in;
//! each gets exactly one reply event.

use super::*;

impl Machine {
    pub fn handle_request(&mut self, now: Now, ticket: u64, req: Request) {
        if matches!(self.phase, Phase::Exited) {
            self.reply(ticket, Err(CommandError::ShuttingDown));
            return;
        }
        match req {
            Request::Nudge => self.nudge(now.mono),
            Request::SetPriority(p) => {
                let prev = self.priority;
                self.priority = p;
                self.log(Level::Info, format!("priority changed from {prev} to {p}"));
                self.reply(ticket, Ok(Reply::Priority(prev)));
            }
            Request::SetMode(mode) => self.set_mode(now, ticket, mode),
            Request::ClearStates => {
                if self.phase != Phase::Running {
                    self.reply(
                        ticket,
                        Err(CommandError::Conflict("the node is not running".into())),
                    );
                    return;
                }
                self.pending_clear.push(ticket);
                self.tasks.push_back(Task::ClearStates);
            }
            Request::ClearNode(name) => {
                if self.phase != Phase::Running {
                    self.reply(
                        ticket,
                        Err(CommandError::Conflict("the node is not running".into())),
                    );
                    return;
                }
                if crate::types::validate_node_name(&name).is_err() {
                    self.reply(
                        ticket,
                        Err(CommandError::BadRequest(format!(
                            "no such node name {name:?}"
                        ))),
                    );
                    return;
                }
                if self.current_master_name(now.mono).as_deref() == Some(name.as_str()) {
                    self.reply(
                        ticket,
                        Err(CommandError::Conflict(format!(
                            "{name} is the master; its record is never cleared"
                        ))),
                    );
                    return;
                }
                self.tasks.push_back(Task::Delete(name));
                self.reply(ticket, Ok(Reply::Done));
            }
            Request::Shutdown => self.shutdown(now, Some(ticket)),
        }
    }

    pub(super) fn set_mode(&mut self, now: Now, ticket: u64, mode: Mode) {
        let prev = self.state_at(now.mono);
        if self.phase != Phase::Running {
            self.reply(
                ticket,
                Err(CommandError::Conflict(format!(
                    "the node is {prev}; its mode can be changed once it is running"
                ))),
            );
            return;
        }
        if self.releasing.is_some() {
            self.reply(
                ticket,
                Err(CommandError::Conflict(
                    "a release is already in progress".into(),
                )),
            );
            return;
        }
        let is_master = self.holding.term().is_some();
        match mode {
            Mode::Master => {
                if is_master {
                    self.reply(ticket, Ok(Reply::State(prev)));
                    return;
                }
                // A planned switchover: ask the holder (through our record, which it reads when
                // nudged) to hand over to us. One-shot: the mode stays auto.
                self.mode = Mode::Auto;
                self.lone = false;
                if self.base == NodeState::Failed {
                    self.base = NodeState::Standby;
                    self.transition(
                        prev,
                        NodeState::Standby,
                        None,
                        "mode master set by the operator: standing by to take over".into(),
                    );
                }
                match self.obs.as_ref().and_then(|o| o.lease().cloned()) {
                    Some(l) if !l.released => {
                        self.switchover_request = Some(l.epoch);
                        self.log(
                            Level::Info,
                            format!(
                                "asking {} (epoch {}) to hand over to this node",
                                l.holder, l.epoch
                            ),
                        );
                        // Write the request now; nudge the holder once it is in the store, so
                        // the scan the nudge triggers finds it.
                        self.tasks.push_back(Task::Heartbeat);
                        if !l.holder_uri.is_empty() {
                            self.nudge_after_heartbeat = Some(l.holder_uri.clone());
                        }
                    }
                    _ => {
                        self.log(Level::Info, "promotion requested and no live master is known: standing for election".into());
                    }
                }
                self.scan_next_round = true;
                self.reply(ticket, Ok(Reply::State(prev)));
            }
            Mode::Disabled => {
                self.mode = Mode::Disabled;
                self.lone = false;
                self.switchover_request = None;
                if is_master {
                    self.start_release(
                        now.mono,
                        None,
                        AfterRelease::Disable,
                        Some(ticket),
                        "disabled by the operator",
                    );
                } else {
                    self.disable(now);
                    self.reply(ticket, Ok(Reply::State(prev)));
                }
            }
            m => {
                let from = self.state_at(now.mono);
                self.mode = m;
                self.lone = false;
                self.switchover_request = None;
                self.base = m.idle_state();
                if is_master && m != Mode::Auto {
                    self.start_release(
                        now.mono,
                        None,
                        AfterRelease::Idle(m.idle_state()),
                        Some(ticket),
                        "demoted by the operator",
                    );
                } else {
                    let to = self.state_at(now.mono);
                    if to != from {
                        // Enabled again after DISABLED: the lease watch went on meanwhile, so
                        // the usual rules (T unchanged, or a release) decide any take.
                        self.transition(from, to, None, format!("mode {m} set by the operator"));
                        self.tasks.push_back(Task::Heartbeat);
                    }
                    self.reply(ticket, Ok(Reply::State(prev)));
                }
            }
        }
    }

    /// A runtime DISABLED: no lease, no take, no switchover; the node keeps reading the store
    /// and writing its record (FAILED, mode DISABLED) until a mode is set again.
    pub(super) fn disable(&mut self, now: Now) {
        let from = self.state_at(now.mono);
        self.base = NodeState::Failed;
        self.tasks.retain(|t| {
            !matches!(
                t,
                Task::Take { .. } | Task::CreateEpoch { .. } | Task::WriteLease { .. }
            )
        });
        self.stop_waiting();
        self.tasks.push_back(Task::Heartbeat);
        self.transition(
            from,
            NodeState::Failed,
            None,
            "disabled by the operator: holds no lease until mode auto, standby, hot-standby, hot-backup or master is set".into(),
        );
    }

    pub(super) fn nudge(&mut self, now: Nanos) {
        if self.phase != Phase::Running {
            return;
        }
        let earliest = self
            .last_nudge
            .map_or(now, |l| (l + NUDGE_MIN_GAP).max(now));
        self.last_nudge = Some(earliest);
        self.scan_next_round = true;
        // A round in progress may have read the store before the change we are told about:
        // run another one as soon as it ends.
        self.nudge_pending = true;
        if earliest < self.next_round_at {
            self.next_round_at = earliest;
        }
    }
}
