#!/usr/bin/env bash
# Compares two builds of agentvault on the agent read path, side by side: both servers run at
# once, and wrk measures them in alternation (A, B, A, B, ...) so that whatever else the machine
# does falls on both alike. Prints each round and the medians (requests/s, with B/A, and p99).
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

# setup URL: one agent, one secret and a key on a started server; prints "KEY PATH".
setup() {
    python3 - "$1" "$TOKEN" <<'PY'
import json, sys, urllib.request
url, token = sys.argv[1], sys.argv[2]
def api(method, path, body=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
ws = api("GET", "/api/v1/workspaces")["items"][0]["id"]
agent = api("POST", f"/api/v1/workspaces/{ws}/agents", {"name": "bench agent"})["id"]
api("POST", f"/api/v1/workspaces/{ws}/secrets", {"name": "stripe_api_key", "value": "sk_live_51HbenchAbCdEf", "agents": [agent]})
key = api("POST", f"/api/v1/workspaces/{ws}/api-keys", {"name": "bench", "agents": "all"})["token"]
print(key, f"/api/v1/agents/{agent}/secrets/stripe_api_key")
PY
}

BIN_A=$(binary_of "$1")
BIN_B=$(binary_of "$2")
start_server a "$BIN_A" AGENTVAULT_BOOTSTRAP_TOKEN="$TOKEN" AGENTVAULT_LOG=warn && URL_A=$URL
start_server b "$BIN_B" AGENTVAULT_BOOTSTRAP_TOKEN="$TOKEN" AGENTVAULT_LOG=warn && URL_B=$URL
read -r KEY_A PATH_A < <(setup "$URL_A")
read -r KEY_B PATH_B < <(setup "$URL_B")

measure() { # url key path connections -> "requests/s p99-in-ms"
    local threads=$(( $4 < 2 ? 1 : 2 ))
    wrk -t"$threads" -c"$4" -d1s -H "Authorization: Bearer $2" "$1$3" >/dev/null
    wrk -t"$threads" -c"$4" -d"$DURATION" --latency -H "Authorization: Bearer $2" "$1$3" | awk '
        /^ +99%/ { v = $2; f = 1; if (v ~ /us$/) f = 0.001; else if (v ~ /ms$/) f = 1; else if (v ~ /s$/) f = 1000
                   sub(/[a-z]+$/, "", v); p99 = v * f }
        /^Requests\/sec/ { rps = $2 }
        END { printf "%s %.3f\n", rps, p99 }'
}

echo "A: $1 ($BIN_A)"
echo "B: $2 ($BIN_B)"
declare -A RESULTS P99
for round in $(seq 1 "$ROUNDS"); do
    for c in $CONNECTIONS; do
        read -r a pa < <(measure "$URL_A" "$KEY_A" "$PATH_A" "$c")
        read -r b pb < <(measure "$URL_B" "$KEY_B" "$PATH_B" "$c")
        echo "round $round, $c connection(s): A $a req/s (p99 $pa ms), B $b req/s (p99 $pb ms)"
        RESULTS[a$c]+="$a "
        RESULTS[b$c]+="$b "
        P99[a$c]+="$pa "
        P99[b$c]+="$pb "
    done
done
for c in $CONNECTIONS; do
    python3 - "$c" "${RESULTS[a$c]}" "${RESULTS[b$c]}" "${P99[a$c]}" "${P99[b$c]}" <<'PY'
import statistics, sys
c = sys.argv[1]
a, b, pa, pb = ([float(x) for x in arg.split()] for arg in sys.argv[2:6])
ma, mb = statistics.median(a), statistics.median(b)
print(f"{c} connection(s): median A {ma:,.0f} req/s, B {mb:,.0f} req/s, B/A {mb / ma:.3f}; "
      f"median p99 A {statistics.median(pa):.3f} ms, B {statistics.median(pb):.3f} ms")
PY
done
