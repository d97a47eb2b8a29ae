"""A Python client over Streamable HTTP: the SDK 2.x `Client` needs nothing but the URL.

Start a server first:   mcp-code-tools --transport http --port 8766 --root /path/to/project
Then:                   python examples/http_client.py [http://127.0.0.1:8766/mcp]

With a token on the server (MCP_CODE_TOOLS_TOKEN), export the same variable here: it is sent as
`Authorization: Bearer <token>`.
"""

from __future__ import annotations

import os
import sys

import anyio
import httpx2
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

refusals: list[str] = []
"""What the server said when it refused a request (401 without a valid token, 403 for a foreign Origin)."""


async def remember_refusal(response: httpx2.Response) -> None:
    if response.status_code in (401, 403):
        await response.aread()
        try:
            message = str(response.json().get("error", response.text))
        except ValueError:
            message = response.text
        refusals.append(f"HTTP {response.status_code}: {message}")


async def main(url: str) -> None:
    token = os.environ.get("MCP_CODE_TOOLS_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(
            headers=headers, timeout=httpx2.Timeout(30, read=300), event_hooks={"response": [remember_refusal]}
        ) as http,
        Client(streamable_http_client(url, http_client=http), mode="auto") as client,
    ):
        tools = await client.list_tools()
        print("tools:", ", ".join(tool.name for tool in tools.tools))
        result = await client.call_tool("lint", {"source": "import os\n", "select": ["F401"]})
        print("lint of `import os`:", result.content[0].text if result.content else result)  # type: ignore[union-attr]


if __name__ == "__main__":
    try:
        anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8766/mcp")
    except Exception:
        if not refusals:
            raise
        print(f"the server refused the connection: {refusals[0]}", file=sys.stderr)
        sys.exit(1)
