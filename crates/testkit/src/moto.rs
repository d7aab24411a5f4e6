//! Test support: the local S3 server (moto, started by `scripts/moto.sh`) that the S3
//! conformance tests and the end-to-end tests run against. Not used by `tenure` itself.
//!
//! The endpoint is `$TENURE_S3_ENDPOINT` when set (`scripts/test.sh` starts one server for the
//! whole run and stops it by PID), else `scripts/moto.sh start` is run once per process (it
//! installs moto into a virtualenv outside the repository if needed and reuses a server it
//! started before; `scripts/moto.sh stop` stops it). Only loopback endpoints are accepted.
//!
//! A missing server is never a silent skip: [`require`] panics, unless `TENURE_SKIP_S3=1` asks
//! to skip, which is refused under CI (`CI=true`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// Any credentials work with moto, but requests must be signed.
pub const ACCESS_KEY: &str = "tenure-test";
pub const SECRET_KEY: &str = "tenure-test-secret";
pub const REGION: &str = "us-east-1";

/// `scripts/moto.sh` in this repository.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/moto.sh")
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The moto endpoint (`http://127.0.0.1:PORT`), starting a server if needed.
pub fn endpoint() -> Result<String, String> {
    static ENDPOINT: OnceLock<Result<String, String>> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            let endpoint = match std::env::var("TENURE_S3_ENDPOINT") {
                Ok(e) if !e.is_empty() => e,
                _ => {
                    let out = std::process::Command::new("bash")
                        .arg(script())
                        .arg("start")
                        .stderr(std::process::Stdio::inherit())
                        .output()
                        .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
                    if !out.status.success() {
                        return Err(format!(
                            "{} start failed ({})",
                            script().display(),
                            out.status
                        ));
                    }
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                }
            };
            loopback_addr(&endpoint)?;
            Ok(endpoint)
        })
        .clone()
}

/// Which S3 server `$TENURE_S3_ENDPOINT` is: `moto` (the default), or another named by
/// `$TENURE_S3_SERVER` (`seaweedfs`), for the few checks that need moto's own API or that
/// another server words differently.
pub fn server() -> String {
    std::env::var("TENURE_S3_SERVER")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "moto".into())
}

/// The endpoint, or `None` when the caller asked to skip S3 with `TENURE_SKIP_S3=1` outside
/// CI. Panics with the reason otherwise.
pub fn require() -> Option<String> {
    match endpoint() {
        Ok(e) => Some(e),
        Err(why) => {
            let skip = std::env::var("TENURE_SKIP_S3").is_ok_and(|v| v == "1");
            if skip && !under_ci() {
                eprintln!("SKIPPING an S3 test (TENURE_SKIP_S3=1): no moto server: {why}");
                return None;
            }
            panic!(
                "no S3 server for the S3 tests: {why}; run `scripts/moto.sh start` (needs python3 with venv and PyPI), \
                 or set TENURE_S3_ENDPOINT; TENURE_SKIP_S3=1 skips these tests outside CI"
            );
        }
    }
}

/// `http://127.x.y.z:PORT` → its address; anything else is refused (tests never talk to
/// another host).
pub fn loopback_addr(endpoint: &str) -> Result<SocketAddr, String> {
    let hostport = endpoint
        .strip_prefix("http://")
        .map(|r| r.trim_end_matches('/'))
        .ok_or_else(|| format!("S3 test endpoint {endpoint:?} is not http://127.0.0.1:PORT"))?;
    let addr: SocketAddr = hostport
        .parse()
        .map_err(|_| format!("S3 test endpoint {endpoint:?} is not http://127.0.0.1:PORT"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "S3 test endpoint {endpoint:?} is not on the loopback interface"
        ));
    }
    Ok(addr)
}

/// A bucket name no other test uses: `tenure-<tag>-<random>`.
pub fn unique_bucket(tag: &str) -> String {
    let tag: String = tag
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(30)
        .collect();
    let id = tenure_persistence::probe_key();
    let hex = id
        .trim_start_matches("probe/")
        .trim_end_matches(".json")
        .to_string();
    format!("tenure-{tag}-{hex}")
}

/// Create a bucket. moto accepts an unsigned `PUT /<bucket>`; object requests must then be
/// signed (any credentials).
pub fn create_bucket(endpoint: &str, bucket: &str) -> Result<(), String> {
    let addr = loopback_addr(endpoint)?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect to {endpoint}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .and_then(|_| s.set_write_timeout(Some(Duration::from_secs(10))))
        .map_err(|e| format!("{endpoint}: {e}"))?;
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("create bucket {bucket} at {endpoint}: {e}"))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("create bucket {bucket} at {endpoint}: {e}"))?;
    let status = reply.lines().next().unwrap_or_default();
    if status.contains(" 200") {
        Ok(())
    } else {
        Err(format!(
            "create bucket {bucket} at {endpoint}: {status}: {reply}"
        ))
    }
}

/// `object_store` settings for a store on this endpoint (for [`tenure_persistence::ObjOptions::config`]).
pub fn store_config(endpoint: &str) -> Vec<(String, String)> {
    [
        ("aws_endpoint", endpoint),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", ACCESS_KEY),
        ("aws_secret_access_key", SECRET_KEY),
        ("aws_region", REGION),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The environment a `tenure` process needs for an `s3://` store on this endpoint: the
/// conventional variables, as an operator would set them for MinIO.
pub fn env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", REGION),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_endpoints_are_accepted() {
        assert!(loopback_addr("http://127.0.0.1:9000").is_ok());
        assert!(loopback_addr("http://127.0.0.5:9000/").is_ok());
        assert!(loopback_addr("http://10.0.0.1:9000").is_err());
        assert!(loopback_addr("https://127.0.0.1:9000").is_err());
        assert!(loopback_addr("http://example.com:9000").is_err());
    }

    #[test]
    fn bucket_names_are_valid_and_unique() {
        let a = unique_bucket("Conformance_S3");
        let b = unique_bucket("Conformance_S3");
        assert_ne!(a, b);
        assert!(a.len() <= 63, "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{a}"
        );
    }
}
