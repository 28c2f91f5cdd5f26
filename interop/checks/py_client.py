"""Interop checks with the official MCP Python SDK (`mcp` 2.3) as the client.

One run connects to one target, in one connect mode, and prints one line per check:

    PASS py/<label>/<check>
    FAIL py/<label>/<check>: <reason>

The exit code is the number of failed checks (capped at 100). The target is either a
streamable-HTTP URL (`--url`) or a stdio command (`--stdio CMD [ARGS...]`, everything after
`--stdio`). `--prefix` is prepended to the fixture's tool names, so the same checks run
against the fixture directly (no prefix) and through the gateway (`fixture__`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
from typing import Any

from mcp import Client, StdioServerParameters

# Protocol revisions we expect each mode to negotiate with an rmcp 3.9 server (directly or via
# the gateway). `auto` probes server/discover first; `legacy` always uses initialize.
EXPECTED_VERSION = {"auto": "2026-07-28", "legacy": "2025-11-25"}


class Checks:
    def __init__(self, label: str) -> None:
        self.label = label
        self.failed = 0

    def ok(self, name: str) -> None:
        print(f"PASS py/{self.label}/{name}", flush=True)

    def fail(self, name: str, reason: str) -> None:
        self.failed += 1
        print(f"FAIL py/{self.label}/{name}: {reason}", flush=True)

    def expect(self, name: str, cond: bool, reason: str) -> None:
        if cond:
            self.ok(name)
        else:
            self.fail(name, reason)


def texts(result: Any) -> list[str]:
    return [getattr(c, "text", None) for c in result.content if getattr(c, "type", "") == "text"]


async def run(args: argparse.Namespace, checks: Checks) -> None:
    if args.stdio:
        target: Any = StdioServerParameters(command=args.stdio[0], args=args.stdio[1:])
    else:
        target = args.url
    p = args.prefix
    async with Client(target, mode=args.mode, read_timeout_seconds=args.timeout) as client:
        checks.ok("connect")
        if args.expect_version:
            want = EXPECTED_VERSION[args.mode]
            got = client.protocol_version
            checks.expect("protocol-version", got == want, f"negotiated {got!r}, expected {want!r}")

        tools = await client.list_tools()
        names = {t.name for t in tools.tools}
        wanted = {f"{p}echo", f"{p}add", f"{p}test_simple_text", f"{p}test_error_handling"}
        missing = sorted(wanted - names)
        checks.expect("tools/list", not missing, f"missing {missing}; got {sorted(names)[:8]}...")

        token = "interop-" + secrets.token_hex(6)
        r = await client.call_tool(f"{p}echo", {"text": token})
        checks.expect(
            "tools/call-echo",
            not r.is_error and texts(r) == [token],
            f"is_error={r.is_error} text={texts(r)}",
        )

        r = await client.call_tool(f"{p}add", {"a": 2, "b": 3})
        sc = r.structured_content or {}
        checks.expect(
            "tools/call-structuredContent",
            not r.is_error and sc.get("sum") == 5,
            f"is_error={r.is_error} structuredContent={sc}",
        )

        r = await client.call_tool(f"{p}test_error_handling", {})
        checks.expect("tools/call-isError", bool(r.is_error), f"is_error={r.is_error}")

        # An unknown tool must come back as an error (JSON-RPC error or isError result),
        # never hang or crash the session.
        try:
            r = await client.call_tool(f"{p}no_such_tool_{token}", {})
            checks.expect("tools/call-unknown-tool", bool(r.is_error), "unknown tool returned success")
        except Exception:  # noqa: BLE001 - a protocol error is the expected outcome
            checks.ok("tools/call-unknown-tool")

        # The session still works after the error paths.
        r = await client.call_tool(f"{p}echo", {"text": token})
        checks.expect("session-survives-errors", texts(r) == [token], f"text={texts(r)}")


class Warnings(logging.Handler):
    """Collects what the SDK logs at WARNING and above (e.g. "Session termination failed: 202"
    when the server answers the closing DELETE with a status the SDK does not expect)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def leaves(e: BaseException) -> list[str]:
    """The innermost exceptions of (nested) exception groups, as short strings."""
    if isinstance(e, BaseExceptionGroup):
        return [m for x in e.exceptions for m in leaves(x)]
    return [f"{type(e).__name__}: {e}"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--mode", choices=["auto", "legacy"], default="auto")
    ap.add_argument("--prefix", default="")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--expect-version", action="store_true")
    ap.add_argument(
        "--expect-clean-exit",
        action="store_true",
        help="fail if the SDK logs a warning about the transport (e.g. ending the session)",
    )
    ap.add_argument("--url")
    ap.add_argument("--stdio", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    if bool(args.url) == bool(args.stdio):
        ap.error("exactly one of --url / --stdio")
    checks = Checks(args.label)
    warnings = Warnings()
    logging.getLogger("mcp.client").addHandler(warnings)
    try:
        asyncio.run(asyncio.wait_for(run(args, checks), timeout=args.timeout * 3))
    except Exception as e:  # noqa: BLE001 - report any failure as a failed check
        checks.fail("session", "; ".join(leaves(e)).replace("\n", " ")[:400])
    if args.expect_clean_exit:
        # Leaving the client's context ends the session (DELETE over HTTP).
        checks.expect("clean-exit", not warnings.messages, "; ".join(warnings.messages)[:400])
    return min(checks.failed, 100)


if __name__ == "__main__":
    sys.exit(main())
