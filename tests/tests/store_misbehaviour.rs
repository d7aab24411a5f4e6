//! A store that misbehaves, end to end with real `tenure run` processes: the issue's "never two
//! masters when the store misbehaves". The store is wiped (directory and S3), rolled back to an
//! earlier copy while the master is frozen (directory and S3), an old released lease is written
//! back under a new master before a `--mode master` start, `cluster.json` is changed under
//! running nodes, two processes claim one name at the same instant, a node's mount vanishes under
//! it, and a `--mode disabled` node runs beside an auto node. What is promised is in
//! docs/security.md ("A store that loses acknowledged writes") and README "How the safety works".
//!
//! Every test ends with the safety checker over the whole history (no two MASTER answers overlap,
//! epochs never go back, one epoch one node) and prints one line
//! `SCENARIO <name>: overlaps=<n> epoch_regressions=<n> longest_no_master_ms=<n>` (the longest
//! stretch without a MASTER answer after the first one), so the figures can be quoted.
//!
//! T = 2 s, p = 200 ms (`Timing::standard`), storage timeout p; every bound is stated in T, p,
//! the storage timeout and the margin. The directory tests change the store's files directly
//! (`lease.lock` in place, under its flock, as a node writes it; other records by rename), the S3
//! tests the objects of `s3://<fresh bucket>/tenure` on moto. The vanished-mount test needs root,
//! `unshare` and `nsenter` (it says so and returns without them; as root it always runs).
//!
//! Timing-sensitive: run with `--test-threads=1` (each test also holds `serial()`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tenure_persistence::{LEASE_FILE, LEASE_OBJECT, ObjOptions, ObjStore};
use tenure_store::{LEASE_KEY, ReadResult, Store};
use tenure_testkit::moto;
use tenure_tests::cluster::free_port;
use tenure_tests::expect::{
    assert_kept_answering, assert_never_master_since, expect_exit, refusal_timeout, settle_timeout,
    wait_status_in_states,
};
use tenure_tests::s3::s3_cluster;
use tenure_tests::scenarios::{THREE, freeze_outside_the_lease_lock_of};
use tenure_tests::spawn::{prepare, run_args};
use tenure_tests::{
    Cluster, History, NodeSpec, Observer, Sample, Timing, dur_arg, observe_for, serial, tenure_bin,
    wait_for, wait_until,
};

// ---------------------------------------------------------------------------------------------
// Bounds and figures.

