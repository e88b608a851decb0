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

createdb bench_one
createdb bench_two
start sqlite && SQLITE=$URL SQLITE_PID=$PID
start pg1 bench_one && PG1=$URL PG1_PID=$PID
start pg2a bench_two && PG2A=$URL
start pg2b bench_two && PG2B=$URL
read -r S_KEY _ S_AGENT S_WS < <(setup_read "$SQLITE" "$ADMIN_TOKEN")
read -r P_KEY _ P_AGENT P_WS < <(setup_read "$PG1" "$ADMIN_TOKEN")
read -r Q_KEY _ Q_AGENT Q_WS < <(setup_read "$PG2A" "$ADMIN_TOKEN")
sleep 1 # B follows A's setup

rps() { awk '/Requests\/sec/ { print $2 }' "$1"; }
# CPU ticks (1/100 s) used so far by one process, and by every PostgreSQL process.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
pg_ticks() { local p t=0; for p in $(pgrep -u postgres); do t=$((t + $(ticks "$p" 2>/dev/null || echo 0))); done; echo "$t"; }
requests() { awk '/requests in/ { print $1 }' "$1"; }
# µs of CPU per read: ticks over requests.
per_read() { awk -v t="$1" -v r="$2" 'BEGIN { printf "%.1f", t * 10000 / r }'; }
p99() { awk '$1 == "99%" { print $2 }' "$1"; }
read_path() { echo "/api/v1/agents/$1/secrets/stripe_api_key"; }

: >"$OUT/reads.txt"
for round in $(seq 1 "$ROUNDS"); do
    log "reads, round $round/$ROUNDS ($DURATION each, 32 connections)"
    s_before=$(ticks "$SQLITE_PID")
    wrk -t2 -c32 -d"$DURATION" --latency -H "Authorization: Bearer $S_KEY" "$SQLITE$(read_path "$S_AGENT")" >"$OUT/sqlite.r$round.txt"
    s_used=$(($(ticks "$SQLITE_PID") - s_before))
    p_before=$(ticks "$PG1_PID") db_before=$(pg_ticks)
    wrk -t2 -c32 -d"$DURATION" --latency -H "Authorization: Bearer $P_KEY" "$PG1$(read_path "$P_AGENT")" >"$OUT/pg1.r$round.txt"
    p_used=$(($(ticks "$PG1_PID") - p_before)) db_used=$(($(pg_ticks) - db_before))
    wrk -t1 -c16 -d"$DURATION" --latency -H "Authorization: Bearer $Q_KEY" "$PG2A$(read_path "$Q_AGENT")" >"$OUT/pg2a.r$round.txt" &
    first=$!
    wrk -t1 -c16 -d"$DURATION" --latency -H "Authorization: Bearer $Q_KEY" "$PG2B$(read_path "$Q_AGENT")" >"$OUT/pg2b.r$round.txt"
    wait "$first"
    for f in sqlite pg1 pg2a pg2b; do
        grep -Eq 'Non-2xx|Socket errors' "$OUT/$f.r$round.txt" && die "wrk saw errors in $OUT/$f.r$round.txt"
    done
    printf 'round=%s sqlite=%s pg1=%s pg2=%s sqlite_p99=%s pg1_p99=%s pg2a_p99=%s pg2b_p99=%s\n' "$round" \
        "$(rps "$OUT/sqlite.r$round.txt")" "$(rps "$OUT/pg1.r$round.txt")" \
        "$(awk -v a="$(rps "$OUT/pg2a.r$round.txt")" -v b="$(rps "$OUT/pg2b.r$round.txt")" 'BEGIN { print a + b }')" \
        "$(p99 "$OUT/sqlite.r$round.txt")" "$(p99 "$OUT/pg1.r$round.txt")" \
        "$(p99 "$OUT/pg2a.r$round.txt")" "$(p99 "$OUT/pg2b.r$round.txt")" | tee -a "$OUT/reads.txt"
    # CPU per read: agentvault's own, and on PostgreSQL also the database's (same machine).
    printf 'round=%s cpu_us_per_read sqlite=%s pg1_agentvault=%s pg1_postgresql=%s\n' "$round" \
        "$(per_read "$s_used" "$(requests "$OUT/sqlite.r$round.txt")")" \
        "$(per_read "$p_used" "$(requests "$OUT/pg1.r$round.txt")")" \
        "$(per_read "$db_used" "$(requests "$OUT/pg1.r$round.txt")")" | tee -a "$OUT/reads.txt"
done

log "writes and propagation ($CHANGES changes)"
python3 "$ROOT/bench/propagation.py" --token "$ADMIN_TOKEN" --changes "$CHANGES" \
    --sqlite "$SQLITE" --sqlite-ws "$S_WS" --pg "$PG1" --pg-ws "$P_WS" \
    --a "$PG2A" --b "$PG2B" --ab-ws "$Q_WS" --ab-agent "$Q_AGENT" --ab-key "$Q_KEY" | tee "$OUT/changes.txt"
log "results in $OUT (reads.txt, changes.txt)"
