//! A fault-injecting FUSE passthrough for the chaos campaign (docs/SAFETY.md).
//!
//! [`FaultFs::mount`] mounts a passthrough of a real backing directory at a mount point; each
//! node of a cluster gets its own mount of the same backing directory, so a fault can be put on
//! one node's view of the store while the others keep working. While mounted, [`FaultCtl::set`]
//! changes what every operation on that mount does:
//!
//! - [`Fault::Hang`]: no reply until the fault is cleared, as a dead NFS server (the caller
//!   blocks in the kernel). A caller that is sent SIGKILL while blocked gets `EINTR` at once, so
//!   kill -9 of a hung node still works (FUSE itself would wait uninterruptibly for a request
//!   the daemon has already read).
//! - [`Fault::Error`]: fail with an errno (`EIO` on every operation; `ENOSPC` / `EROFS` on the
//!   operations that modify the store).
//! - [`Fault::Delay`]: answer every operation after a delay.
//!
//! Locks: the directory store takes `flock(LOCK_EX | LOCK_NB)` on `lease.lock`. Without help,
//! FUSE keeps flock locks in the kernel per mount, so two mounts would not exclude each other.
//! The daemon asks for `FUSE_FLOCK_LOCKS`, and the kernel then sends every flock as a
//! `SETLK`/`SETLKW` request; it is applied with `flock` on the backing descriptor of that open
//! file (each FUSE open has its own backing open file description). Closing the file (the
//! kernel's `RELEASE`) closes the backing descriptor and so drops the lock. A lock taken through
//! one mount therefore excludes a lock through any other mount (tests/tests/faultfs.rs).
//!
//! Coherence: entry and attribute TTLs are 0 and every file is opened with `FOPEN_DIRECT_IO`,
//! so no node reads stale data through its own page cache.

use fuser::{
    AccessFlags, BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TTL: Duration = Duration::ZERO;

/// What the operations on one mount do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    /// Pass through.
    #[default]
    None,
    /// Never answer until the fault is changed (callers killed with SIGKILL get `EINTR`).
    Hang,
    /// Fail with this errno: `EIO` fails every operation, any other errno only the operations
    /// that modify the store (create, write, fsync, mkdir, link, rename, unlink, setattr, open
    /// for writing).
    Error(i32),
    /// Answer every operation this much later.
    Delay(Duration),
}

impl Fault {
    /// A short name for logs: `none`, `hang`, `EIO`, `delay-300ms`.
    pub fn name(&self) -> String {
        match self {
            Fault::None => "none".into(),
            Fault::Hang => "hang".into(),
            Fault::Error(e) => errno_name(*e).into(),
            Fault::Delay(d) => format!("delay-{}ms", d.as_millis()),
        }
    }
}

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EIO => "EIO",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EINTR => "EINTR",
        _ => "errno",
    }
}

/// A request held back by [`Fault::Hang`]: the caller's thread id and the operation, called
/// with `Some(errno)` to fail it or `None` to perform it.
type Parked = (u32, Box<dyn FnOnce(Option<Errno>) + Send>);

#[derive(Default)]
struct CtlState {
    fault: Fault,
    parked: Vec<Parked>,
    /// Operations answered with an injected error, held back, or delayed (for tests and logs).
    injected: u64,
}

/// The fault switch of one mount. Cheap to clone; every clone controls the same mount.
#[derive(Clone, Default)]
pub struct FaultCtl {
    state: Arc<Mutex<CtlState>>,
}

impl FaultCtl {
    fn lock(&self) -> std::sync::MutexGuard<'_, CtlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the fault of this mount. Leaving [`Fault::Hang`] performs the held-back requests
    /// (on a helper thread, in arrival order).
    pub fn set(&self, fault: Fault) {
        let released: Vec<Parked> = {
            let mut s = self.lock();
            s.fault = fault;
            if fault == Fault::Hang {
                Vec::new()
            } else {
                std::mem::take(&mut s.parked)
            }
        };
        if !released.is_empty() {
            std::thread::spawn(move || {
                for (_, op) in released {
                    op(None);
                }
            });
        }
    }

