# Shared by the benchmark scripts (sourced): a temporary folder and the servers they start, both
# cleaned up at exit, and starting agentvault on a free loopback port.
#
#   source "$ROOT/bench/lib.sh"; bench_init NAME
#
# sets WORK (removed at exit) and PIDS (every process in it is stopped at exit).

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

bench_stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}

bench_cleanup() {
    bench_stop_all
    rm -rf "$WORK"
}

bench_init() {
    WORK=$(mktemp -d "/tmp/agentvault-$1.XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
}

# wait_url STDOUT PID NAME: waits until a server announces "… listening on http://ADDR" on its
# stdout (30 s at most) and sets URL.
wait_url() {
    for _ in $(seq 1 300); do
        URL=$(sed -n 's/^.* listening on \(http:\/\/[0-9.:]*\)$/\1/p' "$1" 2>/dev/null)
        [[ -n $URL ]] && return
        kill -0 "$2" 2>/dev/null || die "$3 exited before listening: $(tail -n 3 "$1" "${1%/*}/stderr" 2>/dev/null)"
        sleep 0.1
    done
    die "$3 did not start listening within 30 s"
}

# start_server NAME BINARY [VAR=VALUE ...]: `agentvault serve` on 127.0.0.1 (a free port) with a
# fresh data directory $WORK/NAME/data and the given environment, run under SERVER_PREFIX (a
# command such as `taskset -c 0-3`, if set); sets URL and PID. Call it directly, never in
# $(...): the cleanup must know every server it started.
start_server() {
    local name=$1 bin=$2 dir=$WORK/$1
    shift 2
    mkdir -p "$dir"
    # shellcheck disable=SC2086 # the prefix is words
    env "$@" ${SERVER_PREFIX:-} "$bin" serve --listen 127.0.0.1:0 --data-dir "$dir/data" >"$dir/stdout" 2>"$dir/stderr" &
    PID=$!
    PIDS+=("$PID")
    wait_url "$dir/stdout" "$PID" "$name"
}

# CPU time (user and system) of process $1 in clock ticks (1/100 s).
process_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# setup_read URL ADMIN_TOKEN: one agent, one secret and an API key on a started server; prints
# "KEY PATH AGENT WORKSPACE" (the key, the path of the agent's read of the secret, the agent's id
# and its workspace's).
setup_read() {
    python3 - "$1" "$2" <<'PY'
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
print(key, f"/api/v1/agents/{agent}/secrets/stripe_api_key", agent, ws)
PY
}
