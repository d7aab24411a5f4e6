//! Replays the fuzz corpora of the `form` and `users` targets (fuzz/corpus/, a few seeds and
//! the minimized finds) through the same checks the fuzzers run (fuzz/checks/), so every
//! `cargo test` covers them without libFuzzer. scripts/fuzz.sh runs the real fuzzers.

use std::path::Path;

include!("../../../fuzz/checks/form.rs");
include!("../../../fuzz/checks/users.rs");

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(
            result.is_ok(),
            "{} fails the {target} check",
            path.display()
        );
        n += 1;
    }
    assert!(n > 0, "no corpus in {}", dir.display());
}

#[test]
fn form_corpus() {
    replay("form", check_form);
}

#[test]
fn users_corpus() {
    replay("users", check_users);
}
