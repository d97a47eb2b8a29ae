"""Memory stays bounded: a huge file is never read, the result cache is bounded in bytes.

Measured on a real stdio server process (`VmRSS`/`VmHWM` of /proc/<pid>/status).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from mcp_server.config import Settings
from tests.conftest import open_stdio
from tests.tools.code_analysis.conftest import call, write_project
from tools.code_analysis.cache import ResultCache, ResultKey, approx_size

pytestmark = pytest.mark.anyio
MB = 1024 * 1024


def server_pid() -> int:
    """The stdio server this test process started (`python -m mcp_server`)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == me and b"mcp_server" in cmdline and cmdline[0] == sys.executable.encode():
            found.append(int(entry))
    assert len(found) == 1, found
    return found[0]


def memory_of(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) * 1024
    return out


async def test_a_50_mb_file_is_skipped_and_the_server_stays_small(tmp_path: Path) -> None:
    """Issue 9 item 3: `analyze` of a root with a 50 MB `big.py` drove RSS to 6.5 GB."""
    root = write_project(tmp_path / "project")
    line = b"value = 1  # " + b"x" * 50 + b"\n"
    with (root / "big.py").open("wb") as fh:
        fh.write(line * (50 * MB // len(line)))
    with anyio.fail_after(120):
        async with open_stdio(root, tmp_path) as client:
            pid = server_pid()
            for tool in ("analyze", "lint", "format_check"):
                result = await call(client, tool, {})
                assert "big.py" in {s["path"] for s in result["skipped"]}, tool
            peak = memory_of(pid)["VmHWM"]
    assert peak < 150 * MB, f"server peak RSS {peak / MB:.0f} MB"


async def test_distinct_large_sources_keep_the_server_under_the_cache_bound(tmp_path: Path) -> None:
    """Issue 9 item 3: six distinct 1 MiB sources took RSS from 66 MB to 1.1 GB (the result cache
    was bounded in entries only). Eight of them, each with ~10,000 diagnostics, must keep the server
    under the cache's byte bound (the default) plus 100 MB (measured 2026-12-03: 145 MB; 148 MB with
    no byte bound, as the cached results are compact now; 20 sources took 16 s of the suite). The
    output budget is raised so that every answer is whole: no run keeps it (the run store has its
    own bound, max_run_bytes)."""
    root = write_project(tmp_path / "project")
    bound = Settings.model_fields["result_cache_max_bytes"].default
    with anyio.fail_after(300):
        async with open_stdio(root, tmp_path, output_budget=4_000_000) as client:
            pid = server_pid()
            for i in range(8):
                text = "".join(f"name_{i}_{n} = '{'y' * 80}'\n" for n in range(MB // 100))  # E501 on each line
                result = await call(client, "lint", {"source": text, "filename": f"src{i}.py"})
                assert result["total"] > 10_000 and result["truncated"] is False
            rss = memory_of(pid)["VmRSS"]
    assert rss < bound + 100 * MB, f"server RSS {rss / MB:.0f} MB"


def test_the_result_cache_is_bounded_in_bytes() -> None:
    cache: ResultCache[list[str]] = ResultCache(max_entries=1000, max_bytes=100_000)
    key = ResultKey("lint", "v", (), "/r", "a.py", "h", "c")
    big = ["x" * 1000] * 30  # ~31 kB estimated
    assert 30_000 < approx_size(big) < 40_000
    for i in range(10):
        cache.put(key._replace(path=f"{i}.py"), big)
        assert cache.bytes <= cache.max_bytes
    assert len(cache) == 3  # the newest three fit
    assert cache.get(key._replace(path="9.py")) is big and cache.get(key._replace(path="0.py")) is None
    cache.put(key._replace(path="huge.py"), ["y" * 200_000])  # larger than the whole cache: not kept
    assert cache.get(key._replace(path="huge.py")) is None and len(cache) == 3
    assert cache.drop_root("/r") == 3 and cache.bytes == 0
