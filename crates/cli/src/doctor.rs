//! `tenure doctor --store …`: check what can be checked about a store before nodes use it
//! (DESIGN §4), print a checklist, exit 0 when every check passed and 1 otherwise.
//!
//! Everything it writes goes under `probe/` with a random name (and `probe/*.lock` for the
//! lock test) and is deleted afterwards, so it is safe on a store a live cluster uses: it never
//! touches the lease, `cluster.json`, `epochs/` or `nodes/`.

use crate::args::DoctorArgs;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenure_persistence::{
    DirOptions, DirStore, ObjOptions, ObjStore, StoreLocation, mount, probe_conditional_writes,
    probe_create_race, probe_key, probe_replace_race,
};
use tenure_store::{ReadResult, Store};

/// Contenders in the create and replace races.
const RACERS: usize = 16;
/// Timed write + read pairs for the latency figures.
const LATENCY_SAMPLES: usize = 10;

#[derive(Default)]
struct Checklist {
    failed: usize,
    /// Checks that could not finish (a timeout in a race): neither passed nor failed.
    inconclusive: usize,
}

impl Checklist {
    fn pass(&mut self, msg: impl std::fmt::Display) {
        println!("  ✓ {msg}");
    }
    fn fail(&mut self, msg: impl std::fmt::Display) {
        self.failed += 1;
        println!("  ✗ {msg}");
    }
    fn check(&mut self, r: Result<String, String>) -> bool {
        match r {
            Ok(m) => {
                self.pass(m);
                true
            }
            Err(m) => {
                self.fail(m);
                false
            }
        }
    }
    fn inconclusive(&mut self, msg: impl std::fmt::Display) {
        self.inconclusive += 1;
        println!("  ? {msg}");
    }
    fn cannot(&mut self, msg: impl std::fmt::Display) {
        println!("  ? cannot check: {msg}");
    }
}

