#!/usr/bin/env python3
"""Groups `perf script -F comm,tid,ip,sym,dso` samples (with call chains, e.g. from
`perf record -e cpu-clock --call-graph dwarf -p <gateway pid>`) into the groups of
issue 24: each sample goes to the first group found walking from the leaf up, after
allocator and kernel leaves, which win outright. Usage: perf script ... | group.py [comm]."""
import re, sys, collections

CATS = [
    ("allocation", re.compile(r"^(malloc|free|cfree|_int_malloc|_int_free|_int_realloc|realloc|calloc|malloc_consolidate|__rust_alloc|__rust_dealloc|__rust_realloc|__rustc::__rust_(alloc|dealloc|realloc)|tcache_|unlink_chunk|alloc::alloc::|<stats_alloc)")),
    ("serde_json decode/encode", re.compile(r"serde_json::|serde::|serde_core::|<serde_json|<serde::|<serde_core")),
    ("audit", re.compile(r"mcp_guard_core::audit|sqlite3|rusqlite|sha2::|<sha2|mcp_guard_tower::audit|<mcp_guard_tower::audit")),
    ("redaction", re.compile(r"mcp_guard_core::redact|aho_corasick|regex_automata|regex::|mcp_guard_tower::redact|<mcp_guard_tower::redact")),
    ("the upstream client", re.compile(r"reqwest::|hyper_util::client|hyper::client|mcp_guard_core::upstream|<mcp_guard_core::upstream|<reqwest|rmcp::transport::streamable_http_client|rmcp::transport::common::reqwest")),
    ("rmcp framing and sessions", re.compile(r"rmcp::|<rmcp|sse_stream|mcp_guard_tower::legacy_sessions|<mcp_guard_tower::legacy_sessions")),
    ("guard layers (auth, policy, router, handler)", re.compile(r"mcp_guard_tower::|<mcp_guard_tower|mcp_guard_core::|<mcp_guard_core|globset|governor")),
    ("HTTP server (hyper, axum)", re.compile(r"hyper::|<hyper|axum::|<axum|h2::|httparse|http::|<http::")),
    ("tokio scheduling", re.compile(r"tokio::|<tokio|parking_lot|futures_util|futures_channel|tokio_util|<futures")),
]
NEUTRAL = re.compile(r"^(__mem|memcpy|memmove|memset|memcmp|__strlen|strlen|core::|<core::|alloc::|<alloc::|std::|<std::|\[unknown\]|0x)")

def classify(frames):
    # frames: list of (sym, dso), leaf first
    if not frames:
        return "other"
    sym, dso = frames[0]
    if "kernel" in dso:
        return "syscalls and kernel"
    for sym, dso in frames:
        if CATS[0][1].search(sym):
            return CATS[0][0]
        if not NEUTRAL.search(sym):
            break
    for sym, dso in frames:
        for name, rx in CATS[1:]:
            if rx.search(sym):
                return name
    return "other (libc, std, unresolved)"

def main():
    comm_filter = sys.argv[1] if len(sys.argv) > 1 else None
    counts = collections.Counter()
    total = 0
    frames, keep = [], False
    def flush():
        nonlocal total
        if keep:
            counts[classify(frames)] += 1
            total += 1
    for line in sys.stdin:
        if not line.strip():
            flush(); frames, keep = [], False
            continue
        if not line.startswith((" ", "\t")):
            flush(); frames = []
            comm = line.split()[0]
            keep = comm_filter is None or comm_filter in line
            continue
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            continue
        rest = parts[1]
        m = re.match(r"(.*) \((.*)\)$", rest)
        sym, dso = (m.group(1), m.group(2)) if m else (rest, "")
        sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
        frames.append((sym, dso))
    flush()
    print(f"{'group':<48} {'share':>7} {'samples':>8}")
    for name, n in counts.most_common():
        print(f"{name:<48} {100*n/max(total,1):6.1f}% {n:>8}")
    print(f"{'total':<48} {'':>7} {total:>8}")

main()
