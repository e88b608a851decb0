#!/usr/bin/env python3
"""Turns one run of bench/run.sh into results.json and a markdown report.

Reads OUT/wrk/<case>.r<round>.txt (wrk --latency output), OUT/run.txt (key=value lines run.sh
recorded: machine, commit, RSS, audit counters, what the seeded vault holds) and OUT/seed.json
(what seed.py reports). Each case is summarised by the median of its rounds. Writes
OUT/results.json and prints markdown on stdout. Targets are reported as pass or fail; nothing
here decides whether the run succeeded.

Standard library only.
"""

import json
import re
import statistics
import sys
from pathlib import Path

# (case, server, connections, which vault)
CASES = [
    ("floor_c32", "floor", 32, None),
    ("vault_c32", "agentvault", 32, "single"),
    ("floor_c1", "floor", 1, None),
    ("vault_c1", "agentvault", 1, "single"),
    ("seeded_c32", "agentvault", 32, "seeded"),
    ("seeded_c1", "agentvault", 1, "seeded"),
]

UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
METRICS = ("requests_per_s", "p50_ms", "p99_ms")
# Above this much CPU taken by other processes in a round (% of one core), the report warns.
QUIET_PCT = 10


def to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unrecognised wrk duration {text!r}")
    return float(m.group(1)) * UNIT_MS[m.group(2)]


def parse_wrk(path):
    text = path.read_text()
    if "Non-2xx or 3xx responses" in text or "Socket errors" in text:
        raise SystemExit(f"{path}: wrk saw errors; the numbers would not measure successful reads")
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    total = re.search(r"^\s*(\d+) requests in ", text, re.M)
    pct = {p: to_ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M)}
    if not rps or not total or "50" not in pct or "99" not in pct:
        raise SystemExit(f"{path}: not wrk --latency output")
    return {"requests": int(total.group(1)), "requests_per_s": float(rps.group(1)), "p50_ms": pct["50"], "p99_ms": pct["99"]}


def rounds_of(out, case):
    paths = sorted((out / "wrk").glob(f"{case}.r*.txt"), key=lambda p: int(p.name.split(".r")[1].split(".")[0]))
    rounds = [parse_wrk(p) for p in paths if not p.name.endswith(".warmup.txt")]
    if not rounds:
        raise SystemExit(f"{out}/wrk: no measured runs of {case}")
    return rounds


