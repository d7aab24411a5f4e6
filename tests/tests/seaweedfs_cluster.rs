//! tenure on a multi-process SeaweedFS deployment (`tenure_tests::seaweedfs`: a master, three
//! volume servers with replication `001`, a filer and the S3 gateway, each its own `weed`
//! process), losing volume servers under a running cluster:
//!
//! 1. kill -9 of a volume server that holds a copy of the lease: the other copy serves it; the
//!    cluster keeps (or elects again) exactly one master;
//! 2. kill -9 of a second one: with one volume server left, no write can be replicated, so every
//!    write fails: the master cannot renew, stops answering MASTER, and every node's log says
//!    which storage call failed;
//! 3. the two come back: one master again.
//!
//! The checker watches every answer throughout: never two masters, epochs never go back.
//! T = 2 s, p = 200 ms. Timing-sensitive: run with `--test-threads=1` (it holds `serial()`).

use std::time::Duration;
use tenure_testkit::moto;
use tenure_tests::expect::settle_timeout;
use tenure_tests::scenarios::THREE;
use tenure_tests::seaweedfs::Deployment;
use tenure_tests::{Cluster, Timing, serial, wait_for, wait_until};

/// The lease object under the cluster's prefix.
const LEASE: &str = "tenure/lease.json";

#[test]
fn losing_volume_servers_of_a_seaweedfs_deployment_never_makes_two_masters() {
    let _serial = serial();
    let mut sw = Deployment::start(3);
    let bucket = moto::unique_bucket("deployment");
    moto::create_bucket(&sw.s3, &bucket).unwrap_or_else(|e| panic!("{e}"));
    let tm = Timing::standard();
    let mut c = Cluster::with_store_url(tm, &format!("s3://{bucket}/tenure"), moto::env(&sw.s3));
    c.start_all(&THREE);
    let (first_master, first_epoch) = c.wait_stable_master(&THREE, settle_timeout(&tm));

    // 1. One copy of the lease's current content goes with its volume server.
    let holders = wait_for(
        Duration::from_secs(10),
        "the lease's volume servers",
        || {
            let v = sw.volume_servers_of(&bucket, LEASE);
            (!v.is_empty()).then_some(v)
        },
    );
    assert!(
        holders.len() >= 2,
        "with replication 001 the lease should be on two volume servers, found {holders:?}"
    );
    let victim = holders[0].clone();
    eprintln!(
        "killing weed {} ({victim}), which holds the lease with {:?}",
        sw.volume_name(&victim),
        &holders[1..]
    );
    sw.kill_volume_server(&victim);
    // Renewals go on (or the cluster elects again); either way one master within a bound.
    let (master, epoch) =
        c.wait_stable_master(&THREE, settle_timeout(&tm) + Duration::from_secs(20));
    assert!(epoch >= first_epoch);
    eprintln!(
        "after losing one volume server: {master} at epoch {epoch} (was {first_master} at {first_epoch})"
    );

    // 2. A second one: no write can be replicated any more.
    let logs_before: Vec<usize> = THREE.iter().map(|n| c.node(n).log().len()).collect();
    let second = sw
        .live_volume_servers()
        .into_iter()
        .next()
        .expect("two volume servers still run");
    eprintln!("killing weed {} ({second})", sw.volume_name(&second));
    sw.kill_volume_server(&second);
    let bound = tm.t + Duration::from_secs(10);
    let no_master = wait_until(bound, || {
        THREE
            .iter()
            .all(|n| c.latest(n).is_some_and(|s| !s.is_master()))
    });
    assert!(
        no_master,
        "a node still answers MASTER {bound:?} after the store lost its writes"
    );
    let new_log = |i: usize| c.node(THREE[i]).log()[logs_before[i]..].to_string();
    let i = THREE
        .iter()
        .position(|n| *n == master)
        .expect("master is a node");
    let master_log = new_log(i);
    assert!(
        master_log.contains("lease write (Renew) failed")
            && master_log.contains("MASTER -> STANDBY: self-fenced"),
        "the master's log does not say that its renewals failed and it stood down:\n{master_log}"
    );
    for (i, n) in THREE.iter().enumerate() {
        let log = new_log(i);
        // A standby writes its heartbeat every H only (issue 18): a failed lease read counts.
        assert!(
            log.contains("write failed")
                || log.contains("lease write")
                || log.contains("read failed"),
            "{n}'s log names no failed storage call:\n{log}"
        );
        // One log line per event, even when the server's answer (an XML error) has several.
        assert!(
            !log.lines().any(|l| l.starts_with('<')),
            "{n}'s log has a line that is not a log record (a server answer split over lines):\n{log}"
        );
    }

    // 3. The volume servers come back: one master again.
    sw.restart_volume_servers();
    let (m, e) = c.wait_stable_master(&THREE, Duration::from_secs(60));
    assert!(e >= epoch, "epoch went back from {epoch} to {e}");
    eprintln!("after the volume servers came back: {m} at epoch {e}");
    c.assert_safe();
}

