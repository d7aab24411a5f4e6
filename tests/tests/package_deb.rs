//! The Debian package (`scripts/package-deb.sh`), built from the binary under test and installed
//! for real with dpkg, into a scratch root (`dpkg --root=DIR --force-script-chrootless`: the
//! maintainer scripts run on this host with `DPKG_ROOT=DIR`, no chroot tooling needed).
//!
//! It checks the control data (fields, `Depends` against the glibc symbols the binary needs,
//! the conffile, the maintainer scripts), the exact file list with owners and modes, then:
//! the install (the binary runs and is the one under test, `dpkg --verify` is clean, the unit is
//! the repository's with `ExecStart=/usr/bin/tenure` and passes `systemd-analyze --root=DIR
//! verify`, the postinst made the `tenure` system user in DIR's own user database and
//! /var/lib/tenure owned by it, the unit is not enabled), a reinstall and an upgrade with a
//! changed conffile under `--force-confold` (a modified /etc/tenure/tenure.env is kept, the new
//! one lands beside it as `.dpkg-dist`), remove and purge (the conffile goes only with the purge,
//! a non-empty /var/lib/tenure and the user stay), and that none of it touched the host.
//!
//! What it cannot check: systemd is not PID 1 here, so the scripts' `systemctl` branches
//! (daemon-reload, try-restart on upgrade, stop on remove) never run, and under `DPKG_ROOT`
//! they are skipped anyway; the postinst's adduser branch (an installation into `/`) is not
//! taken, only its `DPKG_ROOT` branch (systemd-sysusers, else useradd --prefix). Dependencies
//! are not resolved (`--force-depends`: the scratch root has no libc6 package).
//! Needs root (dpkg), dpkg, binutils and systemd-analyze (scripts/install-test-deps.sh).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;
use tenure_tests::{serial, tenure_bin, workspace_root};

