"""A Python client over WebSocket: the SDK 2.x `Client` through this project's adapter.

Start a server first:   mcp-code-tools --transport websocket --port 8765 --root /path/to/project
Then:                   python examples/websocket_client.py [ws://127.0.0.1:8765/mcp]

With a token on the server (MCP_CODE_TOOLS_TOKEN), export the same variable here: it is sent as
`Authorization: Bearer <token>`.
"""

from __future__ import annotations

import os
import sys

import anyio
from mcp.client import Client

from mcp_server.transports.ws_client import websocket_client


async def main(url: str) -> None:
    token = os.environ.get("MCP_CODE_TOOLS_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with Client(websocket_client(url, headers=headers), mode="auto") as client:
        tools = await client.list_tools()
        print("tools:", ", ".join(tool.name for tool in tools.tools))
        result = await client.call_tool("lint", {"source": "import os\n", "select": ["F401"]})
        print("lint of `import os`:", result.content[0].text if result.content else result)  # type: ignore[union-attr]


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8765/mcp")
