//! Replays the fuzz corpus of the `records` target (fuzz/corpus/records/) through the same
//! check the fuzzer runs (fuzz/checks/records.rs): `records::open` with and without a secret,
//! and `seal` → `open` round trips. scripts/fuzz.sh runs the real fuzzer.

use std::path::Path;

include!("../../../fuzz/checks/records.rs");

#[test]
fn records_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/records");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| check_records(&data));
        assert!(result.is_ok(), "{} fails the records check", path.display());
        n += 1;
    }
    assert!(n > 0, "no corpus in {}", dir.display());
}
