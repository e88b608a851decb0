#!/usr/bin/env python3
"""Function-runtime benchmark driver (see bench/README.md, "Functions").

Talks to two running agentvault servers over HTTP, one whose workers run in bubblewrap and one
without it, and measures, alternating between them so that both see the same machine:

- the agent read path (GET /api/v1/agents/{id}/secrets/{name}): the baseline of the same run;
- warm invocations of a function that calls get_secret once and returns a string;
- the cost of one get_secret inside a running function: 1,000 calls in one invocation, less
  the same loop without the call, divided by 1,000 (server-side durations);
- cold invocations: a new agent each time, so each one starts a new worker.

Usage: functions.py ADMIN_TOKEN SANDBOXED_URL UNSANDBOXED_URL OUT_JSON
"""

import http.client
import json
import statistics
import sys
import time
import urllib.parse

WARM_N = 2000
WARM_WARMUP = 200
READ_N = 2000
LOOP_RUNS = 15
COLD_N = 25
ROUNDS = 3
SECRET = "sk_live_51HbenchFunctionsAbCdEfGhIjKlMnOpQrStUvWxYz"

PAY = """
def pay(conv: Conversation):
    key = conv.utils.get_secret("stripe_api_key")
    return "charged with " + key[:7]
"""
LOOP = """
def loop(conv: Conversation, n: int, read: bool):
    get = conv.utils.get_secret
    for _ in range(n):
        if read:
            get("stripe_api_key")
        else:
            len("stripe_api_key")
    return "done"
"""


class Server:
    def __init__(self, name, url, token):
        self.name = name
        u = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port)
        self.token = token

    def call(self, method, path, body=None, token=None, expect=200):
        headers = {"Authorization": "Bearer " + (token or self.token)}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        raw = r.read()
        if r.status != expect:
            raise SystemExit(f"{self.name}: {method} {path} answered {r.status}: {raw[:300]!r}")
        return json.loads(raw) if raw else None

    def setup(self):
        self.ws = self.call("GET", "/api/v1/workspaces")["items"][0]["id"]
        self.agent = self.new_agent("bench agent")
        self.call("POST", f"/api/v1/workspaces/{self.ws}/secrets",
                  {"name": "stripe_api_key", "value": SECRET, "agents": [self.agent]}, expect=201)
        self.key = self.call("POST", f"/api/v1/workspaces/{self.ws}/api-keys",
                             {"name": "bench", "agents": "all"}, expect=201)["token"]
        self.define(self.agent, "pay", PAY, [])
        self.define(self.agent, "loop", LOOP, [{"name": "n", "type": "integer"}, {"name": "read", "type": "boolean"}])
        self.cold_agents = 0

    def new_agent(self, name):
        return self.call("POST", f"/api/v1/workspaces/{self.ws}/agents", {"name": name}, expect=201)["id"]

    def define(self, agent, name, code, params):
        self.call("POST", f"/api/v1/workspaces/{self.ws}/agents/{agent}/functions",
                  {"name": name, "description": "bench", "parameters": params, "code": code}, expect=201)

    def grant(self, agent):
        # The secret's access list grows with each cold agent.
        cur = self.call("GET", f"/api/v1/workspaces/{self.ws}/secrets/stripe_api_key")
        self.call("PUT", f"/api/v1/workspaces/{self.ws}/secrets/stripe_api_key/access",
                  {"agents": cur["agents"] + [agent]})

    def invoke(self, agent, name, args=None):
        out = self.call("POST", f"/api/v1/workspaces/{self.ws}/agents/{agent}/functions/{name}/invoke",
                        {"args": args or {}})
        if out.get("error"):
            raise SystemExit(f"{self.name}: {name} failed: {out['error']}")
        return out


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def timed(fn, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main():
    token, sandboxed_url, plain_url, out_path = sys.argv[1:5]
    servers = [Server("sandboxed", sandboxed_url, token), Server("unsandboxed", plain_url, token)]
    for s in servers:
        s.setup()
    assert servers[0].invoke(servers[0].agent, "pay")["sandboxed"] is True, "the first server must use bubblewrap"
    assert servers[1].invoke(servers[1].agent, "pay")["sandboxed"] is False
    res = {s.name: {"read": [], "warm": [], "warm_server": [], "get_secret_ms": [], "cold": [], "cold_server": []}
           for s in servers}
    for rnd in range(ROUNDS):
        for s in servers:
            r = res[s.name]
            path = f"/api/v1/agents/{s.agent}/secrets/stripe_api_key"
            timed(lambda: s.call("GET", path, token=s.key), 200)
            r["read"] += timed(lambda: s.call("GET", path, token=s.key), READ_N)
            for _ in range(WARM_WARMUP):
                s.invoke(s.agent, "pay")
            server_ms = []

            def warm():
                server_ms.append(s.invoke(s.agent, "pay")["duration_ms"])
            r["warm"] += timed(warm, WARM_N)
            r["warm_server"] += server_ms
            with_read = [s.invoke(s.agent, "loop", {"n": 1000, "read": True})["duration_ms"] for _ in range(LOOP_RUNS)]
            without = [s.invoke(s.agent, "loop", {"n": 1000, "read": False})["duration_ms"] for _ in range(LOOP_RUNS)]
            r["get_secret_ms"].append((statistics.median(with_read) - statistics.median(without)) / 1000)
            for _ in range(COLD_N):
                s.cold_agents += 1
                agent = s.new_agent(f"cold {s.cold_agents}")
                s.grant(agent)
                s.define(agent, "pay", PAY, [])
                t = time.perf_counter()
                out = s.invoke(agent, "pay")
                r["cold"].append((time.perf_counter() - t) * 1000)
                r["cold_server"].append(out["duration_ms"])
                assert out["cold"], "a new agent's first invocation starts a worker"
        print(f"round {rnd + 1}/{ROUNDS} done", file=sys.stderr)
    summary = {}
    for name, r in res.items():
        summary[name] = {
            "read_p50": pct(r["read"], 50), "read_p99": pct(r["read"], 99),
            "warm_p50": pct(r["warm"], 50), "warm_p99": pct(r["warm"], 99), "warm_n": len(r["warm"]),
            "warm_server_p50": pct(r["warm_server"], 50),
            "get_secret_ms": statistics.median(r["get_secret_ms"]),
            "get_secret_range": [min(r["get_secret_ms"]), max(r["get_secret_ms"])],
            "cold_p50": pct(r["cold"], 50), "cold_p99": pct(r["cold"], 99), "cold_n": len(r["cold"]),
            "cold_server_p50": pct(r["cold_server"], 50),
        }
    with open(out_path, "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
