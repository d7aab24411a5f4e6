//! The cluster secret (issue 7): someone who can write the store but lacks the secret can
//! forge or replay records; none is ever obeyed, and the cluster has a genuine master again
//! (after T plus a cautious take, bounded here by 4T). Also: the secret file's checks, the environment variable, rotation, and signed
//! nudges. T = 2 s, p = 200 ms. Run with `--test-threads=1`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tenure_election::clock::wall_millis;
use tenure_election::records::{self, LeaseRecord};
use tenure_election::secret::Keyring;
use tenure_http::nudge::{NUDGE_AUTH_HEADER, nudge_token};
use tenure_persistence::{DirOptions, DirStore};
use tenure_store::{LEASE_KEY, ReadResult, Store};
use tenure_tests::cluster::NodeSpec;
use tenure_tests::expect::{assert_kept_answering, expect_exit, settle_timeout, wait_log_contains};
use tenure_tests::{Cluster, observe_for, serial};

const THREE: [&str; 3] = ["node-a", "node-b", "node-c"];
const SECRET: &str = "cluster-secret-for-the-tests-0123456789";
const OTHER: &str = "another-secret-nobody-in-the-cluster-has";

fn secret_file(c: &Cluster, name: &str, secret: &str, mode: u32) -> PathBuf {
    let p = c.root().join(name);
    std::fs::write(&p, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn signed(name: &str, file: &Path) -> NodeSpec {
    NodeSpec::new(name).args(&["--secret-file", file.to_str().unwrap()])
}

/// The forger's own handle on the store: it can write anything, but has no secret.
fn store(c: &Cluster) -> DirStore {
    DirStore::open(
        c.store(),
        DirOptions {
            check_mount: false,
            ..DirOptions::default()
        },
    )
    .unwrap()
}

fn read(c: &Cluster, key: &str) -> Vec<u8> {
    match store(c).read(key).unwrap() {
        ReadResult::Present(r) => r.bytes,
        other => panic!("{key}: {other:?}"),
    }
}

fn write(c: &Cluster, key: &str, bytes: &[u8]) {
    let s = store(c);
    // Conditional on what is there now, like any writer; retry if a node wrote in between.
    for _ in 0..50 {
        let r = match s.read(key).unwrap() {
            ReadResult::Present(r) => s.replace(key, bytes, &r.version),
            ReadResult::Absent => s.create(key, bytes),
            ReadResult::Unreadable { version, .. } => s.replace(key, bytes, &version),
        };
        if r.is_ok() {
            return;
        }
    }
    panic!("could not write {key}");
}

fn genuine_lease(c: &Cluster) -> LeaseRecord {
    let keys = Keyring::new(SECRET.as_bytes(), None).unwrap();
    records::open(Some(&keys), LEASE_KEY, &read(c, LEASE_KEY)).expect("a genuine lease")
}

fn forged_lease(genuine: &LeaseRecord, holder: &str, epoch: u64, released: bool) -> LeaseRecord {
    LeaseRecord {
        epoch,
        holder: holder.into(),
        instance_id: format!("forged-{holder}"),
        renew_seq: 1,
        released,
        successor: released.then(|| holder.to_string()),
        ..genuine.clone()
    }
}

fn metric(c: &Cluster, node: &str, field: &str) -> u64 {
    let (code, body) = c.node(node).get("/v1/server/ha/metrics").expect("metrics");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {body}"))
}

fn start_three(c: &mut Cluster, file: &Path) -> (String, u64) {
    // The cluster is created signed, as `tenure init --secret-file` does.
    c.init(&["--secret-file", file.to_str().unwrap()]);
    for n in THREE {
        c.start(signed(n, file));
    }
    c.wait_stable_master(&THREE, settle_timeout(&c.timing))
}

/// Forged heartbeats (no MAC, wrong MAC, a replayed genuine one) asking the master for a
/// switchover, with a high priority: the master stays, with the same epoch.
#[test]
fn forged_heartbeats_never_move_the_master() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let file = secret_file(&c, "secret", SECRET, 0o600);
    let (master, epoch) = start_three(&mut c, &file);
    let standby = THREE.iter().find(|n| **n != master).unwrap().to_string();
    let hb_key = records::node_key(&standby);
    let old_hb = tenure_tests::wait_for(tm.t, "the standby's first heartbeat", || {
        match store(&c).read(&hb_key).ok()? {
            ReadResult::Present(r) => Some(r.bytes),
            _ => None,
        }
    });
    observe_for(tm.p * 3);

    let forged_at = Instant::now();
    let wrong = Keyring::new(OTHER.as_bytes(), None).unwrap();
    let hb = |name: &str| {
        serde_json::json!({
            "format": 1, "clusterId": genuine_lease(&c).cluster_id, "name": name,
            "instanceId": "forged", "seq": 1_000_000, "status": "STANDBY", "mode": "AUTO",
            "priority": 1_000_000, "uri": "http://127.0.0.1:9", "localTimestampMs": 0,
            "switchoverRequest": epoch,
        })
    };
    write(&c, "nodes/evil.json", &records::encode(&hb("evil")));
    write(
        &c,
        "nodes/mallory.json",
        &records::seal(Some(&wrong), "nodes/mallory.json", &hb("mallory")),
    );
    // A genuine heartbeat of a live node, replayed: older than what that node wrote since.
    write(&c, &hb_key, &old_hb);
    observe_for(3 * tm.t);
    let until = Instant::now();

    let h = c.history();
    assert_kept_answering(&h, &master, forged_at, until, "MASTER", tm.p * 3);
    let moved: Vec<_> = h
        .since(forged_at)
        .filter(|s| s.is_master() && (s.node != master || s.epoch != Some(epoch)))
        .collect();
    assert!(
        moved.is_empty(),
        "forged heartbeats moved the master: {:?}; timeline:\n{}",
        moved[0],
        h.timeline()
    );
    // The forgeries are alerts, and none of them shows up as a node.
    wait_log_contains(&c, &master, "ALERT", tm.t);
    assert!(metric(&c, &master, "forgedRecords") >= 2);
    let states = c.node(&master).states().unwrap();
    for fake in ["evil", "mallory"] {
        assert!(
            states["nodes"].get(fake).is_none(),
            "{fake} is listed as a node: {states}"
        );
    }
    c.assert_safe();
}

/// Forged leases (no MAC naming a standby, released to it; wrong MAC) and a replayed genuine
/// lease of an earlier epoch: nobody answers MASTER for them, and a genuine master (a fresh
/// epoch) answers again after each forgery. That takes T (the forged lease must stand still)
/// plus a cautious take (one poll, a storage deadline and 100 ms); the bound is 4T so that a
/// take that fails on a slow store (a storage call over its deadline) can be retried once.
#[test]
fn forged_and_replayed_leases_are_never_obeyed_and_a_genuine_master_returns() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let file = secret_file(&c, "secret", SECRET, 0o600);
    let (master, first_epoch) = start_three(&mut c, &file);
    let old_lease = read(&c, LEASE_KEY);
    // A failover, so that the saved lease is a replay of an old epoch.
    let killed = c.node_mut(&master).kill9();
    let onset = c.wait_takeover(killed, &[&master], tm.max_takeover() + tm.t);
    let mut epoch = onset.epoch.expect("an epoch");
    assert!(epoch > first_epoch);
    let c_master = onset.node.clone();
    c.node_mut(&master).restart_with(|s| s);
    observe_for(tm.t);

    let wrong = Keyring::new(OTHER.as_bytes(), None).unwrap();
    let standby = THREE
        .iter()
        .find(|n| **n != c_master && **n != master)
        .unwrap()
        .to_string();
    let forgeries: Vec<(&str, Vec<u8>, Option<u64>)> = vec![
        (
            "unsigned lease released to a standby",
            records::encode(&forged_lease(&genuine_lease(&c), &standby, 1_000, true)),
            Some(1_000),
        ),
        (
            "lease signed with another secret",
            records::seal(
                Some(&wrong),
                LEASE_KEY,
                &forged_lease(&genuine_lease(&c), &standby, 2_000, false),
            ),
            Some(2_000),
        ),
        ("replayed genuine lease", old_lease, Some(first_epoch)),
    ];
    for (what, bytes, forged_epoch) in forgeries {
        let at = Instant::now();
        write(&c, LEASE_KEY, &bytes);
        let recovered = tenure_tests::wait_until(4 * tm.t + tm.margin, || {
            c.history()
                .since(at)
                .any(|s| s.is_master() && s.epoch.is_some_and(|e| e > epoch))
        });
        let h = c.history();
        assert!(
            recovered,
            "{what}: no genuine master (epoch > {epoch}) within 4T; timeline:\n{}",
            h.timeline()
        );
        let obeyed: Vec<_> = h
            .since(at)
            .filter(|s| s.is_master() && s.epoch == forged_epoch)
            .collect();
        assert!(
            obeyed.is_empty(),
            "{what}: a node answered MASTER for the forged epoch: {:?}",
            obeyed[0]
        );
        epoch = h
            .since(at)
            .filter(|s| s.is_master())
            .filter_map(|s| s.epoch)
            .max()
            .unwrap();
        observe_for(tm.t / 2);
    }
    for n in THREE {
        assert!(
            c.node_mut(n).is_running(),
            "{n} died; log:\n{}",
            c.node(n).log_tail(30)
        );
    }
    c.assert_safe();
}