/// The nodes' storage timeout: the default, p within [100 ms, 5 s].
fn storage_timeout(tm: &Timing) -> Duration {
    tm.p.clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// How long after the store changed under it a master may still be seen answering MASTER: its
/// next renewal (at most p away) fails on the changed lease within the storage timeout, and it
/// stops at once; the margin covers an observer request in flight on a loaded machine.
fn reaction_grace(tm: &Timing) -> Duration {
    tm.p + storage_timeout(tm) + tm.margin
}

/// Prints the `SCENARIO` line of `h`, then runs the safety checker over it.
fn finish(name: &str, h: &History) {
    let v = h.violations();
    let regressions = v
        .iter()
        .filter(|x| x.message.contains("epoch went back"))
        .count();
    let overlaps = v.len() - regressions;
    let longest = h
        .samples
        .iter()
        .find(|s| s.is_master())
        .and_then(|first| h.longest_no_master_after(first.sent))
        .map_or("none".to_string(), |d| d.as_millis().to_string());
    eprintln!(
        "SCENARIO {name}: overlaps={overlaps} epoch_regressions={regressions} longest_no_master_ms={longest}"
    );
    h.assert_safe();
}

/// The log of `label`'s current start, without the harness's own command line.
fn output(c: &Cluster, label: &str) -> String {
    let log = c.node(label).last_start_log();
    log.split_once('\n')
        .map_or(String::new(), |(_, rest)| rest.to_string())
}

/// The MASTER samples of any node sent in `[from, to]`.
fn masters_between(h: &History, from: Instant, to: Instant) -> Vec<&Sample> {
    h.samples
        .iter()
        .filter(|s| s.is_master() && s.sent >= from && s.sent <= to)
        .collect()
}

/// Each node's distinct answers among the samples sent in `[from, to]`, for messages.
fn answers_between(h: &History, from: Instant, to: Instant) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in h.samples.iter().filter(|s| s.sent >= from && s.sent <= to) {
        out.entry(s.node.clone())
            .or_default()
            .insert(s.answer.clone());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The store as the misbehaving storage (or an operator restoring a backup) has it.

/// Direct access to a cluster's records, beside its nodes. Names are paths under the store
/// root or prefix: `cluster.json`, `lease.lock` (directory) or `lease.json` (S3),
/// `nodes/<name>.json`, `epochs/<n>.json`.
enum Raw {
    Dir(PathBuf),
    S3 {
        store: Box<ObjStore>,
        /// The same bucket opened at its root, and the prefix: the `Store` trait never deletes
        /// the lease, but `<prefix>/lease.json` is a plain key at the root, which the storage
        /// itself can delete.
        root: Box<ObjStore>,
        prefix: String,
    },
}

/// A full copy of the store: name → bytes.
type Snapshot = BTreeMap<String, Vec<u8>>;

impl Raw {
    fn of(c: &Cluster) -> Raw {
        let url = c.store_arg();
        let Some(rest) = url.strip_prefix("s3://") else {
            return Raw::Dir(c.store().to_path_buf());
        };
        let endpoint = moto::endpoint().expect("the cluster runs on moto");
        let open = |url: &str| {
            ObjStore::open(
                url,
                ObjOptions {
                    timeout: Duration::from_secs(10),
                    use_env: false,
                    config: moto::store_config(&endpoint),
                },
            )
            .unwrap_or_else(|e| panic!("open {url}: {e}"))
        };
        let (bucket, prefix) = rest.split_once('/').expect("s3://bucket/prefix");
        assert!(!prefix.contains('/'), "a one-level prefix: {url}");
        Raw::S3 {
            store: Box::new(open(url)),
            root: Box::new(open(&format!("s3://{bucket}"))),
            prefix: prefix.to_string(),
        }
    }

    /// The lease's name in this store.
    fn lease(&self) -> &'static str {
        match self {
            Raw::Dir(_) => LEASE_FILE,
            Raw::S3 { .. } => LEASE_OBJECT,
        }
    }

    /// The `Store` key of an object name.
    fn key(name: &str) -> &str {
        if name == LEASE_OBJECT {
            LEASE_KEY
        } else {
            name
        }
    }

    /// Every record now in the store (a node's temporary files, named `.…`, left out).
    fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            Raw::Dir(root) => {
                let entries = |dir: &Path| -> Vec<(String, bool)> {
                    match fs::read_dir(dir) {
                        Ok(rd) => rd
                            .flatten()
                            .map(|e| {
                                let name = e.file_name().to_string_lossy().into_owned();
                                (name, e.file_type().is_ok_and(|t| t.is_dir()))
                            })
                            .filter(|(n, _)| !n.starts_with('.'))
                            .collect(),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                        Err(e) => panic!("list {}: {e}", dir.display()),
                    }
                };
                for (name, is_dir) in entries(root) {
                    if is_dir {
                        for (f, _) in entries(&root.join(&name)) {
                            out.push(format!("{name}/{f}"));
                        }
                    } else {
                        out.push(name);
                    }
                }
            }
            Raw::S3 { store, .. } => {
                for prefix in ["", "nodes/", "epochs/", "probe/"] {
                    let keys = store
                        .list(prefix)
                        .unwrap_or_else(|e| panic!("list {prefix:?}: {e}"));
                    out.extend(keys.into_iter().map(|k| {
                        if k == LEASE_KEY {
                            LEASE_OBJECT.to_string()
                        } else {
                            k
                        }
                    }));
                }
            }
        }
        out.sort();
        out
    }

    fn read(&self, name: &str) -> Option<Vec<u8>> {
        match self {
            Raw::Dir(root) => match fs::read(root.join(name)) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => panic!("read {name}: {e}"),
            },
            Raw::S3 { store, .. } => {
                match store
                    .read(Self::key(name))
                    .unwrap_or_else(|e| panic!("read {name}: {e}"))
                {
                    ReadResult::Present(r) => Some(r.bytes),
                    ReadResult::Absent => None,
                    ReadResult::Unreadable { reason, .. } => panic!("read {name}: {reason}"),
                }
            }
        }
    }

    /// A copy of every record (one that vanished while copying is left out).
    fn snapshot(&self) -> Snapshot {
        self.names()
            .into_iter()
            .filter_map(|n| self.read(&n).map(|b| (n, b)))
            .collect()
    }

    /// Writes a record as the store would: the lease file in place under its flock, any other
    /// file through a temporary file and a rename, an object with a plain PUT.
    fn write(&self, name: &str, bytes: &[u8]) {
        match self {
            Raw::Dir(root) if name == LEASE_FILE => write_lease_in_place(&root.join(name), bytes),
            Raw::Dir(root) => {
                let path = root.join(name);
                let dir = path.parent().expect("under the root");
                if !dir.is_dir() {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(dir)
                        .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
                }
                let file = path.file_name().expect("a file name").to_string_lossy();
                let tmp = dir.join(format!(".misbehave-{file}"));
                let mut f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
                std::io::Write::write_all(&mut f, bytes)
                    .and_then(|()| f.sync_all())
                    .unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
                fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("rename to {name}: {e}"));
            }
            Raw::S3 { store, .. } => {
                store
                    .put(Self::key(name), bytes)
                    .unwrap_or_else(|e| panic!("put {name}: {e}"));
            }
        }
    }

    fn delete(&self, name: &str) {
        match self {
            Raw::Dir(root) => match fs::remove_file(root.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("delete {name}: {e}"),
            },
            // The `Store` trait never deletes the lease; the storage itself can.
            Raw::S3 { root, prefix, .. } if name == LEASE_OBJECT => root
                .delete(&format!("{prefix}/{LEASE_OBJECT}"))
                .unwrap_or_else(|e| panic!("delete {prefix}/{LEASE_OBJECT}: {e}")),
            Raw::S3 { store, .. } => store
                .delete(Self::key(name))
                .unwrap_or_else(|e| panic!("delete {name}: {e}")),
        }
    }

    /// Removes everything under the root (not the root itself) or the prefix, `cluster.json`
    /// first: `rm -rf STORE/*` or deleting every object.
    fn wipe(&self) {
        match self {
            Raw::Dir(root) => {
                // The nodes go on writing their records: a folder may fill again while it is
                // removed; try again.
                for attempt in 0.. {
                    let mut busy = Vec::new();
                    for e in fs::read_dir(root).expect("list the store").flatten() {
                        let path = e.path();
                        let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
                            fs::remove_dir_all(&path)
                        } else {
                            fs::remove_file(&path)
                        };
                        match r {
                            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                                busy.push(format!("{}: {err}", path.display()))
                            }
                            _ => {}
                        }
                    }
                    if busy.is_empty() {
                        break;
                    }
                    assert!(attempt < 10, "cannot wipe the store: {busy:?}");
                }
            }
            Raw::S3 { .. } => {
                self.delete("cluster.json");
                for name in self.names() {
                    self.delete(&name);
                }
            }
        }
    }

    /// Rolls the store back to `copy`: every record not in it deleted, every one in it written
    /// back with the copy's bytes.
    fn restore(&self, copy: &Snapshot) {
        for name in self.names() {
            if !copy.contains_key(&name) {
                self.delete(&name);
            }
        }
        for (name, bytes) in copy {
            self.write(name, bytes);
        }
    }
}

