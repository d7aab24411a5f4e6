//! Expected members (issue 17): `tenure run --expect-nodes a,b,c` or `--cluster-file` (the
//! cluster JSON of OpenSpecimen). The expected nodes that are absent (no heartbeat record) or
//! silent (a record unchanged for T) are listed as `missing` in `/ha/states`, and `tenure
//! check` warns naming them; a node not in the list refuses to start; a cluster file holding a
//! secret must be private and its secret is the cluster secret. T = 2 s, p = 200 ms.
//!
//! Timing-sensitive: run with `--test-threads=1` (each test also holds `serial()`).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tenure_tests::expect::{expect_exit, refusal_timeout, settle_timeout};
use tenure_tests::{Cluster, NodeSpec, run_tenure, serial, wait_until};

const THREE: [&str; 3] = ["node-a", "node-b", "node-c"];
const LIST: &str = "node-a,node-b,node-c";
const SECRET: &str = "cluster-secret-for-the-tests-0123456789";

fn expecting(name: &str) -> NodeSpec {
    NodeSpec::new(name).args(&["--expect-nodes", LIST])
}

/// A string list of `key` in a `/ha/states` answer.
fn names(v: &Value, key: &str) -> Option<Vec<String>> {
    v.get(key)?
        .as_array()?
        .iter()
        .map(|n| n.as_str().map(String::from))
        .collect()
}

/// Waits until `reporter`'s `/ha/states` lists exactly `want` as missing (and the three as
/// expected); returns the answer, or panics with the last one.
fn wait_missing(c: &Cluster, reporter: &str, want: &[&str], timeout: Duration) -> Value {
    let mut last = None;
    let ok = wait_until(timeout, || {
        last = c.node(reporter).states();
        last.as_ref().is_some_and(|v| {
            names(v, "missing").is_some_and(|m| m == want)
                && names(v, "expected").is_some_and(|e| e == THREE)
        })
    });
    assert!(
        ok,
        "{reporter}'s /ha/states does not list {want:?} as missing after {timeout:?}: {last:?}"
    );
    last.expect("an answer")
}

/// `tenure check --url <node>` → (exit code, its line).
fn check(c: &Cluster, node: &str) -> (i32, String) {
    let (code, out, err) = run_tenure(&["check", "--url", &c.node(node).base_url()], None);
    assert!(err.is_empty(), "tenure check wrote to stderr: {err}");
    (code, out)
}

/// Waits until `tenure check` against `node` exits `code` with a line starting with
/// `TENURE <word> - ` and containing `needle`; returns the line.
fn wait_check(
    c: &Cluster,
    node: &str,
    code: i32,
    word: &str,
    needle: &str,
    timeout: Duration,
) -> String {
    let mut last = (0, String::new());
    let ok = wait_until(timeout, || {
        last = check(c, node);
        last.0 == code
            && last.1.starts_with(&format!("TENURE {word} - "))
            && last.1.contains(needle)
    });
    assert!(
        ok,
        "tenure check of {node} is not {word} (exit {code}) with {needle:?} after {timeout:?}: {last:?}"
    );
    last.1
}