const ENV: &str = "etc/tenure/tenure.env";
const UNIT: &str = "usr/lib/systemd/system/tenure.service";

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd`, panicking with its output unless it exits 0.
fn run(cmd: &mut Command) -> Output {
    let desc = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{desc}: {e}"));
    assert!(
        out.status.success(),
        "{desc}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        lossy(&out.stdout),
        lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    lossy(&run(cmd).stdout)
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Without CI, a missing prerequisite skips the test; in CI it is a failure.
fn skip(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{why} (CI runs as root; scripts/install-test-deps.sh installs the tools)"
    );
    eprintln!("SKIPPED: {why}");
}

/// PATH with the sbin directories, where useradd and dpkg's helpers live.
fn sbin_path() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{path}:/usr/local/sbin:/usr/sbin:/sbin")
}

/// `dpkg` acting on the scratch root only: its database, its log, maintainer scripts run on
/// this host with DPKG_ROOT=root.
fn dpkg(root: &Path) -> Command {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", root.display()))
        .arg(format!("--log={}", root.join("var/log/dpkg.log").display()))
        .args(["--force-script-chrootless", "--force-depends"])
        .env("PATH", sbin_path())
        .env_remove("DPKG_ROOT");
    c
}

/// A root with an empty dpkg database and a user database holding root only, as a
/// debootstrapped system has before any package adds a user.
fn scratch_root(root: &Path) {
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/log",
        "etc",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(f), "").unwrap();
    }
    for (f, line, mode) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n", 0o644),
        ("etc/group", "root:x:0:\n", 0o644),
        ("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o640),
        ("etc/gshadow", "root:*::\n", 0o640),
    ] {
        std::fs::write(root.join(f), line).unwrap();
        std::fs::set_permissions(root.join(f), std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// The colon-separated fields of `name`'s lines in a passwd or group file.
fn db_entries(file: &Path, name: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
        .filter(|f| f[0] == name)
        .collect()
}

/// A control file's fields (continuation lines appended with their newline).
fn control_fields(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut last = String::new();
    for line in text.lines() {
        if line.starts_with(' ') {
            let v: &mut String = fields.get_mut(&last).expect("a continuation line first");
            v.push('\n');
            v.push_str(line);
        } else if let Some((k, v)) = line.split_once(':') {
            last = k.to_string();
            fields.insert(last.clone(), v.trim().to_string());
        }
    }
    fields
}

fn version_tuple(v: &str) -> Vec<u32> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// The systemd unit past its leading comment, with the Exec lines' `…/tenure` as `bin`.
fn unit_body(unit: &str, bin: &str) -> String {
    unit.lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| match l.split_once('=') {
            Some((k, v)) if k.starts_with("Exec") => {
                let (cmd, rest) = v.split_once(' ').unwrap_or((v, ""));
                if cmd.ends_with("/tenure") {
                    format!("{k}={bin} {rest}").trim_end().to_string()
                } else {
                    l.to_string()
                }
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every file under `dir`, relative to it, with whether its owner may execute it.
fn tree(dir: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, bool>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        let r = rel.join(e.file_name());
        if m.is_dir() {
            tree(&e.path(), &r, out);
        } else {
            out.insert(r, m.permissions().mode() & 0o100 != 0);
        }
    }
}

/// What the test must leave on the host as it found it.
#[derive(Debug, PartialEq)]
struct HostState {
    passwd: Vec<u8>,
    group: Vec<u8>,
    paths: Vec<(&'static str, bool)>,
    dpkg_log_tenure_lines: usize,
}

fn host_state() -> HostState {
    let read = |p: &str| std::fs::read(p).unwrap_or_default();
    HostState {
        passwd: read("/etc/passwd"),
        group: read("/etc/group"),
        paths: [
            "/usr/bin/tenure",
            "/etc/tenure",
            "/var/lib/tenure",
            "/usr/lib/systemd/system/tenure.service",
            "/var/lib/systemd/deb-systemd-helper-enabled/tenure.service.dsh-also",
        ]
        .into_iter()
        .map(|p| (p, Path::new(p).symlink_metadata().is_ok()))
        .collect(),
        dpkg_log_tenure_lines: lossy(&read("/var/log/dpkg.log"))
            .lines()
            .filter(|l| l.contains(" tenure"))
            .count(),
    }
}

#[test]
fn debian_package_builds_installs_upgrades_and_purges() {
    let _serial = serial();
    for tool in ["dpkg", "dpkg-deb", "readelf", "objdump"] {
        if !have(tool) {
            return skip(&format!("{tool} is not installed"));
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("not root: dpkg installs as root only");
    }
    let started = Instant::now();
    let src = workspace_root();
    let bin = tenure_bin();
    let tmp = tempfile::tempdir().unwrap();
    let host_before = host_state();

    // Build. The script's own staging directory goes under `stage` and must be gone after it.
    let stage = tmp.path().join("stage");
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&stage).unwrap();
    let help = stdout(Command::new(src.join("scripts/package-deb.sh")).arg("--help"));
    assert!(help.contains("--binary PATH"), "--help: {help}");
    let printed = stdout(
        Command::new(src.join("scripts/package-deb.sh"))
            .arg("--binary")
            .arg(&bin)
            .arg("--out")
            .arg(&out_dir)
            // Uncompressed: 2 s instead of 25 s with xz for this (debug) binary.
            .args(["--compression", "none"])
            .env("TMPDIR", &stage),
    );
    assert_eq!(
        std::fs::read_dir(&stage).unwrap().count(),
        0,
        "package-deb.sh left its staging directory behind"
    );
    let version_line = stdout(Command::new(&bin).arg("--version"));
    let version = version_line
        .trim()
        .strip_prefix("tenure ")
        .unwrap_or_else(|| panic!("tenure --version: {version_line}"))
        .replace('-', "~");
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_string();
    let deb = out_dir.join(format!("tenure_{version}_{arch}.deb"));
    assert_eq!(
        printed.trim_end().lines().last(),
        deb.to_str(),
        "package-deb.sh prints the .deb's path last"
    );
    assert!(deb.is_file(), "no {}", deb.display());

    // The control file.
    let control = control_fields(&stdout(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(&deb)
            .arg("control"),
    ));
    for (k, v) in [
        ("Package", "tenure"),
        ("Version", version.as_str()),
        ("Architecture", arch.as_str()),
        ("Section", "admin"),
        ("Priority", "optional"),
    ] {
        assert_eq!(
            control.get(k).map(String::as_str),
            Some(v),
            "{k}: {control:?}"
        );
    }
    for k in ["Maintainer", "Description", "Installed-Size"] {
        assert!(control.get(k).is_some_and(|v| !v.is_empty()), "no {k}");
    }
    // Depends: a libc6 at least as new as the newest glibc symbol version the binary needs.
    let depends = &control["Depends"];
    let libc = depends
        .split(',')
        .map(str::trim)
        .find_map(|d| d.strip_prefix("libc6 (>= ")?.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no libc6 (>= …) in Depends: {depends}"));
    let symbols = stdout(Command::new("objdump").arg("-T").arg(&bin));
    let needed = symbols
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .map(version_tuple)
        .max()
        .expect("the binary links glibc");
    assert!(
        version_tuple(libc) >= needed,
        "Depends: libc6 (>= {libc}), but the binary needs glibc {needed:?}"
    );
    let dynamic = stdout(Command::new("objdump").arg("-p").arg(&bin));
    if dynamic.contains("libgcc_s.so") {
        assert!(depends.contains("libgcc-s1"), "Depends: {depends}");
    }

    // The control archive: the conffile and the maintainer scripts.
    let ctrl = tmp.path().join("control");
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(&ctrl));
    assert_eq!(
        std::fs::read_to_string(ctrl.join("conffiles")).unwrap(),
        format!("/{ENV}\n")
    );
    for s in ["postinst", "prerm", "postrm"] {
        let mode = std::fs::metadata(ctrl.join(s))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "{s}: mode {mode:o}");
        run(Command::new("sh").arg("-n").arg(ctrl.join(s)));
    }

    // The data archive: exactly these files, owned by root, with these modes.
    let listing = stdout(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let mut files = BTreeMap::new();
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f.len() == 6, "unexpected entry: {line}");
        assert_eq!(f[1], "root/root", "{line}");
        let path = f[5].trim_start_matches("./");
        if path.is_empty() || path.ends_with('/') {
            assert_eq!(f[0], "drwxr-xr-x", "{line}");
        } else {
            files.insert(path.to_string(), f[0].to_string());
        }
    }
    let (exe, plain) = ("-rwxr-xr-x".to_string(), "-rw-r--r--".to_string());
    let mut want: BTreeMap<String, String> = [
        ("usr/bin/tenure", exe.clone()),
        (UNIT, plain.clone()),
        ("usr/lib/sysusers.d/tenure.conf", plain.clone()),
        (ENV, "-rw-------".to_string()),
        ("usr/share/doc/tenure/README.md", plain.clone()),
        ("usr/share/doc/tenure/operations.md", plain.clone()),
        ("usr/share/doc/tenure/copyright", plain.clone()),
        ("usr/share/doc/tenure/changelog.Debian.gz", plain.clone()),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_string(), m))
    .collect();
    let mut examples = BTreeMap::new();
    tree(&src.join("deploy"), Path::new(""), &mut examples);
    for (rel, x) in &examples {
        let mode = if *x { exe.clone() } else { plain.clone() };
        want.insert(
            format!("usr/share/doc/tenure/examples/{}", rel.display()),
            mode,
        );
    }
    assert_eq!(files, want, "the package's files and modes");

    // Install into the scratch root.
    let root = tmp.path().join("root");
    scratch_root(&root);
    run(dpkg(&root).arg("--install").arg(&deb));
    let status = stdout(dpkg(&root).args(["--status", "tenure"]));
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(
        status.contains(&format!("Version: {version}\n")),
        "{status}"
    );
    // Every installed file matches the package's md5sums.
    let verify = stdout(dpkg(&root).args(["--verify", "tenure"]));
    assert_eq!(verify, "", "dpkg --verify after the install");

    // The installed binary runs and is the one under test, stripped.
    let installed = root.join("usr/bin/tenure");
    assert_eq!(
        stdout(Command::new(&installed).arg("--version")),
        version_line
    );
    let sections = stdout(Command::new("readelf").args(["-S", "-W"]).arg(&installed));
    assert!(
        !sections.contains(".symtab") && !sections.contains(".debug_info"),
        "the installed binary is not stripped"
    );

    // The unit: the repository's, running /usr/bin/tenure.
    let unit = std::fs::read_to_string(root.join(UNIT)).unwrap();
    assert!(
        unit.lines().any(|l| l == "ExecStart=/usr/bin/tenure run"),
        "{unit}"
    );
    assert!(!unit.contains("/usr/local/bin"), "{unit}");
    let source_unit = std::fs::read_to_string(src.join("deploy/systemd/tenure.service")).unwrap();
    assert_eq!(
        unit_body(&unit, "/usr/bin/tenure"),
        unit_body(&source_unit, "/usr/bin/tenure"),
        "the packaged unit differs from deploy/systemd/tenure.service beyond its ExecStart path"
    );
    // Not enabled by the installation.
    assert!(
        !root
            .join("etc/systemd/system/multi-user.target.wants/tenure.service")
            .exists()
    );
    verify_unit(&root);

    // The conffile, as the example.
    let example = std::fs::read_to_string(src.join("deploy/systemd/tenure.env.example")).unwrap();
    let env = root.join(ENV);
    assert_eq!(std::fs::read_to_string(&env).unwrap(), example);
    let m = std::fs::metadata(&env).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o600));
    // The documentation and examples are the repository's files.
    for (pkg, repo) in [
        ("README.md", "README.md"),
        ("operations.md", "docs/operations.md"),
    ] {
        assert_eq!(
            std::fs::read(root.join("usr/share/doc/tenure").join(pkg)).unwrap(),
            std::fs::read(src.join(repo)).unwrap(),
            "{pkg}"
        );
    }
    for rel in examples.keys() {
        assert_eq!(
            std::fs::read(root.join("usr/share/doc/tenure/examples").join(rel)).unwrap(),
            std::fs::read(src.join("deploy").join(rel)).unwrap(),
            "examples/{}",
            rel.display()
        );
    }

    // The postinst made the system user in the root's user database, and its home.
    let (uid, gid) = check_user(&root);
    let home = std::fs::metadata(root.join("var/lib/tenure")).unwrap();
    assert!(home.is_dir());
    assert_eq!(
        (home.uid(), home.gid(), home.mode() & 0o7777),
        (uid, gid, 0o750),
        "/var/lib/tenure"
    );
    assert_eq!(
        host_state(),
        host_before,
        "the installation touched the host"
    );

    // A reinstall of the same version keeps a modified conffile.
    let modified = example.replace("TENURE_NODE_NAME=node-a", "TENURE_NODE_NAME=node-b")
        + "# set by the administrator\n";
    assert_ne!(modified, example);
    std::fs::write(&env, &modified).unwrap();
    run(dpkg(&root)
        .arg("--force-confold")
        .arg("--install")
        .arg(&deb));
    assert_eq!(std::fs::read_to_string(&env).unwrap(), modified);
    // dpkg knows it as a modified conffile (`c`, checksum `5` differs), and nothing else.
    let verify = lossy(
        &dpkg(&root)
            .args(["--verify", "tenure"])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(
        verify.trim(),
        format!("??5?????? c /{ENV}"),
        "dpkg --verify"
    );

    // An upgrade whose packaged tenure.env changed: the administrator's stays, the new one is
    // put beside it.
    let unpacked = tmp.path().join("unpacked");
    run(Command::new("dpkg-deb")
        .arg("--raw-extract")
        .arg(&deb)
        .arg(&unpacked));
    let new_example = format!("{example}#TENURE_NEW_SETTING=1\n");
    std::fs::write(unpacked.join(ENV), &new_example).unwrap();
    let control_path = unpacked.join("DEBIAN/control");
    let ctl = std::fs::read_to_string(&control_path).unwrap().replace(
        &format!("Version: {version}\n"),
        &format!("Version: {version}+test1\n"),
    );
    std::fs::write(&control_path, ctl).unwrap();
    let upgrade = tmp.path().join("upgrade.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Znone", "--build"])
        .arg(&unpacked)
        .arg(&upgrade)
        .stdout(Stdio::null()));
    run(dpkg(&root)
        .arg("--force-confold")
        .arg("--install")
        .arg(&upgrade));
    let status = stdout(dpkg(&root).args(["--status", "tenure"]));
    assert!(
        status.contains(&format!("Version: {version}+test1\n")),
        "{status}"
    );
    assert_eq!(std::fs::read_to_string(&env).unwrap(), modified);
    let dist = root.join(format!("{ENV}.dpkg-dist"));
    assert_eq!(std::fs::read_to_string(&dist).unwrap(), new_example);
    // The postinst is idempotent: still one user, the same ids.
    assert_eq!(check_user(&root), (uid, gid));

    // Remove: the conffile stays. Purge: it goes, and so do the nodes' state files; a
    // non-empty /var/lib/tenure (it may hold a store, whose lease.lock is no state file) and
    // the user stay (Debian practice for system users).
    std::fs::write(root.join("var/lib/tenure/keep"), "a store, say").unwrap();
    std::fs::write(root.join("var/lib/tenure/lease.lock"), "a store's lease").unwrap();
    let state = ["node-a.0123abcd.lock", "node-a.0123abcd.json"];
    for f in state {
        std::fs::write(root.join("var/lib/tenure").join(f), "").unwrap();
    }
    run(dpkg(&root).args(["--remove", "tenure"]));
    assert!(!installed.exists() && !root.join(UNIT).exists());
    assert_eq!(std::fs::read_to_string(&env).unwrap(), modified);
    let status = stdout(dpkg(&root).args(["--status", "tenure"]));
    assert!(
        status.contains("Status: deinstall ok config-files"),
        "{status}"
    );
    run(dpkg(&root).args(["--purge", "tenure"]));
    assert!(
        !root.join("etc/tenure").exists(),
        "/etc/tenure survived the purge"
    );
    assert!(root.join("var/lib/tenure/keep").exists());
    assert!(root.join("var/lib/tenure/lease.lock").exists());
    for f in state {
        assert!(
            !root.join("var/lib/tenure").join(f).exists(),
            "the state file {f} survived the purge"
        );
    }
    assert!(
        !root
            .join("var/lib/systemd/deb-systemd-helper-enabled/tenure.service.dsh-also")
            .exists()
    );
    assert_eq!(check_user(&root), (uid, gid));
    let status = dpkg(&root).args(["--status", "tenure"]).output().unwrap();
    assert!(
        !lossy(&status.stdout).contains("Status: install"),
        "{}",
        lossy(&status.stdout)
    );

    assert_eq!(host_state(), host_before, "the test touched the host");
    drop(tmp);
    eprintln!("package_deb: {:.1} s", started.elapsed().as_secs_f64());
}

/// `tenure` in the root's passwd and group, a system account with its home and no shell →
/// (uid, gid).
fn check_user(root: &Path) -> (u32, u32) {
    let users = db_entries(&root.join("etc/passwd"), "tenure");
    assert_eq!(
        users.len(),
        1,
        "tenure in {}/etc/passwd: {users:?}",
        root.display()
    );
    let u = &users[0];
    let (uid, gid): (u32, u32) = (u[2].parse().unwrap(), u[3].parse().unwrap());
    assert!(uid > 0 && uid < 1000, "not a system uid: {u:?}");
    assert_eq!(
        (u[5].as_str(), u[6].as_str()),
        ("/var/lib/tenure", "/usr/sbin/nologin")
    );
    let groups = db_entries(&root.join("etc/group"), "tenure");
    assert_eq!(
        groups.len(),
        1,
        "tenure in {}/etc/group: {groups:?}",
        root.display()
    );
    assert_eq!(groups[0][2].parse::<u32>().unwrap(), gid, "{groups:?}");
    (uid, gid)
}

/// `systemd-analyze --root=ROOT verify` of the installed unit: ExecStart= must name an
/// executable in the root. The root gets the host's targets (sysinit.target, … as the systemd
/// package installs them), which the unit's default dependencies name.
fn verify_unit(root: &Path) {
    if !have("systemd-analyze") {
        return skip("systemd-analyze is not installed");
    }
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|d| d.join("sysinit.target").exists())
        .expect("the host's systemd units (sysinit.target)");
    let mut copied = BTreeSet::new();
    for e in std::fs::read_dir(host_units).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        let dest = root.join("usr/lib/systemd/system").join(&name);
        if name.to_string_lossy().ends_with(".target") && !dest.exists() {
            std::fs::copy(e.path(), &dest).unwrap();
            copied.insert(dest);
        }
    }
    let out = Command::new("systemd-analyze")
        .arg(format!("--root={}", root.display()))
        .args(["verify", "tenure.service"])
        .output()
        .unwrap();
    let stderr = lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    // Unknown or misspelt keys are only warnings: refuse them too.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned: {stderr}"
    );
    for f in copied {
        std::fs::remove_file(f).unwrap();
    }
}
