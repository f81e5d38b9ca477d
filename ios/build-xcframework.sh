#!/usr/bin/env bash
# Builds ios/RoamFFI.xcframework on macOS: libroam_ffi.a (static, release) for
#   - iOS devices:     aarch64-apple-ios
#   - iOS simulators:  aarch64-apple-ios-sim + x86_64-apple-ios, merged into one library by lipo
#   - macOS:           aarch64-apple-darwin + x86_64-apple-darwin, merged by lipo (so that
#                      `swift build` / `swift test` of the package also work on a Mac)
# with the generated C header and a modulemap declaring the RoamFFI module. ios/Package.swift
# uses it as the RoamFFI binaryTarget on Apple platforms.
#
# Needs Xcode (xcodebuild, lipo) and rustup. Regenerate the bindings first when the Rust API
# changed (scripts/gen-bindings.sh): the Swift sources and the header must match the library.
# IPHONEOS_DEPLOYMENT_TARGET defaults to 15.0, the package's minimum. Pass --debug for a debug
# build. This script cannot run on Linux; it checks that it is on macOS.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

profile=release
case "${1:-}" in
    --debug) profile=debug ;;
    "") ;;
    *) echo "usage: $0 [--debug]" >&2; exit 2 ;;
esac

[[ "$(uname -s)" == Darwin ]] || { echo "build-xcframework: needs macOS with Xcode" >&2; exit 1; }
command -v xcodebuild >/dev/null || { echo "build-xcframework: xcodebuild missing (install Xcode)" >&2; exit 1; }

export IPHONEOS_DEPLOYMENT_TARGET=${IPHONEOS_DEPLOYMENT_TARGET:-15.0}
device=aarch64-apple-ios
simulators=(aarch64-apple-ios-sim x86_64-apple-ios)
macs=(aarch64-apple-darwin x86_64-apple-darwin)
export MACOSX_DEPLOYMENT_TARGET=${MACOSX_DEPLOYMENT_TARGET:-12.0}
rustup target add "$device" "${simulators[@]}" "${macs[@]}" >/dev/null

cargo_flags=(-p roam-ffi --lib)
[[ $profile == release ]] && cargo_flags+=(--release)
for target in "$device" "${simulators[@]}" "${macs[@]}"; do
    echo "build-xcframework: cargo build --target $target ($profile)"
    cargo build "${cargo_flags[@]}" --target "$target"
done

target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
work="$target_dir/xcframework"
rm -rf "$work"
mkdir -p "$work/headers" "$work/ios-simulator" "$work/macos"

# One library per platform variant, with both architectures (an XCFramework takes one library
# per variant).
lipo -create \
    "$target_dir/aarch64-apple-ios-sim/$profile/libroam_ffi.a" \
    "$target_dir/x86_64-apple-ios/$profile/libroam_ffi.a" \
    -output "$work/ios-simulator/libroam_ffi.a"
lipo -create \
    "$target_dir/aarch64-apple-darwin/$profile/libroam_ffi.a" \
    "$target_dir/x86_64-apple-darwin/$profile/libroam_ffi.a" \
    -output "$work/macos/libroam_ffi.a"

# The header made by scripts/gen-bindings.sh, and a modulemap for the framework's Headers
# (the library is linked by the binary target itself, so the module links nothing).
cp ios/Sources/RoamFFI/RoamFFI.h "$work/headers/RoamFFI.h"
cat >"$work/headers/module.modulemap" <<'MODULEMAP'
module RoamFFI {
    header "RoamFFI.h"
    export *
}
MODULEMAP

rm -rf ios/RoamFFI.xcframework
xcodebuild -create-xcframework \
    -library "$target_dir/$device/$profile/libroam_ffi.a" -headers "$work/headers" \
    -library "$work/ios-simulator/libroam_ffi.a" -headers "$work/headers" \
    -library "$work/macos/libroam_ffi.a" -headers "$work/headers" \
    -output ios/RoamFFI.xcframework

echo "build-xcframework: ios/RoamFFI.xcframework ready" \
    "(device: $device; simulator: ${simulators[*]}; macOS: ${macs[*]})"
