"""A FastMCP upstream whose tool asks the user a question the way most servers written before
2026-07-28 do: `ctx.elicit`, a request of its own to the client.

    fastmcp_asker.py PORT      # streamable HTTP on 127.0.0.1:PORT, path /mcp

On a 2026-07-28 connection FastMCP refuses to push the request (that revision forbids
server-to-client requests), so a gateway reaches this tool's question only when it speaks
the legacy protocol to it (`protocol = "legacy"`).
"""

from __future__ import annotations

import sys

from fastmcp import Context, FastMCP

mcp = FastMCP("asker")


@mcp.tool
async def ask_name(ctx: Context) -> str:
    """Asks the user for their name and greets them."""
    answer = await ctx.elicit("What is your name?", str)
    if answer.action == "accept":
        return f"Hello, {answer.data}!"
    return f"no name ({answer.action})"


if __name__ == "__main__":
    mcp.run(transport="http", host="127.0.0.1", port=int(sys.argv[1]), show_banner=False)
