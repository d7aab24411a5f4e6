#!/usr/bin/env bash
# A local SMTP server for the tests: aiosmtpd (pinned) in a virtualenv outside the repository,
# listening on 127.0.0.1 only, writing every message it receives to a directory
# (scripts/smtp_sink.py), one .eml file each.
#
#   scripts/smtp.sh install    create the virtualenv and install aiosmtpd, if not done yet
#   scripts/smtp.sh start      install if needed, start a server unless one of ours runs;
#                              prints its endpoint (smtp://127.0.0.1:PORT)
#   scripts/smtp.sh endpoint   print the running server's endpoint (exit 1 if none)
#   scripts/smtp.sh maildir    print the directory the messages are written to
#   scripts/smtp.sh log        print the path of the server's log
#   scripts/smtp.sh stop       stop the server we started (by its PID)
#
# Every command is idempotent. Environment:
#   TENURE_SMTP_VENV   the virtualenv (default ${XDG_CACHE_HOME:-$HOME/.cache}/tenure/smtp-venv)
#   TENURE_SMTP_DIR    pid, endpoint, log and mail (default ${XDG_CACHE_HOME:-$HOME/.cache}/tenure/smtp)
#   PYTHON             the interpreter that creates the virtualenv (default python3)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/server-lib.sh"

AIOSMTPD_VERSION=1.4.6
SINK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/smtp_sink.py
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/tenure
VENV=${TENURE_SMTP_VENV:-$CACHE/smtp-venv}
STATE=${TENURE_SMTP_DIR:-$CACHE/smtp}
PYTHON=${PYTHON:-python3}
PIDFILE=$STATE/smtp.pid
ENDPOINT_FILE=$STATE/endpoint
LOG=$STATE/smtp.log
MAILDIR=$STATE/mail

die() { echo "smtp.sh: $*" >&2; exit 1; }

installed() {
    [ -x "$VENV/bin/python" ] &&
        [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("aiosmtpd"))' 2>/dev/null)" = "$AIOSMTPD_VERSION" ]
}

install() {
    installed && return 0
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: install Python 3 (python3, python3-venv)"
    "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null ||
        die "$PYTHON cannot create virtualenvs: install python3-venv (scripts/install-test-deps.sh does)"
    mkdir -p "$(dirname "$VENV")"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "smtp.sh: creating the virtualenv $VENV" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    echo "smtp.sh: installing aiosmtpd $AIOSMTPD_VERSION into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "aiosmtpd==$AIOSMTPD_VERSION" >&2
    installed || die "aiosmtpd $AIOSMTPD_VERSION did not install into $VENV"
}

# The endpoint of our running server, if it greets.
running_endpoint() {
    [ -f "$PIDFILE" ] && [ -f "$ENDPOINT_FILE" ] || return 1
    local pid endpoint
    pid=$(cat "$PIDFILE")
    endpoint=$(cat "$ENDPOINT_FILE")
    kill -0 "$pid" 2>/dev/null || return 1
    "$VENV/bin/python" - "$endpoint" <<'PY' >/dev/null 2>&1 || return 1
import smtplib, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
s = smtplib.SMTP(u.hostname, u.port, timeout=2)
s.noop()
s.quit()
PY
    echo "$endpoint"
}

start() {
    install
    mkdir -p "$STATE" "$MAILDIR"
    # Two callers at once (test binaries, scripts) start one server.
    exec 9>"$STATE/lock"
    flock 9
    if running_endpoint; then
        return 0
    fi
    if [ -f "$PIDFILE" ]; then
        stop_pid "$(cat "$PIDFILE")" smtp_sink.py
        rm -f "$PIDFILE" "$ENDPOINT_FILE"
    fi
    : >"$LOG"
    # setsid: not in the caller's process group, so a Ctrl-C of one test run does not take it
    # down mid-way.
    setsid "$VENV/bin/python" -u "$SINK" "$MAILDIR" >>"$LOG" 2>&1 </dev/null 9>&- &
    local pid=$!
    echo "$pid" >"$PIDFILE"
    local addr="" i
    for i in $(seq 1 200); do
        addr=$(grep -o -m1 'listening on 127\.0\.0\.1:[0-9]*' "$LOG" 2>/dev/null | sed 's/^listening on //') || true
        [ -n "$addr" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$LOG" >&2; die "the SMTP sink exited at start"; }
        sleep 0.05
    done
    [ -n "$addr" ] || { cat "$LOG" >&2; stop_pid "$pid" smtp_sink.py; die "the SMTP sink printed no address within 10s"; }
    echo "smtp://$addr" >"$ENDPOINT_FILE"
    running_endpoint >/dev/null || { stop_pid "$pid" smtp_sink.py; die "the SMTP sink at $addr does not greet"; }
    echo "smtp.sh: aiosmtpd $AIOSMTPD_VERSION serving smtp://$addr (pid $pid, mail in $MAILDIR, log $LOG)" >&2
    echo "smtp://$addr"
}

stop() {
    [ -f "$PIDFILE" ] || return 0
    local pid
    pid=$(cat "$PIDFILE")
    # Only the process we started: check it is our sink before signalling it.
    if grep -q smtp_sink.py "/proc/$pid/cmdline" 2>/dev/null; then
        stop_pid "$pid" smtp_sink.py
        echo "smtp.sh: stopped the SMTP sink (pid $pid)" >&2
    fi
    rm -f "$PIDFILE" "$ENDPOINT_FILE"
}

case ${1:-} in
    install) install ;;
    start) start ;;
    endpoint) running_endpoint || die "no SMTP server of ours is running (scripts/smtp.sh start)" ;;
    maildir) echo "$MAILDIR" ;;
    log) echo "$LOG" ;;
    stop) stop ;;
    *) die "usage: scripts/smtp.sh install|start|endpoint|maildir|log|stop" ;;
esac