/// The secret file must be private, a node with another secret refuses the cluster, the
/// environment variable works and is not passed on to hooks, and a nudge needs the secret.
#[test]
fn secret_handling() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let private = secret_file(&c, "private", SECRET, 0o600);
    c.init(&["--secret-file", private.to_str().unwrap()]);
    let public = secret_file(&c, "public", SECRET, 0o644);
    c.start(signed("node-a", &public));
    assert_eq!(expect_exit(&mut c, "node-a", refusal(&tm)), 2);
    assert!(
        c.node("node-a").log().contains("chmod 600"),
        "{}",
        c.node("node-a").log()
    );

    let env_dump = c.root().join("hook-env");
    let hook = format!("env > {}", env_dump.display());
    c.start(
        NodeSpec::new("node-b")
            .env("TENURE_SECRET", SECRET)
            .args(&["--on-change", &hook]),
    );
    c.wait_answer("node-b", "MASTER", settle_timeout(&tm));
    assert!(
        tenure_tests::wait_until(tm.t, || env_dump.exists()),
        "the hook did not run"
    );
    observe_for(tm.p);
    let env = std::fs::read_to_string(&env_dump).unwrap();
    assert!(env.contains("TENURE_STATE"), "{env}");
    assert!(
        !env.contains(SECRET) && !env.contains("TENURE_SECRET="),
        "the hook saw the secret"
    );

    // A node with another secret cannot use this cluster (cluster.json is signed).
    let other = secret_file(&c, "other", OTHER, 0o600);
    c.start(signed("node-c", &other));
    assert_eq!(expect_exit(&mut c, "node-c", refusal(&tm)), 1);
    assert!(
        c.node("node-c")
            .log()
            .contains("not signed with this node's cluster secret"),
        "{}",
        c.node("node-c").log()
    );

    // Nudges: unsigned or wrongly signed ones are refused; the cluster's own are accepted.
    let url = format!("{}/v1/server/ha/nudge", c.node("node-b").base_url());
    let agent = ureq::Agent::new_with_defaults();
    let post = |token: Option<String>| {
        let mut r = agent.post(&url);
        if let Some(t) = token {
            r = r.header(NUDGE_AUTH_HEADER, &t);
        }
        match r.send_empty() {
            Ok(resp) => resp.status().as_u16(),
            Err(ureq::Error::StatusCode(code)) => code,
            Err(e) => panic!("{e}"),
        }
    };
    let keys = Keyring::new(SECRET.as_bytes(), None).unwrap();
    let wrong = Keyring::new(OTHER.as_bytes(), None).unwrap();
    assert_eq!(post(None), 403);
    assert_eq!(
        post(Some(nudge_token(&wrong, wall_millis()))),
        403,
        "wrong secret"
    );
    assert_eq!(
        post(Some(nudge_token(&keys, wall_millis() - 3_600_000))),
        403,
        "an hour old"
    );
    assert_eq!(post(Some(nudge_token(&keys, wall_millis()))), 202);
    c.assert_safe();
}

