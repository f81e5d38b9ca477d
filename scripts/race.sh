#!/usr/bin/env bash
# The server race: roam-server against Socket.IO 4.8 (node) and Bun's pub/sub, same workloads,
# one server process at a time, one load generator (race/, `roam-race`).
#
#   scripts/race.sh                      # every workload on every server (several minutes)
#   scripts/race.sh --smoke              # tiny scale, ~2 s per workload: correctness only
#                                        # (debug build, reusing what `cargo test` built)
#   scripts/race.sh --workloads chat,idle --servers roam,bun
#   scripts/race.sh --docs               # also copy the table and charts to docs/bench/
#
# Other flags are passed to roam-race (`target/release/roam-race --help`). The table is printed
# and written to target/race/report.md with race.json and two SVG charts; server logs go to
# target/race/logs/. Exits non-zero when any receiver missed, repeated or reordered an event.
set -euo pipefail
cd "$(dirname "$0")/.."

docs=0
smoke=0
args=()
for a in "$@"; do
  case "$a" in
    --docs) docs=1 ;;
    --smoke) smoke=1; args+=("$a") ;;
    *) args+=("$a") ;;
  esac
done

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "== installing nodejs and npm (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi

if [ "$smoke" = 1 ]; then
  # Correctness only: the debug build is enough and is mostly built already by `cargo test`.
  bin=${CARGO_TARGET_DIR:-target}/debug
  echo "== cargo build (roam-server, roam-race)"
  cargo build --locked -p roam-server -p roam-race
else
  bin=${CARGO_TARGET_DIR:-target}/release
  echo "== cargo build --release (roam-server, roam-race)"
  cargo build --release --locked -p roam-server -p roam-race
fi

echo "== npm ci (race/peers: socket.io, bun)"
npm ci --prefix race/peers --no-audit --no-fund --loglevel=error

# 10,000 idle sockets need as many descriptors in the load generator and in the server.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

commit="$(git rev-parse --short HEAD 2>/dev/null || true)"
if [ -n "$commit" ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit (with local changes)"
fi

echo "== roam-race"
status=0
"$bin/roam-race" --roam-server "$bin/roam-server" ${commit:+--commit "$commit"} \
  "${args[@]+"${args[@]}"}" || status=$?

if [ "$docs" = 1 ]; then
  mkdir -p docs/bench
  for f in report.md saturation.svg latency.svg race.json; do
    if [ -f "target/race/$f" ]; then cp "target/race/$f" "docs/bench/$f"; fi
  done
  echo "== copied the report and charts to docs/bench/"
fi
exit "$status"
