#!/usr/bin/env bash
# Benchmarks agents' functions: warm and cold invocations end to end over HTTP and the cost of
# one get_secret, with workers in bubblewrap and without it, side by side in one run, next to
# the plain agent read path as the same run's baseline. See bench/README.md ("Functions");
# results go to bench/out/functions.json.
#
#   bash bench/functions.sh            # the working tree
#   BENCH_REV=HEAD bash bench/functions.sh   # a clean export of a commit
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${BENCH_OUT:-$ROOT/bench/out}
REV=${BENCH_REV:-}
ADMIN_TOKEN="bench_admin_$(od -An -tx1 -N18 /dev/urandom | tr -d ' \n')"
source "$ROOT/bench/lib.sh"
bench_init fnbench

command -v bwrap >/dev/null || die "bubblewrap (bwrap) is required: apt-get install bubblewrap"
command -v python3 >/dev/null || die "python3 is required"

SRC=$ROOT
if [[ -n $REV ]]; then
    SRC=$WORK/src
    TARGET_DIR=$TARGET_DIR/bench-rev
    mkdir -p "$SRC"
    git -C "$ROOT" archive "$REV" | tar -x -m -C "$SRC"
    COMMIT="$(git -C "$ROOT" rev-parse --short "$REV^{commit}") (clean export)"
else
    COMMIT="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" status --porcelain | grep -q . && echo ' + uncommitted changes')"
fi
(cd "$SRC" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p agentvault)

# start NAME SANDBOX: a server on a fresh data directory; sets URL.
start() {
    start_server "$1" "$TARGET_DIR/release/agentvault" AGENTVAULT_BOOTSTRAP_TOKEN="$ADMIN_TOKEN" \
        AGENTVAULT_SANDBOX="$2" AGENTVAULT_LOG=warn
}

start sandboxed bwrap && SANDBOXED=$URL
start unsandboxed off && PLAIN=$URL
mkdir -p "$OUT"
python3 "$ROOT/bench/functions.py" "$ADMIN_TOKEN" "$SANDBOXED" "$PLAIN" "$OUT/functions.json" >/dev/null
python3 - "$OUT/functions.json" "$COMMIT" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
s, u = r["sandboxed"], r["unsandboxed"]
print(f"commit {sys.argv[2]}; python3 {sys.version.split()[0]}\n")
print("| measure | bubblewrap | no sandbox | goal |")
print("| --- | ---: | ---: | --- |")
rows = [
    ("agent read path (baseline), p50 ms", "read_p50", ""),
    ("agent read path (baseline), p99 ms", "read_p99", ""),
    ("warm invocation, p50 ms", "warm_p50", "< 5"),
    ("warm invocation, p99 ms", "warm_p99", "< 20"),
    ("warm invocation, server-side p50 ms", "warm_server_p50", ""),
    ("one get_secret inside a function, ms", "get_secret_ms", "< 0.3"),
    ("cold invocation (new worker), p50 ms", "cold_p50", "< 300 (sandboxed)"),
    ("cold invocation (new worker), p99 ms", "cold_p99", ""),
]
for label, key, goal in rows:
    print(f"| {label} | {s[key]:.3f} | {u[key]:.3f} | {goal} |")
print(f"\nwarm p50 / read-path p50: {s['warm_p50'] / s['read_p50']:.1f}x (bubblewrap), "
      f"{u['warm_p50'] / u['read_p50']:.1f}x (no sandbox); samples: {s['warm_n']} warm, {s['cold_n']} cold per server")
print(f"get_secret per-round range: bubblewrap {s['get_secret_range'][0]:.4f}-{s['get_secret_range'][1]:.4f} ms, "
      f"no sandbox {u['get_secret_range'][0]:.4f}-{u['get_secret_range'][1]:.4f} ms")
EOF
