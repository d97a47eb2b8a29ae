"""The server's own behaviour: pagination, output budget and run contexts, list_changed, resources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError
from pydantic import Field

from mcp_server.api import AppState, ToolArgs, ToolContext, ToolOutput, ToolSpec
from mcp_server.builtin_tools import load_builtin_tools
from mcp_server.registry import input_schema_of
from mcp_server.server import CodeToolsServer
from mcp_server.transports.memory import memory_transport
from tests.conftest import ClientFactory, make_settings

pytestmark = pytest.mark.anyio


# --- over every transport -----------------------------------------------------------------------


async def test_tools_list_is_paginated_and_deterministic(mcp_client: ClientFactory) -> None:
    with anyio.fail_after(30):
        async with mcp_client(page_size=1) as client:
            names: list[str] = []
            cursor: str | None = None
            pages = 0
            while True:
                page = await client.list_tools(cursor=cursor, cache_mode="bypass")
                assert len(page.tools) <= 1
                names += [t.name for t in page.tools]
                pages += 1
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert pages == len(names) >= 2
            assert names == sorted(names)
            assert {"get_run", "cancel_run"} <= set(names)
            with pytest.raises(MCPError, match="invalid cursor"):
                await client.list_tools(cursor="not-a-cursor", cache_mode="bypass")


async def test_default_page_holds_every_tool(mcp_client: ClientFactory) -> None:
    with anyio.fail_after(30):
        async with mcp_client() as client:
            page = await client.list_tools()
            assert page.next_cursor is None
            for tool in page.tools:
                assert tool.input_schema["type"] == "object"
                assert tool.description


# --- in-process, with tools of the test's own --------------------------------------------------


class BigArgs(ToolArgs):
    n: int = Field(default=2000, ge=0)


def test_input_schemas_are_generated_once_per_process_and_handed_out_as_copies() -> None:
    first = input_schema_of(BigArgs)
    assert first["properties"]["n"]["default"] == 2000 and "title" not in first
    first["properties"]["n"]["default"] = 1  # one server's copy: never another's
    second = input_schema_of(BigArgs)
    assert second["properties"]["n"]["default"] == 2000 and second is not first
    assert second == {k: v for k, v in BigArgs.model_json_schema().items() if k != "title"}


async def big_handler(ctx: ToolContext, args: BigArgs) -> ToolOutput:
    items = [{"i": i, "text": f"item number {i} " + "x" * 40} for i in range(args.n)]
    return ToolOutput({"items": items, "total": args.n})


class Toggle:
    def __init__(self) -> None:
        self.on = False

    async def available(self, app: AppState) -> str | None:
        return None if self.on else "backend missing"


def loaders(toggle: Toggle) -> list[Any]:
    def extra() -> list[ToolSpec[Any]]:
        return [
            ToolSpec(name="big", title="Big", description="A large result.", args=BigArgs, handler=big_handler),
            ToolSpec(
                name="late",
                title="Late",
                description="Appears when its backend does.",
                args=BigArgs,
                handler=big_handler,
                available=toggle.available,
            ),
        ]

    return [load_builtin_tools, extra]


@asynccontextmanager
async def serve(tmp_path: Path, toggle: Toggle | None = None, **settings: Any) -> AsyncIterator[CodeToolsServer]:
    app = CodeToolsServer(make_settings(tmp_path, tmp_path, **settings), loaders=loaders(toggle or Toggle()))
    async with app.running():
        yield app


def structured(result: types.CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_over_budget_result_is_truncated_and_paged_from_the_run(tmp_path: Path, mode: str) -> None:
    with anyio.fail_after(30):
        async with serve(tmp_path, output_budget=5000) as app, Client(memory_transport(app), mode=mode) as client:
            result = await client.call_tool("big", {"n": 2000})
            data = structured(result)
            assert data["truncated"] is True
            assert data["total"] == 2000
            assert 0 < len(data["items"]) < 2000
            assert len(result.content[0].text) <= 5000  # type: ignore[union-attr]
            run_id = data["run_id"]
            seen: list[int] = []
            offset: int | None = 0
            while offset is not None:
                page = structured(
                    await client.call_tool(
                        "get_run", {"run_id": run_id, "section": "items", "offset": offset, "limit": 500}
                    )
                )
                seen += [item["i"] for item in page["items"]]
                offset = page["next_offset"]
            assert seen == list(range(2000))
            summary = structured(await client.call_tool("get_run", {"run_id": run_id}))
            assert summary["total"] == 2000 and summary["truncated"] is True
            bad = await client.call_tool("get_run", {"run_id": run_id, "section": "nope"})
            assert bad.is_error and "items" in bad.content[0].text  # type: ignore[union-attr]


async def test_small_result_makes_no_run(tmp_path: Path) -> None:
    async with serve(tmp_path) as app, Client(memory_transport(app)) as client:
        data = structured(await client.call_tool("big", {"n": 3}))
        assert data["truncated"] is False and "run_id" not in data
        assert len(app.app.runs) == 0


async def test_runs_belong_to_their_connection_and_die_with_it(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with serve(tmp_path, output_budget=2000) as app:
            async with Client(memory_transport(app)) as owner, Client(memory_transport(app)) as other:
                run_id = structured(await owner.call_tool("big", {"n": 500}))["run_id"]
                foreign = await other.call_tool("get_run", {"run_id": run_id})
                unknown = await other.call_tool("get_run", {"run_id": "run_" + "x" * 24})
                assert foreign.is_error and unknown.is_error
                # Same answer for a foreign and an unknown run, apart from the id itself.
                assert foreign.content[0].text.replace(run_id, "ID") == (  # type: ignore[union-attr]
                    unknown.content[0].text.replace("run_" + "x" * 24, "ID")  # type: ignore[union-attr]
                )
                listed = await owner.list_resources(cache_mode="bypass")
                uris = {str(r.uri) for r in listed.resources}
                assert uris == {f"run://{run_id}", f"run://{run_id}/log"}
                assert (await other.list_resources(cache_mode="bypass")).resources == []
                body = await owner.read_resource(f"run://{run_id}", cache_mode="bypass")
                assert run_id in body.contents[0].text  # type: ignore[union-attr]
                with pytest.raises(MCPError, match="not found"):
                    await other.read_resource(f"run://{run_id}", cache_mode="bypass")
                assert len(app.app.runs) == 1
            # Both connections closed: their runs are gone.
            assert len(app.app.runs) == 0


async def test_list_changed_when_a_backend_appears_legacy(tmp_path: Path) -> None:
    toggle = Toggle()
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    with anyio.fail_after(30):
        async with (
            serve(tmp_path, toggle, tool_poll_interval_s=0.05) as app,
            Client(memory_transport(app), mode="legacy", message_handler=on_message) as client,
        ):
            names = [t.name for t in (await client.list_tools(cache_mode="bypass")).tools]
            assert "late" not in names and "big" in names
            late = await client.call_tool("late", {"n": 1})
            assert late.is_error and "backend missing" in late.content[0].text  # type: ignore[union-attr]
            toggle.on = True
            await changed.wait()
            names = [t.name for t in (await client.list_tools(cache_mode="bypass")).tools]
            assert "late" in names
            assert not (await client.call_tool("late", {"n": 1})).is_error


async def test_list_changed_when_a_backend_appears_2026(tmp_path: Path) -> None:
    toggle = Toggle()
    with anyio.fail_after(30):
        async with (
            serve(tmp_path, toggle, tool_poll_interval_s=0.05) as app,
            Client(memory_transport(app), mode="auto") as client,
        ):
            assert "late" not in [t.name for t in (await client.list_tools(cache_mode="bypass")).tools]
            async with client.listen(tools_list_changed=True) as sub:
                toggle.on = True
                async for _event in sub:
                    break
            assert "late" in [t.name for t in (await client.list_tools(cache_mode="bypass")).tools]


async def test_policy_disabled_tool_is_listed_with_reason_and_refused(tmp_path: Path) -> None:
    async def never(ctx: ToolContext, args: BigArgs) -> ToolOutput:
        raise AssertionError("a disabled tool must not run")

    def extra() -> list[ToolSpec[Any]]:
        return [
            ToolSpec(
                name="runs_code",
                title="Runs code",
                description="Runs project code.",
                args=BigArgs,
                handler=never,
                requires_test_execution=True,
            )
        ]

    settings = make_settings(tmp_path, tmp_path, allow_test_execution=False)
    app = CodeToolsServer(settings, loaders=[load_builtin_tools, extra])
    async with Client(memory_transport(app)) as client:
        tool = next(t for t in (await client.list_tools()).tools if t.name == "runs_code")
        assert "disabled" in (tool.description or "") and "allow_test_execution" in (tool.description or "")
        result = await client.call_tool("runs_code", {})
        assert result.is_error and "allow_test_execution" in result.content[0].text  # type: ignore[union-attr]