    /// The current fault.
    pub fn get(&self) -> Fault {
        self.lock().fault
    }

    /// How many requests are held back now.
    pub fn parked(&self) -> usize {
        self.lock().parked.len()
    }

    /// How many operations a fault has touched so far.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// Fails the held-back requests whose caller has a SIGKILL pending (or is gone), so a node
    /// blocked on a hung store can still be killed.
    fn reap_killed(&self) {
        let killed: Vec<Parked> = {
            let mut s = self.lock();
            let (dead, alive): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut s.parked)
                .into_iter()
                .partition(|(tid, _)| *tid != 0 && kill_pending(*tid));
            s.parked = alive;
            dead
        };
        for (_, op) in killed {
            op(Some(Errno::EINTR));
        }
    }

    /// Runs `op` now, later, or never, as the fault says. `modifies`: the operation changes the
    /// store (subject to `ENOSPC`/`EROFS`); `always`: an operation that must happen eventually
    /// (release: closing the backing descriptor drops its locks), never failed, only delayed or
    /// held back.
    fn gate(
        &self,
        req: &Request,
        modifies: bool,
        always: bool,
        op: impl FnOnce(Option<Errno>) + Send + 'static,
    ) {
        let mut s = self.lock();
        match s.fault {
            Fault::None => {
                drop(s);
                op(None)
            }
            Fault::Hang => {
                s.injected += 1;
                s.parked.push((req.pid(), Box::new(op)));
            }
            Fault::Error(e) if !always && (e == libc::EIO || modifies) => {
                s.injected += 1;
                drop(s);
                op(Some(Errno::from_i32(e)))
            }
            Fault::Error(_) => {
                drop(s);
                op(None)
            }
            Fault::Delay(d) => {
                s.injected += 1;
                drop(s);
                std::thread::spawn(move || {
                    std::thread::sleep(d);
                    op(None)
                });
            }
        }
    }
}

/// Is thread `tid` dying: SIGKILL pending, already exiting (a killed process closes its files
/// on the way out, and that close is a FUSE request too), or gone? From `/proc/<tid>/stat` and
/// `/proc/<tid>/status`.
fn kill_pending(tid: u32) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{tid}/stat")) else {
        return true;
    };
    // Fields after the command name (which may hold spaces): state is the first, flags the
    // seventh.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first().is_some_and(|s| *s == "Z" || *s == "X") {
        return true;
    }
    if fields
        .get(6)
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_EXITING != 0)
    {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return true;
    };
    const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
    status.lines().any(|l| {
        let Some((key, value)) = l.split_once(':') else {
            return false;
        };
        matches!(key, "SigPnd" | "ShdPnd")
            && u64::from_str_radix(value.trim(), 16).is_ok_and(|m| m & SIGKILL_BIT != 0)
    })
}

struct Node {
    /// Path relative to the backing root ("" for the root).
    rel: PathBuf,
    lookups: u64,
}

/// One entry of a directory listing: inode, type, name.
type DirEntry = (u64, FileType, OsString);

struct Inner {
    backing: PathBuf,
    root_ino: u64,
    nodes: Mutex<HashMap<u64, Node>>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    dirs: Mutex<HashMap<u64, Vec<DirEntry>>>,
    next_fh: AtomicU64,
    ctl: FaultCtl,
}

