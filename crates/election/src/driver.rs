//! The async driver: runs the machine against a Store (work in progress).

use crate::types::NodeState;
use std::future::Future;
use std::pin::Pin;

/// Talks to other nodes. Implemented by the HTTP crate.
pub trait Peers: Send + Sync + 'static {
    /// Ask the nodes at these base URIs (e.g. `http://127.0.0.1:8082`) to read the store now.
    /// Best effort, fire and forget; must not block.
    fn nudge(&self, uris: Vec<String>);
}

/// Details of a state change, handed to hooks.
#[derive(Clone, Debug)]
pub struct HookEvent {
    pub node: String,
    pub state: NodeState,
    pub previous: NodeState,
    pub epoch: Option<u64>,
    pub master: Option<String>,
}

/// Runs the operator's hooks. Implemented by the CLI crate. The returned future completes when
/// the hook has finished or was stopped at its time limit; `Err` is a failed or overrun hook.
pub trait Hooks: Send + Sync + 'static {
    fn run(&self, event: HookEvent) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
}
