//! Records the git commit and branch for `GET /v1/server/version` (Brooklyn's buildSha1 and
//! buildBranch). Outside a git checkout, or without git, both are left unset.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    // Rebuild when HEAD moves (a commit, a checkout), not on every build.
    // (A missing file would make cargo rerun this script on every build: only existing ones.)
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let mut watch = vec![format!("{dir}/HEAD"), format!("{dir}/packed-refs")];
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(format!("{dir}/{r}"));
        }
        for f in watch.iter().filter(|f| std::path::Path::new(f).exists()) {
            println!("cargo:rerun-if-changed={f}");
        }
    }
    if let Some(sha) = git(&["rev-parse", "HEAD"]) {
        println!("cargo:rustc-env=TENURE_BUILD_SHA1={sha}");
    }
    if let Some(branch) = git(&["rev-parse", "--abbrev-ref", "HEAD"]).filter(|b| b != "HEAD") {
        println!("cargo:rustc-env=TENURE_BUILD_BRANCH={branch}");
    }
}
