//! Why the directory store refuses to open, worded for the operator (each message names the
//! store and the fix), and the permission check of the store's folders.

use super::*;

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
pub(super) fn io_what(e: &io::Error) -> String {
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
pub(super) fn io_fix(e: &io::Error) -> &'static str {
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

pub(super) fn open_error(
    root: &Path,
    doing: &'static str,
    path: &Path,
    e: io::Error,
) -> DirOpenError {
    DirOpenError::Io {
        root: root.to_path_buf(),
        doing,
        path: path.to_path_buf(),
        source: e,
    }
}

/// Group or others may write (or, with the sticky bit, add entries) here.
pub(super) const SHARED_WRITE: u32 = 0o022;

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
pub(super) fn shared_folder(path: &Path, mode: u32) -> Option<SharedFolder> {
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

pub(super) fn join_shared(folders: &[SharedFolder]) -> String {
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
