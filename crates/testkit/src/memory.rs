//! An in-memory store with the directory backend's semantics, for tests: every write makes a
//! new version (from a process-wide counter), oversized records read back as `Unreadable`, the
//! lease cannot be deleted and is limited to one slot's payload. Faults can be injected at any
//! time from any thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tenure_persistence::LEASE_PAYLOAD_MAX;
use tenure_store::{
    LEASE_KEY, MAX_RECORD_BYTES, ReadResult, Record, Store, StoreError, Version, validate_key,
    validate_prefix,
};

/// Process-wide, so versions never repeat even across stores.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

enum Entry {
    Data {
        bytes: Vec<u8>,
        generation: u64,
        modified: SystemTime,
    },
    /// Made unreadable with [`MemoryStore::corrupt`].
    Corrupt { reason: String, generation: u64 },
}

impl Entry {
    fn version(&self) -> Version {
        let g = match self {
            Entry::Data { generation, .. } | Entry::Corrupt { generation, .. } => generation,
        };
        Version(format!("m{g}"))
    }
}

#[derive(Default)]
struct Faults {
    unavailable: Option<String>,
    delay: Duration,
    fail_next: usize,
    fail_next_err: Option<StoreError>,
    fail_after: usize,
    fail_after_err: Option<StoreError>,
}

#[derive(Default)]
struct Inner {
    records: Mutex<HashMap<String, Entry>>,
    faults: Mutex<Faults>,
    /// Wakes operations sleeping in a delay when the delay changes.
    faults_changed: Condvar,
}

