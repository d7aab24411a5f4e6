//! Directory-backend specifics: the lease slots under corruption, bad files in the store,
//! permissions, symbolic links, lock timeouts.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, Instant};
use tenure_persistence::{DirOptions, DirStore, LEASE_PAYLOAD_MAX, LEASE_SLOT_BYTES};
use tenure_store::{LEASE_KEY, MAX_RECORD_BYTES, ReadResult, Store, StoreError, Version};

/// Opens `root`, creating it first (mode 0700) as an operator would: the store never creates
/// its own root.
fn open(root: &Path) -> DirStore {
    mkdir_private(root);
    DirStore::open(root, DirOptions::default()).unwrap()
}

fn mkdir_private(root: &Path) {
    if !root.exists() {
        fs::DirBuilder::new().recursive(true).create(root).unwrap();
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).unwrap();
    }
}

fn fresh() -> (tempfile::TempDir, DirStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("store"));
    (dir, s)
}

fn present(s: &DirStore, key: &str) -> (Vec<u8>, Version) {
    match s.read(key).unwrap() {
        ReadResult::Present(r) => (r.bytes, r.version),
        other => panic!("expected {key} present, got {other:?}"),
    }
}

fn unreadable(s: &DirStore, key: &str) -> (Version, String) {
    match s.read(key).unwrap() {
        ReadResult::Unreadable { version, reason } => (version, reason),
        other => panic!("expected {key} unreadable, got {other:?}"),
    }
}

fn flip(path: &Path, offset: u64) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    use std::io::Read;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

// --- lease slots ---------------------------------------------------------------------------

