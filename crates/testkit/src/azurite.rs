//! Azurite, Microsoft's Azure Storage emulator, for the Azure tests: its endpoint, fresh
//! containers, and the settings a store (or a `tenure` process) needs to use it.
//!
//! The endpoint is `$TENURE_AZURITE_ENDPOINT` (`scripts/test.sh` starts one server for the whole
//! run with `scripts/azurite.sh` and stops it by PID). Without it an Azure test panics, unless
//! `TENURE_SKIP_AZURE=1` asks to skip, which is refused under CI (`CI=true`), as for moto.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Azurite's well-known development account and key (public, the same in every install).
pub const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The blob endpoint (`http://127.0.0.1:PORT`), or `None` when the caller asked to skip.
pub fn require() -> Option<String> {
    match std::env::var("TENURE_AZURITE_ENDPOINT") {
        Ok(e) if !e.is_empty() => {
            crate::moto::loopback_addr(&e).unwrap_or_else(|why| panic!("{why}"));
            Some(e.trim_end_matches('/').to_string())
        }
        _ => {
            let skip = std::env::var("TENURE_SKIP_AZURE").is_ok_and(|v| v == "1");
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
            if skip && !ci {
                eprintln!("SKIPPING an Azure test (TENURE_SKIP_AZURE=1)");
                return None;
            }
            panic!(
                "no Azurite endpoint: run `TENURE_AZURITE_ENDPOINT=$(scripts/azurite.sh start)` first \
                 (or TENURE_SKIP_AZURE=1 to skip, outside CI)"
            );
        }
    }
}

/// A container name no other test uses (3–63 lower-case letters, digits and dashes).
pub fn unique_container(tag: &str) -> String {
    crate::moto::unique_bucket(tag)
        .chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

/// Create a container with a Shared Key signed `PUT ?restype=container` (the emulator, like
/// Azure, refuses anonymous writes; object_store has no call for it).
pub fn create_container(endpoint: &str, name: &str) -> Result<(), String> {
    let addr = crate::moto::loopback_addr(endpoint)?;
    // RFC 7231's date, as Shared Key signing wants it.
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .map_err(|e| e.to_string())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect to {endpoint}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "PUT /{ACCOUNT}/{name}?restype=container HTTP/1.1\r\nHost: {addr}\r\nx-ms-date: {date}\r\n\
         x-ms-version: {version}\r\nAuthorization: SharedKey {ACCOUNT}:{sig}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("create container {name}: {e}"))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("create container {name}: {e}"))?;
    let status = reply.lines().next().unwrap_or_default();
    if status.contains(" 201") {
        Ok(())
    } else {
        Err(format!("create container {name} at {endpoint}: {reply}"))
    }
}

/// `object_store` settings for a store on the emulator. The emulator's URL itself comes from
/// `AZURITE_BLOB_STORAGE_URL` in the environment (object_store reads no setting for it); it
/// defaults to `http://127.0.0.1:10000`, the port `scripts/azurite.sh` uses.
pub fn store_config() -> Vec<(String, String)> {
    vec![("azure_storage_use_emulator".into(), "true".into())]
}

/// The environment of a `tenure` process using the emulator at `endpoint`.
pub fn env(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
        ("AZURITE_BLOB_STORAGE_URL".into(), endpoint.into()),
    ]
}
