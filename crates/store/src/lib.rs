//! The storage interface tenure's election is written against, apart from any backend: a small
//! key/value interface with the three primitives the protocol needs (read with a version,
//! create-if-absent, replace-if-version-matches), plus listing, unconditional writes of one's
//! own records and deletion (docs/DESIGN.md §3.1).
//!
//! Keys are relative, `/`-separated paths such as `cluster.json`, `lease`, `epochs/7.json`,
//! `nodes/a.json`. The key [`LEASE_KEY`] is special: the directory backend keeps it inside
//! `lease.lock` (two checksummed slots, read and written through the flock'd handle), an
//! object store keeps it as `lease.json`.
//!
//! Every backend is synchronous; [`IoThread`] runs one on a dedicated thread with at most one
//! operation in flight and a deadline on every call, so a hung filesystem never blocks the
//! election loop.
//!
//! This crate has no I/O dependency of its own, so the sans-IO election (`tenure-election`)
//! depends on it and not on the backends: the directory and object-store backends live in
//! `tenure-persistence`, the in-memory store and the conformance suite every backend passes in
//! `tenure-testkit`.

mod io_thread;

pub use io_thread::IoThread;

use std::time::SystemTime;

/// The key of the lease record.
pub const LEASE_KEY: &str = "lease";

/// Records are small; anything larger is refused when read (DESIGN §3.9).
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// An opaque version token. Two reads return equal versions only if no write happened in
/// between (every write produces a new version, even of identical bytes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version(pub String);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A record as read from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub bytes: Vec<u8>,
    pub version: Version,
    /// The store's clock for the last write (file mtime, object Last-Modified), if known.
    pub modified: Option<SystemTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The condition of a conditional write did not hold: the key exists (create) or its
    /// version differs / it is absent (replace). This is "lost the race", never a fault.
    #[error("conditional write lost: {0}")]
    Conflict(String),
    /// The record exists but cannot be used: bad checksum in every slot, over the size cap.
    /// A reader treats it as an opaque version where it has one.
    #[error("unreadable record {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// The store could not be reached or the call failed (EIO, ENOSPC, EROFS, ...).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The call did not complete before its deadline; its outcome is unknown.
    #[error("storage call timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The previous call is still running (hung); no second call is started.
    #[error("storage busy: a previous call has not returned for {0:?}")]
    Busy(std::time::Duration),
    /// The key is not a valid record name.
    #[error("invalid key {0:?}")]
    InvalidKey(String),
}

impl StoreError {
    /// True when the outcome of a write is unknown (it may or may not have landed).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, StoreError::Timeout(_) | StoreError::Unavailable(_))
    }
}

/// A corrupt record still has an identity: a reader that cannot parse it can watch whether it
/// changes. Backends report it through [`ReadResult::Unreadable`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadResult {
    Absent,
    Present(Record),
    /// The record exists but is unusable; `version` changes when the bytes change.
    Unreadable {
        version: Version,
        reason: String,
    },
}

pub trait Store: Send + Sync + 'static {
    /// Read a record. Oversized or checksum-failed records come back as `Unreadable`.
    fn read(&self, key: &str) -> Result<ReadResult, StoreError>;
    /// Create the record only if the key is absent; `Conflict` otherwise.
    fn create(&self, key: &str, bytes: &[u8]) -> Result<Version, StoreError>;
    /// Replace the record only if its current version is `expected`; `Conflict` otherwise
    /// (also when the key is absent).
    fn replace(&self, key: &str, bytes: &[u8], expected: &Version) -> Result<Version, StoreError>;
    /// Write unconditionally (a node's own heartbeat).
    fn put(&self, key: &str, bytes: &[u8]) -> Result<Version, StoreError>;
    /// Read several records, each result in the order of `keys`. A scan of `nodes/` reads one
    /// record per node within one storage deadline: a backend with a round trip per request
    /// (an object store) reads them concurrently, so the scan costs two round trips, not N + 1.
    fn read_many(&self, keys: &[String]) -> Vec<Result<ReadResult, StoreError>> {
        keys.iter().map(|k| self.read(k)).collect()
    }
    /// Keys directly under `prefix` (e.g. `"nodes/"`), sorted. Temporary files are not listed.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Delete a record; deleting an absent key is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// A short description for logs (`dir:/srv/ha`, `memory`).
    fn describe(&self) -> String;
}

/// Validate a key: relative, `/`-separated components of `[A-Za-z0-9._-]`, no `..`, no
/// leading dot (temp files start with a dot), at most two components.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let bad = || StoreError::InvalidKey(key.to_string());
    if key.is_empty() || key.len() > 255 {
        return Err(bad());
    }
    let parts: Vec<&str> = key.split('/').collect();
    if parts.len() > 2 {
        return Err(bad());
    }
    for p in parts {
        if p.is_empty()
            || p.starts_with('.')
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        {
            return Err(bad());
        }
    }
    Ok(())
}

/// Validate a prefix for [`Store::list`]: `""` (the top level) or one key component followed
/// by `/` (`"nodes/"`, `"epochs/"`).
pub fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() {
        return Ok(());
    }
    match prefix.strip_suffix('/') {
        Some(folder) if !folder.contains('/') => {
            validate_key(folder).map_err(|_| StoreError::InvalidKey(prefix.to_string()))
        }
        _ => Err(StoreError::InvalidKey(prefix.to_string())),
    }
}
