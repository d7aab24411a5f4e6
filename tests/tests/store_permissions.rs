//! A store directory that group or others may write to is refused by `tenure run` (naming the
//! directory, its mode and the fix) unless `--allow-shared-permissions` is given; `tenure
//! doctor` shows the check.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use tenure_tests::expect::{expect_exit, refusal_timeout, settle_timeout};
use tenure_tests::{Cluster, NodeSpec, serial, tenure_bin};

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_shared_store_is_refused_unless_allowed() {
    let _serial = serial();
    let mut c = Cluster::standard();
    let tm = c.timing;
    let store = c.store().to_path_buf();
    // Created as an operator would, then opened up to the group by mistake.
    c.init(&[]);
    chmod(&store, 0o770);
    c.start(NodeSpec::new("node-a"));
    assert_eq!(expect_exit(&mut c, "node-a", refusal_timeout(&tm)), 1);
    let log = c.node("node-a").log();
    for needle in [
        store.to_str().unwrap(),
        "mode 0770",
        "chmod 0700",
        "--allow-shared-permissions",
    ] {
        assert!(log.contains(needle), "missing {needle:?} in:\n{log}");
    }
    assert!(
        !store.join("nodes/node-a.json").exists(),
        "nothing was written to the refused store"
    );

    // doctor: ✗ with the fix; ✓ when allowed.
    let doctor = |extra: &[&str]| {
        let out = Command::new(tenure_bin())
            .args(["doctor", "--store", store.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = doctor(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("✗ permissions:") && out.contains("chmod 0700"),
        "{out}"
    );
    let (code, out) = doctor(&["--allow-shared-permissions"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("✓ permissions: shared"), "{out}");

    // Allowed: the node runs and becomes master.
    c.node_mut("node-a")
        .restart_with(|s| s.arg("--allow-shared-permissions"));
    c.wait_stable_master(&["node-a"], settle_timeout(&tm));

    // chmod 0700 is the other fix; doctor says so.
    chmod(&store, 0o700);
    let (code, out) = doctor(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("✓ permissions: only the owner may write"),
        "{out}"
    );
}
