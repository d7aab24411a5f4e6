//! HTTPS: `--tls-cert/--tls-key` serve the API over rustls; `tenure state` verifies the
//! certificate (refuses a self-signed one unless given `--tls-ca` or `--insecure`), and the
//! releasing master's nudge reaches a standby over https (peers trust the shared certificate).
//! The observer of the harness speaks plain HTTP, so these nodes are run directly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tenure_tests::cluster::free_port;
use tenure_tests::{serial, tenure_bin, wait_for, wait_until};

struct Nodes(Vec<Child>);
impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tenure(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(tenure_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn cert(dir: &Path) -> (PathBuf, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, ck.cert.pem()).unwrap();
    std::fs::write(&k, ck.key_pair.serialize_pem()).unwrap();
    (c, k)
}

#[test]
fn https_api_and_nudges_between_nodes() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = cert(dir.path());
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    // Whatever the umask: tenure refuses a store others may write to.
    std::fs::set_permissions(
        &store,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
    )
    .unwrap();
    tenure_tests::init_store(store.to_str().unwrap(), "20s", &[], &[]);
    // A long poll period (p = 4 s, T = 20 s): a takeover well within p after a release can only
    // come from the nudge.
    let mut nodes = Nodes(Vec::new());
    let mut urls = Vec::new();
    for name in ["node-a", "node-b"] {
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new(tenure_bin())
            .args(["run", "--node-name", name, "--store"])
            .arg(&store)
            .args(["--bind", &format!("127.0.0.1:{port}"), "--node-uri", &url])
            .args(["--heartbeat-timeout", "20s", "--poll-period", "4s"])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env("TENURE_LOG", "info,tenure_http=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        nodes.0.push(child);
        urls.push(url);
        if name == "node-a" {
            // node-a first, so it is the master.
            let ca = cert.to_str().unwrap();
            wait_for(Duration::from_secs(10), "node-a MASTER over https", || {
                let (_, out, _) = tenure(&["state", "--url", &urls[0], "--tls-ca", ca]);
                (out == "MASTER").then_some(())
            });
        }
    }
    let ca = cert.to_str().unwrap();
    wait_for(Duration::from_secs(10), "node-b STANDBY over https", || {
        let (_, out, _) = tenure(&["state", "--url", &urls[1], "--tls-ca", ca]);
        (out == "STANDBY").then_some(())
    });

    // Verification is on by default: a self-signed certificate is refused...
    let (code, _, err) = tenure(&["state", "--url", &urls[0], "--timeout", "2s"]);
    assert_eq!(code, 1, "an unknown certificate must be refused");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // ...accepted with -k (like curl) or when trusted with --tls-ca.
    let (code, out, err) = tenure(&["state", "-k", "--url", &urls[0]]);
    assert_eq!((code, out.as_str()), (0, "MASTER"), "{err}");
    let (code, out, err) = tenure(&["states", "--tls-ca", ca, "--url", &urls[1]]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"masterId\""), "{out}");
    // Plain HTTP to an HTTPS port gets no answer.
    let (code, _, _) = tenure(&["state", "--url", &urls[0].replace("https", "http")]);
    assert_eq!(code, 1);

    // node-b must have seen node-a's lease unreleased before a release lets it in at once.
    wait_for(
        Duration::from_secs(12),
        "node-b to see node-a's lease",
        || {
            let (_, out, _) = tenure(&["states", "--tls-ca", ca, "--url", &urls[1]]);
            out.contains("\"masterId\": \"node-a\"").then_some(())
        },
    );
    // ...and node-a must know node-b's URI (from its heartbeat record) to nudge it.
    wait_for(Duration::from_secs(12), "node-a to list node-b", || {
        let (_, out, _) = tenure(&["states", "--tls-ca", ca, "--url", &urls[0]]);
        out.contains(&format!("\"nodeUri\": \"{}\"", urls[1]))
            .then_some(())
    });
    // SIGTERM node-a: it releases and nudges node-b over https.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(nodes.0[0].id() as i32, libc::SIGTERM) };
    let term_at = Instant::now();
    let took = wait_for(Duration::from_secs(8), "node-b MASTER", || {
        let (_, out, _) = tenure(&["state", "--tls-ca", ca, "--url", &urls[1]]);
        (out == "MASTER").then(|| term_at.elapsed())
    });
    assert!(
        wait_until(Duration::from_secs(2), || nodes.0[0]
            .try_wait()
            .unwrap()
            .is_some()),
        "node-a did not exit"
    );
    let log_a = std::fs::read_to_string(dir.path().join("node-a.log")).unwrap();
    assert!(
        log_a.contains("nudged") && !log_a.contains("nudge failed"),
        "node-a's nudge over https did not arrive:\n{log_a}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "node-b took {took:?} to take over a released lease: the nudge did not work (p = 4 s)"
    );
}
