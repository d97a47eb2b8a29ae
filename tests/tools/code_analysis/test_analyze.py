"""`analyze` over every transport, and its complexity counted as ruff's C901 counts it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import anyio
import pytest

from tests.conftest import ClientFactory
from tests.tools.code_analysis.conftest import call
from tools.code_analysis.cli_runner import ruff_binary
from tools.code_analysis.complexity import analyze_source

SAMPLE = """\
import contextlib


def simple():
    return 1


def branches(x, y):
    if x and y:
        return 1
    elif x or y:
        return 2
    else:
        return [i for i in range(3) if i]


def loops(items):
    for item in items:
        while item:
            item -= 1
        else:
            pass
    else:
        return None
    async_result = None
    return async_result


def handlers():
    try:
        pass
    except ValueError:
        pass
    except KeyError:
        pass
    else:
        pass
    finally:
        if handlers:
            pass
    try:
        pass
    except* TypeError:
        pass


def matcher(command):
    match command:
        case ["go", direction]:
            return direction
        case {"x": 1} if command:
            return 1
        case _:
            return None


def matcher_without_default(command):
    match command:
        case 1:
            return 1
        case 2 | 3:
            return 2


class Outer:
    def method(self):
        def inner(flag):
            if flag:
                return 1
            return 0

        class Local:
            def deep(self):
                with contextlib.suppress(Exception):
                    for _ in range(2):
                        pass

        return inner, Local

    async def coroutine(self, stream):
        async for chunk in stream:
            if chunk:
                yield chunk
        async with stream:
            pass
        value = 1 if stream else 2
        return value
"""

pytestmark = pytest.mark.anyio


def ruff_c901(path: Path) -> dict[int, int]:
    """line of each function -> the complexity ruff's C901 reports for it."""
    argv = [ruff_binary().path, "check", "--isolated", "--select", "C901", "--config", "lint.mccabe.max-complexity=0"]
    out = subprocess.run(
        [*argv, "--output-format", "json", "--exit-zero", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    found = {}
    for record in json.loads(out):
        match = re.search(r"\((\d+) > 0\)", record["message"])
        assert match, record
        found[record["location"]["row"]] = int(match.group(1))
    return found


def test_complexity_matches_ruff_c901(tmp_path: Path) -> None:
    path = tmp_path / "sample.py"
    path.write_text(SAMPLE, encoding="utf-8")
    ours = {fn["line"]: fn["complexity"] for fn in analyze_source(SAMPLE).functions}
    assert ours == ruff_c901(path)
    assert len(ours) == 10


def test_names_sizes_and_counts() -> None:
    metrics = analyze_source(SAMPLE)
    by_name = {fn["qualname"]: fn for fn in metrics.functions}
    assert set(by_name) >= {"Outer.method", "Outer.method.<locals>.inner", "Outer.method.<locals>.Local.deep"}
    assert by_name["simple"] == {
        "name": "simple",
        "qualname": "simple",
        "line": 4,
        "end_line": 5,
        "complexity": 1,
        "lines": 2,
    }
    assert metrics.classes == 2
    assert metrics.code_lines == sum(1 for line in SAMPLE.splitlines() if line.strip())
    broken = analyze_source("def f(:\n    pass\n")
    assert broken.functions == [] and broken.error is not None and broken.error["line"] == 1


async def test_analyze_tool(mcp_client: ClientFactory, project: Path) -> None:
    (project / "pkg" / "sample.py").write_text(SAMPLE, encoding="utf-8")
    (project / "pkg" / "broken.py").write_text("def broken(:\n", encoding="utf-8")
    with anyio.fail_after(60):
        async with mcp_client(project) as client:
            result = await call(client, "analyze", {"paths": ["pkg"]})
            functions = result["functions"]
            complexities = [fn["complexity"] for fn in functions]
            assert complexities == sorted(complexities, reverse=True)  # worst first
            worst = functions[0]
            assert worst["path"] == "pkg/sample.py" and worst["qualname"] == "handlers"
            assert set(worst) >= {"path", "name", "qualname", "line", "end_line", "complexity", "lines"}
            summary = result["summary"]
            assert summary["files"] == 5  # __init__, broken, clean, mod, sample
            assert summary["functions"] == len(functions) == 11  # sample's 10 and mod's f
            assert summary["classes"] == 2 and summary["max_complexity"] == worst["complexity"]
            assert summary["mean_complexity"] == round(sum(complexities) / len(complexities), 2)
            assert result["errors"] == [{"path": "pkg/broken.py", "line": 1, "message": result["errors"][0]["message"]}]

            text = await call(client, "analyze", {"source": SAMPLE, "filename": "draft.py"})
            assert {fn["path"] for fn in text["functions"]} == {"draft.py"}
            assert [fn["complexity"] for fn in text["functions"]] == [
                fn["complexity"] for fn in functions if fn["path"] == "pkg/sample.py"
            ]
            one = await call(client, "analyze", {"paths": ["pkg/mod.py"]})
            assert [fn["name"] for fn in one["functions"]] == ["f"]
            again = await call(client, "analyze", {"paths": ["pkg"]})
            assert again == result
