//! The shared Store conformance suite, run against every backend in this crate.

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use tenure_persistence::{DirOptions, DirStore};
use tenure_store::Store;
use tenure_testkit::MemoryStore;
use tenure_testkit::conformance;

#[test]
fn memory_store_conforms() {
    conformance::run_all(&|| Arc::new(MemoryStore::new()) as Arc<dyn Store>);
}

#[test]
fn dir_store_conforms() {
    // Every call gets a fresh directory; the TempDirs live until the end of the test.
    let dirs = Mutex::new(Vec::new());
    conformance::run_all_with_handles(&|n| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
        // One DirStore per handle: flock is per open file description, so independent opens
        // exclude each other as separate processes would.
        let handles = (0..n)
            .map(|_| {
                Arc::new(DirStore::open(&root, DirOptions::default()).unwrap()) as Arc<dyn Store>
            })
            .collect();
        dirs.lock().unwrap().push(dir);
        handles
    });
}

#[test]
fn dir_store_conforms_with_one_shared_handle() {
    // Threads sharing one DirStore must exclude each other too (flock alone would not).
    let dirs = Mutex::new(Vec::new());
    conformance::run_all(&|| {
        let dir = tempfile::tempdir().unwrap();
        let s =
            Arc::new(DirStore::open(dir.path(), DirOptions::default()).unwrap()) as Arc<dyn Store>;
        dirs.lock().unwrap().push(dir);
        s
    });
}
