"""Flow rules and human approval (issue 26) through the gateway, with published peers and the
official MCP Python SDK (`mcp` 2.3) as the client. Prints `PASS flow/<check>` or
`FAIL flow/<check>: why`.

    py_flow.py trifecta --gateway BIN --config FILE --url URL --audit DIR
        The `flow` endpoint: server-filesystem (`read_text_file`: untrusted input, a planted
        issue that carries instructions), server-memory (`read_graph`: private data) and
        server-everything (`gzip-file-as-resource`, which fetches the URL it is given:
        egress). After the two reads the fetch is refused; the audit trail names the read
        that tainted the session; another credential's session is not affected; an
        operator's `sessions clear-taint` lets the fetch go again.

    py_flow.py approval --url URL --mode legacy|auto --token TOKEN [--audit DIR]
        The `approval` endpoint: server-filesystem's `write_file` needs a person's approval.
        The SDK's elicitation callback answers accept, then decline, then not in time: the
        gateway asks by a server request (legacy) or an input-required round (2026-07-28);
        with --audit, the audit trail shows which of the two it was and every answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import mcp.types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError as McpError

failed = 0
EGRESS_URL = "data:text/plain;base64,aGVsbG8="


def check(name: str, cond: bool, why: str) -> None:
    global failed
    if cond:
        print(f"PASS flow/{name}", flush=True)
    else:
        failed += 1
        print(f"FAIL flow/{name}: {why}", flush=True)


def client(url: str, token: str, mode: str, **kw: Any) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return Client(streamable_http_client(url, http_client=http), mode=mode, read_timeout_seconds=60, **kw)


async def call(c: Client, name: str, args: dict[str, Any]) -> tuple[Any, McpError | None]:
    try:
        return await c.call_tool(name, args), None
    except McpError as e:
        return None, e


def code(e: McpError | None) -> int | None:
    return None if e is None else e.error.code


def reason(e: McpError | None) -> str:
    data = getattr(e.error, "data", None) if e is not None else None
    return data.get("reason", "") if isinstance(data, dict) else ""


def records(audit: str) -> list[dict[str, Any]]:
    out = []
    for f in sorted(Path(audit).glob("*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                out.append(json.loads(line)["event"])
            except (ValueError, KeyError):
                pass
    return out


def cli(gateway: str, config: str, *args: str) -> tuple[int, str]:
    p = subprocess.run([gateway, *args, "--config", config], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


async def trifecta(a: argparse.Namespace) -> None:
    fetch = {"name": "x.gz", "data": EGRESS_URL}
    async with client(a.url, a.token, "auto") as alice:
        r, e = await call(alice, "everything__gzip-file-as-resource", fetch)
        check("trifecta/egress-before-any-read", e is None and r is not None and not r.is_error, f"{e or r}")
        r, e = await call(alice, "filesystem__read_text_file", {"path": a.issue})
        check("trifecta/read-the-planted-issue", e is None and "Ignore previous instructions" in str(r), f"{e or r}")
        r, e = await call(alice, "memory__read_graph", {})
        check("trifecta/read-private-data", e is None, f"{e}")
        r, e = await call(alice, "everything__gzip-file-as-resource", fetch)
        check(
            "trifecta/egress-after-untrusted-and-private-refused",
            code(e) == -32031 and reason(e) == "flow" and "read_text_file" not in str(e),
            f"code={code(e)} reason={reason(e)} {e or r}",
        )
    recs = records(a.audit)
    read = next(
        (
            r
            for r in recs
            if r.get("requested_name") == "filesystem__read_text_file" and r.get("phase") == "finished"
        ),
        None,
    )
    denied = next(
        (r for r in recs if r.get("requested_name") == "everything__gzip-file-as-resource" and r.get("outcome") == "denied"),
        None,
    )
    by = ((denied or {}).get("flow") or {}).get("tainted_by") or []
    check(
        "trifecta/audit-names-the-tainting-call",
        read is not None and any(m.get("call") == read.get("id") and m.get("label") == "untrusted-input" for m in by),
        f"read={read and read.get('id')} tainted_by={by}",
    )
    async with client(a.url, a.other_token, "legacy") as bob:
        r, e = await call(bob, "everything__gzip-file-as-resource", fetch)
        check("trifecta/a-fresh-session-is-not-affected", e is None and r is not None and not r.is_error, f"{e or r}")
    rc, out = cli(a.gateway, a.config, "sessions", "list", "--json")
    sessions = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    mine = next((s for s in sessions if s.get("principal") == "alice"), None)
    check("trifecta/sessions-list-shows-the-taint", mine is not None and "untrusted-input" in mine.get("taint", []), out[:300])
    if mine is None:
        return
    rc, out = cli(a.gateway, a.config, "sessions", "clear-taint", mine["id"])
    check("trifecta/clear-taint", rc == 0 and "untrusted-input" in out, out[:300])
    ok = False
    async with client(a.url, a.token, "auto") as alice:
        for _ in range(40):
            r, e = await call(alice, "everything__gzip-file-as-resource", fetch)
            if e is None:
                ok = True
                break
            await asyncio.sleep(0.25)
    check("trifecta/cleared-taint-restores-egress", ok, f"{e}")


async def approval(a: argparse.Namespace) -> None:
    answer = {"how": "accept"}
    asked: list[str] = []

    async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(getattr(params, "message", ""))
        if answer["how"] == "late":
            await asyncio.sleep(a.late)
            return types.ElicitResult(action="accept", content={"scope": "once"})
        if answer["how"] == "decline":
            return types.ElicitResult(action="decline")
        return types.ElicitResult(action="accept", content={"scope": "once"})

    path = os.path.join(a.dir, f"approved-{a.mode}.txt")
    async with client(a.url, a.token, a.mode, elicitation_callback=elicit) as c:
        r, e = await call(c, "filesystem__write_file", {"path": path, "content": "yes"})
        check(
            f"approval/{a.mode}/accept-runs-the-call",
            e is None and os.path.exists(path) and len(asked) == 1 and "filesystem__write_file" in asked[0],
            f"{e or r} asked={asked}",
        )
        answer["how"] = "decline"
        declined = os.path.join(a.dir, f"declined-{a.mode}.txt")
        r, e = await call(c, "filesystem__write_file", {"path": declined, "content": "no"})
        check(
            f"approval/{a.mode}/decline-refuses",
            code(e) == -32030 and reason(e) == "declined" and not os.path.exists(declined),
            f"code={code(e)} reason={reason(e)} {e or r}",
        )
        answer["how"] = "late"
        late = os.path.join(a.dir, f"late-{a.mode}.txt")
        r, e = await call(c, "filesystem__write_file", {"path": late, "content": "late"})
        check(
            f"approval/{a.mode}/no-answer-in-time-refuses",
            code(e) == -32030 and reason(e) == "timed-out" and not os.path.exists(late),
            f"code={code(e)} reason={reason(e)} {e or r}",
        )
    if a.audit:
        # The era the SDK chose decides how the gateway asked: a server request for a
        # legacy session, an input-required round for a 2026-07-28 client.
        want = ("elicitation", None) if a.mode == "legacy" else ("input-required", "2026-07-28")
        asked_for = [
            r
            for r in records(a.audit)
            if r.get("type") == "approval_requested"
            and f"-{a.mode}.txt" in str((r.get("arguments") or {}).get("path", ""))
        ]
        check(
            f"approval/{a.mode}/asked-by-{want[0]}",
            len(asked_for) == 3
            and all(r.get("channel") == want[0] for r in asked_for)
            and (want[1] is None or all(r.get("protocol_version") == want[1] for r in asked_for)),
            str([(r.get("channel"), r.get("protocol_version")) for r in asked_for]),
        )
        answers = [
            r.get("answer")
            for r in records(a.audit)
            if r.get("type") == "approval_answered" and r.get("approval") in {x.get("approval") for x in asked_for}
        ]
        check(
            f"approval/{a.mode}/answers-audited",
            answers == ["approved-once", "declined", "timed-out"],
            str(answers),
        )


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("trifecta")
    t.add_argument("--gateway", required=True)
    t.add_argument("--config", required=True)
    t.add_argument("--url", required=True)
    t.add_argument("--audit", required=True)
    t.add_argument("--issue", required=True)
    t.add_argument("--token", required=True)
    t.add_argument("--other-token", required=True)
    q = sub.add_parser("approval")
    q.add_argument("--url", required=True)
    q.add_argument("--mode", choices=["legacy", "auto"], required=True)
    q.add_argument("--token", required=True)
    q.add_argument("--dir", required=True)
    q.add_argument("--late", type=float, default=8.0)
    q.add_argument("--audit", default="", help="the gateway's JSON Lines audit directory")
    a = p.parse_args()
    try:
        asyncio.run(trifecta(a) if a.what == "trifecta" else approval(a))
    except Exception as e:  # noqa: BLE001 - every failure is a FAIL line
        check(f"{a.what}/no-exception", False, f"{type(e).__name__}: {e}")
    return min(failed, 100)


if __name__ == "__main__":
    sys.exit(main())
