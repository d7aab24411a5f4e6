//! One conformance suite for [`Store`], run by every backend's tests. Each check panics with a
//! message naming the backend and what went wrong.
//!
//! [`run_all`] gives every check a fresh store from `make`. Races use several handles on one
//! store: [`run_all_with_handles`] lets a backend supply handles opened independently (as
//! separate processes would), which is what makes the directory backend's race meaningful.

use std::sync::{Arc, Barrier};
use tenure_store::{LEASE_KEY, MAX_RECORD_BYTES, ReadResult, Store, StoreError, Version};

/// Threads in each race.
pub const RACE_THREADS: usize = 16;
/// Rounds of the lease replace race.
pub const RACE_ROUNDS: usize = 5;

/// Run every check; `make` returns a fresh, empty store each time. Races share one handle
/// among all threads.
pub fn run_all(make: &dyn Fn() -> Arc<dyn Store>) {
    run_all_with_handles(&|n| {
        let s = make();
        vec![s; n]
    });
}

/// What a backend guarantees beyond the contract every backend shares.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// Rewriting identical bytes gives a new version (directory and in-memory stores). False
    /// where the version is a hash of the content: an S3 ETag is the MD5 of the body, so an
    /// identical rewrite keeps the version and a conditional write on the old version still
    /// passes. The election never writes the same bytes twice (records carry a sequence number
    /// and the instance id), which is what makes such a store safe.
    pub identical_bytes_new_version: bool,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            identical_bytes_new_version: true,
        }
    }
}

/// Run every check; `make(n)` returns `n` handles on one fresh, empty store (ideally each
/// opened on its own, as by separate processes).
pub fn run_all_with_handles(make: &dyn Fn(usize) -> Vec<Arc<dyn Store>>) {
    run_all_with_caps(Caps::default(), make);
}

/// [`run_all_with_handles`] for a backend with the given [`Caps`].
pub fn run_all_with_caps(caps: Caps, make: &dyn Fn(usize) -> Vec<Arc<dyn Store>>) {
    let one = || make(1).remove(0);
    read_absent(&*one());
    create_then_read(&*one());
    create_existing_conflicts(&*one());
    replace_current(&*one());
    replace_stale_conflicts(&*one());
    replace_absent_conflicts(&*one());
    put_then_read(&*one());
    put_overwrites(&*one());
    list_sorted(&*one());
    read_many_in_order(&*one());
    delete_idempotent(&*one());
    invalid_keys_refused(&*one());
    lease_lifecycle(&*one());
    if caps.identical_bytes_new_version {
        lease_identical_bytes_new_version(&*one());
    } else {
        lease_identical_bytes_keep_content_version(&*one());
    }
    lease_put_and_delete_refused(&*one(), caps);
    oversized_unreadable(&*one());
    race_replace_lease(&make(RACE_THREADS), RACE_ROUNDS);
    race_create(&make(RACE_THREADS), "epochs/1.json");
    race_create(&make(RACE_THREADS), LEASE_KEY);
}

fn who(s: &dyn Store) -> String {
    s.describe()
}

/// Read `key` and require a present record with these bytes; returns its version.
pub fn expect_present(s: &dyn Store, key: &str, bytes: &[u8]) -> Version {
    match s.read(key) {
        Ok(ReadResult::Present(r)) => {
            assert_eq!(
                r.bytes,
                bytes,
                "{}: {key} read back different bytes ({:?} instead of {:?})",
                who(s),
                String::from_utf8_lossy(&r.bytes),
                String::from_utf8_lossy(bytes)
            );
            r.version
        }
        other => panic!("{}: expected {key} present, got {other:?}", who(s)),
    }
}

fn expect_conflict<T: std::fmt::Debug>(s: &dyn Store, what: &str, r: Result<T, StoreError>) {
    match r {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{}: {what}: expected Conflict, got {other:?}", who(s)),
    }
}

fn ok<T>(s: &dyn Store, what: &str, r: Result<T, StoreError>) -> T {
    r.unwrap_or_else(|e| panic!("{}: {what} failed: {e}", who(s)))
}

pub fn read_absent(s: &dyn Store) {
    for key in ["nodes/a.json", "epochs/1.json", "cluster.json", LEASE_KEY] {
        match s.read(key) {
            Ok(ReadResult::Absent) => {}
            other => panic!(
                "{}: reading absent {key}: expected Absent, got {other:?}",
                who(s)
            ),
        }
    }
}