#[test]
fn lease_slots_alternate_and_the_file_stays_two_slots() {
    let (_d, s) = fresh();
    let lock = s.root().join("lease.lock");
    assert_eq!(fs::metadata(&lock).unwrap().len(), 0);
    assert_eq!(s.read(LEASE_KEY).unwrap(), ReadResult::Absent);
    let v1 = s.create(LEASE_KEY, b"one").unwrap();
    assert!(v1.0.starts_with("g1-"), "{v1}");
    assert_eq!(fs::metadata(&lock).unwrap().len(), LEASE_SLOT_BYTES as u64);
    let v2 = s.replace(LEASE_KEY, b"two", &v1).unwrap();
    assert!(v2.0.starts_with("g2-"), "{v2}");
    assert_eq!(
        fs::metadata(&lock).unwrap().len(),
        2 * LEASE_SLOT_BYTES as u64
    );
    let raw = fs::read(&lock).unwrap();
    assert_eq!(&raw[..8], b"TNRLEAS1");
    assert_eq!(&raw[LEASE_SLOT_BYTES..LEASE_SLOT_BYTES + 8], b"TNRLEAS1");
    assert_eq!(&raw[32..35], b"one");
    assert_eq!(&raw[LEASE_SLOT_BYTES + 32..LEASE_SLOT_BYTES + 35], b"two");
    // The third write goes back to slot 0, keeping slot 1 (the current record).
    s.replace(LEASE_KEY, b"three", &v2).unwrap();
    let raw = fs::read(&lock).unwrap();
    assert_eq!(&raw[32..37], b"three");
    assert_eq!(&raw[LEASE_SLOT_BYTES + 32..LEASE_SLOT_BYTES + 35], b"two");
    assert_eq!(
        fs::metadata(&lock).unwrap().len(),
        2 * LEASE_SLOT_BYTES as u64
    );
    // The lease's modified time is the file's.
    match s.read(LEASE_KEY).unwrap() {
        ReadResult::Present(r) => assert!(r.modified.is_some()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn corrupt_newer_slot_falls_back_to_the_older_one() {
    let (_d, s) = fresh();
    let lock = s.root().join("lease.lock");
    let v1 = s.create(LEASE_KEY, b"older").unwrap();
    let v2 = s.replace(LEASE_KEY, b"newer", &v1).unwrap();
    // A torn write of slot 1: a payload byte, then the checksum too.
    flip(&lock, LEASE_SLOT_BYTES as u64 + 33);
    assert_eq!(present(&s, LEASE_KEY), (b"older".to_vec(), v1.clone()));
    flip(&lock, LEASE_SLOT_BYTES as u64 + 24);
    assert_eq!(present(&s, LEASE_KEY), (b"older".to_vec(), v1.clone()));
    // The newer version is gone: replacing on it conflicts; on the older one it works.
    assert!(matches!(
        s.replace(LEASE_KEY, b"x", &v2),
        Err(StoreError::Conflict(_))
    ));
    let v3 = s.replace(LEASE_KEY, b"after repair", &v1).unwrap();
    // Numbered past the corrupt slot's generation, so no version can come back.
    assert!(v3.0.starts_with("g3-"), "{v3}");
    assert_ne!(v3, v2);
    assert_eq!(
        present(&s, LEASE_KEY),
        (b"after repair".to_vec(), v3.clone())
    );
    // The older record (slot 0) was kept: the write went into the corrupt slot.
    let raw = fs::read(&lock).unwrap();
    assert_eq!(&raw[32..37], b"older");
}

#[test]
fn corrupt_generation_field_is_not_followed() {
    let (_d, s) = fresh();
    let lock = s.root().join("lease.lock");
    let v1 = s.create(LEASE_KEY, b"a").unwrap();
    s.replace(LEASE_KEY, b"b", &v1).unwrap();
    // A huge generation in slot 1 without a matching checksum must not win.
    let mut f = OpenOptions::new().write(true).open(&lock).unwrap();
    f.seek(SeekFrom::Start(LEASE_SLOT_BYTES as u64 + 8))
        .unwrap();
    f.write_all(&u64::MAX.to_le_bytes()).unwrap();
    drop(f);
    assert_eq!(present(&s, LEASE_KEY), (b"a".to_vec(), v1.clone()));
    // Still writable.
    let v = s.replace(LEASE_KEY, b"c", &v1).unwrap();
    assert_eq!(present(&s, LEASE_KEY), (b"c".to_vec(), v));
}

#[test]
fn both_slots_corrupt_is_unreadable_with_a_stable_replaceable_version() {
    let (_d, s) = fresh();
    let lock = s.root().join("lease.lock");
    let v1 = s.create(LEASE_KEY, b"first").unwrap();
    s.replace(LEASE_KEY, b"second", &v1).unwrap();
    flip(&lock, 33);
    flip(&lock, LEASE_SLOT_BYTES as u64 + 33);
    let (x1, reason) = unreadable(&s, LEASE_KEY);
    assert!(x1.0.starts_with('x'), "{x1}");
    assert!(reason.contains("bad checksum"), "{reason}");
    assert!(reason.contains("lease.lock"), "{reason}");
    let (x2, _) = unreadable(&s, LEASE_KEY);
    assert_eq!(
        x1, x2,
        "the version of unchanged corrupt bytes must be stable"
    );
    // Another handle sees the same version.
    let other = open(s.root());
    assert_eq!(unreadable(&other, LEASE_KEY).0, x1);
    // It exists: create conflicts; a wrong version conflicts.
    assert!(matches!(
        s.create(LEASE_KEY, b"x"),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.replace(LEASE_KEY, b"x", &v1),
        Err(StoreError::Conflict(_))
    ));
    // Replacing with exactly the unreadable version works.
    let v = s.replace(LEASE_KEY, b"repaired", &x1).unwrap();
    assert!(v.0.starts_with("g3-"), "{v}");
    assert_eq!(present(&s, LEASE_KEY), (b"repaired".to_vec(), v));
}

#[test]
fn unreadable_version_changes_when_the_bytes_change() {
    let (_d, s) = fresh();
    let lock = s.root().join("lease.lock");
    fs::write(&lock, b"not a lease at all").unwrap();
    let (x1, _) = unreadable(&s, LEASE_KEY);
    fs::write(&lock, b"not a lease either").unwrap();
    let (x2, _) = unreadable(&s, LEASE_KEY);
    assert_ne!(x1, x2);
}

#[test]
fn all_zero_lease_file_is_absent_and_short_files_are_handled() {
    let (_d, s) = fresh();
    let lock = s.root().join("lease.lock");
    fs::write(&lock, vec![0u8; 3 * LEASE_SLOT_BYTES]).unwrap();
    assert_eq!(s.read(LEASE_KEY).unwrap(), ReadResult::Absent);
    s.create(LEASE_KEY, b"on zeros").unwrap();
    assert_eq!(present(&s, LEASE_KEY).0, b"on zeros");

    // Truncated in the middle of the only valid slot.
    let v1 = present(&s, LEASE_KEY).1;
    let v2 = s.replace(LEASE_KEY, b"slot one", &v1).unwrap();
    let f = OpenOptions::new().write(true).open(&lock).unwrap();
    f.set_len(LEASE_SLOT_BYTES as u64 + 20).unwrap();
    drop(f);
    // Slot 0 is intact, slot 1 is cut short: the older record.
    assert_eq!(present(&s, LEASE_KEY), (b"on zeros".to_vec(), v1));
    let f = OpenOptions::new().write(true).open(&lock).unwrap();
    f.set_len(10).unwrap();
    drop(f);
    let (x, _) = unreadable(&s, LEASE_KEY);
    assert_ne!(x, v2);
    s.replace(LEASE_KEY, b"fixed", &x).unwrap();
    assert_eq!(present(&s, LEASE_KEY).0, b"fixed");
}

#[test]
fn lease_size_limit_and_refusals() {
    let (_d, s) = fresh();
    let err = s
        .create(LEASE_KEY, &vec![b'x'; LEASE_PAYLOAD_MAX + 1])
        .unwrap_err();
    match err {
        StoreError::Unavailable(m) => {
            assert_eq!(
                m,
                format!(
                    "lease record of {} bytes exceeds the 4064-byte slot",
                    LEASE_PAYLOAD_MAX + 1
                )
            )
        }
        other => panic!("{other:?}"),
    }
    let v = s.create(LEASE_KEY, &vec![b'x'; LEASE_PAYLOAD_MAX]).unwrap();
    assert_eq!(present(&s, LEASE_KEY), (vec![b'x'; LEASE_PAYLOAD_MAX], v));
    assert!(matches!(
        s.delete(LEASE_KEY),
        Err(StoreError::InvalidKey(_))
    ));
    // The lock file itself is not a key: writing it as a record would replace the lock.
    assert!(matches!(
        s.put("lease.lock", b"x"),
        Err(StoreError::InvalidKey(_))
    ));
    assert!(matches!(
        s.read("lease.lock"),
        Err(StoreError::InvalidKey(_))
    ));
    assert!(s.root().join("lease.lock").exists());
}

#[test]
fn a_replaced_lease_file_is_reopened() {
    let (_d, s) = fresh();
    let v1 = s.create(LEASE_KEY, b"old file").unwrap();
    // Someone builds a new lease.lock holding another record and renames it into place.
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(other_dir.path());
    other.create(LEASE_KEY, b"new file").unwrap();
    let staged = s.root().join("staged");
    fs::copy(other_dir.path().join("lease.lock"), &staged).unwrap();
    fs::rename(&staged, s.root().join("lease.lock")).unwrap();
    let (bytes, v2) = present(&s, LEASE_KEY);
    assert_eq!(bytes, b"new file");
    assert!(matches!(
        s.replace(LEASE_KEY, b"x", &v1),
        Err(StoreError::Conflict(_))
    ));
    s.replace(LEASE_KEY, b"on the new file", &v2).unwrap();
    // And if it is deleted, it reads as absent, and the next write recreates it rather than
    // writing through a dead inode.
    fs::remove_file(s.root().join("lease.lock")).unwrap();
    assert_eq!(s.read(LEASE_KEY).unwrap(), ReadResult::Absent);
    s.create(LEASE_KEY, b"recreated").unwrap();
    assert!(s.root().join("lease.lock").exists());
    assert_eq!(present(&s, LEASE_KEY).0, b"recreated");
}

#[test]
fn a_held_lock_times_out_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let opts = DirOptions {
        lock_wait: Duration::from_millis(200),
        ..DirOptions::default()
    };
    let s = DirStore::open(dir.path(), opts).unwrap();
    let v = s.create(LEASE_KEY, b"x").unwrap();
    // Another "process" (open file description) holds the exclusive lock and never lets go.
    let holder = File::options()
        .read(true)
        .write(true)
        .open(dir.path().join("lease.lock"))
        .unwrap();
    holder.lock().unwrap();
    let start = Instant::now();
    let err = s.replace(LEASE_KEY, b"y", &v).unwrap_err();
    let waited = start.elapsed();
    match &err {
        StoreError::Unavailable(m) => {
            assert!(
                m.contains("lease.lock is held by another process for more than 200ms"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(
        waited >= Duration::from_millis(200),
        "gave up after {waited:?}"
    );
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    // Readers take no lock: a frozen lock holder must not stop them (nor could a frozen
    // reader stop the master's renewal).
    assert_eq!(present(&s, LEASE_KEY).0, b"x");
    // A shared holder lets readers through but not writers.
    holder.unlock().unwrap();
    holder.lock_shared().unwrap();
    assert_eq!(present(&s, LEASE_KEY).0, b"x");
    assert!(matches!(
        s.replace(LEASE_KEY, b"y", &v),
        Err(StoreError::Unavailable(_))
    ));
    holder.unlock().unwrap();
    s.replace(LEASE_KEY, b"y", &v).unwrap();
}

// --- other records -------------------------------------------------------------------------

#[test]
fn bad_files_in_nodes_never_panic() {
    let (_d, s) = fresh();
    let nodes = s.root().join("nodes");
    fs::write(nodes.join("truncated.json"), b"{\"status\":\"MAS").unwrap();
    fs::write(nodes.join("binary.json"), [0u8, 0xff, 0xfe, 0x80, 0, 1, 2]).unwrap();
    fs::write(nodes.join("empty.json"), b"").unwrap();
    let huge = File::create(nodes.join("huge.json")).unwrap();
    huge.set_len(10 * 1024 * 1024).unwrap();
    drop(huge);
    assert_eq!(present(&s, "nodes/truncated.json").0, b"{\"status\":\"MAS");
    assert_eq!(
        present(&s, "nodes/binary.json").0,
        [0u8, 0xff, 0xfe, 0x80, 0, 1, 2]
    );
    let (bytes, v) = present(&s, "nodes/empty.json");
    assert!(bytes.is_empty());
    assert!(v.0.starts_with('h'));
    let (v1, reason) = unreadable(&s, "nodes/huge.json");
    assert!(
        reason.contains("record of 10485760 bytes exceeds the 64 KiB limit"),
        "{reason}"
    );
    assert_eq!(unreadable(&s, "nodes/huge.json").0, v1);
    // Just over the limit.
    fs::write(nodes.join("over.json"), vec![b'x'; MAX_RECORD_BYTES + 1]).unwrap();
    unreadable(&s, "nodes/over.json");
    // A directory and a fifo where a record should be: unreadable, and the fifo must not hang.
    fs::create_dir(nodes.join("dir.json")).unwrap();
    unreadable(&s, "nodes/dir.json");
    let fifo = std::ffi::CString::new(nodes.join("fifo.json").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let (_, reason) = unreadable(&s, "nodes/fifo.json");
    assert!(reason.contains("not a regular file"), "{reason}");
    // Only regular, visible files are listed.
    assert_eq!(
        s.list("nodes/").unwrap(),
        vec![
            "nodes/binary.json",
            "nodes/empty.json",
            "nodes/huge.json",
            "nodes/over.json",
            "nodes/truncated.json"
        ]
    );
}

#[test]
fn list_skips_temp_lock_and_odd_files() {
    let (_d, s) = fresh();
    s.put("nodes/a.json", b"a").unwrap();
    let v = s.create("nodes/b.json", b"b").unwrap();
    s.replace("nodes/b.json", b"b2", &v).unwrap();
    let nodes = s.root().join("nodes");
    fs::write(nodes.join(".a.json.123-0-1.tmp"), b"temp").unwrap();
    fs::write(nodes.join("with space.json"), b"x").unwrap();
    // The replace left its sidecar lock (deleting it could break exclusion); it is hidden.
    assert!(nodes.join(".b.json.lock").exists());
    assert_eq!(
        s.list("nodes/").unwrap(),
        vec!["nodes/a.json", "nodes/b.json"]
    );
    // At the top: folders are not keys; lease.lock is the lease once written.
    fs::write(s.root().join("cluster.json"), b"{}").unwrap();
    assert_eq!(s.list("").unwrap(), vec!["cluster.json"]);
    s.create(LEASE_KEY, b"l").unwrap();
    assert_eq!(s.list("").unwrap(), vec!["cluster.json", LEASE_KEY]);
}

#[test]
fn permissions_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("new").join("store");
    let s = open(&root);
    fs::set_permissions(dir.path().join("new"), fs::Permissions::from_mode(0o700)).unwrap();
    s.put("nodes/a.json", b"a").unwrap();
    s.create("epochs/1.json", b"1").unwrap();
    s.create("cluster.json", b"c").unwrap();
    let v = s.create("nodes/b.json", b"b").unwrap();
    s.replace("nodes/b.json", b"b2", &v).unwrap();
    s.create(LEASE_KEY, b"l").unwrap();
    s.put("other/x.json", b"x").unwrap();
    for d in ["", "nodes", "epochs", "other"] {
        assert_eq!(mode(&root.join(d)), 0o700, "folder {d:?}");
    }
    for f in [
        "lease.lock",
        "cluster.json",
        "nodes/a.json",
        "nodes/b.json",
        "nodes/.b.json.lock",
        "epochs/1.json",
        "other/x.json",
    ] {
        assert_eq!(mode(&root.join(f)), 0o600, "file {f}");
    }
}

#[test]
fn symlinks_are_never_followed() {
    let (_d, s) = fresh();
    let nodes = s.root().join("nodes");
    symlink("/etc/passwd", nodes.join("evil.json")).unwrap();
    let (_, reason) = unreadable(&s, "nodes/evil.json");
    assert!(reason.contains("symbolic link"), "{reason}");
    assert_eq!(s.list("nodes/").unwrap(), Vec::<String>::new());

    // Writing through a link replaces the link, never the target.
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target.json");
    fs::write(&target, b"outside").unwrap();
    symlink(&target, nodes.join("w.json")).unwrap();
    s.put("nodes/w.json", b"inside").unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"outside");
    assert_eq!(present(&s, "nodes/w.json").0, b"inside");
    symlink(&target, nodes.join("c.json")).unwrap();
    assert!(matches!(
        s.create("nodes/c.json", b"x"),
        Err(StoreError::Conflict(_))
    ));
    s.delete("nodes/c.json").unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"outside");
    // A lease.lock that is a link is not opened.
    let lease_dir = tempfile::tempdir().unwrap();
    symlink(&target, lease_dir.path().join("lease.lock")).unwrap();
    let err = DirStore::open(lease_dir.path(), DirOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("lease.lock"), "{err}");
    assert_eq!(fs::read(&target).unwrap(), b"outside");
}

#[test]
fn a_linked_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("a.json"), b"outside").unwrap();
    symlink(outside.path(), dir.path().join("nodes")).unwrap();
    let err = DirStore::open(dir.path(), DirOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("nodes") && err.contains("symbolic link"),
        "{err}"
    );

    // Swapped in after open: every operation refuses instead of following it.
    let (_d, s) = fresh();
    fs::remove_dir(s.root().join("nodes")).unwrap();
    symlink(outside.path(), s.root().join("nodes")).unwrap();
    assert!(matches!(
        s.read("nodes/a.json"),
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        s.put("nodes/a.json", b"x"),
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(s.list("nodes/"), Err(StoreError::Unavailable(_))));
    assert!(matches!(
        s.delete("nodes/a.json"),
        Err(StoreError::Unavailable(_))
    ));
    assert_eq!(fs::read(outside.path().join("a.json")).unwrap(), b"outside");
}

/// A root that does not exist (a typo, an NFS mount not mounted yet) is refused with the fix,
/// and nothing is created: neither the root nor any of its parents.
#[test]
fn a_missing_root_is_refused_and_never_created() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("nonexistent").join("deeper").join("store");
    for create_layout in [true, false] {
        let opts = DirOptions {
            create_layout,
            ..DirOptions::default()
        };
        let err = DirStore::open(&root, opts).err().unwrap().to_string();
        assert!(
            err.contains(root.to_str().unwrap())
                && err.contains("does not exist")
                && err.contains("mount")
                && err.contains("mkdir -m 0700"),
            "{err}"
        );
        assert!(
            !dir.path().join("nonexistent").exists(),
            "nothing created for a missing root"
        );
    }
}

/// The root is pinned at open: when the path comes to name another directory (what a mount
/// that vanishes looks like: the path falls through to the empty directory beneath it), every
/// call fails as unavailable instead of seeing an empty store; nothing is written there.
#[test]
fn a_replaced_root_is_unavailable_never_an_empty_store() {
    let (dir, s) = fresh();
    let root = dir.path().join("store");
    s.create(LEASE_KEY, b"lease").unwrap();
    s.put("cluster.json", b"c").unwrap();
    // The "mount" goes away: the real store moves aside, an empty directory takes its path.
    fs::rename(&root, dir.path().join("moved")).unwrap();
    mkdir_private(&root);
    let unavailable = |r: Result<(), StoreError>, what: &str| match r {
        Err(StoreError::Unavailable(m)) => assert!(
            m.contains("no longer the directory this node opened") && m.contains("remount"),
            "{what}: {m}"
        ),
        other => panic!("{what}: {other:?}"),
    };
    unavailable(s.read(LEASE_KEY).map(drop), "lease read");
    unavailable(s.read("cluster.json").map(drop), "record read");
    unavailable(s.list("epochs/").map(drop), "list");
    unavailable(s.create("epochs/1.json", b"1").map(drop), "create");
    unavailable(s.put("nodes/a.json", b"a").map(drop), "put");
    unavailable(s.create(LEASE_KEY, b"x").map(drop), "lease create");
    assert_eq!(
        fs::read_dir(&root).unwrap().count(),
        0,
        "nothing written beneath"
    );
    // The store comes back at its path: the same directory, so calls work again.
    fs::remove_dir(&root).unwrap();
    fs::rename(dir.path().join("moved"), &root).unwrap();
    assert!(matches!(
        s.read("cluster.json").unwrap(),
        ReadResult::Present(_)
    ));
}

/// Without `create_layout` (as `tenure doctor` opens a store) an empty root stays empty.
#[test]
fn opening_without_create_layout_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    mkdir_private(&root);
    let opts = DirOptions {
        create_layout: false,
        ..DirOptions::default()
    };
    let s = DirStore::open(&root, opts).unwrap();
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "root stays empty");
    // Reads of a store no node has used see nothing, and still create nothing.
    assert!(matches!(s.read(LEASE_KEY).unwrap(), ReadResult::Absent));
    assert!(s.list("nodes/").unwrap().is_empty());
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "root stays empty");
}

