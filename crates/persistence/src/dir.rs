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

use crate::mount::{self, MountInfo};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
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
    /// The device and inode of the root directory as opened at start. Every call opens the
    /// root afresh (so NFS revalidates it, close-to-open) and checks that it is still this
    /// directory: a mount that vanishes (`umount -l`, a dropped NFS or autofs mount) leaves the
    /// path on the empty directory beneath it, which must read as "storage unavailable", never
    /// as an empty store (a cold start there would be a second cluster).
    pinned_id: (u64, u64),
}

// ---------------------------------------------------------------------------------------------
// The *at() system calls (through rustix), so every path is resolved relative to a directory
// descriptor that was itself opened without following links.

/// An open directory and the path it was opened at (for messages).
struct Folder {
    fd: Arc<File>,
    path: PathBuf,
}

impl Folder {
    /// Open `path` as a directory without following a link in its last component.
    fn open_path(path: &Path) -> io::Result<Folder> {
        let fd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Folder {
            fd: Arc::new(fd),
            path: path.to_path_buf(),
        })
    }

    fn child_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Open an entry, never following a link (`ELOOP` on one).
    fn openat(&self, name: &str, flags: OFlags, mode: u32) -> io::Result<File> {
        let fd = rfs::openat(
            &*self.fd,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        Ok(File::from(fd))
    }

    fn subfolder(&self, name: &str) -> io::Result<Folder> {
        let fd = self.openat(name, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
        Ok(Folder {
            fd: Arc::new(fd),
            path: self.child_path(name),
        })
    }

    fn mkdir(&self, name: &str) -> io::Result<()> {
        Ok(rfs::mkdirat(&*self.fd, name, Mode::from_raw_mode(0o700))?)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(rfs::renameat(&*self.fd, from, &*self.fd, to)?)
    }

    /// A hard link; `from` itself is not followed if it is a link.
    fn link(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(rfs::linkat(
            &*self.fd,
            from,
            &*self.fd,
            to,
            AtFlags::empty(),
        )?)
    }

    fn unlink(&self, name: &str) -> io::Result<()> {
        Ok(rfs::unlinkat(&*self.fd, name, AtFlags::empty())?)
    }

    /// `lstat` of an entry (a link is described, not followed).
    fn lstat(&self, name: &str) -> io::Result<rfs::Stat> {
        Ok(rfs::statat(&*self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// Make new entries durable. Some filesystems cannot fsync a directory (EINVAL); there
    /// is nothing better to do there.
    fn sync(&self) -> Result<(), StoreError> {
        match self.fd.sync_all() {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTSUP)) => {
                Ok(())
            }
            r => r.map_err(|e| io_err("sync", &self.path, e)),
        }
    }

    /// Names of regular files in this folder (not `.` or `..`).
    fn regular_files(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        // Reads through a descriptor of its own (opened at "."), from the beginning.
        for entry in rfs::Dir::read_from(&*self.fd)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let regular = match entry.file_type() {
                rfs::FileType::RegularFile => true,
                rfs::FileType::Unknown => self.lstat(name).is_ok_and(|st| {
                    rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::RegularFile
                }),
                _ => false,
            };
            if regular {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }
}

/// Open `name` in `dir` read-write, creating it 0600 if missing. Returns whether it was created.
fn open_or_create(dir: &Folder, name: &str) -> io::Result<(File, bool)> {
    for _ in 0..3 {
        match dir.openat(name, OFlags::RDWR | OFlags::CREATE | OFlags::EXCL, 0o600) {
            Ok(f) => {
                // The umask may have removed bits we need; the mode is ours to choose.
                f.set_permissions(Permissions::from_mode(0o600))?;
                return Ok((f, true));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        match dir.openat(name, OFlags::RDWR, 0) {
            Ok(f) => return Ok((f, false)),
            // Deleted between the two calls: try again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from(io::ErrorKind::NotFound))
}

fn io_err(op: &str, path: &Path, e: io::Error) -> StoreError {
    let hint = if e.raw_os_error() == Some(libc::ELOOP) {
        " (a symbolic link: tenure does not follow links inside the store)"
    } else {
        ""
    };
    StoreError::Unavailable(format!("{op} {}: {e}{hint}", path.display()))
}

fn is_regular(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_file()
}

/// A version for something that is not a regular file (link, directory, fifo): changes when
/// the entry is replaced or modified.
fn stat_version(mode: u32, ino: u64, size: i64, mtime: i64, mtime_nsec: i64) -> Version {
    let mut h = Xxh3::new();
    for v in [mode as i64, ino as i64, size, mtime, mtime_nsec] {
        h.update(&v.to_le_bytes());
    }
    Version(format!("n{:016x}", h.digest()))
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `.<name>.<unique>.tmp`: starts with a dot so `list` and `validate_key` never see it; unique
/// across processes (pid) and threads (counter), and across restarts reusing a pid (time).
fn temp_name(name: &str) -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Keep the whole name under the 255-byte limit.
    let short: String = name.chars().take(128).collect();
    format!(
        ".{short}.{:x}-{n:x}-{:x}.tmp",
        std::process::id(),
        nanos & 0xffff_ffff_ffff
    )
}

/// Wait for a flock without ever blocking indefinitely: poll `try_lock` with short sleeps.
fn flock_polled<'a>(
    file: &'a File,
    shared: bool,
    wait: Duration,
    path: &Path,
) -> Result<Flocked<'a>, StoreError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let r = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match r {
            Ok(()) => return Ok(Flocked(file)),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(io_err("lock", path, e)),
        }
        let elapsed = start.elapsed();
        if elapsed >= wait {
            return Err(StoreError::Unavailable(format!(
                "{} is held by another process for more than {wait:?} (a stopped or hung process \
                 holding the lock?)",
                path.display()
            )));
        }
        std::thread::sleep(pause.min(wait - elapsed));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Releases the flock when dropped, on every path out of an operation.
struct Flocked<'a>(&'a File);

impl Drop for Flocked<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.unlock() {
            tracing::warn!("unlock failed: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lease slots.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Slot {
    /// Missing or all zero bytes: never written.
    Empty,
    Valid {
        generation: u64,
        checksum: u64,
        payload: Vec<u8>,
    },
    /// Written but unusable (torn write, corruption). `raw_generation` is the generation field
    /// when the magic matched, so a new write can still number past it.
    Invalid {
        raw_generation: Option<u64>,
        why: &'static str,
    },
}

fn slot_checksum(header: &[u8], payload: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(&header[..24]);
    h.update(payload);
    h.digest()
}

fn encode_slot(generation: u64, payload: &[u8]) -> (Vec<u8>, u64) {
    debug_assert!(payload.len() <= LEASE_PAYLOAD_MAX);
    let mut buf = vec![0u8; LEASE_SLOT_BYTES];
    buf[0..8].copy_from_slice(LEASE_MAGIC);
    buf[8..16].copy_from_slice(&generation.to_le_bytes());
    buf[16..20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    // 20..24 reserved, zero.
    let checksum = slot_checksum(&buf, payload);
    buf[24..32].copy_from_slice(&checksum.to_le_bytes());
    buf[SLOT_HEADER..SLOT_HEADER + payload.len()].copy_from_slice(payload);
    (buf, checksum)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn decode_slot(buf: &[u8]) -> Slot {
    if buf.iter().all(|&b| b == 0) {
        return Slot::Empty;
    }
    if buf.len() < SLOT_HEADER {
        return Slot::Invalid {
            raw_generation: None,
            why: "short slot",
        };
    }
    if &buf[..8] != LEASE_MAGIC {
        return Slot::Invalid {
            raw_generation: None,
            why: "bad magic",
        };
    }
    let generation = le_u64(&buf[8..16]);
    let len = u32::from_le_bytes([buf[16], buf[17], buf[18], buf[19]]) as usize;
    if len > LEASE_PAYLOAD_MAX || SLOT_HEADER + len > buf.len() {
        return Slot::Invalid {
            raw_generation: Some(generation),
            why: "bad length",
        };
    }
    let checksum = le_u64(&buf[24..32]);
    let payload = &buf[SLOT_HEADER..SLOT_HEADER + len];
    if slot_checksum(buf, payload) != checksum {
        return Slot::Invalid {
            raw_generation: Some(generation),
            why: "bad checksum",
        };
    }
    Slot::Valid {
        generation,
        checksum,
        payload: payload.to_vec(),
    }
}

/// An open handle whose file was deleted by someone else, as the file system reports it on
/// `fstat`: ESTALE (NFS), ENOENT (FUSE passthroughs that resolve handles by path).
fn handle_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESTALE)
}

/// Both slots of `lease.lock` as read through one handle.
struct LeaseView {
    slots: [Slot; 2],
    raw: Vec<u8>,
    modified: Option<SystemTime>,
}

enum Current {
    Absent,
    Valid {
        slot: usize,
        version: Version,
        payload: Vec<u8>,
    },
    Unreadable {
        version: Version,
        reason: String,
    },
}

impl LeaseView {
    fn read(file: &File, path: &Path) -> Result<LeaseView, StoreError> {
        let mut raw = vec![0u8; 2 * LEASE_SLOT_BYTES];
        let mut filled = 0;
        while filled < raw.len() {
            match file.read_at(&mut raw[filled..], filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("read", path, e)),
            }
        }
        raw.truncate(filled);
        let slot = |i: usize| {
            let lo = (i * LEASE_SLOT_BYTES).min(raw.len());
            let hi = ((i + 1) * LEASE_SLOT_BYTES).min(raw.len());
            decode_slot(&raw[lo..hi])
        };
        let slots = [slot(0), slot(1)];
        let modified = file.metadata().ok().and_then(|m| m.modified().ok());
        Ok(LeaseView {
            slots,
            raw,
            modified,
        })
    }

    fn current(&self) -> Current {
        let mut best: Option<(usize, u64, u64, &Vec<u8>)> = None;
        for (i, s) in self.slots.iter().enumerate() {
            if let Slot::Valid {
                generation,
                checksum,
                payload,
            } = s
                && best.is_none_or(|(_, g, _, _)| *generation > g)
            {
                best = Some((i, *generation, *checksum, payload));
            }
        }
        if let Some((slot, generation, checksum, payload)) = best {
            return Current::Valid {
                slot,
                version: Version(format!("g{generation}-{checksum:016x}")),
                payload: payload.clone(),
            };
        }
        if self.raw.iter().all(|&b| b == 0) {
            return Current::Absent;
        }
        let why = |s: &Slot| match s {
            Slot::Empty => "empty",
            Slot::Valid { .. } => "valid",
            Slot::Invalid { why, .. } => why,
        };
        Current::Unreadable {
            version: Version(format!("x{:016x}", xxh3_64(&self.raw))),
            reason: format!(
                "no valid lease slot (slot 0: {}, slot 1: {})",
                why(&self.slots[0]),
                why(&self.slots[1])
            ),
        }
    }

    /// The generation for the next write: past every generation seen, valid or not, so a
    /// version never repeats even after a corrupted slot is rewritten.
    fn next_generation(&self) -> Option<u64> {
        let mut valid = 0u64;
        let mut raw = 0u64;
        for s in &self.slots {
            match s {
                Slot::Valid { generation, .. } => valid = valid.max(*generation),
                Slot::Invalid {
                    raw_generation: Some(g),
                    ..
                } => raw = raw.max(*g),
                _ => {}
            }
        }
        // A garbage generation field near u64::MAX must not make the lease unwritable.
        valid
            .max(raw)
            .checked_add(1)
            .or_else(|| valid.checked_add(1))
    }
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

/// Why [`DirStore::open`] refused a store. Every message names the store and the fix.
#[derive(Debug, thiserror::Error)]
pub enum DirOpenError {
    /// The root does not exist. It is never created: a mistyped path or an NFS mount that is
    /// not mounted yet would otherwise become a private one-node cluster that answers MASTER
    /// beside the real one.
    #[error(
        "cannot use store {}: it does not exist — check the path, mount the shared filesystem \
         there, or create a new store with `mkdir -m 0700 {}` (tenure never creates a store \
         root, so that a typo or a missing mount cannot become a cluster of its own)",
        root.display(),
        root.display()
    )]
    MissingRoot { root: PathBuf },
    /// A system call on `path` failed while `doing` (resolving, reading, opening, creating,
    /// setting the mode of, writing) it.
    #[error(
        "cannot use store {}: {} {doing} {} — {}",
        root.display(),
        io_what(source),
        path.display(),
        io_fix(source)
    )]
    Io {
        root: PathBuf,
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The root is not a directory.
    #[error(
        "cannot use store {}: it is not a directory — choose a directory for --store",
        root.display()
    )]
    NotADirectory { root: PathBuf },
    /// Group or others may write to a folder of the store (see [`check_permissions`]).
    #[error("cannot use store {}: {source}", root.display())]
    Permissions {
        root: PathBuf,
        #[source]
        source: PermissionsError,
    },
    /// The mount holding the store cannot hold the lease (see [`mount::check`]).
    #[error(transparent)]
    Mount(#[from] mount::MountError),
    /// `nodes/` or `epochs/` is a symbolic link.
    #[error(
        "cannot use store {}: {} is a symbolic link — replace it with a real \
         directory: tenure never follows links inside the store",
        root.display(),
        path.display()
    )]
    SymlinkFolder { root: PathBuf, path: PathBuf },
    /// `nodes/` or `epochs/` is not a directory.
    #[error(
        "cannot use store {}: {} is not a directory — remove it or choose \
         another --store",
        root.display(),
        path.display()
    )]
    NotAFolder { root: PathBuf, path: PathBuf },
    /// The lease file could not be opened.
    #[error(
        "cannot use store {}: {source} — check the path or choose another --store",
        root.display()
    )]
    Lease {
        root: PathBuf,
        #[source]
        source: StoreError,
    },
    /// flock on the lease file failed (other than by being held).
    #[error(
        "cannot use store {}: flock on {} failed: {source} — the filesystem does not \
         support locking (NFS mounted with nolock?); remount with locking or \
         choose another --store",
        root.display(),
        lease.display()
    )]
    NoLocking {
        root: PathBuf,
        lease: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What went wrong, in the words of [`DirOpenError::Io`].
fn io_what(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::ReadOnlyFilesystem => "read-only file system".to_string(),
        io::ErrorKind::StorageFull => "no space left".to_string(),
        io::ErrorKind::NotADirectory => "not a directory".to_string(),
        _ if e.raw_os_error() == Some(libc::ELOOP) => "symbolic link".to_string(),
        _ => e.to_string(),
    }
}

