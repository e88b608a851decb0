#!/usr/bin/env bash
# agentvault on PostgreSQL against agentvault on SQLite, measured side by side in one run
# (alternating rounds), on this machine:
#
#   - agent reads at 32 connections: SQLite, PostgreSQL with one server, PostgreSQL with two
#     servers (16 connections to each, the two wrk runs at once);
#   - writes per second (secret value changes, one client after another) on each backend;
#   - propagation between two servers: the time from a change acknowledged by A to the first read
#     on B that sees it (1,000 changes), and the stale reads seen when the client sends
#     X-Agentvault-Index back (must be 0).
#
#   bash bench/postgres.sh        (BENCH_DURATION=10s BENCH_ROUNDS=3 BENCH_CHANGES=1000)
#
# With BENCH_BOUNDS=1 it also measures how far any audit statement could take PostgreSQL's
# reads on this machine: a build of the committed HEAD with bench/postgres-bounds.patch applied
# (not a correct build: its group commit does less than a read's record needs) runs three more
# servers on PostgreSQL, one per bound: `segments` stores the batch's segment rows only (no
# index keys, no last reads), `select` sends `SELECT 1` instead of the records (one round trip
# per batch, nothing stored), `none` sends nothing (the group commit's own cost in agentvault).
#
# Starts a throwaway PostgreSQL cluster (as the postgres user when run as root) with the
# defaults a production one has (fsync and synchronous_commit on). Results: bench/out/postgres/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${BENCH_OUT:-$ROOT/bench/out}/postgres
DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-3}
CHANGES=${BENCH_CHANGES:-1000}
BIN=$TARGET_DIR/release/agentvault
PGBIN=${AGENTVAULT_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
ADMIN_TOKEN="bench_admin_$(od -An -tx1 -N18 /dev/urandom | tr -d ' \n')"
ROOT_KEY=$(openssl rand -base64 32)
source "$ROOT/bench/lib.sh"
bench_init pgbench
chmod 755 "$WORK"
PGDATA=$WORK/pg/data
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

cleanup() {
    bench_stop_all
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$OUT" "$WORK/pg"
[[ $(id -u) == 0 ]] && chown postgres "$WORK/pg"
if [[ ${BENCH_BUILD:-1} == 1 ]]; then
    log "building the release binary"
    (cd "$ROOT" && cargo build --release --quiet -p agentvault)
fi

log "starting PostgreSQL on port $PORT"
as_pg "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/pg/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $WORK/pg -c max_connections=200" start >/dev/null
PG=postgres://postgres@127.0.0.1:$PORT
createdb() { as_pg "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -c "CREATE DATABASE $1" postgres; }

# start NAME [DATABASE]: a server on SQLite (no database) or on the given PostgreSQL database;
# sets URL and PID.
start() {
    start_server "$1" "$BIN" AGENTVAULT_BOOTSTRAP_TOKEN="$ADMIN_TOKEN" AGENTVAULT_ROOT_KEY="$ROOT_KEY" \
        AGENTVAULT_DATABASE_URL="${2:+$PG/$2}"
}

# Prints the bounds build (see the top), built from a clean export of HEAD with the patch.
bounds_binary() {
    local commit src=$TARGET_DIR/pg-bounds
    commit=$(git -C "$ROOT" rev-parse --verify HEAD)
    if [[ ! -x $src/$commit ]]; then
        rm -rf "$src/src" && mkdir -p "$src/src"
        git -C "$ROOT" archive "$commit" | tar -x -C "$src/src"
        (cd "$src/src" && git apply "$ROOT/bench/postgres-bounds.patch") || die "bench/postgres-bounds.patch no longer applies"
        # One target folder for every commit: dependencies are built once.
        (cd "$src/src" && CARGO_TARGET_DIR=$src/target cargo build --release -q -p agentvault) >&2
        cp "$src/target/release/agentvault" "$src/$commit"
    fi
    echo "$src/$commit"
}
BOUNDS=()
if [[ ${BENCH_BOUNDS:-0} == 1 ]]; then
    log "building the bounds build"
    BOUNDS_BIN=$(bounds_binary)
    BOUNDS=(segments select none)
fi

createdb bench_one
createdb bench_two
start sqlite && SQLITE=$URL SQLITE_PID=$PID
start pg1 bench_one && PG1=$URL PG1_PID=$PID
start pg2a bench_two && PG2A=$URL
start pg2b bench_two && PG2B=$URL
read -r S_KEY _ S_AGENT S_WS < <(setup_read "$SQLITE" "$ADMIN_TOKEN")
read -r P_KEY _ P_AGENT P_WS < <(setup_read "$PG1" "$ADMIN_TOKEN")
read -r Q_KEY _ Q_AGENT Q_WS < <(setup_read "$PG2A" "$ADMIN_TOKEN")
declare -A B_URL B_PID B_KEY B_AGENT
for bound in "${BOUNDS[@]}"; do
    createdb "bench_$bound"
    start_server "$bound" "$BOUNDS_BIN" AGENTVAULT_BOOTSTRAP_TOKEN="$ADMIN_TOKEN" AGENTVAULT_ROOT_KEY="$ROOT_KEY" \
        AGENTVAULT_DATABASE_URL="$PG/bench_$bound" AGENTVAULT_BENCH_BOUND="$bound"
    B_URL[$bound]=$URL B_PID[$bound]=$PID
    read -r B_KEY[$bound] _ B_AGENT[$bound] _ < <(setup_read "$URL" "$ADMIN_TOKEN")
done
sleep 1 # B follows A's setup

rps() { awk '/Requests\/sec/ { print $2 }' "$1"; }
# CPU ticks (1/100 s) used so far by every PostgreSQL process (lib.sh's process_ticks: one).
pg_ticks() { local p t=0; for p in $(pgrep -u postgres); do t=$((t + $(process_ticks "$p" 2>/dev/null || echo 0))); done; echo "$t"; }
requests() { awk '/requests in/ { print $1 }' "$1"; }
# µs of CPU per read: ticks over requests.
per_read() { awk -v t="$1" -v r="$2" 'BEGIN { printf "%.1f", t * 10000 / r }'; }
# A counter of a server's /metrics.
counter() { curl -sf "$1/metrics" | awk -v m="agentvault_$2_total" '$1 == m { print $2 }'; }
# One wrk run at 32 connections against URL (server PID, agent AGENT, key KEY) into FILE; sets
# R_RPS, R_P99, R_BATCH (records per group commit), R_CPU and R_DB (agentvault's and PostgreSQL's
# CPU µs per read).
reads_on() {
    local url=$1 pid=$2 key=$3 agent=$4 file=$5 before db_before records batches n
    before=$(process_ticks "$pid") db_before=$(pg_ticks)
    records=$(counter "$url" audit_records) batches=$(counter "$url" audit_batches)
    wrk -t2 -c32 -d"$DURATION" --latency -H "Authorization: Bearer $key" "$url$(read_path "$agent")" >"$file"
    if grep -Eq 'Non-2xx|Socket errors' "$file"; then die "wrk saw errors in $file"; fi
    R_CPU=$(per_read $(($(process_ticks "$pid") - before)) "$(requests "$file")")
    R_DB=$(per_read $(($(pg_ticks) - db_before)) "$(requests "$file")")
    records=$(($(counter "$url" audit_records) - records)) batches=$(($(counter "$url" audit_batches) - batches))
    R_BATCH=$(awk -v r="$records" -v b="$batches" 'BEGIN { printf "%.1f", b ? r / b : 0 }')
    R_RPS=$(rps "$file") R_P99=$(p99 "$file")
}
p99() { awk '$1 == "99%" { print $2 }' "$1"; }
read_path() { echo "/api/v1/agents/$1/secrets/stripe_api_key"; }

: >"$OUT/reads.txt"
for round in $(seq 1 "$ROUNDS"); do
    log "reads, round $round/$ROUNDS ($DURATION each, 32 connections)"
    reads_on "$SQLITE" "$SQLITE_PID" "$S_KEY" "$S_AGENT" "$OUT/sqlite.r$round.txt"
    s_rps=$R_RPS s_cpu=$R_CPU
    reads_on "$PG1" "$PG1_PID" "$P_KEY" "$P_AGENT" "$OUT/pg1.r$round.txt"
    p_batch=$R_BATCH p_cpu=$R_CPU p_db=$R_DB
    wrk -t1 -c16 -d"$DURATION" --latency -H "Authorization: Bearer $Q_KEY" "$PG2A$(read_path "$Q_AGENT")" >"$OUT/pg2a.r$round.txt" &
    first=$!
    wrk -t1 -c16 -d"$DURATION" --latency -H "Authorization: Bearer $Q_KEY" "$PG2B$(read_path "$Q_AGENT")" >"$OUT/pg2b.r$round.txt"
    wait "$first"
    for f in pg2a pg2b; do
        grep -Eq 'Non-2xx|Socket errors' "$OUT/$f.r$round.txt" && die "wrk saw errors in $OUT/$f.r$round.txt"
    done
    printf 'round=%s sqlite=%s pg1=%s pg2=%s sqlite_p99=%s pg1_p99=%s pg2a_p99=%s pg2b_p99=%s\n' "$round" \
        "$(rps "$OUT/sqlite.r$round.txt")" "$(rps "$OUT/pg1.r$round.txt")" \
        "$(awk -v a="$(rps "$OUT/pg2a.r$round.txt")" -v b="$(rps "$OUT/pg2b.r$round.txt")" 'BEGIN { print a + b }')" \
        "$(p99 "$OUT/sqlite.r$round.txt")" "$(p99 "$OUT/pg1.r$round.txt")" \
        "$(p99 "$OUT/pg2a.r$round.txt")" "$(p99 "$OUT/pg2b.r$round.txt")" | tee -a "$OUT/reads.txt"
    # CPU per read: agentvault's own, and on PostgreSQL also the database's (same machine).
    printf 'round=%s cpu_us_per_read sqlite=%s pg1_agentvault=%s pg1_postgresql=%s pg1_records_per_commit=%s\n' \
        "$round" "$s_cpu" "$p_cpu" "$p_db" "$p_batch" | tee -a "$OUT/reads.txt"
    for bound in "${BOUNDS[@]}"; do
        reads_on "${B_URL[$bound]}" "${B_PID[$bound]}" "${B_KEY[$bound]}" "${B_AGENT[$bound]}" "$OUT/bound-$bound.r$round.txt"
        printf 'round=%s bound=%s reads=%s ratio_to_sqlite=%s p99=%s records_per_commit=%s cpu_us_per_read agentvault=%s postgresql=%s\n' \
            "$round" "$bound" "$R_RPS" "$(awk -v a="$R_RPS" -v b="$s_rps" 'BEGIN { printf "%.2f", a / b }')" "$R_P99" \
            "$R_BATCH" "$R_CPU" "$R_DB" | tee -a "$OUT/reads.txt"
    done
done

log "writes and propagation ($CHANGES changes)"
python3 "$ROOT/bench/propagation.py" --token "$ADMIN_TOKEN" --changes "$CHANGES" \
    --sqlite "$SQLITE" --sqlite-ws "$S_WS" --pg "$PG1" --pg-ws "$P_WS" \
    --a "$PG2A" --b "$PG2B" --ab-ws "$Q_WS" --ab-agent "$Q_AGENT" --ab-key "$Q_KEY" | tee "$OUT/changes.txt"
log "results in $OUT (reads.txt, changes.txt)"