/// Writes `bytes` over `lease.lock` in place (the file every node opens and flocks), holding the
/// exclusive flock a node's lease write holds, so no node's write is torn.
fn write_lease_in_place(path: &Path, bytes: &[u8]) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // A node holds it for about a millisecond per write.
    wait_for(Duration::from_secs(5), "the flock on lease.lock", || {
        f.try_lock().ok()
    });
    f.write_all_at(bytes, 0)
        .and_then(|()| f.set_len(bytes.len() as u64))
        .and_then(|()| f.sync_all())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let _ = f.unlock();
}

/// SIGSTOP of `label` at a moment it does not hold the lease file's write lock (a master frozen
/// inside its ~1 ms locked write blocks every takeover on a local disk: README "Known
/// limitations"); on an object store, at once. Returns the instant just before the signal.
fn freeze(c: &Cluster, raw: &Raw, label: &str) -> Instant {
    let Raw::Dir(root) = raw else {
        return c.node(label).sigstop();
    };
    freeze_outside_the_lease_lock_of(c, root, label)
}

/// Starts node-a alone (so that it takes the first term), then node-b and node-c; returns
/// node-a's epoch once all three agree on it.
fn three_with_a_master(c: &mut Cluster) -> u64 {
    let tm = c.timing;
    c.start(NodeSpec::new("node-a"));
    c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    c.start(NodeSpec::new("node-b"));
    c.start(NodeSpec::new("node-c"));
    let (m, e) = c.wait_stable_master(&THREE, settle_timeout(&tm));
    assert_eq!(m, "node-a", "a live master is never pre-empted");
    e
}

// ---------------------------------------------------------------------------------------------
// 1, 2. A wiped store.

/// `rm -rf STORE/*` (or every object deleted) under a running cluster. An empty store looks
/// like a new one; a cluster made there would answer MASTER beside the real one. Every node
/// must stop answering MASTER (its next renewal fails on the vanished lease; the next re-read
/// of cluster.json finds it gone), take nothing while cluster.json is absent — for longer than
/// T, so an absent lease that stood still would have been taken — and a new node must refuse
/// the store. Once cluster.json is back, a master returns, with an epoch above the old one
/// although `epochs/` was wiped (heartbeats carry the highest epoch each node saw).
fn wiped_store_scenario(c: &mut Cluster, name: &str) {
    let tm = c.timing;
    let raw = Raw::of(c);
    let epoch = three_with_a_master(c);
    let cluster_json = raw.read("cluster.json").expect("cluster.json after init");

    let wipe_from = Instant::now();
    raw.wipe();
    let wiped_at = Instant::now();
    eprintln!(
        "wiped the store in {} ms",
        wiped_at.duration_since(wipe_from).as_millis()
    );

    // Within T + 2p + margin every node answers, and not MASTER.
    let bound = tm.max_takeover();
    let quiet = wait_until(bound, || {
        let h = c.history();
        THREE.iter().all(|n| {
            h.latest(n)
                .is_some_and(|s| s.sent >= wiped_at && !s.is_master() && !s.is_down())
        })
    });
    assert!(
        quiet,
        "within T + 2p + margin = {bound:?} of the wipe, not every node answered a non-MASTER state; timeline:\n{}",
        c.history().timeline()
    );

    // A new node on the wiped store is refused: no cluster.json.
    c.start(NodeSpec::new("node-d"));
    let code = expect_exit(c, "node-d", refusal_timeout(&tm));
    let out = output(c, "node-d");
    assert_eq!(
        code, 1,
        "a new node on the wiped store: exit code; output:\n{out}"
    );
    assert!(
        out.contains("no cluster.json"),
        "node-d's refusal does not say the store holds no cluster.json:\n{out}"
    );

    // Keep cluster.json away for 2T after the wipe.
    let hold_until = wiped_at + 2 * tm.t;
    observe_for(hold_until.saturating_duration_since(Instant::now()));
    for n in THREE {
        assert!(
            c.node_mut(n).is_running(),
            "{n} exited while cluster.json was absent; log:\n{}",
            c.node(n).log_tail(30)
        );
    }
    assert!(
        raw.read("cluster.json").is_none(),
        "a node wrote cluster.json into the wiped store"
    );
    let restore_from = Instant::now();
    raw.write("cluster.json", &cluster_json);
    let restored_at = Instant::now();

    let h = c.history();
    let grace = reaction_grace(&tm);
    let bad = masters_between(&h, wiped_at + grace, restore_from);
    assert!(
        bad.is_empty(),
        "{} answered MASTER (epoch {:?}) at +{}ms, while cluster.json was absent (wiped at +{}ms, \
         grace p + storage timeout + margin = {grace:?}, restored at +{}ms); timeline:\n{}",
        bad[0].node,
        bad[0].epoch,
        h.rel(bad[0].sent),
        h.rel(wiped_at),
        h.rel(restore_from),
        h.timeline()
    );
    let last = h
        .samples
        .iter()
        .rfind(|s| s.is_master() && s.sent <= restore_from)
        .expect("a MASTER answer before the wipe");
    eprintln!(
        "the last MASTER answer before the restore ({}, epoch {:?}) ended {} ms after the wipe; while cluster.json was absent the nodes answered {:?}",
        last.node,
        last.epoch,
        ms_after(wiped_at, last.received),
        answers_between(&h, wiped_at + grace, restore_from)
    );

    // A master is back within 3T of the restore, at an epoch above the old one.
    let onset = c.wait_takeover(restored_at, &[], 3 * tm.t);
    let (m, e) = c.wait_stable_master(&THREE, 3 * tm.t);
    eprintln!(
        "{} answered MASTER (epoch {:?}) {} ms after cluster.json was restored; stable: {m} at epoch {e} (before the wipe: node-a at {epoch})",
        onset.node,
        onset.epoch,
        onset.latest().duration_since(restored_at).as_millis()
    );
    assert!(
        e > epoch,
        "the epoch went back after the wipe: {m} is master at {e}, the master before the wipe had {epoch}"
    );
    finish(name, &c.history());
    c.assert_safe();
}