fn errno_of(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn lstat(p: &Path) -> io::Result<libc::stat> {
    let c = cpath(p)?;
    // SAFETY: a zeroed stat is a valid out-buffer; c is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::lstat(c.as_ptr(), &mut st) })?;
    Ok(st)
}

fn fstat(f: &File) -> io::Result<libc::stat> {
    // SAFETY: as above, on an open descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstat(f.as_raw_fd(), &mut st) })?;
    Ok(st)
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH
    }
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

impl Inner {
    fn ino_of(&self, st: &libc::stat) -> u64 {
        if st.st_ino == self.root_ino {
            1
        } else {
            st.st_ino
        }
    }

    fn attr(&self, st: &libc::stat) -> FileAttr {
        FileAttr {
            ino: INodeNo(self.ino_of(st)),
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: kind_of(st.st_mode),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
            flags: 0,
        }
    }

    fn rel(&self, ino: INodeNo) -> Option<PathBuf> {
        if ino.0 == 1 {
            return Some(PathBuf::new());
        }
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.get(&ino.0).map(|n| n.rel.clone())
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.rel(ino)
            .map(|r| self.backing.join(r))
            .ok_or(Errno::ESTALE)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<(PathBuf, PathBuf), Errno> {
        let rel = self.rel(parent).ok_or(Errno::ESTALE)?.join(name);
        Ok((self.backing.join(&rel), rel))
    }

    /// Records a lookup of `rel` (now inode `st`) and returns its attributes.
    fn remember(&self, rel: PathBuf, st: &libc::stat) -> FileAttr {
        let attr = self.attr(st);
        if attr.ino.0 != 1 {
            let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            let n = nodes.entry(attr.ino.0).or_insert(Node {
                rel: rel.clone(),
                lookups: 0,
            });
            n.rel = rel;
            n.lookups += 1;
        }
        attr
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn add_file(&self, f: File) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.insert(fh, Arc::new(f));
        fh
    }

    fn open_path(&self, path: &Path, flags: i32, mode: u32) -> io::Result<File> {
        let c = cpath(path)?;
        // SAFETY: NUL-terminated path; the descriptor is owned by the returned File.
        let fd = cvt(unsafe {
            libc::open(
                c.as_ptr(),
                flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                mode as libc::c_uint,
            )
        })?;
        Ok(unsafe { File::from_raw_fd(fd) })
    }
}

/// The passthrough filesystem of one mount.
pub struct FaultFs {
    inner: Arc<Inner>,
}

/// A mounted [`FaultFs`]: unmounted (lazily, so open files never block it) when dropped, after
/// clearing its fault so no request stays held back.
pub struct Mounted {
    pub mountpoint: PathBuf,
    pub ctl: FaultCtl,
    session: Option<BackgroundSession>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Mounted {
    /// Unmounts now (same as dropping).
    pub fn unmount(self) {}
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.ctl.set(Fault::None);
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(c) = cpath(&self.mountpoint) {
            // SAFETY: plain umount2 on a NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        // Dropping the session tries the same unmount again (harmless) and does not join.
        drop(self.session.take());
    }
}

impl FaultFs {
    /// Mounts a passthrough of `backing` at `mountpoint` (both existing directories).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<Mounted> {
        let backing = backing.canonicalize()?;
        let root = lstat(&backing)?;
        let ctl = FaultCtl::default();
        let inner = Arc::new(Inner {
            backing,
            root_ino: root.st_ino,
            nodes: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            ctl: ctl.clone(),
        });
        let mut cfg = Config::default();
        cfg.mount_options = vec![
            MountOption::FSName("faultfs".into()),
            MountOption::Subtype("faultfs".into()),
            MountOption::RW,
            MountOption::NoAtime,
        ];
        cfg.n_threads = Some(2);
        let session = fuser::spawn_mount(FaultFs { inner }, mountpoint, &cfg)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Watch held-back requests for callers killed while blocked.
        {
            let ctl = ctl.clone();
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("faultfs-reaper".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                        ctl.reap_killed();
                    }
                })?;
        }
        Ok(Mounted {
            mountpoint: mountpoint.to_path_buf(),
            ctl,
            session: Some(session),
            stop,
        })
    }
}

/// Is `path` a mount point of a faultfs (per `/proc/self/mountinfo`: type `fuse` or
/// `fuse.faultfs`, source `faultfs`)?
pub fn is_mounted(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    tenure_persistence::mount::parse_mountinfo(&text)
        .iter()
        .any(|e| e.mount_point.to_string_lossy() == want && e.source == "faultfs")
}

