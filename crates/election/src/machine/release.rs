//! Giving the lease up: a graceful shutdown or a demotion writes the lease as released (naming
//! a successor where one is known), runs the demote hook within G, then stands by, exits or
//! stays disabled (docs/DESIGN.md §3.8).

use super::*;

#[derive(Clone, Debug)]
pub(super) enum AfterRelease {
    Idle(NodeState),
    Shutdown,
    Disable,
}

#[derive(Clone, Debug)]
pub(super) struct Releasing {
    pub(super) successor: Option<String>,
    pub(super) started: Nanos,
    pub(super) hook: Option<u64>,
    pub(super) then: AfterRelease,
    pub(super) ticket: Option<u64>,
    pub(super) written: bool,
}

impl Machine {
    pub(super) fn shutdown(&mut self, now: Now, ticket: Option<u64>) {
        if self.releasing.is_some() {
            if let Some(r) = &mut self.releasing {
                r.then = AfterRelease::Shutdown;
            }
            if let Some(t) = ticket {
                self.reply(t, Ok(Reply::Done));
            }
            return;
        }
        match self.phase {
            Phase::Running if self.holding.term().is_some() => {
                self.start_release(
                    now.mono,
                    None,
                    AfterRelease::Shutdown,
                    None,
                    "shutting down",
                );
                if let Some(t) = ticket {
                    self.reply(t, Ok(Reply::Done));
                }
            }
            Phase::Running => {
                let from = self.state_at(now.mono);
                self.base = NodeState::Terminated;
                self.tasks.clear();
                self.tasks.push_back(Task::Heartbeat);
                self.exit_after_tasks = true;
                self.transition(from, NodeState::Terminated, None, "shutting down".into());
                if let Some(t) = ticket {
                    self.reply(t, Ok(Reply::Done));
                }
            }
            _ => {
                if let Some(t) = ticket {
                    self.reply(t, Ok(Reply::Done));
                }
                self.exit(0, "shut down".into());
            }
        }
    }

    pub(super) fn start_release(
        &mut self,
        now: Nanos,
        successor: Option<String>,
        then: AfterRelease,
        ticket: Option<u64>,
        why: &str,
    ) {
        let Some(term) = self.holding.take_term() else {
            return;
        };
        let to = match &then {
            AfterRelease::Idle(s) => *s,
            AfterRelease::Shutdown => NodeState::Terminated,
            AfterRelease::Disable => NodeState::Failed,
        };
        // First stop answering MASTER (V := now), then the hook, then the released write.
        let was = if term.announced {
            NodeState::Master
        } else {
            self.base
        };
        self.base = to;
        let hook = self.transition(
            was,
            to,
            Some(term.epoch),
            format!(
                "{why}: stopped answering MASTER (epoch {}); releasing the lease{}",
                term.epoch,
                successor
                    .as_ref()
                    .map_or(String::new(), |s| format!(" to {s}"))
            ),
        );
        self.releasing = Some(Releasing {
            successor,
            started: now,
            hook: Some(hook),
            then,
            ticket,
            written: false,
        });
        self.tasks
            .retain(|t| matches!(t, Task::Delete(_) | Task::ClearStates));
    }

    pub(super) fn finish_release(&mut self, outcome: &str) {
        let Some(r) = self.releasing.take() else {
            return;
        };
        self.log(Level::Info, format!("release finished: {outcome}"));
        // Ask the others to read the store now, so a standby takes over within one round trip.
        let uris: Vec<String> = self
            .nodes
            .values()
            .filter(|t| t.record.name != self.cfg.name && !t.record.uri.is_empty())
            .map(|t| t.record.uri.clone())
            .collect();
        if !uris.is_empty() {
            self.events.push_back(Event::Nudge(uris));
        }
        if let Some(ticket) = r.ticket {
            // Only a master releases: the state before the request was MASTER.
            self.reply(ticket, Ok(Reply::State(NodeState::Master)));
        }
        match r.then {
            AfterRelease::Idle(_) => {
                self.tasks.push_front(Task::Heartbeat);
            }
            AfterRelease::Shutdown => {
                self.base = NodeState::Terminated;
                self.tasks.clear();
                self.tasks.push_back(Task::Heartbeat);
                self.exit_after_tasks = true;
            }
            AfterRelease::Disable => {
                self.base = NodeState::Failed;
                self.tasks.push_front(Task::Heartbeat);
            }
        }
    }
}
