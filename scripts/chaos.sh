#!/usr/bin/env bash
# The randomized fault campaign (docs/SAFETY.md): builds tenure and the campaign runner
# (tests/src/bin/chaos.rs), mounts one fault-injecting FUSE passthrough per node over a shared
# store directory, runs the trials, prints the summary table, and unmounts — also after a
# crash or ctrl-C. Needs root and /dev/fuse (CI runs as root); faketime for the clock faults.
#
#   scripts/chaos.sh                      # 20 trials
#   scripts/chaos.sh --trials 1000        # the long campaign (docs/SAFETY.md)
#   scripts/chaos.sh --trial-seed 0x…     # reproduce one trial (printed on a violation)
#   scripts/chaos.sh --faults wipe,rollback,lease-replay,vanished-mount   # only these faults
#   scripts/chaos.sh --help               # every option
#
# Environment: CHAOS_OUT=DIR work directory (default: a fresh /tmp/tenure-chaos.XXXXXX, removed
# after a passing run unless CHAOS_KEEP=1); TENURE_TEST_RELEASE=1 uses the release build;
# TENURE_BIN=/path/to/tenure tests that binary (then only the runner is built).
# Exit status: 0 passed, 1 a violation, 2 usage, 3 not every trial ran.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

for a in "$@"; do
    if [ "$a" = -h ] || [ "$a" = --help ]; then
        sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
        echo
        HELP_ONLY=1
    fi
done

if [ "$(id -u)" != 0 ] && [ -z "${HELP_ONLY:-}" ]; then
    echo "chaos.sh: needs root (FUSE mounts, mount namespaces)" >&2
    exit 2
fi
if [ ! -e /dev/fuse ] && [ -z "${HELP_ONLY:-}" ]; then
    echo "chaos.sh: /dev/fuse is missing (apt-get install fuse3; modprobe fuse)" >&2
    exit 2
fi

PROFILE_FLAG=()
PROFILE_DIR=debug
if [ "${TENURE_TEST_RELEASE:-0}" = 1 ]; then
    PROFILE_FLAG=(--release)
    PROFILE_DIR=release
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac

# The binary under test: $TENURE_BIN as given, else the one built here. The build selects the
# whole workspace with all targets, as scripts/test.sh does, so that it reuses test.sh's build
# (cargo resolves features per selection: `-p tenure-tests` alone would rebuild dependencies).
cargo build -q --workspace --all-targets "${PROFILE_FLAG[@]+"${PROFILE_FLAG[@]}"}"
TENURE_BIN=${TENURE_BIN:-$TARGET_DIR/$PROFILE_DIR/tenure}
export TENURE_BIN
CHAOS=$TARGET_DIR/$PROFILE_DIR/chaos

if [ -n "${HELP_ONLY:-}" ]; then
    exec "$CHAOS" --help
fi

OWN_OUT=0
if [ -n "${CHAOS_OUT:-}" ]; then
    OUT=$CHAOS_OUT
    mkdir -p "$OUT"
else
    OUT=$(mktemp -d /tmp/tenure-chaos.XXXXXX)
    OWN_OUT=1
fi
OUT=$(cd "$OUT" && pwd)

# Unmount every fault filesystem under $OUT/mnt, whatever happened to the runner.
unmount_all() {
    local m
    awk -v base="$OUT/mnt/" 'index($5, base) == 1 { print $5 }' /proc/self/mountinfo |
        sort -r | while read -r m; do
            fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done
}
CHILD=
on_exit() {
    local rc=$?
    if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
        kill -TERM "$CHILD" 2>/dev/null || true
        wait "$CHILD" 2>/dev/null || true
    fi
    unmount_all
    if ((rc == 0)) && [ "$OWN_OUT" = 1 ] && [ "${CHAOS_KEEP:-0}" != 1 ]; then
        rm -rf "$OUT"
    else
        echo "chaos.sh: work directory kept: $OUT" >&2
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

set +e
"$CHAOS" --out "$OUT" --bin "$TENURE_BIN" "$@" &
CHILD=$!
wait "$CHILD"
rc=$?
CHILD=
set -e
exit "$rc"
