#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (cargo fuzz, libFuzzer + AddressSanitizer), one after another.
#
#   scripts/fuzz.sh                 # every target, 10 minutes each
#   scripts/fuzz.sh 60 form users   # 60 s each, these targets only
#
# Targets: form (change-request bodies and query strings), users (the --users file and the
# Authorization header), config (the --config file and its flags), records (record parsing and
# MAC checks). The seeds in fuzz/corpus/<target>/ are read, never written: new inputs go to a
# scratch corpus ($TENURE_FUZZ_WORK, default ${TMPDIR:-/tmp}/tenure-fuzz/<target>), and a crash
# is saved under fuzz/artifacts/<target>/ (reproduce with `cargo fuzz run <target> <file>`).
# `cargo test` replays fuzz/corpus/ through the same checks (fuzz/checks/) without libFuzzer.
#
# Needs cargo-fuzz (installed here from crates.io if missing) and a C++ compiler for libFuzzer.
# cargo fuzz passes -Z flags (sanitizers), which a stable toolchain accepts with
# RUSTC_BOOTSTRAP=1; the fuzz crate is a workspace of its own with its own target dir.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECS=${1:-600}
[ $# -gt 0 ] && shift
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(form users config records)
WORK=${TENURE_FUZZ_WORK:-${TMPDIR:-/tmp}/tenure-fuzz}

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1

cd fuzz
for t in "${TARGETS[@]}"; do
    mkdir -p "$WORK/$t"
    echo "==> fuzzing $t for ${SECS}s (scratch corpus $WORK/$t)"
    # One process (the machines this runs on are small); RSS capped at 2 GiB.
    set +e
    cargo fuzz run "$t" "$WORK/$t" "corpus/$t" -- \
        -max_total_time="$SECS" -rss_limit_mb=2048 -print_final_stats=1 >"$WORK/$t.log" 2>&1
    rc=$?
    set -e
    grep -E '^(#[0-9]+[[:space:]]+(INITED|DONE)|stat::number_of_executed_units|stat::average_exec_per_sec|SUMMARY|==[0-9]+==ERROR)' "$WORK/$t.log" || true
    if [ "$rc" != 0 ]; then
        echo "fuzz.sh: $t failed (exit $rc); see $WORK/$t.log and fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
echo "fuzz.sh: no failures in ${TARGETS[*]} (${SECS}s each)"
