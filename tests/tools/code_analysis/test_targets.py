"""Resolving many path arguments is file-system work: it happens in a worker thread, not on the loop."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_server.api import ToolContext
from tests.conftest import ClientFactory
from tests.tools.code_analysis.conftest import call, write_project

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("transport", ["memory"])
async def test_many_path_arguments_are_resolved_off_the_event_loop(
    mcp_client: ClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11 item 10: up to 1,000 paths were resolved (and stat-ed) on the event loop."""
    root = write_project(tmp_path / "project")
    names = [f"pkg/m{i:03}.py" for i in range(200)]
    for name in names:
        (root / name).write_text("x = 1\n", encoding="utf-8")
    threads: list[str] = []
    resolve = ToolContext.path

    def spy(self: ToolContext, raw: str, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return resolve(self, raw, **kwargs)

    monkeypatch.setattr(ToolContext, "path", spy)
    loop_thread = threading.current_thread().name  # the memory transport serves on this loop
    with anyio.fail_after(60):
        async with mcp_client(root) as client:
            few = await call(client, "lint", {"paths": names[:2]})
            assert few["files_checked"] == 2 and set(threads) == {loop_thread}  # a few: inline, cheap
            threads.clear()
            many = await call(client, "lint", {"paths": names})
            assert many["files_checked"] == 200
            assert len(threads) == 200 and loop_thread not in threads