pub fn create_then_read(s: &dyn Store) {
    let v = ok(
        s,
        "create nodes/a.json",
        s.create("nodes/a.json", b"{\"a\":1}"),
    );
    let read = expect_present(s, "nodes/a.json", b"{\"a\":1}");
    assert_eq!(
        read,
        v,
        "{}: version read differs from the one create returned",
        who(s)
    );
    // An empty record is a record.
    ok(s, "create empty", s.create("cluster.json", b""));
    expect_present(s, "cluster.json", b"");
}

pub fn create_existing_conflicts(s: &dyn Store) {
    ok(s, "create", s.create("epochs/3.json", b"first"));
    expect_conflict(
        s,
        "create over an existing key",
        s.create("epochs/3.json", b"second"),
    );
    expect_present(s, "epochs/3.json", b"first");
}

pub fn replace_current(s: &dyn Store) {
    let v1 = ok(s, "create", s.create("cluster.json", b"one"));
    let v2 = ok(
        s,
        "replace with the current version",
        s.replace("cluster.json", b"two", &v1),
    );
    assert_ne!(v1, v2, "{}: replace returned the old version", who(s));
    let read = expect_present(s, "cluster.json", b"two");
    assert_eq!(
        read,
        v2,
        "{}: version read differs from the one replace returned",
        who(s)
    );
    let v3 = ok(
        s,
        "second replace",
        s.replace("cluster.json", b"three", &v2),
    );
    assert_ne!(v3, v2);
    expect_present(s, "cluster.json", b"three");
}

pub fn replace_stale_conflicts(s: &dyn Store) {
    let v1 = ok(s, "create", s.create("nodes/b.json", b"one"));
    let v2 = ok(s, "replace", s.replace("nodes/b.json", b"two", &v1));
    expect_conflict(
        s,
        "replace with a stale version",
        s.replace("nodes/b.json", b"three", &v1),
    );
    let read = expect_present(s, "nodes/b.json", b"two");
    assert_eq!(read, v2);
    expect_conflict(
        s,
        "replace with a made-up version",
        s.replace("nodes/b.json", b"four", &Version("bogus".into())),
    );
}

pub fn replace_absent_conflicts(s: &dyn Store) {
    expect_conflict(
        s,
        "replace of an absent key",
        s.replace(
            "nodes/none.json",
            b"x",
            &Version("h0000000000000000".into()),
        ),
    );
    expect_conflict(
        s,
        "replace of an absent lease",
        s.replace(LEASE_KEY, b"x", &Version("g1-0000000000000000".into())),
    );
    match s.read("nodes/none.json") {
        Ok(ReadResult::Absent) => {}
        other => panic!("{}: a failed replace created the key: {other:?}", who(s)),
    }
}

pub fn put_then_read(s: &dyn Store) {
    let v = ok(s, "put", s.put("nodes/c.json", b"hello"));
    let read = expect_present(s, "nodes/c.json", b"hello");
    assert_eq!(
        read,
        v,
        "{}: version read differs from the one put returned",
        who(s)
    );
}

pub fn put_overwrites(s: &dyn Store) {
    let v1 = ok(s, "put", s.put("nodes/d.json", b"first"));
    let v2 = ok(s, "second put", s.put("nodes/d.json", b"second, longer"));
    assert_ne!(v1, v2);
    expect_present(s, "nodes/d.json", b"second, longer");
    // Shorter bytes leave nothing of the old record behind.
    ok(s, "third put", s.put("nodes/d.json", b"3"));
    expect_present(s, "nodes/d.json", b"3");
    // A put's version is good for a replace.
    let v = ok(s, "put", s.put("nodes/d.json", b"4"));
    ok(s, "replace after put", s.replace("nodes/d.json", b"5", &v));
}

