"""Affected-test selection (`run_tests(affected=true)`, `list_tests(affected=true)`) on temporary
projects: what an edit selects, what widens the selection, and bad input."""

from __future__ import annotations

import os
import sqlite3
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client

from mcp_server.cachedir import root_key
from tests.tools.test_runner.conftest import write_project

pytestmark = pytest.mark.anyio

ALPHA = """
def add(a, b):
    return a + b


def mul(a, b):
    return a * b
"""
BETA = """
from pkg.alpha import add

LIMIT = 10


def twice(x):
    return add(x, x)


def neg(x):
    return -x
"""
TEST_ALPHA = """
from pkg.alpha import add, mul


def test_add():
    assert add(1, 2) == 3


def test_mul():
    assert mul(2, 3) == 6
"""
TEST_BETA = """
from pkg import beta


def test_twice():
    assert beta.twice(2) == 4


def test_neg():
    assert beta.neg(2) == -2


def test_limit():
    assert beta.LIMIT == 10
"""
ALL = {
    "tests/test_alpha.py::test_add",
    "tests/test_alpha.py::test_mul",
    "tests/test_beta.py::test_twice",
    "tests/test_beta.py::test_neg",
    "tests/test_beta.py::test_limit",
}


def make(tmp_path: Path) -> Path:
    return write_project(
        tmp_path / "proj",
        {
            "pkg/__init__.py": "",
            "pkg/alpha.py": ALPHA,
            "pkg/beta.py": BETA,
            "tests/test_alpha.py": TEST_ALPHA,
            "tests/test_beta.py": TEST_BETA,
            "data.txt": "one\n",
        },
    )


def edit(path: Path, old: str, new: str) -> None:
    """Change a file; its mtime moves on by a second (coarse file-system clocks)."""
    text = path.read_text() if path.exists() else ""
    before = path.stat().st_mtime if path.exists() else 0.0
    path.write_text(text.replace(old, new) if old else new)
    mtime = max(before + 1, path.stat().st_mtime)
    os.utime(path, (mtime, mtime))


async def run(client: Client, **args: Any) -> dict[str, Any]:
    result = await client.call_tool("run_tests", {"affected": True, **args})
    assert not result.is_error, result.content
    return result.structured_content or {}


async def plan(client: Client) -> set[str]:
    result = await client.call_tool("list_tests", {"affected": True})
    assert not result.is_error, result.content
    listed = result.structured_content or {}
    assert listed["selection"]["selected"] == len(listed["tests"])
    return set(listed["tests"])


async def test_edits_select_exactly_the_dependent_tests(
    memory_client: Any, tmp_path: Path, project_python: dict[str, str]
) -> None:
    root = make(tmp_path)
    with anyio.fail_after(120):
        async with memory_client(root, **project_python) as client:
            first = await run(client)
            assert first["status"] == "passed" and first["counts"]["passed"] == 5
            assert first["selection"]["mode"] == "all"
            assert first["selection"]["reasons"]["no_data"] == 5

            assert await plan(client) == set()
            again = await run(client)
            assert again["selection"] == {
                "mode": "affected",
                "selected": 0,
                "skipped_unaffected": 5,
                "reasons": {"changed_files": [], "new_tests": 0, "failed_last": 0, "no_data": 0},
            }
            assert again["counts"]["passed"] == 0 and again["counts"]["deselected"] == 0

            # One function's body: only the tests that executed it (not every importer).
            edit(root / "pkg/alpha.py", "return a * b", "return b * a")
            assert await plan(client) == {"tests/test_alpha.py::test_mul"}
            edited = await run(client)
            assert edited["counts"]["passed"] == 1
            assert edited["selection"]["reasons"]["changed_files"] == ["pkg/alpha.py"]
            assert edited["selection"]["skipped_unaffected"] == 4
            assert await plan(client) == set()

            # A function called through another module.
            edit(root / "pkg/alpha.py", "return a + b", "return b + a")
            assert await plan(client) == {"tests/test_alpha.py::test_add", "tests/test_beta.py::test_twice"}
            await run(client)

            # The module level (a constant read by a test through the module object), written
            # differently: the same state after the import, so only the tests that refer to it.
            edit(root / "pkg/beta.py", "LIMIT = 10", "LIMIT = 5 + 5")
            selected = await plan(client)
            assert "tests/test_beta.py::test_limit" in selected and "tests/test_alpha.py::test_mul" not in selected
            same = await run(client)
            assert same["selection"]["reasons"]["import_state"] == "same"

            # The module level with a new name in it: the state every test ran with is not the
            # same, and every test runs (test_mul's module does not import beta, but a whole run
            # imports it before test_mul runs).
            edit(root / "pkg/beta.py", "LIMIT = 5 + 5", "LIMIT = 10  # the same\nOTHER = 1")
            assert await plan(client) == ALL
            changed = await run(client)
            assert changed["selection"]["reasons"]["import_state"] == "changed"
            assert changed["counts"]["passed"] == 5

            # A test module's own edit: its tests run (and only the module's).
            edit(root / "tests/test_beta.py", "assert beta.neg(2) == -2", "assert beta.neg(3) == -3")
            assert await plan(client) == {
                "tests/test_beta.py::test_twice",
                "tests/test_beta.py::test_neg",
                "tests/test_beta.py::test_limit",
            }
            await run(client)

            # A new test runs, and is counted as new.
            edit(
                root / "tests/test_new.py",
                "",
                "from pkg.beta import neg\n\n\ndef test_new():\n    assert neg(0) == 0\n",
            )
            new = await run(client)
            assert new["counts"]["passed"] == 1
            assert new["selection"]["reasons"]["new_tests"] == 1
            assert await plan(client) == set()

            # A deleted module: the tests that used it run (their module no longer imports).
            beta = (root / "pkg/beta.py").read_text()
            (root / "pkg/beta.py").unlink()
            broken = await run(client)
            assert broken["status"] == "error" and "during collection" in broken["message"]
            assert [f["nodeid"] for f in broken["failures"]] == ["tests/test_beta.py", "tests/test_new.py"]
            assert broken["counts"]["passed"] == 0  # pytest runs nothing after a collection error
            assert broken["selection"]["reasons"]["import_state"] == "changed"  # no pkg.beta to import
            edit(root / "pkg/beta.py", "", beta)
            assert await plan(client) == set()  # the same code as when they last passed


