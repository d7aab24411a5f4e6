#!/usr/bin/env bash
# Footprint of an idle cluster: peak RSS and CPU of the master and a standby over a window,
# the binary's size, and the system calls each makes per poll on the directory store.
#
#   scripts/bench-footprint.sh [SECONDS] [--append]      (default 60 s, p = 1 s, T = 30 s)
#   TENURE_BIN=/path/to/tenure scripts/bench-footprint.sh …   (another build, not rebuilt)
#
# CPU comes from /proc/<pid>/stat (utime + stime) over the window; syscalls from `strace -c -f`
# attached to each process for a quarter of the window (strace slows the traced process, so
# CPU is measured before attaching it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bench-lib.sh
APPEND=0
SECS=60
for a in "$@"; do
    case $a in
    --append) APPEND=1 ;;
    *) SECS=$a ;;
    esac
done
command -v strace >/dev/null || { echo "bench-footprint: needs strace (apt-get install strace)" >&2; exit 1; }
# TENURE_BIN=/path/to/tenure measures another build (e.g. another release profile) as is.
if [ -z "${TENURE_BIN:-}" ]; then
    cargo build --release -q -p tenure
fi
BIN=${TENURE_BIN:-$PWD/target/release/tenure}
DIR=$(mktemp -d /tmp/tenure-footprint.XXXXXX)
PIDS=()
cleanup() {
    exec 2>/dev/null # bash reports the killed background jobs otherwise
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORTS=()
"$BIN" init --store "$DIR/store" --heartbeat-timeout 30s >/dev/null # run never creates a cluster
for n in a b; do
    port=$(free_port)
    PORTS+=("$port")
    NO_COLOR=1 "$BIN" run --node-name "node-$n" --store "$DIR/store" --bind "127.0.0.1:$port" \
        --heartbeat-timeout 30s --poll-period 1s >"$DIR/$n.log" 2>&1 &
    PIDS+=($!)
done
# Wait for a master.
master=""
for _ in $(seq 1 100); do
    for i in 0 1; do
        if [ "$("$BIN" state --url "http://127.0.0.1:${PORTS[$i]}" 2>/dev/null)" = MASTER ]; then master=$i; fi
    done
    [ -n "$master" ] && break
    sleep 0.1
done
[ -n "$master" ] || { echo "no master after 10 s" >&2; exit 1; }
standby=$((1 - master))

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
declare -A T0
for i in 0 1; do T0[$i]=$(ticks "${PIDS[$i]}"); done
sleep "$SECS"
row() {
    local i=$1 role=$2 pid=${PIDS[$1]}
    local used=$(($(ticks "$pid") - T0[$i]))
    local hwm rss
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    local cpu
    cpu=$(awk -v u="$used" -v hz="$hz" -v s="$SECS" 'BEGIN {printf "%.3f", 100 * u / hz / s}')
    echo "| $role | $(awk -v k="$hwm" 'BEGIN {printf "%.1f", k/1024}') | $(awk -v k="$rss" 'BEGIN {printf "%.1f", k/1024}') | $cpu |"
}
FOOT=$(
    echo "| node | peak RSS (MiB) | RSS now (MiB) | CPU (% of one core) |"
    echo "|---|---|---|---|"
    row "$master" master
    row "$standby" standby
)
# Syscalls per poll: trace each for a quarter of the window (at least 10 polls).
TRACE=$(( SECS / 4 > 10 ? SECS / 4 : 10 ))
sys_row() {
    local pid=${PIDS[$1]} role=$2 out="$DIR/strace.$2"
    timeout -s INT "$TRACE" strace -c -f -q -p "$pid" -o "$out" >/dev/null 2>&1 || true
    local total
    # strace -c columns: % time, seconds, usecs/call, calls, [errors], syscall.
    total=$(awk '$NF == "total" {print $4}' "$out")
    local top
    top=$(awk 'NR > 2 && !/^-/ && !/total$/ {print $NF "=" $4}' "$out" | sort -t= -k2 -nr | head -6 | paste -sd' ')
    echo "| $role | $total | $(awk -v t="$total" -v n="$TRACE" 'BEGIN {printf "%.0f", t / n}') | $top |"
}
SYS=$(
    echo "| node | syscalls in ${TRACE} s | per poll (p = 1 s) | most frequent |"
    echo "|---|---|---|---|"
    sys_row "$master" master
    sys_row "$standby" standby
)
SIZE=$(stat -c %s "$BIN")
OUT=$(
    echo "$FOOT"
    echo
    echo "Binary: \`$BIN\` $(awk -v b="$SIZE" 'BEGIN {printf "%.1f", b/1048576}') MiB."
    echo
    echo "$SYS"
)
echo "$OUT"
if [ "$APPEND" = 1 ]; then
    {
        echo
        echo "### Idle footprint and syscalls per poll, directory store, T = 30 s, p = 1 s ($(date -u +%Y-%m-%d))"
        echo
        echo "Machine: $(bench_machine); store on $(bench_store_fs)."
        echo "Command: \`scripts/bench-footprint.sh $SECS --append\` (two nodes, ${SECS} s window; syscalls by \`strace -c -f\`, which counts every thread, the HTTP and I/O threads included)."
        echo
        echo "$OUT"
    } >>docs/BENCHMARKS.md
    echo "appended to docs/BENCHMARKS.md"
fi
