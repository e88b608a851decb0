#!/usr/bin/env python3
"""Egress proxy benchmark driver (see bench/README.md, "Egress").

Talks to two running agentvault servers, one whose workers run in bubblewrap and one without it
(`--sandbox off`), both started with `--egress-allow 127.0.0.1:UPSTREAM_PORT`, and a local HTTPS
upstream (keep-alive, its own certificate). It measures, inside one warm function:

- a request on a kept-alive HTTPS connection straight to the upstream (unsandboxed server only:
  the function skips the proxy with `trust_env = False`) and the same request tunnelled through
  the egress proxy (CONNECT), alternating, so that both see the same machine: the p50 overhead;
- the same tunnelled request from a sandboxed worker (its own network namespace);
- a plain-HTTP request forwarded by the proxy on a kept-alive connection;
- cold invocations (a new worker in its own network namespace each time) on the sandboxed server.

Usage: egress.py ADMIN_TOKEN SANDBOXED_URL UNSANDBOXED_URL UPSTREAM_PORT PLAIN_PORT OUT_JSON
"""

import http.client
import json
import statistics
import sys
import time
import urllib.parse

N = 500
COLD_N = 25

TIMED = """
import time, requests, urllib3
urllib3.disable_warnings()
_sessions = {}

def timed(conv, url: str, n: int, direct: bool, secret: str = ""):
    s = _sessions.get((url, direct, secret))
    if s is None:
        s = requests.Session()
        s.verify = False
        if direct:
            s.trust_env = False
        _sessions[(url, direct, secret)] = s
    headers = {}
    if secret:
        headers["Authorization"] = "Bearer " + conv.utils.get_secret(secret)
    elif direct:
        headers["Authorization"] = "Bearer sk_live_the_same_length_as_the_real_one_42"
    # verify=False per request: REQUESTS_CA_BUNDLE (set in workers) overrides a session's verify.
    s.get(url, headers=headers, verify=False).content  # opens (and keeps) the connection
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = s.get(url, headers=headers, verify=False)
        r.content
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.status_code
    return {"ms": out}
"""


class Server:
    def __init__(self, url, token):
        u = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port)
        self.token = token

    def call(self, method, path, body=None, expect=200):
        headers = {"Authorization": "Bearer " + self.token, "Content-Type": "application/json"}
        self.conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status != expect:
            raise SystemExit(f"{method} {path}: {r.status} {data[:300]!r}")
        return json.loads(data) if data else None

    def setup(self, name):
        ws = self.call("GET", "/api/v1/workspaces")["items"][0]["id"]
        agent = self.call("POST", f"/api/v1/workspaces/{ws}/agents", {"name": name}, 201)["id"]
        params = [{"name": "url", "type": "string"}, {"name": "n", "type": "integer"}, {"name": "direct", "type": "boolean"},
                  {"name": "secret", "type": "string"}]
        body = {"name": "timed", "description": "bench", "parameters": params, "code": TIMED, "timeout_ms": 60000}
        self.call("POST", f"/api/v1/workspaces/{ws}/agents/{agent}/functions", body, 201)
        return ws, agent

    def injected_secret(self, ws, agent, host):
        self.call("POST", f"/api/v1/workspaces/{ws}/secrets",
                  {"name": "bench_key", "value": "sk_live_the_same_length_as_the_real_one_42", "agents": [agent]}, 201)
        self.call("PUT", f"/api/v1/workspaces/{ws}/secrets/bench_key/injection", {"injected_only": True, "hosts": [host]})

    def timed(self, ws, agent, url, n, direct, secret=""):
        body = {"args": {"url": url, "n": n, "direct": direct, "secret": secret}}
        out = self.call("POST", f"/api/v1/workspaces/{ws}/agents/{agent}/functions/timed/invoke", body)
        if out["error"]:
            raise SystemExit(json.dumps(out["error"]))
        return out["result"]["ms"]


