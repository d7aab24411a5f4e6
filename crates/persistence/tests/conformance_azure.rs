//! The shared Store conformance suite and the conditional-write probes against Azurite,
//! Microsoft's Azure Storage emulator (`scripts/azurite.sh`; see `tenure_testkit::azurite`).
//! Every test gets its own container.

use std::sync::Arc;
use std::time::Duration;
use tenure_persistence::{ObjOptions, ObjStore, probe_concurrent_writes, probe_conditional_writes};
use tenure_store::{LEASE_KEY, ReadResult, Store};
use tenure_testkit::azurite;
use tenure_testkit::conformance::{self, Caps};

fn open(url: &str) -> ObjStore {
    ObjStore::open(
        url,
        ObjOptions {
            timeout: Duration::from_secs(10),
            // Nothing from the developer's environment beyond the emulator's URL.
            use_env: false,
            config: azurite::store_config(),
        },
    )
    .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

fn fresh(endpoint: &str, tag: &str, prefix: &str) -> String {
    let container = azurite::unique_container(tag);
    azurite::create_container(endpoint, &container).unwrap_or_else(|e| panic!("{e}"));
    format!("az://{container}/{prefix}")
}

/// An Azure ETag is not a hash of the body: every write, identical bytes too, gets a new one.
const AZURE: Caps = Caps {
    identical_bytes_new_version: true,
};

#[test]
fn azure_store_conforms_with_independent_handles() {
    let Some(endpoint) = azurite::require() else {
        return;
    };
    conformance::run_all_with_caps(AZURE, &|n| {
        let url = fresh(&endpoint, "conf", "ha/cluster-1");
        (0..n)
            .map(|_| Arc::new(open(&url)) as Arc<dyn Store>)
            .collect()
    });
}

#[test]
fn azurite_passes_the_probe_and_the_start_up_races() {
    let Some(endpoint) = azurite::require() else {
        return;
    };
    let url = fresh(&endpoint, "probe", "p");
    probe_conditional_writes(&open(&url)).unwrap();
    let handles: Vec<Arc<dyn Store>> = (0..16)
        .map(|_| Arc::new(open(&url)) as Arc<dyn Store>)
        .collect();
    assert_eq!(probe_concurrent_writes(&handles), Ok(16));
    // The probes leave nothing behind.
    assert_eq!(open(&url).list("probe/").unwrap(), Vec::<String>::new());
}

#[test]
fn the_lease_is_lease_json_under_the_prefix() {
    let Some(endpoint) = azurite::require() else {
        return;
    };
    let url = fresh(&endpoint, "layout", "a/b");
    let s = open(&url);
    s.create(LEASE_KEY, b"{}").unwrap();
    let container = url.trim_start_matches("az://").split('/').next().unwrap();
    let other = open(&format!("az://{container}/a"));
    assert_eq!(other.list("b/").unwrap(), vec!["b/lease.json"]);
    assert!(matches!(
        other.read("b/lease.json"),
        Ok(ReadResult::Present(_))
    ));
}
