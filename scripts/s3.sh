#!/usr/bin/env bash
# Installs the S3-compatible server the blob store's S3 tests run against: moto in server mode
# (`moto_server`), in a Python virtual environment under /var/cache/roam/moto, from PyPI.
# Quick when it is already there. Idempotent. The tests start their own `moto_server` on a free
# loopback port (they find it through ROAM_MOTO_SERVER, this directory, or PATH), so nothing is
# left running.
#
# Prints the path of `moto_server` on its last line.
set -euo pipefail

VENV=${ROAM_MOTO_VENV:-/var/cache/roam/moto}
MOTO_SPEC='moto[server]>=5.1,<6'

if [ -x "$VENV/bin/moto_server" ] && "$VENV/bin/python" -c 'import moto.server' 2>/dev/null; then
    echo "$VENV/bin/moto_server"
    exit 0
fi

python=$(command -v python3 || true)
if [ -z "$python" ] || ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "s3: installing python3 and python3-venv" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
    python=$(command -v python3)
fi

echo "s3: installing $MOTO_SPEC into $VENV" >&2
mkdir -p "$(dirname "$VENV")"
rm -rf "$VENV"
"$python" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "$MOTO_SPEC" >&2
"$VENV/bin/python" -c 'import moto.server' >&2
echo "$VENV/bin/moto_server"
