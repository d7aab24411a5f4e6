//! The directory backend (local disk or NFS), DESIGN §3 and §4.
//!
//! Layout under the root: `cluster.json`, `lease.lock`, `epochs/<n>.json`, `nodes/<name>.json`.
//! Files are 0600, folders 0700. Every file is opened relative to a directory descriptor with
//! `O_NOFOLLOW`, and folders with `O_DIRECTORY | O_NOFOLLOW`, so nothing follows a symbolic
//! link out of the root.
//!
//! The lease lives inside `lease.lock`: two fixed-size checksummed slots, read and written
//! only through the flock'd handle (no rename: on NFS a lock makes only the locked file's
//! cache coherent). A write goes into the slot not holding the current record, so a torn
//! write leaves the previous record readable.
//!
//! Other records are written to a temporary file and renamed (`put`, `replace`) or hard-linked
//! (`create`, which fails with EEXIST when the key exists).
//!
//! On NFS, Linux emulates `flock` with POSIX byte-range locks, which belong to the *process*:
//! use one `DirStore` per process there (several in one process do not exclude each other).
//!
//! Here: `DirStore`, opening it and its record I/O; in [`fs`] the *at() system calls and the
//! polled flock, in [`slots`] the lease's two slots, in [`errors`] the refusals and the
//! permission check, in [`store`] the `Store` operations.

mod errors;
mod fs;
mod slots;
mod store;

use crate::mount::{self, MountInfo};
use errors::*;
pub use errors::{DirOpenError, PermissionsError, SharedFolder, check_permissions};
use fs::*;
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use slots::*;
use std::fs::{File, OpenOptions, Permissions, TryLockError};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tenure_store::{
    LEASE_KEY, MAX_RECORD_BYTES, ReadResult, Record, Store, StoreError, Version, validate_key,
    validate_prefix,
};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// The lease's file under the root.
pub const LEASE_FILE: &str = "lease.lock";
/// Size of one lease slot; the file holds two, at offsets 0 and 4096.
pub const LEASE_SLOT_BYTES: usize = 4096;
const SLOT_HEADER: usize = 32;
/// The largest lease record a slot can hold.
pub const LEASE_PAYLOAD_MAX: usize = LEASE_SLOT_BYTES - SLOT_HEADER;
const LEASE_MAGIC: &[u8; 8] = b"TNRLEAS1";

const NODES: &str = "nodes";
const EPOCHS: &str = "epochs";

#[derive(Clone, Debug)]
pub struct DirOptions {
    /// How long to wait for a flock held by someone else before giving up (default 2s). A
    /// blocking lock could hang forever behind a stopped process.
    pub lock_wait: Duration,
    /// Accept NFS older than v4 (locks through NLM).
    pub allow_nlm: bool,
    /// Check the mount options with [`mount::check`] (default true).
    pub check_mount: bool,
    /// Accept a root (or `nodes/`, `epochs/`) that group or others may write to
    /// (`--allow-shared-permissions`); refused by default, see [`check_permissions`].
    pub allow_shared_permissions: bool,
    /// Create the store's own layout (`nodes/`, `epochs/`, `lease.lock`) under the root when it
    /// is missing (default true: `tenure run`). `tenure doctor` opens with false, so that it
    /// writes nothing outside `probe/`. The root itself is never created.
    pub create_layout: bool,
}

impl Default for DirOptions {
    fn default() -> Self {
        DirOptions {
            lock_wait: Duration::from_secs(2),
            allow_nlm: false,
            check_mount: true,
            allow_shared_permissions: false,
            create_layout: true,
        }
    }
}

