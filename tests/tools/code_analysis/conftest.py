"""A real project with its own ruff config, and helpers for the code-analysis tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client

PYPROJECT = """\
[project]
name = "sample"
version = "0"

[tool.ruff]
line-length = 60

[tool.ruff.lint]
select = ["E", "F", "I"]
ignore = ["E741"]

[tool.ruff.lint.per-file-ignores]
"legacy/*.py" = ["F401"]
"""

# pkg/mod.py, line by line (1-based):
#  1 import sys            F401 at 1:8-1:11 (and I001 for the block 1:1-2:10)
#  2 import os             F401 at 2:8-2:10
#  4 l = 1                 E741 (ignored by the project)
#  5 s = "ééé"; t = 2      E702 at 5:10 (columns count characters, not bytes)
#  6 long line             E501 at 6:61 (line-length 60)
#  7 def f(x=[]):          B006 exists but B is not selected
MOD = """\
import sys
import os

l = 1
s = "ééé"; t = 2
message = "this line is long enough to go past sixty characters"
def f(x=[]):
    return x == None
"""

LEGACY = """\
import json

value = 1
"""

CLEAN = '''\
"""A clean module."""

VALUE = 1
'''

UNFORMATTED = """\
x = {  'a':1 }
def g( y ):
    return y
"""


def write_project(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True, exist_ok=True)
    (root / "legacy").mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    (root / "pkg" / "__init__.py").write_text("", encoding="utf-8")
    (root / "pkg" / "mod.py").write_text(MOD, encoding="utf-8")
    (root / "pkg" / "clean.py").write_text(CLEAN, encoding="utf-8")
    (root / "legacy" / "old.py").write_text(LEGACY, encoding="utf-8")
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "project")


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Call a tool that must succeed; its structured result."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text  # type: ignore[union-attr]
    assert result.structured_content is not None
    return dict(result.structured_content)


async def call_error(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    """Call a tool that must fail with a tool error (not a JSON-RPC error); its message."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    return str(result.content[0].text)  # type: ignore[union-attr]


def codes_at(diagnostics: list[dict[str, Any]], path: str) -> list[str]:
    return [d["code"] for d in diagnostics if d["path"] == path]