#[test]
fn a_wiped_directory_store_stops_every_master_until_cluster_json_is_back() {
    let _serial = serial();
    wiped_store_scenario(
        &mut Cluster::standard(),
        "a_wiped_directory_store_stops_every_master_until_cluster_json_is_back",
    );
}

#[test]
fn a_wiped_s3_prefix_stops_every_master_until_cluster_json_is_back() {
    let _serial = serial();
    let Some(mut c) = s3_cluster(Timing::standard(), "wipe") else {
        return;
    };
    wiped_store_scenario(
        &mut c,
        "a_wiped_s3_prefix_stops_every_master_until_cluster_json_is_back",
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A store rolled back to an earlier copy.

/// A restored snapshot (or a failover to a lagging replica) while the old master is frozen: the
/// store forgets the new master's term (its lease, its epoch file, its record) and shows the old
/// master's lease again — byte for byte the version the old master last wrote, since the copy is
/// taken while it is frozen, so its own next conditional renewal would succeed. The new term
/// began long before (more than p), so this is not the exception docs/security.md names: the new
/// master's renewal fails on the old lease and it stops at once; the old master, thawed, is past
/// its deadline and may re-take its lease only after a fresh scan shows no node at a higher
/// epoch, which the new master's next heartbeat does. Never two masters, epochs never go back,
/// and one master at the end, at an epoch above the new master's (or the new master itself).
fn rollback_scenario(c: &mut Cluster, name: &str) {
    let tm = c.timing;
    let raw = Raw::of(c);
    let epoch = three_with_a_master(c);

    let stopped_at = freeze(c, &raw, "node-a");
    let copy = raw.snapshot();
    assert!(
        copy.contains_key(raw.lease()) && copy.contains_key("cluster.json"),
        "the copy lacks the lease or cluster.json: {:?}",
        copy.keys().collect::<Vec<_>>()
    );
    let onset = c.wait_takeover(
        stopped_at,
        &["node-a"],
        tm.max_takeover() + Duration::from_secs(3),
    );
    assert!(onset.epoch.unwrap_or(0) > epoch);
    let (new_master, new_epoch) = c.wait_stable_master(&["node-b", "node-c"], 2 * tm.t);
    // Let the new term run for T (many renewals, every node's record showing its epoch): the
    // store then forgets an established term, not one younger than p (the documented exception).
    observe_for(tm.t);

    let rollback_from = Instant::now();
    raw.restore(&copy);
    let rolled_back_at = Instant::now();
    let cont_at = c.node("node-a").sigcont();
    eprintln!(
        "rolled the store back to the copy made while node-a (epoch {epoch}) was frozen, in {} ms; {new_master} had been master at epoch {new_epoch} for {} ms; node-a thawed",
        rolled_back_at.duration_since(rollback_from).as_millis(),
        ms_after(onset.latest(), rollback_from)
    );

    observe_for(3 * tm.t);
    let (m, e) = c.wait_stable_master(&THREE, 3 * tm.t);
    let h = c.history();
    let last_new = h
        .of(&new_master)
        .filter(|s| s.is_master() && s.epoch == Some(new_epoch))
        .last()
        .expect("the new master answered MASTER")
        .clone();
    let next_term = h
        .samples
        .iter()
        .find(|s| s.sent >= rolled_back_at && s.is_master() && s.epoch != Some(new_epoch));
    let old_after: Vec<&Sample> = h
        .of("node-a")
        .filter(|s| s.sent >= cont_at && s.is_master())
        .collect();
    eprintln!(
        "after the rollback: {new_master}'s last MASTER answer at epoch {new_epoch} ended {} ms after it; the next term: {}; node-a answered MASTER {} time(s) after SIGCONT{}; at the end {m} is master at epoch {e}",
        ms_after(rolled_back_at, last_new.received),
        next_term.map_or("none".to_string(), |s| format!(
            "{} at epoch {:?}, {} ms after the rollback",
            s.node,
            s.epoch,
            ms_after(rolled_back_at, s.received)
        )),
        old_after.len(),
        old_after.first().map_or(String::new(), |s| format!(
            " (first at +{}ms, epoch {:?})",
            h.rel(s.sent),
            s.epoch
        ))
    );
    // The old master's term is over: it never answers MASTER at its old epoch (or any epoch up
    // to the new master's) after the thaw.
    if let Some(s) = old_after.iter().find(|s| s.epoch.unwrap_or(0) <= new_epoch) {
        panic!(
            "node-a answered MASTER at epoch {:?} at +{}ms after SIGCONT, though {new_master} had held epoch {new_epoch}; timeline:\n{}",
            s.epoch,
            h.rel(s.sent),
            h.timeline()
        );
    }
    assert!(
        e > new_epoch || (m == new_master && e == new_epoch),
        "at the end {m} is master at epoch {e}, not above {new_master}'s epoch {new_epoch}; timeline:\n{}",
        h.timeline()
    );
    finish(name, &h);
    c.assert_safe();
}

/// Milliseconds from `from` to `to` (0 if `to` is earlier), for messages.
fn ms_after(from: Instant, to: Instant) -> u128 {
    to.saturating_duration_since(from).as_millis()
}

#[test]
fn a_store_rolled_back_while_the_master_is_paused_never_gives_two_masters() {
    let _serial = serial();
    rollback_scenario(
        &mut Cluster::standard(),
        "a_store_rolled_back_while_the_master_is_paused_never_gives_two_masters",
    );
}

#[test]
fn an_s3_prefix_rolled_back_while_the_master_is_paused_never_gives_two_masters() {
    let _serial = serial();
    let Some(mut c) = s3_cluster(Timing::standard(), "rollback") else {
        return;
    };
    rollback_scenario(
        &mut c,
        "an_s3_prefix_rolled_back_while_the_master_is_paused_never_gives_two_masters",
    );
}

// ---------------------------------------------------------------------------------------------
// 4. An old released lease written back.

/// A released lease is the one record a node may act on at once (the graceful handover). An old
/// one written back over a live master's lease must not hand out a term beside it: the master's
/// renewal fails on it and it stops at once; a `--mode master` start that finds it never saw
/// it unreleased, and `epochs/` shows a later term, so it does not take it at once (README
/// "How the safety works": a replayed record hands out nothing); the lease must stand still
/// for T first. The released lease is copied from a lone master's graceful stop (with nobody
/// to take it over at once), before node-b takes it over after T.
#[test]
fn a_replayed_released_lease_is_not_taken_at_once_by_a_master_mode_start() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let raw = Raw::of(&c);
    // node-a only has to leave a released lease behind: the largest storage timeout the timing
    // rules allow (D − 2p), so that a slow fsync on a busy machine does not fail the release.
    let patient = dur_arg(tm.t * 2 / 3 - 2 * tm.p);
    c.start(NodeSpec::new("node-a").args(&["--storage-timeout", &patient]));
    let (_, epoch_a) = c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    c.node("node-a").sigterm();
    let code = expect_exit(&mut c, "node-a", tm.t + tm.margin + Duration::from_secs(2));
    assert_eq!(code, 0, "node-a after SIGTERM: exit code");
    let released = raw.read(LEASE_FILE).expect("lease.lock");
    assert!(
        String::from_utf8_lossy(&released).contains("\"released\":true"),
        "the lease after node-a's graceful stop is not released"
    );

    c.start(NodeSpec::new("node-b"));
    let (_, epoch_b) = c.wait_stable_master(&["node-b"], settle_timeout(&tm) + tm.t);
    assert!(epoch_b > epoch_a, "node-b's epoch {epoch_b} <= {epoch_a}");

    raw.write(LEASE_FILE, &released);
    let replayed_at = Instant::now();
    let started = c.start(NodeSpec::new("node-c").mode("master")).started;

    // node-c's privileges last T + 2p + storage timeout from its first read; give it that, the
    // T rule's own T + 2p + margin, and a start-up.
    let window = 2 * tm.t + 4 * tm.p + storage_timeout(&tm) + tm.margin + Duration::from_secs(2);
    let mut exit = None;
    wait_until(window, || {
        exit = c.node_mut("node-c").try_exit();
        exit.is_some() || c.history().last_master_answer("node-c").is_some()
    });
    let running: Vec<&str> = if exit.is_some() {
        vec!["node-b"]
    } else {
        vec!["node-b", "node-c"]
    };
    let (m, e) = c.wait_stable_master(&running, 3 * tm.t);
    let h = c.history();
    // The first MASTER answer after the replay that is not node-b's term going on.
    let next = h
        .samples
        .iter()
        .find(|s| s.sent >= replayed_at && s.is_master() && s.epoch != Some(epoch_b))
        .cloned();
    let b_last = h
        .of("node-b")
        .filter(|s| s.is_master() && s.epoch == Some(epoch_b))
        .last()
        .expect("node-b answered MASTER")
        .clone();
    let c_first = h.of("node-c").find(|s| s.is_master()).cloned();
    let what = match (exit, &c_first) {
        (Some(code), None) => format!(
            "node-c exited {code} ({} ms after its start) without answering MASTER: {}",
            ms_after(started, Instant::now()),
            output(&c, "node-c").lines().last().unwrap_or_default()
        ),
        (_, Some(s)) => format!(
            "node-c answered MASTER (epoch {:?}) {} ms after the replay, {} ms after node-b's last MASTER answer at epoch {epoch_b}",
            s.epoch,
            ms_after(replayed_at, s.sent),
            ms_after(b_last.received, s.sent)
        ),
        (None, None) => "node-c runs and never answered MASTER".to_string(),
    };
    eprintln!(
        "replayed node-a's released lease (epoch {epoch_a}) over node-b's (epoch {epoch_b}): node-b's last MASTER answer {} ms after the replay; {what}; at the end {m} is master at epoch {e}",
        ms_after(replayed_at, b_last.received)
    );
    if let Some(s) = &c_first {
        assert!(
            s.sent >= b_last.received,
            "node-c answered MASTER at +{}ms, before node-b's last MASTER answer ended (+{}ms); timeline:\n{}",
            h.rel(s.sent),
            h.rel(b_last.received),
            h.timeline()
        );
    }
    if let Some(code) = exit {
        assert_eq!(code, 1, "node-c (--mode master) refused: exit code");
    }
    // Whoever took over after the replay did so only after the replayed lease stood still for T
    // (conservatively: even the first MASTER answer's arrival is no earlier than T − R).
    let next = next.expect("a master after the replay");
    let earliest = tm.min_takeover();
    assert!(
        next.received >= replayed_at + earliest,
        "{} took the replayed released lease at once: MASTER (epoch {:?}) {} ms after the replay, before T − R = {earliest:?}; timeline:\n{}",
        next.node,
        next.epoch,
        ms_after(replayed_at, next.received),
        h.timeline()
    );
    assert!(
        e > epoch_b,
        "the master after the replay has epoch {e}, not above {epoch_b}"
    );
    finish(
        "a_replayed_released_lease_is_not_taken_at_once_by_a_master_mode_start",
        &h,
    );
    c.assert_safe();
}

// ---------------------------------------------------------------------------------------------
// 5. cluster.json changed under running nodes.

/// T and ρ are cluster-wide: a node running with another T than the cluster's could take over
/// early. cluster.json rewritten with another heartbeat timeout (plain JSON: no secret) must
/// stop the master and make every running node exit 2, naming the stored value. (`tenure init
/// --reconfigure` refuses while node records keep changing, so the store is edited directly.)
/// Each node re-reads cluster.json at every scan, at most T/4 apart: the bound, T + 2p + margin,
/// is that of any reaction to the store.
#[test]
fn a_changed_heartbeat_timeout_in_cluster_json_stops_the_master_and_exits_2() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let raw = Raw::of(&c);
    c.start(NodeSpec::new("node-a"));
    c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    c.start(NodeSpec::new("node-b"));
    let (master, _) = c.wait_stable_master(&["node-a", "node-b"], settle_timeout(&tm));

    let bytes = raw.read("cluster.json").expect("cluster.json");
    let mut rec: serde_json::Value =
        serde_json::from_slice(&bytes).expect("cluster.json is plain JSON without a secret");
    assert_eq!(
        rec["heartbeatTimeoutMs"].as_u64(),
        Some(tm.t.as_millis() as u64),
        "cluster.json: {rec}"
    );
    let other_t = tm.t + Duration::from_secs(1);
    rec["heartbeatTimeoutMs"] = serde_json::json!(other_t.as_millis() as u64);
    raw.write("cluster.json", &serde_json::to_vec(&rec).expect("JSON"));
    let changed_at = Instant::now();

    let bound = tm.max_takeover();
    let mut exited: BTreeMap<&str, (i32, Instant)> = BTreeMap::new();
    wait_until(bound, || {
        for n in ["node-a", "node-b"] {
            if !exited.contains_key(n)
                && let Some(code) = c.node_mut(n).try_exit()
            {
                exited.insert(n, (code, Instant::now()));
            }
        }
        exited.len() == 2
    });
    let stored = format!("--heartbeat-timeout {}s", other_t.as_secs());
    for n in ["node-a", "node-b"] {
        let out = output(&c, n);
        let Some(&(code, at)) = exited.get(n) else {
            panic!(
                "{n} still runs {bound:?} (T + 2p + margin) after cluster.json changed its T; log:\n{out}"
            );
        };
        eprintln!(
            "{n}{} exited {code} at most {} ms after cluster.json changed",
            if n == master { " (the master)" } else { "" },
            ms_after(changed_at, at)
        );
        assert_eq!(
            code, 2,
            "{n} after cluster.json changed T: exit code; output:\n{out}"
        );
        assert!(
            out.contains(&stored),
            "{n}'s output does not name the stored value {stored:?}:\n{out}"
        );
    }
    let h = c.history();
    let last = h.last_master_answer(&master).expect("answered MASTER");
    eprintln!(
        "{master}'s last MASTER answer at most {} ms after the change",
        ms_after(changed_at, last.received)
    );
    finish(
        "a_changed_heartbeat_timeout_in_cluster_json_stops_the_master_and_exits_2",
        &h,
    );
    c.assert_safe();
}

