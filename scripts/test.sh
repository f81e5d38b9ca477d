#!/usr/bin/env bash
# Runs every test of the repository:
#   0. makes sure PostgreSQL and Redis run on loopback (scripts/services.sh), and that moto
#      (an S3-compatible server the blob tests start themselves) is installed (scripts/s3.sh);
#   1. the Rust workspace: unit tests, the server's integration tests and the end-to-end tests
#      (real server on loopback, real roam-core clients), then the server's integration tests a
#      second time on PostgreSQL (ROAM_TEST_STORE), then the server race in smoke mode
#      (every receiver gets every event once, in order, on roam-server, Socket.IO and Bun);
#   2. the Kotlin tests of android/ (kotlinc + JUnit on the JVM, against the Rust library);
#   3. the Swift tests of ios/ (swift build / swift test in a Debian chroot with Swift 6);
#   4. the three-language convergence check (scripts/test-converge.sh: a Rust, a Kotlin and a
#      Swift client edit one collaborative text while the server restarts).
# The Kotlin and Swift toolchains are installed on first use and cached under /var/cache/roam.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_TEST_URL=postgres://postgres@127.0.0.1:5432/test

echo "== services (PostgreSQL, Redis)"
scripts/services.sh
echo "== S3-compatible server for the blob store's tests (moto, scripts/s3.sh)"
ROAM_MOTO_SERVER=$(scripts/s3.sh | tail -n 1)
# The S3 tests start their own moto_server from this path, and fail rather than skip.
export ROAM_MOTO_SERVER ROAM_REQUIRE_S3=1
# Test schemas that interrupted runs left behind: their names end in a UUIDv7, whose first 12
# hex digits are the creation time in ms; those older than an hour go (a run in progress keeps
# its own).
psql "$PG_TEST_URL" -Atqc "SELECT format('DROP SCHEMA %I CASCADE;', nspname) FROM pg_namespace \
    WHERE nspname ~ '^roam_(test|unit)_[0-9a-f]{32}$' \
    AND ('x' || substring(nspname from '_([0-9a-f]{12})[0-9a-f]{20}$'))::bit(48)::bigint \
        < (extract(epoch from now()) * 1000)::bigint - 3600000" | psql "$PG_TEST_URL" -q

echo "== build dependencies (libssl-dev for SQLCipher)"
scripts/build-deps.sh

echo "== cargo test --workspace"
cargo test --workspace --locked

echo "== server integration tests on PostgreSQL"
ROAM_TEST_STORE=$PG_TEST_URL cargo test --locked -p roam-server --test integration

echo "== server race, smoke (correctness only: roam-server, Socket.IO, Bun)"
scripts/race.sh --smoke

echo "== Kotlin (android/)"
scripts/test-kotlin.sh

echo "== Swift (ios/)"
scripts/test-swift.sh

echo "== three-language convergence (Rust, Kotlin, Swift; server restarted)"
scripts/test-converge.sh
