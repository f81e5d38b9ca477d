#!/usr/bin/env bash
# Runs every test of the repository: the Rust workspace (unit, integration and end-to-end tests
# against a real server on loopback). Installs nothing itself beyond what cargo fetches.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test --workspace"
cargo test --workspace --locked
