"""Subtests (pytest 9's `subtests` fixture, unittest's `subTest`): counted as pytest counts them,
and a failing subtest is a failure of its own, with its own id and message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.tools.test_runner.conftest import write_project

pytestmark = pytest.mark.anyio

SUBTESTS = """
import unittest


def test_fixture(subtests):
    for i in range(3):
        with subtests.test(msg="value", i=i):
            assert i != 1


def test_all_pass(subtests):
    for i in range(2):
        with subtests.test(i=i):
            assert True


class TestCase(unittest.TestCase):
    def test_sub(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertNotEqual(i, 2)
"""


async def test_subtests_are_counted_and_reported(memory_client: Any, tmp_path: Path) -> None:
    root = write_project(tmp_path / "sub", {"test_sub.py": SUBTESTS})
    with anyio.fail_after(60):
        async with memory_client(root) as client:
            result = await client.call_tool("run_tests", {})
            structured = result.structured_content or {}
    # pytest's own summary line: "3 failed, 2 passed, 6 subtests passed".
    counts = structured["counts"]
    assert (counts["failed"], counts["passed"], counts["subtests_passed"], counts["subtests_failed"]) == (3, 2, 6, 2)
    assert structured["status"] == "failed"
    failures = {f["nodeid"]: f for f in structured["failures"]}
    assert set(failures) == {
        "test_sub.py::test_fixture [value] (i=1)",
        "test_sub.py::test_fixture",
        "test_sub.py::TestCase::test_sub (i=2)",
    }
    assert "assert 1 != 1" in failures["test_sub.py::test_fixture [value] (i=1)"]["message"]
    assert failures["test_sub.py::test_fixture [value] (i=1)"]["subtest"] == "[value] (i=1)"
    assert "2 == 2" in failures["test_sub.py::TestCase::test_sub (i=2)"]["message"]
    assert "contains 1 failed subtest" in failures["test_sub.py::test_fixture"]["message"]


async def test_no_subtest_fields_without_subtests(memory_client: Any, tmp_path: Path) -> None:
    root = write_project(tmp_path / "plain", {"test_plain.py": "def test_ok():\n    pass\n"})
    with anyio.fail_after(60):
        async with memory_client(root) as client:
            result = await client.call_tool("run_tests", {})
    counts = (result.structured_content or {})["counts"]
    assert "subtests_passed" not in counts and counts["passed"] == 1
