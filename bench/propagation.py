"""Writes per second on each backend, and propagation between two agentvault servers on one
PostgreSQL. Run by bench/postgres.sh; standard library only.

- invocations: 300 warm invocations of a function that reads one secret, on each backend.
- writes: one client changes a secret's value CHANGES times, one change after another (each is
  acknowledged only once committed), on SQLite and on PostgreSQL.
- propagation: for each of CHANGES changes made through server A, the time from A's
  acknowledgement to the first read on server B that returns the new value (B is polled as fast
  as one client can); then the same changes read on B with the X-Agentvault-Index header that A's
  answer carried: every such read must return the new value (stale reads: 0).
"""

import argparse
import http.client
import json
import time
import urllib.parse


class Client:
    """One kept-alive HTTP/1.1 connection."""

    def __init__(self, base, token):
        u = urllib.parse.urlparse(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port)
        self.auth = "Bearer " + token

    def call(self, method, path, body=None, headers=None):
        h = {"Authorization": self.auth, "Content-Type": "application/json"}
        h.update(headers or {})
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, resp.getheader("x-agentvault-index"), data


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def writes(base, token, ws, n):
    c = Client(base, token)
    path = f"/api/v1/workspaces/{ws}/secrets/stripe_api_key"
    start = time.perf_counter()
    for i in range(n):
        status, _, body = c.call("PATCH", path, {"value": f"w{i}"})
        assert status == 200, body
    return n / (time.perf_counter() - start)


def invocations(base, token, ws, n):
    """p50/p99 of a warm invocation (a function that reads one secret), in ms."""
    c = Client(base, token)
    status, _, body = c.call("POST", f"/api/v1/workspaces/{ws}/agents", {"name": "bench invoker"})
    assert status == 201, body
    agent = json.loads(body)["id"]
    status, _, body = c.call("POST", f"/api/v1/workspaces/{ws}/secrets",
                             {"name": "invoke_secret", "value": "sk_live_invoke", "agents": [agent]})
    assert status == 201, body
    code = "def pay(conv):\n    return 'ok ' + str(len(conv.utils.get_secret('invoke_secret')))\n"
    status, _, body = c.call("POST", f"/api/v1/workspaces/{ws}/agents/{agent}/functions",
                             {"name": "pay", "description": "bench", "parameters": [], "code": code})
    assert status == 201, body
    path = f"/api/v1/workspaces/{ws}/agents/{agent}/functions/pay/invoke"
    times = []
    for i in range(n + 20):
        t = time.perf_counter()
        status, _, body = c.call("POST", path, {"args": {}})
        assert status == 200 and json.loads(body)["error"] is None, body
        if i >= 20:  # the first ones start the worker
            times.append((time.perf_counter() - t) * 1000)
    return pct(times, 50), pct(times, 99)


def propagation(a, b, token, ws, agent, key, n):
    writer = Client(a, token)
    reader = Client(b, key)
    path = f"/api/v1/workspaces/{ws}/secrets/stripe_api_key"
    read = f"/api/v1/agents/{agent}/secrets/stripe_api_key"
    delays, polls = [], 0
    for i in range(n):
        value = f"p{i}"
        status, _, body = writer.call("PATCH", path, {"value": value})
        assert status == 200, body
        acked = time.perf_counter()
        while True:
            status, _, body = reader.call("GET", read)
            polls += 1
            if status == 200 and json.loads(body)["value"] == value:
                delays.append((time.perf_counter() - acked) * 1000)
                break
            if time.perf_counter() - acked > 10:
                raise SystemExit(f"change {i} did not reach B within 10 s")
    stale, waited = 0, []
    for i in range(n):
        value = f"i{i}"
        status, index, body = writer.call("PATCH", path, {"value": value})
        assert status == 200 and index, (status, index, body)
        t = time.perf_counter()
        status, _, body = reader.call("GET", read, headers={"X-Agentvault-Index": index})
        waited.append((time.perf_counter() - t) * 1000)
        if status != 200 or json.loads(body)["value"] != value:
            stale += 1
    return delays, polls, stale, waited


def main():
    ap = argparse.ArgumentParser()
    for name in ["token", "sqlite", "sqlite-ws", "pg", "pg-ws", "a", "b", "ab-ws", "ab-agent", "ab-key"]:
        ap.add_argument("--" + name, required=True)
    ap.add_argument("--changes", type=int, default=1000)
    o = ap.parse_args()
    print(f"writes_per_s_sqlite={writes(o.sqlite, o.token, o.sqlite_ws, o.changes):.0f}")
    print(f"writes_per_s_postgres={writes(o.pg, o.token, o.pg_ws, o.changes):.0f}")
    for name, base, ws in (("sqlite", o.sqlite, o.sqlite_ws), ("postgres", o.pg, o.pg_ws)):
        p50, p99 = invocations(base, o.token, ws, 300)
        print(f"invoke_ms_p50_{name}={p50:.2f} invoke_ms_p99_{name}={p99:.2f}")
    delays, polls, stale, waited = propagation(o.a, o.b, o.token, o.ab_ws, o.ab_agent, o.ab_key, o.changes)
    print(f"propagation_ms_p50={pct(delays, 50):.2f} propagation_ms_p99={pct(delays, 99):.2f} "
          f"propagation_ms_max={max(delays):.2f} reads_polled={polls}")
    print(f"with_index_stale_reads={stale} with_index_read_ms_p50={pct(waited, 50):.2f} "
          f"with_index_read_ms_p99={pct(waited, 99):.2f}")


if __name__ == "__main__":
    main()