pub fn list_sorted(s: &dyn Store) {
    assert_eq!(ok(s, "list empty", s.list("nodes/")), Vec::<String>::new());
    for name in ["c", "a", "b"] {
        ok(
            s,
            "put",
            s.put(&format!("nodes/{name}.json"), name.as_bytes()),
        );
    }
    // Conditional writes must leave no temporary or lock files that list would show.
    let v = ok(s, "create", s.create("nodes/e.json", b"e"));
    ok(s, "replace", s.replace("nodes/e.json", b"e2", &v));
    expect_conflict(s, "create", s.create("nodes/e.json", b"e3"));
    ok(s, "create epoch", s.create("epochs/1.json", b"{}"));
    ok(s, "create cluster", s.create("cluster.json", b"{}"));
    assert_eq!(
        ok(s, "list nodes/", s.list("nodes/")),
        vec![
            "nodes/a.json",
            "nodes/b.json",
            "nodes/c.json",
            "nodes/e.json"
        ],
        "{}: list(\"nodes/\")",
        who(s)
    );
    assert_eq!(
        ok(s, "list epochs/", s.list("epochs/")),
        vec!["epochs/1.json"]
    );
    assert_eq!(
        ok(s, "list", s.list("")),
        vec!["cluster.json"],
        "{}: list(\"\")",
        who(s)
    );
    ok(s, "create lease", s.create(LEASE_KEY, b"lease"));
    assert_eq!(
        ok(s, "list", s.list("")),
        vec!["cluster.json", LEASE_KEY],
        "{}: list(\"\")",
        who(s)
    );
    assert_eq!(ok(s, "list other", s.list("other/")), Vec::<String>::new());
    for bad in ["nodes", "/", "../", "nodes/x/", ".hidden/"] {
        match s.list(bad) {
            Err(StoreError::InvalidKey(_)) => {}
            other => panic!(
                "{}: list({bad:?}): expected InvalidKey, got {other:?}",
                who(s)
            ),
        }
    }
}

/// `read_many` answers each key in the order asked, absent and invalid keys included, with
/// the same result `read` gives (an object store reads them concurrently).
pub fn read_many_in_order(s: &dyn Store) {
    assert!(
        s.read_many(&[]).is_empty(),
        "{}: read_many of nothing",
        who(s)
    );
    let mut keys = Vec::new();
    for i in 0..40 {
        let key = format!("nodes/n{i:02}.json");
        if i % 3 != 0 {
            ok(s, "put", s.put(&key, key.as_bytes()));
        }
        keys.push(key);
    }
    keys.push("../escape".to_string());
    let many = s.read_many(&keys);
    assert_eq!(many.len(), keys.len(), "{}: one result per key", who(s));
    for (i, (key, got)) in keys.iter().zip(many).enumerate() {
        match got {
            Ok(ReadResult::Present(r)) => {
                assert!(
                    i % 3 != 0,
                    "{}: {key} read_many found an absent key",
                    who(s)
                );
                assert_eq!(r.bytes, key.as_bytes(), "{}: {key} read_many bytes", who(s));
                assert_eq!(
                    s.read(key).ok(),
                    Some(ReadResult::Present(r)),
                    "{}: {key} read_many and read differ",
                    who(s)
                );
            }
            Ok(ReadResult::Absent) => assert!(i % 3 == 0 && i < 40, "{}: {key} absent", who(s)),
            Ok(other) => panic!("{}: {key} read_many gave {other:?}", who(s)),
            Err(StoreError::InvalidKey(_)) => assert_eq!(i, 40, "{}: {key} invalid", who(s)),
            Err(e) => panic!("{}: {key} read_many failed: {e}", who(s)),
        }
    }
}

pub fn delete_idempotent(s: &dyn Store) {
    ok(s, "delete absent", s.delete("nodes/gone.json"));
    ok(s, "put", s.put("nodes/gone.json", b"x"));
    ok(s, "delete", s.delete("nodes/gone.json"));
    match s.read("nodes/gone.json") {
        Ok(ReadResult::Absent) => {}
        other => panic!(
            "{}: read after delete: expected Absent, got {other:?}",
            who(s)
        ),
    }
    ok(s, "delete again", s.delete("nodes/gone.json"));
    assert_eq!(ok(s, "list", s.list("nodes/")), Vec::<String>::new());
    // Create works again after a delete.
    ok(s, "create after delete", s.create("nodes/gone.json", b"y"));
}

