#!/usr/bin/env bash
# Ensures the Kotlin/JVM toolchain used to compile and test the generated Kotlin bindings
# without Gradle: kotlinc 2.4.20 (from the npm package kotlin-compiler, which ships the whole
# kotlinc distribution, kotlinx-coroutines and kotlin-test included), JNA and JUnit 4 + Hamcrest
# (Debian packages), on the installed Java 17.
#
# Cache: $ROAM_CACHE/kotlin (default /var/cache/roam/kotlin), outside the repository. Idempotent.
# Writes $ROAM_CACHE/kotlin/env.sh, which exports KOTLINC, KOTLIN_HOME and the jar paths, and
# prints its path on stdout (so callers can `source "$(scripts/toolchains/kotlin.sh)"`).
set -euo pipefail

KOTLIN_VERSION=2.4.20
CACHE=${ROAM_CACHE:-/var/cache/roam}/kotlin
DIST="$CACHE/kotlinc-$KOTLIN_VERSION"
ENV_FILE="$CACHE/env.sh"

log() { echo "kotlin.sh: $*" >&2; }

apt_install() {
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2; then
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
    fi
}

command -v java >/dev/null || apt_install openjdk-17-jdk-headless

# kotlinc from npm: the tarball's package/ is the kotlinc distribution (bin/, lib/).
if [[ ! -x "$DIST/bin/kotlinc" || ! -f "$DIST/.roam-ready" ]]; then
    command -v npm >/dev/null || apt_install npm
    rm -rf "$DIST" "$DIST.tmp"
    mkdir -p "$DIST.tmp"
    log "npm pack kotlin-compiler@$KOTLIN_VERSION"
    (cd "$DIST.tmp" && npm pack --silent "kotlin-compiler@$KOTLIN_VERSION" >&2)
    tar -xzf "$DIST.tmp"/kotlin-compiler-*.tgz -C "$DIST.tmp"
    mv "$DIST.tmp/package" "$DIST"
    rm -rf "$DIST.tmp"
    chmod +x "$DIST"/bin/*
    version=$("$DIST/bin/kotlinc" -version 2>&1 | tail -1)
    case "$version" in
        *"$KOTLIN_VERSION"*) log "$version" ;;
        *) echo "kotlin.sh: unexpected kotlinc -version: $version" >&2; exit 1 ;;
    esac
    echo "$KOTLIN_VERSION" >"$DIST/.roam-ready"
fi

# JNA, JUnit 4 and Hamcrest (JUnit 4 needs hamcrest-core at run time).
for pkg_jar in libjna-java:/usr/share/java/jna.jar junit4:/usr/share/java/junit4.jar \
    libhamcrest-java:/usr/share/java/hamcrest-core.jar; do
    pkg=${pkg_jar%%:*} jar=${pkg_jar#*:}
    [[ -f "$jar" ]] || apt_install "$pkg"
    [[ -f "$jar" ]] || { echo "kotlin.sh: $pkg did not provide $jar" >&2; exit 1; }
done

for jar in kotlinx-coroutines-core-jvm.jar kotlin-test.jar kotlin-test-junit.jar kotlin-stdlib.jar; do
    [[ -f "$DIST/lib/$jar" ]] || { echo "kotlin.sh: $DIST/lib/$jar missing" >&2; exit 1; }
done

cat >"$ENV_FILE.tmp" <<ENV
# Written by scripts/toolchains/kotlin.sh
export KOTLIN_HOME="$DIST"
export KOTLINC="$DIST/bin/kotlinc"
export JNA_JAR=/usr/share/java/jna.jar
export JUNIT_JAR=/usr/share/java/junit4.jar
export HAMCREST_JAR=/usr/share/java/hamcrest-core.jar
export COROUTINES_JAR="$DIST/lib/kotlinx-coroutines-core-jvm.jar"
export KOTLIN_TEST_JAR="$DIST/lib/kotlin-test.jar"
export KOTLIN_TEST_JUNIT_JAR="$DIST/lib/kotlin-test-junit.jar"
export KOTLIN_STDLIB_JAR="$DIST/lib/kotlin-stdlib.jar"
ENV
mv "$ENV_FILE.tmp" "$ENV_FILE"
log "kotlinc $KOTLIN_VERSION ready in $DIST"
echo "$ENV_FILE"
