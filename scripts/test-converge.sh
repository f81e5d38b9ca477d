#!/usr/bin/env bash
# The three-language convergence check (issue 22): a Rust, a Kotlin and a Swift client edit one
# collaborative text at once, with offline periods, while the server is restarted; all three must
# end with the same text, equal to what a newcomer gets from the server.
#
#   1. builds roam-server, the Rust peer (tests/examples/converge_peer.rs), and compiles the
#      Kotlin and Swift tests (running them once without ROAM_CONVERGE_URL: they skip);
#   2. starts one roam-server (debug) on a free loopback port with a fresh data directory, mints
#      a token per peer (`roam-server token --user …`), creates the public room over REST and
#      has the other peers join it;
#   3. starts the three peers at once: converge_peer, the Kotlin test class CollabConvergeTest
#      and the Swift test CollabConvergeTests. Each writes `ready-<lang>` when it has joined the
#      document, waits for the other two, makes ROAM_CONVERGE_EDITS (300) random edits with
#      offline periods, marks itself done, waits for the others and writes its final text;
#   4. once all three are ready, restarts the server (SIGTERM, then the same port and data);
#   5. reads the server's copy with a newcomer (`converge_peer --read`) and compares the four
#      texts. Exits non-zero on any difference, failure or timeout (5 minutes after the builds).
#
# Logs and texts stay in $CARGO_TARGET_DIR/converge.* (under the target dir so the Swift chroot,
# which binds it, sees the same paths).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
target=${CARGO_TARGET_DIR:-$ROOT/target}
LIMIT=300

echo "== converge: builds"
cargo build --quiet -p roam-server
cargo build --quiet -p roam-tests --example converge_peer
server_bin=$target/debug/roam-server
peer_bin=$target/debug/examples/converge_peer
# Compiled here, skipped (no ROAM_CONVERGE_URL): the runs below start at once.
env -u ROAM_CONVERGE_URL scripts/test-kotlin.sh CollabConvergeTest >/dev/null
env -u ROAM_CONVERGE_URL scripts/test-swift.sh --filter CollabConvergeTests >/dev/null

mkdir -p "$target"
work=$(mktemp -d "$target/converge.XXXXXX")
out=$work/out
mkdir -p "$out" "$work/data"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
server_env=(ROAM_LISTEN="127.0.0.1:$port" ROAM_DATA_DIR="$work/data" ROAM_JWT_SECRET="$secret"
    ROAM_SHUTDOWN_GRACE_SECS=1)
server_pid=
pids=()