def verdict(ok):
    return "pass" if ok else "**fail**"


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out")
    run = dict(line.split("=", 1) for line in (out / "run.txt").read_text().splitlines() if "=" in line)
    seeding = json.loads((out / "seed.json").read_text())
    contents = {
        "single": {"secrets": 1, "agents": 1},
        "seeded": {"secrets": int(run["seeded_secrets"]), "agents": int(run["seeded_agents"])},
    }
    rss = {k: int(run[f"rss_kb_{k}"]) / 1024 for k in ("single_after_load", "seeded_after_seeding", "seeded_after_load")}

    results = {}
    for case, server, conns, vault in CASES:
        rounds = rounds_of(out, case)
        r = {"server": server, "connections": conns, **(contents[vault] if vault else {})}
        r.update({m: statistics.median(x[m] for x in rounds) for m in METRICS})
        r["rounds"] = rounds
        records = sum(int(v) for k, v in run.items() if k.startswith(f"audit_records_{case}.r"))
        batches = sum(int(v) for k, v in run.items() if k.startswith(f"audit_batches_{case}.r"))
        if batches:
            r["audit_records_per_commit"] = round(records / batches, 1)
        # The server's CPU per request (ticks are 1/100 s), the median over the rounds.
        ticks = [int(run[f"server_ticks_{case}.r{i + 1}"]) for i in range(len(rounds)) if f"server_ticks_{case}.r{i + 1}" in run]
        if ticks:
            r["cpu_us_per_request"] = round(statistics.median(t * 10_000 / x["requests"] for t, x in zip(ticks, rounds)), 1)
        other = [max(int(v), 0) for k, v in run.items() if k.startswith(f"other_cpu_pct_{case}.r")]
        r["other_cpu_pct_max"] = max(other, default=None)
        results[case] = r

    ratio_c32 = results["vault_c32"]["requests_per_s"] / results["floor_c32"]["requests_per_s"]
    p50_ratio_c1 = results["seeded_c1"]["p50_ms"] / results["vault_c1"]["p50_ms"]
    p50_ratio_c32 = results["seeded_c32"]["p50_ms"] / results["vault_c32"]["p50_ms"]
    rss_max = max(rss["seeded_after_seeding"], rss["seeded_after_load"])
    vc32, vc1 = results["vault_c32"], results["vault_c1"]
    targets = [
        ("32 conns: agentvault throughput vs floor", ">= 0.50x", f"{ratio_c32:.2f}x", ratio_c32 >= 0.5),
        ("32 conns: agentvault p99", "< 5 ms", f"{vc32['p99_ms']:.2f} ms", vc32["p99_ms"] < 5),
        ("1 conn: agentvault p50", "< 0.15 ms", f"{vc1['p50_ms']:.3f} ms", vc1["p50_ms"] < 0.15),
        ("seeded vs 1 secret, p50 at 1 conn", "<= 1.10x", f"{p50_ratio_c1:.2f}x", p50_ratio_c1 <= 1.10),
        ("seeded vs 1 secret, p50 at 32 conns", "<= 1.10x", f"{p50_ratio_c32:.2f}x", p50_ratio_c32 <= 1.10),
        ("seeded server RSS (max of after seeding, after load)", "< 300 MB", f"{rss_max:.1f} MB", rss_max < 300),
    ]

    summary = {
        "run": run,
        "seeding": seeding,
        "rss_mb": {k: round(v, 1) for k, v in rss.items()},
        "cases": results,
        "ratios": {
            "vault_vs_floor_throughput_c32": round(ratio_c32, 3),
            "seeded_vs_single_p50_c1": round(p50_ratio_c1, 3),
            "seeded_vs_single_p50_c32": round(p50_ratio_c32, 3),
        },
        "targets": [{"target": t, "goal": g, "measured": m, "pass": ok} for t, g, m, ok in targets],
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")

    n = len(results["vault_c1"]["rounds"])
    lines = [
        f"Median of {n} round{'s' if n != 1 else ''} of {run.get('duration', '?')} each; the ranges are the lowest and highest round. "
        "Other CPU: the most CPU that processes besides the server and wrk (or the host) took in one round, "
        "in % of one core.",
        "",
        "| case | server | conns | secrets / agents | req/s | p50 ms | p50 range | p99 ms | p99 range "
        "| server CPU µs per request | audit records per commit | other CPU |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case, r in results.items():
        data = f"{r['secrets']:,} / {r['agents']:,}" if "secrets" in r else "-"
        p50s = [x["p50_ms"] for x in r["rounds"]]
        p99s = [x["p99_ms"] for x in r["rounds"]]
        lines.append(
            f"| {case} | {r['server']} | {r['connections']} | {data} | {r['requests_per_s']:,.0f} "
            f"| {r['p50_ms']:.3f} | {min(p50s):.3f}–{max(p50s):.3f} "
            f"| {r['p99_ms']:.3f} | {min(p99s):.3f}–{max(p99s):.3f} "
            f"| {r.get('cpu_us_per_request', '-')} | {r.get('audit_records_per_commit', '-')} | {r['other_cpu_pct_max']}% |"
        )
    records = int(run.get("audit_records_single", 0))
    if records:
        lines += ["", f"Disk per read record: the data directory grew by {int(run['data_bytes_single']):,} bytes over "
                  f"{records:,} audited reads, **{int(run['data_bytes_single']) / records:.1f} bytes** each."]
        summary["bytes_per_read_record"] = round(int(run["data_bytes_single"]) / records, 1)
    if "audit_stage_append_records_per_s" in run:
        lines += ["", "Audit stage alone (bench/audit_stage.rs, 1,000,000 records in batches of 32): "
                  f"append {float(run['audit_stage_append_records_per_s']):,.0f} records/s, into the table "
                  f"{float(run['audit_stage_into_table_records_per_s']):,.0f} records/s, "
                  f"{run['audit_stage_cpu_us_per_record']} CPU µs and {run['audit_stage_bytes_per_record']} bytes per record."]
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    busy = [case for case, r in results.items() if (r["other_cpu_pct_max"] or 0) > QUIET_PCT]
    if busy:
        lines += ["", f"**Warning:** the machine was not quiet (other CPU above {QUIET_PCT}% of a core) during "
                  f"{', '.join(busy)}; those numbers may not be representative."]
    seeded = contents["seeded"]
    lines += [
        "",
        "| target | goal | measured | result |",
        "| --- | --- | ---: | --- |",
        *(f"| {t} | {g} | {m} | {verdict(ok)} |" for t, g, m, ok in targets),
        "",
        "| agentvault RSS | MB |",
        "| --- | ---: |",
        f"| 1 secret, after load | {rss['single_after_load']:.1f} |",
        f"| {seeded['secrets']:,} secrets / {seeded['agents']:,} agents, after seeding | {rss['seeded_after_seeding']:.1f} |",
        f"| {seeded['secrets']:,} secrets / {seeded['agents']:,} agents, after load | {rss['seeded_after_load']:.1f} |",
        "",
        f"Seeding through the API: {seeding['agents']:,} agents in {seeding['agents_seconds']:.0f} s, "
        f"{seeding['secrets']:,} secrets in {seeding['secrets_seconds']:.0f} s "
        f"({seeding['secrets'] / max(seeding['secrets_seconds'], 0.001):,.0f}/s, "
        f"{seeding['grants_per_secret']} agents granted each).",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
