//! `--state-dir`: restart in place (DESIGN §3.6). Each node keeps a small file on this host,
//! `<dir>/<node>.<store hash>.json`, naming its instance id, beside a lock file that the
//! running process holds under an exclusive `flock` for its whole life. The kernel drops that
//! lock only when the process is gone, so a new process that can take it knows that the
//! instance named in the file is dead: it takes its name back at once, and the lease too when
//! the lease still names that instance, instead of waiting T for a process that no longer
//! exists. A second process on this host with the same name and store finds the lock held
//! and stops at once.
//!
//! What the lock proves, and what it does not: it proves that no process *on this kernel*
//! holds the file. So the directory must be local (refused on the store, on NFS, SMB and
//! cluster filesystems), and the file must be this boot's: a file written before a reboot
//! could as well be a copy of another host's disk (a cloned VM), whose instance may be alive,
//! so then the T rule applies as before. It says nothing about another host running the same
//! name; the ordinary identity rule (a foreign record watched for T) covers that.
//!
//! The file also names the previous instance's `--exec` guard and child (pid and start time,
//! so a reused pid is never signalled): a guard outlives a tenure killed with SIGKILL and
//! keeps its child until the last deadline it got, so the new process stops them first —
//! never two `--exec` children.

use sha2::Digest;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The default directory when `--state-dir` is not given and systemd set no
/// `$STATE_DIRECTORY` (`StateDirectory=tenure`): used only if it exists.
pub(crate) const DEFAULT_DIR: &str = "/var/lib/tenure";

/// The `--exec` guard and child a process ran: pid and start time (clock ticks since boot,
/// field 22 of /proc/<pid>/stat), so that a pid given to another process is never signalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ExecProcs {
    pub guard: (i32, u64),
    /// The child, leader of its own process group (pgid = pid), once the guard reported it.
    pub child: Option<(i32, u64)>,
}

/// What the file says of the instance before this one.
#[derive(Debug)]
pub(crate) struct Previous {
    /// Known dead, and this boot's: its record and lease may be taken back at once.
    pub instance_id: Option<String>,
    /// Why `instance_id` is `None` though the file named one.
    pub not_usable: Option<String>,
    pub exec: Option<ExecProcs>,
}

pub(crate) struct StateFile {
    path: PathBuf,
    /// Held (flocked) for the life of the process.
    _lock: File,
    node: String,
    store: String,
    boot_id: String,
    instance_id: String,
    exec: Mutex<Option<ExecProcs>>,
}

/// Filesystems shared between hosts: a lock there does not tell this host's processes apart.
const SHARED_FS: &[(i64, &str)] = &[
    (0x6969, "NFS"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x517B, "SMB"),
    (0x00C3_6400, "Ceph"),
    (0x0116_1970, "GFS2"),
    (0x7461_636f, "OCFS2"),
    (0x0BD0_0BD0, "Lustre"),
    (0x5346_414F, "AFS"),
];

fn fs_type(dir: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0).then_some(st.f_type as i64)
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A process's start time (field 22 of /proc/<pid>/stat), if it runs (a zombie has ended).
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    if rest.next()? == "Z" {
        return None;
    }
    rest.nth(18)?.parse().ok()
}

fn alive(p: (i32, u64)) -> bool {
    start_time(p.0) == Some(p.1)
}

/// The directory `--state-dir` names, or the default: systemd's `$STATE_DIRECTORY`, else
/// [`DEFAULT_DIR`] if it exists. `None`: restart in place is off.
pub(crate) fn resolve(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(d) = flag {
        return Some(d.to_path_buf());
    }
    if let Some(d) = std::env::var_os("STATE_DIRECTORY")
        && let Some(first) = std::env::split_paths(&d).next()
        && !first.as_os_str().is_empty()
    {
        return Some(first);
    }
    let d = Path::new(DEFAULT_DIR);
    d.is_dir().then(|| d.to_path_buf())
}