@pytest.mark.parametrize(
    "change",
    [
        ("conftest.py", "", "import pytest\n"),
        ("tests/conftest.py", "", "X = 1\n"),
        ("pytest.ini", "[pytest]\n", "[pytest]\naddopts = -q\n"),
        ("data.txt", "one", "two"),
    ],
)
async def test_what_the_recorder_cannot_see_runs_everything(
    memory_client: Any, tmp_path: Path, change: tuple[str, str, str]
) -> None:
    root = make(tmp_path)
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            await run(client)
            assert await plan(client) == set()
            name, old, new = change
            edit(root / name, old, new)
            assert await plan(client) == ALL
            result = await run(client)
            assert result["counts"]["passed"] == 5
            assert name in result["selection"]["reasons"]["changed_files"]
            assert await plan(client) == set()


async def test_a_failing_test_stays_selected_until_it_passes(memory_client: Any, tmp_path: Path) -> None:
    root = make(tmp_path)
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            await run(client)
            edit(root / "pkg/beta.py", "return -x", "return x")
            failed = await run(client)
            assert failed["status"] == "failed"
            assert [f["nodeid"] for f in failed["failures"]] == ["tests/test_beta.py::test_neg"]
            for _ in range(2):
                again = await run(client)
                assert again["status"] == "failed" and again["selection"]["reasons"]["failed_last"] == 1
                assert again["selection"]["selected"] == 1
            edit(root / "pkg/beta.py", "return x\n", "return -x\n")
            fixed = await run(client)
            assert fixed["status"] == "passed" and fixed["counts"]["passed"] == 1
            assert await plan(client) == set()


async def test_plain_runs_record_too_and_filters_keep_other_records(memory_client: Any, tmp_path: Path) -> None:
    root = make(tmp_path)
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            plain = await client.call_tool("run_tests", {})
            assert "selection" not in (plain.structured_content or {})
            assert await plan(client) == set()
            # A full run with valid records runs its tests untraced: their records stay as they were.
            again = await client.call_tool("run_tests", {})
            assert (again.structured_content or {})["counts"]["passed"] == 5
            edit(root / "pkg/beta.py", "return -x", "return -x if x else 0")
            assert await plan(client) == {"tests/test_beta.py::test_neg"}
            await client.call_tool("run_tests", {})
            assert await plan(client) == set()
            edit(root / "pkg/alpha.py", "return a * b", "return b * a")
            one = await client.call_tool("run_tests", {"select": ["tests/test_beta.py::test_neg"]})
            assert (one.structured_content or {})["counts"]["passed"] == 1
            assert await plan(client) == {"tests/test_alpha.py::test_mul"}
            await client.call_tool("run_tests", {"keyword": "mul"})
            assert await plan(client) == set()


def database(tmp_path: Path, root: Path) -> Path:
    return tmp_path / "server-cache" / root_key(root) / "tests.sqlite3"


