#!/usr/bin/env bash
# HTTP throughput and tail latency of a tenure master's /v1/server/ha/state and
# /v1/server/ha/states beside nginx serving the very same bytes from static files, measured by
# wrk on loopback, runs interleaved (tenure, nginx, tenure, nginx, …) so both see the same load.
#
#   scripts/bench-http.sh [ROUNDS] [SECONDS] [CONNECTIONS] [--append] [--label TEXT]
#                         [--compare BIN LABEL]
#
# Defaults: 5 rounds of 10 s per endpoint and server, 32 connections, one wrk thread. tenure
# runs one node (it becomes master) on a temp directory at the default T and p; its runtime has
# 2 worker threads, so nginx runs 2 worker processes (access log off, keep-alive unlimited).
# The table gives the median over the rounds of req/s and of wrk's p99 latency, and
# tenure / nginx for req/s. Needs wrk and nginx (scripts/install-bench-deps.sh).
# TENURE_BIN=/path/to/tenure skips the cargo build; --label names the build in the table.
# --compare runs a second tenure (another build, e.g. before a change) beside the first, in the
# same rounds (tenure, the other build, nginx, …), and adds its rows.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bench-lib.sh
APPEND=0
LABEL=""
BIN_B=""
LABEL_B=""
ARGS=()
while (($#)); do
    case $1 in
    --append) APPEND=1 ;;
    --label) LABEL=${2:?--label needs a text}; shift ;;
    --compare) BIN_B=${2:?--compare needs a binary}; LABEL_B=${3:?--compare needs a label}; shift 2 ;;
    *) ARGS+=("$1") ;;
    esac
    shift
done
ROUNDS=${ARGS[0]:-5}
SECS=${ARGS[1]:-10}
CONNS=${ARGS[2]:-32}
for c in wrk nginx python3 curl; do
    command -v "$c" >/dev/null || bash scripts/install-bench-deps.sh
    command -v "$c" >/dev/null || { echo "bench-http: $c missing after scripts/install-bench-deps.sh" >&2; exit 1; }
done
if [ -z "${TENURE_BIN:-}" ]; then
    cargo build --release -q -p tenure
    TENURE_BIN=$PWD/target/release/tenure
