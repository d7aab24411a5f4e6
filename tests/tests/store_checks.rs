//! `tenure doctor` and `tenure run`'s start-up checks of a store, with the real binary: a
//! directory and S3 on moto pass; a server that ignores conditional writes (a fake on
//! 127.0.0.1: no real server does that on demand), a missing bucket and missing credentials are
//! refused with exit 1 and a message that says why and what to do.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tenure_testkit::fake_s3::{Objects, object_server};
use tenure_testkit::moto;
use tenure_tests::{serial, tenure_bin};

/// Run `tenure args…` with exactly `env` as its AWS_* environment; kill it after `limit`.
fn tenure(args: &[&str], env: &[(String, String)], limit: Duration) -> (Output, Duration) {
    let mut cmd = Command::new(tenure_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1");
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("AWS_") || k.starts_with("TENURE_") {
            cmd.env_remove(&*k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let child = cmd.spawn().expect("spawn tenure");
    let pid = child.id() as i32;
    // A watchdog, so a hang fails the test instead of blocking it.
    let watchdog = std::thread::spawn(move || {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
            // SAFETY: signal 0 only checks that the process exists.
            if unsafe { libc::kill(pid, 0) } != 0 {
                return false;
            }
        }
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        true
    });
    let out = child.wait_with_output().expect("wait for tenure");
    let took = started.elapsed();
    let killed = watchdog.join().unwrap_or(false);
    assert!(
        !killed,
        "tenure {args:?} still ran after {limit:?}: stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out, took)
}

/// `tenure run` of one node `node-a` on `store` (a free port) with `extra` flags, as the
/// refusals at start are tested: it is expected to exit within 30 s.
fn run_one(store: &str, extra: &[&str], env: &[(String, String)]) -> (Output, Duration) {
    let mut args = vec![
        "run",
        "--node-name",
        "node-a",
        "--store",
        store,
        "--bind",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    tenure(&args, env, Duration::from_secs(30))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn moto_bucket(tag: &str) -> Option<(String, String)> {
    let endpoint = moto::require()?;
    let bucket = moto::unique_bucket(tag);
    moto::create_bucket(&endpoint, &bucket).unwrap();
    Some((endpoint, bucket))
}

#[test]
fn doctor_passes_on_moto_and_on_a_directory() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = private_dir(&dir.path().join("store"));
    let (out, _) = tenure(
        &["doctor", "--store", store.to_str().unwrap()],
        &[],
        Duration::from_secs(60),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for line in [
        "✓ mount:",
        "✓ lock exclusion",
        "✓ conditional writes enforced",
        "✓ 16-way create race",
        "✓ 16-way replace-on-one-version race",
        "✓ read-after-write",
        "✓ latency",
        "? cannot check: lock exclusion against other hosts",
        "all checks passed",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // It writes only under probe/ and removes it: a store no node has used stays empty.
    assert_eq!(walk(&store), Vec::<String>::new());

    let Some((endpoint, bucket)) = moto_bucket("doctor") else {
        return;
    };
    let url = format!("s3://{bucket}/ha");
    let (out, _) = tenure(
        &["doctor", "--store", &url],
        &moto::env(&endpoint),
        Duration::from_secs(60),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for line in [
        "✓ configuration: s3://",
        "✓ reachable with these credentials",
        "✓ conditional writes enforced",
        "✓ 16-way create race",
        "✓ 16-way replace-on-one-version race",
        "✓ read-after-write",
        "✓ latency",
        "all checks passed",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(!stdout.contains('✗'), "{stdout}");
}

/// `path` created with mode 0700, as an operator creates a store directory.
fn private_dir(path: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
    path.to_path_buf()
}

/// A store root that does not exist (a typo, an NFS mount not mounted yet) is refused by `run`
/// and by `doctor` with the fix, and neither creates it or any parent.
#[test]
fn a_missing_store_root_is_refused_and_never_created() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("nonexistent").join("deeper").join("store");
    let store_arg = store.to_str().unwrap();
    for store_arg in [store_arg.to_string(), format!("file://{store_arg}")] {
        let (out, _) = tenure(
            &[
                "run",
                "--node-name",
                "node-a",
                "--store",
                &store_arg,
                "--bind",
                "127.0.0.1:0",
                "--poll-period",
                "200ms",
                "--heartbeat-timeout",
                "2s",
            ],
            &[],
            Duration::from_secs(30),
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(store.to_str().unwrap())
                && stderr.contains("does not exist")
                && stderr.contains("mount")
                && stderr.contains("mkdir -m 0700"),
            "{stderr}"
        );
        assert!(!stderr.contains("MASTER"), "{stderr}");
        assert_eq!(
            walk(dir.path()),
            Vec::<String>::new(),
            "run created nothing"
        );

        let (out, _) = tenure(
            &["doctor", "--store", &store_arg],
            &[],
            Duration::from_secs(30),
        );
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        assert!(
            stdout.contains("✗ cannot use store") && stdout.contains("does not exist"),
            "{stdout}"
        );
        assert_eq!(
            walk(dir.path()),
            Vec::<String>::new(),
            "doctor created nothing"
        );
    }
}

fn walk(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        out.push(p.display().to_string());
        if p.is_dir() {
            out.extend(walk(&p));
        }
    }
    out.sort();
    out
}

#[test]
fn a_server_ignoring_conditional_writes_is_refused_by_doctor_and_run() {
    let _serial = serial();
    let objects = Objects::new(true, 0);
    let fake = object_server(objects.clone());
    let env = moto::env(&fake.endpoint);
    let (out, _) = tenure(
        &["doctor", "--store", "s3://careless/ha"],
        &env,
        Duration::from_secs(60),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for needle in [
        "✗ s3://careless/ha: a second create-if-absent",
        "If-None-Match ignored",
        "does not enforce conditional writes",
        "16 concurrent creates",
        "16 won (exactly one must)",
        "checks failed: fix them",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }

    let (out, took) = run_one("s3://careless/ha", &[], &env);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing the store")
            && stderr.contains("If-None-Match ignored")
            && stderr.contains("two nodes could both take the lease"),
        "{stderr}"
    );
    // A broken store is refused at once, not after retries.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // It wrote nothing of a cluster (the probe deleted its object).
    assert_eq!(objects.paths(), Vec::<String>::new());
}

/// A server that checks a condition and then writes, not in one step (SeaweedFS 4.16's race):
/// one request at a time sees every condition enforced, so the sequential probe passes; the
/// start-up race of `tenure run` catches it (several writers win at once) and names `tenure
/// doctor`, whose create and replace races both fail.
#[test]
fn a_server_whose_conditional_writes_race_is_refused_by_run_and_doctor() {
    let _serial = serial();
    let objects = Objects::racy(Duration::from_millis(50));
    let fake = object_server(objects.clone());
    let env = moto::env(&fake.endpoint);
    let (out, took) = run_one("s3://racy/ha", &[], &env);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in [
        "refusing the store",
        "4 concurrent",
        "(exactly one must)",
        "two nodes could both take the lease",
        "tenure doctor --store s3://racy/ha",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    // A verdict, not retried.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // Nothing of a cluster was written (the probes deleted their objects).
    assert_eq!(objects.paths(), Vec::<String>::new());

    let (out, _) = tenure(
        &["doctor", "--store", "s3://racy/ha"],
        &env,
        Duration::from_secs(60),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for needle in [
        // One request at a time, the conditions hold.
        "✓ conditional writes enforced",
        "✗ s3://racy/ha: 16 concurrent creates-if-absent",
        "✗ s3://racy/ha: 16 concurrent replaces-if-version",
        "2 checks failed: fix them",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
}

#[test]
fn run_names_a_missing_bucket_missing_credentials_and_an_unknown_scheme() {
    let _serial = serial();
    let run = |store: &str, env: &[(String, String)]| {
        let (out, _) = run_one(
            store,
            &["--poll-period", "200ms", "--heartbeat-timeout", "2s"],
            env,
        );
        (out.status.code(), text(&out.stderr))
    };
    let (code, err) = run("ftp://host/x", &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no ftp:// backend") && err.contains("s3://bucket/prefix"),
        "{err}"
    );

    // A custom endpoint and no keys: refused before any request.
    let env = vec![
        (
            "AWS_ENDPOINT_URL".to_string(),
            "http://127.0.0.1:9".to_string(),
        ),
        ("AWS_ALLOW_HTTP".to_string(), "true".to_string()),
    ];
    let (code, err) = run("s3://b/ha", &env);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("s3://b/ha")
            && err.contains("AWS_ACCESS_KEY_ID")
            && err.contains("AWS_SECRET_ACCESS_KEY"),
        "{err}"
    );

    // A plain-HTTP endpoint without AWS_ALLOW_HTTP: named at once, not "builder error" later.
    let env = vec![
        (
            "AWS_ENDPOINT_URL".to_string(),
            "http://127.0.0.1:9".to_string(),
        ),
        ("AWS_ACCESS_KEY_ID".to_string(), "k".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "s".to_string()),
    ];
    let (code, err) = run("s3://b/ha", &env);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("plain HTTP") && err.contains("set AWS_ALLOW_HTTP=true"),
        "{err}"
    );

    let Some(endpoint) = moto::require() else {
        return;
    };
    let missing = moto::unique_bucket("never-created");
    let (code, err) = run(&format!("s3://{missing}/ha"), &moto::env(&endpoint));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&missing) && err.contains("bucket does not exist: create it"),
        "{err}"
    );
}
