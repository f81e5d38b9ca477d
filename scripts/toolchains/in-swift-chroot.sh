#!/usr/bin/env bash
# Runs a command inside the Swift chroot made by scripts/toolchains/swift.sh (made first if
# needed), with the repository bind-mounted at the same absolute path, so paths are the same
# inside and out. Also mounts proc and binds /dev; CARGO_TARGET_DIR is bound too when it lies
# outside the repository, and so is every `--bind DIR` given before the command. Everything is
# unmounted when the command ends, fails or is interrupted. Runs are serialised with a lock.
#
# Usage: scripts/toolchains/in-swift-chroot.sh [--bind DIR]... [--] CMD [ARGS...]
# The command runs in the current directory (which must be inside a bound one; else the repo
# root), with a clean environment: PATH, HOME=/root, LANG, TERM, plus CI, LD_LIBRARY_PATH and
# every ROAM_* and CARGO_TARGET_DIR variable of the caller.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CHROOT=${ROAM_SWIFT_CHROOT:-/var/cache/roam/swift-chroot}

binds=("$ROOT")
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bind) binds+=("$(cd "$2" && pwd)"); shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[[ $# -gt 0 ]] || { echo "usage: $0 [--bind DIR]... [--] CMD [ARGS...]" >&2; exit 2; }
if [[ -n "${CARGO_TARGET_DIR:-}" && "$CARGO_TARGET_DIR" != "$ROOT"/* ]]; then
    mkdir -p "$CARGO_TARGET_DIR"
    binds+=("$(cd "$CARGO_TARGET_DIR" && pwd)")
fi

"$ROOT/scripts/toolchains/swift.sh"

# One user of the chroot's mounts at a time (fd 9 stays open, and locked, until we exit).
exec 9>"$CHROOT.lock"
flock 9

mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true
    done
}
trap cleanup EXIT

mount_at() { # mount_at TARGET MOUNT-ARGS...
    local target=$1
    shift
    # A mount left by a run that was killed (SIGKILL skips traps) is reused, and removed at the
    # end like ours: we hold the lock, so no other run is using it.
    if ! mountpoint -q "$target"; then
        mkdir -p "$target"
        mount "$@" "$target"
    fi
    mounted+=("$target")
}

mount_at "$CHROOT/proc" -t proc proc
mount_at "$CHROOT/dev" --bind /dev
for dir in "${binds[@]}"; do
    mount_at "$CHROOT$dir" --bind "$dir"
done

cwd=$PWD
inside=false
for dir in "${binds[@]}"; do
    [[ "$cwd" == "$dir" || "$cwd" == "$dir"/* ]] && inside=true
done
$inside || cwd=$ROOT

envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
    "TERM=${TERM:-dumb}")
for name in $(compgen -e); do
    case "$name" in
        CI | LD_LIBRARY_PATH | CARGO_TARGET_DIR | ROAM_*) envs+=("$name=${!name}") ;;
    esac
done

# Not exec: the EXIT trap must run to unmount. The command runs in the background (stdin passed
# on explicitly) so that INT/TERM reach this script at once: they are forwarded to it, and the
# mounts are removed once it has stopped.
chroot "$CHROOT" /usr/bin/env -i "${envs[@]}" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$cwd" "$@" <&0 &
child=$!
forward() {
    kill "-$1" "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
    exit "$2"
}
trap 'forward INT 130' INT
trap 'forward TERM 143' TERM
status=0
wait "$child" || status=$?
exit "$status"
