//! `tenure master --nodes …`: client-side discovery prints the master's node URI from any
//! reachable node, skips dead ones, and exits 1 when no node names a live master.
//! T = 2 s, p = 200 ms.

use std::process::Command;
use std::time::Instant;
use tenure_tests::cluster::free_port;
use tenure_tests::expect::settle_timeout;
use tenure_tests::{Cluster, NodeSpec, serial, tenure_bin};

const THREE: [&str; 3] = ["node-a", "node-b", "node-c"];

fn master(nodes: &[String]) -> (i32, String, String) {
    let out = Command::new(tenure_bin())
        .args(["master", "--timeout", "500ms", "--nodes", &nodes.join(",")])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[test]
fn master_is_found_from_any_reachable_node() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    for n in THREE {
        c.start(NodeSpec::new(n));
    }
    let (m, _) = c.wait_stable_master(&THREE, settle_timeout(&tm));
    let dead = format!("http://127.0.0.1:{}", free_port());
    let standby = THREE.iter().find(|n| **n != m).unwrap();
    // A dead node first, then a standby: the standby names the master.
    let (code, out, err) = master(&[dead.clone(), c.node(standby).base_url()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, c.node(&m).base_url());
    // Asking the master itself works too.
    let (code, out, _) = master(&[c.node(&m).base_url()]);
    assert_eq!((code, out.as_str()), (0, c.node(&m).base_url().as_str()));

    // Nothing reachable: exit 1, within the per-node timeouts.
    let started = Instant::now();
    let (code, out, err) = master(&[dead.clone(), format!("http://127.0.0.1:{}", free_port())]);
    assert_eq!(code, 1, "stdout {out:?}, stderr {err}");
    assert!(out.is_empty());
    assert!(err.contains("no node named a live master"), "{err}");
    assert!(started.elapsed() < 2 * tm.t, "took {:?}", started.elapsed());

    // After a failover the list (old master first, now dead) leads to the new master.
    c.node(&m).sigterm();
    assert!(c.node_mut(&m).wait_exit(tm.t).is_some());
    let others: Vec<&str> = THREE.iter().copied().filter(|n| *n != m).collect();
    let (m2, _) = c.wait_stable_master(&others, tm.t + 4 * tm.p + tm.margin);
    let urls: Vec<String> = THREE.iter().map(|n| c.node(n).base_url()).collect();
    let (code, out, err) = master(&urls);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        c.node(&m2).base_url(),
        "the new master, past the dead one"
    );
}