cleanup() {
    local p
    for p in "${pids[@]}" $server_pid; do
        kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

start_server() {
    env "${server_env[@]}" "$server_bin" >>"$work/server.log" 2>&1 &
    server_pid=$!
    local i
    for ((i = 0; i < 400; i++)); do
        if curl -fsS -o /dev/null "$url/readyz" 2>/dev/null; then
            return 0
        fi
        kill -0 "$server_pid" 2>/dev/null || { echo "converge: the server exited (see $work/server.log)" >&2; exit 1; }
        sleep 0.05
    done
    echo "converge: the server is not ready after 20 s (see $work/server.log)" >&2
    exit 1
}

stop_server() {
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=
}

token() {
    env "${server_env[@]}" "$server_bin" token --user "$1" 2>/dev/null
}

post() { # post TOKEN PATH JSON
    curl -fsS -o /dev/null -X POST "$url$2" -H "Authorization: Bearer $1" \
        -H "Idempotency-Key: $(cat /proc/sys/kernel/random/uuid)" \
        -H 'Content-Type: application/json' -d "$3"
}

echo "== converge: server on $url, work in $work"
start_server
room=converge
export ROAM_CONVERGE_URL=$url ROAM_CONVERGE_ROOM=$room ROAM_CONVERGE_OUT=$out
export ROAM_CONVERGE_EDITS=${ROAM_CONVERGE_EDITS:-300} ROAM_CONVERGE_SEED=${ROAM_CONVERGE_SEED:-$RANDOM}
for peer in RUST KOTLIN SWIFT SERVER; do
    user=converge-${peer,,}
    tok=$(token "$user")
    [[ -n "$tok" ]] || { echo "converge: minting a token failed" >&2; exit 1; }
    export "ROAM_CONVERGE_USER_$peer=$user" "ROAM_CONVERGE_TOKEN_$peer=$tok"
    if [[ $peer == RUST ]]; then
        post "$tok" /v1/rooms "{\"room\":\"$room\",\"kind\":\"public\"}"
    else
        post "$tok" "/v1/rooms/$room/join" '{}'
    fi
done
echo "== converge: seed $ROAM_CONVERGE_SEED, $ROAM_CONVERGE_EDITS edits per peer"

deadline=$((SECONDS + LIMIT))
"$peer_bin" >"$work/rust.log" 2>&1 &
pids+=($!)
ROAM_KOTLIN_REUSE_CLASSES=1 scripts/test-kotlin.sh CollabConvergeTest >"$work/kotlin.log" 2>&1 &
pids+=($!)
scripts/test-swift.sh --filter CollabConvergeTests >"$work/swift.log" 2>&1 &
pids+=($!)
names=(rust kotlin swift)

# Restart the server once all three edit.
until [[ -e $out/ready-rust && -e $out/ready-kotlin && -e $out/ready-swift ]]; do
    if ((SECONDS > deadline)); then
        echo "converge: timed out waiting for the peers to be ready (logs in $work)" >&2
        exit 1
    fi
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "converge: the ${names[$i]} peer ended before it was ready:" >&2
            tail -n 30 "$work/${names[$i]}.log" >&2
            exit 1
        fi
    done
    sleep 0.1
done
sleep 1
if compgen -G "$out/*.txt" >/dev/null; then
    echo "converge: a peer finished before the restart; raise ROAM_CONVERGE_EDITS" >&2
    exit 1
fi
echo "== converge: all three editing; restarting the server"
stop_server
start_server

failed=0
for i in "${!pids[@]}"; do
    # Each peer bounds its own waits; this bounds the whole.
    while kill -0 "${pids[$i]}" 2>/dev/null; do
        if ((SECONDS > deadline)); then
            echo "converge: timed out waiting for the ${names[$i]} peer (log: $work/${names[$i]}.log)" >&2
            exit 1
        fi
        sleep 0.2
    done
    if ! wait "${pids[$i]}"; then
        echo "converge: the ${names[$i]} peer failed:" >&2
        tail -n 30 "$work/${names[$i]}.log" >&2
        failed=1
    fi
done
pids=()
((failed == 0)) || exit 1

timeout $((deadline - SECONDS > 10 ? deadline - SECONDS : 10)) "$peer_bin" --read >"$work/server-read.log" 2>&1 || {
    echo "converge: reading the server's copy failed:" >&2
    cat "$work/server-read.log" >&2
    exit 1
}

for f in rust kotlin swift server; do
    [[ -f $out/$f.txt ]] || { echo "converge: $f wrote no text" >&2; exit 1; }
    printf '  %-7s %6d bytes  %s\n' "$f" "$(wc -c <"$out/$f.txt")" "$(sha256sum "$out/$f.txt" | cut -c1-16)"
done
grep -h "edits made" "$work"/*.log | sed 's/^/  /' || true
for f in kotlin swift server; do
    if ! cmp -s "$out/rust.txt" "$out/$f.txt"; then
        echo "converge: FAIL — rust.txt and $f.txt differ (in $out)" >&2
        exit 1
    fi
done
[[ -s $out/rust.txt ]] || { echo "converge: FAIL — the text is empty" >&2; exit 1; }
echo "converge: OK — the Rust, Kotlin and Swift clients and the server hold the same text"
