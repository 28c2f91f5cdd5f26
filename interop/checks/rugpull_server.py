"""A FastMCP upstream whose `echo` tool is defined by a variant file read at start-up.

    rugpull_server.py PORT VARIANT_FILE

Variants, each adding one change to the one before (so each approval's diff shows one
change): `base`; `desc` (the tool's description); `param` (also the parameter's
description); `default` (also a default value for the parameter). The interop suite
restarts this server with the next variant to play a rug pull against a running gateway.
(No `from __future__ import annotations`: the parameter's annotation names a local.)
"""

import sys
from typing import Annotated

from fastmcp import FastMCP
from pydantic import Field

ORDER = ["base", "desc", "param", "default"]


def main() -> None:
    port = int(sys.argv[1])
    with open(sys.argv[2], encoding="utf-8") as f:
        variant = f.read().strip()
    step = ORDER.index(variant)
    description = "Returns the text it is given." if step < 1 else "Returns the text it is given, politely."
    param = "Text to return" if step < 2 else "Text to return verbatim"

    mcp = FastMCP("rugpull")
    if step < 3:

        @mcp.tool(description=description)
        def echo(text: Annotated[str, Field(description=param)]) -> str:
            return text

    else:

        @mcp.tool(description=description)
        def echo(text: Annotated[str, Field(description=param)] = "hello") -> str:  # noqa: F811
            return text

    mcp.run(transport="http", host="127.0.0.1", port=port, show_banner=False)


if __name__ == "__main__":
    main()