/// The fix of a [`DirOpenError::Io`].
fn io_fix(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            "make the directory writable by this user or choose another --store"
        }
        io::ErrorKind::ReadOnlyFilesystem => "mount it read-write or choose another --store",
        io::ErrorKind::StorageFull => "free some space or choose another --store",
        io::ErrorKind::NotADirectory => {
            "every component of the path must be a directory; choose another --store"
        }
        _ if e.raw_os_error() == Some(libc::ELOOP) => {
            "replace the link with a real directory or file: tenure never follows links inside the store"
        }
        _ => "check the path or choose another --store",
    }
}

fn open_error(root: &Path, doing: &'static str, path: &Path, e: io::Error) -> DirOpenError {
    DirOpenError::Io {
        root: root.to_path_buf(),
        doing,
        path: path.to_path_buf(),
        source: e,
    }
}

/// Group or others may write (or, with the sticky bit, add entries) here.
const SHARED_WRITE: u32 = 0o022;

/// A folder of the store that group or others may write to; its `Display` names it, its mode
/// and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedFolder {
    pub path: PathBuf,
    /// The full mode (`st_mode`); the message shows its permission bits.
    pub mode: u32,
}

impl std::fmt::Display for SharedFolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = match (self.mode & 0o020 != 0, self.mode & 0o002 != 0) {
            (true, true) => "its group and all other users",
            (true, false) => "its group",
            _ => "all other users",
        };
        write!(
            f,
            "{} has mode {:04o}: {who} may write to it, and so replace the lease or forge records \
             — run `chmod 0700 {}` (or `chmod go-w`), or pass --allow-shared-permissions if \
             sharing it is deliberate",
            self.path.display(),
            self.mode & 0o7777,
            self.path.display()
        )
    }
}

