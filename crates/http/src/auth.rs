//! Basic auth against a users file of argon2 PHC hashes, with roles `reader` and `admin`.
//!
//! argon2 is slow on purpose, so a successful verification is remembered (per user, as a
//! keyed SHA-256 of `user:password`): a health checker sending credentials every 100 ms then
//! costs a hash, not an argon2 run. The cache holds at most one entry per configured user.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Admin,
}

struct User {
    hash: String,
    role: Role,
    /// Keyed digest of the last `user:password` that verified.
    verified: Mutex<Option<[u8; 32]>>,
}

struct Inner {
    users: HashMap<String, User>,
    /// A configured hash, verified for unknown names so they cost the same time.
    decoy: String,
    /// Per-process key, so cached digests are useless outside this process.
    key: [u8; 32],
    /// Bounds concurrent argon2 runs: wrong passwords are never cached.
    argon_slots: Semaphore,
    /// argon2 verifications run so far (tests check that every failure costs one).
    argon_runs: AtomicU64,
}

/// The users allowed to log in. Cheap to clone.
#[derive(Clone)]
pub struct Users {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.inner.users.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Users").field("names", &names).finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    users: HashMap<String, FileUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUser {
    password: String,
    role: String,
}

/// Why a login was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No usable `Authorization: Basic …` header.
    Missing,
    /// Unknown user or wrong password.
    Wrong,
}

/// Why a users file was refused.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read the users file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but its contents were refused ([`Users::load`]).
    #[error("users file {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: Box<UsersError>,
    },
    #[error(
        "not valid: {source}; expected {{\"users\": {{\"alice\": {{\"password\": \"<hash>\", \"role\": \"admin\"}}}}}}"
    )]
    NotValid {
        #[source]
        source: serde_json::Error,
    },
    #[error("no users are defined: add at least one admin")]
    NoUsers,
    #[error(
        "user name {name:?} cannot be used with basic auth: it must be non-empty and contain no ':'"
    )]
    BadName { name: String },
    #[error("user {name:?} has role {role:?}: use \"reader\" or \"admin\"")]
    BadRole { name: String, role: String },
    #[error(
        "user {name:?}: the password is not a password hash; plaintext passwords are refused, store the output of `tenure hash-password`"
    )]
    NotAHash { name: String },
    #[error(
        "user {name:?}: the password hash uses {algorithm}, not argon2; make one with `tenure hash-password`"
    )]
    NotArgon2 { name: String, algorithm: String },
}

impl Users {
    /// Reads `{"users": {"alice": {"password": "<PHC argon2 hash>", "role": "admin"}}}`.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|e| UsersError::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
        Users::parse(&text).map_err(|e| UsersError::File {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Parses the users file format (see [`Users::load`]).
    pub fn parse(text: &str) -> Result<Users, UsersError> {
        let file: FileFormat =
            serde_json::from_str(text).map_err(|e| UsersError::NotValid { source: e })?;
        if file.users.is_empty() {
            return Err(UsersError::NoUsers);
        }
        let mut users = HashMap::with_capacity(file.users.len());
        for (name, u) in file.users {
            if name.is_empty() || name.contains(':') {
                return Err(UsersError::BadName { name });
            }
            let role = match u.role.as_str() {
                "admin" => Role::Admin,
                "reader" => Role::Reader,
                other => {
                    return Err(UsersError::BadRole {
                        name,
                        role: other.to_string(),
                    });
                }
            };
            let Ok(parsed) = PasswordHash::new(&u.password) else {
                return Err(UsersError::NotAHash { name });
            };
            if !parsed.algorithm.as_str().starts_with("argon2") {
                return Err(UsersError::NotArgon2 {
                    name,
                    algorithm: parsed.algorithm.to_string(),
                });
            }
            users.insert(
                name,
                User {
                    hash: u.password,
                    role,
                    verified: Mutex::new(None),
                },
            );
        }
        let decoy = users
            .iter()
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(_, u)| u.hash.clone())
            .unwrap_or_default();
        Ok(Users {
            inner: Arc::new(Inner {
                users,
                decoy,
                key: rand::random(),
                argon_slots: Semaphore::new(2),
                argon_runs: AtomicU64::new(0),
            }),
        })
    }

    /// Checks an `Authorization` header value; returns the user's name and role.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
    ) -> Result<(String, Role), AuthFailure> {
        let (name, password) = authorization
            .and_then(parse_basic)
            .ok_or(AuthFailure::Missing)?;
        let digest = self.digest(&name, &password);
        let Some(user) = self.inner.users.get(&name) else {
            // Spend the same time as for a known user, so names cannot be probed by timing.
            // The outcome is ignored.
            self.argon2_verify(self.inner.decoy.clone(), password).await;
            return Err(AuthFailure::Wrong);
        };
        let cached = *user.verified.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cached
            && bool::from(c.ct_eq(&digest))
        {
            return Ok((name, user.role));
        }
        if self.argon2_verify(user.hash.clone(), password).await {
            *user.verified.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest);
            Ok((name, user.role))
        } else {
            Err(AuthFailure::Wrong)
        }
    }

    fn digest(&self, name: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.inner.key);
        h.update(name.as_bytes());
        h.update(b":");
        h.update(password.as_bytes());
        h.finalize().into()
    }

    async fn argon2_verify(&self, hash: String, password: String) -> bool {
        let Ok(_permit) = self.inner.argon_slots.acquire().await else {
            return false;
        };
        self.inner.argon_runs.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }
}

