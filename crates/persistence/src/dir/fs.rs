//! The file-system primitives of the directory store: the *at() system calls (through rustix)
//! on a directory descriptor opened without following links, temporary names, the polled
//! `flock`, and the errors a deleted handle reports.

use super::*;

/// An open directory and the path it was opened at (for messages).
pub(super) struct Folder {
    pub(super) fd: Arc<File>,
    pub(super) path: PathBuf,
}

impl Folder {
    /// Open `path` as a directory without following a link in its last component.
    pub(super) fn open_path(path: &Path) -> io::Result<Folder> {
        let fd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Folder {
            fd: Arc::new(fd),
            path: path.to_path_buf(),
        })
    }

    pub(super) fn child_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Open an entry, never following a link (`ELOOP` on one).
    pub(super) fn openat(&self, name: &str, flags: OFlags, mode: u32) -> io::Result<File> {
        let fd = rfs::openat(
            &*self.fd,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        Ok(File::from(fd))
    }

    pub(super) fn subfolder(&self, name: &str) -> io::Result<Folder> {
        let fd = self.openat(name, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
        Ok(Folder {
            fd: Arc::new(fd),
            path: self.child_path(name),
        })
    }

    pub(super) fn mkdir(&self, name: &str) -> io::Result<()> {
        Ok(rfs::mkdirat(&*self.fd, name, Mode::from_raw_mode(0o700))?)
    }

    pub(super) fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(rfs::renameat(&*self.fd, from, &*self.fd, to)?)
    }

    /// A hard link; `from` itself is not followed if it is a link.
    pub(super) fn link(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(rfs::linkat(
            &*self.fd,
            from,
            &*self.fd,
            to,
            AtFlags::empty(),
        )?)
    }

    pub(super) fn unlink(&self, name: &str) -> io::Result<()> {
        Ok(rfs::unlinkat(&*self.fd, name, AtFlags::empty())?)
    }

    /// `lstat` of an entry (a link is described, not followed).
    pub(super) fn lstat(&self, name: &str) -> io::Result<rfs::Stat> {
        Ok(rfs::statat(&*self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// Make new entries durable. Some filesystems cannot fsync a directory (EINVAL); there
    /// is nothing better to do there.
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        match self.fd.sync_all() {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTSUP)) => {
                Ok(())
            }
            r => r.map_err(|e| io_err("sync", &self.path, e)),
        }
    }

    /// Names of regular files in this folder (not `.` or `..`).
    pub(super) fn regular_files(&self) -> io::Result<Vec<String>> {
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
pub(super) fn open_or_create(dir: &Folder, name: &str) -> io::Result<(File, bool)> {
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

pub(super) fn io_err(op: &str, path: &Path, e: io::Error) -> StoreError {
    let hint = if e.raw_os_error() == Some(libc::ELOOP) {
        " (a symbolic link: tenure does not follow links inside the store)"
    } else {
        ""
    };
    StoreError::Unavailable(format!("{op} {}: {e}{hint}", path.display()))
}

pub(super) fn is_regular(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_file()
}

/// A version for something that is not a regular file (link, directory, fifo): changes when
/// the entry is replaced or modified.
pub(super) fn stat_version(mode: u32, ino: u64, size: i64, mtime: i64, mtime_nsec: i64) -> Version {
    let mut h = Xxh3::new();
    for v in [mode as i64, ino as i64, size, mtime, mtime_nsec] {
        h.update(&v.to_le_bytes());
    }
    Version(format!("n{:016x}", h.digest()))
}

pub(super) static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `.<name>.<unique>.tmp`: starts with a dot so `list` and `validate_key` never see it; unique
/// across processes (pid) and threads (counter), and across restarts reusing a pid (time).
pub(super) fn temp_name(name: &str) -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Keep the whole name under the 255-byte limit.
    let short: String = name.chars().take(128).collect();
    format!(
        ".{short}.{:x}-{n:x}-{:x}.tmp",
        pid(),
        nanos & 0xffff_ffff_ffff
    )
}

/// This process's id, asked of the kernel once (a `getpid` per write otherwise).
fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// Whether the process's umask leaves the owner's read and write bits of a new file alone
/// (`/proc/self/status`, read once), so that a file created 0600 is 0600 without a `chmod`.
/// Unknown: no.
pub(super) fn umask_keeps_owner_rw() -> bool {
    static KEEPS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KEEPS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .is_some_and(|mask| mask & 0o600 == 0)
    })
}

/// Wait for a flock without ever blocking indefinitely: poll `try_lock` with short sleeps.
pub(super) fn flock_polled<'a>(
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
pub(super) struct Flocked<'a>(pub(super) &'a File);

impl Drop for Flocked<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.unlock() {
            tracing::warn!("unlock failed: {e}");
        }
    }
}

/// An open handle whose file was deleted by someone else, as the file system reports it on
/// `fstat`: ESTALE (NFS), ENOENT (FUSE passthroughs that resolve handles by path).
pub(super) fn handle_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESTALE)
}
