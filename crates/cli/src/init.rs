//! `tenure init --store …`: make a store a new cluster, the one explicit step before the
//! first `tenure run` (DESIGN §3.3, §3.8). `run` never creates a cluster: a mistyped path, an NFS
//! mount that is not mounted (the empty directory beneath it) and a wiped store all look like
//! an empty store, and a cluster created there would answer MASTER beside the real one.
//!
//! It writes `cluster.json` (cluster id, T, ρ, and `fresh`: the first node may cold-start at
//! once) with create-if-absent, and refuses a store that already holds a cluster's records.
//! `--reconfigure` changes T or ρ of an existing cluster, once no node's record changes for
//! the old T (every node stopped).

use crate::args::InitArgs;

use std::time::{Duration, Instant};
use tenure_election::config::humanize;
use tenure_election::records::{self, CLUSTER_KEY, ClusterRecord, EPOCHS_PREFIX, NODES_PREFIX};
use tenure_election::secret::Keyring;
use tenure_persistence::StoreLocation;
use tenure_store::{LEASE_KEY, ReadResult, Store, StoreError};

const REFUSED: u8 = 1;
const USAGE: u8 = 2;

pub fn main(a: InitArgs) -> u8 {
    match init(&a) {
        Ok(msg) => {
            println!("{msg}");
            0
        }
        Err((code, msg)) => {
            eprintln!("tenure init: {msg}");
            code
        }
    }
}

fn init(a: &InitArgs) -> Result<String, (u8, String)> {
    if a.heartbeat_timeout.is_zero() {
        return Err((USAGE, "--heartbeat-timeout must be more than zero".into()));
    }
    let env_secret = crate::run::take_env_secret("TENURE_SECRET");
    let keys =
        crate::run::keyring(&a.secret_file, &None, env_secret, None).map_err(|e| (USAGE, e))?;
    let created_dir = create_root(&a.store)?;
    let store = crate::run::open_store(
        &a.store,
        a.allow_nlm,
        a.allow_shared_permissions,
        a.storage_timeout,
        Duration::from_millis(500),
    )?;
    let fail = |e: StoreError| (REFUSED, format!("{}: {e}", a.store));
    let existing = store.read(CLUSTER_KEY).map_err(fail)?;
    if a.reconfigure {
        return reconfigure(a, store.as_ref(), keys.as_ref(), existing);
    }
    match existing {
        ReadResult::Absent => {}
        ReadResult::Present(r) => {
            let what = match records::open::<ClusterRecord>(keys.as_ref(), CLUSTER_KEY, &r.bytes) {
                Ok(c) => format!(
                    "cluster {} (T={}, created {} by {})",
                    c.cluster_id,
                    humanize(Duration::from_millis(c.heartbeat_timeout_ms)),
                    c.created_at,
                    c.created_by
                ),
                Err(e) => format!("a cluster.json this secret cannot open ({e})"),
            };
            return Err((
                REFUSED,
                format!(
                    "{} already holds {what}; nothing changed. Start `tenure run` on it, or change T and ρ of a stopped cluster with `tenure init --reconfigure`",
                    a.store
                ),
            ));
        }
        ReadResult::Unreadable { reason, .. } => {
            return Err((
                REFUSED,
                format!(
                    "{} holds an unreadable cluster.json ({reason}); restore it from a backup, or remove it if no node uses this store",
                    a.store
                ),
            ));
        }
    }
    // No cluster.json, but a cluster's other records: wiped or partly restored under a live
    // cluster, whose nodes may still be writing here. Creating a new cluster over it would
    // let a node cold-start beside them.
    let mut remains = Vec::new();
    match store.read(LEASE_KEY).map_err(fail)? {
        ReadResult::Absent => {}
        _ => remains.push("a lease".to_string()),
    }
    for prefix in [EPOCHS_PREFIX, NODES_PREFIX] {
        let keys = store.list(prefix).map_err(fail)?;
        if !keys.is_empty() {
            remains.push(format!("{} record(s) under {prefix}", keys.len()));
        }
    }
    if !remains.is_empty() {
        return Err((
            REFUSED,
            format!(
                "{} holds no cluster.json but {}: a store wiped or partly restored under a cluster whose nodes may still run. Restore cluster.json from a backup; or, once no node uses this store, remove those records and run tenure init again",
                a.store,
                remains.join(", ")
            ),
        ));
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let rec = ClusterRecord::new_fresh(
        uuid::Uuid::new_v4().to_string(),
        a.heartbeat_timeout,
        a.clock_drift,
        format!("tenure init on {host}"),
        tenure_election::clock::wall_millis(),
    );
    let bytes = records::seal(keys.as_ref(), CLUSTER_KEY, &rec);
    match store.create(CLUSTER_KEY, &bytes) {
        Ok(_) => {}
        Err(StoreError::Conflict(_)) => {
            return Err((
                REFUSED,
                format!(
                    "{}: another tenure init created cluster.json at the same moment; nothing changed",
                    a.store
                ),
            ));
        }
        Err(e) => return Err(fail(e)),
    }
    Ok(format!(
        "{}created cluster {} in {}: T={}, ρ={}ppm{}. Start every node with `tenure run --store {} --heartbeat-timeout {}`",
        if created_dir {
            format!("created directory {}; ", a.store)
        } else {
            String::new()
        },
        rec.cluster_id,
        a.store,
        humanize(a.heartbeat_timeout),
        a.clock_drift,
        if keys.is_some() {
            ", signed with the cluster secret"
        } else {
            ""
        },
        a.store,
        humanize(a.heartbeat_timeout)
    ))
}

/// A directory store's root is created here (never by `run`), one level only: a parent that
/// does not exist is a typo or a missing mount.
fn create_root(store: &str) -> Result<bool, (u8, String)> {
    let Ok(StoreLocation::Directory(path)) = StoreLocation::parse(store) else {
        // An object store, or a URL that opening the store refuses with the reason.
        return Ok(false);
    };
    let path = path.as_path();
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(false);
    }
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|e| {
            (
                REFUSED,
                format!(
                    "cannot create {}: {e} (tenure init creates the store directory itself but not its parents: check the path, or mount the shared filesystem first)",
                    path.display()
                ),
            )
        })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
        (
            REFUSED,
            format!("cannot set the mode of {}: {e}", path.display()),
        )
    })?;
    Ok(true)
}

