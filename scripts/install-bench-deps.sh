#!/usr/bin/env bash
# Installs what the benchmark scripts need (scripts/bench-*.sh), idempotently: checks first,
# installs only what is missing. Not used by CI or scripts/test.sh (benchmarks are not run in
# CI). Run as root (or with sudo available).
#
#   etcd-server etcd-client   scripts/bench-peers.sh (etcdctl lock --ttl contenders)
#   redis-server redis-sentinel  scripts/bench-peers.sh (Sentinel failover)
#   wrk nginx                 scripts/bench-http.sh (load generator; nginx serves the same bytes)
#   strace                    scripts/bench-footprint.sh (syscalls per poll)
#   python3 curl              the scripts' observers and probes
set -euo pipefail
APT_PACKAGES=(etcd-server etcd-client redis-server redis-sentinel wrk nginx strace python3 curl)
die() { echo "install-bench-deps: $*" >&2; exit 1; }
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    echo "install-bench-deps: installing ${missing[*]}" >&2
    $SUDO apt-get update -qq
    # Debian starts the packaged services on install; the benchmarks run their own instances
    # on other ports and never touch the system ones. policy-rc.d keeps them from starting.
    POLICY=/usr/sbin/policy-rc.d
    ADDED_POLICY=0
    if [ ! -e "$POLICY" ] && [ "$(id -u)" = 0 ]; then
        printf '#!/bin/sh\nexit 101\n' >"$POLICY" && chmod +x "$POLICY" && ADDED_POLICY=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
        { [ "$ADDED_POLICY" = 1 ] && rm -f "$POLICY"; die "apt-get install failed"; }
    if [ "$ADDED_POLICY" = 1 ]; then rm -f "$POLICY"; fi
fi
echo "install-bench-deps: ok" >&2
