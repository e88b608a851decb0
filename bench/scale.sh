#!/usr/bin/env bash
# How the agent read path scales with cores: the server pinned to N cores (taskset), the load
# generator (wrk) pinned to the others, for N = 1, 2, 4, 8, … up to half the machine, agentvault
# (agent read with audit on) and the floor server side by side at each N. Prints, per N and server:
# requests/s, the server's CPU µs per read (from /proc/PID/stat) and how busy its N cores were.
#
#   bash bench/scale.sh [AGENTVAULT_BIN [FLOOR_BIN]]
#
# Needs nothing but the two binaries, wrk, taskset and a shell (no compiler, no Python, no curl):
# agentvault's own terminal client sets up the agent, the secret and the API key, so the script
# runs as it stands on a machine that only received the binaries. Defaults: target/release/
# agentvault and target/release/floor next to this script.
#
#   SCALE_CORES="1 2 4 8"   the Ns to measure (default: 1 2 4 … up to half of nproc)
#   SCALE_DURATION=10       seconds per measured run (after a 2 s warm-up)
#   SCALE_CONNECTIONS=32    wrk connections at N = 1 and 2; 16 × N above
#   SCALE_LABELS="a b"      with SCALE_BINS="bin1 bin2": measure several agentvault builds at each N
#   WRK=wrk                 the load generator
#
# Results: one line per N and server on stdout, and SCALE_OUT (default bench/out/scale) gets
# the raw wrk outputs and a results.tsv.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${1:-$HERE/../target/release/agentvault}
FLOOR=${2:-$HERE/../target/release/floor}
WRK=${WRK:-wrk}
DURATION=${SCALE_DURATION:-10}
OUT=${SCALE_OUT:-$HERE/out/scale}
NPROC=$(nproc)
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)
SECRET_NAME=stripe_api_key
SECRET_VALUE=sk_live_51HbenchAbCdEfGhIjKlMnOpQrStUvWxYz0123456789
ADMIN_TOKEN="bench_admin_$(od -An -tx1 -N18 /dev/urandom | tr -d ' \n')"
source "$HERE/lib.sh"
bench_init scale

for tool in "$WRK" taskset; do command -v "$tool" >/dev/null || die "$tool is required"; done
[[ -x $BIN && -x $FLOOR ]] || die "binaries not found: $BIN $FLOOR (build with cargo build --release)"
for var in $(compgen -v AGENTVAULT_); do unset "$var"; done

if [[ -n ${SCALE_CORES:-} ]]; then
    read -r -a CORES <<<"$SCALE_CORES"
else
    CORES=()
    for ((n = 1; n <= NPROC / 2 || n == 1; n *= 2)); do CORES+=("$n"); done
