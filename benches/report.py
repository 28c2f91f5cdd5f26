#!/usr/bin/env python3
"""Prints criterion results of the redact bench as a Markdown table (median time and
throughput). Usage: python3 benches/report.py [target-dir]"""
import json, os, sys, glob

target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CARGO_TARGET_DIR", "target")
rows = []
for bench in sorted(glob.glob(os.path.join(target, "criterion", "**", "new", "benchmark.json"), recursive=True)):
    d = os.path.dirname(bench)
    b = json.load(open(bench))
    e = json.load(open(os.path.join(d, "estimates.json")))
    ns = e["median"]["point_estimate"]
    tp = (b.get("throughput") or {}).get("Bytes")
    rate = f"{tp / ns * 1e9 / 1e6:,.0f} MB/s" if tp else ""
    t = f"{ns / 1e3:,.2f} µs" if ns < 1e6 else f"{ns / 1e6:,.2f} ms"
    rows.append((b["full_id"], t, rate))
print("| bench | median time | throughput |\n|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]} |")