/// A folder of the store that group or others may write to; `None` when only its owner may.
fn shared_folder(path: &Path, mode: u32) -> Option<SharedFolder> {
    if mode & SHARED_WRITE == 0 {
        return None;
    }
    Some(SharedFolder {
        path: path.to_path_buf(),
        mode,
    })
}

/// Why [`check_permissions`] refused a store.
#[derive(Debug, thiserror::Error)]
pub enum PermissionsError {
    /// The mode of a folder could not be read.
    #[error("cannot read the mode of {}: {source}", path.display())]
    ReadMode {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Group or others may write to these folders (never empty).
    #[error("permissions: {}", join_shared(.0))]
    Shared(Vec<SharedFolder>),
}

fn join_shared(folders: &[SharedFolder]) -> String {
    folders
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks that only its owner may write to the store's root and its `nodes/` and `epochs/`
/// folders (those that exist). `Ok` describes the modes; `Err` names the folder, its mode and
/// the fix. With `allow_shared` a shared folder is accepted, and `Ok` says so.
pub fn check_permissions(root: &Path, allow_shared: bool) -> Result<String, PermissionsError> {
    let mut shared = Vec::new();
    let mut modes = Vec::new();
    for name in ["", NODES, EPOCHS] {
        let path = if name.is_empty() {
            root.to_path_buf()
        } else {
            root.join(name)
        };
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !name.is_empty() => continue,
            Err(e) => return Err(PermissionsError::ReadMode { path, source: e }),
        };
        // A link or a file in place of a folder is refused by `open` with its own message.
        if !meta.is_dir() {
            continue;
        }
        let mode = meta.permissions().mode();
        modes.push(format!(
            "{} {:04o}",
            if name.is_empty() { "root" } else { name },
            mode & 0o7777
        ));
        if let Some(m) = shared_folder(&path, mode) {
            shared.push(m);
        }
    }
    match (shared.is_empty(), allow_shared) {
        (true, _) => Ok(format!(
            "permissions: only the owner may write ({})",
            modes.join(", ")
        )),
        (false, true) => Ok(format!(
            "permissions: shared with others, accepted by --allow-shared-permissions ({})",
            modes.join(", ")
        )),
        (false, false) => Err(PermissionsError::Shared(shared)),
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
        let store = DirStore {
            root: canonical,
            opts,
            lease: Mutex::new(None),
            mount,
            pinned_id: (pinned_meta.dev(), pinned_meta.ino()),
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
                .lease_handle(&mut guard)
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

    /// The root, opened afresh and checked to be the directory opened at start.
    fn top(&self) -> Result<Folder, StoreError> {
        let top = Folder::open_path(&self.root).map_err(|e| io_err("open", &self.root, e))?;
        let now = top
            .fd
            .metadata()
            .map_err(|e| io_err("stat", &self.root, e))?;
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
        match top.subfolder(name) {
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
    /// deleted by someone): a lock on a stale inode would exclude nobody.
    fn lease_handle<'g>(&self, slot: &'g mut Option<File>) -> Result<&'g File, StoreError> {
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
        for _ in 0..3 {
            let file = self.lease_handle(&mut guard)?;
            let lock = flock_polled(file, !exclusive, self.opts.lock_wait, &path)?;
            // The file may have been replaced while we waited for the lock.
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
            f.set_permissions(Permissions::from_mode(0o600))?;
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

impl Store for DirStore {
    fn read(&self, key: &str) -> Result<ReadResult, StoreError> {
        Self::check_key(key)?;
        if key == LEASE_KEY {
            return self.lease_read();
        }
        let (folder, name) = split_key(key);
        match self.folder(folder, false)? {
            None => Ok(ReadResult::Absent),
            Some(dir) => Self::read_record(&dir, name),
        }
    }

    fn create(&self, key: &str, bytes: &[u8]) -> Result<Version, StoreError> {
        Self::check_key(key)?;
        if key == LEASE_KEY {
            return self.lease_write(bytes, Cond::Create);
        }
        let (folder, name) = split_key(key);
        let dir = self.folder(folder, true)?.expect("created");
        let target = dir.child_path(name);
        let (temp, file) = Self::write_temp(&dir, name, bytes)?;
        // link() fails with EEXIST when the key exists: an atomic create-if-absent, also on
        // NFS. A retransmitted link can report an error although it worked; the temp file's
        // link count tells (the classic NFS lock-file check).
        let linked = match dir.link(&temp, name) {
            Ok(()) => Ok(()),
            Err(e) => match file.metadata() {
                Ok(m) if m.nlink() >= 2 => Ok(()),
                _ => Err(e),
            },
        };
        let _ = dir.unlink(&temp);
        match linked {
            Ok(()) => {
                dir.sync()?;
                Ok(content_version(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(StoreError::Conflict(format!("{} exists", target.display())))
            }
            Err(e) => Err(io_err("link", &target, e)),
        }
    }

    fn replace(&self, key: &str, bytes: &[u8], expected: &Version) -> Result<Version, StoreError> {
        Self::check_key(key)?;
        if key == LEASE_KEY {
            return self.lease_write(bytes, Cond::Replace(expected));
        }
        let (folder, name) = split_key(key);
        let Some(dir) = self.folder(folder, false)? else {
            return Err(StoreError::Conflict(format!(
                "{key} is absent, expected version {expected}"
            )));
        };
        // A sidecar lock makes read-compare-rename atomic among replacers.
        let lock_name = format!(".{name}.lock");
        let lock_path = dir.child_path(&lock_name);
        for _ in 0..3 {
            let (lock_file, _) =
                open_or_create(&dir, &lock_name).map_err(|e| io_err("open", &lock_path, e))?;
            let lock = flock_polled(&lock_file, false, self.opts.lock_wait, &lock_path)?;
            // Someone may have deleted the sidecar while we waited: then our lock is on an
            // orphan and excludes nobody.
            let held = lock_file
                .metadata()
                .map_err(|e| io_err("stat", &lock_path, e))?;
            match dir.lstat(&lock_name) {
                Ok(st) if st.st_dev == held.dev() && st.st_ino == held.ino() => {}
                _ => {
                    drop(lock);
                    continue;
                }
            }
            let current = match Self::read_record(&dir, name)? {
                ReadResult::Absent => {
                    return Err(StoreError::Conflict(format!(
                        "{key} is absent, expected version {expected}"
                    )));
                }
                ReadResult::Present(r) => r.version,
                ReadResult::Unreadable { version, .. } => version,
            };
            if current != *expected {
                return Err(StoreError::Conflict(format!(
                    "{key} is at version {current}, expected {expected}"
                )));
            }
            let v = Self::write_renamed(&dir, name, bytes);
            drop(lock);
            return v;
        }
        Err(StoreError::Unavailable(format!(
            "{} keeps being replaced by another process",
            lock_path.display()
        )))
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<Version, StoreError> {
        Self::check_key(key)?;
        if key == LEASE_KEY {
            return self.lease_write(bytes, Cond::Any);
        }
        let (folder, name) = split_key(key);
        let dir = self.folder(folder, true)?.expect("created");
        Self::write_renamed(&dir, name, bytes)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        validate_prefix(prefix)?;
        let folder = prefix.strip_suffix('/');
        let Some(dir) = self.folder(folder, false)? else {
            return Ok(Vec::new());
        };
        let names = dir
            .regular_files()
            .map_err(|e| io_err("list", &dir.path, e))?;
        let mut keys = Vec::new();
        for name in names {
            if name.starts_with('.') || validate_key(&name).is_err() {
                continue;
            }
            let key = match folder {
                None if name == LEASE_FILE => {
                    // The lock file always exists; the lease only once it has been written.
                    match dir.lstat(&name) {
                        Ok(st) if st.st_size > 0 => LEASE_KEY.to_string(),
                        _ => continue,
                    }
                }
                // A stray file literally named "lease" is not the lease in this backend.
                None if name == LEASE_KEY => continue,
                None => name,
                Some(f) => format!("{f}/{name}"),
            };
            keys.push(key);
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        Self::check_key(key)?;
        if key == LEASE_KEY {
            return Err(StoreError::InvalidKey(format!(
                "{key}: the lease cannot be deleted (its lock file provides mutual exclusion)"
            )));
        }
        let (folder, name) = split_key(key);
        let Some(dir) = self.folder(folder, false)? else {
            return Ok(());
        };
        match dir.unlink(name) {
            Ok(()) => dir.sync(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("delete", &dir.child_path(name), e)),
        }
    }

    fn describe(&self) -> String {
        format!("dir:{}", self.root.display())
    }
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
