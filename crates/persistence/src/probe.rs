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

/// Why a race between concurrent conditional writes ([`probe_create_race`],
/// [`probe_concurrent_writes`]) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RaceError {
    /// Not exactly one write won: the store checks the condition and writes in two steps, or
    /// ignores it. A verdict: trying again will not help.
    #[error(
        "{what}: {contenders} concurrent {op} of {key}: {wins} won (exactly one must): {IGNORES_CONDITIONS_FIX}"
    )]
    NotExactlyOne {
        /// The store's description.
        what: String,
        /// What raced (`creates-if-absent`, `replaces-if-version`).
        op: &'static str,
        contenders: usize,
        key: String,
        wins: usize,
    },
    /// Some writes neither won nor lost (timed out or failed otherwise), and no two won: the
    /// race proves nothing either way (a write whose outcome is unknown may have landed).
    #[error(
        "{what}: {contenders} concurrent {op} of {key}: inconclusive: {wins} won, {conflicts} lost, {timed_out} timed out, {failed} failed otherwise (the first: {source}){}",
        if *timed_out > 0 { "; raise --storage-timeout and run it again" } else { "" }
    )]
    Inconclusive {
        what: String,
        op: &'static str,
        contenders: usize,
        key: String,
        wins: usize,
        conflicts: usize,
        timed_out: usize,
        failed: usize,
        #[source]
        source: Box<StoreError>,
    },
}

impl RaceError {
    /// A verdict (the store is broken), not a race that could not finish.
    pub fn is_verdict(&self) -> bool {
        matches!(self, RaceError::NotExactlyOne { .. })
    }
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

/// Start `handles.len()` threads (one per handle, ideally opened independently) at once, each
/// doing `op(handle, i)` on `key`; then exactly one must win and every other lose with a
/// `Conflict`. Returns the number of contenders.
fn race(
    handles: &[Arc<dyn Store>],
    what_op: &'static str,
    key: &str,
    op: impl Fn(&dyn Store, usize) -> Result<Version, StoreError> + Send + Sync + 'static,
) -> Result<usize, RaceError> {
    let Some(first) = handles.first() else {
        return Ok(0);
    };
    let barrier = Arc::new(Barrier::new(handles.len()));
    let op = Arc::new(op);
    let threads: Vec<_> = handles
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let (h, barrier, op) = (h.clone(), barrier.clone(), op.clone());
            std::thread::spawn(move || {
                barrier.wait();
                op(&*h, i)
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
    let count =
        |f: fn(&Result<Version, StoreError>) -> bool| results.iter().filter(|r| f(r)).count();
    let wins = count(|r| r.is_ok());
    let conflicts = count(|r| matches!(r, Err(StoreError::Conflict(_))));
    let timed_out = count(|r| matches!(r, Err(StoreError::Timeout(_))));
    let failed = results.len() - wins - conflicts - timed_out;
    let what = first.describe();
    let contenders = handles.len();
    // Two winners are proof whatever else happened; one winner beside unknown outcomes is not.
    if wins > 1 || (wins == 0 && timed_out + failed == 0) {
        return Err(RaceError::NotExactlyOne {
            what,
            op: what_op,
            contenders,
            key: key.to_string(),
            wins,
        });
    }
    if let Some(Err(e)) = results
        .iter()
        .find(|r| !matches!(r, Ok(_) | Err(StoreError::Conflict(_))))
    {
        return Err(RaceError::Inconclusive {
            what,
            op: what_op,
            contenders,
            key: key.to_string(),
            wins,
            conflicts,
            timed_out,
            failed,
            source: Box::new(e.clone()),
        });
    }
    Ok(contenders)
}

/// `handles.len()` threads (one per handle, ideally opened independently) create one probe
/// key at once: exactly one must win and the others see `Conflict`. Returns the number of
/// contenders on success.
pub fn probe_create_race(handles: &[Arc<dyn Store>]) -> Result<usize, RaceError> {
    let Some(first) = handles.first() else {
        return Ok(0);
    };
    let key = probe_key();
    let k = key.clone();
    let result = race(handles, "creates-if-absent", &key, move |h, i| {
        h.create(&k, &body(&format!("racer {i}")))
    });
    let _ = first.delete(&key);
    result
}

/// `handles.len()` threads replace one probe record on the same version at once: exactly one
/// must win. Returns the number of contenders on success.
pub fn probe_replace_race(handles: &[Arc<dyn Store>]) -> Result<usize, RaceError> {
    let Some(first) = handles.first() else {
        return Ok(0);
    };
    let key = probe_key();
    let version = first.create(&key, &body("base")).map_err(|e| {
        let timed_out = usize::from(matches!(e, StoreError::Timeout(_)));
        RaceError::Inconclusive {
            what: first.describe(),
            op: "replaces-if-version",
            contenders: handles.len(),
            key: key.clone(),
            wins: 0,
            conflicts: 0,
            timed_out,
            failed: 1 - timed_out,
            source: Box::new(e),
        }
    })?;
    let k = key.clone();
    let result = race(handles, "replaces-if-version", &key, move |h, i| {
        h.replace(&k, &body(&format!("racer {i}")), &version)
    });
    let _ = first.delete(&key);
    result
}

/// What `tenure run` checks at start-up beside [`probe_conditional_writes`]: a create race and
/// a replace race among `handles`. One request at a time cannot tell a store that checks a
/// condition and then writes (not atomically) from one that does both in one step; a few
/// concurrent writers can.
pub fn probe_concurrent_writes(handles: &[Arc<dyn Store>]) -> Result<usize, RaceError> {
    probe_create_race(handles)?;
    probe_replace_race(handles)
}
