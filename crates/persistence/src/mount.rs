//! Mount checks for the directory backend (DESIGN §3): the lease is only safe where `flock`
//! excludes other *hosts*. On NFS that rules out `nolock` and `local_lock=` other than `none`
//! (the lock stays on this host), and NFS before v4 unless the operator accepts NLM
//! (`--allow-nlm`), whose locks can be lost silently across reboots and partitions.
//!
//! The parser is a pure function over the text of `/proc/self/mountinfo` so it can be tested
//! with sample lines.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// What the store's mount looks like, for logging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_point: PathBuf,
    pub fstype: String,
    /// The mounted source (`server:/export`, `/dev/sda1`).
    pub source: String,
    /// Per-mount and superblock options together, in that order.
    pub options: Vec<String>,
    /// Set when the mount was accepted with a caveat (NFSv3 with `--allow-nlm`).
    pub note: Option<String>,
}

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    pub mount_options: Vec<String>,
    pub super_options: Vec<String>,
}

/// Undo the octal escapes the kernel uses in mountinfo (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash). Anything that is not a valid escape is kept as is.
pub fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if v <= 0xff {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn unescape_string(field: &str) -> String {
    String::from_utf8_lossy(&unescape(field)).into_owned()
}

fn split_options(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter(|o| !o.is_empty())
        .map(unescape_string)
        .collect()
}

/// Parse the text of `/proc/self/mountinfo`. Malformed lines are skipped.
///
/// Format (proc(5)): `id parent major:minor root mount-point options [optional…] - fstype
/// source super-options`.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 10 {
            continue;
        }
        // The optional fields end with a lone "-"; search from field 6 on.
        let Some(sep) = fields.iter().skip(6).position(|f| *f == "-").map(|p| p + 6) else {
            continue;
        };
        if fields.len() < sep + 3 {
            continue;
        }
        out.push(MountEntry {
            mount_point: PathBuf::from(OsString::from_vec(unescape(fields[4]))),
            fstype: unescape_string(fields[sep + 1]),
            source: unescape_string(fields[sep + 2]),
            mount_options: split_options(fields[5]),
            super_options: fields
                .get(sep + 3)
                .map(|f| split_options(f))
                .unwrap_or_default(),
        });
    }
    out
}

/// The mount holding `path` (which should be canonical): the longest mount point that is a
/// prefix of it, component-wise; among equal mount points the last one (the top of a stack).
pub fn find_mount<'a>(entries: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let mut best: Option<&MountEntry> = None;
    for e in entries {
        if !path.starts_with(&e.mount_point) {
            continue;
        }
        let longer = match best {
            None => true,
            Some(b) => e.mount_point.components().count() >= b.mount_point.components().count(),
        };
        if longer {
            best = Some(e);
        }
    }
    best
}

fn option_value<'a>(options: &'a [String], name: &str) -> Option<&'a str> {
    options
        .iter()
        .rev()
        .find_map(|o| o.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
}

/// Where a store on NFS is: its `Display` reads "store P is on NFS mount M (S)".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NfsPlace {
    /// The store's (canonical) path.
    pub path: PathBuf,
    pub mount_point: PathBuf,
    /// The mount's source, e.g. `server:/export/ha`.
    pub device: String,
}

impl std::fmt::Display for NfsPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "store {} is on NFS mount {} ({})",
            self.path.display(),
            self.mount_point.display(),
            self.device
        )
    }
}

/// Why the mount holding a store cannot hold the lease, or could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// An NFS mount with `nolock`.
    #[error(
        "{at} mounted with nolock: locks there are local to this host, so two hosts could \
         both hold the lease — remount without nolock"
    )]
    NoLock { at: NfsPlace },
    /// An NFS mount with `local_lock` other than `none`.
    #[error(
        "{at} with local_lock={value}: flock there is local to this host, so two hosts could \
         both hold the lease — remount with local_lock=none (the default)"
    )]
    LocalLock { at: NfsPlace, value: String },
    /// NFS before v4 (or of an unknown version): locks through NLM, without `--allow-nlm`.
    #[error(
        "{at} uses {} (option vers={}): its locks go through the NLM side \
         protocol, which can lose them silently — use NFSv4 or pass --allow-nlm",
        shown_version(*version),
        version.map_or_else(|| "?".to_string(), |v| v.to_string())
    )]
    Nlm { at: NfsPlace, version: Option<u32> },
    /// The store path could not be resolved.
    #[error("cannot resolve store path {}: {source}", path.display())]
    Resolve {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `/proc/self/mountinfo` could not be read.
    #[error(
        "cannot read /proc/self/mountinfo to check the mount of {}: {source} — mount /proc or \
         disable the mount check",
        path.display()
    )]
    ReadMountinfo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No mount contains the store path.
    #[error(
        "no mount in /proc/self/mountinfo contains {} — cannot check its mount options",
        path.display()
    )]
    NoMount { path: PathBuf },
}

