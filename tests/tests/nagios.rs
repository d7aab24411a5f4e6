//! The Nagios examples in `deploy/nagios/tenure.cfg`, run as Nagios would run them: each test
//! takes a `command_line` from that file, fills in `$HOSTADDRESS$`, `$USER1$` (Debian's
//! monitoring-plugins directory) and `$ARGn$`, points `/usr/local/bin/tenure` at the binary under
//! test, and runs it with `sh -c` against real nodes. Asserts the plugin contract: one line
//! `TENURE <STATUS> - text | perfdata` and the exit code 0/1/2/3 that goes with the status.
//! T = 2 s, p = 200 ms. Run with `--test-threads=1` (each test also holds `serial()`).

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};
use tenure_tests::cluster::free_port;
use tenure_tests::expect::settle_timeout;
use tenure_tests::{Cluster, NodeSpec, serial, tenure_bin, wait_until, workspace_root};

const THREE: [&str; 3] = ["node-a", "node-b", "node-c"];
const PLUGINS: &str = "/usr/lib/nagios/plugins";

/// `command_name` → `command_line` of every `define command` in deploy/nagios/tenure.cfg.
fn commands() -> HashMap<String, String> {
    let path = workspace_root().join("deploy/nagios/tenure.cfg");
    let text = std::fs::read_to_string(&path).expect("read deploy/nagios/tenure.cfg");
    let mut out = HashMap::new();
    for block in text.split("define command").skip(1) {
        let body = &block[..block.find('}').expect("a closing brace")];
        let field = |key: &str| {
            body.lines()
                .map(str::trim)
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("a command without {key}: {body}"))
        };
        out.insert(field("command_name"), field("command_line"));
    }
    out
}