pub struct DirStore {
    /// Canonical at open, so it contains no symbolic link.
    root: PathBuf,
    opts: DirOptions,
    /// The `lease.lock` handle, kept open between calls (and reopened when the path names a
    /// different file). The mutex also serializes lease operations of this process: flock
    /// does not exclude two threads using the same open file description.
    lease: Mutex<Option<File>>,
    mount: Option<MountInfo>,
    /// The device and inode of the root directory as opened at start. Every call checks that
    /// the root path still names this directory: a mount that vanishes (`umount -l`, a dropped
    /// NFS or autofs mount) leaves the path on the empty directory beneath it, which must read
    /// as "storage unavailable", never as an empty store (a cold start there would be a second
    /// cluster).
    pinned_id: (u64, u64),
    /// On a local filesystem ([`Self::local`]): the root as opened at start, and `nodes/` and
    /// `epochs/` once opened, each with its (device, inode). A call then checks the path with
    /// one `lstat` instead of opening, checking and closing the directory, and so for a
    /// folder (half the system calls of an idle poll). Holding the descriptor keeps the
    /// inode, so the same (device, inode) is the same directory; a folder deleted and made
    /// again (a wiped store) has another inode and is opened afresh. On NFS, FUSE and anything
    /// else every call opens the directories afresh, so that the client revalidates them
    /// (close-to-open) rather than trust a cached lookup.
    pinned: Option<Arc<File>>,
    folders: Mutex<Vec<KeptFolder>>,
}

/// A folder's name, its (device, inode) and its open descriptor.
type KeptFolder = (String, (u64, u64), Arc<File>);

/// Filesystems whose path lookups are answered by the local kernel alone (no attribute cache
/// of a remote or user-space server): the root and folder descriptors may be kept open.
fn local_fstype(fstype: &str) -> bool {
    matches!(
        fstype,
        "ext2" | "ext3" | "ext4" | "xfs" | "btrfs" | "tmpfs" | "zfs" | "f2fs" | "overlay"
    )
}

enum Cond<'a> {
    Create,
    Replace(&'a Version),
    Any,
}

// ---------------------------------------------------------------------------------------------

fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((folder, name)) => (Some(folder), name),
        None => (None, key),
    }
}

