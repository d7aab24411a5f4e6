//! The start-up probe against the in-memory store: a conforming store passes and is left
//! clean, one ignoring conditions is refused with the reason, an unreachable one says so.

use std::sync::Arc;
use tenure_persistence::{probe_conditional_writes, probe_create_race, probe_key};
use tenure_store::{ReadResult, Store, StoreError, Version, validate_key};
use tenure_testkit::MemoryStore;

#[test]
fn a_conforming_store_passes_and_is_left_clean() {
    let s = MemoryStore::new();
    probe_conditional_writes(&s).unwrap();
    assert_eq!(s.list("probe/").unwrap(), Vec::<String>::new());
    let handles: Vec<Arc<dyn Store>> = (0..16)
        .map(|_| Arc::new(s.clone()) as Arc<dyn Store>)
        .collect();
    assert_eq!(probe_create_race(&handles).unwrap(), 16);
    assert_eq!(s.list("probe/").unwrap(), Vec::<String>::new());
}

#[test]
fn probe_keys_differ() {
    assert_ne!(probe_key(), probe_key());
    assert!(validate_key(&probe_key()).is_ok());
}

/// A store that accepts every write, as a server ignoring precondition headers does.
struct Careless(MemoryStore);
impl Store for Careless {
    fn read(&self, key: &str) -> Result<ReadResult, StoreError> {
        self.0.read(key)
    }
    fn create(&self, key: &str, bytes: &[u8]) -> Result<Version, StoreError> {
        self.0.put(key, bytes)
    }
    fn replace(&self, key: &str, bytes: &[u8], _: &Version) -> Result<Version, StoreError> {
        self.0.put(key, bytes)
    }
    fn put(&self, key: &str, bytes: &[u8]) -> Result<Version, StoreError> {
        self.0.put(key, bytes)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.0.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.0.delete(key)
    }
    fn describe(&self) -> String {
        "careless".into()
    }
}

#[test]
fn a_store_ignoring_conditions_is_refused_with_the_reason() {
    let s = Careless(MemoryStore::new());
    let e = probe_conditional_writes(&s).unwrap_err().to_string();
    assert!(e.contains("If-None-Match ignored"), "{e}");
    assert!(e.contains("does not enforce conditional writes"), "{e}");
    assert_eq!(s.list("probe/").unwrap(), Vec::<String>::new());
    let handles: Vec<Arc<dyn Store>> = (0..8)
        .map(|_| Arc::new(Careless(s.0.clone())) as Arc<dyn Store>)
        .collect();
    let e = probe_create_race(&handles).unwrap_err().to_string();
    assert!(e.contains("8 won"), "{e}");
}

#[test]
fn an_unreachable_store_is_reported_as_such() {
    let s = MemoryStore::new();
    s.set_unavailable(Some("EIO".into()));
    let e = probe_conditional_writes(&s).unwrap_err().to_string();
    assert!(e.contains("could not create") && e.contains("EIO"), "{e}");
}
