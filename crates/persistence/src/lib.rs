//! Storage backends for tenure, each implementing [`tenure_store::Store`]:
//!
//! - [`DirStore`]: a local or NFS directory; the lease lives in `lease.lock`, read and written
//!   through its flock'd handle (docs/DESIGN.md §3.1);
//! - [`ObjStore`]: S3, GCS, Azure and S3-compatible servers, through `object_store`'s
//!   conditional puts.
//!
//! [`probe_conditional_writes`] checks at start-up that a store enforces conditional writes;
//! [`mount`] reads the mount table (to notice a store whose mount vanished). The trait and its
//! types are in `tenure-store`; the in-memory store and the conformance suite every backend
//! must pass are in `tenure-testkit`.

mod dir;
pub mod mount;
mod object;
mod probe;

pub use dir::{
    DirOptions, DirStore, LEASE_FILE, LEASE_PAYLOAD_MAX, LEASE_SLOT_BYTES, check_permissions,
};
pub use object::{LEASE_OBJECT, ObjOptions, ObjStore, is_object_url};
pub use probe::{
    IGNORES_CONDITIONS_FIX, ProbeError, probe_conditional_writes,
    probe_conditional_writes_detailed, probe_create_race, probe_key,
};
