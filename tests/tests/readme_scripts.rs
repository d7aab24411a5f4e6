//! The README's first ten minutes. Every `scripts/<name>` that README.md names exists and is
//! executable by its owner, on disk and (when this is a git checkout) in git's index, so a fresh
//! clone can run it as written; and `scripts/demo.sh`, the README's first command, runs to its
//! end with the binary under test (`TENURE_BIN`, so it builds nothing): exit 0, a first
//! `tenure states` that lists all three nodes, a new master after the kill -9, nothing on
//! standard error, under 10 s (plus the e2e margin), and no process or directory left behind.
//! Run with `--test-threads=1` (the demo test also holds `serial()`).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tenure_tests::spawn::die_with_spawner;
use tenure_tests::{Timing, serial, tenure_bin, workspace_root};

const THREE: [&str; 3] = ["node-a", "node-b", "node-c"];
/// The demo is killed (and the test fails) if it has not ended by then.
const DEMO_TIMEOUT: Duration = Duration::from_secs(60);
/// What the demo may take after the build (its header and the issue promise under 10 s).
const DEMO_BUDGET: Duration = Duration::from_secs(10);

/// Every `scripts/<name>` README.md mentions, e.g. `scripts/demo.sh`.
fn readme_scripts() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let mut out = BTreeSet::new();
    let mut rest = readme.as_str();
    while let Some(i) = rest.find("scripts/") {
        let after = &rest[i + "scripts/".len()..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
            .unwrap_or(after.len());
        // A name at the end of a sentence: "… scripts/chaos.sh." names chaos.sh.
        let name = after[..len].trim_end_matches('.');
        // `scripts/` alone or `scripts/dir/…` is no script.
        if !name.is_empty() && !after[len..].starts_with('/') {
            out.insert(format!("scripts/{name}"));
        }
        rest = &after[len..];
    }
    out
}

#[test]
fn readme_names_the_demo_and_the_test_suite() {
    let scripts = readme_scripts();
    for s in ["scripts/demo.sh", "scripts/test.sh"] {
        assert!(
            scripts.contains(s),
            "README.md no longer names {s}: {scripts:?}"
        );
    }
}

#[test]
fn every_script_the_readme_names_is_executable() {
    let root = workspace_root();
    let scripts = readme_scripts();
    let mut bad = Vec::new();
    for s in &scripts {
        match std::fs::metadata(root.join(s)) {
            Err(e) => bad.push(format!("{s}: {e}")),
            Ok(m) if !m.is_file() => bad.push(format!("{s}: not a file")),
            Ok(m) if m.permissions().mode() & 0o100 == 0 => bad.push(format!(
                "{s}: mode {:o}, not executable by its owner (chmod +x {s})",
                m.permissions().mode() & 0o7777
            )),
            Ok(_) => {}
        }
    }
    assert!(
        bad.is_empty(),
        "scripts named in README.md:\n{}",
        bad.join("\n")
    );

    // A fresh clone gets the modes of git's index, not of this work tree.
    if !root.join(".git").exists() {
        eprintln!(
            "no .git at {}: the index modes are not checked",
            root.display()
        );
        return;
    }
    let out = match Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["ls-files", "-s", "--", "scripts/"])
        .output()
    {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            eprintln!(
                "git ls-files failed ({}): the index modes are not checked: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        Err(e) => {
            eprintln!("no git ({e}): the index modes are not checked");
            return;
        }
    };
    // "100755 <sha> 0\tscripts/demo.sh"
    let modes: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (meta, path) = l.split_once('\t')?;
            Some((path.to_string(), meta.split(' ').next()?.to_string()))
        })
        .collect();
    for s in &scripts {
        match modes.iter().find(|(p, _)| p == s) {
            None => bad.push(format!("{s}: not in git's index (git add {s})")),
            Some((_, mode)) if mode != "100755" => bad.push(format!(
                "{s}: mode {mode} in git's index, so a clone cannot run it \
                 (git update-index --chmod=+x {s})"
            )),
            Some(_) => {}
        }
    }
    assert!(
        bad.is_empty(),
        "scripts named in README.md:\n{}",
        bad.join("\n")
    );
}

/// Every process whose command line mentions `needle` (the demo's temporary directory is in
/// each node's `--store`), as "pid cmdline".
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(format!("{pid} {cmd}"));
            }
        }
    }
    out
}