pub fn main(a: DoctorArgs) -> u8 {
    let mut list = Checklist::default();
    println!("tenure doctor: {}", a.store);
    if a.storage_timeout.is_zero() {
        eprintln!("tenure doctor: --storage-timeout must be more than zero");
        return 2;
    }
    match StoreLocation::parse(&a.store) {
        Ok(StoreLocation::Object(_)) => object_store(&a, &mut list),
        Ok(StoreLocation::Directory(path)) => directory(&path, &a, &mut list),
        Err(e) => {
            eprintln!("tenure doctor: {e}");
            return 2;
        }
    }
    if list.failed == 0 && list.inconclusive > 0 {
        println!(
            "{} check{} inconclusive: no verdict on this store yet; run tenure doctor again (with a larger --storage-timeout)",
            list.inconclusive,
            if list.inconclusive == 1 {
                " was"
            } else {
                "s were"
            }
        );
        1
    } else if list.failed == 0 {
        println!("all checks passed");
        0
    } else {
        println!(
            "{} check{} failed: fix {} before running nodes on this store",
            list.failed,
            if list.failed == 1 { "" } else { "s" },
            if list.failed == 1 { "it" } else { "them" }
        );
        1
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn object_store(a: &DoctorArgs, list: &mut Checklist) {
    let opts = ObjOptions {
        timeout: a.storage_timeout,
        ..ObjOptions::default()
    };
    let store = match ObjStore::open(&a.store, opts.clone()) {
        Ok(s) => {
            list.pass(format!(
                "configuration: {} (storage timeout {})",
                a.store,
                humantime::format_duration(a.storage_timeout)
            ));
            s
        }
        Err(e) => {
            list.fail(e);
            return;
        }
    };
    let t = Instant::now();
    let reachable = list.check(match store.list("") {
        Ok(keys) => Ok(format!(
            "reachable with these credentials: listed the prefix in {} ({})",
            ms(t.elapsed()),
            describe_contents(&store, &keys)
        )),
        Err(e) => Err(format!("cannot list the prefix: {e}")),
    });
    if !reachable {
        return;
    }
    conditional_writes(&store, list, || {
        ObjStore::open(&a.store, opts.clone()).map(|s| Arc::new(s) as Arc<dyn Store>)
    });
    latency(&store, a.storage_timeout, list);
    list.cannot("that every node uses this same bucket, prefix, endpoint and heartbeat timeout");
    list.cannot(
        "that the service keeps conditional writes atomic under failures (AWS S3, GCS and Azure document it; \
         for other S3-compatible servers, ask their vendor)",
    );
    list.cannot("clock-rate differences between the nodes (ρ, --clock-drift)");
}

fn directory(path: &Path, a: &DoctorArgs, list: &mut Checklist) {
    let opts = DirOptions {
        allow_nlm: a.allow_nlm,
        lock_wait: a.storage_timeout,
        // Reported below as checks of their own, so the others still run.
        check_mount: false,
        allow_shared_permissions: true,
        // Nothing outside probe/: a store no node has used yet stays as it was.
        create_layout: false,
    };
    let store = match DirStore::open(path, opts.clone()) {
        Ok(s) => s,
        Err(e) => {
            list.fail(e);
            return;
        }
    };
    list.check(
        mount::check(store.root(), a.allow_nlm)
            .map(|m| {
                let note = m.note.map(|n| format!("; {n}")).unwrap_or_default();
                format!(
                    "mount: {} on {} ({}), options {}{note}",
                    m.fstype,
                    m.mount_point.display(),
                    m.source,
                    m.options.join(",")
                )
            })
            .map_err(|e| format!("mount: {e}")),
    );
    list.check(
        tenure_persistence::check_permissions(store.root(), a.allow_shared_permissions)
            .map_err(|e| e.to_string()),
    );
    match store.list("") {
        Ok(keys) => list.pass(format!(
            "readable: {} ({})",
            store.root().display(),
            describe_contents(&store, &keys)
        )),
        Err(e) => list.fail(format!("cannot list {}: {e}", store.root().display())),
    }
    list.check(lock_exclusion(store.root()));
    let root = store.root().to_path_buf();
    conditional_writes(&store, list, || {
        DirStore::open(&root, opts.clone()).map(|s| Arc::new(s) as Arc<dyn Store>)
    });
    latency(&store, a.storage_timeout, list);
    // The probes' records are gone; the lock files the directory backend keeps beside records
    // are not: remove the whole probe folder, which only the doctor uses.
    let _ = std::fs::remove_dir_all(store.root().join("probe"));
    list.cannot(
        "lock exclusion against other hosts: only between two processes on this one; on NFS the mount options \
         checked above are what make it hold across hosts",
    );
    list.cannot("that every node mounts this same directory and uses the same heartbeat timeout");
    list.cannot("clock-rate differences between the nodes (ρ, --clock-drift)");
}

/// What the store holds, for the reachability line.
fn describe_contents(store: &dyn Store, top: &[String]) -> String {
    let nodes = store.list("nodes/").map(|n| n.len()).unwrap_or(0);
    let cluster = top.iter().any(|k| k == "cluster.json");
    let lease = top.iter().any(|k| k == tenure_store::LEASE_KEY);
    if !cluster && !lease && nodes == 0 {
        "no cluster yet".to_string()
    } else {
        format!(
            "{}{}, {nodes} node record{}",
            if cluster {
                "cluster.json"
            } else {
                "no cluster.json"
            },
            if lease { ", a lease" } else { ", no lease" },
            if nodes == 1 { "" } else { "s" }
        )
    }
}

/// The conditional-write probe on one handle, a create race between independently opened
/// handles, and read-after-write from one handle to another.
fn conditional_writes<E: std::fmt::Display>(
    store: &dyn Store,
    list: &mut Checklist,
    open: impl Fn() -> Result<Arc<dyn Store>, E>,
) {
    list.check(
        probe_conditional_writes(store)
            .map(|()| {
                "conditional writes enforced: a second create-if-absent and replaces on a wrong and a stale \
                 version each lost"
                    .to_string()
            })
            .map_err(|e| e.to_string()),
    );
    let handles: Result<Vec<Arc<dyn Store>>, E> = (0..RACERS).map(|_| open()).collect();
    match handles {
        Ok(handles) => {
            for (race, what) in [
                (probe_create_race as fn(&[Arc<dyn Store>]) -> _, "create"),
                (probe_replace_race, "replace-on-one-version"),
            ] {
                match race(&handles) {
                    Ok(n) => list.pass(format!(
                        "{n}-way {what} race between separately opened handles: exactly one won"
                    )),
                    Err(e) if e.is_verdict() => list.fail(e),
                    Err(e) => list.inconclusive(e),
                }
            }
        }
        Err(e) => list.fail(format!("cannot open {RACERS} handles for the race: {e}")),
    };
    let other = match open() {
        Ok(o) => o,
        Err(e) => {
            list.fail(format!("cannot open a second handle: {e}"));
            return;
        }
    };
    let key = probe_key();
    let body = format!("{{\"doctor\":\"{key}\"}}");
    let r = store
        .put(&key, body.as_bytes())
        .map_err(|e| format!("read-after-write: cannot write {key}: {e}"))
        .and_then(|v| match other.read(&key) {
            Ok(ReadResult::Present(r)) if r.bytes == body.as_bytes() && r.version == v => Ok(
                "read-after-write: a record written through one handle reads back at once through another"
                    .to_string(),
            ),
            Ok(got) => Err(format!(
                "read-after-write: {key} written through one handle read back through another as {got:?}"
            )),
            Err(e) => Err(format!("read-after-write: cannot read {key}: {e}")),
        });
    let _ = store.delete(&key);
    list.check(r);
}

/// Timed writes and reads of a probe record against the storage timeout.
fn latency(store: &dyn Store, timeout: Duration, list: &mut Checklist) {
    let key = probe_key();
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    let mut failure = None;
    for i in 0..LATENCY_SAMPLES {
        let body = format!("{{\"sample\":{i}}}");
        let t = Instant::now();
        if let Err(e) = store.put(&key, body.as_bytes()) {
            failure = Some(format!("write: {e}"));
            break;
        }
        writes.push(t.elapsed());
        let t = Instant::now();
        if let Err(e) = store.read(&key) {
            failure = Some(format!("read: {e}"));
            break;
        }
        reads.push(t.elapsed());
    }
    let _ = store.delete(&key);
    if let Some(f) = failure {
        list.fail(format!("latency: a call failed: {f}"));
        return;
    }
    writes.sort();
    reads.sort();
    let (wmed, wmax) = (writes[writes.len() / 2], writes[writes.len() - 1]);
    let (rmed, rmax) = (reads[reads.len() / 2], reads[reads.len() - 1]);
    let summary = format!(
        "latency over {LATENCY_SAMPLES} calls: write median {} (max {}), read median {} (max {})",
        ms(wmed),
        ms(wmax),
        ms(rmed),
        ms(rmax)
    );
    let worst = wmax.max(rmax);
    // A call near the deadline leaves no room for the master's renewal to land in time.
    if worst * 2 > timeout {
        list.fail(format!(
            "{summary}: the slowest is more than half the storage timeout {}: raise --storage-timeout \
             (and --poll-period, --heartbeat-timeout with it)",
            humantime::format_duration(timeout)
        ));
    } else {
        list.pass(format!(
            "{summary}, within the storage timeout {}",
            humantime::format_duration(timeout)
        ));
    }
}

/// flock exclusion between this process and a forked child on a probe file under `probe/`:
/// the child must fail to take the lock while we hold it, and take it once we release it.
fn lock_exclusion(root: &Path) -> Result<String, String> {
    let dir = root.join("probe");
    // Only probe/ itself, never a parent: the root exists (the store was opened).
    match std::fs::create_dir(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(format!("lock: cannot create {}: {e}", dir.display()));
        }
        _ => {}
    }
    let name = probe_key();
    let path = dir.join(format!(
        "{}.lock",
        name.trim_start_matches("probe/").trim_end_matches(".json")
    ));
    let result = (|| {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("lock: cannot create {}: {e}", path.display()))?;
        file.lock()
            .map_err(|e| format!("lock: cannot flock {}: {e}", path.display()))?;
        match child_try_lock(&path)? {
            ChildLock::Blocked => {}
            ChildLock::Acquired => {
                return Err(format!(
                    "lock: another process took the flock on {} while this one held it: flock does not exclude \
                     processes here; use another filesystem (or NFSv4 without local_lock)",
                    path.display()
                ));
            }
        }
        file.unlock()
            .map_err(|e| format!("lock: cannot unlock {}: {e}", path.display()))?;
        match child_try_lock(&path)? {
            ChildLock::Acquired => Ok(format!(
                "lock exclusion: a second process cannot flock a file this one holds, and can once it is released ({})",
                dir.display()
            )),
            ChildLock::Blocked => Err(format!(
                "lock: a released flock on {} still blocked another process",
                path.display()
            )),
        }
    })();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
    result
}

