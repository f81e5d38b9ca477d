#!/usr/bin/env bash
# Runs every test of the repository:
#   1. the Rust workspace: unit tests, the server's integration tests and the end-to-end tests
#      (real server on loopback, real roam-core clients), then the server race in smoke mode
#      (every receiver gets every event once, in order, on roam-server, Socket.IO and Bun);
#   2. the Kotlin tests of android/ (kotlinc + JUnit on the JVM, against the Rust library);
#   3. the Swift tests of ios/ (swift build / swift test in a Debian chroot with Swift 6).
# The Kotlin and Swift toolchains are installed on first use and cached under /var/cache/roam.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test --workspace"
cargo test --workspace --locked

echo "== server race, smoke (correctness only: roam-server, Socket.IO, Bun)"
scripts/race.sh --smoke

echo "== Kotlin (android/)"
scripts/test-kotlin.sh

echo "== Swift (ios/)"
scripts/test-swift.sh
