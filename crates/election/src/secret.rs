//! The cluster secret: HMAC-SHA256 over every record and every node-to-node nudge, so that
//! someone who can write the store (or reach a port) but does not hold the secret cannot
//! forge a master, a candidate or a lease version to defer to.
//!
//! A keyring holds the secret records are signed with and, during a rotation, one more secret
//! that is accepted as well. Tags name the key (a short fingerprint, not the key) so a node
//! can say *which* secret a record was signed with when it refuses one.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};

type HmacSha256 = Hmac<Sha256>;

/// Shortest secret accepted: 16 bytes of text (a `openssl rand -base64 32` line has 44).
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret file read (a secret is a line, not a document).
const MAX_SECRET_LEN: usize = 4096;
/// Tag format: `v1:<key id>:<64 hex digits>`.
const TAG_VERSION: &str = "v1";

/// Why a secret was refused: too short ([`Keyring::new`]), or a secret file that cannot be
/// read or is not private ([`read_secret_file`]).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "the secret is {len} bytes; use at least {MIN_SECRET_LEN} (e.g. `openssl rand -base64 32`)"
    )]
    TooShort { len: usize },
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot stat {}: {source}", path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    /// Group or others may read it (`mode` is the permission bits).
    #[error(
        "{} has mode {mode:04o}: a secret must be readable by its owner only; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    NotPrivate { path: PathBuf, mode: u32 },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is longer than {MAX_SECRET_LEN} bytes: a secret is one line", path.display())]
    TooLong { path: PathBuf },
    /// The file's secret (trimmed) is shorter than [`MIN_SECRET_LEN`].
    #[error(
        "{} holds a {len}-byte secret; use at least {MIN_SECRET_LEN} bytes, e.g. `openssl rand -base64 32 > {}`",
        path.display(),
        path.display()
    )]
    FileTooShort { path: PathBuf, len: usize },
}

/// Why [`Keyring::verify`] refused a tag (never naming the expected tag).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the MAC is not of the form v1:<key id>:<hex>")]
    Malformed,
    #[error("unknown MAC version {0:?}")]
    UnknownVersion(String),
    #[error("the MAC is not 64 hex digits")]
    NotHex,
    /// Signed with a key this node does not hold.
    #[error(
        "signed with key {id}, which is not this node's secret (key {current}{})",
        accepted.as_ref().map_or(String::new(), |a| format!(" or {a}"))
    )]
    UnknownKey {
        id: String,
        current: String,
        accepted: Option<String>,
    },
    #[error("the MAC does not match (key {id}): forged or altered")]
    Mismatch { id: String },
}

#[derive(Clone)]
struct Key {
    bytes: Vec<u8>,
    /// First 8 hex digits of SHA-256("tenure-key-id" ‖ key): names the key in logs and tags.
    id: String,
}

impl Key {
    fn new(bytes: &[u8]) -> Result<Key, SecretError> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort { len: bytes.len() });
        }
        let digest = Sha256::new()
            .chain_update(b"tenure-key-id\0")
            .chain_update(bytes)
            .finalize();
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Key {
            bytes: bytes.to_vec(),
            id,
        })
    }

    fn mac(&self, domain: &str, parts: &[&[u8]]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.bytes).expect("HMAC takes any key length");
        // Domain separation: a tag made for one purpose never verifies for another.
        m.update(b"tenure-v1\0");
        m.update(domain.as_bytes());
        for p in parts {
            m.update(b"\0");
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p);
        }
        m
    }
}

/// Which key a tag verified with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verified {
    /// The key records are signed with.
    Current,
    /// The extra key accepted during a rotation.
    Accepted,
}

/// The secrets of one node: sign with `current`, accept `current` or `accepted`.
#[derive(Clone)]
pub struct Keyring {
    current: Key,
    accepted: Option<Key>,
}

impl fmt::Debug for Keyring {
    // Never print a secret; the key ids are enough to tell keys apart.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field("accepted", &self.accepted.as_ref().map(|k| &k.id))
            .finish()
    }
}

impl Keyring {
    pub fn new(current: &[u8], accepted: Option<&[u8]>) -> Result<Keyring, SecretError> {
        let current = Key::new(current)?;
        let accepted = match accepted {
            Some(a) => Some(Key::new(a)?).filter(|k| k.id != current.id),
            None => None,
        };
        Ok(Keyring { current, accepted })
    }

    /// Id of the signing key (safe to log).
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Id of the extra accepted key, if any (safe to log).
    pub fn accepted_id(&self) -> Option<&str> {
        self.accepted.as_ref().map(|k| k.id.as_str())
    }

    /// A tag over `parts` for `domain` (e.g. a record key), signed with the current key.
    pub fn sign(&self, domain: &str, parts: &[&[u8]]) -> String {
        let tag = self.current.mac(domain, parts).finalize().into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        format!("{TAG_VERSION}:{}:{hex}", self.current.id)
    }