fn perf(line: &str, label: &str) -> Option<String> {
    let (_, perf) = line.split_once(" | ")?;
    perf.split(' ')
        .find_map(|i| i.strip_prefix(&format!("{label}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
}

/// Three expected, two running: the third is missing and check warns naming it; once it runs,
/// OK; a standby killed with SIGKILL is missing again once its record has stood still for T
/// (not before), and check warns naming it.
#[test]
fn missing_members_are_listed_and_warned_about() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    c.start(expecting("node-a"));
    c.start(expecting("node-b"));
    let (master, _) = c.wait_stable_master(&["node-a", "node-b"], settle_timeout(&tm));

    // Both views list node-c, and only node-c (the other two heartbeat).
    for n in ["node-a", "node-b"] {
        let v = wait_missing(&c, n, &["node-c"], 2 * tm.t);
        assert!(v["nodes"].get("node-c").is_none(), "{v}");
    }
    // Brooklyn's shape has no such field (its Java client refuses unknown fields).
    let (status, body) = c
        .node("node-a")
        .get(tenure_tests::BROOKLYN_STATES_PATH)
        .expect("an answer");
    assert_eq!(status, 200);
    let brooklyn: Value = serde_json::from_str(&body).unwrap();
    assert!(
        brooklyn.get("missing").is_none() && brooklyn.get("expected").is_none(),
        "{brooklyn}"
    );

    // tenure check learns the list from the node: WARNING (exit 1) naming node-c.
    let line = wait_check(
        &c,
        &master,
        1,
        "WARNING",
        "missing expected node: node-c",
        2 * tm.t,
    );
    assert_eq!(perf(&line, "expected").as_deref(), Some("3"), "{line}");
    assert_eq!(perf(&line, "missing").as_deref(), Some("1"), "{line}");
    assert!(line.contains(&format!("master {master}")), "{line}");

    // The third starts: nothing is missing, check says OK.
    c.start(expecting("node-c"));
    for n in THREE {
        wait_missing(&c, n, &[], settle_timeout(&tm));
    }
    let line = wait_check(&c, &master, 0, "OK", &format!("master {master}"), 2 * tm.t);
    assert_eq!(perf(&line, "missing").as_deref(), Some("0"), "{line}");
    assert!(!line.contains("missing expected"), "{line}");

    // kill -9 a standby: it is missing once its record stood still for T, not at once.
    let victim = THREE.into_iter().find(|n| *n != master).expect("a standby");
    let killed_at = c.node_mut(victim).kill9();
    let bound = tm.t + tm.t / 4 + 3 * tm.p + tm.margin + Duration::from_secs(1);
    wait_missing(&c, &master, &[victim], bound);
    let seen = Instant::now() - killed_at;
    assert!(
        seen >= tm.t / 2,
        "{victim} was listed missing {seen:?} after SIGKILL, before its record could have stood still for T={:?}",
        tm.t
    );
    let line = wait_check(
        &c,
        &master,
        1,
        "WARNING",
        &format!("missing expected node: {victim}"),
        2 * tm.t,
    );
    // Named once, as missing, not again as a stale node.
    assert!(!line.contains("stale node"), "{line}");
    c.assert_safe();
}

/// A node whose name is not in the list exits 2 naming the list and where it came from; so do
/// both sources at once and a bad name in the list.
#[test]
fn a_node_outside_the_list_is_refused() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    c.start(expecting("node-d"));
    assert_eq!(expect_exit(&mut c, "node-d", refusal_timeout(&tm)), 2);
    let log = c.node("node-d").last_start_log();
    assert!(
        log.contains("\"node-d\" is not one of the cluster's expected members node-a,node-b,node-c (from --expect-nodes)"),
        "{log}"
    );

    // The environment variable is the same list.
    c.start(
        NodeSpec::new("node-e")
            .label("env")
            .env("TENURE_EXPECT_NODES", LIST),
    );
    assert_eq!(expect_exit(&mut c, "env", refusal_timeout(&tm)), 2);
    assert!(
        c.node("env").last_start_log().contains(
            "\"node-e\" is not one of the cluster's expected members node-a,node-b,node-c"
        ),
        "{}",
        c.node("env").last_start_log()
    );

    let file = cluster_file(&c, "cluster.json", None, 0o644);
    c.start(
        expecting("node-a")
            .label("both")
            .args(&["--cluster-file", file.to_str().unwrap()]),
    );
    assert_eq!(expect_exit(&mut c, "both", refusal_timeout(&tm)), 2);
    assert!(
        c.node("both").last_start_log().contains("one way only"),
        "{}",
        c.node("both").last_start_log()
    );

    c.start(
        NodeSpec::new("node-a")
            .label("bad")
            .args(&["--expect-nodes", "node-a,no/de"]),
    );
    assert_eq!(expect_exit(&mut c, "bad", refusal_timeout(&tm)), 2);
    assert!(
        c.node("bad").last_start_log().contains("--expect-nodes"),
        "{}",
        c.node("bad").last_start_log()
    );

    // A member of the same list starts.
    c.start(expecting("node-a"));
    c.wait_stable_master(&["node-a"], settle_timeout(&tm));
}

/// OpenSpecimen's cluster JSON, with the three nodes, the secret if any, and fields tenure
/// does not use; written with `mode`.
fn cluster_file(c: &Cluster, name: &str, secret: Option<&str>, mode: u32) -> PathBuf {
    let mut v = serde_json::json!({
        "nodes": THREE.iter().map(|n| serde_json::json!({
            "name": n,
            "url": format!("http://{n}.example:8080/openspecimen"),
        })).collect::<Vec<_>>(),
        "notifErrorRcpts": ["ops@example.com"],
        "notifTimeout": 30,
        "somethingOpenSpecimenAdds": {"x": 1},
    });
    if let Some(s) = secret {
        v["secret"] = s.into();
    }
    let path = c.root().join(name);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    set_mode(&path, mode);
    path
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn from_file(name: &str, file: &Path) -> NodeSpec {
    NodeSpec::new(name).args(&["--cluster-file", file.to_str().unwrap()])
}

/// A cluster file in OpenSpecimen's shape, holding the secret (mode 0600): its nodes are the
/// expected members and its secret signs the records (a file with another secret cannot join).
/// Mode 0644 is refused, and so is a second secret given with --secret-file.
#[test]
fn an_openspecimen_cluster_file_gives_members_and_secret() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    // The cluster is created signed with the same secret, as `tenure init --secret-file` does.
    let secret_file = c.root().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    set_mode(&secret_file, 0o600);
    c.init(&["--secret-file", secret_file.to_str().unwrap()]);

    let private = cluster_file(&c, "cluster.json", Some(SECRET), 0o600);
    c.start(from_file("node-a", &private));
    c.start(from_file("node-b", &private));
    c.wait_stable_master(&["node-a", "node-b"], settle_timeout(&tm));
    wait_missing(&c, "node-a", &["node-c"], 2 * tm.t);
    assert!(
        c.node("node-a")
            .log()
            .contains("records and nudges are signed"),
        "{}",
        c.node("node-a").log()
    );

    // The same file, readable by others: refused like a --secret-file, exit 2.
    let public = cluster_file(&c, "cluster-public.json", Some(SECRET), 0o644);
    c.start(from_file("node-c", &public));
    assert_eq!(expect_exit(&mut c, "node-c", refusal_timeout(&tm)), 2);
    let log = c.node("node-c").last_start_log();
    assert!(
        log.contains("mode 0644") && log.contains("chmod 600"),
        "{log}"
    );

    // Another secret in the file: cluster.json is not signed with it, so the node refuses.
    let other = cluster_file(
        &c,
        "cluster-other.json",
        Some("another-secret-nobody-in-the-cluster-has"),
        0o600,
    );
    c.start(from_file("node-c", &other).label("other"));
    assert_eq!(expect_exit(&mut c, "other", refusal_timeout(&tm)), 1);
    assert!(
        c.node("other")
            .last_start_log()
            .contains("not signed with this node's cluster secret"),
        "{}",
        c.node("other").last_start_log()
    );

    // A secret in the file and --secret-file: one way only.
    c.start(
        from_file("node-c", &private)
            .label("two-secrets")
            .args(&["--secret-file", secret_file.to_str().unwrap()]),
    );
    assert_eq!(expect_exit(&mut c, "two-secrets", refusal_timeout(&tm)), 2);
    assert!(
        c.node("two-secrets")
            .last_start_log()
            .contains("one way only"),
        "{}",
        c.node("two-secrets").last_start_log()
    );

    // The private file on the third node: nobody is missing.
    c.start(from_file("node-c", &private).label("third"));
    c.wait_stable_master(&["node-a", "node-b", "third"], settle_timeout(&tm));
    wait_missing(&c, "node-a", &[], settle_timeout(&tm));
    c.assert_safe();
}