fi
read -r -a LABELS <<<"${SCALE_LABELS:-agentvault}"
read -r -a BINS <<<"${SCALE_BINS:-$BIN}"
((${#LABELS[@]} == ${#BINS[@]})) || die "SCALE_LABELS and SCALE_BINS must name as many builds"
mkdir -p "$OUT"
: >"$OUT/results.tsv"

# The CPU ticks a process has used (user + system, all threads).
ticks() { local f; read -r -a f <"/proc/$1/stat"; echo $((f[13] + f[14])); }

# Prints the first value of a JSON field ("id" or "token") in the client's --json output.
json_field() { sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\([^\"]*\)\".*/\1/p" | head -n1; }

# run LABEL N PID URL PATH TOKEN LOAD_CPUS: a warm-up, then a measured wrk run; appends a line.
run() {
    local label=$1 n=$2 pid=$3 url=$4 path=$5 token=$6 load=$7 threads conns before started elapsed used rps
    threads=$(($(tr ',' '\n' <<<"$load" | awk -F- '{ s += (NF == 2 ? $2 - $1 + 1 : 1) } END { print s }')))
    conns=${SCALE_CONNECTIONS:-$((n <= 2 ? 32 : 16 * n))}
    ((conns >= threads)) || conns=$threads
    local wrk=(taskset -c "$load" "$WRK" "-t$threads" "-c$conns" -H "Authorization: Bearer $token")
    "${wrk[@]}" -d2 "$url$path" >/dev/null
    before=$(ticks "$pid")
    started=$(date +%s%N)
    "${wrk[@]}" "-d$DURATION" --latency "$url$path" >"$OUT/$label.n$n.txt"
    elapsed=$(($(date +%s%N) - started))
    used=$(($(ticks "$pid") - before))
    if grep -Eq 'Non-2xx or 3xx responses|Socket errors' "$OUT/$label.n$n.txt"; then
        cat "$OUT/$label.n$n.txt" >&2
        die "wrk saw errors against $label at N=$n"
    fi
    rps=$(awk '/^Requests\/sec/ { printf "%d", $2 }' "$OUT/$label.n$n.txt")
    local p50 p99 requests
    p50=$(awk '$1 == "50%" { print $2 }' "$OUT/$label.n$n.txt")
    p99=$(awk '$1 == "99%" { print $2 }' "$OUT/$label.n$n.txt")
    requests=$(awk '/requests in/ { print $1 }' "$OUT/$label.n$n.txt")
    # µs of CPU per request, and the share of the N cores the server kept busy (percent).
    local us busy
    us=$(awk -v t="$used" -v hz="$HZ" -v r="$requests" 'BEGIN { printf "%.1f", t / hz * 1e6 / r }')
    busy=$(awk -v t="$used" -v hz="$HZ" -v e="$elapsed" -v n="$n" 'BEGIN { printf "%.0f", t / hz / (e / 1e9) / n * 100 }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$label" "$rps" "$us" "$busy" "$p50" "$p99" "$conns" |
        tee -a "$OUT/results.tsv"
}

printf 'machine: %s cores, %s\n' "$NPROC" "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
printf 'N\tserver\treq/s\tcpu_us/read\tcores_busy_%%\tp50\tp99\tconnections\n'
for n in "${CORES[@]}"; do
    ((n < NPROC)) || die "N=$n leaves no core for the load generator (nproc $NPROC)"
    server="0-$((n - 1))"
    load="$n-$((NPROC - 1))"

    for i in "${!LABELS[@]}"; do
        label=${LABELS[$i]} dir=$WORK/$label.n$n
        SERVER_PREFIX="taskset -c $server" start_server "$label.n$n" "${BINS[$i]}" AGENTVAULT_BOOTSTRAP_TOKEN="$ADMIN_TOKEN"
        pid=$PID url=$URL
        client() { AGENTVAULT_ADDR=$url AGENTVAULT_TOKEN=$ADMIN_TOKEN taskset -c "$load" "${BINS[$i]}" "$@"; }
        agent=$(client agents create "bench agent" --json | json_field id)
        [[ -n $agent ]] || die "could not create the agent on $label"
        printf '%s' "$SECRET_VALUE" | client secrets create "$SECRET_NAME" --agent "$agent" --value-stdin >/dev/null
        token=$(client keys create bench --all-agents --json | json_field token)
        [[ -n $token ]] || die "could not create the API key on $label"
        run "$label" "$n" "$pid" "$url" "/api/v1/agents/$agent/secrets/$SECRET_NAME" "$token" "$load"
        du_kb=$(du -sk "$dir/data" | cut -f1)
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        printf '  (%s data directory after the run: %s KiB)\n' "$label" "$du_kb" >&2
    done

    FLOOR_TOKEN=avk_floor_scale_token taskset -c "$server" "$FLOOR" 127.0.0.1:0 >"$WORK/floor.n$n" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_url "$WORK/floor.n$n" "$pid" floor
    url=$URL
    run floor "$n" "$pid" "$url" "/api/v1/agents/agt_floor/secrets/$SECRET_NAME" avk_floor_scale_token "$load"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
done
