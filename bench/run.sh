#!/usr/bin/env bash
# Benchmarks the agent secret-read hot path (GET /api/v1/agents/{id}/secrets/{name}) of
# agentvault against the floor server, measured side by side in the same run, then again on a
# vault seeded with many agents and secrets. See bench/README.md; results go to bench/out/.
#
#   bash bench/run.sh
#
# Settings come from the environment (CARGO_TARGET_DIR, BENCH_*), described with their defaults
# in bench/README.md. All traffic goes to 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${BENCH_OUT:-$ROOT/bench/out}
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
ROUNDS=${BENCH_ROUNDS:-3}
AGENTS=${BENCH_AGENTS:-1000}
SECRETS=${BENCH_SECRETS:-100000}
GRANTS=${BENCH_GRANTS:-3}
SEED_THREADS=${BENCH_SEED_THREADS:-8}
BUILD=${BENCH_BUILD:-1}
QUIET_WAIT=${BENCH_QUIET_WAIT:-300}
ATTEMPTS=${BENCH_ATTEMPTS:-3}
REV=${BENCH_REV:-}
# A round is disturbed when other processes take more than this share of one core (%).
QUIET_PCT=10

# The secret every case reads. bench/floor.rs answers with exactly this body.
SECRET_NAME=stripe_api_key
SECRET_VALUE=sk_live_51HbenchAbCdEfGhIjKlMnOpQrStUvWxYz0123456789
EXPECTED_BODY="{\"name\":\"$SECRET_NAME\",\"type\":\"single\",\"value\":\"$SECRET_VALUE\"}"

ADMIN_TOKEN="bench_admin_$(od -An -tx1 -N18 /dev/urandom | tr -d ' \n')"
source "$ROOT/bench/lib.sh"
bench_init bench

# Stops one server started by this script and forgets it.
stop() {
    local pid=$1 kept=() p
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
    PIDS=("${kept[@]}")
}

# Starts agentvault on a fresh data directory; sets VAULT_PID and VAULT_URL.
start_vault() {
    start_server "$1" "$TARGET_DIR/release/agentvault" AGENTVAULT_BOOTSTRAP_TOKEN="$ADMIN_TOKEN"
    VAULT_PID=$PID VAULT_URL=$URL
}

# An admin API call; prints the response body, fails on any non-2xx answer.
api() {
    local method=$1 path=$2 data=${3:-}
    curl -sS --fail-with-body -X "$method" -H "Authorization: Bearer $ADMIN_TOKEN" \
        -H 'Content-Type: application/json' ${data:+--data "$data"} "$VAULT_URL$path" \
        || die "$method $path failed"
}

# Reads one field of the JSON object on stdin (a dotted path such as items.0.id).
field() {
    python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$1"
}

# Creates the agent, the secret it reads and an API key in the default workspace; sets WS,
# AGENT_ID, API_KEY and READ_PATH.
setup_reader() {
    WS=$(api GET /api/v1/workspaces | field items.0.id)
    AGENT_ID=$(api POST "/api/v1/workspaces/$WS/agents" '{"name":"bench agent"}' | field id)
    api POST "/api/v1/workspaces/$WS/secrets" \
        "{\"name\":\"$SECRET_NAME\",\"value\":\"$SECRET_VALUE\",\"agents\":[\"$AGENT_ID\"]}" >/dev/null
    API_KEY=$(api POST "/api/v1/workspaces/$WS/api-keys" '{"name":"bench","agents":"all"}' | field token)
    READ_PATH=/api/v1/agents/$AGENT_ID/secrets/$SECRET_NAME
}

# Checks that a server answers the read with 200 and exactly the expected body.
verify_read() {
    local url=$1 body status
    body=$(curl -sS -H "Authorization: Bearer $API_KEY" -w '\n%{http_code}' "$url")
    status=${body##*$'\n'}
    body=${body%$'\n'*}
    [[ $status == 200 ]] || die "GET $url answered $status: $body"
    [[ $body == "$EXPECTED_BODY" ]] || die "GET $url answered an unexpected body: $body"
}

# Fails if wrk saw anything but successful answers.
check_wrk() {
    if grep -Eq 'Non-2xx or 3xx responses|Socket errors' "$1"; then
        cat "$1" >&2
        die "wrk saw errors (above); these numbers would not measure successful reads"
    fi
}

# Prints the value of one agentvault metric.
metric() {
    curl -sS -H "Authorization: Bearer $ADMIN_TOKEN" "$VAULT_URL/metrics" \
        | awk -v m="$1" '$1 == m { print $2; found = 1 } END { if (!found) exit 1 }' \
        || die "metric $1 not found"
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

record() { printf '%s=%s\n' "$1" "$2" >>"$OUT/run.txt"; }

# CPU time in clock ticks: of the whole machine (busy, including time stolen by the host), of
# one process (`process_ticks`, lib.sh), and of this script's finished children (wrk once it
# has exited).
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
children_ticks() { awk '{ print $16 + $17 }' "/proc/$$/stat"; }

# Waits (up to QUIET_WAIT seconds) until the machine has been idle for two seconds: under
# QUIET_PCT% of one core busy, with the servers idle between runs.
wait_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT)) before told=
    while :; do
        before=$(machine_ticks)
        sleep 2
        (($(machine_ticks) - before < 2 * QUIET_PCT)) && return
        if ((SECONDS >= deadline)); then
            log "the machine is still busy after ${QUIET_WAIT}s; measuring anyway"
            return
        fi
        [[ -n $told ]] || { log "waiting for other work on the machine to finish"; told=1; }
    done
}

