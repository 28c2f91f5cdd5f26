#!/usr/bin/env python3
"""Throughput of mcp-guard's PatternRedactor against Presidio's pattern recognizers on
one corpus, in the same run.

Presidio runs without any NLP model: its predefined recognizers (email, phone, US SSN,
credit card, IP) are called directly with `nlp_artifacts=None`, so spaCy never loads a
model. Presidio only detects here; mcp-guard detects and replaces, so the comparison
favours Presidio.

    python3 -m venv benches/presidio/.venv
    benches/presidio/.venv/bin/pip install presidio-analyzer
    benches/presidio/.venv/bin/python benches/presidio/compare.py [corpus-bytes]
"""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus.txt")
SIZE = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000


def cargo_bin(*args):
    cmd = ["cargo", "run", "--quiet", "--release", "-p", "mcp-guard-benches", "--bin", "redact_corpus", "--", *args]
    return subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def main():
    cargo_bin("gen", CORPUS, str(SIZE))
    with open(CORPUS, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    total = sum(len(s.encode("utf-8")) for s in lines)

    rust = dict(line.split(" ", 1) for line in cargo_bin("run", CORPUS).strip().splitlines())
    rust_mbps = float(rust["rust_mb_per_s"])

    # EmailRecognizer validates with tldextract, whose default extractor downloads the
    # public suffix list on first use. Use the snapshot bundled with the package instead,
    # so the run is offline and network time is not counted.
    import tldextract

    tldextract.extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    recognizers = [EmailRecognizer(), PhoneRecognizer(), UsSsnRecognizer(), CreditCardRecognizer(), IpRecognizer()]
    for rec in recognizers:  # warm up (lazy compilation, suffix list load)
        rec.analyze("warm up a@b.com 4111 1111 1111 1111 10.0.0.1", rec.supported_entities, None)
    found = {}
    per = {}
    for rec in recognizers:
        start = time.perf_counter()
        for text in lines:
            for res in rec.analyze(text, rec.supported_entities, None):
                found[res.entity_type] = found.get(res.entity_type, 0) + 1
        per[type(rec).__name__] = time.perf_counter() - start
    elapsed = sum(per.values())
    presidio_mbps = total / elapsed / 1e6
    regex_only = sum(t for name, t in per.items() if name != "PhoneRecognizer")
    regex_mbps = total / regex_only / 1e6

    print(f"corpus: {len(lines)} strings, {total} bytes")
    print(f"presidio findings: {json.dumps(found, sort_keys=True)}")
    print(f"mcp-guard strings changed: {rust['rust_lines_changed']}")
    for name, t in per.items():
        print(f"  presidio {name}: {total / t / 1e6:.2f} MB/s")
    print(f"presidio, all five recognizers in sequence: {presidio_mbps:.2f} MB/s")
    print(f"presidio, regex recognizers only (no PhoneRecognizer): {regex_mbps:.2f} MB/s")
    print(f"mcp-guard PatternRedactor:    {rust_mbps:.1f} MB/s")
    print(f"ratio (all five): {rust_mbps / presidio_mbps:.0f}x")
    print(f"ratio (regex-only four): {rust_mbps / regex_mbps:.0f}x")


if __name__ == "__main__":
    main()
