#!/usr/bin/env bash
# Instructions per agent read, counted by valgrind's callgrind, for one or more agentvault builds
# and for the floor (bench/floor.rs). Requests/s and CPU time on a small shared VM move by 10–20%
# from one round to the next with whatever else the host runs; the number of instructions a read
# executes hardly moves, so a change of a few percent shows in one run. It counts user space only
# (every thread of the server: the request, the journal's mover, …), not the kernel's network
# work, which is the same for every server; compare it with requests/s and CPU time from
# bench/run.sh or bench/ab.sh, not instead of them. The server's first audit upkeep (10 s after
# its start) falls inside the counted window: it merges the small segments that the journal's
# moves leave at valgrind's slow read rate, about 3,000 instructions per read that a server at
# full speed (whose moves already make large segments) does not spend; it weighs on every build
# alike.
#
#   bash bench/instructions.sh [AGENTVAULT_BINARY ...]
#
# Default: target/release/agentvault. The floor is target/release/floor (built by bench/run.sh or
# `cargo build --release -p agentvault-bench`). Needs valgrind (Debian's `valgrind`) and wrk.
# Settings: INSTR_CONNECTIONS (8), INSTR_DURATION (10s of counted traffic after 3 s of warm-up).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
bench_init instructions

command -v valgrind >/dev/null || die "valgrind is not installed (apt-get install valgrind)"
command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
FLOOR=$TARGET_DIR/release/floor
[[ -x $FLOOR ]] || die "$FLOOR is missing: cargo build --release -p agentvault-bench"
CONNECTIONS=${INSTR_CONNECTIONS:-8}
DURATION=${INSTR_DURATION:-10s}
TOKEN="instr_admin_$(od -An -tx1 -N18 /dev/urandom | tr -d ' \n')"
(($# > 0)) || set -- "$TARGET_DIR/release/agentvault"

# Runs under callgrind with counting off until `callgrind_control -i on`.
callgrind() { # NAME -> the prefix for start_server
    echo "valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$WORK/$1/callgrind.out"
}

# count NAME PID URL KEY: instructions per read over one wrk run (after a warm-up that is not
# counted: valgrind translates code the first time it runs).
count() {
    local name=$1 pid=$2 url=$3 key=$4 n total
    wrk -t1 -c"$CONNECTIONS" -d3s -H "Authorization: Bearer $key" "$url" >/dev/null
    callgrind_control -i on "$pid" >/dev/null 2>&1
    n=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -H "Authorization: Bearer $key" "$url" | awk '/requests in/ { print $1 }')
    callgrind_control -i off "$pid" >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1
    for _ in $(seq 1 100); do
        total=$(cat "$WORK/$name"/callgrind.out.* 2>/dev/null | awk '/^totals:/ { s += $2 } END { print s + 0 }')
        ((total > 0)) && break
        sleep 0.1
    done
    ((total > 0 && n > 0)) || die "$name: no count (requests: ${n:-none})"
    printf '%-14s %8d reads  %14d instructions  %7d per read\n' "$name" "$n" "$total" $((total / n))
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

echo "instructions per agent read (callgrind, user space, every thread), $CONNECTIONS connections, $DURATION"
i=0
for bin in "$@"; do
    i=$((i + 1))
    name=agentvault-$i
    echo "$name: $bin"
    mkdir -p "$WORK/$name"
    SERVER_PREFIX=$(callgrind "$name") start_server "$name" "$bin" AGENTVAULT_BOOTSTRAP_TOKEN="$TOKEN" AGENTVAULT_LOG=warn
    read -r key path _ < <(setup_read "$URL" "$TOKEN")
    count "$name" "$PID" "$URL$path" "$key"
done

mkdir -p "$WORK/floor"
key="floor_$(od -An -tx1 -N18 /dev/urandom | tr -d ' \n')"
# shellcheck disable=SC2046 # the prefix is words
FLOOR_TOKEN=$key $(callgrind floor) "$FLOOR" 127.0.0.1:0 >"$WORK/floor/stdout" 2>"$WORK/floor/stderr" &
PID=$!
PIDS+=("$PID")
wait_url "$WORK/floor/stdout" "$PID" floor
count floor "$PID" "$URL/api/v1/agents/agt_1/secrets/stripe_api_key" "$key"