# measure CASE ROUND SERVER_PID URL CONNECTIONS THREADS [vault]: a warm-up, then the measured
# wrk run into OUT/wrk/CASE.rROUND.txt. If other processes (or the host) took more than
# QUIET_PCT% of a core during it, the round is measured again, up to ATTEMPTS times; the report
# flags a round that never ran on a quiet machine. For the vault, also records the audit commits
# the run caused.
measure() {
    local case=$1 round=$2 pid=$3 url=$4 conns=$5 threads=$6 vault=${7:-}
    local run=$case.r$round attempt records batches machine server wrk_cpu started elapsed other
    local wrk=(wrk "-t$threads" "-c$conns" -H "Authorization: Bearer $API_KEY")
    for attempt in $(seq 1 "$ATTEMPTS"); do
        wait_quiet
        log "$case, round $round/$ROUNDS: $conns connection(s), warm-up $WARMUP then $DURATION"
        "${wrk[@]}" "-d$WARMUP" "$url" >"$OUT/wrk/$run.warmup.txt"
        check_wrk "$OUT/wrk/$run.warmup.txt"
        if [[ -n $vault ]]; then
            records=$(metric agentvault_audit_records_total)
            batches=$(metric agentvault_audit_batches_total)
        fi
        machine=$(machine_ticks) server=$(process_ticks "$pid") wrk_cpu=$(children_ticks)
        started=$(date +%s%N)
        "${wrk[@]}" "-d$DURATION" --latency "$url" >"$OUT/wrk/$run.txt"
        elapsed=$(($(date +%s%N) - started))
        machine=$(($(machine_ticks) - machine)) server=$(($(process_ticks "$pid") - server))
        wrk_cpu=$(($(children_ticks) - wrk_cpu))
        check_wrk "$OUT/wrk/$run.txt"
        if [[ -n $vault ]]; then
            records=$(($(metric agentvault_audit_records_total) - records))
            batches=$(($(metric agentvault_audit_batches_total) - batches))
        fi
        # Ticks are 1/100 s: the share of one core the rest of the machine used, in percent.
        other=$(((machine - server - wrk_cpu) * 1000000000 / elapsed))
        grep -E 'Requests/sec|^ +(50|99)%' "$OUT/wrk/$run.txt" | tr -s ' ' | paste -sd' ' >&2
        ((other > QUIET_PCT)) || break
        log "other work took ${other}% of a core during $case round $round (attempt $attempt/$ATTEMPTS)"
    done
    record "other_cpu_pct_$run" "$other"
    record "server_ticks_$run" "$server"
    if [[ -n $vault ]]; then
        record "audit_records_$run" "$records"
        record "audit_batches_$run" "$batches"
    fi
}

# --- preparation -------------------------------------------------------------------------------

for var in $(compgen -v AGENTVAULT_); do unset "$var"; done
if ! command -v wrk >/dev/null; then
    log "installing wrk"
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
for tool in curl python3; do command -v "$tool" >/dev/null || die "$tool is required"; done

rm -rf "$OUT"
mkdir -p "$OUT/wrk"
# The source measured: the working tree, or a clean export of BENCH_REV.
if [[ -n $REV ]]; then
    SRC=$WORK/src
    # Its own target dir: cargo judges freshness by file dates, and an export must never be
    # mistaken for the working tree or the other way round.
    TARGET_DIR=$TARGET_DIR/bench-rev
    mkdir -p "$SRC"
    # -m: files dated now, so cargo never takes them for older than an earlier build.
    git -C "$ROOT" archive "$REV" | tar -x -m -C "$SRC"
    record commit "$(git -C "$ROOT" rev-parse --short "$REV^{commit}")"
    record uncommitted ""
else
    SRC=$ROOT
    record commit "$(git -C "$ROOT" rev-parse --short HEAD)"
    # Uncommitted changes, as the top two levels of the paths they touch ("" for a clean tree).
    record uncommitted "$(git -C "$ROOT" status --porcelain | cut -c4- | cut -d/ -f1-2 | sort -u | paste -sd' ')"
