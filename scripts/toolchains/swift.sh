#!/usr/bin/env bash
# Ensures a Debian 13 (trixie) chroot holding Swift 6.0.3 (Debian's `swiftlang` package) at
# $ROAM_SWIFT_CHROOT (default /var/cache/roam/swift-chroot). Idempotent: a finished chroot is
# marked by $ROAM_SWIFT_CHROOT/.roam-ready and reused as is; a half-made one (no marker) is
# completed, or rebuilt when debootstrap itself did not finish. Needs root.
#
# Why a chroot: the host is Debian 12, whose archive has no Swift; trixie's has swiftlang 6.0.3.
# Run commands inside it with scripts/toolchains/in-swift-chroot.sh.
set -euo pipefail

CHROOT=${ROAM_SWIFT_CHROOT:-/var/cache/roam/swift-chroot}
MARKER="$CHROOT/.roam-ready"
SUITE=trixie
# libssl3t64: libcrypto.so.3, which the host-built libroam_ffi.so and roam-server link (SQLCipher).
PACKAGES=(swiftlang libc6-dev libstdc++-14-dev libssl3t64)

log() { echo "swift.sh: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    echo "swift.sh: must run as root (debootstrap, chroot)" >&2
    exit 1
fi

if [[ -f "$MARKER" ]]; then
    log "chroot ready at $CHROOT ($(cat "$MARKER"))"
    exit 0
fi

apt_install_host() {
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
    fi
}

# Unmounts whatever a killed run left mounted under $1 (proc, /dev, bind mounts of the repo),
# deepest first, and fails if anything is still mounted: nothing below may rm -rf through a
# bind mount.
unmount_under() {
    local dir=$1 mnt
    while read -r mnt; do
        umount "$mnt" 2>/dev/null || umount -l "$mnt" || true
    done < <(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r)
    if awk -v d="$dir/" 'index($2, d) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        echo "swift.sh: cannot unmount everything under $dir:" >&2
        grep " $dir/" /proc/mounts >&2
        exit 1
    fi
}

# One setup at a time (fd 8 stays open, and locked, until we exit); then look again.
mkdir -p "$(dirname "$CHROOT")"
exec 8>"$CHROOT.setup.lock"
flock 8
if [[ -f "$MARKER" ]]; then
    log "chroot ready at $CHROOT ($(cat "$MARKER"))"
    exit 0
fi

command -v debootstrap >/dev/null || apt_install_host debootstrap

unmount_under "$CHROOT"
unmount_under "$CHROOT.tmp"
rm -rf --one-file-system "$CHROOT.tmp"

# debootstrap leaves debootstrap/ inside the target until it has finished; a target with it (or
# without a working apt) is half made: start that part again.
if [[ -d "$CHROOT" ]] && { [[ -d "$CHROOT/debootstrap" ]] || [[ ! -x "$CHROOT/usr/bin/apt-get" ]]; }; then
    log "removing half-made chroot $CHROOT"
    rm -rf --one-file-system "$CHROOT"
fi

if [[ ! -d "$CHROOT" ]]; then
    log "debootstrap --variant=minbase $SUITE $CHROOT"
    debootstrap --variant=minbase "$SUITE" "$CHROOT.tmp" >&2
    mv "$CHROOT.tmp" "$CHROOT"
fi

cleanup() { umount "$CHROOT/proc" 2>/dev/null || true; }
trap cleanup EXIT
mountpoint -q "$CHROOT/proc" || mount -t proc proc "$CHROOT/proc"
cp /etc/resolv.conf "$CHROOT/etc/resolv.conf" 2>/dev/null || true

log "installing ${PACKAGES[*]} in the chroot"
chroot "$CHROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -c "dpkg --configure -a && apt-get update && apt-get install -y --no-install-recommends ${PACKAGES[*]} && apt-get clean" >&2

version=$(chroot "$CHROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root swift --version 2>&1 | head -1)
log "$version"
case "$version" in
    *"Swift version 6."*) ;;
    *) echo "swift.sh: unexpected swift --version: $version" >&2; exit 1 ;;
esac
echo "$version" >"$MARKER"
log "chroot ready at $CHROOT"
