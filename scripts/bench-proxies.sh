#!/usr/bin/env bash
# Proxy switch time after kill -9 of the master: for each example in deploy/ (HAProxy, HAProxy
# with credentials, Apache mod_proxy_hcheck, nginx + tenure-upstream-sync.sh), the time from
# kill -9 of the master's tenure to the first request served by the new master's application
# through the proxy. Runs tests/tests/proxies.rs RUNS times (3 nodes, T = 2 s, p = 200 ms).
#
#   scripts/bench-proxies.sh [RUNS] [--append]
#
# Default 5 runs. With --append, the table and the machine are appended to docs/BENCHMARKS.md.
# Needs haproxy, apache2, nginx (scripts/install-test-deps.sh installs them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bench-lib.sh
APPEND=0
RUNS=5
for a in "$@"; do
    if [ "$a" = --append ]; then APPEND=1; else RUNS=$a; fi
done

cargo build --release -q -p tenure
export TENURE_BIN=$PWD/target/release/tenure
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
for ((i = 1; i <= RUNS; i++)); do
    echo "bench-proxies: run $i of $RUNS" >&2
    TENURE_PROXY_BENCH_OUT=$OUT cargo test -q -p tenure-tests --test proxies -- --test-threads=1 >/dev/null
done

# Lines: proxy switch_ms interval_ms T_ms p_ms
TABLE=$(sort -k1,1 -k2,2n "$OUT" | awk '
    { k = $1; v[k, ++n[k]] = $2; iv[k] = $3; t[k] = $4; p[k] = $5; if (!(k in seen)) { seen[k] = 1; order[++m] = k } }
    END {
        print "| proxy (deploy/…) | check interval | runs | switch min | median | max | median / (T + interval) |"
        print "| --- | --- | --- | --- | --- | --- | --- |"
        for (j = 1; j <= m; j++) {
            k = order[j]; c = n[k]
            med = v[k, int((c + 1) / 2)]
            printf "| %s | %d ms | %d | %d ms | %d ms | %d ms | %.2f |\n", k, iv[k], c, v[k, 1], med, v[k, c], med / (t[k] + iv[k])
        }
    }')
echo "$TABLE"

if [ "$APPEND" = 1 ]; then
    {
        echo
        echo "### Proxy switch after kill -9, T = 2s, p = 200ms ($(date -u +%Y-%m-%d))"
        echo
        echo "Machine: $(bench_machine);"
        echo "$(haproxy -v | head -1 | cut -d' ' -f1-3), $(apache2 -v | head -1 | cut -d' ' -f3), $(nginx -v 2>&1 | cut -d' ' -f3)."
        echo "Command: \`scripts/bench-proxies.sh $RUNS --append\`"
        echo
        echo "$TABLE"
    } >> docs/BENCHMARKS.md
    echo "appended to docs/BENCHMARKS.md"
fi
