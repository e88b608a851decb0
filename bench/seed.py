#!/usr/bin/env python3
"""Seeds an agentvault workspace through its HTTP API, the way an operator would.

Creates AGENTS agents, then SECRETS secrets, each granted to GRANTS agents spread evenly over
the pool (the seeded agents plus any --include-agent ids). Runs THREADS keep-alive connections in
parallel: every create is its own durable transaction, so throughput is bounded by the server's
commits, not by this script. Exits non-zero on the first request that is not answered 201.

Standard library only.
"""

import argparse
import http.client
import json
import sys
import threading
import time
from urllib.parse import urlsplit


class Client:
    """One keep-alive connection to the server."""

    def __init__(self, base_url, token):
        url = urlsplit(base_url)
        self.host, self.port = url.hostname, url.port
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def post(self, path, payload):
        body = json.dumps(payload)
        try:
            self.conn.request("POST", path, body=body, headers=self.headers)
            resp = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            # The server may close an idle keep-alive connection; reconnect once.
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            self.conn.request("POST", path, body=body, headers=self.headers)
            resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 201:
            raise RuntimeError(f"POST {path} answered {resp.status}: {data[:500].decode(errors='replace')}")
        return json.loads(data)


def run_parallel(label, count, threads, make_client, work):
    """Calls work(client, i) for i in range(count) on `threads` threads; returns the results."""
    results = [None] * count
    errors = []
    done = [0]
    lock = threading.Lock()
    started = time.monotonic()
    step = max(count // 10, 1)

    def worker(first):
        client = make_client()
        for i in range(first, count, threads):
            if errors:
                return
            try:
                results[i] = work(client, i)
            except Exception as e:  # noqa: BLE001 - reported below, then the whole run fails
                errors.append(e)
                return
            with lock:
                done[0] += 1
                if done[0] % step == 0:
                    rate = done[0] / (time.monotonic() - started)
                    print(f"  {label}: {done[0]}/{count} ({rate:.0f}/s)", file=sys.stderr, flush=True)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return results, time.monotonic() - started


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8437")
    p.add_argument("--token", required=True, help="admin token")
    p.add_argument("--workspace", required=True, help="workspace id (ws_...)")
    p.add_argument("--agents", type=int, required=True)
    p.add_argument("--secrets", type=int, required=True)
    p.add_argument("--grants", type=int, default=3, help="agents granted each secret")
    p.add_argument("--include-agent", action="append", default=[], help="an existing agent id to add to the pool")
    p.add_argument("--threads", type=int, default=8)
    args = p.parse_args()

    def make_client():
        return Client(args.url, args.token)

    ws = f"/api/v1/workspaces/{args.workspace}"

    agents, agent_secs = run_parallel(
        "agents", args.agents, args.threads, make_client,
        lambda c, i: c.post(f"{ws}/agents", {"name": f"seed agent {i:05d}"})["id"],
    )
    pool = args.include_agent + agents
    if len(pool) < args.grants:
        sys.exit(f"seed: {len(pool)} agents cannot give {args.grants} grants per secret")
    stride = len(pool) // args.grants

    def create_secret(c, i):
        grants = [pool[(i + k * stride) % len(pool)] for k in range(args.grants)]
        value = f"sk_test_{i:08d}_seedAbCdEfGhIjKlMnOpQrStUvWxYz0123"
        c.post(f"{ws}/secrets", {"name": f"seed_secret_{i:06d}", "value": value, "agents": grants})

    _, secret_secs = run_parallel("secrets", args.secrets, args.threads, make_client, create_secret)
    print(json.dumps({
        "agents": args.agents,
        "agents_seconds": round(agent_secs, 2),
        "secrets": args.secrets,
        "secrets_seconds": round(secret_secs, 2),
        "grants_per_secret": args.grants,
    }))


if __name__ == "__main__":
    main()