#[test]
fn open_errors_name_the_path_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, b"x").unwrap();
    let err = DirStore::open(&file, DirOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(file.to_str().unwrap()) && err.contains("--store"),
        "{err}"
    );
    let err = DirStore::open(&file.join("sub"), DirOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--store"), "{err}");

    // nodes/ as a regular file.
    let d2 = tempfile::tempdir().unwrap();
    fs::write(d2.path().join("nodes"), b"x").unwrap();
    let err = DirStore::open(d2.path(), DirOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("nodes") && err.contains("not a directory"),
        "{err}"
    );

    // Permissions (root ignores them, so only as another user).
    if unsafe { libc::geteuid() } != 0 {
        let d3 = tempfile::tempdir().unwrap();
        let ro = d3.path().join("ro");
        fs::create_dir(&ro).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o500)).unwrap();
        let err = DirStore::open(&ro, DirOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("permission denied"), "{err}");
        assert!(
            err.contains("make the directory writable by this user or choose another --store"),
            "{err}"
        );
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o700)).unwrap();
    }
}

#[test]
fn errors_carry_the_operation_and_path() {
    let (_d, s) = fresh();
    // A folder where a record's file should be: the rename fails.
    fs::create_dir(s.root().join("nodes").join("d.json")).unwrap();
    fs::write(s.root().join("nodes").join("d.json").join("x"), b"x").unwrap();
    match s.put("nodes/d.json", b"x") {
        Err(StoreError::Unavailable(m)) => {
            assert!(m.starts_with("rename "), "{m}");
            assert!(
                m.contains(&format!("{}", s.root().join("nodes/d.json").display())),
                "{m}"
            );
            assert!(m.contains("os error"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // No temp file left behind.
    let leftovers: Vec<_> = fs::read_dir(s.root().join("nodes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn non_lease_replace_and_create_details() {
    let (_d, s) = fresh();
    // Versions of plain records are content hashes: the same bytes read the same everywhere.
    let v = s.create("epochs/7.json", b"{\"epoch\":7}").unwrap();
    assert_eq!(v, present(&open(s.root()), "epochs/7.json").1);
    // Create leaves no temp behind, win or lose.
    assert!(matches!(
        s.create("epochs/7.json", b"again"),
        Err(StoreError::Conflict(_))
    ));
    let names: Vec<_> = fs::read_dir(s.root().join("epochs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["7.json"]);
    // Keys in folders that do not exist yet.
    assert_eq!(s.read("states/x.json").unwrap(), ReadResult::Absent);
    assert!(matches!(
        s.replace("states/x.json", b"x", &v),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.list("states/").unwrap(), Vec::<String>::new());
    s.delete("states/x.json").unwrap();
    s.create("states/x.json", b"x").unwrap();
    assert_eq!(s.list("states/").unwrap(), vec!["states/x.json"]);
    assert_eq!(s.describe(), format!("dir:{}", s.root().display()));
}

#[test]
fn replace_of_a_plain_record_races_to_one_winner() {
    let (_d, s) = fresh();
    let v = s.create("cluster.json", b"v0").unwrap();
    let root = s.root().to_path_buf();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (root, v, barrier) = (root.clone(), v.clone(), barrier.clone());
            std::thread::spawn(move || {
                let s = open(&root);
                barrier.wait();
                s.replace("cluster.json", format!("writer {i}").as_bytes(), &v)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let wins = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict(_))))
        .count();
    assert_eq!((wins, conflicts), (1, 7), "{results:?}");
}

#[test]
fn a_store_others_may_write_to_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    fs::create_dir(&root).unwrap();
    for m in [0o770, 0o707, 0o777, 0o1777, 0o2775] {
        fs::set_permissions(&root, fs::Permissions::from_mode(m)).unwrap();
        let err = DirStore::open(&root, DirOptions::default())
            .err()
            .unwrap()
            .to_string();
        let shown = format!("{:04o}", m);
        assert!(
            err.contains(root.to_str().unwrap())
                && err.contains(&shown)
                && err.contains("chmod 0700")
                && err.contains("--allow-shared-permissions"),
            "{shown}: {err}"
        );
        assert!(
            !root.join("nodes").exists(),
            "nothing is created in a refused store"
        );
        let allowed = DirOptions {
            allow_shared_permissions: true,
            ..DirOptions::default()
        };
        DirStore::open(&root, allowed).unwrap();
        fs::remove_dir(root.join("nodes")).unwrap();
        fs::remove_dir(root.join("epochs")).unwrap();
        let _ = fs::remove_file(root.join("lease.lock"));
    }
    // Readable by others is fine (0755, a common umask's default); writable by the owner only.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let s = open(&root);
    let ok = tenure_persistence::check_permissions(s.root(), false).unwrap();
    assert!(
        ok.contains("root 0755") && ok.contains("nodes 0700"),
        "{ok}"
    );
    // A shared nodes/ (records could be planted there) is refused as well.
    fs::set_permissions(root.join("nodes"), fs::Permissions::from_mode(0o775)).unwrap();
    let err = DirStore::open(&root, DirOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("nodes has mode 0775"), "{err}");
    let err = tenure_persistence::check_permissions(&root, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("its group may write"), "{err}");
    let ok = tenure_persistence::check_permissions(&root, true).unwrap();
    assert!(ok.contains("--allow-shared-permissions"), "{ok}");
}

/// Links planted at the root level (records and the lease file) after the store is open are
/// never followed: reads report them, writes replace the link, the target never changes.
#[test]
fn links_planted_after_open_are_never_followed() {
    let (_d, s) = fresh();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target");
    fs::write(&target, b"outside").unwrap();
    symlink(&target, s.root().join("cluster.json")).unwrap();
    let (_, reason) = unreadable(&s, "cluster.json");
    assert!(reason.contains("symbolic link"), "{reason}");
    assert!(matches!(
        s.create("cluster.json", b"x"),
        Err(StoreError::Conflict(_))
    ));
    s.put("cluster.json", b"inside").unwrap();
    assert_eq!(present(&s, "cluster.json").0, b"inside");
    assert_eq!(fs::read(&target).unwrap(), b"outside");

    // The lease file swapped for a link to a file outside: neither read nor written through.
    s.create(LEASE_KEY, b"lease-1").unwrap();
    fs::remove_file(s.root().join("lease.lock")).unwrap();
    symlink(&target, s.root().join("lease.lock")).unwrap();
    assert!(s.read(LEASE_KEY).is_err());
    assert!(s.put(LEASE_KEY, b"lease-2").is_err());
    assert!(s.create(LEASE_KEY, b"lease-3").is_err());
    assert_eq!(fs::read(&target).unwrap(), b"outside");

    // epochs/ swapped for a link to a folder outside.
    fs::remove_dir_all(s.root().join("epochs")).unwrap();
    symlink(outside.path(), s.root().join("epochs")).unwrap();
    assert!(s.create("epochs/1.json", b"x").is_err());
    assert!(s.list("epochs/").is_err());
    assert!(!outside.path().join("1.json").exists());
}
