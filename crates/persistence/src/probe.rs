//! Start-up checks that a store really enforces conditional writes (DESIGN §3): an S3-compatible
//! server that ignores `If-None-Match` / `If-Match` would let two nodes both take the lease.
//! `tenure run` refuses such a store; `tenure doctor` reports it.
//!
//! Probes write only under `probe/` (a folder the election never reads) with a random name,
//! and delete what they wrote.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{SystemTime, UNIX_EPOCH};
use tenure_store::{ReadResult, Store, StoreError, Version};

/// What to tell an operator whose store ignores conditional writes.
pub const IGNORES_CONDITIONS_FIX: &str = "this server does not enforce conditional writes, so two nodes could both \
take the lease; use a store that does (AWS S3, Google Cloud Storage, Azure Blob Storage, or an S3-compatible server \
with If-None-Match/If-Match support such as a current MinIO), or a shared directory";

/// A fresh probe key: `probe/<random>.json`.
pub fn probe_key() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!(
        "{nanos}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    format!(
        "probe/{:016x}.json",
        xxhash_rust::xxh3::xxh3_64(seed.as_bytes())
    )
}

fn body(step: &str) -> Vec<u8> {
    // Every write differs (an S3 ETag is the MD5 of the body).
    format!("{{\"probe\":\"{step}\",\"at\":\"{}\"}}", probe_key()).into_bytes()
}

/// Why the conditional-write probe failed. Each variant holds the finished message (its
/// parts are the store's description, the probe key and a step-specific explanation).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The store answered, wrongly: it does not enforce conditional writes (or its versions
    /// or reads are inconsistent). Trying again will not help.
    #[error("{0}")]
    Broken(String),
    /// The store could not be used (unreachable, denied, timed out): perhaps transient.
    #[error("{0}")]
    Unusable(String),
}

/// Why [`probe_create_race`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RaceError {
    /// One of the racing creates failed other than by a `Conflict`.
    #[error(
        "{what}: {contenders} concurrent creates of {key}: {wins} won, {conflicts} conflicted, one failed: {source}"
    )]
    CreateFailed {
        /// The store's description.
        what: String,
        contenders: usize,
        key: String,
        wins: usize,
        conflicts: usize,
        #[source]
        source: StoreError,
    },
    /// Not exactly one create won: the store ignores `If-None-Match`.
    #[error(
        "{what}: {contenders} concurrent creates of {key}: {wins} won (exactly one must): {IGNORES_CONDITIONS_FIX}"
    )]
    NotExactlyOne {
        what: String,
        contenders: usize,
        key: String,
        wins: usize,
    },
}

/// Two conflicting conditional writes must not both succeed: a create over an existing object
/// and a replace on a wrong or stale version must each be a `Conflict`, and a replace on the
/// current version must succeed and be read back. `Err` says what failed and what to do, and
/// tells a broken store from an unreachable one.
pub fn probe_conditional_writes(store: &dyn Store) -> Result<(), ProbeError> {
    probe_conditional_writes_detailed(store)
}

/// [`probe_conditional_writes`] (the same function: both return a [`ProbeError`] now).
pub fn probe_conditional_writes_detailed(store: &dyn Store) -> Result<(), ProbeError> {
    let key = probe_key();
    let what = store.describe();
    let unusable = |step: &str, e: StoreError| {
        ProbeError::Unusable(format!(
            "{what}: the conditional-write probe could not {step} {key}: {e}"
        ))
    };
    let ignored =
        |how: &str| ProbeError::Broken(format!("{what}: {how}: {IGNORES_CONDITIONS_FIX}"));
    let v1 = store
        .create(&key, &body("create"))
        .map_err(|e| unusable("create", e))?;
    let result = (|| {
        match store.create(&key, &body("second create")) {
            Err(StoreError::Conflict(_)) => {}
            Ok(_) => {
                return Err(ignored(&format!(
                    "a second create-if-absent of {key} succeeded (If-None-Match ignored)"
                )));
            }
            Err(e) => return Err(unusable("create again", e)),
        }
        let wrong = Version("\"0123456789abcdef0123456789abcdef\"".into());
        match store.replace(&key, &body("wrong version"), &wrong) {
            Err(StoreError::Conflict(_)) => {}
            Ok(_) => {
                return Err(ignored(&format!(
                    "a replace of {key} on a wrong version succeeded (If-Match ignored)"
                )));
            }
            Err(e) => return Err(unusable("replace", e)),
        }
        let current = body("replace");
        let v2 = store
            .replace(&key, &current, &v1)
            .map_err(|e| unusable("replace on the current version", e))?;
        if v2 == v1 {
            return Err(ProbeError::Broken(format!(
                "{what}: a replace of {key} with different bytes kept the version {v1}: versions do not track writes"
            )));
        }
        match store.replace(&key, &body("stale version"), &v1) {
            Err(StoreError::Conflict(_)) => {}
            Ok(_) => {
                return Err(ignored(&format!(
                    "a replace of {key} on a stale version succeeded (If-Match ignored)"
                )));
            }
            Err(e) => return Err(unusable("replace", e)),
        }
        match store.read(&key) {
            Ok(ReadResult::Present(r)) if r.bytes == current && r.version == v2 => Ok(()),
            Ok(other) => Err(ProbeError::Broken(format!(
                "{what}: {key} did not read back as written (read-after-write): got {other:?}"
            ))),
            Err(e) => Err(unusable("read", e)),
        }
    })();
    let _ = store.delete(&key);
    result
}

/// `handles.len()` threads (one per handle, ideally opened independently) create one probe
/// key at once: exactly one must win and the others see `Conflict`. Returns the number of
/// contenders on success.
pub fn probe_create_race(handles: &[Arc<dyn Store>]) -> Result<usize, RaceError> {
    let Some(first) = handles.first() else {
        return Ok(0);
    };
    let key = probe_key();
    let barrier = Arc::new(Barrier::new(handles.len()));
    let threads: Vec<_> = handles
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let (h, barrier, key) = (h.clone(), barrier.clone(), key.clone());
            std::thread::spawn(move || {
                barrier.wait();
                h.create(&key, &body(&format!("racer {i}")))
            })
        })
        .collect();
    let results: Vec<Result<Version, StoreError>> = threads
        .into_iter()
        .map(|t| {
            t.join()
                .unwrap_or_else(|_| Err(StoreError::Unavailable("a racing thread panicked".into())))
        })
        .collect();
    let _ = first.delete(&key);
    let wins = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict(_))))
        .count();
    let what = first.describe();
    if let Some(Err(e)) = results
        .iter()
        .find(|r| !matches!(r, Ok(_) | Err(StoreError::Conflict(_))))
    {
        return Err(RaceError::CreateFailed {
            what,
            contenders: handles.len(),
            key,
            wins,
            conflicts,
            source: e.clone(),
        });
    }
    if wins != 1 {
        return Err(RaceError::NotExactlyOne {
            what,
            contenders: handles.len(),
            key,
            wins,
        });
    }
    Ok(handles.len())
}