enum ChildLock {
    Acquired,
    Blocked,
}

/// Fork a child that tries a non-blocking exclusive flock on `path` and reports by exit code.
fn child_try_lock(path: &Path) -> Result<ChildLock, String> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("lock: {} contains a NUL byte", path.display()))?;
    // SAFETY: the child calls only async-signal-safe functions (open, flock, _exit) on data
    // prepared before the fork; the doctor runs no other threads at this point that the child
    // would depend on.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("lock: fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        unsafe {
            let fd = libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if fd < 0 {
                libc::_exit(3);
            }
            if libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) == 0 {
                libc::_exit(0);
            }
            let blocked = *libc::__errno_location() == libc::EWOULDBLOCK;
            libc::_exit(if blocked { 1 } else { 2 });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    if rc != pid || !libc::WIFEXITED(status) {
        return Err(format!(
            "lock: the probing child process of {} did not exit normally",
            path.display()
        ));
    }
    match libc::WEXITSTATUS(status) {
        0 => Ok(ChildLock::Acquired),
        1 => Ok(ChildLock::Blocked),
        3 => Err(format!(
            "lock: a second process cannot open {}",
            path.display()
        )),
        _ => Err(format!(
            "lock: flock on {} failed in a second process",
            path.display()
        )),
    }
}