fn shown_version(v: Option<u32>) -> String {
    v.map_or_else(
        || "an unknown NFS version".to_string(),
        |v| format!("NFSv{v}"),
    )
}

/// Decide whether the store at `path` (on mount `entry`) can hold the lease. Non-NFS
/// filesystems pass.
pub fn evaluate(entry: &MountEntry, path: &Path, allow_nlm: bool) -> Result<MountInfo, MountError> {
    let options: Vec<String> = entry
        .mount_options
        .iter()
        .chain(entry.super_options.iter())
        .cloned()
        .collect();
    let mut info = MountInfo {
        mount_point: entry.mount_point.clone(),
        fstype: entry.fstype.clone(),
        source: entry.source.clone(),
        options,
        note: None,
    };
    if info.fstype != "nfs" && info.fstype != "nfs4" {
        return Ok(info);
    }
    let at = NfsPlace {
        path: path.to_path_buf(),
        mount_point: info.mount_point.clone(),
        device: info.source.clone(),
    };
    if info.options.iter().any(|o| o == "nolock") {
        return Err(MountError::NoLock { at });
    }
    if let Some(v) = option_value(&info.options, "local_lock")
        && v != "none"
    {
        return Err(MountError::LocalLock {
            at,
            value: v.to_string(),
        });
    }
    let version = if info.fstype == "nfs4" {
        Some(4)
    } else {
        option_value(&info.options, "vers")
            .or_else(|| option_value(&info.options, "nfsvers"))
            .and_then(|v| v.split('.').next())
            .and_then(|major| major.parse::<u32>().ok())
    };
    match version {
        Some(v) if v >= 4 => Ok(info),
        other => {
            let shown = shown_version(other);
            if allow_nlm {
                info.note = Some(format!(
                    "{at} uses {shown}: locks go through NLM (accepted with --allow-nlm); a \
                     server or client reboot or a partition can lose them silently"
                ));
                Ok(info)
            } else {
                Err(MountError::Nlm { at, version: other })
            }
        }
    }
}

/// Check the mount holding `path` against the rules above, reading `/proc/self/mountinfo`.
pub fn check(path: &Path, allow_nlm: bool) -> Result<MountInfo, MountError> {
    let canonical = path.canonicalize().map_err(|e| MountError::Resolve {
        path: path.to_path_buf(),
        source: e,
    })?;
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| MountError::ReadMountinfo {
            path: canonical.clone(),
            source: e,
        })?;
    let entries = parse_mountinfo(&text);
    let entry = find_mount(&entries, &canonical).ok_or_else(|| MountError::NoMount {
        path: canonical.clone(),
    })?;
    evaluate(entry, &canonical, allow_nlm)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
