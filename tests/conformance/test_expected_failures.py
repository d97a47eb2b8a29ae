"""The conformance baseline (tests/conformance/expected_failures.yml) stays honest: every entry is a
scenario that needs the suite's own fixtures, with a reason on its line, and none is listed twice.
The suite itself runs in scripts/conformance (CI), which also fails on a listed scenario that passes."""

from __future__ import annotations

import re
from pathlib import Path

BASELINE = Path(__file__).with_name("expected_failures.yml")
FIXTURE = re.compile(r"fixture (tool|prompt|resource|template) (test_\w+|test://\S+|json_schema_\w+)")
OURS = {"server-initialize", "ping", "logging-set-level", "tools-list", "resources-list", "prompts-list"}
"""Scenarios about features the product serves: they must pass, never be listed."""


def entries() -> list[tuple[str, str]]:
    found = []
    for line in BASELINE.read_text().splitlines():
        match = re.match(r"^  - ([a-z0-9-]+)\s*(?:#\s*(.*))?$", line)
        if match:
            found.append((match.group(1), match.group(2) or ""))
    return found


def test_every_entry_needs_a_fixture_and_says_which() -> None:
    listed = entries()
    assert listed, "no entries parsed"
    for name, reason in listed:
        assert FIXTURE.search(reason), f"{name}: the reason must name the suite's fixture it needs: {reason!r}"


def test_no_duplicates_and_no_served_feature() -> None:
    names = [name for name, _ in entries()]
    assert len(names) == len(set(names))
    assert not OURS & set(names)