impl StateFile {
    /// Takes this node's state file in `dir`: refused while a live process holds it, or when
    /// `dir` is not local to this host. `store` identifies the store (a canonical directory
    /// or the URL), so two clusters on one host keep separate files; `store_root` is the
    /// directory store's root, which `dir` must not be inside.
    pub(crate) fn acquire(
        dir: &Path,
        node: &str,
        store: &str,
        store_root: Option<&Path>,
    ) -> Result<(StateFile, Previous), String> {
        let shown = dir.display();
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("--state-dir {shown}: cannot create it: {e}; create it (a local directory, writable by tenure) or give another --state-dir"))?;
        }
        let canon = dir
            .canonicalize()
            .map_err(|e| format!("--state-dir {shown}: {e}"))?;
        if let Some(root) = store_root.and_then(|r| r.canonicalize().ok())
            && canon.starts_with(&root)
        {
            return Err(format!(
                "--state-dir {shown} is inside the store {}: it must be local to this host (its lock proves only that no process on this host runs as this node); use e.g. {DEFAULT_DIR}",
                root.display()
            ));
        }
        if let Some(t) = fs_type(&canon)
            && let Some((_, name)) = SHARED_FS.iter().find(|(m, _)| *m == t)
        {
            return Err(format!(
                "--state-dir {shown} is on {name}, shared between hosts: it must be on a local disk (its lock proves only that no process on this host runs as this node); use e.g. {DEFAULT_DIR}"
            ));
        }
        let hash = sha2::Sha256::digest(store.as_bytes());
        let stem = format!(
            "{node}.{}",
            hash[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let lock_path = canon.join(format!("{stem}.lock"));
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| format!("--state-dir {shown}: cannot open {}: {e}; make the directory writable by tenure", lock_path.display()))?;
        let path = canon.join(format!("{stem}.json"));
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let pid = read_json(&path)
                    .and_then(|v| v.get("pid").and_then(|p| p.as_u64()))
                    .map_or(String::new(), |p| format!(" (pid {p})"));
                return Err(format!(
                    "duplicate node name: another tenure on this host runs as {node} on this store{pid} (it holds {}); stop it first, or choose another --node-name",
                    lock_path.display()
                ));
            }
            Err(TryLockError::Error(e)) => {
                return Err(format!(
                    "--state-dir {shown}: cannot lock {}: {e}",
                    lock_path.display()
                ));
            }
        }
        let boot_id = boot_id();
        let previous = previous(read_json(&path), node, store, &boot_id);
        Ok((
            StateFile {
                path,
                _lock: lock,
                node: node.to_string(),
                store: store.to_string(),
                boot_id,
                instance_id: String::new(),
                exec: Mutex::new(None),
            },
            previous,
        ))
    }

    /// Names this process's instance in the file (after the previous instance's `--exec`
    /// child is gone: until then the file must keep naming it).
    pub(crate) fn begin(&mut self, instance_id: &str) -> Result<(), String> {
        self.instance_id = instance_id.to_string();
        self.write(None)
    }

    /// Records the `--exec` guard and child now running (or none).
    pub(crate) fn set_exec(&self, procs: Option<ExecProcs>) {
        let mut cur = self.exec.lock().unwrap_or_else(|e| e.into_inner());
        if *cur == procs {
            return;
        }
        *cur = procs;
        if let Err(e) = self.write(procs) {
            tracing::warn!("{e}: a restart in place may not find this --exec child to stop it");
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file atomically (a new file renamed over it). Not synced: after a power
    /// loss the boot id differs anyway and the file is not used.
    fn write(&self, exec: Option<ExecProcs>) -> Result<(), String> {
        let mut v = serde_json::json!({
            "format": 1,
            "node": self.node,
            "store": self.store,
            "instanceId": self.instance_id,
            "bootId": self.boot_id,
            "pid": std::process::id(),
        });
        if let Some(x) = exec {
            v["exec"] = serde_json::json!({
                "guardPid": x.guard.0,
                "guardStart": x.guard.1,
                "childPid": x.child.map(|c| c.0),
                "childStart": x.child.map(|c| c.1),
            });
        }
        let tmp = self
            .path
            .with_extension(format!("json.{}.tmp", std::process::id()));
        let r = (|| -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(format!("{v}\n").as_bytes())?;
            std::fs::rename(&tmp, &self.path)
        })();
        r.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("--state-dir: cannot write {}: {e}", self.path.display())
        })
    }
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn previous(v: Option<serde_json::Value>, node: &str, store: &str, boot: &str) -> Previous {
    let none = |why: Option<String>| Previous {
        instance_id: None,
        not_usable: why,
        exec: None,
    };
    let Some(v) = v else { return none(None) };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default();
    let exec = v.get("exec").and_then(|x| {
        let n = |k: &str| x.get(k).and_then(|y| y.as_u64());
        let guard = (i32::try_from(n("guardPid")?).ok()?, n("guardStart")?);
        let child = match (n("childPid"), n("childStart")) {
            (Some(p), Some(t)) => Some((i32::try_from(p).ok()?, t)),
            _ => None,
        };
        Some(ExecProcs { guard, child })
    });
    let id = s("instanceId");
    if v.get("format").and_then(|f| f.as_u64()) != Some(1) || id.is_empty() {
        return none(Some("the file is not one this version wrote".into()));
    }
    if s("node") != node || s("store") != store {
        return none(Some(format!(
            "the file names node {:?} on store {:?}",
            s("node"),
            s("store")
        )));
    }
    // The exec processes are checked by pid and start time, reboot or not.
    if boot.is_empty() || s("bootId") != boot {
        return Previous {
            instance_id: None,
            not_usable: Some(format!(
                "instance {id} ran before this host last booted (or on another host whose disk this is a copy of)"
            )),
            exec,
        };
    }
    Previous {
        instance_id: Some(id.to_string()),
        not_usable: None,
        exec,
    }
}

