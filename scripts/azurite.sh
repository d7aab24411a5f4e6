#!/usr/bin/env bash
# Microsoft's Azure Storage emulator for the tests: Azurite (pinned, from npm) under
# ~/.cache/tenure, its blob service listening on 127.0.0.1 only, telemetry off.
#
#   scripts/azurite.sh install    install Azurite (and Node.js from Debian if there is none)
#   scripts/azurite.sh start      install if needed, start a server unless one of ours runs;
#                                 prints its blob endpoint (http://127.0.0.1:PORT)
#   scripts/azurite.sh endpoint   print the running server's endpoint (exit 1 if none)
#   scripts/azurite.sh log        print the path of the server's log
#   scripts/azurite.sh stop       stop the server we started (by its PID) and remove its data
#
# Every command is idempotent. Stores use it with AZURE_STORAGE_USE_EMULATOR=true and
# AZURITE_BLOB_STORAGE_URL=<endpoint>. Environment:
#   TENURE_AZURITE_DIR    the install, pid, endpoint, log and data (default ${XDG_CACHE_HOME:-$HOME/.cache}/tenure/azurite)
#   TENURE_AZURITE_PORT   the blob port (default 10000, the emulator's usual one)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/server-lib.sh"

AZURITE_VERSION=3.35.0
STATE=${TENURE_AZURITE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tenure/azurite}
PORT=${TENURE_AZURITE_PORT:-10000}
BIN=$STATE/node_modules/.bin/azurite-blob
PIDFILE=$STATE/azurite.pid
ENDPOINT_FILE=$STATE/endpoint
LOG=$STATE/azurite.log
DATA=$STATE/data

die() { echo "azurite.sh: $*" >&2; exit 1; }

installed() {
    [ -x "$BIN" ] && [ "$("$BIN" --version 2>/dev/null)" = "$AZURITE_VERSION" ]
}

install() {
    installed && return 0
    if ! command -v npm >/dev/null 2>&1; then
        [ "$(id -u)" = 0 ] || die "npm not found: install Node.js (nodejs, npm) as root"
        echo "azurite.sh: installing Node.js from Debian" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >&2
    fi
    mkdir -p "$STATE"
    echo "azurite.sh: installing azurite $AZURITE_VERSION into $STATE" >&2
    (cd "$STATE" && npm install --no-audit --no-fund --silent "azurite@$AZURITE_VERSION" >&2)
    installed || die "azurite $AZURITE_VERSION did not install into $STATE"
}

# Whether the blob service answers (an anonymous listing is refused with 403: it is up).
answers() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1/devstoreaccount1?comp=list") || return 1
    [ "$code" != 000 ]
}

running_endpoint() {
    [ -f "$PIDFILE" ] && [ -f "$ENDPOINT_FILE" ] || return 1
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || return 1
    local endpoint
    endpoint=$(cat "$ENDPOINT_FILE")
    answers "$endpoint" || return 1
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
    [ -f "$PIDFILE" ] && stop_pid "$(cat "$PIDFILE")" azurite
    rm -rf "$DATA" "$PIDFILE" "$ENDPOINT_FILE"
    mkdir -p "$DATA"
    : >"$LOG"
    # --disableTelemetry: no request leaves the machine. --skipApiVersionCheck: object_store
    # may send a newer x-ms-version than this Azurite knows.
    setsid "$BIN" --blobHost 127.0.0.1 --blobPort "$PORT" --location "$DATA" \
        --skipApiVersionCheck --disableTelemetry --silent >>"$LOG" 2>&1 </dev/null 9>&- &
    local pid=$! endpoint="http://127.0.0.1:$PORT" i
    echo "$pid" >"$PIDFILE"
    for i in $(seq 1 100); do
        answers "$endpoint" && break
        kill -0 "$pid" 2>/dev/null || { tail -20 "$LOG" >&2; die "azurite exited at start"; }
        sleep 0.2
    done
    answers "$endpoint" || { tail -20 "$LOG" >&2; stop_pid "$pid" azurite; die "azurite at $endpoint does not answer within 20s"; }
    echo "$endpoint" >"$ENDPOINT_FILE"
    echo "azurite.sh: Azurite $AZURITE_VERSION serving blobs at $endpoint (pid $pid, log $LOG)" >&2
    echo "$endpoint"
}

stop() {
    if [ -f "$PIDFILE" ]; then
        stop_pid "$(cat "$PIDFILE")" azurite
        echo "azurite.sh: stopped Azurite (pid $(cat "$PIDFILE"))" >&2
    fi
    rm -rf "$PIDFILE" "$ENDPOINT_FILE" "$DATA"
}

case ${1:-} in
    install) install ;;
    start) start ;;
    endpoint) running_endpoint || die "no Azurite server of ours is running (scripts/azurite.sh start)" ;;
    log) echo "$LOG" ;;
    stop) stop ;;
    *) die "usage: scripts/azurite.sh install|start|endpoint|log|stop" ;;
esac