/// `Basic <base64 of user:password>` → (user, password); `None` for anything else.
pub fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (name, password) = decoded.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

/// Hashes a password for the users file: a PHC string, argon2id with the crate's defaults.
pub fn hash_password(password: &str) -> String {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).expect("16 bytes make a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters accepts any password")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters: unoptimised argon2 with the defaults takes about a second.
    fn cheap_hash(password: &str) -> String {
        let params = argon2::Params::new(256, 1, 1, None).unwrap();
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).unwrap();
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    fn users() -> Users {
        let text = serde_json::json!({"users": {
            "alice": {"password": cheap_hash("a-pw"), "role": "admin"},
            "bob": {"password": cheap_hash("b:pw"), "role": "reader"},
        }})
        .to_string();
        Users::parse(&text).unwrap()
    }

    fn basic(user: &str, pw: &str) -> Vec<u8> {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        format!("Basic {b}").into_bytes()
    }

    #[test]
    fn hash_is_argon2id_phc() {
        let h = hash_password("secret");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert_ne!(h, hash_password("secret"), "salted");
    }

    #[test]
    fn plaintext_and_bad_roles_are_refused() {
        let e = Users::parse(r#"{"users": {"a": {"password": "hunter2", "role": "admin"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenure hash-password"), "{e}");
        let h = cheap_hash("x");
        let e = Users::parse(&format!(
            r#"{{"users": {{"a": {{"password": "{h}", "role": "root"}}}}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("reader"), "{e}");
        let e = Users::parse(&format!(
            r#"{{"users": {{"a:b": {{"password": "{h}", "role": "admin"}}}}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("':'"), "{e}");
        assert!(Users::parse(r#"{"users": {}}"#).is_err());
        let e = Users::load(Path::new("/nonexistent/users.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/users.json"), "{e}");
    }

    /// Timing: an unknown user, a wrong password and a malformed hash in the cache path all
    /// cost exactly one argon2 run (of a configured hash, so with the same parameters); only a
    /// password that verified before is answered from the cache.
    #[tokio::test]
    async fn every_failure_costs_one_argon2_run() {
        let u = users();
        let runs = || u.inner.argon_runs.load(Ordering::Relaxed);
        let mut before = runs();
        for (who, pw) in [
            ("carol", "x"),
            ("alice", "wrong"),
            ("", "a-pw"),
            ("alicE", "a-pw"),
        ] {
            assert_eq!(
                u.authenticate(Some(&basic(who, pw))).await,
                Err(AuthFailure::Wrong),
                "{who}"
            );
            assert_eq!(runs(), before + 1, "{who}:{pw} must cost one argon2 run");
            before = runs();
        }
        // A success is cached: the next one costs no run; a wrong password after it does.
        u.authenticate(Some(&basic("alice", "a-pw"))).await.unwrap();
        before = runs();
        u.authenticate(Some(&basic("alice", "a-pw"))).await.unwrap();
        assert_eq!(runs(), before);
        assert!(
            u.authenticate(Some(&basic("alice", "a-pwx")))
                .await
                .is_err()
        );
        assert_eq!(runs(), before + 1);
        // The decoy is a configured hash, so an unknown name costs what a known one does.
        assert!(u.inner.users.values().any(|x| x.hash == u.inner.decoy));
    }

    #[tokio::test]
    async fn verifies_and_caches() {
        let u = users();
        let ok = basic("alice", "a-pw");
        assert_eq!(
            u.authenticate(Some(&ok)).await,
            Ok(("alice".into(), Role::Admin))
        );
        assert!(u.inner.users["alice"].verified.lock().unwrap().is_some());
        // Served from the cache now; a wrong password still fails.
        assert_eq!(u.authenticate(Some(&ok)).await.unwrap().1, Role::Admin);
        assert_eq!(
            u.authenticate(Some(&basic("alice", "a-pwx"))).await,
            Err(AuthFailure::Wrong)
        );
        // The password may contain ':'; only the first one splits.
        assert_eq!(
            u.authenticate(Some(&basic("bob", "b:pw"))).await.unwrap().1,
            Role::Reader
        );
        assert_eq!(
            u.authenticate(Some(&basic("carol", "x"))).await,
            Err(AuthFailure::Wrong)
        );
        assert_eq!(u.authenticate(None).await, Err(AuthFailure::Missing));
        assert_eq!(
            u.authenticate(Some(b"Bearer abc")).await,
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            u.authenticate(Some(b"Basic !!!")).await,
            Err(AuthFailure::Missing)
        );
    }
}
