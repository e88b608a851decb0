#!/usr/bin/env bash
# Compares two builds of agentvault on the agent read path, side by side: both servers run at
# once, and wrk measures them in alternation (A, B, A, B, ...) so that whatever else the machine
# does falls on both alike. Prints each round and the medians (requests/s, with B/A, p99, and the
# server's CPU µs per read from /proc/PID/stat).
#
#   bash bench/ab.sh REV_OR_BINARY_A REV_OR_BINARY_B
#
# An argument that is an executable file is used as it is; anything else is a git revision,
# built in release from a clean `git archive` export under $CARGO_TARGET_DIR/ab-<commit>.
# Settings: AB_ROUNDS (6), AB_DURATION (5s), AB_CONNECTIONS ("32 1"). All traffic goes to 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ROUNDS=${AB_ROUNDS:-6}
DURATION=${AB_DURATION:-5s}
CONNECTIONS=${AB_CONNECTIONS:-32 1}
[[ $# == 2 ]] || { echo "usage: bash bench/ab.sh REV_OR_BINARY_A REV_OR_BINARY_B" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

source "$ROOT/bench/lib.sh"
bench_init ab
TOKEN="ab_admin_$(od -An -tx1 -N18 /dev/urandom | tr -d ' \n')"

# Prints the path of the agentvault binary for a revision or a binary path.
binary_of() {
    if [[ -x $1 && -f $1 ]]; then echo "$1"; return; fi
    local commit src
    commit=$(git -C "$ROOT" rev-parse --verify "$1^{commit}")
    src=$TARGET_DIR/ab-$commit
    if [[ ! -x $src/target/release/agentvault ]]; then
        rm -rf "$src" && mkdir -p "$src"
        git -C "$ROOT" archive "$commit" | tar -x -C "$src"
        (cd "$src" && CARGO_TARGET_DIR=$src/target cargo build --release -q -p agentvault) >&2
    fi
    echo "$src/target/release/agentvault"
}

BIN_A=$(binary_of "$1")
BIN_B=$(binary_of "$2")
start_server a "$BIN_A" AGENTVAULT_BOOTSTRAP_TOKEN="$TOKEN" AGENTVAULT_LOG=warn && URL_A=$URL PID_A=$PID
start_server b "$BIN_B" AGENTVAULT_BOOTSTRAP_TOKEN="$TOKEN" AGENTVAULT_LOG=warn && URL_B=$URL PID_B=$PID
read -r KEY_A PATH_A _ < <(setup_read "$URL_A" "$TOKEN")
read -r KEY_B PATH_B _ < <(setup_read "$URL_B" "$TOKEN")

measure() { # url key path connections server-pid -> "requests/s p99-in-ms CPU-µs-per-read"
    local threads=$(( $4 < 2 ? 1 : 2 )) before
    wrk -t"$threads" -c"$4" -d1s -H "Authorization: Bearer $2" "$1$3" >/dev/null
    before=$(process_ticks "$5")
    wrk -t"$threads" -c"$4" -d"$DURATION" --latency -H "Authorization: Bearer $2" "$1$3" | awk -v before="$before" -v pid="$5" '
        /^ +99%/ { v = $2; f = 1; if (v ~ /us$/) f = 0.001; else if (v ~ /ms$/) f = 1; else if (v ~ /s$/) f = 1000
                   sub(/[a-z]+$/, "", v); p99 = v * f }
        /requests in/ { n = $1 }
        /^Requests\/sec/ { rps = $2 }
        END { getline stat < ("/proc/" pid "/stat"); split(stat, s, " ")
              printf "%s %.3f %.2f\n", rps, p99, (s[14] + s[15] - before) * 10000 / n }'
}

echo "A: $1 ($BIN_A)"
echo "B: $2 ($BIN_B)"
declare -A RESULTS P99 CPU
for round in $(seq 1 "$ROUNDS"); do
    for c in $CONNECTIONS; do
        read -r a pa ca < <(measure "$URL_A" "$KEY_A" "$PATH_A" "$c" "$PID_A")
        read -r b pb cb < <(measure "$URL_B" "$KEY_B" "$PATH_B" "$c" "$PID_B")
        echo "round $round, $c connection(s): A $a req/s (p99 $pa ms, $ca µs CPU/read), B $b req/s (p99 $pb ms, $cb µs CPU/read)"
        RESULTS[a$c]+="$a "
        RESULTS[b$c]+="$b "
        P99[a$c]+="$pa "
        P99[b$c]+="$pb "
        CPU[a$c]+="$ca "
        CPU[b$c]+="$cb "
    done
done
for c in $CONNECTIONS; do
    python3 - "$c" "${RESULTS[a$c]}" "${RESULTS[b$c]}" "${P99[a$c]}" "${P99[b$c]}" "${CPU[a$c]}" "${CPU[b$c]}" <<'PY'
import statistics, sys
c = sys.argv[1]
a, b, pa, pb, ca, cb = ([float(x) for x in arg.split()] for arg in sys.argv[2:8])
ma, mb = statistics.median(a), statistics.median(b)
print(f"{c} connection(s): median A {ma:,.0f} req/s, B {mb:,.0f} req/s, B/A {mb / ma:.3f}; "
      f"median p99 A {statistics.median(pa):.3f} ms, B {statistics.median(pb):.3f} ms; "
      f"median CPU per read A {statistics.median(ca):.2f} µs, B {statistics.median(cb):.2f} µs")
PY
done
