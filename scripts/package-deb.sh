#!/usr/bin/env bash
# Builds the Debian package of tenure with dpkg-deb: target/debian/tenure_<version>_<arch>.deb
# (version from `tenure --version`, `-` of a pre-release turned into `~`; arch from
# `dpkg --print-architecture`). Prints the path of the .deb on standard output.
#
#   scripts/package-deb.sh                        # builds the release binary, then packages it
#   scripts/package-deb.sh --binary PATH          # packages that binary, builds nothing
#   scripts/package-deb.sh --out DIR              # writes the .deb into DIR (default target/debian)
#   scripts/package-deb.sh --no-strip             # keeps the binary's symbols (stripped by default)
#   scripts/package-deb.sh --compression TYPE     # xz (default), gzip, zstd or none (dpkg-deb -Z)
#   scripts/package-deb.sh --help
#
# Without --binary it runs `cargo build --release -p tenure` (3 to 6 minutes on 2 cores the
# first time). The package holds /usr/bin/tenure, the systemd unit (deploy/systemd, ExecStart
# rewritten to /usr/bin/tenure; not enabled on install), /etc/tenure/tenure.env (a conffile,
# from deploy/systemd/tenure.env.example, mode 0600), /usr/lib/sysusers.d/tenure.conf, and
# README.md, docs/operations.md and deploy/ (as examples/) under /usr/share/doc/tenure. The
# maintainer scripts are in packaging/debian/: the postinst creates the tenure system user and
# /var/lib/tenure; all of them honour DPKG_ROOT. Depends: from dpkg-shlibdeps (dpkg-dev) when
# installed, else from the binary's glibc symbol versions. Needs dpkg-deb, and strip (binutils)
# unless --no-strip. Environment: TENURE_DEB_MAINTAINER (the Maintainer field),
# SOURCE_DATE_EPOCH (file dates; default: the last commit's), CARGO_TARGET_DIR.
set -euo pipefail

