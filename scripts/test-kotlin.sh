#!/usr/bin/env bash
# Compiles the Kotlin sources of the Android library (android/src/main/kotlin: the generated
# bindings and the Flow layer) and the JUnit 4 tests (android/src/test/kotlin) with kotlinc,
# without Gradle, and runs the tests on the JVM against libroam_ffi.so built for this machine
# (loaded by JNA from the cargo target directory). The client tests start and stop their own
# roam-server (ROAM_SERVER_BIN, built here). Checks first that docs/usage-kotlin.md shows the
# sample the tests compile. Installs/reuses the toolchain through scripts/toolchains/kotlin.sh.
# Extra arguments: test class names (default: every *Test class). ROAM_KOTLIN_REUSE_CLASSES=1
# skips compiling and runs the classes of the previous run. Exits non-zero on failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

scripts/check-samples.sh docs/usage-kotlin.md README.md

# shellcheck disable=SC1090
source "$(scripts/toolchains/kotlin.sh)"

cargo build --quiet -p roam-ffi --lib
cargo build --quiet -p roam-server
export ROAM_SERVER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/roam-server
lib_dir=${CARGO_TARGET_DIR:-$ROOT/target}/debug
[[ -f "$lib_dir/libroam_ffi.so" ]] || { echo "test-kotlin: $lib_dir/libroam_ffi.so missing" >&2; exit 1; }

out=${CARGO_TARGET_DIR:-$ROOT/target}/kotlin
cp_compile="$JNA_JAR:$COROUTINES_JAR:$JUNIT_JAR:$KOTLIN_TEST_JAR:$KOTLIN_TEST_JUNIT_JAR"
# ROAM_KOTLIN_REUSE_CLASSES=1 runs the classes the previous run compiled (scripts/test-converge.sh
# compiles first, then starts the test at a moment of its choosing).
if [[ "${ROAM_KOTLIN_REUSE_CLASSES:-0}" == 1 && -d "$out/classes/dev" ]]; then
    echo "test-kotlin: reusing $out/classes" >&2
else
    rm -rf "$out/classes"
    mkdir -p "$out/classes"
    mapfile -t sources < <(find android/src/main/kotlin android/src/test/kotlin -name '*.kt' | sort)
    echo "test-kotlin: kotlinc ${#sources[@]} files" >&2
    # -Werror: the generated code compiles without a warning with kotlinc 2.4.20; keep it that way.
    if ! "$KOTLINC" -jvm-target 17 -Werror -classpath "$cp_compile" -d "$out/classes" "${sources[@]}"; then
        echo "test-kotlin: compilation failed" >&2
        exit 1
    fi
fi

if [[ $# -gt 0 ]]; then
    tests=("${@/#/dev.roam.}")
else
    mapfile -t tests < <(cd android/src/test/kotlin && find . -name '*Test.kt' | sed 's|^\./||; s|\.kt$||; s|/|.|g' | sort)
fi
cp_run="$out/classes:$KOTLIN_STDLIB_JAR:$cp_compile:$HAMCREST_JAR"
set +e
java -Djna.library.path="$lib_dir" -cp "$cp_run" org.junit.runner.JUnitCore "${tests[@]}" | tee "$out/junit.log"
status=${PIPESTATUS[0]}
set -e
# JUnitCore ends with "OK (N tests)" or "Tests run: N,  Failures: F"; say it plainly too.
if ok=$(grep -Eo '^OK \(([0-9]+) tests?\)' "$out/junit.log" | grep -Eo '[0-9]+'); then
    echo "kotlin: $ok passed, 0 failed"
elif run=$(grep -E '^Tests run: [0-9]+, +Failures: [0-9]+' "$out/junit.log"); then
    total=$(sed -E 's/^Tests run: ([0-9]+).*/\1/' <<<"$run")
    failed=$(sed -E 's/.*Failures: ([0-9]+).*/\1/' <<<"$run")
    echo "kotlin: $((total - failed)) passed, $failed failed"
fi
exit "$status"
