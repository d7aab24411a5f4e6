//! The [`Store`] operations of the directory store.

use super::*;

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