fn set_times(path: &Path, atime: Option<TimeOrNow>, mtime: Option<TimeOrNow>) -> io::Result<()> {
    let ts = |t: Option<TimeOrNow>| match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            }
        }
    };
    let times = [ts(atime), ts(mtime)];
    let c = cpath(path)?;
    // SAFETY: valid path and a two-element timespec array.
    cvt(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

impl Filesystem for FaultFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // flock goes to the daemon (SETLK with FUSE_LK_FLOCK), not the kernel's per-mount table.
        config
            .add_capabilities(InitFlags::FUSE_FLOCK_LOCKS)
            .map_err(|_| io::Error::other("the kernel does not offer FUSE_FLOCK_LOCKS"))?;
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let inner = Arc::clone(&self.inner);
        let name = name.to_os_string();
        self.inner.ctl.gate(req, false, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let (path, rel) = match inner.child(parent, &name) {
                Ok(p) => p,
                Err(e) => return reply.error(e),
            };
            match lstat(&path) {
                Ok(st) => reply.entry(&TTL, &inner.remember(rel, &st), Generation(0)),
                Err(e) => reply.error(errno_of(&e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut nodes = self.inner.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = nodes.get_mut(&ino.0) {
            n.lookups = n.lookups.saturating_sub(nlookup);
            if n.lookups == 0 {
                nodes.remove(&ino.0);
            }
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let inner = Arc::clone(&self.inner);
        self.inner.ctl.gate(req, false, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let st = match fh.map(|fh| inner.file(fh)) {
                Some(Ok(f)) => fstat(&f),
                _ => match inner.path(ino) {
                    // The path may name another file by now (deleted and created again):
                    // that is not this inode, which is gone — ESTALE, as NFS answers for a
                    // file handle whose file was deleted by another client.
                    Ok(p) => match lstat(&p) {
                        Ok(st) if ino.0 != 1 && inner.ino_of(&st) != ino.0 => {
                            return reply.error(Errno::ESTALE);
                        }
                        other => other,
                    },
                    Err(e) => return reply.error(e),
                },
            };
            match st {
                Ok(st) => reply.attr(&TTL, &inner.attr(&st)),
                Err(e) => reply.error(errno_of(&e)),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let inner = Arc::clone(&self.inner);
        self.inner.ctl.gate(req, true, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let run = || -> io::Result<libc::stat> {
                let file = fh.and_then(|fh| inner.file(fh).ok());
                let path = inner
                    .path(ino)
                    .map_err(|e| io::Error::from_raw_os_error(e.code()))?;
                let c = cpath(&path)?;
                if let Some(m) = mode {
                    match &file {
                        // SAFETY: fchmod/chmod on an open descriptor or a valid path.
                        Some(f) => cvt(unsafe { libc::fchmod(f.as_raw_fd(), m & 0o7777) })?,
                        None => cvt(unsafe { libc::chmod(c.as_ptr(), m & 0o7777) })?,
                    };
                }
                if uid.is_some() || gid.is_some() {
                    let (u, g) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
                    // SAFETY: lchown on a valid path; -1 keeps an id.
                    cvt(unsafe { libc::lchown(c.as_ptr(), u, g) })?;
                }
                if let Some(s) = size {
                    match &file {
                        Some(f) => f.set_len(s)?,
                        // SAFETY: truncate on a valid path.
                        None => {
                            cvt(unsafe { libc::truncate(c.as_ptr(), s as libc::off_t) })?;
                        }
                    }
                }
                if atime.is_some() || mtime.is_some() {
                    set_times(&path, atime, mtime)?;
                }
                match &file {
                    Some(f) => fstat(f),
                    None => lstat(&path),
                }
            };
            match run() {
                Ok(st) => reply.attr(&TTL, &inner.attr(&st)),
                Err(e) => reply.error(errno_of(&e)),
            }
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let inner = Arc::clone(&self.inner);
        self.inner.ctl.gate(req, false, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            match inner.path(ino).map(std::fs::read_link) {
                Ok(Ok(t)) => reply.data(t.as_os_str().as_bytes()),
                Ok(Err(e)) => reply.error(errno_of(&e)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let inner = Arc::clone(&self.inner);
        let name = name.to_os_string();
        self.inner.ctl.gate(req, true, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let (path, rel) = match inner.child(parent, &name) {
                Ok(p) => p,
                Err(e) => return reply.error(e),
            };
            let run = || -> io::Result<libc::stat> {
                let c = cpath(&path)?;
                // SAFETY: mkdir on a valid path.
                cvt(unsafe { libc::mkdir(c.as_ptr(), (mode & !umask) as libc::mode_t) })?;
                lstat(&path)
            };
            match run() {
                Ok(st) => reply.entry(&TTL, &inner.remember(rel, &st), Generation(0)),
                Err(e) => reply.error(errno_of(&e)),
            }
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(req, parent, name, false, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(req, parent, name, true, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let inner = Arc::clone(&self.inner);
        let name = link_name.to_os_string();
        let target = target.to_path_buf();
        self.inner.ctl.gate(req, true, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let (path, rel) = match inner.child(parent, &name) {
                Ok(p) => p,
                Err(e) => return reply.error(e),
            };
            match std::os::unix::fs::symlink(&target, &path).and_then(|()| lstat(&path)) {
                Ok(st) => reply.entry(&TTL, &inner.remember(rel, &st), Generation(0)),
                Err(e) => reply.error(errno_of(&e)),
            }
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let inner = Arc::clone(&self.inner);
        let (name, newname) = (name.to_os_string(), newname.to_os_string());
        self.inner.ctl.gate(req, true, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let run = || -> Result<(), Errno> {
                let (from, from_rel) = inner.child(parent, &name)?;
                let (to, to_rel) = inner.child(newparent, &newname)?;
                let (a, b) = (
                    cpath(&from).map_err(|e| errno_of(&e))?,
                    cpath(&to).map_err(|e| errno_of(&e))?,
                );
                // SAFETY: renameat2 on valid paths.
                let r = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        flags.bits(),
                    )
                };
                cvt(r).map_err(|e| errno_of(&e))?;
                // Entries under the old name now live under the new one.
                let mut nodes = inner.nodes.lock().unwrap_or_else(|e| e.into_inner());
                for n in nodes.values_mut() {
                    if let Ok(rest) = n.rel.strip_prefix(&from_rel) {
                        n.rel = if rest.as_os_str().is_empty() {
                            to_rel.clone()
                        } else {
                            to_rel.join(rest)
                        };
                    }
                }
                Ok(())
            };
            match run() {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let inner = Arc::clone(&self.inner);
        let newname = newname.to_os_string();
        self.inner.ctl.gate(req, true, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let run = || -> Result<(libc::stat, PathBuf), Errno> {
                let from = inner.path(ino)?;
                let (to, to_rel) = inner.child(newparent, &newname)?;
                std::fs::hard_link(&from, &to).map_err(|e| errno_of(&e))?;
                Ok((lstat(&to).map_err(|e| errno_of(&e))?, to_rel))
            };
            match run() {
                Ok((st, rel)) => reply.entry(&TTL, &inner.remember(rel, &st), Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let inner = Arc::clone(&self.inner);
        let writes = flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        self.inner.ctl.gate(req, writes, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let keep = libc::O_ACCMODE
                | libc::O_APPEND
                | libc::O_NONBLOCK
                | libc::O_SYNC
                | libc::O_DSYNC
                | libc::O_TRUNC;
            let run = || -> Result<u64, Errno> {
                let path = inner.path(ino)?;
                let f = inner
                    .open_path(&path, flags.0 & keep, 0)
                    .map_err(|e| errno_of(&e))?;
                Ok(inner.add_file(f))
            };
            match run() {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let inner = Arc::clone(&self.inner);
        self.inner.ctl.gate(req, false, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let f = match inner.file(fh) {
                Ok(f) => f,
                Err(e) => return reply.error(e),
            };
            let mut buf = vec![0u8; size as usize];
            let mut got = 0;
            while got < buf.len() {
                match f.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return reply.error(errno_of(&e)),
                }
            }
            reply.data(&buf[..got]);
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let inner = Arc::clone(&self.inner);
        let data = data.to_vec();
        self.inner.ctl.gate(req, true, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            match inner.file(fh).map(|f| f.write_all_at(&data, offset)) {
                Ok(Ok(())) => reply.written(data.len() as u32),
                Ok(Err(e)) => reply.error(errno_of(&e)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.inner
            .ctl
            .gate(req, false, false, move |inj| match inj {
                Some(e) => reply.error(e),
                None => reply.ok(),
            });
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let inner = Arc::clone(&self.inner);
        self.inner.ctl.gate(req, false, true, move |_| {
            // Closing the backing descriptor drops any flock taken through it.
            let f = inner
                .files
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&fh.0);
            drop(f);
            reply.ok();
        });
    }

    fn fsync(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let inner = Arc::clone(&self.inner);
        self.inner.ctl.gate(req, true, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let r = inner.file(fh).map(|f| {
                if datasync {
                    f.sync_data()
                } else {
                    f.sync_all()
                }
            });
            match r {
                Ok(Ok(())) => reply.ok(),
                Ok(Err(e)) => reply.error(errno_of(&e)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let inner = Arc::clone(&self.inner);
        self.inner.ctl.gate(req, false, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let run = || -> Result<u64, Errno> {
                let path = inner.path(ino)?;
                let me = lstat(&path).map_err(|e| errno_of(&e))?;
                let mut entries = vec![
                    (inner.ino_of(&me), FileType::Directory, OsString::from(".")),
                    (1, FileType::Directory, OsString::from("..")),
                ];
                for e in std::fs::read_dir(&path).map_err(|e| errno_of(&e))? {
                    let e = e.map_err(|e| errno_of(&e))?;
                    let Ok(st) = lstat(&e.path()) else { continue };
                    entries.push((inner.ino_of(&st), kind_of(st.st_mode), e.file_name()));
                }
                let fh = inner.next_fh.fetch_add(1, Ordering::Relaxed);
                inner
                    .dirs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(fh, entries);
                Ok(fh)
            };
            match run() {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let inner = Arc::clone(&self.inner);
        self.inner.ctl.gate(req, false, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let dirs = inner.dirs.lock().unwrap_or_else(|e| e.into_inner());
            let Some(entries) = dirs.get(&fh.0) else {
                return reply.error(Errno::EBADF);
            };
            for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
                if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.inner
            .dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let inner = Arc::clone(&self.inner);
        self.inner.ctl.gate(req, true, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let r = inner
                .path(ino)
                .map(|p| File::open(p).and_then(|d| d.sync_all()));
            match r {
                Ok(Ok(())) => reply.ok(),
                Ok(Err(e)) => reply.error(errno_of(&e)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let inner = Arc::clone(&self.inner);
        self.inner.ctl.gate(req, false, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let run = || -> io::Result<libc::statvfs> {
                let c = cpath(&inner.backing)?;
                // SAFETY: a zeroed statvfs is a valid out-buffer.
                let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
                cvt(unsafe { libc::statvfs(c.as_ptr(), &mut s) })?;
                Ok(s)
            };
            match run() {
                Ok(s) => reply.statfs(
                    s.f_blocks,
                    s.f_bfree,
                    s.f_bavail,
                    s.f_files,
                    s.f_ffree,
                    s.f_bsize as u32,
                    s.f_namemax as u32,
                    s.f_frsize as u32,
                ),
                Err(e) => reply.error(errno_of(&e)),
            }
        });
    }

    fn access(&self, req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        self.inner
            .ctl
            .gate(req, false, false, move |inj| match inj {
                Some(e) => reply.error(e),
                None => reply.ok(),
            });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let inner = Arc::clone(&self.inner);
        let name = name.to_os_string();
        self.inner.ctl.gate(req, true, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let run = || -> Result<(libc::stat, PathBuf, u64), Errno> {
                let (path, rel) = inner.child(parent, &name)?;
                let keep = libc::O_ACCMODE
                    | libc::O_APPEND
                    | libc::O_NONBLOCK
                    | libc::O_SYNC
                    | libc::O_DSYNC
                    | libc::O_TRUNC
                    | libc::O_CREAT
                    | libc::O_EXCL;
                let f = inner
                    .open_path(
                        &path,
                        (flags & keep) | libc::O_CREAT,
                        mode & !umask & 0o7777,
                    )
                    .map_err(|e| errno_of(&e))?;
                let st = fstat(&f).map_err(|e| errno_of(&e))?;
                Ok((st, rel, inner.add_file(f)))
            };
            match run() {
                Ok((st, rel, fh)) => reply.created(
                    &TTL,
                    &inner.remember(rel, &st),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_DIRECT_IO,
                ),
                Err(e) => reply.error(e),
            }
        });
    }

    fn getlk(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        let inner = Arc::clone(&self.inner);
        self.inner.ctl.gate(req, false, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            // Only flock is used through this filesystem; report whether a conflicting flock
            // exists by trying one on a second descriptor of the same file.
            let run = || -> io::Result<bool> {
                let f = inner
                    .file(fh)
                    .map_err(|e| io::Error::from_raw_os_error(e.code()))?;
                let path = format!("/proc/self/fd/{}", f.as_raw_fd());
                let probe = File::open(path)?;
                let op = if typ == libc::F_RDLCK {
                    libc::LOCK_SH
                } else {
                    libc::LOCK_EX
                };
                // SAFETY: flock on an open descriptor.
                let free = unsafe { libc::flock(probe.as_raw_fd(), op | libc::LOCK_NB) } == 0;
                Ok(free)
            };
            match run() {
                Ok(true) => reply.locked(start, end, libc::F_UNLCK, 0),
                Ok(false) => reply.locked(start, end, typ, 0),
                Err(e) => reply.error(errno_of(&e)),
            }
        });
    }

    fn setlk(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        typ: i32,
        _pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let inner = Arc::clone(&self.inner);
        let tid = req.pid();
        let modifies = typ == libc::F_WRLCK;
        self.inner.ctl.gate(req, modifies, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let f = match inner.file(fh) {
                Ok(f) => f,
                Err(e) => return reply.error(e),
            };
            let op = match typ {
                libc::F_RDLCK => libc::LOCK_SH,
                libc::F_WRLCK => libc::LOCK_EX,
                _ => libc::LOCK_UN,
            };
            // SAFETY: flock on an open descriptor.
            let try_once = || unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) };
            if try_once() == 0 {
                return reply.ok();
            }
            let err = io::Error::last_os_error();
            if !sleep || err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return reply.error(errno_of(&err));
            }
            // A blocking flock (SETLKW): poll on a helper thread so the session keeps serving,
            // and give up when the caller is killed.
            std::thread::spawn(move || {
                let start = Instant::now();
                loop {
                    std::thread::sleep(Duration::from_millis(5));
                    // SAFETY: as above.
                    if unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
                        return reply.ok();
                    }
                    if kill_pending(tid) || start.elapsed() > Duration::from_secs(600) {
                        return reply.error(Errno::EINTR);
                    }
                }
            });
        });
    }
}

impl FaultFs {
    fn remove(&self, req: &Request, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        let inner = Arc::clone(&self.inner);
        let name = name.to_os_string();
        self.inner.ctl.gate(req, true, false, move |inj| {
            if let Some(e) = inj {
                return reply.error(e);
            }
            let r = inner.child(parent, &name).map(|(p, _)| {
                if dir {
                    std::fs::remove_dir(p)
                } else {
                    std::fs::remove_file(p)
                }
            });
            match r {
                Ok(Ok(())) => reply.ok(),
                Ok(Err(e)) => reply.error(errno_of(&e)),
                Err(e) => reply.error(e),
            }
        });
    }
}
