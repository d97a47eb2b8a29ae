"""The tool registry: lazy loading, cached schemas, deterministic paginated listing, availability.

Nothing here runs at start-up: tool modules are imported and their schemas built on the first
`tools/list` (or call). A tool whose backend is missing is not listed; `refresh()` re-checks
availability and reports whether the listed set changed, so the server can send `list_changed`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import BaseModel

from mcp_server.api import AppState, ToolSpec

logger = logging.getLogger("mcp_server.registry")

ToolLoader = Callable[[], Sequence[ToolSpec[Any]]]


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"tools:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        kind, _, number = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        offset = int(number)
        if kind != "tools" or offset < 0:
            raise ValueError(cursor)
        return offset
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise MCPError(INVALID_PARAMS, f"invalid cursor {cursor!r}") from None


@functools.cache
def _schema_of(args: type[BaseModel]) -> dict[str, Any]:
    schema: dict[str, Any] = args.model_json_schema()
    schema.pop("title", None)
    return schema


def input_schema_of(args: type[BaseModel]) -> dict[str, Any]:
    """A tool's input schema (its arguments model's JSON schema without the title), generated once
    per process: every server in it (the tests make hundreds) lists the same tools, and generating
    the schemas took 16 ms of each first `tools/list`. A copy: a caller may change its own."""
    return copy.deepcopy(_schema_of(args))


class ToolRegistry:
    def __init__(self, app: AppState, loaders: Sequence[ToolLoader]) -> None:
        self._app = app
        self._loaders = list(loaders)
        self._specs: dict[str, ToolSpec[Any]] | None = None
        self._schemas: dict[str, types.Tool] = {}
        self._available: dict[str, str | None] = {}
        self._listed: tuple[str, ...] | None = None

    def specs(self) -> dict[str, ToolSpec[Any]]:
        if self._specs is None:
            specs: dict[str, ToolSpec[Any]] = {}
            for loader in self._loaders:
                for spec in loader():
                    if spec.name in specs:
                        raise RuntimeError(f"duplicate tool name {spec.name!r}")
                    specs[spec.name] = spec
            self._specs = dict(sorted(specs.items()))  # deterministic order: by name
        return self._specs

    def get(self, name: str) -> ToolSpec[Any] | None:
        return self.specs().get(name)

    async def _check(self, spec: ToolSpec[Any]) -> str | None:
        if spec.available is None:
            return None
        try:
            return await spec.available(self._app)
        except Exception as exc:
            logger.exception("availability check of %s failed", spec.name)
            return f"availability check failed: {exc}"

    async def refresh(self) -> bool:
        """Re-check availability. True when the listed set changed since the last listing."""
        for spec in self.specs().values():
            self._available[spec.name] = await self._check(spec)
        listed = tuple(name for name in self.specs() if self._available.get(name) is None)
        changed = self._listed is not None and listed != self._listed
        self._listed = listed
        return changed

    def unavailable_reason(self, name: str) -> str | None:
        return self._available.get(name)

    def listed(self) -> tuple[str, ...]:
        return self._listed or ()

    def tool(self, name: str) -> types.Tool:
        """The schema of a tool, built once. Disabled tools say so in their description."""
        cached = self._schemas.get(name)
        if cached is not None:
            return cached
        spec = self.specs()[name]
        description = spec.description
        disabled = spec.disabled_reason(self._app.settings)
        if disabled:
            description = f"[{disabled}] {description}"
        schema = input_schema_of(spec.args)
        tool = types.Tool(
            name=spec.name,
            title=spec.title,
            description=description,
            input_schema=schema,
            output_schema=spec.output_schema,
            annotations=types.ToolAnnotations(
                title=spec.title,
                read_only_hint=spec.read_only,
                destructive_hint=False,
                idempotent_hint=spec.read_only,
                open_world_hint=False,
            ),
        )
        self._schemas[name] = tool
        return tool

    def input_schema(self, name: str) -> dict[str, Any] | None:
        if self.get(name) is None:
            return None
        return self.tool(name).input_schema

    async def list_page(self, cursor: str | None) -> types.ListToolsResult:
        if self._listed is None:
            await self.refresh()
        names = self.listed()
        offset = decode_cursor(cursor) if cursor else 0
        if offset > len(names):
            raise MCPError(INVALID_PARAMS, f"invalid cursor {cursor!r}: past the end of the list")
        size = self._app.settings.page_size
        chunk = names[offset : offset + size]
        next_cursor = encode_cursor(offset + size) if offset + size < len(names) else None
        return types.ListToolsResult(tools=[self.tool(n) for n in chunk], next_cursor=next_cursor)