/// Runs command `name` from tenure.cfg with `$ARG1$…` = `args` → (exit code, stdout).
fn run(name: &str, args: &[&str]) -> (i32, String) {
    let mut line = commands()
        .remove(name)
        .unwrap_or_else(|| panic!("deploy/nagios/tenure.cfg defines no command {name}"));
    line = line
        .replace("$USER1$", PLUGINS)
        .replace("$HOSTADDRESS$", "127.0.0.1")
        .replace("/usr/local/bin/tenure", &tenure_bin().display().to_string());
    for (i, a) in args.iter().enumerate() {
        line = line.replace(&format!("${}$", format_args!("ARG{}", i + 1)), a);
    }
    assert!(!line.contains('$'), "unfilled macro in {line}");
    let out = Command::new("sh")
        .arg("-c")
        .arg(&line)
        .output()
        .unwrap_or_else(|e| panic!("run {line}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    (out.status.code().unwrap_or(-1), stdout)
}

/// The status word of a `TENURE …` line, after checking the plugin format and that the exit
/// code goes with the status.
fn verdict(code: i32, out: &str) -> String {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "a plugin prints one line, got {out:?}");
    let line = lines[0];
    let rest = line
        .strip_prefix("TENURE ")
        .unwrap_or_else(|| panic!("not a TENURE line: {line}"));
    let (word, rest) = rest.split_once(" - ").expect("`STATUS - text`");
    let want = match word {
        "OK" => 0,
        "WARNING" => 1,
        "CRITICAL" => 2,
        "UNKNOWN" => 3,
        w => panic!("unknown status {w} in {line}"),
    };
    assert_eq!(
        code, want,
        "exit code {code} does not go with {word}: {line}"
    );
    if let Some((_, perf)) = rest.split_once(" | ") {
        for item in perf.split(' ') {
            let (label, value) = item
                .split_once('=')
                .unwrap_or_else(|| panic!("perfdata item {item:?} is not label=value: {line}"));
            assert!(!label.is_empty(), "{line}");
            let num: String = value
                .split(';')
                .next()
                .unwrap_or("")
                .trim_end_matches('s')
                .to_string();
            assert!(
                num.parse::<f64>().is_ok(),
                "perfdata value {value:?} in {line}"
            );
        }
    }
    word.to_string()
}

fn perf(out: &str, label: &str) -> Option<String> {
    let (_, perf) = out.trim().split_once(" | ")?;
    perf.split(' ')
        .find_map(|i| i.strip_prefix(&format!("{label}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
}

// T = 2 s: warn at half of T, critical at three quarters, before a standby takes over.
const WARN: &str = "1s";
const CRIT: &str = "1500ms";

#[test]
fn check_tenure_ok_then_critical_after_kill9_then_a_new_master() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    c.start_all(&THREE);
    let (master, epoch) = c.wait_stable_master(&THREE, settle_timeout(&tm));
    let ports: HashMap<&str, String> = THREE
        .iter()
        .map(|n| (*n, c.node(n).port.to_string()))
        .collect();
    let port = |n: &str| ports[n].clone();

    // Every node's view is OK once all heartbeats have been read.
    for n in THREE {
        let mut last = (0, String::new());
        let ok = wait_until(2 * tm.t, || {
            last = run("check_tenure", &[&port(n), WARN, CRIT]);
            verdict(last.0, &last.1) == "OK"
                && perf(&last.1, "live").as_deref() == Some("3")
                && perf(&last.1, "master_heartbeat_age").is_some()
        });
        assert!(ok, "check of {n} is not OK in a healthy cluster: {last:?}");
        let out = &last.1;
        assert!(
            out.contains(&format!("master {master} (epoch {epoch})")),
            "{out}"
        );
        assert_eq!(perf(out, "nodes").as_deref(), Some("3"), "{out}");
        assert_eq!(perf(out, "live").as_deref(), Some("3"), "{out}");
        assert_eq!(perf(out, "epoch"), Some(epoch.to_string()), "{out}");
        assert!(perf(out, "master_heartbeat_age").is_some(), "{out}");
        // The node's latest storage call, well under the 1 s default warning on a local disk.
        let latency =
            perf(out, "storage_latency").unwrap_or_else(|| panic!("no storage_latency: {out}"));
        let secs: f64 = latency.trim_end_matches('s').parse().expect("seconds");
        assert!(secs < 1.0, "storage latency {secs}s on a local disk: {out}");
    }
    // Stock check_http: OK on the master only.
    let (code, out) = run("check_tenure_master_http", &[&port(&master)]);
    assert_eq!(code, 0, "check_http on the master: {out}");
    for n in THREE.iter().filter(|n| **n != master) {
        let (code, out) = run("check_tenure_master_http", &[&port(n)]);
        assert_eq!(
            code, 2,
            "check_http on the standby {n} must be CRITICAL: {out}"
        );
    }

    let killed_at = c.node_mut(&master).kill9();
    let survivor = THREE.iter().copied().find(|n| *n != master).unwrap();
    // The killed node itself: unreachable is CRITICAL, for both plugins.
    let (code, out) = run("check_tenure", &[&port(&master), WARN, CRIT]);
    assert_eq!(verdict(code, &out), "CRITICAL", "{out}");
    let (code, out) = run("check_tenure_master_http", &[&port(&master)]);
    assert_eq!(code, 2, "check_http on a dead node: {out}");

    // A survivor's view: CRITICAL (the master's heartbeat age passes -c, or no master) before
    // any takeover, until a new master exists.
    let mut seen: Vec<(Duration, String)> = Vec::new();
    let recovered = wait_until(tm.max_takeover() + Duration::from_secs(5), || {
        let (code, out) = run("check_tenure", &[&port(survivor), WARN, CRIT]);
        let v = verdict(code, &out);
        seen.push((killed_at.elapsed(), out.trim().to_string()));
        v != "CRITICAL" && seen.iter().any(|(_, o)| o.starts_with("TENURE CRITICAL"))
    });
    // The first check and every change of status.
    let timeline = seen
        .iter()
        .enumerate()
        .filter(|(i, (_, o))| *i == 0 || o.split(" - ").next() != seen[i - 1].1.split(" - ").next())
        .map(|(_, (t, o))| format!("+{}ms {o}", t.as_millis()))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        recovered,
        "expected CRITICAL after the kill, then a new master; checks of {survivor}:\n{timeline}"
    );
    let first_critical = seen
        .iter()
        .find(|(_, o)| o.starts_with("TENURE CRITICAL"))
        .map(|(t, _)| *t)
        .unwrap();
    assert!(
        first_critical <= tm.t + tm.margin,
        "the check turned CRITICAL only {first_critical:?} after the kill, expected within T + margin = {:?}:\n{timeline}",
        tm.t + tm.margin
    );
    eprintln!("checks of {survivor} after kill -9 of {master}:\n{timeline}");
    let (_, last) = seen.last().unwrap();
    let onset = c.wait_takeover(killed_at, &[&master], Duration::from_secs(1));
    assert!(
        last.contains(&format!("master {}", onset.node)),
        "the check after recovery does not name the new master {}:\n{timeline}",
        onset.node
    );
    // The dead node turns up as stale (FAILED) once its heartbeat is older than T.
    let mut out = String::new();
    let stale = wait_until(2 * tm.t, || {
        let (code, o) = run("check_tenure", &[&port(survivor), WARN, CRIT]);
        out = o;
        verdict(code, &out) == "WARNING" && out.contains(&format!("stale node: {master}"))
    });
    assert!(stale, "no stale-node WARNING for {master}: {out}");
    let (code, out) = run("check_tenure_master_http", &[&port(&onset.node)]);
    assert_eq!(code, 0, "check_http on the new master: {out}");
    c.assert_safe();
}

#[test]
fn check_tenure_warns_without_redundancy_and_is_critical_when_unreachable() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    c.start_all(&["node-a"]);
    c.wait_stable_master(&["node-a"], settle_timeout(&tm));
    let port = c.node("node-a").port.to_string();
    let (code, out) = run("check_tenure", &[&port, WARN, CRIT]);
    assert_eq!(verdict(code, &out), "WARNING", "{out}");
    assert!(out.contains("no live standby (no redundancy)"), "{out}");
    assert_eq!(perf(&out, "live").as_deref(), Some("1"), "{out}");

    // Nothing listens on this port.
    let nobody = free_port().to_string();
    let started = Instant::now();
    let (code, out) = run("check_tenure", &[&nobody, WARN, CRIT]);
    assert_eq!(verdict(code, &out), "CRITICAL", "{out}");
    assert!(out.contains("cannot connect"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let (code, out) = run("check_tenure_master_http", &[&nobody]);
    assert_eq!(code, 2, "check_http on nothing: {out}");

    // Usage errors are UNKNOWN (3), not clap's 2.
    let out = Command::new(tenure_bin())
        .args(["check", "--url", "http://127.0.0.1:1", "--no-such-flag"])
        .output()
        .expect("run tenure check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(verdict(out.status.code().unwrap_or(-1), &stdout), "UNKNOWN");
}

#[test]
fn check_commands_with_credentials_work_on_nodes_that_require_a_login() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let mut child = Command::new(tenure_bin())
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run tenure hash-password");
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"secret\n").unwrap();
    }
    let hash = String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout)
        .trim()
        .to_string();
    let users = c.root().join("users.json");
    std::fs::write(
        &users,
        serde_json::json!({"users": {"monitor": {"password": hash, "role": "reader"}}}).to_string(),
    )
    .unwrap();
    let users = users.display().to_string();
    for n in THREE {
        c.start(NodeSpec::new(n).args(&["--users", &users]));
    }
    // The observer cannot log in: find the master through the plugin.
    let port = |n: &str| c.node(n).port.to_string();
    let mut master = None;
    let ok = wait_until(settle_timeout(&tm), || {
        master = THREE.iter().copied().find(|n| {
            let (code, _) = run(
                "check_tenure_master_http_auth",
                &[&port(n), "", "", "monitor:secret"],
            );
            code == 0
        });
        master.is_some()
    });
    assert!(ok, "no node passed check_http -s MASTER with credentials");
    let master = master.unwrap();

    let mut last = (0, String::new());
    let ok = wait_until(2 * tm.t, || {
        last = run(
            "check_tenure_auth",
            &[&port(master), WARN, CRIT, "monitor:secret"],
        );
        verdict(last.0, &last.1) == "OK"
    });
    assert!(ok, "check_tenure_auth is not OK: {last:?}");
    assert!(last.1.contains(&format!("master {master}")), "{last:?}");

    // Without credentials: the plugin cannot tell (UNKNOWN), check_http sees the 401.
    let (code, out) = run("check_tenure", &[&port(master), WARN, CRIT]);
    assert_eq!(verdict(code, &out), "UNKNOWN", "{out}");
    assert!(out.contains("user:password"), "{out}");
    let (code, out) = run("check_tenure_master_http", &[&port(master)]);
    assert_ne!(code, 0, "check_http without a login must not pass: {out}");
}
