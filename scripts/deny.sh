#!/usr/bin/env bash
# cargo-deny over the workspace (deny.toml): licenses, bans and sources always; RustSec
# advisories when the advisory database can be fetched (it lives on GitHub). When it cannot, the
# script says so and does not fail, unless ROAM_REQUIRE_ADVISORIES=1.
#
# cargo-deny is installed from crates.io on first use (a release build, about 5 minutes on two
# cores) into /var/cache/roam/cargo-deny (ROAM_CARGO_DENY_ROOT) and reused after that.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.20.2
ROOT=${ROAM_CARGO_DENY_ROOT:-/var/cache/roam/cargo-deny}
DENY=$ROOT/bin/cargo-deny

if [[ "$("$DENY" --version 2>/dev/null)" != "cargo-deny $VERSION" ]]; then
    echo "installing cargo-deny $VERSION into $ROOT (once; cached after)"
    start=$SECONDS
    cargo install cargo-deny --version "=$VERSION" --locked --root "$ROOT"
    echo "cargo-deny installed in $((SECONDS - start)) s"
fi

"$DENY" --color never --locked check licenses bans sources

# A failed check and a database that cannot be fetched both exit non-zero: fetch first, so the
# two are told apart.
if "$DENY" --color never --locked fetch db; then
    "$DENY" --color never --locked check advisories
else
    echo "!! advisories NOT checked: the RustSec advisory database" \
        "(https://github.com/RustSec/advisory-db) could not be fetched; see the error above" >&2
    if [[ "${ROAM_REQUIRE_ADVISORIES:-0}" == 1 ]]; then
        exit 1
    fi
fi