40 22 0:35 / /srv/ha rw,relatime shared:20 - nfs4 server:/export/ha rw,vers=4.2,rsize=1048576,hard,proto=tcp,local_lock=none,addr=10.0.0.1
41 22 0:36 / /srv/v3 rw,relatime shared:21 - nfs server:/export/v3 rw,vers=3,hard,proto=tcp,mountproto=tcp,local_lock=none,addr=10.0.0.1
42 22 0:37 / /srv/nolock rw,relatime - nfs server:/x rw,vers=3,nolock,local_lock=all,addr=10.0.0.1
43 22 0:38 / /srv/flock rw,relatime shared:23 master:4 - nfs4 server:/y rw,vers=4.1,local_lock=flock,addr=10.0.0.1
44 22 0:39 / /mnt/my\\040disk rw,relatime shared:24 - ext4 /dev/sdb1 rw
45 22 0:40 / /srv/ha/sub rw,relatime - tmpfs tmpfs rw,size=1024k
46 22 0:41 / /srv/v3novers rw,relatime - nfs server:/z rw,hard
garbage line
";

    fn entries() -> Vec<MountEntry> {
        parse_mountinfo(SAMPLE)
    }

    fn mount_for(path: &str) -> MountEntry {
        find_mount(&entries(), Path::new(path)).unwrap().clone()
    }

    #[test]
    fn parses_fields_and_skips_garbage() {
        let e = entries();
        assert_eq!(e.len(), 9);
        assert_eq!(e[0].mount_point, PathBuf::from("/"));
        assert_eq!(e[0].fstype, "ext4");
        assert_eq!(e[0].source, "/dev/sda1");
        assert_eq!(e[0].mount_options, vec!["rw", "relatime"]);
        assert_eq!(e[0].super_options, vec!["rw", "errors=remount-ro"]);
        // Two optional fields before the separator.
        assert_eq!(e[5].fstype, "nfs4");
        assert_eq!(e[5].mount_point, PathBuf::from("/srv/flock"));
    }

    #[test]
    fn unescapes_spaces_and_backslashes() {
        assert_eq!(unescape("/mnt/my\\040disk"), b"/mnt/my disk");
        assert_eq!(unescape("a\\011b\\012c\\134d"), b"a\tb\nc\\d");
        // Not an escape: kept verbatim, no panic on a trailing backslash.
        assert_eq!(unescape("a\\9b\\"), b"a\\9b\\");
        assert_eq!(unescape("\\04"), b"\\04");
        let m = mount_for("/mnt/my disk/store");
        assert_eq!(m.mount_point, PathBuf::from("/mnt/my disk"));
        assert_eq!(m.source, "/dev/sdb1");
    }

    #[test]
    fn longest_prefix_wins_component_wise() {
        assert_eq!(mount_for("/srv/ha/sub/x").fstype, "tmpfs");
        assert_eq!(mount_for("/srv/ha/x").fstype, "nfs4");
        assert_eq!(mount_for("/srv/ha").fstype, "nfs4");
        // "/srv/hab" is not under "/srv/ha".
        assert_eq!(mount_for("/srv/hab").mount_point, PathBuf::from("/"));
        assert_eq!(mount_for("/").mount_point, PathBuf::from("/"));
    }

    #[test]
    fn stacked_mounts_take_the_last() {
        let text = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 0:1 / /srv rw - ext4 /dev/sdb1 rw
31 30 0:2 / /srv rw - nfs4 server:/s rw,vers=4.2,local_lock=none
";
        let e = parse_mountinfo(text);
        assert_eq!(find_mount(&e, Path::new("/srv/x")).unwrap().fstype, "nfs4");
    }

    #[test]
    fn local_and_nfs4_pass() {
        let ok = evaluate(&mount_for("/var/lib"), Path::new("/var/lib"), false).unwrap();
        assert_eq!(ok.fstype, "ext4");
        assert!(ok.note.is_none());
        let ok = evaluate(&mount_for("/srv/ha/x"), Path::new("/srv/ha/x"), false).unwrap();
        assert_eq!(ok.fstype, "nfs4");
        assert_eq!(ok.source, "server:/export/ha");
        assert!(ok.options.iter().any(|o| o == "vers=4.2"));
        assert!(ok.note.is_none());
    }

    #[test]
    fn nolock_is_refused_even_with_allow_nlm() {
        let err = evaluate(
            &mount_for("/srv/nolock/x"),
            Path::new("/srv/nolock/x"),
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/srv/nolock"), "{err}");
        assert!(err.contains("nolock"), "{err}");
        assert!(err.contains("remount without nolock"), "{err}");
    }

    #[test]
    fn local_lock_other_than_none_is_refused() {
        let err = evaluate(&mount_for("/srv/flock/x"), Path::new("/srv/flock/x"), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("local_lock=flock"), "{err}");
        assert!(err.contains("/srv/flock"), "{err}");
    }

    #[test]
    fn nfs3_needs_allow_nlm() {
        let m = mount_for("/srv/v3/x");
        let err = evaluate(&m, Path::new("/srv/v3/x"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/srv/v3"), "{err}");
        assert!(err.contains("vers=3"), "{err}");
        assert!(err.contains("use NFSv4 or pass --allow-nlm"), "{err}");
        let ok = evaluate(&m, Path::new("/srv/v3/x"), true).unwrap();
        assert!(ok.note.unwrap().contains("NLM"));
        // No vers= at all on an "nfs" mount: unknown, treated like v3.
        let m = mount_for("/srv/v3novers");
        assert!(evaluate(&m, Path::new("/srv/v3novers"), false).is_err());
        assert!(evaluate(&m, Path::new("/srv/v3novers"), true).is_ok());
    }

    #[test]
    fn nfs_type_with_v4_version_passes() {
        let text = "50 22 0:50 / /n rw - nfs server:/n rw,vers=4.1,local_lock=none\n";
        let e = parse_mountinfo(text);
        assert!(evaluate(&e[0], Path::new("/n"), false).is_ok());
    }

    #[test]
    fn check_passes_on_the_real_tmp() {
        let dir = std::env::temp_dir();
        // The build machine's temp dir is local; this exercises reading /proc/self/mountinfo.
        match check(&dir, false) {
            Ok(info) => assert!(dir.canonicalize().unwrap().starts_with(&info.mount_point)),
            Err(e) => assert!(e.to_string().contains("NFS"), "{e}"),
        }
    }
}