impl DirStore {
    /// Open a store at `root`, which must exist (see [`DirOpenError::MissingRoot`]), creating the store's
    /// own layout under it when [`DirOptions::create_layout`] says so. Checks the mount, that
    /// it can write, and that flock works. The error names the path and the fix.
    pub fn open(root: &Path, opts: DirOptions) -> Result<DirStore, DirOpenError> {
        match std::fs::symlink_metadata(root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DirOpenError::MissingRoot {
                    root: root.to_path_buf(),
                });
            }
            _ => {}
        }
        let canonical = root
            .canonicalize()
            .map_err(|e| open_error(root, "resolving", root, e))?;
        let meta = std::fs::metadata(&canonical)
            .map_err(|e| open_error(root, "reading", &canonical, e))?;
        if !meta.is_dir() {
            return Err(DirOpenError::NotADirectory {
                root: root.to_path_buf(),
            });
        }
        if !opts.allow_shared_permissions {
            check_permissions(&canonical, false).map_err(|e| DirOpenError::Permissions {
                root: root.to_path_buf(),
                source: e,
            })?;
        }
        let mount = if opts.check_mount {
            let info = mount::check(&canonical, opts.allow_nlm)?;
            if let Some(note) = &info.note {
                tracing::warn!("{note}");
            }
            Some(info)
        } else {
            None
        };
        let top = Folder::open_path(&canonical)
            .map_err(|e| open_error(root, "opening", &canonical, e))?;
        for name in [NODES, EPOCHS] {
            let path = top.child_path(name);
            match top.lstat(name) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                    return Err(DirOpenError::SymlinkFolder {
                        root: root.to_path_buf(),
                        path,
                    });
                }
                Ok(_) => {
                    return Err(DirOpenError::NotAFolder {
                        root: root.to_path_buf(),
                        path,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && !opts.create_layout => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match top.mkdir(name) {
                        Ok(()) => {}
                        // Another node created it at the same moment.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(open_error(root, "creating", &path, e)),
                    }
                    let sub = top
                        .subfolder(name)
                        .map_err(|e| open_error(root, "opening", &path, e))?;
                    sub.fd
                        .set_permissions(Permissions::from_mode(0o700))
                        .map_err(|e| open_error(root, "setting the mode of", &path, e))?;
                }
                Err(e) => return Err(open_error(root, "reading", &path, e)),
            }
        }
        let pinned_meta = top
            .fd
            .metadata()
            .map_err(|e| open_error(root, "reading", &canonical, e))?;
        let local = mount.as_ref().is_some_and(|m| local_fstype(&m.fstype));
        let store = DirStore {
            root: canonical,
            opts,
            lease: Mutex::new(None),
            mount,
            pinned_id: (pinned_meta.dev(), pinned_meta.ino()),
            pinned: local.then(|| top.fd.clone()),
            folders: Mutex::new(Vec::new()),
        };
        // Can we write (and sync) in every folder (that exists: see `create_layout`)?
        for folder in [None, Some(NODES), Some(EPOCHS)] {
            let dir = match folder {
                None => Folder::open_path(&store.root),
                Some(f) => match top.subfolder(f) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound && !store.opts.create_layout => {
                        continue;
                    }
                    r => r,
                },
            }
            .map_err(|e| open_error(root, "opening", &top.child_path(folder.unwrap_or("")), e))?;
            let name = temp_name("probe");
            let path = dir.child_path(&name);
            let probe = (|| {
                let mut f =
                    dir.openat(&name, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL, 0o600)?;
                io::Write::write_all(&mut f, b"tenure write probe\n")?;
                f.sync_all()?;
                dir.unlink(&name)
            })();
            if let Err(e) = probe {
                let _ = dir.unlink(&name);
                return Err(open_error(root, "writing", &path, e));
            }
        }
        // Does flock work here? WouldBlock is fine (a running master holds it); an error such
        // as ENOLCK means the filesystem cannot lock and the lease would not be exclusive.
        // Without `create_layout` a missing lease file stays missing (the doctor tests locks on
        // a probe file of its own).
        let lease_missing =
            matches!(top.lstat(LEASE_FILE), Err(e) if e.kind() == io::ErrorKind::NotFound);
        if store.opts.create_layout || !lease_missing {
            let lease_path = store.root.join(LEASE_FILE);
            let mut guard = store.lease_guard();
            let file = store
                .lease_handle(&mut guard, true)
                .map_err(|e| DirOpenError::Lease {
                    root: root.to_path_buf(),
                    source: e,
                })?;
            match file.try_lock_shared() {
                Ok(()) => {
                    let _ = file.unlock();
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(DirOpenError::NoLocking {
                        root: root.to_path_buf(),
                        lease: lease_path,
                        source: e,
                    });
                }
            }
        }
        Ok(store)
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The mount the store is on, when the mount was checked.
    pub fn mount_info(&self) -> Option<&MountInfo> {
        self.mount.as_ref()
    }

    /// The root, checked to be the directory opened at start: the pinned descriptor after an
    /// `lstat` of the path on a local filesystem, else opened afresh.
    fn top(&self) -> Result<Folder, StoreError> {
        let (top, now) = match &self.pinned {
            Some(fd) => {
                let now = std::fs::symlink_metadata(&self.root)
                    .map_err(|e| io_err("stat", &self.root, e))?;
                let top = Folder {
                    fd: fd.clone(),
                    path: self.root.clone(),
                };
                (top, now)
            }
            None => {
                let top =
                    Folder::open_path(&self.root).map_err(|e| io_err("open", &self.root, e))?;
                let now = top
                    .fd
                    .metadata()
                    .map_err(|e| io_err("stat", &self.root, e))?;
                (top, now)
            }
        };
        if (now.dev(), now.ino()) != self.pinned_id {
            return Err(StoreError::Unavailable(format!(
                "{} is no longer the directory this node opened as its store (device {} inode {} \
                 then, device {} inode {} now): a mount vanished or was replaced; remount the \
                 store, then restart tenure",
                self.root.display(),
                self.pinned_id.0,
                self.pinned_id.1,
                now.dev(),
                now.ino()
            )));
        }
        Ok(top)
    }

    /// The folder holding `key`'s file; `Ok(None)` when it does not exist (and `create` is
    /// false).
    fn folder(&self, folder: Option<&str>, create: bool) -> Result<Option<Folder>, StoreError> {
        let top = self.top()?;
        let Some(name) = folder else {
            return Ok(Some(top));
        };
        let path = top.child_path(name);
        match self.subfolder(&top, name) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                match top.mkdir(name) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("mkdir", &path, e)),
                }
                let f = top.subfolder(name).map_err(|e| io_err("open", &path, e))?;
                f.fd.set_permissions(Permissions::from_mode(0o700))
                    .map_err(|e| io_err("chmod", &path, e))?;
                top.sync()?;
                Ok(Some(f))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("open", &path, e)),
        }
    }

    /// `top`'s folder `name`: the kept descriptor when the path still names it (local
    /// filesystems), else opened afresh (and kept, on a local filesystem).
    fn subfolder(&self, top: &Folder, name: &str) -> io::Result<Folder> {
        if self.pinned.is_none() {
            return top.subfolder(name);
        }
        let st = top.lstat(name)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            // A link or a file: opening it gives the error callers expect.
            return top.subfolder(name);
        }
        #[allow(clippy::unnecessary_cast)] // not u64 on every target
        let id = (st.st_dev as u64, st.st_ino as u64);
        let mut folders = self.folders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, fd)) = folders.iter().find(|(n, i, _)| n == name && *i == id) {
            return Ok(Folder {
                fd: fd.clone(),
                path: top.child_path(name),
            });
        }
        let f = top.subfolder(name)?;
        let meta = f.fd.metadata()?;
        // Replaced between the lstat and the open: use what was opened, keep nothing.
        if (meta.dev(), meta.ino()) == id {
            folders.retain(|(n, _, _)| n != name);
            folders.push((name.to_string(), id, f.fd.clone()));
        }
        Ok(f)
    }

    fn check_key(key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        if key == LEASE_FILE {
            // Writing it as a plain record would replace the lock file.
            return Err(StoreError::InvalidKey(format!(
                "{key}: reserved for the lease"
            )));
        }
        Ok(())
    }

    // --- the lease ---------------------------------------------------------------------------

    fn lease_guard(&self) -> MutexGuard<'_, Option<File>> {
        self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open `lease.lock`, reopened if the path now names a different file (replaced or
    /// deleted by someone): a lock on a stale inode would exclude nobody. With `verify` false
    /// a handle already open is returned unchecked, for a caller that checks it once it holds
    /// the lock (and comes back with `verify` when that check fails).
    fn lease_handle<'g>(
        &self,
        slot: &'g mut Option<File>,
        verify: bool,
    ) -> Result<&'g File, StoreError> {
        if !verify && slot.is_some() {
            return Ok(slot.as_ref().expect("checked"));
        }
        let path = self.root.join(LEASE_FILE);
        let top = self.top()?;
        let fresh = match slot.as_ref() {
            None => false,
            Some(f) => match f.metadata() {
                Ok(held) => match top.lstat(LEASE_FILE) {
                    Ok(st) => st.st_dev == held.dev() && st.st_ino == held.ino(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                    Err(e) => return Err(io_err("stat", &path, e)),
                },
                // The file was deleted under the open handle (a wiped store): NFS answers
                // ESTALE, a FUSE passthrough ENOENT. The handle is useless; open the path anew.
                Err(e) if handle_gone(&e) => false,
                Err(e) => return Err(io_err("stat", &path, e)),
            },
        };
        if !fresh {
            *slot = None;
            let (file, created) =
                open_or_create(&top, LEASE_FILE).map_err(|e| io_err("open", &path, e))?;
            let meta = file.metadata().map_err(|e| io_err("stat", &path, e))?;
            if !is_regular(&meta) {
                return Err(StoreError::Unavailable(format!(
                    "open {}: not a regular file",
                    path.display()
                )));
            }
            if created {
                top.sync()?;
            }
            *slot = Some(file);
        }
        Ok(slot.as_ref().expect("set above"))
    }

    /// Run `f` with the lease file flock'd (shared or exclusive) through a handle that is
    /// still the file at the path once the lock is held.
    fn with_lease_locked<T>(
        &self,
        exclusive: bool,
        f: impl FnOnce(&File, &Path) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let path = self.root.join(LEASE_FILE);
        let mut guard = self.lease_guard();
        let mut lock_failed = None;
        for attempt in 0..3 {
            // The handle is checked against the path once the lock is held (below), so not
            // before as well: three system calls fewer per renewal.
            let file = self.lease_handle(&mut guard, attempt > 0)?;
            let lock = match flock_polled(file, !exclusive, self.opts.lock_wait, &path) {
                Ok(l) => l,
                Err(e) => {
                    lock_failed = Some(e);
                    break;
                }
            };
            // The file may have been replaced (or never been the path's) while we waited.
            let still = match file.metadata() {
                Ok(held) => match self.top()?.lstat(LEASE_FILE) {
                    Ok(st) => st.st_dev == held.dev() && st.st_ino == held.ino(),
                    Err(_) => false,
                },
                Err(e) if handle_gone(&e) => false,
                Err(e) => return Err(io_err("stat", &path, e)),
            };
            if still {
                return f(file, &path);
            }
            drop(lock);
            *guard = None;
        }
        if let Some(e) = lock_failed {
            // Perhaps a stale inode that someone else holds locked: reopen (and check) next time.
            *guard = None;
            return Err(e);
        }
        Err(StoreError::Unavailable(format!(
            "{} keeps being replaced by another process",
            path.display()
        )))
    }

    /// Read the lease WITHOUT a lock (DESIGN §3): a reader that holds even a shared flock
    /// and is then frozen (SIGSTOP, VM pause) would block the master's renewal and demote it.
    /// A fresh descriptor per read makes NFS revalidate its cache (close-to-open); a torn
    /// slot fails its checksum and the other slot is used; a stale read only makes a later
    /// conditional write fail. No lock is held by this process while the descriptor closes,
    /// so closing it cannot drop one (NFS emulates flock with per-process POSIX locks).
    fn lease_read(&self) -> Result<ReadResult, StoreError> {
        let path = self.root.join(LEASE_FILE);
        let top = self.top()?;
        let file = match top.openat(LEASE_FILE, OFlags::RDONLY | OFlags::NONBLOCK, 0) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReadResult::Absent),
            Err(e) => return Err(io_err("open", &path, e)),
        };
        let meta = file.metadata().map_err(|e| io_err("stat", &path, e))?;
        if !is_regular(&meta) {
            return Err(StoreError::Unavailable(format!(
                "open {}: not a regular file",
                path.display()
            )));
        }
        let view = LeaseView::read(&file, &path)?;
        Ok(match view.current() {
            Current::Absent => ReadResult::Absent,
            Current::Valid {
                version, payload, ..
            } => ReadResult::Present(Record {
                bytes: payload,
                version,
                modified: view.modified,
            }),
            Current::Unreadable { version, reason } => ReadResult::Unreadable {
                version,
                reason: format!("{}: {reason}", path.display()),
            },
        })
    }

    fn lease_write(&self, bytes: &[u8], cond: Cond<'_>) -> Result<Version, StoreError> {
        if bytes.len() > LEASE_PAYLOAD_MAX {
            return Err(StoreError::Unavailable(format!(
                "lease record of {} bytes exceeds the {LEASE_PAYLOAD_MAX}-byte slot",
                bytes.len()
            )));
        }
        self.with_lease_locked(true, |file, path| {
            let view = LeaseView::read(file, path)?;
            let current = view.current();
            let current_version = match &current {
                Current::Absent => None,
                Current::Valid { version, .. } | Current::Unreadable { version, .. } => {
                    Some(version)
                }
            };
            match (&cond, current_version) {
                (Cond::Any, _) | (Cond::Create, None) => {}
                (Cond::Create, Some(v)) => {
                    return Err(StoreError::Conflict(format!("lease exists (version {v})")));
                }
                (Cond::Replace(expected), None) => {
                    return Err(StoreError::Conflict(format!(
                        "lease is absent, expected version {expected}"
                    )));
                }
                (Cond::Replace(expected), Some(v)) if v != *expected => {
                    return Err(StoreError::Conflict(format!(
                        "lease is at version {v}, expected {expected}"
                    )));
                }
                (Cond::Replace(_), Some(_)) => {}
            }
            // Never overwrite the slot holding the current record: a torn write must leave it.
            let target = match current {
                Current::Valid { slot, .. } => 1 - slot,
                _ => 0,
            };
            let generation = view.next_generation().ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "{}: lease generation counter exhausted",
                    path.display()
                ))
            })?;
            let (slot, checksum) = encode_slot(generation, bytes);
            file.write_all_at(&slot, (target * LEASE_SLOT_BYTES) as u64)
                .map_err(|e| io_err("write", path, e))?;
            file.sync_data().map_err(|e| io_err("sync", path, e))?;
            Ok(Version(format!("g{generation}-{checksum:016x}")))
        })
    }

    // --- other records -----------------------------------------------------------------------

    fn read_record(dir: &Folder, name: &str) -> Result<ReadResult, StoreError> {
        let path = dir.child_path(name);
        // O_NONBLOCK: opening a fifo planted in the store must not hang.
        let mut file = match dir.openat(name, OFlags::RDONLY | OFlags::NONBLOCK, 0) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReadResult::Absent),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                let st = dir.lstat(name).map_err(|e| io_err("stat", &path, e))?;
                return Ok(ReadResult::Unreadable {
                    version: stat_version(
                        st.st_mode,
                        st.st_ino,
                        st.st_size,
                        st.st_mtime,
                        st.st_mtime_nsec as i64,
                    ),
                    reason: format!("{} is a symbolic link (not followed)", path.display()),
                });
            }
            Err(e) => return Err(io_err("open", &path, e)),
        };
        let meta = file.metadata().map_err(|e| io_err("stat", &path, e))?;
        if !is_regular(&meta) {
            return Ok(ReadResult::Unreadable {
                version: stat_version(
                    meta.mode(),
                    meta.ino(),
                    meta.size() as i64,
                    meta.mtime(),
                    meta.mtime_nsec(),
                ),
                reason: format!("{} is not a regular file", path.display()),
            });
        }
        let oversized = |size: u64, head: &[u8]| {
            let mut h = Xxh3::new();
            h.update(&size.to_le_bytes());
            h.update(&meta.mtime().to_le_bytes());
            h.update(&meta.mtime_nsec().to_le_bytes());
            h.update(head);
            ReadResult::Unreadable {
                version: Version(format!("o{:016x}", h.digest())),
                reason: format!(
                    "{}: record of {size} bytes exceeds the 64 KiB limit",
                    path.display()
                ),
            }
        };
        if meta.size() > MAX_RECORD_BYTES as u64 {
            // Only the first bytes: never read a huge file whole.
            let mut head = vec![0u8; 4096];
            let n = file
                .read_at(&mut head, 0)
                .map_err(|e| io_err("read", &path, e))?;
            return Ok(oversized(meta.size(), &head[..n]));
        }
        let mut bytes = Vec::with_capacity(meta.size() as usize);
        (&mut file)
            .take(MAX_RECORD_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_err("read", &path, e))?;
        if bytes.len() > MAX_RECORD_BYTES {
            // It grew after the stat.
            let head = bytes[..4096].to_vec();
            return Ok(oversized(bytes.len() as u64, &head));
        }
        let version = content_version(&bytes);
        Ok(ReadResult::Present(Record {
            bytes,
            version,
            modified: meta.modified().ok(),
        }))
    }

    /// Write `bytes` to a new temporary file in `dir`, synced. The caller renames or links it.
    fn write_temp(dir: &Folder, name: &str, bytes: &[u8]) -> Result<(String, File), StoreError> {
        let target = dir.child_path(name);
        let temp = temp_name(name);
        let result = (|| {
            let mut f = dir.openat(&temp, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL, 0o600)?;
            // The umask may have removed bits we need; the mode is ours to choose.
            if !umask_keeps_owner_rw() {
                f.set_permissions(Permissions::from_mode(0o600))?;
            }
            io::Write::write_all(&mut f, bytes)?;
            f.sync_all()?;
            Ok(f)
        })();
        match result {
            Ok(f) => Ok((temp, f)),
            Err(e) => {
                let _ = dir.unlink(&temp);
                Err(io_err("write", &target, e))
            }
        }
    }

    fn write_renamed(dir: &Folder, name: &str, bytes: &[u8]) -> Result<Version, StoreError> {
        let (temp, _file) = Self::write_temp(dir, name, bytes)?;
        if let Err(e) = dir.rename(&temp, name) {
            let _ = dir.unlink(&temp);
            return Err(io_err("rename", &dir.child_path(name), e));
        }
        dir.sync()?;
        Ok(content_version(bytes))
    }
}

