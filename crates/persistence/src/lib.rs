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
    DirOpenError, DirOptions, DirStore, LEASE_FILE, LEASE_PAYLOAD_MAX, LEASE_SLOT_BYTES,
    PermissionsError, SharedFolder, check_permissions,
};
pub use mount::{MountError, NfsPlace};
pub use object::{LEASE_OBJECT, ObjOpenError, ObjOptions, ObjStore, is_object_url};
/// Where `--store` points: a directory, or an object-store URL. The one parser of the flag
/// (`run`, `init` and `doctor` all use it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// A directory path, or `file:///path`.
    Directory(std::path::PathBuf),
    /// `s3://`, `gs://`, `az://` (and their aliases), as given.
    Object(String),
}

/// Why [`StoreLocation::parse`] refused `--store`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreLocationError {
    /// `scheme://` with a scheme no backend has.
    #[error(
        "--store {arg}: there is no {scheme}:// backend; use a directory path (local disk or an NFS mount), file:///path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
    )]
    UnknownScheme { arg: String, scheme: String },
}

impl StoreLocation {
    /// Parses `--store`; an unknown `scheme://` is refused with the forms that are known.
    pub fn parse(arg: &str) -> Result<StoreLocation, StoreLocationError> {
        if is_object_url(arg) {
            return Ok(StoreLocation::Object(arg.to_string()));
        }
        if let Some(p) = arg.strip_prefix("file://") {
            return Ok(StoreLocation::Directory(p.into()));
        }
        if let Some((scheme, _)) = arg.split_once("://") {
            return Err(StoreLocationError::UnknownScheme {
                arg: arg.to_string(),
                scheme: scheme.to_string(),
            });
        }
        Ok(StoreLocation::Directory(arg.into()))
    }
}

pub use probe::{
    IGNORES_CONDITIONS_FIX, ProbeError, RaceError, probe_concurrent_writes,
    probe_conditional_writes, probe_conditional_writes_detailed, probe_create_race, probe_key,
    probe_replace_race,
};