// ---------------------------------------------------------------------------------------------
// 6. Two processes with one name at the same instant.

/// The name claim is a conditional write (create if absent, else replace on the version read):
/// of two processes started with one `--node-name` at the same instant, exactly one may win;
/// the other exits 1, "duplicate node name", whether it lost the create or saw the winner's
/// record change. Five rounds, each on a fresh cluster whose master runs already; both processes
/// are spawned before either is waited on.
#[test]
fn two_processes_with_one_name_started_at_the_same_instant_leave_exactly_one() {
    let _serial = serial();
    let (mut overlaps, mut regressions, mut longest) = (0usize, 0usize, Duration::ZERO);
    for round in 1..=5 {
        let mut c = Cluster::standard();
        let tm = c.timing;
        c.start(NodeSpec::new("node-a"));
        c.wait_stable_master(&["node-a"], settle_timeout(&tm));
        let from = Instant::now();
        let t1 = c.start(NodeSpec::new("node-b").label("node-b-1")).started;
        let t2 = c.start(NodeSpec::new("node-b").label("node-b-2")).started;
        let labels = ["node-b-1", "node-b-2"];

        let mut codes: BTreeMap<&str, i32> = BTreeMap::new();
        wait_until(refusal_timeout(&tm), || {
            for l in labels {
                if let Some(code) = c.node_mut(l).try_exit() {
                    codes.insert(l, code);
                }
            }
            !codes.is_empty()
        });
        assert_eq!(
            codes.len(),
            1,
            "round {round}: exit codes {codes:?} within {:?}: expected exactly one of the two to exit; logs:\n{}\n{}",
            refusal_timeout(&tm),
            c.node("node-b-1").log_tail(20),
            c.node("node-b-2").log_tail(20)
        );
        let (&loser, &code) = codes.iter().next().expect("one");
        let winner = labels.into_iter().find(|l| *l != loser).expect("the other");
        let out = output(&c, loser);
        assert_eq!(
            code, 1,
            "round {round}: {loser}'s exit code; output:\n{out}"
        );
        assert!(
            out.contains("duplicate node name"),
            "round {round}: {loser}'s output does not say \"duplicate node name\":\n{out}"
        );
        // The winner joins and keeps running.
        c.wait_answer(winner, "STANDBY", settle_timeout(&tm));
        observe_for(tm.t);
        assert!(
            c.node_mut(winner).is_running(),
            "round {round}: {winner} exited too; log:\n{}",
            c.node(winner).log_tail(20)
        );
        let h = c.history();
        assert_never_master_since(&h, winner, from);
        assert_never_master_since(&h, loser, from);
        let v = h.violations();
        let r = v
            .iter()
            .filter(|x| x.message.contains("epoch went back"))
            .count();
        regressions += r;
        overlaps += v.len() - r;
        let gap = h
            .samples
            .iter()
            .find(|s| s.is_master())
            .and_then(|first| h.longest_no_master_after(first.sent))
            .unwrap_or_default();
        longest = longest.max(gap);
        eprintln!(
            "round {round}: spawned {} µs apart; {winner} runs, {loser} exited 1: {}; longest without a MASTER answer {} ms",
            t2.duration_since(t1).as_micros(),
            out.lines()
                .find(|l| l.contains("duplicate node name"))
                .and_then(|l| l.split_once("tenure::run: ").map(|(_, m)| m))
                .unwrap_or_default()
                .trim(),
            gap.as_millis()
        );
        if gap > tm.t {
            eprintln!("round {round} timeline:\n{}", h.timeline());
        }
        c.assert_safe();
    }
    eprintln!(
        "SCENARIO two_processes_with_one_name_started_at_the_same_instant_leave_exactly_one: overlaps={overlaps} epoch_regressions={regressions} longest_no_master_ms={}",
        longest.as_millis()
    );
}

