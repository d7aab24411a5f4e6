//! Test support for tenure, kept out of the product (`publish = false`; no crate of the `tenure`
//! binary depends on it outside `[dev-dependencies]`):
//!
//! - [`MemoryStore`]: an in-memory store with the directory backend's semantics and fault
//!   injection from any thread;
//! - [`conformance`]: the one suite every [`tenure_store::Store`] backend must pass;
//! - [`fake_s3`]: tiny S3 servers for the failures no real server shows on demand;
//! - [`moto`]: the local S3 server (`scripts/moto.sh`) that the S3 tests run against;
//! - [`azurite`]: the Azure Storage emulator (`scripts/azurite.sh`) of the Azure tests;
//! - [`harness`]: machines on simulated time over one in-memory store, for the election's
//!   tests and benchmark.

pub mod azurite;
pub mod conformance;
pub mod fake_s3;
pub mod harness;
mod memory;
pub mod moto;

pub use memory::MemoryStore;