fi
record date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
record nproc "$(nproc)"
record cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
record kernel "$(uname -r)"
record wrk "$(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2)"
record duration "$DURATION"
record rounds "$ROUNDS"

if [[ $BUILD != 0 ]]; then
    log "building (release, target dir $TARGET_DIR)"
    (cd "$SRC" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p agentvault -p agentvault-bench)
fi
for bin in agentvault floor audit_stage; do
    [[ -x $TARGET_DIR/release/$bin ]] || die "$TARGET_DIR/release/$bin is missing; build it or drop BENCH_BUILD=0"
done
record binary_built "$(date -u -r "$TARGET_DIR/release/agentvault" +%Y-%m-%dT%H:%M:%SZ)"

# --- one secret: agentvault next to the floor ---------------------------------------------------

log "agentvault with one agent, one secret, one API key"
start_vault single
setup_reader
verify_read "$VAULT_URL$READ_PATH"

FLOOR_TOKEN=$API_KEY "$TARGET_DIR/release/floor" 127.0.0.1:0 >"$WORK/floor.stdout" 2>&1 &
FLOOR_PID=$!
PIDS+=("$FLOOR_PID")
wait_url "$WORK/floor.stdout" "$FLOOR_PID" floor
FLOOR_URL=$URL
verify_read "$FLOOR_URL$READ_PATH"

# Bytes on disk per read record: the data directory's growth over the measured runs. The audit
# journal's files are left out: they are allocated whole when they are created (a few MiB that
# hold the records not yet moved) and removed at a clean stop.
data_bytes() { du -sb --exclude='*-audit-journal.*' "$1" | cut -f1; }
DATA_BYTES_BEFORE=$(data_bytes "$WORK/single/data")
RECORDS_BEFORE=$(metric agentvault_audit_records_total)

# Rounds alternate between the two servers, so a slow spell of the machine hits both.
for round in $(seq 1 "$ROUNDS"); do
    measure floor_c32 "$round" "$FLOOR_PID" "$FLOOR_URL$READ_PATH" 32 2
    measure vault_c32 "$round" "$VAULT_PID" "$VAULT_URL$READ_PATH" 32 2 vault
done
for round in $(seq 1 "$ROUNDS"); do
    measure floor_c1 "$round" "$FLOOR_PID" "$FLOOR_URL$READ_PATH" 1 1
    measure vault_c1 "$round" "$VAULT_PID" "$VAULT_URL$READ_PATH" 1 1 vault
done
record rss_kb_single_after_load "$(rss_kb "$VAULT_PID")"
record audit_records_single "$(($(metric agentvault_audit_records_total) - RECORDS_BEFORE))"
stop "$FLOOR_PID"
stop "$VAULT_PID"
# After the server's stop, so that every record is in the database (its journal moved, the WAL
# checkpointed).
record data_bytes_single "$(($(data_bytes "$WORK/single/data") - DATA_BYTES_BEFORE))"

# --- the audit stage alone ---------------------------------------------------------------------

log "the audit pipeline's serial stage, without HTTP (bench/audit_stage.rs)"
wait_quiet
"$TARGET_DIR/release/audit_stage" 1000000 32 | tee "$OUT/audit_stage.txt" >&2
sed -n 's/^\([a-z_]*\)=\(.*\)$/audit_stage_\1=\2/p' "$OUT/audit_stage.txt" >>"$OUT/run.txt"

# --- a seeded vault ----------------------------------------------------------------------------

log "agentvault seeded with $AGENTS agents and $SECRETS secrets through the API"
start_vault seeded
setup_reader
python3 "$ROOT/bench/seed.py" --url "$VAULT_URL" --token "$ADMIN_TOKEN" --workspace "$WS" \
    --agents $((AGENTS - 1)) --secrets $((SECRETS - 1)) --grants "$GRANTS" \
    --include-agent "$AGENT_ID" --threads "$SEED_THREADS" >"$OUT/seed.json"
record seeded_agents "$(metric agentvault_agents)"
record seeded_secrets "$(metric agentvault_secrets)"
record rss_kb_seeded_after_seeding "$(rss_kb "$VAULT_PID")"
verify_read "$VAULT_URL$READ_PATH"

# The same order as above, so both vaults have taken the same load (and grown the same audit
# log) when each case runs.
for round in $(seq 1 "$ROUNDS"); do
    measure seeded_c32 "$round" "$VAULT_PID" "$VAULT_URL$READ_PATH" 32 2 vault
done
for round in $(seq 1 "$ROUNDS"); do
    measure seeded_c1 "$round" "$VAULT_PID" "$VAULT_URL$READ_PATH" 1 1 vault
done
record rss_kb_seeded_after_load "$(rss_kb "$VAULT_PID")"
stop "$VAULT_PID"

# --- report ------------------------------------------------------------------------------------

log "results (also in $OUT/results.json)"
python3 "$ROOT/bench/report.py" "$OUT" | tee "$OUT/results.md"