// ---------------------------------------------------------------------------------------------
// 7. A mount that vanishes under a node.

/// A node whose store path is a bind mount in a mount namespace of its own, so that the test
/// can unmount it under that node alone (`nsenter … umount -l`). Killed (and its namespace, with
/// the mount, gone) on drop.
struct NamespacedNode {
    label: String,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl NamespacedNode {
    /// `unshare --mount … sh -c 'mount --bind STORE MOUNTPOINT && exec tenure run --store
    /// MOUNTPOINT …'`; `sh` and `unshare` exec, so the child's pid is the node's.
    fn spawn(label: &str, store: &Path, mountpoint: &Path, log: PathBuf, tm: &Timing) -> Self {
        let port = free_port();
        let args = run_args(
            label,
            &mountpoint.display().to_string(),
            port,
            &dur_arg(tm.t),
            &dur_arg(tm.p),
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#)
            .arg("sh")
            .arg(store)
            .arg(mountpoint)
            .arg(tenure_bin())
            .args(&args);
        let banner = format!(
            "=== harness: starting {label} in its own mount namespace, {} bind-mounted on {}: {}",
            store.display(),
            mountpoint.display(),
            args.join(" ")
        );
        let no_env: [(String, String); 0] = [];
        prepare(&mut cmd, &log, &banner, &no_env);
        let child = cmd.spawn().expect("spawn unshare");
        NamespacedNode {
            label: label.to_string(),
            port,
            log,
            child: Some(child),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn state_url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, tenure_tests::STATE_PATH)
    }

    fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Runs a command in the node's mount namespace; panics with its output if it fails.
    fn in_namespace(&self, args: &[&str]) {
        let out = Command::new("nsenter")
            .args(["-t", &self.pid().to_string(), "-m", "--"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter");
        assert!(
            out.status.success(),
            "nsenter -t {} -m {args:?} failed ({}): {}{}",
            self.pid(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for NamespacedNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- {} (own mount namespace) log {}:\n{}",
                self.label,
                self.log.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// Why the mount-namespace test cannot run here, if it cannot.
fn mount_namespaces_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (mounting needs it)".into());
    }
    for tool in ["unshare", "nsenter", "mount", "umount"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// The cluster's samples and the namespaced node's, as one history.
fn merged(c: &Cluster, obs: &Observer) -> History {
    let mut samples = c.history().samples;
    samples.extend(obs.history().samples);
    History::new(c.origin(), samples)
}

/// The store's mount vanishes under the master (an NFS mount lost, `umount -l`): its store path
/// now names another, empty directory. That is "storage unavailable", never an empty store:
/// the master stops answering MASTER (no renewal is confirmed: at its deadline, D after the last
/// one), writes nothing there (no cluster.json, no records: the directory stays empty), and
/// answers MASTER no more while unmounted; another node takes over at a higher epoch. Mounted
/// again, it comes back as a standby of the new master.
#[test]
fn a_vanished_mount_is_storage_unavailable_not_an_empty_store() {
    let _serial = serial();
    if let Some(why) = mount_namespaces_unavailable() {
        eprintln!("SKIPPING a_vanished_mount_is_storage_unavailable_not_an_empty_store: {why}");
        return;
    }
    let mut c = Cluster::standard();
    let tm = c.timing;
    c.init(&[]);
    let store = c.store().to_path_buf();
    let mnt = c.root().join("mnt-a");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&mnt)
        .expect("create the mount point");
    let mnt_arg = mnt.display().to_string();
    let store_arg = store.display().to_string();

    let mut a = NamespacedNode::spawn("node-a", &store, &mnt, c.root().join("node-a.log"), &tm);
    let mut obs = Observer::new();
    obs.add("node-a", &a.state_url());
    let epoch = wait_for(settle_timeout(&tm), "node-a to answer MASTER", || {
        merged(&c, &obs)
            .latest("node-a")
            .filter(|s| s.is_master())
            .and_then(|s| s.epoch)
    });
    c.start(NodeSpec::new("node-b"));
    c.start(NodeSpec::new("node-c"));
    for n in ["node-b", "node-c"] {
        c.wait_answer(n, "STANDBY", settle_timeout(&tm));
    }
    let agreed = wait_until(3 * tm.p + tm.margin, || {
        let h = c.history();
        ["node-b", "node-c"]
            .iter()
            .all(|n| h.latest(n).is_some_and(|s| s.epoch == Some(epoch)))
    });
    assert!(
        agreed,
        "node-b and node-c do not report node-a's epoch {epoch}"
    );
    assert!(
        fs::read_dir(&mnt).expect("list").next().is_none(),
        "the mount point's own directory is not empty before the unmount"
    );

    let unmounted_at = Instant::now();
    a.in_namespace(&["umount", "-l", &mnt_arg]);

    // node-a stops answering MASTER within T + 2p + margin, and answers.
    let stopped = wait_for(tm.max_takeover(), "node-a to stop answering MASTER", || {
        merged(&c, &obs)
            .latest("node-a")
            .filter(|s| s.sent >= unmounted_at && !s.is_master() && !s.is_down())
            .cloned()
    });
    let onset = c.wait_takeover(
        unmounted_at,
        &[],
        tm.max_takeover() + Duration::from_secs(3),
    );
    let (new_master, new_epoch) = c.wait_stable_master(&["node-b", "node-c"], 2 * tm.t);
    assert!(
        onset.epoch.unwrap_or(0) > epoch && new_epoch > epoch,
        "the takeover's epoch {:?} is not above node-a's {epoch}",
        onset.epoch
    );
    // The others see node-a's record stand still.
    wait_status_in_states(&c, "node-b", "node-a", "FAILED", 3 * tm.t);
    observe_for(tm.t);
    assert!(a.is_running(), "node-a exited while its mount was gone");
    let h = merged(&c, &obs);
    assert_never_master_since(&h, "node-a", stopped.sent);
    let leftovers: Vec<String> = fs::read_dir(&mnt)
        .expect("list the mount point")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        leftovers.is_empty(),
        "node-a wrote into the directory under its vanished mount: {leftovers:?}"
    );
    let log = fs::read_to_string(c.root().join("node-a.log")).unwrap_or_default();
    assert!(
        log.contains("storage unavailable") && log.contains("a mount vanished or was replaced"),
        "node-a's log does not say its store became unavailable (a vanished mount)"
    );
    let remount_at = Instant::now();
    eprintln!(
        "unmounted at +{}ms: node-a answered {} at most {} ms later (and {:?} while unmounted); {} took over at epoch {:?} {} ms after the unmount",
        h.rel(unmounted_at),
        stopped.answer,
        ms_after(unmounted_at, stopped.received),
        answers_between(&h, stopped.sent, remount_at).get("node-a"),
        onset.node,
        onset.epoch,
        ms_after(unmounted_at, onset.latest())
    );

    // Mounted again: node-a reads the store again and is a standby of the new master.
    a.in_namespace(&["mount", "--bind", &store_arg, &mnt_arg]);
    let back = wait_for(
        tm.max_takeover(),
        "node-a to answer STANDBY with the new master's epoch",
        || {
            merged(&c, &obs)
                .latest("node-a")
                .filter(|s| {
                    s.sent >= remount_at && s.answer == "STANDBY" && s.epoch == Some(new_epoch)
                })
                .cloned()
        },
    );
    wait_status_in_states(&c, "node-b", "node-a", "STANDBY", 3 * tm.t);
    eprintln!(
        "remounted: node-a answered STANDBY at epoch {new_epoch} ({new_master} master) at most {} ms later",
        ms_after(remount_at, back.received)
    );
    observe_for(2 * tm.p);
    let h = merged(&c, &obs);
    assert_never_master_since(&h, "node-a", stopped.sent);
    assert!(
        fs::read_dir(&mnt).expect("list").next().is_none(),
        "the mount point's own directory is not empty"
    );
    finish(
        "a_vanished_mount_is_storage_unavailable_not_an_empty_store",
        &h,
    );
    c.assert_safe();
    drop(a);
}

// ---------------------------------------------------------------------------------------------
// 8. A disabled node beside an auto node.

/// `--mode disabled` is Brooklyn's lone node: it reports MASTER, and takes the lease like a
/// `--mode master` start so that no other node can be master beside it. An auto node started
/// on the same store must see that lease renewed and stay a standby while it runs.
#[test]
fn a_disabled_node_never_coexists_with_a_lease_holding_master() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    c.start(NodeSpec::new("node-d").mode("disabled"));
    let first = c.wait_answer("node-d", "MASTER", settle_timeout(&tm));
    let from = Instant::now();
    c.start(NodeSpec::new("node-b"));
    let joined = wait_for(settle_timeout(&tm), "node-b to answer", || {
        c.latest("node-b")
            .filter(|s| !s.is_down() && s.answer != "INITIALIZING")
    });
    observe_for(2 * tm.t + 2 * tm.p);
    let until = Instant::now();
    assert!(
        c.node_mut("node-d").is_running() && c.node_mut("node-b").is_running(),
        "a node exited; logs:\n{}\n{}",
        c.node("node-d").log_tail(20),
        c.node("node-b").log_tail(20)
    );
    let h = c.history();
    eprintln!(
        "node-d (disabled) answered MASTER (epoch {:?}) from +{}ms; node-b answered {:?} from +{}ms, {:?} in all",
        first.epoch,
        h.rel(first.sent),
        joined.answer,
        h.rel(joined.sent),
        answers_between(&h, from, until).get("node-b")
    );
    assert_never_master_since(&h, "node-b", from);
    assert_kept_answering(
        &h,
        "node-d",
        from,
        until,
        "MASTER",
        Duration::from_millis(500),
    );
    finish(
        "a_disabled_node_never_coexists_with_a_lease_holding_master",
        &h,
    );
    c.assert_safe();
}
