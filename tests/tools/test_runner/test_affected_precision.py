"""Affected-test selection at function granularity where code is defined inside functions or run
at import: a temporary project per test, recorded by a full run, then edited."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.tools.test_runner.conftest import write_project
from tests.tools.test_runner.test_affected import edit, plan, run

pytestmark = pytest.mark.anyio

FACTORY = """
def make_ops(base, scale=2):
    offset = base * scale

    def plus(x):
        return x + offset

    def minus(x):
        return x - offset

    return plus, minus
"""
TEST_OPS = """
from pkg.factory import make_ops

PLUS, MINUS = make_ops(1)


def test_plus():
    assert PLUS(1) == 3


def test_minus():
    assert MINUS(3) == 1
"""
TEST_BUILD = """
from pkg.factory import make_ops


def test_build():
    plus, _ = make_ops(2)
    assert plus(0) == 4
"""


async def test_an_inner_function_edit_selects_its_callers_not_the_factorys(memory_client: Any, tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "proj",
        {
            "pkg/__init__.py": "",
            "pkg/factory.py": FACTORY,
            "tests/test_ops.py": TEST_OPS,
            "tests/test_build.py": TEST_BUILD,
        },
    )
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            assert (await run(client))["counts"]["passed"] == 3
            assert await plan(client) == set()
            # The inner function's body: only the test that called it (make_ops ran at the test
            # module's import and in test_build, but it only creates `minus`).
            edit(root / "pkg/factory.py", "return x - offset", "return -offset + x")
            assert await plan(client) == {"tests/test_ops.py::test_minus"}
            assert (await run(client))["counts"]["passed"] == 1
            # The outer function's own code: every test that ran it, at import or in its body.
            edit(root / "pkg/factory.py", "offset = base * scale", "offset = scale * base")
            assert await plan(client) == {
                "tests/test_ops.py::test_plus",
                "tests/test_ops.py::test_minus",
                "tests/test_build.py::test_build",
            }
            await run(client)
            # An inner function's signature (a default is evaluated by the outer function).
            edit(root / "pkg/factory.py", "def plus(x):", "def plus(x, unused=None):")
            assert len(await plan(client)) == 3


REGISTRY = """
def register(n):
    return {"n": n}


def register_here(n):
    return {"n": n}


def unrelated():
    return 0
"""
HELPERS = """
from pkg.registry import register

TABLE = register(3)
"""


async def test_an_import_time_dependency_selects_the_importing_modules_tests(
    memory_client: Any, tmp_path: Path
) -> None:
    """`register_here` runs only while one test module is imported: an edit selects every test of
    that module and no other. `register` runs while a helper module is imported, which a second
    test module finds already imported: an edit selects every test (a module's import-time code
    is charged to every test once it is cached for later importers), never fewer than its users."""
    files = {
        "pkg/__init__.py": "",
        "pkg/registry.py": REGISTRY,
        "tests/helpers.py": HELPERS,
        "tests/test_direct.py": textwrap.dedent(
            """
            from pkg.registry import register_here

            LOCAL = register_here(5)

            def test_local():
                assert LOCAL["n"] == 5

            def test_other():
                assert True
            """
        ),
        "tests/test_first.py": "from helpers import TABLE\n\n\ndef test_first():\n    assert TABLE['n'] == 3\n",
        "tests/test_second.py": "from helpers import TABLE\n\n\ndef test_second():\n    assert TABLE['n'] == 3\n",
        "tests/test_plain.py": "from pkg.registry import unrelated\n\n\ndef test_plain():\n    assert not unrelated()\n",  # noqa: E501
    }
    root = write_project(tmp_path / "proj", files)
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            assert (await run(client))["counts"]["passed"] == 5
            assert await plan(client) == set()
            edit(
                root / "pkg/registry.py",
                'return {"n": n}\n\n\ndef register_here',
                'return {"n": n + 1}\n\n\ndef register_here',
            )
            everything = {
                "tests/test_direct.py::test_local",
                "tests/test_direct.py::test_other",
                "tests/test_first.py::test_first",
                "tests/test_second.py::test_second",
                "tests/test_plain.py::test_plain",
            }
            assert await plan(client) == everything
            failed = await run(client)
            assert {f["nodeid"] for f in failed["failures"]} == {
                "tests/test_first.py::test_first",
                "tests/test_second.py::test_second",
            }
            edit(
                root / "pkg/registry.py",
                'return {"n": n + 1}\n\n\ndef register_here',
                'return {"n": n}\n\n\ndef register_here',
            )
            assert (await run(client))["status"] == "passed"
            assert await plan(client) == set()
            edit(
                root / "pkg/registry.py",
                'def register_here(n):\n    return {"n": n}',
                'def register_here(n):\n    return {"n": -n}',
            )
            assert await plan(client) == {"tests/test_direct.py::test_local", "tests/test_direct.py::test_other"}
            failed = await run(client)
            assert [f["nodeid"] for f in failed["failures"]] == ["tests/test_direct.py::test_local"]


LAZY = """
from pkg.registry import register

