#!/usr/bin/env bash
# Benchmarks the egress proxy: a request from a warm function to a local HTTPS upstream on a
# kept-alive connection, straight (no sandbox, the function skips the proxy), tunnelled through
# the proxy, and with an injected credential (the proxy terminates TLS and swaps the header),
# alternating in one run; the same from a sandboxed worker; a forwarded
# plain-HTTP request; and cold starts of workers in their own network namespace. Nothing
# leaves the machine. Results go to bench/out/egress.json.
#
#   bash bench/egress.sh                    # release build of the working tree
#   BENCH_PROFILE=debug bash bench/egress.sh  # the debug build (cargo build), e.g. on a busy machine
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${BENCH_OUT:-$ROOT/bench/out}
PROFILE=${BENCH_PROFILE:-release}
ADMIN_TOKEN="bench_admin_$(od -An -tx1 -N18 /dev/urandom | tr -d ' \n')"
source "$ROOT/bench/lib.sh"
bench_init egbench

command -v bwrap >/dev/null || die "bubblewrap (bwrap) is required: apt-get install bubblewrap"
command -v openssl >/dev/null || die "openssl is required (the upstream's certificate)"
if [[ $PROFILE == release ]]; then
    (cd "$ROOT" && cargo build --release -p agentvault)
else
    (cd "$ROOT" && cargo build -p agentvault)
fi
BIN=$TARGET_DIR/$PROFILE/agentvault
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" status --porcelain | grep -q . && echo ' + uncommitted changes' || true)"

# The upstreams: HTTPS (a certificate of a CA of the bench's own, which the proxy trusts with
# --egress-ca) and plain HTTP, HTTP/1.1 keep-alive, on free loopback ports.
EC=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${EC[@]}" -days 1 -subj "/CN=bench CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req "${EC[@]}" -subj /CN=127.0.0.1 -keyout "$WORK/up.key" -out "$WORK/up.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$WORK/up.ext"
openssl x509 -req -in "$WORK/up.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial -days 1 \
    -extfile "$WORK/up.ext" -out "$WORK/up.pem" 2>/dev/null
cat > "$WORK/upstream.py" <<'PY'
import http.server, socketserver, ssl, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "4"); self.end_headers(); self.wfile.write(b"pong")
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
tls = S(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
plain = S(("127.0.0.1", 0), H)
print(tls.server_address[1], plain.server_address[1], flush=True)
threading.Thread(target=plain.serve_forever, daemon=True).start()
tls.serve_forever()
PY
python3 "$WORK/upstream.py" "$WORK/up.pem" "$WORK/up.key" >"$WORK/ports" &
PIDS+=("$!")
for _ in $(seq 1 50); do [[ -s $WORK/ports ]] && break; sleep 0.1; done
read -r UP PLAIN_UP <"$WORK/ports"

start() {
    start_server "$1" "$BIN" AGENTVAULT_BOOTSTRAP_TOKEN="$ADMIN_TOKEN" AGENTVAULT_SANDBOX="$2" AGENTVAULT_LOG=warn \
        AGENTVAULT_EGRESS_ALLOW="127.0.0.1:$UP,127.0.0.1:$PLAIN_UP" AGENTVAULT_EGRESS_CA="$WORK/ca.pem"
}

start sandboxed bwrap && SANDBOXED=$URL
start unsandboxed off && UNSANDBOXED=$URL
mkdir -p "$OUT"
python3 "$ROOT/bench/egress.py" "$ADMIN_TOKEN" "$SANDBOXED" "$UNSANDBOXED" "$UP" "$PLAIN_UP" "$OUT/egress.json" >/dev/null
python3 - "$OUT/egress.json" "$COMMIT" "$PROFILE" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"commit {sys.argv[2]}; {sys.argv[3]} build; {r['n']} requests per measure\n")
print("| measure | p50 ms | p99 ms | goal |")
print("| --- | ---: | ---: | --- |")
print(f"| HTTPS, kept-alive, straight to the upstream (no sandbox) | {r['direct_p50']:.3f} | {r['direct_p99']:.3f} | |")
print(f"| HTTPS, kept-alive, tunnelled through the proxy (no sandbox) | {r['proxied_p50']:.3f} | {r['proxied_p99']:.3f} | |")
print(f"| **proxy overhead, tunnelled HTTPS (p50 difference)** | {r['overhead_p50']:.3f} | | ≤ 1 |")
print(f"| HTTPS, kept-alive, with an injected credential (proxy terminates TLS, no sandbox) | {r['injected_p50']:.3f} | {r['injected_p99']:.3f} | |")
print(f"| **proxy overhead, injected HTTPS (p50 difference)** | {r['injected_overhead_p50']:.3f} | | ≤ 2 |")
print(f"| HTTPS tunnelled from a sandboxed worker | {r['sandboxed_tunnel_p50']:.3f} | {r['sandboxed_tunnel_p99']:.3f} | |")
print(f"| HTTPS with an injected credential from a sandboxed worker | {r['sandboxed_injected_p50']:.3f} | {r['sandboxed_injected_p99']:.3f} | |")
print(f"| plain HTTP forwarded by the proxy, sandboxed | {r['forwarded_http_p50']:.3f} | {r['forwarded_http_p99']:.3f} | |")
print(f"| cold invocation, new worker in bubblewrap with its own network namespace | {r['cold_p50']:.1f} | {r['cold_p99']:.1f} | ≤ 150 |")
print(f"| cold invocation, new worker without the sandbox | {r['cold_plain_p50']:.1f} | {r['cold_plain_p99']:.1f} | |")
PY
