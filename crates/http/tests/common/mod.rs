//! What the http crate's integration tests share: users with cheap password hashes.

use argon2::password_hash::{PasswordHasher, SaltString};
use tenure_http::Users;

/// Cheap argon2 parameters: unoptimised argon2 with the defaults takes about a second.
pub fn cheap_hash(password: &str) -> String {
    let params = argon2::Params::new(256, 1, 1, None).unwrap();
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// alice (admin, password `alice-pw`) and bob (reader, `bob-pw`).
pub fn users() -> Users {
    let text = serde_json::json!({"users": {
        "alice": {"password": cheap_hash("alice-pw"), "role": "admin"},
        "bob": {"password": cheap_hash("bob-pw"), "role": "reader"},
    }})
    .to_string();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.json");
    std::fs::write(&path, text).unwrap();
    Users::load(&path).unwrap()
}