/// Two S3 gateways over one filer, as a deployment with a gateway per site or per node would
/// run: nodes reaching the store through different gateways race on the same lease. Each round
/// 4 writers (2 through each gateway, each with its own client, released together) create one
/// key if absent, then replace it on the one version they all read: exactly one must win.
/// (Few writers: SeaweedFS makes each loser wait about a second for its 412.) `tenure doctor`
/// through the second gateway races through that gateway only; its 16 writers outwait a 5 s
/// deadline there (it then says "inconclusive"), so it gets 30 s and must pass every check.
#[test]
fn conditional_writes_through_two_gateways_over_one_filer_stay_atomic() {
    use std::sync::{Arc, Barrier};
    use tenure_persistence::{ObjOptions, ObjStore};
    use tenure_store::{ReadResult, Store, StoreError};

    let _serial = serial();
    let mut sw = Deployment::start(2);
    let second = sw.add_s3_gateway();
    let bucket = moto::unique_bucket("gateways");
    moto::create_bucket(&sw.s3, &bucket).unwrap_or_else(|e| panic!("{e}"));
    let url = format!("s3://{bucket}/race");
    let open = |endpoint: &str| -> Arc<dyn Store> {
        Arc::new(
            ObjStore::open(
                &url,
                ObjOptions {
                    timeout: Duration::from_secs(10),
                    use_env: false,
                    config: moto::store_config(endpoint),
                },
            )
            .unwrap_or_else(|e| panic!("open {url}: {e}")),
        )
    };
    const WRITERS: usize = 4;
    const ROUNDS: usize = 5;
    let stores: Vec<Arc<dyn Store>> = (0..WRITERS)
        .map(|i| open(if i % 2 == 0 { &sw.s3 } else { &second }))
        .collect();
    // Runs one write per writer, released together; the writers that won.
    let race = |write: &(dyn Fn(usize, &dyn Store) -> Result<(), StoreError> + Sync)| {
        let barrier = Barrier::new(WRITERS);
        std::thread::scope(|s| {
            let handles: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(i, st)| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        write(i, st.as_ref())
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            for r in &results {
                assert!(
                    matches!(r, Ok(()) | Err(StoreError::Conflict(_))),
                    "a write neither won nor lost the race: {r:?}"
                );
            }
            results.iter().filter(|r| r.is_ok()).count()
        })
    };
    for round in 0..ROUNDS {
        let key = format!("k{round}");
        let created = race(&|i, st| st.create(&key, format!("create {i}").as_bytes()).map(drop));
        assert_eq!(created, 1, "round {round}: {created} writers created {key}");
        let version = match stores[0].read(&key).expect("read the created key") {
            ReadResult::Present(r) => r.version,
            other => panic!("round {round}: {key} reads as {other:?}"),
        };
        let replaced = race(&|i, st| {
            st.replace(&key, format!("replace {i}").as_bytes(), &version)
                .map(drop)
        });
        assert_eq!(
            replaced, 1,
            "round {round}: {replaced} writers replaced {key}"
        );
    }

    let out = std::process::Command::new(tenure_tests::tenure_bin())
        .args(["doctor", "--store", &url, "--storage-timeout", "30s"])
        .envs(moto::env(&second))
        .output()
        .expect("run tenure doctor");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && report.contains("16-way create race")
            && !report.contains("inconclusive"),
        "tenure doctor through the second gateway ({}):\n{report}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("tenure doctor through the second gateway:\n{report}");
}