/// `--reconfigure`: new T and ρ for a cluster whose nodes are all stopped.
fn reconfigure(
    a: &InitArgs,
    store: &dyn Store,
    keys: Option<&Keyring>,
    existing: ReadResult,
) -> Result<String, (u8, String)> {
    let fail = |e: StoreError| (REFUSED, format!("{}: {e}", a.store));
    let ReadResult::Present(r) = existing else {
        return Err((
            REFUSED,
            format!(
                "{} holds no usable cluster.json to reconfigure; create a cluster with `tenure init` (without --reconfigure)",
                a.store
            ),
        ));
    };
    let old = records::open::<ClusterRecord>(keys, CLUSTER_KEY, &r.bytes).map_err(|e| {
        (
            REFUSED,
            format!("cluster.json: {e} (give the cluster's --secret-file)"),
        )
    })?;
    let old_t = Duration::from_millis(old.heartbeat_timeout_ms);
    // Every node must be stopped: a running one writes its record every poll. Watch them for
    // the old T (a node whose record stood still that long is not running).
    let versions = |store: &dyn Store| -> Result<Vec<(String, Option<String>)>, StoreError> {
        let mut out = Vec::new();
        for key in store.list(NODES_PREFIX)? {
            let v = match store.read(&key)? {
                ReadResult::Present(r) => {
                    let terminated =
                        records::open::<records::HeartbeatRecord>(keys, &key, &r.bytes)
                            .is_ok_and(|h| h.status == tenure_election::NodeState::Terminated);
                    (!terminated).then_some(r.version.0)
                }
                _ => None,
            };
            out.push((key, v));
        }
        Ok(out)
    };
    let first = versions(store).map_err(fail)?;
    if first.iter().any(|(_, v)| v.is_some()) {
        eprintln!(
            "tenure init: watching the node records for T={} (the cluster's current T) to make sure no node runs…",
            humanize(old_t)
        );
        let until = Instant::now() + old_t;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200).min(old_t));
            let now = versions(store).map_err(fail)?;
            if let Some((key, _)) = now
                .iter()
                .find(|(k, v)| v.is_some() && first.iter().all(|(k0, v0)| k0 != k || v0 != v))
            {
                return Err((
                    REFUSED,
                    format!(
                        "{key} keeps changing: that node is running. Stop every node of the cluster first, then run this again (nothing changed)"
                    ),
                ));
            }
        }
    }
    let rec = ClusterRecord {
        heartbeat_timeout_ms: a.heartbeat_timeout.as_millis() as u64,
        clock_drift_ppm: a.clock_drift,
        ..old.clone()
    };
    let bytes = records::seal(keys, CLUSTER_KEY, &rec);
    store
        .replace(CLUSTER_KEY, &bytes, &r.version)
        .map_err(|e| {
            (
                REFUSED,
                format!(
                    "{}: cluster.json changed meanwhile or cannot be written: {e}",
                    a.store
                ),
            )
        })?;
    Ok(format!(
        "reconfigured cluster {} in {}: T={} (was {}), ρ={}ppm (was {}ppm). Start every node with --heartbeat-timeout {}",
        rec.cluster_id,
        a.store,
        humanize(a.heartbeat_timeout),
        humanize(old_t),
        a.clock_drift,
        old.clock_drift_ppm,
        humanize(a.heartbeat_timeout)
    ))
}
