//! Operator changes through the API with real processes and the real `tenure` commands:
//! `tenure demote` hands the lease over, `tenure promote` is a planned switchover, priority and
//! clearing records work for an admin; readers and anonymous callers are refused.
//! T = 2 s, p = 200 ms; bounds in T, p and the margin.

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use std::time::Instant;
use tenure_tests::expect::settle_timeout;
use tenure_tests::{
    ADMIN_AND_READER, Cluster, NodeSpec, run_tenure, serial, users_file, wait_until,
};

const THREE: [&str; 3] = ["node-a", "node-b", "node-c"];

fn start_with_users(c: &mut Cluster, users: &str) {
    for n in THREE {
        c.start(NodeSpec::new(n).args(&["--users", users, "--public-state"]));
    }
}

#[test]
fn demote_hands_over_and_promote_switches_over() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let users = users_file(c.root(), ADMIN_AND_READER);
    start_with_users(&mut c, &users);
    let (old, old_epoch) = c.wait_stable_master(&THREE, settle_timeout(&tm));
    let url = c.node(&old).base_url();

    // Anonymous and reader callers cannot change anything; nothing moves.
    let (code, _, err) = run_tenure(&["demote", "--url", &url], None);
    assert_eq!(code, 1, "anonymous demote must fail: {err}");
    assert!(err.contains("user:password"), "{err}");
    let (code, _, err) = run_tenure(&["demote", "--url", &url, "-u", "viewer:look"], None);
    assert_eq!(code, 1);
    assert!(
        err.to_lowercase().contains("admin") || err.contains("403"),
        "{err}"
    );
    assert_eq!(c.node(&old).state(), "MASTER");

    // An admin demotes the master: it answers the previous state and another node takes over
    // within a poll period (the release nudges the standbys).
    let asked = Instant::now();
    let (code, out, err) = run_tenure(&["demote", "--url", &url, "-u", "admin:s3cret"], None);
    assert_eq!((code, out.as_str()), (0, "MASTER"), "demote: {err}");
    let onset = c.wait_takeover(asked, &[&old], tm.t + tm.margin);
    assert!(
        onset.earliest().saturating_duration_since(asked) <= tm.p + tm.margin,
        "handover after demote took {:?}",
        onset.earliest().saturating_duration_since(asked)
    );
    let second = onset.node.clone();
    assert!(onset.epoch.unwrap_or(0) > old_epoch);
    assert!(wait_until(tm.t, || c.node(&old).state() == "STANDBY"));

    // A planned switchover back to the old master: it asks the holder through the store and a
    // nudge; the holder releases naming it as successor.
    std::thread::sleep(tm.p * 3);
    let asked = Instant::now();
    let (code, out, err) = run_tenure(&["promote", "--url", &url, "-u", "admin:s3cret"], None);
    assert_eq!((code, out.as_str()), (0, "STANDBY"), "promote: {err}");
    let onset = c.wait_takeover(
        asked,
        &[
            &second,
            THREE.iter().find(|n| **n != old && **n != second).unwrap(),
        ],
        tm.t,
    );
    assert_eq!(onset.node, old, "the promoted node took over");
    assert!(
        onset.earliest().saturating_duration_since(asked) <= 2 * tm.p + tm.margin,
        "switchover took {:?}",
        onset.earliest().saturating_duration_since(asked)
    );
    c.assert_safe();
}

#[test]
fn priority_and_clearing_records_work_for_an_admin() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let users = users_file(c.root(), ADMIN_AND_READER);
    start_with_users(&mut c, &users);
    let (master, _) = c.wait_stable_master(&THREE, settle_timeout(&tm));
    let standby = THREE.iter().find(|n| **n != master).unwrap();
    // A third node stops gracefully: its record stays (TERMINATED) until cleared.
    let third = THREE
        .iter()
        .find(|n| **n != master && *n != standby)
        .unwrap();
    c.node(third).sigterm();
    assert_eq!(c.node_mut(third).wait_exit(2 * tm.t), Some(0));
    let node = c.node(standby);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!("Basic {}", BASE64_STANDARD.encode("admin:s3cret"));
    let post = |path: &str, body: &str, auth: Option<&str>| {
        let mut req = agent
            .post(&format!("{}{path}", node.base_url()))
            .header("Content-Type", "application/x-www-form-urlencoded");
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let mut resp = req.send(body).expect("request");
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    let get = |path: &str| {
        let mut resp = agent
            .get(&format!("{}{path}", node.base_url()))
            .header("Authorization", &auth)
            .call()
            .expect("request");
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    // Reads need a login when --users is set (state is public with --public-state).
    assert_eq!(node.get("/v1/server/ha/states").map(|r| r.0), Some(401));
    assert_eq!(node.get("/v1/server/ha/state").map(|r| r.0), Some(200));

    assert_eq!(get("/v1/server/ha/priority"), (200, "0".into()));
    assert_eq!(
        post("/v1/server/ha/priority", "priority=7", Some(&auth)),
        (200, "0".into())
    );
    assert_eq!(get("/v1/server/ha/priority"), (200, "7".into()));
    assert_eq!(post("/v1/server/ha/priority", "priority=8", None).0, 401);
    assert_eq!(
        post("/v1/server/ha/priority", "priority=many", Some(&auth)).0,
        400
    );
    // The new priority reaches the node's record and so the others' view.
    let other = c.node(&master);
    assert!(wait_until(2 * tm.t, || {
        let Some((200, body)) = (|| {
            let mut r = agent
                .get(&format!("{}/v1/server/ha/states", other.base_url()))
                .header("Authorization", &auth)
                .call()
                .ok()?;
            Some((r.status().as_u16(), r.body_mut().read_to_string().ok()?))
        })() else {
            return false;
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["nodes"][*standby]["priority"] == 7
    }));

    // Clearing a stopped node's record removes it; the master's record is never cleared.
    let (code, _) = post(
        "/v1/server/ha/states/clear/node",
        &format!("nodeId={master}"),
        Some(&auth),
    );
    assert_eq!(code, 409, "the master's record must not be cleared");
    let (code, body) = post(
        "/v1/server/ha/states/clear/node",
        &format!("nodeId={third}"),
        Some(&auth),
    );
    assert_eq!(code, 200, "{body}");
    assert!(wait_until(2 * tm.t, || !c
        .store()
        .join(format!("nodes/{third}.json"))
        .exists()));
    assert!(c.store().join(format!("nodes/{master}.json")).exists());
    c.assert_safe();
}

#[test]
fn an_unusable_store_is_refused_with_the_path() {
    let _serial = serial();
    let c = Cluster::standard();
    let file = c.root().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let (code, _, err) = run_tenure(
        &[
            "run",
            "--node-name",
            "a",
            "--store",
            file.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
        ],
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(file.to_str().unwrap()),
        "the message names the path: {err}"
    );
}
