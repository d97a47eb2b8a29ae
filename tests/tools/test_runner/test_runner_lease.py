"""The lease of a run (`runner.RunBase.lease`): learned pre-imports are read from the test
database only when the zygote can lack some."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.tools.test_runner.conftest import write_project
from tools.test_runner import preimports

pytestmark = pytest.mark.anyio


async def test_learned_preimports_are_read_again_only_when_runs_import_something_new(
    memory_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The zygote's pre-imports are checked against the database on its first run and after a
    run imported a module it does not have; runs that import nothing new skip that read."""
    reads: list[Path] = []
    wanted = preimports.wanted

    def counting(folder: Path, env: str) -> tuple[list[str], str | None]:
        reads.append(folder)
        return wanted(folder, env)

    monkeypatch.setattr(preimports, "wanted", counting)
    root = write_project(tmp_path / "proj", {"test_a.py": "import colorsys\n\n\ndef test_a():\n    assert colorsys\n"})
    with anyio.fail_after(60):
        async with memory_client(root) as client:
            for _ in range(4):
                result = await client.call_tool("run_tests", {})
                assert (result.structured_content or {})["status"] == "passed"
    # 1st run: a fresh zygote; 2nd: the 1st imported colorsys (now learned); then nothing new
    assert len(reads) == 2