VALUE = register(7)
"""


@pytest.mark.parametrize("untraced_first", [False, True])
async def test_a_module_imported_inside_a_test_counts_for_the_later_importers(
    memory_client: Any, tmp_path: Path, untraced_first: bool
) -> None:
    """The first test to import `pkg.lazy` runs its import; the second finds it in `sys.modules`.
    Both depend on what the import ran. When the first one runs untraced (a full run, its record
    still valid), the tests after it get no record (the import is unseen) and run next time."""
    test_b = "def test_b():\n    from pkg import lazy\n\n    assert lazy.VALUE['n'] == 7\n"
    files = {
        "pkg/__init__.py": "",
        "pkg/registry.py": REGISTRY,
        "pkg/lazy.py": LAZY,
        "tests/test_lazy_a.py": test_b.replace("test_b", "test_a"),
        "tests/test_lazy_b.py": test_b,
    }
    root = write_project(tmp_path / "proj", files)
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            assert (await run(client))["counts"]["passed"] == 2
            assert await plan(client) == set()
            if untraced_first:
                edit(root / "tests/test_lazy_b.py", "== 7\n", "== 7  # again\n")
                full = await client.call_tool("run_tests", {})  # test_a untraced, test_b traced
                assert (full.structured_content or {})["counts"]["passed"] == 2
                assert await plan(client) == {"tests/test_lazy_b.py::test_b"}  # no record
                assert (await run(client))["counts"]["passed"] == 1
                assert await plan(client) == set()
            edit(
                root / "pkg/registry.py",
                'return {"n": n}\n\n\ndef register_here',
                'return {"n": 0}\n\n\ndef register_here',
            )
            assert await plan(client) == {"tests/test_lazy_a.py::test_a", "tests/test_lazy_b.py::test_b"}
            assert (await run(client))["counts"]["failed"] == 2


async def test_a_full_run_with_nothing_changed_traces_nothing(memory_client: Any, tmp_path: Path) -> None:
    """Every recorded test is unaffected: start-up, collection and tests run untraced (the speed
    of a plain run). A test that was not there last time then has no record: it is selected by
    the next affected run, which records it."""
    root = write_project(
        tmp_path / "proj",
        {"pkg/__init__.py": "", "pkg/registry.py": REGISTRY, "tests/test_plain.py": TEST_BUILD},
    )
    (root / "pkg/factory.py").write_text(FACTORY)
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            assert (await run(client))["counts"]["passed"] == 1
            edit(
                root / "tests/test_new.py",
                "",
                "from pkg.registry import unrelated\n\n\ndef test_new():\n    assert not unrelated()\n",
            )
            full = await client.call_tool("run_tests", {})
            assert (full.structured_content or {})["counts"]["passed"] == 2
            assert await plan(client) == {"tests/test_new.py::test_new"}
            again = await run(client)
            assert again["counts"]["passed"] == 1 and again["selection"]["reasons"]["no_data"] == 1
            assert await plan(client) == set()
            edit(root / "pkg/registry.py", "return 0", "return 0 * 1")
            assert await plan(client) == {"tests/test_new.py::test_new"}


CLASSES = """
from pkg.registry import register, register_here, unrelated


class TestOne:
    def test_register(self):
        assert register(1) == {"n": 1}

    def test_plain(self):
        assert not unrelated()


class TestTwo:
    def test_here(self):
        assert register_here(2) == {"n": 2}


def test_function():
    assert not unrelated()
"""


async def test_only_the_classes_and_functions_holding_selected_tests_are_collected(
    memory_client: Any, tmp_path: Path
) -> None:
    outside = tmp_path / "collected.txt"
    conftest = (
        f"def pytest_itemcollected(item):\n    with open({str(outside)!r}, 'a') as f:\n"
        "        f.write(item.nodeid + '\\n')\n"
    )
    root = write_project(
        tmp_path / "proj",
        {"pkg/__init__.py": "", "pkg/registry.py": REGISTRY, "tests/test_classes.py": CLASSES, "conftest.py": conftest},
    )
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            assert (await run(client))["counts"]["passed"] == 4
            outside.write_text("")
            edit(
                root / "pkg/registry.py",
                'def register_here(n):\n    return {"n": n}',
                'def register_here(n):\n    return {"n": n + 0}',
            )
            assert await plan(client) == {"tests/test_classes.py::TestTwo::test_here"}
            edited = await run(client)
            assert edited["counts"]["passed"] == 1 and edited["selection"]["skipped_unaffected"] == 3
            assert outside.read_text().split() == ["tests/test_classes.py::TestTwo::test_here"] * 2  # plan, run
            # The tests that were not collected keep their records.
            assert await plan(client) == set()
            edit(root / "pkg/registry.py", "    return 0", "    return 0 * 2")
            assert await plan(client) == {
                "tests/test_classes.py::TestOne::test_plain",
                "tests/test_classes.py::test_function",
            }
            outside.write_text("")
            assert (await run(client))["counts"]["passed"] == 2
            assert sorted(outside.read_text().split()) == [  # methods are pruned too
                "tests/test_classes.py::TestOne::test_plain",
                "tests/test_classes.py::test_function",
            ]
