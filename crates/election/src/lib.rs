//! The election: who holds the master lease.
//!
//! [`machine`] is the protocol of DESIGN §2–3 as a pure state machine: it reads no clock and
//! does no I/O. Time and storage results go in; storage operations and effects come out. That
//! makes it testable with simulated time over thousands of seeds (see `tests/simulation.rs`).
//! [`driver`] runs it against a real [`tenure_store::Store`] on tokio.

pub mod clock;
pub mod command;
pub mod config;
pub mod driver;
pub mod machine;
pub mod records;
pub mod secret;
pub mod snapshot;
pub mod stats;
pub mod types;

pub use clock::Nanos;
pub use command::{Command, CommandError};
pub use config::TimingsError;
pub use records::ParseError;
pub use secret::{SecretError, VerifyError};
pub use snapshot::{LeaseView, NodeRow, Snapshot, Waiting};
pub use stats::Stats;
pub use types::{Mode, NodeNameError, NodeState};