/// Stops the previous instance's `--exec` child (SIGTERM to its process group, SIGKILL after
/// `kill_after`) and its guard, and waits until both are gone. Returns what it stopped.
pub(crate) fn stop_previous_exec(x: ExecProcs, kill_after: Duration) -> Option<String> {
    let child = x.child.filter(|&c| alive(c));
    let guard = Some(x.guard).filter(|&g| alive(g));
    if child.is_none() && guard.is_none() {
        return None;
    }
    let signal = |pid: i32, sig: libc::c_int| {
        // SAFETY: kill(2) only; the pid (or group) was checked against its start time.
        unsafe { libc::kill(pid, sig) };
    };
    let wait = |p: (i32, u64), until: Instant| {
        while alive(p) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        !alive(p)
    };
    let mut how = String::new();
    if let Some(c) = child {
        signal(-c.0, libc::SIGTERM);
        if !wait(c, Instant::now() + kill_after) {
            signal(-c.0, libc::SIGKILL);
            how = " (killed: it outlived SIGTERM)".into();
        }
        wait(c, Instant::now() + Duration::from_secs(2));
    }
    if let Some(g) = guard {
        // With its child gone the guard kills what is left of the group and exits.
        if !wait(g, Instant::now() + Duration::from_secs(1)) {
            signal(g.0, libc::SIGKILL);
            wait(g, Instant::now() + Duration::from_secs(2));
        }
    }
    Some(format!(
        "--exec child {} and guard {}{how}",
        child.map_or("(gone)".into(), |c| c.0.to_string()),
        guard.map_or("(gone)".into(), |g| g.0.to_string()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_file_refuses_a_second_process_and_a_freed_one_names_the_dead_instance() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, prev) = StateFile::acquire(dir.path(), "n1", "/srv/s", None).unwrap();
        assert!(prev.instance_id.is_none() && prev.not_usable.is_none());
        a.begin("inst-1").unwrap();
        let e = StateFile::acquire(dir.path(), "n1", "/srv/s", None)
            .err()
            .unwrap();
        assert!(e.contains("duplicate node name"), "{e}");
        // Another store or node: another file.
        StateFile::acquire(dir.path(), "n1", "/srv/other", None).unwrap();
        StateFile::acquire(dir.path(), "n2", "/srv/s", None).unwrap();
        drop(a);
        let (_b, prev) = StateFile::acquire(dir.path(), "n1", "/srv/s", None).unwrap();
        assert_eq!(prev.instance_id.as_deref(), Some("inst-1"));
    }

    #[test]
    fn a_file_from_another_boot_or_format_names_no_instance() {
        let v = |boot: &str| {
            serde_json::json!({"format": 1, "node": "n", "store": "s", "instanceId": "i",
                "bootId": boot, "pid": 1})
        };
        assert_eq!(
            previous(Some(v("b1")), "n", "s", "b1")
                .instance_id
                .as_deref(),
            Some("i")
        );
        let p = previous(Some(v("b0")), "n", "s", "b1");
        assert!(p.instance_id.is_none() && p.not_usable.unwrap().contains("booted"));
        assert!(
            previous(Some(v("b1")), "m", "s", "b1")
                .instance_id
                .is_none()
        );
        let mut w = v("b1");
        w["format"] = 2.into();
        assert!(previous(Some(w), "n", "s", "b1").instance_id.is_none());
    }

    #[test]
    fn the_state_dir_may_not_be_inside_the_store() {
        let store = tempfile::tempdir().unwrap();
        let inside = store.path().join("state");
        let e = StateFile::acquire(&inside, "n", "s", Some(store.path()))
            .err()
            .unwrap();
        assert!(e.contains("inside the store"), "{e}");
    }

    #[test]
    fn a_previous_exec_child_and_guard_are_stopped_and_a_reused_pid_is_left_alone() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let procs = ExecProcs {
            // A guard that is not running (pid 1 with another start time).
            guard: (1, u64::MAX),
            child: Some((pid, start_time(pid).unwrap())),
        };
        // A wrong start time: another process now has that pid; nothing is signalled.
        let wrong = ExecProcs {
            guard: (1, u64::MAX),
            child: Some((pid, start_time(pid).unwrap() + 1)),
        };
        assert_eq!(stop_previous_exec(wrong, Duration::from_secs(1)), None);
        assert!(child.try_wait().unwrap().is_none());
        let said = stop_previous_exec(procs, Duration::from_secs(1)).unwrap();
        assert!(said.contains(&pid.to_string()), "{said}");
        let st = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGTERM));
    }
}
