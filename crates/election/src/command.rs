//! Requests from the HTTP layer (and signals) to the driver. Each carries a reply channel.

use crate::types::{Mode, NodeState};
use tokio::sync::oneshot;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The request is not valid in the current state (maps to HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (maps to HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
}

#[derive(Debug)]
pub enum Command {
    /// Brooklyn's `POST /ha/state mode=…`; replies with the state before the change.
    SetMode {
        mode: Mode,
        reply: oneshot::Sender<Result<NodeState, CommandError>>,
    },
    /// Replies with the previous priority.
    SetPriority {
        priority: i64,
        reply: oneshot::Sender<Result<i64, CommandError>>,
    },
    /// Delete the records of all non-master nodes (never the lease, cluster.json or epochs/).
    ClearStates {
        reply: oneshot::Sender<Result<Vec<String>, CommandError>>,
    },
    /// Delete one non-master node's record.
    ClearNode {
        name: String,
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
    /// Another node asks this one to read the store now. Carries nothing to obey.
    Nudge,
    /// Graceful shutdown (SIGTERM/SIGINT): release the lease if held, report TERMINATED.
    Shutdown,
}
