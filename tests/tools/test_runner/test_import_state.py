"""Functions the project runs while importing itself (`MO = Weekday(0)`): an edit selects the
tests that call them, and every test when the state the import leaves is not the same
(`recorder.py` digests it before collecting, `plan.py` marks such tests pending)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.tools.test_runner.conftest import write_project
from tests.tools.test_runner.test_affected import edit, plan, run

pytestmark = pytest.mark.anyio

DAYS = """
class Weekday:
    def __init__(self, weekday, n=None):
        self.weekday = weekday
        self.n = n

    def __call__(self, n):
        return Weekday(self.weekday, n)


def make_adder(k):
    namespace = {}
    exec("def add(x):\\n    return x + " + str(k), namespace)
    return namespace["add"]


MO = Weekday(0)
ADD3 = make_adder(3)
"""
TEST_DAYS = """
from pkg.days import MO, ADD3


def test_mo_is_plain():
    assert MO.weekday == 0 and MO.n is None


def test_add3():
    assert ADD3(1) == 4
"""
TEST_CALLS = """
from pkg.days import MO


def test_second_monday():
    assert MO(2).n == 2
"""
TEST_OTHER = """
def test_other():
    assert 1 + 1 == 2
"""
ALL = {
    "tests/test_days.py::test_mo_is_plain",
    "tests/test_days.py::test_add3",
    "tests/test_calls.py::test_second_monday",
    "tests/test_other.py::test_other",
}


async def test_import_time_edits(memory_client: Any, tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "proj",
        {
            "pkg/__init__.py": "",
            "pkg/days.py": DAYS,
            "tests/test_days.py": TEST_DAYS,
            "tests/test_calls.py": TEST_CALLS,
            "tests/test_other.py": TEST_OTHER,
        },
    )
    days = root / "pkg/days.py"
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            assert (await run(client))["counts"]["passed"] == 4
            assert await plan(client) == set()

            # A harmless edit to a function the import runs: the same state, so only the test
            # that calls it afterwards (every test before: they all depend on the import).
            edit(days, "        self.weekday = weekday\n", "        _edit = None\n        self.weekday = weekday\n")
            assert await plan(client) == {"tests/test_calls.py::test_second_monday"}
            same = await run(client)
            assert same["counts"]["passed"] == 1
            assert same["selection"]["reasons"]["import_state"] == "same"
            assert same["selection"]["reasons"]["changed_files"] == ["pkg/days.py"]
            assert await plan(client) == set()

            # An edit that changes what the import leaves (MO.n): every test runs, and the one
            # that fails is found, though no test calls __init__ with n missing.
            edit(days, "        self.n = n\n", "        self.n = n if n is not None else 0\n")
            assert await plan(client) == ALL
            changed = await run(client)
            assert changed["selection"]["reasons"]["import_state"] == "changed"
            assert {f["nodeid"] for f in changed["failures"]} == {"tests/test_days.py::test_mo_is_plain"}
            edit(days, "        self.n = n if n is not None else 0\n", "        self.n = n\n")
            assert (await run(client))["status"] == "passed"

            # Code generated at import (no block records it): its change is a change of state.
            edit(days, 'return x + " + str(k)', 'return x + 1 + " + str(k)')
            generated = await run(client)
            assert generated["selection"]["reasons"]["import_state"] == "changed"
            assert {f["nodeid"] for f in generated["failures"]} == {"tests/test_days.py::test_add3"}


async def test_a_state_taken_at_another_point_is_rebased(memory_client: Any, tmp_path: Path) -> None:
    """The first run takes its digests at the end of its collection, after a test module changed
    the project's state (it registers itself); later runs take them before collecting. A run in
    which nothing the import ran changed records the records' state anew, so the next import-time
    edit is checked against the same point (without it, that check fails once: every test runs)."""
    root = write_project(
        tmp_path / "proj",
        {
            "pkg/__init__.py": "",
            "pkg/days.py": DAYS + "\nREGISTRY = []\n",
            "tests/test_days.py": TEST_DAYS + "\nfrom pkg import days\ndays.REGISTRY.append('test_days')\n",
            "tests/test_calls.py": TEST_CALLS,
            "tests/test_other.py": TEST_OTHER,
        },
    )
    days = root / "pkg/days.py"
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            assert (await run(client))["counts"]["passed"] == 4
            assert (await run(client))["selection"]["selected"] == 0  # digests before collecting
            edit(days, "        self.weekday = weekday\n", "        _edit = None\n        self.weekday = weekday\n")
            same = await run(client)
            assert same["selection"]["reasons"]["import_state"] == "same"
            assert same["counts"]["passed"] == 1


async def test_modules_imported_before_collecting_are_the_same_files(memory_client: Any, tmp_path: Path) -> None:
    """The child imports the last run's modules by name before collecting, when pytest has not yet
    put the test folder first on `sys.path`: a name that then means another file (the root's own
    `helpers`, a package `pkgh` beside the tests' one) must not be imported, nor its parent."""
    root = write_project(
        tmp_path / "proj",
        {
            "helpers.py": "WHICH = 'root'\n",
            "pkgh/__init__.py": "WHICH = 'root'\n",
            "tests/helpers.py": "WHICH = 'tests'\n",
            "tests/pkgh/__init__.py": "WHICH = 'tests'\n",
            "tests/pkgh/mod.py": "VALUE = 1\n",
            "tests/test_h.py": (
                "import helpers\nimport pkgh.mod\n\n\n"
                "def test_which():\n    assert helpers.WHICH == 'tests' and pkgh.WHICH == 'tests'\n"
            ),
        },
    )
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            for _ in range(3):  # the second and third import the first's modules before collecting
                result = await client.call_tool("run_tests", {})
                assert not result.is_error, result.content
                assert (result.structured_content or {})["status"] == "passed", result.structured_content


async def test_a_package_listed_after_its_submodule(memory_client: Any, tmp_path: Path) -> None:
    """`sys.modules` order need not put a package before its submodules (python-dateutil's
    `dateutil._version` came first): the check imports parents first, else it never passes."""
    root = write_project(
        tmp_path / "proj",
        {
            "pkg/__init__.py": "from pkg import days\n",
            "pkg/days.py": DAYS,
            "tests/test_calls.py": TEST_CALLS,
            "tests/test_reimport.py": (
                "import sys\nimport pkg.days\n\ndel sys.modules['pkg']\nimport pkg  # now after pkg.days\n\n\n"
                "def test_reimported():\n    assert pkg.days.MO.weekday == 0\n"
            ),
        },
    )
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            await run(client)
            await run(client)
            edit(
                root / "pkg/days.py",
                "        self.weekday = weekday\n",
                "        _edit = None\n        self.weekday = weekday\n",
            )
            same = await run(client)
            assert same["selection"]["reasons"]["import_state"] == "same"
            assert same["counts"]["passed"] == 1