fi
DIR=$(mktemp -d /tmp/tenure-http.XXXXXX)
PIDS=()
cleanup() {
    exec 2>/dev/null
    # SIGTERM: nginx's master takes its workers down with it (a SIGKILL would orphan them).
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One single-node cluster per build, each on its own store (both masters).
start_tenure() { # binary store-name -> sets PORT_OUT, PID_OUT
    local port
    port=$(free_port)
    "$1" init --store "$DIR/$2" >/dev/null # run never creates a cluster
    NO_COLOR=1 "$1" run --node-name node-a --store "$DIR/$2" --bind "127.0.0.1:$port" >"$DIR/$2.log" 2>&1 &
    PIDS+=($!)
    PID_OUT=$!
    PORT_OUT=$port
    for _ in $(seq 1 200); do
        [ "$(curl -s "http://127.0.0.1:$port/v1/server/ha/state" || true)" = '"MASTER"' ] && return 0
        sleep 0.1
    done
    echo "bench-http: no master" >&2
    exit 1
}
start_tenure "$TENURE_BIN" store
TPORT=$PORT_OUT TPID=$PID_OUT
SERVERS=(tenure)
if [ -n "$BIN_B" ]; then
    start_tenure "$BIN_B" store-b
    BPORT=$PORT_OUT BPID=$PID_OUT
    SERVERS+=(tenure-b)
fi
SERVERS+=(nginx)

# nginx serves the bytes tenure answers now, with the same content type. Its workers run as
# an unprivileged user when started by root: let them read the files.
mkdir -p "$DIR/www/v1/server/ha" "$DIR/nginx"
chmod 755 "$DIR"
curl -s "http://127.0.0.1:$TPORT/v1/server/ha/state" >"$DIR/www/v1/server/ha/state"
curl -s "http://127.0.0.1:$TPORT/v1/server/ha/states" >"$DIR/www/v1/server/ha/states"
NPORT=$(free_port)
cat >"$DIR/nginx/nginx.conf" <<EOF
worker_processes 2;
pid $DIR/nginx/nginx.pid;
error_log $DIR/nginx/error.log;
daemon off;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path $DIR/nginx;
    proxy_temp_path $DIR/nginx;
    fastcgi_temp_path $DIR/nginx;
    uwsgi_temp_path $DIR/nginx;
    scgi_temp_path $DIR/nginx;
    server {
        listen 127.0.0.1:$NPORT;
        root $DIR/www;
        default_type application/json;
    }
}
EOF
nginx -c "$DIR/nginx/nginx.conf" -p "$DIR/nginx" >/dev/null 2>"$DIR/nginx/stderr" &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$NPORT/v1/server/ha/state" >/dev/null && break; sleep 0.1; done
cmp -s <(curl -s "http://127.0.0.1:$NPORT/v1/server/ha/state") <(curl -s "http://127.0.0.1:$TPORT/v1/server/ha/state") ||
    { echo "bench-http: nginx does not serve tenure's bytes" >&2; exit 1; }
STATES_BYTES=$(stat -c %s "$DIR/www/v1/server/ha/states")

UPTIME_BEFORE=$(uptime | sed 's/.*load average: //')
RESULTS=$DIR/results
: >"$RESULTS"
# wrk prints "Requests/sec: N" and, with --latency, "99% 1.23ms".
one() { # server path round
    local port=$TPORT
    [ "$1" = nginx ] && port=$NPORT
    [ "$1" = tenure-b ] && port=$BPORT
    local out
    out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$port$2")
    local rps p99 errs
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {v = $2; if (v ~ /us$/) {sub(/us$/, "", v); v /= 1000} else if (v ~ /ms$/) {sub(/ms$/, "", v)} else if (v ~ /s$/) {sub(/s$/, "", v); v *= 1000} print v}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/' <<<"$out")
    [ -z "$errs" ] || echo "bench-http: $1 $2: $errs" >&2
    echo "$1 $2 $rps $p99" >>"$RESULTS"
    echo "round $3: $1 $2: $rps req/s, p99 $p99 ms" >&2
}
for r in $(seq 1 "$ROUNDS"); do
    for path in /v1/server/ha/state /v1/server/ha/states; do
        for server in "${SERVERS[@]}"; do one "$server" "$path" "$r"; done
    done
done
TENURE_RSS=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$TPID/status")
[ -z "$BIN_B" ] || TENURE_RSS="$TENURE_RSS ($LABEL_B: $(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$BPID/status"))"
UPTIME_AFTER=$(uptime | sed 's/.*load average: //')
TABLE=$(python3 - "$RESULTS" "$LABEL" "$LABEL_B" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
label, label_b = sys.argv[2], sys.argv[3]
def med(server, path, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == server and r[1] == path)
print("| endpoint | server | req/s (median) | p99 latency (ms, median) | req/s tenure / nginx |")
print("|---|---|---|---|---|")
for path in ("/v1/server/ha/state", "/v1/server/ha/states"):
    t, n = med("tenure", path, 2), med("nginx", path, 2)
    name = f"tenure{' (' + label + ')' if label else ''}"
    print(f"| {path} | {name} | {t:.0f} | {med('tenure', path, 3):.2f} | {t / n:.2f} |")
    if label_b:
        b = med("tenure-b", path, 2)
        print(f"| {path} | tenure ({label_b}) | {b:.0f} | {med('tenure-b', path, 3):.2f} | {b / n:.2f} |")
    print(f"| {path} | nginx (static file) | {n:.0f} | {med('nginx', path, 3):.2f} | |")
PY
)
NGINX_V=$(nginx -v 2>&1 | sed 's/.*: //')
WRK_V=$( (wrk -v 2>&1 || true) | head -1 | awk '{print $1, $2}')
NOTE="Bodies: /ha/state $(stat -c %s "$DIR/www/v1/server/ha/state") bytes, /ha/states $STATES_BYTES bytes (one node). tenure's peak RSS during the run: $TENURE_RSS MiB."
echo "$TABLE"
echo "$NOTE"
echo "load average before: $UPTIME_BEFORE; after: $UPTIME_AFTER"
if [ "$APPEND" = 1 ]; then
    {
        echo
        echo "### HTTP: tenure beside nginx serving the same bytes${LABEL:+, $LABEL} ($(date -u +%Y-%m-%d))"
        echo
        echo "Machine: $(bench_machine); $NGINX_V (2 worker processes, access log off), $WRK_V (1 thread, $CONNS connections, ${SECS} s per run, loopback); load average (1, 5, 15 min) before: $UPTIME_BEFORE, after: $UPTIME_AFTER."
        echo "Command: \`scripts/bench-http.sh $ROUNDS $SECS $CONNS${LABEL:+ --label '$LABEL'}${BIN_B:+ --compare BIN '$LABEL_B'} --append\` ($ROUNDS rounds, each endpoint on ${SERVERS[*]} in turn)."
        echo
        echo "$TABLE"
        echo
        echo "$NOTE"
    } >>docs/BENCHMARKS.md
    echo "appended to docs/BENCHMARKS.md"
fi