    /// Check a tag in constant time. The error says why, for logs (never the expected tag).
    pub fn verify(
        &self,
        domain: &str,
        parts: &[&[u8]],
        tag: &str,
    ) -> Result<Verified, VerifyError> {
        let mut it = tag.splitn(3, ':');
        let (Some(ver), Some(id), Some(hex)) = (it.next(), it.next(), it.next()) else {
            return Err(VerifyError::Malformed);
        };
        if ver != TAG_VERSION {
            return Err(VerifyError::UnknownVersion(ver.to_string()));
        }
        let Some(bytes) = decode_hex32(hex) else {
            return Err(VerifyError::NotHex);
        };
        let (key, which) = if id == self.current.id {
            (&self.current, Verified::Current)
        } else if let Some(a) = self.accepted.as_ref().filter(|a| a.id == id) {
            (a, Verified::Accepted)
        } else {
            return Err(VerifyError::UnknownKey {
                id: id.to_string(),
                current: self.current.id.clone(),
                accepted: self.accepted.as_ref().map(|a| a.id.clone()),
            });
        };
        // verify_slice compares in constant time.
        key.mac(domain, parts)
            .verify_slice(&bytes)
            .map(|()| which)
            .map_err(|_| VerifyError::Mismatch { id: id.to_string() })
    }
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Read a secret file: it must be a regular file readable by its owner only (mode 0600 or
/// 0400), since anyone who can read it can forge records. Surrounding whitespace (the
/// trailing newline of `echo … > file`) is not part of the secret.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, SecretError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| SecretError::Open {
            path: path.to_path_buf(),
            source: e,
        })?;
    let meta = file.metadata().map_err(|e| SecretError::Stat {
        path: path.to_path_buf(),
        source: e,
    })?;
    if !meta.is_file() {
        return Err(SecretError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::NotPrivate {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut buf = Vec::new();
    file.take(MAX_SECRET_LEN as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| SecretError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
    if buf.len() > MAX_SECRET_LEN {
        return Err(SecretError::TooLong {
            path: path.to_path_buf(),
        });
    }
    let trimmed = buf.trim_ascii().to_vec();
    if trimmed.len() < MIN_SECRET_LEN {
        return Err(SecretError::FileTooShort {
            path: path.to_path_buf(),
            len: trimmed.len(),
        });
    }
    Ok(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const A: &[u8] = b"0123456789abcdef-secret-A";
    const B: &[u8] = b"0123456789abcdef-secret-B";

    #[test]
    fn sign_verify_and_domain_separation() {
        let k = Keyring::new(A, None).unwrap();
        let tag = k.sign("lease", &[b"x"]);
        assert_eq!(k.verify("lease", &[b"x"], &tag), Ok(Verified::Current));
        assert!(k.verify("lease", &[b"y"], &tag).is_err());
        assert!(k.verify("nodes/a.json", &[b"x"], &tag).is_err());
        // Part boundaries are part of the MAC: ["ab","c"] is not ["a","bc"].
        let t2 = k.sign("d", &[b"ab", b"c"]);
        assert!(k.verify("d", &[b"a", b"bc"], &t2).is_err());
    }

    #[test]
    fn rotation_accepts_both_signs_with_current() {
        let old = Keyring::new(A, None).unwrap();
        let new = Keyring::new(B, Some(A)).unwrap();
        let by_old = old.sign("k", &[b"r"]);
        let by_new = new.sign("k", &[b"r"]);
        assert_eq!(new.verify("k", &[b"r"], &by_old), Ok(Verified::Accepted));
        assert_eq!(new.verify("k", &[b"r"], &by_new), Ok(Verified::Current));
        let err = old.verify("k", &[b"r"], &by_new).unwrap_err().to_string();
        assert!(err.contains(new.current_id()), "{err}");
    }

    #[test]
    fn malformed_tags_are_refused() {
        let k = Keyring::new(A, None).unwrap();
        let good = k.sign("k", &[b"r"]);
        let id = k.current_id();
        for bad in [
            String::new(),
            "v1".into(),
            format!("v2:{id}:{}", "0".repeat(64)),
            format!("v1:{id}:{}", "0".repeat(63)),
            format!("v1:{id}:{}", "g".repeat(64)),
            format!("v1:{id}:{}", "0".repeat(64)),
            good.replace(id, "deadbeef"),
            format!("{good}0"),
        ] {
            assert!(k.verify("k", &[b"r"], &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn short_secrets_are_refused_and_debug_hides_keys() {
        assert!(Keyring::new(b"short", None).is_err());
        let k = Keyring::new(A, None).unwrap();
        assert!(!format!("{k:?}").contains("secret-A"));
    }

    #[test]
    fn secret_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, b"  0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_secret_file(&p).unwrap_err().to_string();
        assert!(e.contains("0640") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&p).unwrap(), b"0123456789abcdef0123");
        std::fs::write(&p, b"tiny\n").unwrap();
        assert!(
            read_secret_file(&p)
                .unwrap_err()
                .to_string()
                .contains("at least")
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(
            read_secret_file(&link).is_err(),
            "symlinks are not followed"
        );
    }
}
