#!/usr/bin/env bash
# Builds libroam_ffi.so for the Android ABIs with cargo-ndk into android/src/main/jniLibs:
#   arm64-v8a (aarch64-linux-android), armeabi-v7a (armv7-linux-androideabi),
#   x86_64 (x86_64-linux-android).
# Needs the Android NDK (ANDROID_NDK_HOME, or ANDROID_HOME/ndk/<version>) and cargo-ndk; the
# Rust targets are added with rustup when missing. Release profile by default; pass --debug for
# a debug build. Minimum API level: 24 (the library's minSdk), ANDROID_PLATFORM overrides.
#
# Then regenerate the Kotlin bindings if the Rust API changed (scripts/gen-bindings.sh) and build
# the module with Gradle.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

profile=release
case "${1:-}" in
    --debug) profile=debug ;;
    "") ;;
    *) echo "usage: $0 [--debug]" >&2; exit 2 ;;
esac

if [[ -z "${ANDROID_NDK_HOME:-}" && -n "${ANDROID_HOME:-}" && -d "$ANDROID_HOME/ndk" ]]; then
    # The newest NDK installed by the SDK manager.
    ANDROID_NDK_HOME=$(find "$ANDROID_HOME/ndk" -mindepth 1 -maxdepth 1 -type d | sort -V | tail -1)
    export ANDROID_NDK_HOME
fi
[[ -n "${ANDROID_NDK_HOME:-}" && -d "$ANDROID_NDK_HOME" ]] || {
    echo "build-jni: set ANDROID_NDK_HOME (or ANDROID_HOME with an ndk/ directory)" >&2
    exit 1
}
command -v cargo-ndk >/dev/null || {
    echo "build-jni: cargo-ndk missing: cargo install cargo-ndk" >&2
    exit 1
}

rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android >/dev/null

out=android/src/main/jniLibs
args=(-t arm64-v8a -t armeabi-v7a -t x86_64 --platform "${ANDROID_PLATFORM:-24}" -o "$out")
[[ $profile == release ]] && release=(--release) || release=()
cargo ndk "${args[@]}" build -p roam-ffi --lib "${release[@]}"

for abi in arm64-v8a armeabi-v7a x86_64; do
    [[ -f "$out/$abi/libroam_ffi.so" ]] || { echo "build-jni: $out/$abi/libroam_ffi.so missing" >&2; exit 1; }
    echo "build-jni: $out/$abi/libroam_ffi.so ($(du -h "$out/$abi/libroam_ffi.so" | cut -f1))"
done
