#!/usr/bin/env bash
# A local S3 server for the tests: moto (pinned) in a virtualenv outside the repository,
# listening on 127.0.0.1 only.
#
#   scripts/moto.sh install    create the virtualenv and install moto, if not done yet
#   scripts/moto.sh start      install if needed, start a server unless one of ours runs;
#                              prints its endpoint (http://127.0.0.1:PORT)
#   scripts/moto.sh endpoint   print the running server's endpoint (exit 1 if none)
#   scripts/moto.sh log        print the path of the server's request log
#   scripts/moto.sh stop       stop the server we started (by its PID)
#
# Every command is idempotent. Environment:
#   TENURE_MOTO_VENV   the virtualenv (default ${XDG_CACHE_HOME:-$HOME/.cache}/tenure/moto-venv)
#   TENURE_MOTO_DIR    pid, endpoint and log files (default ${XDG_CACHE_HOME:-$HOME/.cache}/tenure/moto)
#   PYTHON             the interpreter that creates the virtualenv (default python3)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/server-lib.sh"

MOTO_VERSION=5.2.5
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/tenure
VENV=${TENURE_MOTO_VENV:-$CACHE/moto-venv}
STATE=${TENURE_MOTO_DIR:-$CACHE/moto}
PYTHON=${PYTHON:-python3}
PIDFILE=$STATE/moto.pid
ENDPOINT_FILE=$STATE/endpoint
LOG=$STATE/moto.log

die() { echo "moto.sh: $*" >&2; exit 1; }

installed() {
    [ -x "$VENV/bin/moto_server" ] &&
        [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" = "$MOTO_VERSION" ] &&
        "$VENV/bin/python" -c 'import flask, flask_cors, boto3' 2>/dev/null
}

install() {
    installed && return 0
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: install Python 3 (python3, python3-venv)"
    "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null ||
        die "$PYTHON cannot create virtualenvs: install python3-venv (scripts/install-test-deps.sh does)"
    mkdir -p "$(dirname "$VENV")"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "moto.sh: creating the virtualenv $VENV" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    echo "moto.sh: installing moto $MOTO_VERSION into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        "moto[s3]==$MOTO_VERSION" flask flask-cors >&2
    installed || die "moto $MOTO_VERSION did not install into $VENV"
}

# The endpoint of our running server, if it answers.
running_endpoint() {
    [ -f "$PIDFILE" ] && [ -f "$ENDPOINT_FILE" ] || return 1
    local pid endpoint
    pid=$(cat "$PIDFILE")
    endpoint=$(cat "$ENDPOINT_FILE")
    kill -0 "$pid" 2>/dev/null || return 1
    # moto's own API answers without credentials.
    "$VENV/bin/python" - "$endpoint" <<'EOF' >/dev/null 2>&1 || return 1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=2).read()
EOF
    echo "$endpoint"
}

start() {
    install
    mkdir -p "$STATE"
    # Two callers at once (test binaries, scripts) start one server.
    exec 9>"$STATE/lock"
    flock 9
    if running_endpoint; then
        return 0
    fi
    if [ -f "$PIDFILE" ]; then
        stop_pid "$(cat "$PIDFILE")" moto_server
        rm -f "$PIDFILE" "$ENDPOINT_FILE"
    fi
    : >"$LOG"
    # Port 0: the kernel picks a free port, moto prints it. setsid: not in the caller's
    # process group, so a Ctrl-C of one test run does not take it down mid-way.
    # The request recorder (moto-api/recorder/*, off until started) writes into the state
    # directory, not the caller's working directory.
    MOTO_RECORDER_FILEPATH=$STATE/recording.jsonl \
        setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p 0 >>"$LOG" 2>&1 </dev/null 9>&- &
    local pid=$!
    echo "$pid" >"$PIDFILE"
    local endpoint="" i
    for i in $(seq 1 200); do
        endpoint=$(grep -o -m1 'Running on http://127\.0\.0\.1:[0-9]*' "$LOG" 2>/dev/null | sed 's/^Running on //') || true
        [ -n "$endpoint" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$LOG" >&2; die "moto_server exited at start"; }
        sleep 0.05
    done
    [ -n "$endpoint" ] || { cat "$LOG" >&2; stop_pid "$pid" moto_server; die "moto_server printed no address within 10s"; }
    echo "$endpoint" >"$ENDPOINT_FILE"
    running_endpoint >/dev/null || { stop_pid "$pid" moto_server; die "moto_server at $endpoint does not answer"; }
    echo "moto.sh: moto $MOTO_VERSION serving $endpoint (pid $pid, log $LOG)" >&2
    echo "$endpoint"
}

stop() {
    [ -f "$PIDFILE" ] || return 0
    local pid
    pid=$(cat "$PIDFILE")
    # Only the process we started: check it is a moto_server before signalling it.
    if grep -q moto_server "/proc/$pid/cmdline" 2>/dev/null; then
        stop_pid "$pid" moto_server
        echo "moto.sh: stopped moto (pid $pid)" >&2
    fi
    rm -f "$PIDFILE" "$ENDPOINT_FILE"
}

case ${1:-} in
    install) install ;;
    start) start ;;
    endpoint) running_endpoint || die "no moto server of ours is running (scripts/moto.sh start)" ;;
    log) echo "$LOG" ;;
    stop) stop ;;
    *) die "usage: scripts/moto.sh install|start|endpoint|log|stop" ;;
esac
