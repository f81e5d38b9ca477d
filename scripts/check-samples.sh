#!/usr/bin/env bash
# Checks that the code samples in docs/usage-*.md are exactly the lines the tests compile.
#
# A sample in markdown is announced by a comment naming its source, followed by a fenced block:
#     <!-- sample: android/src/test/kotlin/dev/roam/ReadmeSample.kt -->
#     ```kotlin
#     …
#     ```
# and the source file holds the same lines between `// sample:begin` and `// sample:end`.
#
# Usage: scripts/check-samples.sh [FILE.md…]   (default: docs/usage-swift.md docs/usage-kotlin.md)
# Exits 1 and shows a diff when a sample differs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

docs=("$@")
[[ ${#docs[@]} -gt 0 ]] || docs=(docs/usage-swift.md docs/usage-kotlin.md)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

status=0
checked=0
for md in "${docs[@]}"; do
    [[ -f "$md" ]] || { echo "check-samples: $md missing" >&2; status=1; continue; }
    mapfile -t sources < <(sed -nE 's/^<!-- sample: ([^ ]+) -->$/\1/p' "$md")
    [[ ${#sources[@]} -gt 0 ]] || { echo "check-samples: $md names no sample" >&2; status=1; continue; }
    for src in "${sources[@]}"; do
        [[ -f "$src" ]] || { echo "check-samples: $src (named in $md) missing" >&2; status=1; continue; }
        # The fenced block right after the marker.
        awk -v marker="<!-- sample: $src -->" '
            $0 == marker { armed = 1; next }
            armed && /^```/ { if (inside) exit; inside = 1; next }
            inside { print }
        ' "$md" >"$tmp/doc"
        sed -n '/sample:begin/,/sample:end/p' "$src" | sed '1d;$d' >"$tmp/src"
        [[ -s "$tmp/src" ]] || { echo "check-samples: $src has no sample:begin/sample:end lines" >&2; status=1; continue; }
        if ! diff -u --label "$src" --label "$md" "$tmp/src" "$tmp/doc"; then
            echo "check-samples: the sample in $md differs from $src" >&2
            status=1
        fi
        checked=$((checked + 1))
    done
done
[[ $status -eq 0 ]] && echo "check-samples: $checked sample(s) match their sources"
exit $status