fn refusal(t: &tenure_tests::Timing) -> Duration {
    tenure_tests::expect::refusal_timeout(t)
}

/// Rotation without downtime: every node accepts both secrets, then signs with the new one,
/// then drops the old one. A master exists throughout (graceful restarts hand over), and
/// cluster.json is re-signed so that nodes with only the new secret can start.
#[test]
fn secret_rotation_keeps_a_master() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let old = secret_file(&c, "old", SECRET, 0o600);
    let new = secret_file(&c, "new", OTHER, 0o600);
    let pair = ["node-a", "node-b"];
    c.init(&["--secret-file", old.to_str().unwrap()]);
    for n in pair {
        c.start(signed(n, &old));
    }
    c.wait_stable_master(&pair, settle_timeout(&tm));
    let begin = Instant::now();
    let phases: [Vec<&Path>; 3] = [vec![&old, &new], vec![&new, &old], vec![&new]];
    for files in &phases {
        for n in pair {
            let mut args = vec!["--secret-file".to_string(), files[0].display().to_string()];
            if let Some(acc) = files.get(1) {
                args.push("--accept-secret-file".into());
                args.push(acc.display().to_string());
            }
            c.node_mut(n).sigterm();
            assert_eq!(c.node_mut(n).wait_exit(tm.t * 2), Some(0));
            c.node_mut(n).restart_with(|mut s| {
                s.args = args.clone();
                s
            });
            c.wait_stable_master(&pair, settle_timeout(&tm));
        }
    }
    let h = c.history();
    // No stretch without a master longer than a handover plus a start (well under T).
    let mut last_master = begin;
    for s in h.since(begin) {
        if s.is_master() {
            assert!(
                s.sent.duration_since(last_master) < tm.t,
                "no master for {:?} during the rotation; timeline:\n{}",
                s.sent.duration_since(last_master),
                h.timeline()
            );
            last_master = s.received;
        }
    }
    for n in pair {
        assert!(
            !c.node(n).log().contains("ALERT"),
            "{n} raised an alert during a correct rotation:\n{}",
            c.node(n).log_tail(30)
        );
    }
    // The old secret is now refused.
    c.start(signed("node-c", &old));
    assert_eq!(expect_exit(&mut c, "node-c", refusal(&tm)), 1);
    c.assert_safe();
}