def truncate(path: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


async def test_records_of_another_environment_are_ignored(memory_client: Any, tmp_path: Path) -> None:
    root = make(tmp_path)
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            await run(client)
            assert await plan(client) == set()
            with sqlite3.connect(database(tmp_path, root)) as conn:
                conn.execute("UPDATE aff_tests SET env = 'another interpreter|x|y'")
            result = await run(client)
            assert result["selection"]["mode"] == "all" and result["counts"]["passed"] == 5
            assert await plan(client) == set()


async def test_a_truncated_database_is_rebuilt_with_a_warning(memory_client: Any, tmp_path: Path) -> None:
    root = make(tmp_path)
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            await run(client)
        truncate(database(tmp_path, root))
        async with memory_client(root) as client:
            result = await run(client)
            assert result["counts"]["passed"] == 5 and result["selection"]["mode"] == "all"
            assert any("moved aside" in w for w in result["warnings"])
            assert await plan(client) == set()


async def test_cwd_and_sys_path_changes_do_not_corrupt_records(memory_client: Any, tmp_path: Path) -> None:
    root = make(tmp_path)
    (root / "tests/test_wander.py").write_text(
        textwrap.dedent(
            """
            import os, sys
            from pkg.alpha import mul

            def test_wander(tmp_path):
                os.chdir(tmp_path)
                sys.path.insert(0, str(tmp_path))
                assert mul(1, 1) == 1
            """
        )
    )
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            await run(client)
            assert await plan(client) == set()
            edit(root / "pkg/alpha.py", "return a + b", "return b + a")
            assert await plan(client) == {"tests/test_alpha.py::test_add", "tests/test_beta.py::test_twice"}


async def test_a_shared_fixture_counts_for_every_test_that_uses_it(memory_client: Any, tmp_path: Path) -> None:
    root = make(tmp_path)
    (root / "tests/test_shared.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from pkg.alpha import mul

            @pytest.fixture(scope="module")
            def six():
                return mul(2, 3)

            def test_first(six):
                assert six

            def test_second(six):
                assert six == 6
            """
        )
    )
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            await run(client)
            edit(root / "pkg/alpha.py", "return a * b", "return b * a")
            assert await plan(client) == {
                "tests/test_alpha.py::test_mul",
                "tests/test_shared.py::test_first",
                "tests/test_shared.py::test_second",
            }


async def test_collection_errors_are_reported_as_usual(memory_client: Any, tmp_path: Path) -> None:
    root = write_project(tmp_path / "broken", {"test_broken.py": "def test_x(:\n    pass\n"})
    with anyio.fail_after(60):
        async with memory_client(root) as client:
            result = await client.call_tool("run_tests", {"affected": True})
            structured = result.structured_content or {}
            assert structured["status"] == "error" and "error during collection" in structured["message"]
            assert structured["selection"]["mode"] == "all"


async def test_a_module_imported_from_an_archive_in_the_root_leaves_the_records_usable(
    memory_client: Any, tmp_path: Path
) -> None:
    # jinja2's test_package_zip_source imports a package from tests/res/package.zip inside a test:
    # its code's file (`tests/res/package.zip/t_pack/__init__.py`) is under the root but no file, and
    # every test, which depends on what tests import lazily, was left without a record.
    root = make(tmp_path)
    with zipfile.ZipFile(root / "tests/res.zip", "w") as archive:
        archive.writestr("zpack/__init__.py", "def value():\n    return 1\n")
    test = "import sys\n\n\ndef test_zip():\n    sys.path.insert(0, __file__.rsplit('/', 1)[0] + '/res.zip')\n"
    test += "    import zpack\n\n    assert zpack.value() == 1\n"
    (root / "tests/test_zip.py").write_text(test)
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            first = await run(client)
            assert first["counts"]["passed"] == 6
            assert await plan(client) == set()
            edit(root / "pkg/alpha.py", "return a * b", "return b * a")
            assert await plan(client) == {"tests/test_alpha.py::test_mul"}
            await run(client)
            with zipfile.ZipFile(root / "tests/res.zip", "a") as archive:  # the archive: run all
                archive.writestr("zpack/extra.py", "")
            assert await plan(client) == ALL | {"tests/test_zip.py::test_zip"}


async def test_a_test_that_only_touches_a_data_file_changes_nothing(memory_client: Any, tmp_path: Path) -> None:
    # jinja2's suite sets a template's times with os.utime: counted by its stat signature, that
    # file changed in every run, and the next affected run ran everything (after a full run with
    # nothing to record again, with no changed file named).
    root = make(tmp_path)
    touch = "import os\nimport time\n\n\ndef test_touch():\n    t = time.time() + 5\n"
    touch += "    os.utime(os.path.join(os.path.dirname(__file__), '..', 'data.txt'), (t, t))\n"
    (root / "tests/test_touch.py").write_text(touch)
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            assert (await run(client))["counts"]["passed"] == 6
            assert await plan(client) == set()
            plain = await client.call_tool("run_tests", {})  # a full run: all valid, none traced
            assert (plain.structured_content or {})["counts"]["passed"] == 6
            assert await plan(client) == set()
            edit(root / "data.txt", "one", "two")  # its content: everything, and it says which
            assert await plan(client) == ALL | {"tests/test_touch.py::test_touch"}
            assert (await run(client))["selection"]["reasons"]["changed_files"] == ["data.txt"]
