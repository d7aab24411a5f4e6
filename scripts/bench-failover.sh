#!/usr/bin/env bash
# Crash failover (kill -9) and graceful handover (SIGTERM) of real tenure processes on a local
# directory, measured by an observer sampling every node's /v1/server/ha/state every ~10 ms.
#
#   scripts/bench-failover.sh [RUNS] [T] [p] [--append]
#
# Defaults: 30 runs at T = 2s, p = 200ms. With --append, the table and the machine it ran on
# are appended to docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
APPEND=0
ARGS=()
for a in "$@"; do
    if [ "$a" = --append ]; then APPEND=1; else ARGS+=("$a"); fi
done
RUNS=${ARGS[0]:-30}
T=${ARGS[1]:-2s}
P=${ARGS[2]:-200ms}

cargo build --release -q -p tenure
cargo build -q -p tenure-tests --bin bench_failover
export TENURE_BIN=$PWD/target/release/tenure
TABLE=$(target/debug/bench_failover "$RUNS" "$T" "$P")
echo "$TABLE"

if [ "$APPEND" = 1 ]; then
    CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
    {
        echo
        echo "### Failover and handover, directory store, T = $T, p = $P ($(date -u +%Y-%m-%d))"
        echo
        echo "Machine: $(nproc) cores ($CPU), $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r); store on $(df -T /tmp | awk 'NR==2 {print $2}')."
        echo "Command: \`scripts/bench-failover.sh $RUNS $T $P --append\`"
        echo
        echo "$TABLE"
    } >> docs/BENCHMARKS.md
    echo "appended to docs/BENCHMARKS.md"
fi
