"""Rug pull against a running gateway, with real peers on both sides.

A FastMCP 4.1 server (rugpull_server.py) is the gateway's HTTP upstream; the official
MCP Python SDK is the client. The server is restarted three times, each time with one
more change to its `echo` tool (description, parameter description, default), without
announcing anything. The running gateway (re-list interval 1 s) must quarantine each
change (call refused as awaiting approval, tool not listed, `tools diff` shows it),
and serve the tool again once `tools approve` ran.

    rugpull.py --gateway PATH --out DIR

Prints `PASS name` / `FAIL name: reason` lines; exit code = number of failures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from mcp import Client

HERE = Path(__file__).resolve().parent
STEPS = [
    ("desc", '~ description: "Returns the text it is given." -> "Returns the text it is given, politely."'),
    ("param", '~ inputSchema.properties.text.description: "Text to return" -> "Text to return verbatim"'),
    ("default", '+ inputSchema.properties.text.default: "hello"'),
]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, proc: subprocess.Popen, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


class Upstream:
    def __init__(self, port: int, variant: Path, log: Path) -> None:
        self.port, self.variant, self.log = port, variant, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "rugpull_server.py"), str(self.port), str(self.variant)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
        )
        if not wait_port(self.port, self.proc, 30):
            raise RuntimeError(f"FastMCP upstream did not start; see {self.log}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def cli(gateway: str, config: Path, *args: str) -> tuple[int, str]:
    r = subprocess.run(
        [gateway, *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "MCP_GUARD_LOG": "error"},
        timeout=60,
    )
    return r.returncode, r.stdout + r.stderr


async def call(client: Client, text: str) -> tuple[bool, str]:
    try:
        r = await client.call_tool("rug__echo", {"text": text})
    except Exception as e:  # the SDK raises on a JSON-RPC error
        return False, str(e)
    if getattr(r, "is_error", False) or getattr(r, "isError", False):
        return False, " ".join(getattr(c, "text", "") for c in r.content)
    return True, " ".join(getattr(c, "text", "") for c in r.content)


async def listed(client: Client) -> bool:
    tools = await client.list_tools()
    return any(t.name == "rug__echo" for t in tools.tools)


async def until(seconds: float, check) -> tuple[bool, float]:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if await check():
            return True, time.monotonic() - start
        await asyncio.sleep(0.2)
    return False, time.monotonic() - start


async def run(gateway: str, out: Path) -> int:
    failed = 0

    def ok(name: str) -> None:
        print(f"PASS {name}", flush=True)

    def bad(name: str, why: str) -> None:
        nonlocal failed
        failed += 1
        print(f"FAIL {name}: {why}", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    variant = out / "variant"
    variant.write_text("base\n")
    up = Upstream(free_port(), variant, out / "fastmcp.log")
    gw_port = free_port()
    config = out / "gateway.toml"
    config.write_text(
        f"""[gateway]
listen = "127.0.0.1:{gw_port}"
catalogue_refresh_secs = 1

[auth]
dangerously_allow_anonymous = {{ id = "interop", roles = ["interop"] }}

[audit]
sinks = ["jsonl"]
jsonl_dir = "{out / 'audit'}"

[servers.rug]
transport = "http"
url = "http://127.0.0.1:{up.port}/mcp"

[endpoints.main.servers.rug]
tools = ["*"]

[[grants]]
name = "interop"
roles = ["interop"]
names = ["*"]
"""
    )
    gw = None
    try:
        try:
            up.start()
        except RuntimeError as e:
            bad("pinning/rug-pull/upstream", str(e))
            return failed
        code, text = cli(gateway, config, "tools", "approve")
        if code != 0:
            bad("pinning/rug-pull/approve-base", text.strip()[-300:])
            return failed
        gw = subprocess.Popen(
            [gateway, "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(out / "gateway.log", "wb"),
        )
        if not wait_port(gw_port, gw, 30):
            bad("pinning/rug-pull/gateway", "did not start")
            return failed
        async with Client(f"http://127.0.0.1:{gw_port}/mcp/main") as client:
            good, text = await call(client, "hi")
            if not (good and text == "hi"):
                bad("pinning/rug-pull/base", text)
                return failed
            for step, diff_line in STEPS:
                name = f"pinning/rug-pull/fastmcp-{step}"
                variant.write_text(step + "\n")
                up.stop()
                try:
                    up.start()
                except RuntimeError as e:
                    bad(name, str(e))
                    break

                async def held() -> bool:
                    good, text = await call(client, "x")
                    return not good and "awaiting approval" in text

                caught, after = await until(20, held)
                if not caught:
                    bad(name, "the changed tool was not quarantined within 20 s of the restart")
                    continue
                if await listed(client):
                    bad(name, "quarantined but still listed")
                    continue
                code, text = cli(gateway, config, "tools", "diff")
                if code == 0 or diff_line not in text:
                    bad(name, f"tools diff does not show {diff_line!r}: {text.strip()[-400:]}")
                    continue
                audit = "".join(p.read_text() for p in sorted((out / "audit").glob("*")))
                if "quarantined rug/echo" not in audit:
                    bad(name, "no quarantine record in the audit trail")
                    continue
                code, text = cli(gateway, config, "tools", "approve")

                async def back() -> bool:
                    good, text = await call(client, "ok")
                    return good and text == "ok"

                returned, _ = await until(20, back)
                if code != 0 or not returned or not await listed(client):
                    bad(name, f"not served again after approval: {text.strip()[-300:]}")
                    continue
                ok(f"{name} (quarantined {after:.1f}s after the restart, back after approval)")
    finally:
        if gw and gw.poll() is None:
            gw.terminate()
            try:
                gw.wait(15)
            except subprocess.TimeoutExpired:
                gw.kill()
        up.stop()
    return failed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--gateway", required=True)
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args()
    sys.exit(min(asyncio.run(run(a.gateway, a.out)), 100))


if __name__ == "__main__":
    main()