die() { echo "package-deb.sh: $*" >&2; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

CALLER_PWD=$PWD
abspath() { case $1 in /*) echo "$1" ;; *) echo "$CALLER_PWD/$1" ;; esac; }

BIN=
OUT=
STRIP=1
COMPRESSION=xz
while (($#)); do
    case $1 in
        --binary) BIN=$(abspath "${2:?--binary needs a path}"); shift ;;
        --binary=*) BIN=$(abspath "${1#--binary=}") ;;
        --out) OUT=$(abspath "${2:?--out needs a directory}"); shift ;;
        --out=*) OUT=$(abspath "${1#--out=}") ;;
        --no-strip) STRIP=0 ;;
        --compression) COMPRESSION=${2:?--compression needs xz, gzip, zstd or none}; shift ;;
        --compression=*) COMPRESSION=${1#--compression=} ;;
        -h | --help) usage; exit 0 ;;
        *) echo "package-deb.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case $COMPRESSION in xz | gzip | zstd | none) ;; *) echo "package-deb.sh: --compression is xz, gzip, zstd or none, not '$COMPRESSION'" >&2; exit 2 ;; esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
OUT=${OUT:-$TARGET_DIR/debian}
MAINTAINER=${TENURE_DEB_MAINTAINER:-tenure developers <dev@tenure.invalid>}
UNIT_SRC=deploy/systemd/tenure.service
ENV_SRC=deploy/systemd/tenure.env.example

command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found (Debian package dpkg)"
ARCH=$(dpkg --print-architecture) || die "dpkg --print-architecture failed"
if [ "$STRIP" = 1 ]; then
    command -v strip >/dev/null 2>&1 || die "strip not found: install binutils, or use --no-strip"
fi

if [ -z "$BIN" ]; then
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install Rust (https://rustup.rs), or package a binary with --binary PATH"
    echo "building the release binary (cargo build --release -p tenure)" >&2
    cargo build --release -p tenure >&2
    BIN=$TARGET_DIR/release/tenure
fi
[ -f "$BIN" ] && [ -x "$BIN" ] || die "$BIN is not an executable file"

# The package's version is the binary's own: a stale --binary cannot be labelled as another.
VERSION_LINE=$("$BIN" --version) || die "$BIN --version failed"
[[ $VERSION_LINE =~ ^tenure\ ([0-9][0-9A-Za-z.+-]*)$ ]] ||
    die "$BIN --version printed '$VERSION_LINE', not 'tenure <version>'"
UPSTREAM_VERSION=${BASH_REMATCH[1]}
# Semver 1.2.0-rc.1 comes before 1.2.0; in Debian's ordering 1.2.0~rc.1 does (and a `-` would
# start a Debian revision).
VERSION=${UPSTREAM_VERSION//-/\~}

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/tenure-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
PKG=$STAGE/debian/tenure
umask 022

install -d "$PKG/DEBIAN" "$PKG/usr/bin" "$PKG/usr/lib/systemd/system" "$PKG/usr/lib/sysusers.d" \
    "$PKG/etc/tenure" "$PKG/usr/share/doc/tenure/examples"

# The binary. Stripped as dh_strip does (the symbols and .comment; the build id stays).
if [ "$STRIP" = 1 ]; then
    strip --remove-section=.comment --remove-section=.note -o "$PKG/usr/bin/tenure" "$BIN"
    chmod 0755 "$PKG/usr/bin/tenure"
else
    install -m 0755 "$BIN" "$PKG/usr/bin/tenure"
fi

# The unit: the packaged binary's path in every Exec*= line, and a header for the packaged
# file in place of the source's installation comment (the lines before [Unit]).
{
    cat <<'EOF'
# tenure as a systemd service, installed by the tenure Debian package (from
# deploy/systemd/tenure.service). Do not edit this file: `systemctl edit tenure` adds a drop-in,
# e.g. RequiresMountsFor= and ReadWritePaths= for a store other than /srv/tenure. Put the
# settings in /etc/tenure/tenure.env, create the cluster once (`tenure init`), then:
# systemctl enable --now tenure
EOF
    awk 'started || !/^#/ { started = 1; print }' "$UNIT_SRC" |
        sed -E 's#^(Exec[A-Za-z]*=[-@:+!]*)[^ ]*/tenure( |$)#\1/usr/bin/tenure\2#'
} >"$PKG/usr/lib/systemd/system/tenure.service"
chmod 0644 "$PKG/usr/lib/systemd/system/tenure.service"
grep -q '^ExecStart=/usr/bin/tenure run$' "$PKG/usr/lib/systemd/system/tenure.service" ||
    die "$UNIT_SRC: no 'ExecStart=…/tenure run' line to point at /usr/bin/tenure (adjust this script)"
if grep -E '^Exec[A-Za-z]*=' "$PKG/usr/lib/systemd/system/tenure.service" | grep -v '=[-@:+!]*/usr/bin/tenure\b' >&2; then
    die "$UNIT_SRC: the Exec lines above do not run /usr/bin/tenure (adjust this script)"
fi

# The settings: a conffile, 0600 (it may hold TENURE_SECRET). systemd reads it as root before
# it starts tenure as the tenure user, so tenure itself needs no access to it.
install -m 0600 "$ENV_SRC" "$PKG/etc/tenure/tenure.env"
install -m 0644 packaging/debian/tenure.sysusers "$PKG/usr/lib/sysusers.d/tenure.conf"

# Documentation and examples (deploy/ as it is: a script stays executable).
DOC=$PKG/usr/share/doc/tenure
install -m 0644 README.md "$DOC/README.md"
install -m 0644 docs/operations.md "$DOC/operations.md"
install -m 0644 packaging/debian/copyright "$DOC/copyright"
while IFS= read -r -d '' f; do
    mode=0644
    [ -x "$f" ] && mode=0755
    install -D -m "$mode" "$f" "$DOC/examples/${f#deploy/}"
done < <(find deploy -type f -print0 | sort -z)
{
    echo "tenure ($VERSION) unstable; urgency=medium"
    echo
    echo "  * tenure $UPSTREAM_VERSION, packaged by scripts/package-deb.sh."
    echo
    echo " -- $MAINTAINER  $(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$DOC/changelog.Debian.gz"
chmod 0644 "$DOC/changelog.Debian.gz"

# Dependencies of the binary's shared libraries.
DEPENDS=
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
    printf 'Source: tenure\n\nPackage: tenure\nArchitecture: any\n' >"$STAGE/debian/control"
    DEPENDS=$(cd "$STAGE" && dpkg-shlibdeps -O debian/tenure/usr/bin/tenure | sed -n 's/^shlibs:Depends=//p') ||
        DEPENDS=
fi
if [ -z "$DEPENDS" ]; then
    # No dpkg-dev: the newest glibc symbol version the binary needs (libgcc_s for unwinding).
    glibc=$(objdump -T "$PKG/usr/bin/tenure" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1 || true)
    DEPENDS="libc6 (>= ${glibc:-2.36})"
    if objdump -p "$PKG/usr/bin/tenure" 2>/dev/null | grep -q 'NEEDED.*libgcc_s'; then
        DEPENDS="$DEPENDS, libgcc-s1"
    fi
    echo "package-deb.sh: dpkg-shlibdeps not found (dpkg-dev): Depends: $DEPENDS" >&2
fi
# The postinst creates the user with adduser, else useradd (passwd).
DEPENDS="$DEPENDS, adduser | passwd"

echo /etc/tenure/tenure.env >"$PKG/DEBIAN/conffiles"
for s in postinst prerm postrm; do
    install -m 0755 "packaging/debian/$s" "$PKG/DEBIAN/$s"
done
(cd "$PKG" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' |
    sort -z | xargs -0 md5sum) >"$PKG/DEBIAN/md5sums"
chmod 0644 "$PKG/DEBIAN/conffiles" "$PKG/DEBIAN/md5sums"

INSTALLED_SIZE=$(du -sk --apparent-size --exclude=DEBIAN "$PKG" | cut -f1)
cat >"$PKG/DEBIAN/control" <<EOF
Package: tenure
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $INSTALLED_SIZE
Depends: $DEPENDS
Section: admin
Priority: optional
Homepage: https://github.com/tenure-ha/tenure
Description: master/standby HA coordinator over shared storage
 tenure keeps exactly one node of a cluster in the MASTER role, using nothing
 but a shared storage location to coordinate: a directory on local disk or
 NFS, or an object-store prefix (Amazon S3 and S3-compatible servers, Google
 Cloud Storage, Azure Blob Storage). Each node answers Apache Brooklyn's HA
 API, runs hooks when it is promoted or demoted, and hands out an epoch (a
 fencing token) that increases at every change of master.
 .
 This package installs the tenure binary, a hardened systemd unit (not
 enabled: configure /etc/tenure/tenure.env first) and the tenure system user.
EOF
chmod 0644 "$PKG/DEBIAN/control"

find "$PKG" -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$OUT"
DEB=$OUT/tenure_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Z"$COMPRESSION" --build "$PKG" "$DEB" >&2
echo "$DEB"
