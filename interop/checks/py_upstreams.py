"""Interop checks of the gateway's upstream handling with the official MCP Python SDK (`mcp`
2.3) as the client. Prints `PASS py-upstreams/<check>` or `FAIL py-upstreams/<check>: why`.

    py_upstreams.py slow-start --gateway BIN --config FILE --ready FILE
        The `slowstart` endpoint over stdio: server `fast` and server `slow`, whose command
        sleeps 12 s before it reads stdin (as a first `npx -y` run does) and creates the
        --ready file when it starts. The client connects (auto mode: server/discover) and
        lists while `slow` still sleeps, then sees it join and calls it.

    py_upstreams.py questions --url URL --mode legacy|auto
        The `questions` endpoint over HTTP: a FastMCP tool that asks with `ctx.elicit` behind
        `asker_legacy` (protocol = "legacy") and `asker_auto` (the default). Through
        `asker_legacy` the question reaches this client in either mode; through `asker_auto`
        FastMCP refuses to ask on 2026-07-28, as it documents.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import mcp.types as types
from mcp import Client, StdioServerParameters

failed = 0


def check(name: str, cond: bool, why: str) -> None:
    global failed
    if cond:
        print(f"PASS py-upstreams/{name}", flush=True)
    else:
        failed += 1
        print(f"FAIL py-upstreams/{name}: {why}", flush=True)


def texts(result: Any) -> list[str]:
    return [getattr(c, "text", "") for c in result.content if getattr(c, "type", "") == "text"]


async def slow_start(a: argparse.Namespace) -> None:
    target = StdioServerParameters(
        command=a.gateway, args=["serve", "--stdio", "--endpoint", "slowstart", "--config", a.config]
    )
    started = time.monotonic()
    async with Client(target, mode="auto", read_timeout_seconds=60) as client:
        took = time.monotonic() - started
        sleeping = not os.path.exists(a.ready)
        check(
            f"slow-start/connect-while-an-upstream-starts ({took:.2f} s, {client.protocol_version})",
            sleeping and client.protocol_version == "2026-07-28",
            f"slow still sleeping={sleeping}, version={client.protocol_version}, took {took:.2f} s",
        )
        names = {t.name for t in (await client.list_tools()).tools}
        check(
            "slow-start/early-list-shows-what-is-connected",
            "fast__echo" in names and "slow__echo" not in names and not os.path.exists(a.ready),
            f"listed {sorted(names)}; slow ready={os.path.exists(a.ready)}",
        )
        joined = None
        while time.monotonic() - started < 50:
            names = {t.name for t in (await client.list_tools()).tools}
            if "slow__echo" in names:
                joined = time.monotonic() - started
                break
            await asyncio.sleep(0.5)
        check(
            f"slow-start/12s-upstream-joins ({joined:.1f} s)" if joined else "slow-start/12s-upstream-joins",
            joined is not None,
            "slow__echo never listed within 50 s",
        )
        if joined is not None:
            r = await client.call_tool("slow__echo", {"text": "late but here"})
            check("slow-start/call-the-late-upstream", texts(r) == ["late but here"], f"{r}")


async def questions(a: argparse.Namespace) -> None:
    asked: list[str] = []

    async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"value": "Ada"})

    async with Client(a.url, mode=a.mode, elicitation_callback=elicit, read_timeout_seconds=60) as client:
        r = await client.call_tool("asker_legacy__ask_name", {})
        check(
            f"questions/{a.mode}-client/legacy-upstream-question-reaches-the-client",
            not r.is_error and texts(r) == ["Hello, Ada!"] and asked == ["What is your name?"],
            f"is_error={r.is_error} text={texts(r)} asked={asked}",
        )
        r = await client.call_tool("asker_auto__ask_name", {})
        check(
            f"questions/{a.mode}-client/2026-upstream-cannot-ask-by-request",
            bool(r.is_error) and "2026-07-28" in " ".join(texts(r)),
            f"is_error={r.is_error} text={texts(r)}",
        )


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("slow-start")
    s.add_argument("--gateway", required=True)
    s.add_argument("--config", required=True)
    s.add_argument("--ready", required=True)
    q = sub.add_parser("questions")
    q.add_argument("--url", required=True)
    q.add_argument("--mode", choices=["legacy", "auto"], required=True)
    a = p.parse_args()
    try:
        asyncio.run(slow_start(a) if a.what == "slow-start" else questions(a))
    except Exception as e:  # noqa: BLE001 - every failure is a FAIL line
        check(f"{a.what}/no-exception", False, f"{type(e).__name__}: {e}")
    return min(failed, 100)


if __name__ == "__main__":
    sys.exit(main())