pub fn invalid_keys_refused(s: &dyn Store) {
    for bad in [
        "",
        "/abs",
        "../x",
        "nodes/../x",
        ".hidden",
        "nodes/.x",
        "a/b/c",
        "sp ace",
        "nodes/",
    ] {
        match s.read(bad) {
            Err(StoreError::InvalidKey(_)) => {}
            other => panic!(
                "{}: read({bad:?}): expected InvalidKey, got {other:?}",
                who(s)
            ),
        }
        match s.put(bad, b"x") {
            Err(StoreError::InvalidKey(_)) => {}
            other => panic!(
                "{}: put({bad:?}): expected InvalidKey, got {other:?}",
                who(s)
            ),
        }
    }
}

pub fn lease_lifecycle(s: &dyn Store) {
    let v1 = ok(s, "create lease", s.create(LEASE_KEY, b"{\"epoch\":1}"));
    assert_eq!(expect_present(s, LEASE_KEY, b"{\"epoch\":1}"), v1);
    expect_conflict(
        s,
        "create over the lease",
        s.create(LEASE_KEY, b"{\"epoch\":9}"),
    );
    let v2 = ok(
        s,
        "replace lease",
        s.replace(LEASE_KEY, b"{\"epoch\":1,\"seq\":2}", &v1),
    );
    assert_ne!(v1, v2);
    assert_eq!(expect_present(s, LEASE_KEY, b"{\"epoch\":1,\"seq\":2}"), v2);
    expect_conflict(
        s,
        "replace lease with a stale version",
        s.replace(LEASE_KEY, b"x", &v1),
    );
    // Many renewals in a row, alternating sizes.
    let mut v = v2;
    for i in 0..20 {
        let body = format!("{{\"epoch\":1,\"seq\":{i}{}}}", " ".repeat(i * 7));
        v = ok(s, "renew", s.replace(LEASE_KEY, body.as_bytes(), &v));
        assert_eq!(expect_present(s, LEASE_KEY, body.as_bytes()), v);
    }
}

pub fn lease_identical_bytes_new_version(s: &dyn Store) {
    let v1 = ok(s, "create lease", s.create(LEASE_KEY, b"same"));
    let v2 = ok(
        s,
        "replace with identical bytes",
        s.replace(LEASE_KEY, b"same", &v1),
    );
    assert_ne!(
        v1,
        v2,
        "{}: rewriting identical bytes kept the version (ABA)",
        who(s)
    );
    expect_conflict(
        s,
        "replace on the pre-rewrite version",
        s.replace(LEASE_KEY, b"same", &v1),
    );
    let v3 = ok(s, "replace again", s.replace(LEASE_KEY, b"same", &v2));
    assert_ne!(v3, v1);
    assert_ne!(v3, v2);
    assert_eq!(expect_present(s, LEASE_KEY, b"same"), v3);
}

/// For a store whose versions are content hashes (see [`Caps`]): an identical rewrite keeps
/// the version, and a write with other bytes gets a new one that the old version no longer
/// matches.
pub fn lease_identical_bytes_keep_content_version(s: &dyn Store) {
    let v1 = ok(s, "create lease", s.create(LEASE_KEY, b"same"));
    let v2 = ok(
        s,
        "replace with identical bytes",
        s.replace(LEASE_KEY, b"same", &v1),
    );
    assert_eq!(
        v1,
        v2,
        "{}: rewriting identical bytes changed the version: this store's versions are not content hashes, \
         run it with Caps::identical_bytes_new_version = true",
        who(s)
    );
    let v3 = ok(
        s,
        "replace with other bytes",
        s.replace(LEASE_KEY, b"other", &v2),
    );
    assert_ne!(v3, v2, "{}: different bytes kept the version", who(s));
    expect_conflict(
        s,
        "replace on the version before the change",
        s.replace(LEASE_KEY, b"third", &v1),
    );
    assert_eq!(expect_present(s, LEASE_KEY, b"other"), v3);
}

pub fn lease_put_and_delete_refused(s: &dyn Store, caps: Caps) {
    let v1 = ok(s, "put lease", s.put(LEASE_KEY, b"p1"));
    assert_eq!(expect_present(s, LEASE_KEY, b"p1"), v1);
    let again: &[u8] = if caps.identical_bytes_new_version {
        b"p1"
    } else {
        b"p2"
    };
    let v2 = ok(s, "put lease again", s.put(LEASE_KEY, again));
    assert_ne!(v1, v2);
    match s.delete(LEASE_KEY) {
        Err(StoreError::InvalidKey(_)) => {}
        other => panic!(
            "{}: delete of the lease: expected InvalidKey, got {other:?}",
            who(s)
        ),
    }
    expect_present(s, LEASE_KEY, again);
}