def p(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    token, sandboxed, plain, up_port, plain_port, out_path = sys.argv[1:7]
    https = f"https://127.0.0.1:{up_port}/ping"
    http_url = f"http://127.0.0.1:{plain_port}/ping"
    s, u = Server(sandboxed, token), Server(plain, token)
    s_ws, s_agent = s.setup("bench sandboxed")
    u_ws, u_agent = u.setup("bench unsandboxed")
    u.injected_secret(u_ws, u_agent, f"127.0.0.1:{up_port}")
    s.injected_secret(s_ws, s_agent, f"127.0.0.1:{up_port}")
    direct, proxied, injected, sandboxed_tunnel, sandboxed_injected, forwarded = [], [], [], [], [], []
    for _ in range(10):
        direct += u.timed(u_ws, u_agent, https, N // 10, True)
        proxied += u.timed(u_ws, u_agent, https, N // 10, False)
        injected += u.timed(u_ws, u_agent, https, N // 10, False, "bench_key")
        sandboxed_injected += s.timed(s_ws, s_agent, https, N // 10, False, "bench_key")
        sandboxed_tunnel += s.timed(s_ws, s_agent, https, N // 10, False)
        forwarded += s.timed(s_ws, s_agent, http_url, N // 10, False)
    # Cold starts of a function that imports nothing: each change of the agent's functions
    # replaces its workers, so the next invocation starts a new one.
    cold, cold_plain = [], []
    for server, ws, agent, into in ((s, s_ws, s_agent, cold), (u, u_ws, u_agent, cold_plain)):
        server.call("POST", f"/api/v1/workspaces/{ws}/agents/{agent}/functions",
                    {"name": "hello", "description": "bench", "parameters": [], "code": "def hello(conv):\n    return 'hi'\n"}, 201)
        for i in range(COLD_N):
            code = "def hello(conv):\n    return 'hi %d'\n" % i
            server.call("PUT", f"/api/v1/workspaces/{ws}/agents/{agent}/functions/hello",
                        {"description": "bench", "parameters": [], "code": code})
            t = time.perf_counter()
            out = server.call("POST", f"/api/v1/workspaces/{ws}/agents/{agent}/functions/hello/invoke", {"args": {}})
            assert out["cold"], out
            into.append((time.perf_counter() - t) * 1000)
    # The injected requests really were intercepted: each swap is counted.
    for server in (s, u):
        server.conn.request("GET", "/metrics")
        text = server.conn.getresponse().read().decode()
        line = next((l for l in text.splitlines() if l.startswith('agentvault_egress_injections_total{outcome="injected"}')), "")
        if not line or float(line.split()[-1]) < N:
            raise SystemExit("the injected requests were not injected: " + (line or "no injection counted"))
    result = {
        "direct_p50": p(direct, 0.5), "direct_p99": p(direct, 0.99),
        "proxied_p50": p(proxied, 0.5), "proxied_p99": p(proxied, 0.99),
        "overhead_p50": p(proxied, 0.5) - p(direct, 0.5),
        "injected_p50": p(injected, 0.5), "injected_p99": p(injected, 0.99),
        "injected_overhead_p50": p(injected, 0.5) - p(direct, 0.5),
        "sandboxed_injected_p50": p(sandboxed_injected, 0.5), "sandboxed_injected_p99": p(sandboxed_injected, 0.99),
        "sandboxed_tunnel_p50": p(sandboxed_tunnel, 0.5), "sandboxed_tunnel_p99": p(sandboxed_tunnel, 0.99),
        "forwarded_http_p50": p(forwarded, 0.5), "forwarded_http_p99": p(forwarded, 0.99),
        "cold_p50": p(cold, 0.5), "cold_p99": p(cold, 0.99),
        "cold_plain_p50": p(cold_plain, 0.5), "cold_plain_p99": p(cold_plain, 0.99), "n": len(direct),
    }
    json.dump(result, open(out_path, "w"), indent=1)
    print(json.dumps(result, indent=1))


main()
