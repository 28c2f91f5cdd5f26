"""Compares two runs of the conformance runner check by check.

    conformance_diff.py [--allow FILE] DIRECT_DIR OTHER_DIR

Each directory is a runner `-o` output: one `server-<scenario>-<timestamp>/checks.json` per
scenario. Prints one line: the number of checks compared and, if the runs differ, each
(scenario, check) whose status differs (or that only one run has). Exit status 0 only if
every check has the same status in both runs: the same pass set, not only the same number.

`--allow FILE` names differences that are expected, one `scenario/check` per line (`#`
comments): those must differ exactly as listed (a listed check of a scenario the runner has
that no longer differs is reported too, so the list cannot go stale).
"""

from __future__ import annotations

import json
import os
import re
import sys

SCENARIO = re.compile(r"^server-(.+)-\d{4}-\d\d-\d\dT[\d-]+Z$")


def load(root: str) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for entry in sorted(os.listdir(root)):
        m = SCENARIO.match(entry)
        path = os.path.join(root, entry, "checks.json")
        if not m or not os.path.exists(path):
            continue
        with open(path) as f:
            checks = json.load(f)
        seen: dict[str, int] = {}
        for c in checks:
            name = c.get("id") or c.get("name") or "?"
            # A scenario may repeat a check id; number the repeats so each is compared.
            n = seen.get(name, 0)
            seen[name] = n + 1
            key = name if n == 0 else f"{name}#{n}"
            out[(m.group(1), key)] = c.get("status", "?")
    return out


def allowed(path: str) -> set[tuple[str, str]]:
    out = set()
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                scenario, check = line.split("/", 1)
                out.add((scenario, check))
    return out


def main() -> int:
    args = sys.argv[1:]
    allow: set[tuple[str, str]] = set()
    if args[:1] == ["--allow"]:
        allow = allowed(args[1])
        args = args[2:]
    direct, other = load(args[0]), load(args[1])
    if not direct:
        print(f"no checks found in {args[0]}")
        return 2
    keys = sorted(set(direct) | set(other))
    diff = [(k, direct.get(k, "absent"), other.get(k, "absent")) for k in keys if direct.get(k) != other.get(k)]
    unexpected = [d for d in diff if d[0] not in allow]
    # Listed checks of scenarios this runner has must differ (the list cannot go stale).
    scenarios = {s for s, _ in direct}
    stale = sorted(k for k in allow - {d[0] for d in diff} if k[0] in scenarios)
    passed = sum(1 for s in direct.values() if s == "SUCCESS")
    if not unexpected and not stale:
        extra = f", {len(diff)} differences as listed" if diff else ""
        print(f"{len(keys)} checks, {passed} passing, identical{extra}")
        return 0
    shown = "; ".join(f"{s}/{c}: {a} -> {b}" for (s, c), a, b in unexpected[:12])
    note = f"; listed but not different: {', '.join(f'{s}/{c}' for s, c in stale)}" if stale else ""
    print(f"{len(unexpected)} of {len(keys)} checks differ: {shown}{note}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
