#!/usr/bin/env bash
# Installs the system packages the Rust build needs beyond a Rust toolchain and a C compiler:
# libssl-dev, whose libcrypto the SQLite of the workspace (SQLCipher, rusqlite's
# `bundled-sqlcipher`) links on Linux for the encrypted client store. From apt when absent;
# quick when present. Run by .ci/run and scripts/test.sh before the first cargo command.
set -euo pipefail

missing=()
for pkg in libssl-dev pkg-config; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "== installing ${missing[*]} (apt-get)"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
