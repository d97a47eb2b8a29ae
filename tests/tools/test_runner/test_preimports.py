"""Learned pre-imports: a run's imports from outside the root are imported by the zygote before
the next runs fork; a module that imports project code or leaves a thread is dropped, and the
zygote replaced without it."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.tools.test_runner.conftest import write_project

pytestmark = pytest.mark.anyio

TEST = """
import sys

PRE = {name: name in sys.modules for name in ("colorsys", "plain_mod")}

import colorsys  # noqa: E402
import plain_mod  # noqa: E402
import sneaky_mod  # noqa: E402
import threaded_mod  # noqa: E402


def test_preimported():
    assert colorsys and plain_mod and sneaky_mod and threaded_mod
    assert all(PRE.values()), PRE
"""


def libraries(folder: Path) -> Path:
    """Modules outside the root, on PYTHONPATH: a plain one, one that imports the project's code
    (from the working directory), one that starts a thread when imported."""
    (folder / "__pycache__").mkdir(parents=True)  # the folder itself then keeps its mtime (env fingerprint)
    (folder / "plain_mod.py").write_text("VALUE = 1\n")
    (folder / "sneaky_mod.py").write_text("import os, sys\nsys.path.insert(0, os.getcwd())\nimport projmod\n")
    (folder / "threaded_mod.py").write_text(
        textwrap.dedent(
            """
            import threading, time
            threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
            """
        )
    )
    return folder


async def test_learned_preimports_and_unsafe_modules_dropped(
    memory_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(libraries(tmp_path / "libs")))
    root = write_project(tmp_path / "proj", {"projmod.py": "VALUE = 2\n", "test_pre.py": TEST})
    with anyio.fail_after(120):
        async with memory_client(root, pass_env=["PYTHONPATH"]) as client:

            async def run() -> dict[str, Any]:
                result = await client.call_tool("run_tests", {})
                assert not result.is_error, result.content
                return result.structured_content or {}

            first = await run()  # nothing learned yet: imported in the run
            assert first["status"] == "failed" and "warnings" not in first
            second = await run()  # sneaky_mod imports project code: dropped, zygote replaced
            assert second["status"] == "failed"
            assert any("sneaky_mod: imports project code (projmod)" in w for w in second["warnings"])
            third = await run()  # threaded_mod leaves a thread: dropped, zygote replaced
            assert third["status"] == "failed"
            assert any("threaded_mod: leaves a thread running" in w for w in third.get("warnings", [])), third
            fourth = await run()  # the rest is pre-imported by the zygote
            assert fourth["status"] == "passed", fourth["failures"]
            assert "warnings" not in fourth


VENV_TEST = """
import sys

PRE = "venv_mod" in sys.modules

import venv_mod  # noqa: E402
import venv_sneaky  # noqa: E402


def test_venv_preimported():
    assert venv_mod.VALUE == 1 and venv_sneaky
    assert PRE
"""


async def test_packages_of_a_venv_inside_the_root_are_preimported(
    memory_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project's own `.venv` lives under its root: what is installed there is third-party code
    (the recorder does not record it either), so it is learned and pre-imported; a package there
    that imports the project's code is still dropped."""
    root = write_project(tmp_path / "proj", {"projmod.py": "VALUE = 2\n", "test_venv.py": VENV_TEST})
    site = root / ".venv" / "lib" / "site-packages"
    (site / "__pycache__").mkdir(parents=True)
    (site / "venv_mod.py").write_text("VALUE = 1\n")
    (site / "venv_sneaky.py").write_text("import os, sys\nsys.path.insert(0, os.getcwd())\nimport projmod\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    with anyio.fail_after(120):
        async with memory_client(root, pass_env=["PYTHONPATH"]) as client:

            async def run() -> dict[str, Any]:
                result = await client.call_tool("run_tests", {})
                assert not result.is_error, result.content
                return result.structured_content or {}

            first = await run()  # nothing learned yet
            assert first["status"] == "failed"
            second = await run()  # venv_sneaky imports project code: dropped, zygote replaced
            assert any("venv_sneaky: imports project code (projmod)" in w for w in second.get("warnings", [])), second
            third = await run()  # venv_mod comes pre-imported
            assert third["status"] == "passed", third["failures"]
            assert "warnings" not in third


NOT_PREIMPORTED = """
import sys

PRE = "plain_mod" in sys.modules

import plain_mod  # noqa: E402


def test_imported_by_the_run():
    assert plain_mod.VALUE == 1
    assert not PRE
"""


@pytest.mark.parametrize(("learn", "record"), [(True, True), (True, False), (False, True)])
async def test_the_learn_imports_setting(
    memory_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, learn: bool, record: bool
) -> None:
    """`learn_imports = false`: the zygote never pre-imports what runs imported (the benchmark's
    baseline for the gain); on, the second run finds the module imported before the test module,
    with `record_tests = false` too (it learned nothing then: the imports were written with the
    records)."""
    monkeypatch.setenv("PYTHONPATH", str(libraries(tmp_path / "libs")))
    root = write_project(tmp_path / "proj", {"test_off.py": NOT_PREIMPORTED})
    with anyio.fail_after(120):
        async with memory_client(root, pass_env=["PYTHONPATH"], learn_imports=learn, record_tests=record) as client:
            for expected in ("passed", "failed" if learn else "passed"):
                result = await client.call_tool("run_tests", {})
                assert not result.is_error, result.content
                assert (result.structured_content or {})["status"] == expected, result.structured_content
