"""`lint` through the server over stdio against spawning `ruff check --output-format json`, interleaved.

Issue 3's targets: one changed ~300-line file (p50 at most 0.6x the spawn), the same unchanged
file again (p50 at most 0.3x), and the second call on an unchanged ~200-file tree (at most 0.5x
`ruff check` on the tree, ruff's own cache warm). The baseline runs the same ruff binary. Our
side is measured end to end with the minimal JSON-RPC client, so the SDK client's own parsing
does not count against the server.

The tree's files are dated a minute back: a file written within a second of being hashed is
hashed again on the next call (two writes within one mtime tick look alike), which is right for
a file being edited but not what "unchanged" measures (in quick mode the first tree call came
~0.8 s after the tree was written, and the next calls re-read all 200 files).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from ruff import find_ruff_bin  # type: ignore[import-untyped]

from benchmarks.common import PYTHON, Options, Result, interleave, median_ms, time_command
from benchmarks.jsonrpc_client import StdioJsonRpc, bench_env

PYPROJECT = """\
[project]
name = "bench-lint"
version = "0"

[tool.ruff]
line-length = 100

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP"]
"""
TREE_FILES = 200


def module_text(seed: int, classes: int = 18) -> str:
    """A ~300-line module (for classes=18) with a few diagnostics, like real code mid-edit."""
    lines = [f'"""Module {seed}."""', "", "import os", "import sys", "from collections import defaultdict", "", ""]
    for i in range(classes):
        lines += [
            f"class Thing{i}:",
            f'    """Thing {i} of module {seed}."""',
            "",
            "    def __init__(self, value: int) -> None:",
            "        self.value = value",
            "        self.items: list[int] = []",
            "",
            "    def compute(self, limit: int) -> int:",
            "        total = 0",
            "        for k in range(limit):",
            "            if k % 3 == 0 and self.value:",
            "                total += k * self.value",
            "            elif k % 5 == 0:",
            "                total -= 1",
            "        return total",
            "",
            "",
        ]
    lines += [f"def helper_{seed}(x):", "    unused = 1", "    return os.path.join(str(x), 'a')", ""]
    return "\n".join(lines)


def make_project(root: Path) -> Path:
    if root.exists():
        shutil.rmtree(root)
    (root / "tree").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    single = root / "single.py"
    single.write_text(module_text(0))
    for i in range(TREE_FILES):
        package = root / "tree" / f"pkg{i // 20}"
        package.mkdir(exist_ok=True)
        (package / f"mod{i}.py").write_text(module_text(i + 1, classes=4 + i % 8))
    settled = time.time() - 60
    for path in (root / "tree").rglob("*.py"):
        os.utime(path, (settled, settled))
    return single


async def _call(client: StdioJsonRpc, arguments: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    reply = await client.call_tool("lint", arguments)
    elapsed = time.perf_counter() - started
    result = reply.get("result") or {}
    if "error" in reply or result.get("isError"):
        raise RuntimeError(f"lint failed: {reply}")
    return elapsed, result.get("structuredContent") or {}


async def run(opts: Options) -> list[Result]:
    root = (opts.workdir / "lint").resolve()
    single = make_project(root)
    ruff = [find_ruff_bin(), "check", "--output-format", "json"]
    n = opts.n(40, 8)
    client = await StdioJsonRpc.spawn([PYTHON, "-m", "mcp_server"], cwd=root, env=bench_env(root))
    results: list[Result] = []
    try:
        await client.initialize()
        base_text = single.read_text()
        counter = 0

        def change_single() -> None:
            nonlocal counter
            counter += 1
            single.write_text(base_text + f"\nCHANGED_{counter} = {counter}\n")

        for _ in range(5):  # warm: the ruff server starts, the pool and caches settle
            change_single()
            await _call(client, {"paths": ["single.py"]})
            time_command([*ruff, "single.py"], cwd=root)

        async def ours_changed() -> float:
            change_single()
            return (await _call(client, {"paths": ["single.py"]}))[0]

        async def base_changed() -> float:
            change_single()
            return time_command([*ruff, "single.py"], cwd=root)

        a, b = await interleave(n, ours_changed, base_changed)
        results.append(_result("lint one changed ~300-line file (stdio)", a, b, 0.6))

        change_single()
        await _call(client, {"paths": ["single.py"]})

        async def ours_same() -> float:
            return (await _call(client, {"paths": ["single.py"]}))[0]

        async def base_same() -> float:
            return time_command([*ruff, "single.py"], cwd=root)

        a, b = await interleave(n, ours_same, base_same)
        results.append(_result("lint the same unchanged file again (stdio)", a, b, 0.3))

        _, first = await _call(client, {"paths": ["tree"]})
        time_command([*ruff, "tree"], cwd=root)  # ruff's own cache warm too

        async def ours_tree() -> float:
            return (await _call(client, {"paths": ["tree"]}))[0]

        async def base_tree() -> float:
            return time_command([*ruff, "tree"], cwd=root)

        a, b = await interleave(n, ours_tree, base_tree)
        result = _result(f"lint a {TREE_FILES}-file tree, second call unchanged (stdio)", a, b, 0.5)
        result.extra["files_checked"] = first.get("files_checked")
        result.extra["diagnostics"] = first.get("total")
        results.append(result)
    finally:
        await client.close()
    return results


def _result(name: str, ours: list[float], base: list[float], max_ratio: float) -> Result:
    return Result(
        name,
        median_ms(ours),
        median_ms(base),
        baseline="spawn ruff check --output-format json",
        target=f"≤ {max_ratio}×",
        max_ratio=max_ratio,
        extra={"samples": len(ours)},
    )