pub fn oversized_unreadable(s: &dyn Store) {
    let at_limit = vec![b'a'; MAX_RECORD_BYTES];
    ok(s, "put at the limit", s.put("nodes/max.json", &at_limit));
    expect_present(s, "nodes/max.json", &at_limit);
    let big = vec![b'b'; MAX_RECORD_BYTES + 1];
    ok(s, "put oversized", s.put("nodes/big.json", &big));
    let v1 = match s.read("nodes/big.json") {
        Ok(ReadResult::Unreadable { version, reason }) => {
            assert!(!reason.is_empty());
            version
        }
        other => panic!(
            "{}: oversized record: expected Unreadable, got {other:?}",
            who(s)
        ),
    };
    // Its version is stable while it is unchanged and usable for a replace.
    match s.read("nodes/big.json") {
        Ok(ReadResult::Unreadable { version, .. }) => assert_eq!(version, v1),
        other => panic!("{}: second read of the oversized record: {other:?}", who(s)),
    }
    let mut other = vec![b'c'; MAX_RECORD_BYTES + 100];
    other[0] = b'd';
    ok(s, "put another oversized", s.put("nodes/big.json", &other));
    let v2 = match s.read("nodes/big.json") {
        Ok(ReadResult::Unreadable { version, .. }) => version,
        other => panic!(
            "{}: oversized record: expected Unreadable, got {other:?}",
            who(s)
        ),
    };
    assert_ne!(
        v1,
        v2,
        "{}: a different oversized record kept the version",
        who(s)
    );
    ok(
        s,
        "replace the oversized record",
        s.replace("nodes/big.json", b"small", &v2),
    );
    expect_present(s, "nodes/big.json", b"small");
}

/// `RACE_THREADS` threads (one per handle, all on one store) replace the lease on the same
/// version: exactly one wins each round.
pub fn race_replace_lease(handles: &[Arc<dyn Store>], rounds: usize) {
    let s0 = &*handles[0];
    let mut version = ok(s0, "create lease", s0.create(LEASE_KEY, b"round 0"));
    for round in 1..=rounds {
        let barrier = Arc::new(Barrier::new(handles.len()));
        let threads: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let (h, barrier, version) = (h.clone(), barrier.clone(), version.clone());
                std::thread::spawn(move || {
                    let body = format!("round {round} thread {i}");
                    barrier.wait();
                    (
                        body.clone(),
                        h.replace(LEASE_KEY, body.as_bytes(), &version),
                    )
                })
            })
            .collect();
        let results: Vec<_> = threads
            .into_iter()
            .map(|t| t.join().expect("race thread panicked"))
            .collect();
        let mut winners = Vec::new();
        for (body, r) in results {
            match r {
                Ok(v) => winners.push((body, v)),
                Err(StoreError::Conflict(_)) => {}
                Err(e) => panic!("{}: race round {round}: unexpected error {e}", who(s0)),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "{}: race round {round}: expected exactly one winner of {}, got {}",
            who(s0),
            handles.len(),
            winners.len()
        );
        let (body, v) = winners.remove(0);
        assert_eq!(expect_present(s0, LEASE_KEY, body.as_bytes()), v);
        version = v;
    }
}

/// `RACE_THREADS` threads create `key` at once: exactly one wins.
pub fn race_create(handles: &[Arc<dyn Store>], key: &str) {
    let s0 = &*handles[0];
    let barrier = Arc::new(Barrier::new(handles.len()));
    let threads: Vec<_> = handles
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let (h, barrier, key) = (h.clone(), barrier.clone(), key.to_string());
            std::thread::spawn(move || {
                let body = format!("creator {i}");
                barrier.wait();
                (body.clone(), h.create(&key, body.as_bytes()))
            })
        })
        .collect();
    let results: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("race thread panicked"))
        .collect();
    let mut winners = Vec::new();
    for (body, r) in results {
        match r {
            Ok(v) => winners.push((body, v)),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("{}: create race on {key}: unexpected error {e}", who(s0)),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "{}: create race on {key}: expected exactly one winner of {}, got {}",
        who(s0),
        handles.len(),
        winners.len()
    );
    let (body, v) = winners.remove(0);
    assert_eq!(expect_present(s0, key, body.as_bytes()), v);
}
