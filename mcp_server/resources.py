"""The `run://{run_id}` and `run://{run_id}/log` resources: list, templates, read (owner-scoped, redacted)."""

from __future__ import annotations

import json

import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from mcp_server.connections import ConnectionInfo
from mcp_server.errors import NotFound
from mcp_server.redact import Redactor
from mcp_server.runs import RunStore


class RunResources:
    """A connection sees only its own runs; anything else reads as "not found"."""

    def __init__(self, runs: RunStore, redactor: Redactor) -> None:
        self.runs = runs
        self.redactor = redactor

    def list_resources(self, info: ConnectionInfo) -> types.ListResourcesResult:
        resources: list[types.Resource] = []
        for run in self.runs.list(info.owner):
            resources.append(
                types.Resource(
                    uri=f"run://{run.run_id}", name=run.run_id, title=f"{run.tool} run", mime_type="application/json"
                )
            )
            resources.append(
                types.Resource(
                    uri=f"run://{run.run_id}/log",
                    name=f"{run.run_id}/log",
                    title=f"{run.tool} log",
                    mime_type="text/plain",
                )
            )
        return types.ListResourcesResult(resources=resources)

    @staticmethod
    def list_templates() -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(
            resource_templates=[
                types.ResourceTemplate(uri_template="run://{run_id}", name="run", mime_type="application/json"),
                types.ResourceTemplate(uri_template="run://{run_id}/log", name="run-log", mime_type="text/plain"),
            ]
        )

    def read(self, info: ConnectionInfo, uri: str) -> types.ReadResourceResult:
        if not uri.startswith("run://"):
            raise MCPError(INVALID_PARAMS, f"resource {uri!r} not found")
        run_id, _, part = uri[len("run://") :].partition("/")
        if part not in ("", "log"):
            raise MCPError(INVALID_PARAMS, f"resource {uri!r} not found")
        try:
            run = self.runs.get(info.owner, run_id)
        except NotFound:
            raise MCPError(INVALID_PARAMS, f"resource {uri!r} not found") from None
        # Redacted here, on the way out: the stored result is the tool's own (raw) data.
        if part == "log":
            text = self.redactor.redact(run.log.text())
            contents = types.TextResourceContents(uri=uri, mime_type="text/plain", text=text)
        else:
            body = {"run_id": run.run_id, "tool": run.tool, "running": run.running, "result": run.result}
            if run.result is None:
                body["summary"] = run.summary
            text = json.dumps(self.redactor.redact_value(body), default=str)
            contents = types.TextResourceContents(uri=uri, mime_type="application/json", text=text)
        return types.ReadResourceResult(contents=[contents])