/// Cheap to clone: clones share the same records and faults.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Make every operation fail with `Unavailable(msg)` until called with `None`.
    pub fn set_unavailable(&self, msg: Option<String>) {
        relock(&self.inner.faults).unavailable = msg;
    }

    /// Make every operation sleep this long before doing anything (a slow or hung store).
    /// An operation already sleeping re-reads the delay when it changes, so
    /// `set_delay(Duration::ZERO)` releases a simulated hang at once.
    pub fn set_delay(&self, delay: Duration) {
        relock(&self.inner.faults).delay = delay;
        self.inner.faults_changed.notify_all();
    }

    /// Make the next `n` operations fail with `err` without touching the records.
    pub fn fail_next(&self, n: usize, err: StoreError) {
        let mut f = relock(&self.inner.faults);
        f.fail_next = n;
        f.fail_next_err = Some(err);
    }

    /// Make the next `n` operations take effect but return `err` (a write whose reply was
    /// lost: its outcome is unknown to the caller).
    pub fn fail_next_after_apply(&self, n: usize, err: StoreError) {
        let mut f = relock(&self.inner.faults);
        f.fail_after = n;
        f.fail_after_err = Some(err);
    }

    /// Replace `key` with an unreadable record (bad checksum, bad MAC…) with a new version.
    pub fn corrupt(&self, key: &str, reason: &str) {
        relock(&self.inner.records).insert(
            key.to_string(),
            Entry::Corrupt {
                reason: reason.to_string(),
                generation: next_generation(),
            },
        );
    }

    /// Apply the delay, then the injected failures.
    fn begin(&self) -> Result<(), StoreError> {
        let start = Instant::now();
        let mut f = relock(&self.inner.faults);
        loop {
            let elapsed = start.elapsed();
            if elapsed >= f.delay {
                break;
            }
            let wait = f.delay - elapsed;
            f = self
                .inner
                .faults_changed
                .wait_timeout(f, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if let Some(msg) = &f.unavailable {
            return Err(StoreError::Unavailable(msg.clone()));
        }
        if f.fail_next > 0 {
            f.fail_next -= 1;
            if let Some(e) = &f.fail_next_err {
                return Err(e.clone());
            }
        }
        Ok(())
    }

    /// Run one operation under the fault rules.
    fn op<T>(
        &self,
        f: impl FnOnce(&mut HashMap<String, Entry>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.begin()?;
        let result = f(&mut relock(&self.inner.records));
        let mut faults = relock(&self.inner.faults);
        if faults.fail_after > 0 {
            faults.fail_after -= 1;
            if let Some(e) = &faults.fail_after_err {
                return Err(e.clone());
            }
        }
        result
    }

    fn check_lease_size(key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        if key == LEASE_KEY && bytes.len() > LEASE_PAYLOAD_MAX {
            return Err(StoreError::Unavailable(format!(
                "lease record of {} bytes exceeds the {LEASE_PAYLOAD_MAX}-byte slot",
                bytes.len()
            )));
        }
        Ok(())
    }

    fn insert(records: &mut HashMap<String, Entry>, key: &str, bytes: &[u8]) -> Version {
        let e = Entry::Data {
            bytes: bytes.to_vec(),
            generation: next_generation(),
            modified: SystemTime::now(),
        };
        let v = e.version();
        records.insert(key.to_string(), e);
        v
    }
}

impl Store for MemoryStore {
    fn read(&self, key: &str) -> Result<ReadResult, StoreError> {
        validate_key(key)?;
        self.op(|records| {
            Ok(match records.get(key) {
                None => ReadResult::Absent,
                Some(e @ Entry::Corrupt { reason, .. }) => ReadResult::Unreadable {
                    version: e.version(),
                    reason: reason.clone(),
                },
                Some(e @ Entry::Data { bytes, .. }) if bytes.len() > MAX_RECORD_BYTES => {
                    ReadResult::Unreadable {
                        version: e.version(),
                        reason: format!("record of {} bytes exceeds the 64 KiB limit", bytes.len()),
                    }
                }
                Some(
                    e @ Entry::Data {
                        bytes, modified, ..
                    },
                ) => ReadResult::Present(Record {
                    bytes: bytes.clone(),
                    version: e.version(),
                    modified: Some(*modified),
                }),
            })
        })
    }

    fn create(&self, key: &str, bytes: &[u8]) -> Result<Version, StoreError> {
        validate_key(key)?;
        Self::check_lease_size(key, bytes)?;
        self.op(|records| {
            if let Some(e) = records.get(key) {
                return Err(StoreError::Conflict(format!(
                    "{key} exists (version {})",
                    e.version()
                )));
            }
            Ok(Self::insert(records, key, bytes))
        })
    }

    fn replace(&self, key: &str, bytes: &[u8], expected: &Version) -> Result<Version, StoreError> {
        validate_key(key)?;
        Self::check_lease_size(key, bytes)?;
        self.op(|records| {
            match records.get(key) {
                None => {
                    return Err(StoreError::Conflict(format!(
                        "{key} is absent, expected version {expected}"
                    )));
                }
                Some(e) if e.version() != *expected => {
                    return Err(StoreError::Conflict(format!(
                        "{key} is at version {}, expected {expected}",
                        e.version()
                    )));
                }
                Some(_) => {}
            }
            Ok(Self::insert(records, key, bytes))
        })
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<Version, StoreError> {
        validate_key(key)?;
        Self::check_lease_size(key, bytes)?;
        self.op(|records| Ok(Self::insert(records, key, bytes)))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        validate_prefix(prefix)?;
        self.op(|records| {
            let mut keys: Vec<String> = records
                .keys()
                .filter(|k| {
                    k.strip_prefix(prefix)
                        .is_some_and(|rest| !rest.contains('/'))
                })
                .cloned()
                .collect();
            keys.sort();
            Ok(keys)
        })
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        if key == LEASE_KEY {
            return Err(StoreError::InvalidKey(format!(
                "{key}: the lease cannot be deleted (its lock file provides mutual exclusion)"
            )));
        }
        self.op(|records| {
            records.remove(key);
            Ok(())
        })
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_failures_count_down() {
        let s = MemoryStore::new();
        s.fail_next(2, StoreError::Unavailable("boom".into()));
        assert!(s.put("a", b"1").is_err());
        assert!(s.read("a").is_err());
        assert!(s.put("a", b"1").is_ok());
        assert!(matches!(s.read("a").unwrap(), ReadResult::Present(_)));
    }

    #[test]
    fn fail_after_apply_lands_the_write() {
        let s = MemoryStore::new();
        s.fail_next_after_apply(1, StoreError::Timeout(Duration::from_secs(1)));
        assert_eq!(
            s.put("a", b"1"),
            Err(StoreError::Timeout(Duration::from_secs(1)))
        );
        match s.read("a").unwrap() {
            ReadResult::Present(r) => assert_eq!(r.bytes, b"1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unavailable_until_cleared() {
        let s = MemoryStore::new();
        s.set_unavailable(Some("down".into()));
        assert_eq!(s.list(""), Err(StoreError::Unavailable("down".into())));
        s.set_unavailable(None);
        assert_eq!(s.list(""), Ok(vec![]));
    }

    #[test]
    fn corrupt_is_unreadable_and_replaceable_by_its_version() {
        let s = MemoryStore::new();
        s.put(LEASE_KEY, b"x").unwrap();
        s.corrupt(LEASE_KEY, "bad checksum");
        let ReadResult::Unreadable { version, reason } = s.read(LEASE_KEY).unwrap() else {
            panic!("expected unreadable");
        };
        assert_eq!(reason, "bad checksum");
        assert!(matches!(
            s.create(LEASE_KEY, b"y"),
            Err(StoreError::Conflict(_))
        ));
        s.replace(LEASE_KEY, b"y", &version).unwrap();
    }

    #[test]
    fn set_delay_zero_releases_a_sleeping_operation() {
        let s = MemoryStore::new();
        s.set_delay(Duration::from_secs(600));
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.put("a", b"1"));
        // Whether or not the thread is already sleeping, clearing the delay lets it finish.
        std::thread::sleep(Duration::from_millis(20));
        s.set_delay(Duration::ZERO);
        assert!(t.join().unwrap().is_ok());
    }

    #[test]
    fn lease_size_is_limited_like_the_directory_slot() {
        let s = MemoryStore::new();
        let err = s
            .create(LEASE_KEY, &vec![0; LEASE_PAYLOAD_MAX + 1])
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Unavailable(m) if m.contains("exceeds the 4064-byte slot"))
        );
        s.create(LEASE_KEY, &vec![0; LEASE_PAYLOAD_MAX]).unwrap();
    }
}