fn content_version(bytes: &[u8]) -> Version {
    Version(format!("h{:016x}", xxh3_64(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_round_trip() {
        let (buf, sum) = encode_slot(7, b"hello");
        assert_eq!(buf.len(), LEASE_SLOT_BYTES);
        assert_eq!(
            decode_slot(&buf),
            Slot::Valid {
                generation: 7,
                checksum: sum,
                payload: b"hello".to_vec()
            }
        );
        let (buf, _) = encode_slot(1, &[0xab; LEASE_PAYLOAD_MAX]);
        assert!(matches!(decode_slot(&buf), Slot::Valid { .. }));
    }

    #[test]
    fn slot_checksum_covers_header_and_payload() {
        let (buf, _) = encode_slot(7, b"hello");
        for i in [0, 8, 16, 20, 24, 32, 36] {
            let mut b = buf.clone();
            b[i] ^= 1;
            assert!(
                matches!(decode_slot(&b), Slot::Invalid { .. }),
                "flip at {i}"
            );
        }
        // Padding is not covered.
        let mut b = buf.clone();
        b[4000] = 9;
        assert!(matches!(decode_slot(&b), Slot::Valid { .. }));
    }

    #[test]
    fn slot_edge_cases_do_not_panic() {
        assert_eq!(decode_slot(&[]), Slot::Empty);
        assert_eq!(decode_slot(&[0; 100]), Slot::Empty);
        assert!(matches!(
            decode_slot(&[1; 10]),
            Slot::Invalid {
                raw_generation: None,
                ..
            }
        ));
        let (buf, _) = encode_slot(3, b"abc");
        assert!(matches!(
            decode_slot(&buf[..33]),
            Slot::Invalid {
                raw_generation: Some(3),
                ..
            }
        ));
        let mut b = buf.clone();
        b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_slot(&b),
            Slot::Invalid {
                why: "bad length",
                ..
            }
        ));
    }

    #[test]
    fn next_generation_survives_garbage() {
        let (a, _) = encode_slot(5, b"x");
        let mut b = encode_slot(u64::MAX, b"y").0;
        b[32] ^= 1; // bad checksum, raw generation u64::MAX
        let view = LeaseView {
            slots: [decode_slot(&a), decode_slot(&b)],
            raw: vec![],
            modified: None,
        };
        assert_eq!(view.next_generation(), Some(6));
    }

    #[test]
    fn temp_names_are_hidden_and_unique() {
        let a = temp_name("a.json");
        let b = temp_name("a.json");
        assert!(a.starts_with(".a.json.") && a.ends_with(".tmp"));
        assert_ne!(a, b);
        assert!(temp_name(&"x".repeat(255)).len() < 255);
    }
}
