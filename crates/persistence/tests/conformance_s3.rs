//! The shared Store conformance suite and S3-specific behaviour, against a real S3 server:
//! moto on 127.0.0.1 (`scripts/moto.sh`; see `tenure_testkit::moto`). Every test gets its
//! own bucket.

use std::sync::Arc;
use std::time::Duration;
use tenure_persistence::{ObjOptions, ObjStore, probe_conditional_writes, probe_create_race};
use tenure_store::{LEASE_KEY, ReadResult, Store, StoreError, Version};
use tenure_testkit::conformance::{self, Caps};
use tenure_testkit::moto;

fn open(endpoint: &str, url: &str, timeout: Duration) -> ObjStore {
    ObjStore::open(
        url,
        ObjOptions {
            timeout,
            // Nothing from the developer's environment: the test names its server.
            use_env: false,
            config: moto::store_config(endpoint),
        },
    )
    .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// A fresh bucket on moto and a store URL in it.
fn fresh(endpoint: &str, tag: &str, prefix: &str) -> String {
    let bucket = moto::unique_bucket(tag);
    moto::create_bucket(endpoint, &bucket).unwrap();
    if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    }
}

/// moto is a Python server on a loaded 2-core machine: give each call room. SeaweedFS makes
/// each loser of a conditional-write race wait about a second for its 412, one after another,
/// so the race rounds' last losers can wait longer than 10 s on a busy machine (seen in CI).
fn timeout() -> Duration {
    if moto::server() == "seaweedfs" {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(10)
    }
}

const S3: Caps = Caps {
    // An S3 ETag is the MD5 of the body.
    identical_bytes_new_version: false,
};

#[test]
fn s3_store_conforms_with_independent_handles() {
    let Some(endpoint) = moto::require() else {
        return;
    };
    conformance::run_all_with_caps(S3, &|n| {
        let url = fresh(&endpoint, "conf", "ha/cluster-1");
        // One client per handle, as separate processes would have.
        (0..n)
            .map(|_| Arc::new(open(&endpoint, &url, timeout())) as Arc<dyn Store>)
            .collect()
    });
}

#[test]
fn s3_store_conforms_with_one_shared_handle_at_the_bucket_root() {
    let Some(endpoint) = moto::require() else {
        return;
    };
    conformance::run_all_with_caps(S3, &|n| {
        let s =
            Arc::new(open(&endpoint, &fresh(&endpoint, "root", ""), timeout())) as Arc<dyn Store>;
        vec![s; n]
    });
}

#[test]
fn stale_etag_is_a_conflict_not_an_error() {
    let Some(endpoint) = moto::require() else {
        return;
    };
    let s = open(&endpoint, &fresh(&endpoint, "stale", "p"), timeout());
    let v1 = s.create(LEASE_KEY, b"{\"renewSeq\":1}").unwrap();
    let v2 = s.replace(LEASE_KEY, b"{\"renewSeq\":2}", &v1).unwrap();
    // 412 Precondition Failed.
    match s.replace(LEASE_KEY, b"{\"renewSeq\":3}", &v1) {
        Err(StoreError::Conflict(m)) => assert!(m.contains("not at version"), "{m}"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    // The version is the quoted ETag, as S3 sends it.
    assert!(v2.0.starts_with('"') && v2.0.ends_with('"'), "{v2}");
    match s.read(LEASE_KEY).unwrap() {
        ReadResult::Present(r) => {
            assert_eq!(r.bytes, b"{\"renewSeq\":2}");
            assert_eq!(r.version, v2);
            let age = r.modified.unwrap().elapsed().unwrap_or_default();
            assert!(age < Duration::from_secs(60), "Last-Modified {age:?} ago");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn if_match_on_a_missing_key_is_a_conflict() {
    let Some(endpoint) = moto::require() else {
        return;
    };
    let s = open(&endpoint, &fresh(&endpoint, "missing", "p"), timeout());
    let v = s.create("nodes/a.json", b"a").unwrap();
    // S3 answers 404 NoSuchKey to If-Match on a missing key.
    match s.replace("nodes/b.json", b"b", &v) {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(s.read("nodes/b.json").unwrap(), ReadResult::Absent);
}

#[test]
fn the_lease_is_lease_json_under_the_prefix() {
    let Some(endpoint) = moto::require() else {
        return;
    };
    let url = fresh(&endpoint, "layout", "a/b");
    let s = open(&endpoint, &url, timeout());
    s.create(LEASE_KEY, b"{}").unwrap();
    s.put("nodes/n1.json", b"{}").unwrap();
    // Another prefix in the same bucket sees nothing of it.
    let bucket = url.trim_start_matches("s3://").split('/').next().unwrap();
    let other = open(&endpoint, &format!("s3://{bucket}/a"), timeout());
    assert_eq!(other.list("").unwrap(), Vec::<String>::new());
    assert_eq!(other.list("b/").unwrap(), vec!["b/lease.json"]);
    assert_eq!(
        other
            .read("b/lease.json")
            .map(|r| matches!(r, ReadResult::Present(_))),
        Ok(true)
    );
    assert_eq!(s.list("").unwrap(), vec![LEASE_KEY]);
    assert_eq!(s.list("nodes/").unwrap(), vec!["nodes/n1.json"]);
}

#[test]
fn a_missing_bucket_is_unavailable_and_says_so() {
    let Some(endpoint) = moto::require() else {
        return;
    };
    let s = open(&endpoint, "s3://tenure-no-such-bucket-here/p", timeout());
    for r in [
        s.read(LEASE_KEY).map(|_| ()),
        s.create("epochs/1.json", b"x").map(|_| ()),
        s.put("nodes/a.json", b"x").map(|_| ()),
        s.list("nodes/").map(|_| ()),
    ] {
        match r {
            Err(StoreError::Unavailable(m)) => assert!(says_no_bucket(&m), "{m}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    let e = probe_conditional_writes(&s).unwrap_err().to_string();
    assert!(says_no_bucket(&e), "{e}");
}

/// moto answers NoSuchBucket; SeaweedFS answers a write to a missing bucket with 403, and the
/// message must then still say to check that the bucket exists.
fn says_no_bucket(m: &str) -> bool {
    m.contains("bucket does not exist")
        || (moto::server() == "seaweedfs"
            && m.contains("access denied")
            && m.contains("check that the bucket exists"))
}

#[test]
fn moto_enforces_conditional_writes_per_the_probe() {
    let Some(endpoint) = moto::require() else {
        return;
    };
    let url = fresh(&endpoint, "probe", "p");
    let s = open(&endpoint, &url, timeout());
    probe_conditional_writes(&s).unwrap();
    let handles: Vec<Arc<dyn Store>> = (0..16)
        .map(|_| Arc::new(open(&endpoint, &url, timeout())) as Arc<dyn Store>)
        .collect();
    assert_eq!(probe_create_race(&handles), Ok(16));
    // The probe cleans up after itself.
    assert_eq!(s.list("probe/").unwrap(), Vec::<String>::new());
}

#[test]
fn versions_from_another_backend_never_match() {
    let Some(endpoint) = moto::require() else {
        return;
    };
    let s = open(&endpoint, &fresh(&endpoint, "foreign", "p"), timeout());
    s.create(LEASE_KEY, b"x").unwrap();
    for v in ["g1-0000000000000000", "m7", "", "a\nb", "\"\""] {
        match s.replace(LEASE_KEY, b"y", &Version(v.into())) {
            Err(StoreError::Conflict(_)) => {}
            other => panic!("version {v:?}: expected Conflict, got {other:?}"),
        }
    }
}
