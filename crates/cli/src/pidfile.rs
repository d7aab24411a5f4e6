//! `--pid-file`: the running process's PID for `kill $(cat tenure.pid)`, as Brooklyn's
//! `pid.txt`. The file is held under an exclusive `flock` for the life of the process, so a
//! second tenure given the same path is refused while the first runs, and a file left by a
//! process that died (kill -9) is taken over; the kernel drops the lock with the process, so
//! no PID is ever guessed alive or dead.
//!
//! The PID is written once the node serves, atomically: a new file is written, locked and
//! renamed over the path, so a reader sees either nothing or the whole PID. Until then the
//! file is empty, never an old PID that the system may have given to another process since.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub(crate) struct PidFile {
    path: PathBuf,
    /// The open, locked file that `path` names.
    held: File,
}

fn same_file(a: &File, path: &Path) -> bool {
    match (a.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl PidFile {
    /// Takes `path`: refused while a live process holds it.
    pub(crate) fn acquire(path: &Path) -> Result<PidFile, String> {
        let shown = path.display();
        // Another process may rename a new file over the path between our open and our lock;
        // then the lock we got is on a file no longer named `path`: open it again.
        for _ in 0..10 {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)
                .map_err(|e| {
                    format!("--pid-file {shown}: cannot open it: {e}; create its directory or choose another path")
                })?;
            match f.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(path).unwrap_or_default();
                    let holder = holder.trim();
                    let pid = if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {holder})")
                    };
                    return Err(format!(
                        "--pid-file {shown} is held by a running tenure{pid}: stop it first, or give this node another --pid-file"
                    ));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(format!("--pid-file {shown}: cannot lock it: {e}"));
                }
            }
            if !same_file(&f, path) {
                continue;
            }
            // A PID left by a dead process may belong to another process by now.
            f.set_len(0)
                .map_err(|e| format!("--pid-file {shown}: cannot truncate it: {e}"))?;
            return Ok(PidFile {
                path: path.to_path_buf(),
                held: f,
            });
        }
        Err(format!(
            "--pid-file {shown}: it keeps being replaced by another process"
        ))
    }

    /// Writes this process's PID: a new file beside it, locked, synced, then renamed over it.
    pub(crate) fn write_pid(&mut self) -> Result<(), String> {
        use std::io::Write;
        let shown = self.path.display();
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tenure.pid".into());
        let tmp = self
            .path
            .with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let result = (|| -> std::io::Result<File> {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&tmp)?;
            // Nobody else knows this name yet: the lock cannot be taken.
            f.try_lock().map_err(std::io::Error::other)?;
            writeln!(f, "{}", std::process::id())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            Ok(f)
        })();
        match result {
            Ok(f) => {
                // The old file is gone from the path; its lock goes with its descriptor.
                self.held = f;
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(format!("--pid-file {shown}: cannot write it: {e}"))
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only the file this process holds: never one that an operator or a later process put
        // there instead.
        if same_file(&self.held, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_pid_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenure.pid");
        std::fs::write(&path, "999999\n").unwrap();
        let mut first = PidFile::acquire(&path).unwrap();
        // A stale PID is cleared at once.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        let err = PidFile::acquire(&path)
            .err()
            .expect("second holder refused");
        assert!(err.contains("held by a running tenure"), "{err}");
        first.write_pid().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        // Still held after the rename, now naming this process.
        let err = PidFile::acquire(&path).err().expect("still held");
        assert!(
            err.contains(&format!("(pid {})", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(!path.exists(), "removed at exit");
        // Free again.
        drop(PidFile::acquire(&path).unwrap());
        // No temporary files left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_file_put_there_by_someone_else_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenure.pid");
        let held = PidFile::acquire(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "other\n").unwrap();
        drop(held);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "other\n");
    }

    #[test]
    fn a_missing_directory_names_the_fix() {
        let err = PidFile::acquire(Path::new("/nonexistent-dir/tenure.pid"))
            .err()
            .unwrap();
        assert!(err.contains("create its directory"), "{err}");
    }
}