/// Whether any process is left in process group `pgid`.
fn group_alive(pgid: i32) -> bool {
    // SAFETY: kill with signal 0 sends nothing; it only checks that the group exists.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

/// Waits for `child` until `timeout`; None if it is still running then.
fn wait_timeout(child: &mut std::process::Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The JSON printed after the first "tenure states --url …:" line, up to the kill -9.
fn first_states(stdout: &str) -> serde_json::Value {
    let start = stdout
        .find("tenure states --url ")
        .expect("a `tenure states --url …:` line");
    let body = &stdout[start..];
    let body = &body[body.find('\n').expect("a line end") + 1..];
    let end = body
        .find("\nkill -9 ")
        .expect("a `kill -9 …` line after the states");
    serde_json::from_str(body[..end].trim())
        .unwrap_or_else(|e| panic!("the first states listing is not JSON ({e}):\n{body}"))
}

#[test]
fn demo_runs_to_its_end_with_the_binary_under_test() {
    let _guard = serial();
    let root = workspace_root();
    let bin = std::fs::canonicalize(tenure_bin()).expect("the tenure binary");
    let work = tempfile::Builder::new()
        .prefix("tenure-readme-demo.")
        .tempdir()
        .expect("temp dir");
    // The demo makes its own directory under TMPDIR: this one, so that we can check it is gone.
    let tmpdir = work.path().join("tmp");
    std::fs::create_dir(&tmpdir).expect("mkdir tmp");
    let stdout_path = work.path().join("stdout");
    let stderr_path = work.path().join("stderr");

    let mut cmd = Command::new(root.join("scripts/demo.sh"));
    cmd.current_dir(&root)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TENURE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("TENURE_BIN", &bin)
        .env("TMPDIR", &tmpdir)
        .env("NO_COLOR", "1")
        .env_remove("KEEP")
        // Its own process group: on a timeout the whole demo, nodes included, can be killed.
        .process_group(0);
    die_with_spawner(&mut cmd);

    let started = Instant::now();
    let mut child = cmd.spawn().expect("run scripts/demo.sh");
    let pgid = child.id() as i32;
    let status = wait_timeout(&mut child, DEMO_TIMEOUT);
    let took = started.elapsed();
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).to_string();
    let status = match status {
        Some(st) => st,
        None => {
            // SIGTERM first: the demo's trap kills its nodes and removes its directory.
            // SAFETY: signals to the process group we created above.
            unsafe { libc::kill(-pgid, libc::SIGTERM) };
            if wait_timeout(&mut child, Duration::from_secs(5)).is_none() {
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let _ = child.wait();
            }
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            panic!(
                "scripts/demo.sh did not end within {DEMO_TIMEOUT:?}; stdout:\n{}\nstderr:\n{}",
                read(&stdout_path),
                read(&stderr_path)
            );
        }
    };
    let stdout = read(&stdout_path);
    let stderr = read(&stderr_path);
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    eprintln!("scripts/demo.sh took {took:?} with {}", bin.display());

    assert!(
        status.success(),
        "scripts/demo.sh exited with {status}; {context}"
    );
    assert!(
        stderr.trim().is_empty(),
        "scripts/demo.sh wrote to standard error (e.g. bash's \"Killed\" notice); {context}"
    );

    // The first listing shows the whole cluster, not only the master.
    let states = first_states(&stdout);
    let nodes: BTreeSet<&str> = states["nodes"]
        .as_object()
        .unwrap_or_else(|| panic!("no \"nodes\" object in the first states listing; {context}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        nodes,
        BTreeSet::from(THREE),
        "the first states listing does not list all three nodes; {context}"
    );
    let old = states["masterId"].as_str().unwrap_or_default().to_string();
    assert!(
        THREE.contains(&old.as_str()),
        "no masterId among {THREE:?}; {context}"
    );

    // "new master: node-a, epoch 2 (was node-c, epoch 1); took 3.26 s with T = 3s, p = 300ms"
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("new master: "))
        .unwrap_or_else(|| panic!("no \"new master: …\" line; {context}"));
    let new = line.split(',').next().unwrap_or_default().trim();
    assert!(
        THREE.contains(&new) && new != old,
        "the new master {new:?} is not another of {THREE:?} than {old:?}; {context}"
    );
    assert!(
        line.contains(&format!("(was {old}, ")),
        "the new master line does not name the killed master {old}; {context}"
    );

    let budget = DEMO_BUDGET + Timing::standard().margin;
    assert!(
        took < budget,
        "scripts/demo.sh took {took:?} without a build, over {budget:?}; {context}"
    );

    // Nothing left: no node, nothing in the demo's process group, no directory.
    let needle = tmpdir.to_string_lossy().to_string();
    let left = processes_mentioning(&needle);
    assert!(
        left.is_empty(),
        "processes left after the demo:\n{}",
        left.join("\n")
    );
    assert!(
        !group_alive(pgid),
        "processes left in the demo's process group {pgid}"
    );
    let entries: Vec<_> = std::fs::read_dir(&tmpdir)
        .expect("read tmp")
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(entries.is_empty(), "the demo left {entries:?} behind");
}
