#!/usr/bin/env bash
# S3 requests per node per poll and per hour, counted by the S3 server itself (moto's request
# recorder, each node signing with its own access key), for a 3-node cluster at T = 30s and
# p = 1s and 5s, with the monthly cost at S3 Standard list prices.
#
#   scripts/bench-requests.sh [--write]
#   TENURE_BIN=target/debug/tenure scripts/bench-requests.sh [--write]
#
# With --write, the tables replace the measured section of docs/storage-costs.md (between its
# "measured:begin" and "measured:end" markers). Takes about ten minutes (the listings run every 2T = 60 s: a
# window of several of them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WRITE=0
[ "${1:-}" = --write ] && WRITE=1

# TENURE_BIN=/path/to/tenure counts another build as is (the counts do not depend on the
# optimisation level; a fat-LTO release link takes minutes on two cores).
if [ -z "${TENURE_BIN:-}" ]; then
    cargo build --release -q -p tenure
fi
cargo build -q -p tenure-tests --bin bench_requests
export TENURE_BIN=${TENURE_BIN:-$PWD/target/release/tenure}
if [ -z "${TENURE_S3_ENDPOINT:-}" ]; then
    TENURE_S3_ENDPOINT=$(bash scripts/moto.sh start)
    export TENURE_S3_ENDPOINT
fi

OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
{
    echo "<!-- measured:begin (scripts/bench-requests.sh --write, $(date -u +%Y-%m-%d)) -->"
    for run in "1s 180" "5s 60"; do
        set -- $run
        echo
        echo "**T = 30 s, p = $1** ($2 polls recorded):"
        echo
        target/debug/bench_requests 30s "$1" "$2"
    done
    echo
    echo "<!-- measured:end -->"
} >"$OUT"
cat "$OUT"

if [ "$WRITE" = 1 ]; then
    python3 - "$OUT" docs/storage-costs.md <<'EOF'
import re, sys
new = open(sys.argv[1]).read().strip()
path = sys.argv[2]
doc = open(path).read()
pattern = re.compile(r"<!-- measured:begin.*?<!-- measured:end -->", re.S)
if not pattern.search(doc):
    sys.exit(f"{path} has no measured:begin/measured:end markers")
open(path, "w").write(pattern.sub(lambda _: new, doc, count=1))
print(f"updated {path}")
EOF
fi
