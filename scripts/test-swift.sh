#!/usr/bin/env bash
# Builds the Swift package in ios/ and runs its XCTest tests inside the Swift chroot
# (scripts/toolchains/swift.sh makes it on first use), against libroam_ffi.so built here on the
# host. The repository is bind-mounted at the same path, so the host-built .so is used as is.
# The client tests start and stop their own roam-server (ROAM_SERVER_BIN, built here). Checks
# first that docs/usage-swift.md shows the sample the tests compile.
# Extra arguments go to `swift test` (e.g. --filter StreamTests). Exits non-zero on failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

scripts/check-samples.sh docs/usage-swift.md README.md

cargo build --quiet -p roam-ffi --lib
cargo build --quiet -p roam-server
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
lib_dir=$(cd "$target_dir/debug" && pwd)
[[ -f "$lib_dir/libroam_ffi.so" ]] || { echo "test-swift: $lib_dir/libroam_ffi.so missing" >&2; exit 1; }

# SwiftPM's own build directory goes under the cargo target dir, not into the source tree.
build_dir="$target_dir/swift-build"
mkdir -p "$build_dir"

export ROAM_FFI_LIB_DIR="$lib_dir"
# The client tests start and stop a real server (built above, run inside the chroot).
export ROAM_SERVER_BIN="$lib_dir/roam-server"
export LD_LIBRARY_PATH="$lib_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cd "$ROOT/ios"
# The tests are XCTest; --disable-swift-testing drops swift-testing's "0 tests passed" trailer.
# Every wait in the tests is bounded; the 20-minute limit only guards against a hung process.
set +e
"$ROOT/scripts/toolchains/in-swift-chroot.sh" \
    sh -c 'scratch=$1; shift; swift build --build-tests --scratch-path "$scratch" && timeout -k 30 1200 swift test --skip-build --disable-swift-testing --scratch-path "$scratch" "$@"' \
    sh "$build_dir" "$@" 2>&1 | tee "$build_dir/test.log"
status=${PIPESTATUS[0]}
set -e
# XCTest ends with "Executed N tests, with F failures"; say it plainly too.
# XCTest's last summary line: "Executed N tests, with [K tests skipped and ]F failures …".
if summary=$(grep -E 'Executed [0-9]+ tests?, with ' "$build_dir/test.log" | tail -1); then
    total=$(sed -E 's/.*Executed ([0-9]+) test.*/\1/' <<<"$summary")
    failed=$(sed -E 's/.* ([0-9]+) failures?.*/\1/' <<<"$summary")
    skipped=0
    if [[ $summary =~ ([0-9]+)\ tests?\ skipped ]]; then skipped=${BASH_REMATCH[1]}; fi
    echo "swift: $((total - failed - skipped)) passed, $failed failed, $skipped skipped"
fi
exit "$status"
