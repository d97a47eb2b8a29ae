"""A Python client over WebSocket: the SDK 2.x `Client` through this project's adapter.

Start a server first:   mcp-code-tools --transport websocket --port 8765 --root /path/to/project
Then:                   python examples/websocket_client.py [ws://127.0.0.1:8765/mcp]

With a token on the server (MCP_CODE_TOOLS_TOKEN), export the same variable here: it is sent as
`Authorization: Bearer <token>`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

import anyio
from mcp.client import Client
from websockets.exceptions import InvalidStatus

from mcp_server.transports.ws_client import websocket_client


async def main(url: str) -> None:
    token = os.environ.get("MCP_CODE_TOOLS_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with Client(websocket_client(url, headers=headers), mode="auto") as client:
        tools = await client.list_tools()
        print("tools:", ", ".join(tool.name for tool in tools.tools))
        result = await client.call_tool("lint", {"source": "import os\n", "select": ["F401"]})
        print("lint of `import os`:", result.content[0].text if result.content else result)  # type: ignore[union-attr]


def refusal(exc: BaseException) -> str | None:
    """The server's own words when it refused the handshake (401 without a valid token, 403 for a foreign Origin)."""
    if isinstance(exc, InvalidStatus):
        body = exc.response.body.decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError):  # not JSON, or not an object
            body = str(json.loads(body).get("error", body))
        return f"HTTP {exc.response.status_code}: {body.strip()}"
    for inner in getattr(exc, "exceptions", ()):  # the client's task group wraps it
        found = refusal(inner)
        if found:
            return found
    return refusal(exc.__cause__) if exc.__cause__ else None


if __name__ == "__main__":
    try:
        anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8765/mcp")
    except Exception as exc:
        message = refusal(exc)
        if message is None:
            raise
        print(f"the server refused the connection: {message}", file=sys.stderr)
        sys.exit(1)
