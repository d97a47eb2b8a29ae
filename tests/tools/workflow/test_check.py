"""check: phases at once, gates, ordered progress, sections in the run, fail_fast, bad input, history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client

from mcp_server.config import SettingsError
from tests.conftest import ClientFactory, make_settings
from tests.tools.test_runner.conftest import Signals, alive, wait_dead, write_project

pytestmark = pytest.mark.anyio

BAD_SOURCE = "import os\ndef f(x):\n    if x:\n        return 1\n    elif x > 2:\n        return 2\n    return 3\n"
GOOD_SOURCE = "def g(x: int) -> int:\n    return x + 1\n"
TESTS = """
from src.mod import g

def test_ok():
    assert g(1) == 2

def test_broken():
    assert g(1) == 3
"""
HANGING_TEST = """
import os, pathlib, time

def test_hangs():
    pathlib.Path("pid.txt").write_text(str(os.getpid()))
    time.sleep(600)
"""


def project_with(root: Path, source: str, tests: str | None = TESTS) -> Path:
    files = {"src/__init__.py": "", "src/mod.py": source, "ruff.toml": '[lint]\nselect = ["F"]\n'}
    if tests is not None:
        files["tests/test_mod.py"] = tests
    return write_project(root, files)


async def call(client: Client, name: str, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
    result = await client.call_tool(name, args, **kw)
    assert not result.is_error, result.content
    structured: dict[str, Any] | None = result.structured_content
    assert structured is not None
    return structured


def by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in result["phases"]}


async def test_all_phases_gates_sections_and_ordered_progress(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = project_with(tmp_path / "proj", BAD_SOURCE + GOOD_SOURCE)
    progress: list[tuple[float, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, message))

    with anyio.fail_after(120):
        async with mcp_client(root, check_max_complexity=2) as client:
            result = await call(client, "check", {}, progress_callback=on_progress)
            assert result["status"] == "failed"
            phases = by_name(result)
            assert [p["name"] for p in result["phases"]] == ["lint", "format", "analyze", "tests"]
            assert phases["lint"]["status"] == "failed" and phases["lint"]["summary"]["counts"] == {"F401": 1}
            assert phases["format"]["status"] == "failed" and phases["format"]["summary"]["changed_count"] >= 1
            assert phases["analyze"]["status"] == "failed" and phases["analyze"]["summary"]["max_complexity"] == 3
            assert phases["tests"]["status"] == "failed"
            assert phases["tests"]["summary"]["counts"]["passed"] == 1
            assert phases["tests"]["summary"]["counts"]["failed"] == 1
            assert all(isinstance(p["duration_s"], float) for p in result["phases"])

            # Each phase's lists are pageable sections of the check's run.
            run_id = result["run_id"]
            failures = await call(client, "get_run", {"run_id": run_id, "section": "phases/tests/failures"})
            assert [f["nodeid"] for f in failures["items"]] == ["tests/test_mod.py::test_broken"]
            files = await call(client, "get_run", {"run_id": run_id, "section": "phases/format/files"})
            assert "src/mod.py" in {f["path"] for f in files["items"]}
            diags = await call(client, "get_run", {"run_id": run_id, "section": "phases/lint/diagnostics"})
            assert diags["items"][0]["code"] == "F401"
            over = await call(client, "get_run", {"run_id": run_id, "section": "phases/analyze/over_limit"})
            assert [fn["name"] for fn in over["items"]] == ["f"]
            names = {s["section"] for s in result["sections"]}
            assert {"phases/format/files", "phases/tests/failures", "phases/lint/diagnostics"} <= names

            # Progress: increasing, and grouped by phase in phase order, each phase started..ended.
            assert [p[0] for p in progress] == list(range(1, len(progress) + 1))
            phase_of = [str(m).split(":")[0] for _, m in progress]
            grouped = [p for i, p in enumerate(phase_of) if i == 0 or phase_of[i - 1] != p]
            assert grouped == ["lint", "format", "analyze", "tests"]
            tests_events = [m for _, m in progress if str(m).startswith("tests:")]
            assert tests_events[0] == "tests: started" and str(tests_events[-1]).startswith("tests: failed in ")
            assert "tests: tests/test_mod.py::test_broken failed" in tests_events


@pytest.mark.parametrize("transport", ["memory"])
async def test_clean_project_passes_and_gates_can_be_off(mcp_client: ClientFactory, tmp_path: Path) -> None:
    clean = project_with(
        tmp_path / "clean", GOOD_SOURCE, tests="from src.mod import g\n\n\ndef test_ok():\n    assert g(1) == 2\n"
    )
    with anyio.fail_after(120):
        async with mcp_client(clean) as client:
            result = await call(client, "check", {})
            assert result["status"] == "passed", result
            assert {p["status"] for p in result["phases"]} == {"passed"}
    dirty = project_with(tmp_path / "dirty", BAD_SOURCE, tests=None)
    with anyio.fail_after(120):
        async with mcp_client(dirty, check_lint_clean=False, check_format_clean=False) as client:
            result = await call(client, "check", {"phases": ["format", "lint"]})
            assert [p["name"] for p in result["phases"]] == ["lint", "format"]  # canonical order
            assert result["status"] == "passed"
            assert by_name(result)["lint"]["summary"]["total"] == 1  # reported, not gated


@pytest.mark.parametrize("transport", ["memory"])
async def test_a_root_without_tests(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = project_with(tmp_path / "proj", GOOD_SOURCE, tests=None)
    with anyio.fail_after(120):
        async with mcp_client(root) as client:
            result = await call(client, "check", {"phases": ["tests", "lint"]})
            tests = by_name(result)["tests"]
            assert tests["status"] == "skipped" and "no tests ran" in tests["summary"]["message"]
            assert result["status"] == "passed"
        async with mcp_client(root, check_require_tests=True) as client:
            result = await call(client, "check", {"phases": ["tests"]})
            assert result["status"] == "failed"
            assert "check_require_tests" in by_name(result)["tests"]["summary"]["message"]
        async with mcp_client(root, allow_test_execution=False) as client:  # the policy: said, not failed
            result = await call(client, "check", {"phases": ["tests", "analyze"]})
            tests = by_name(result)["tests"]
            assert tests["status"] == "skipped" and "allow_test_execution" in tests["summary"]["message"]
            assert result["status"] == "passed"


@pytest.mark.parametrize("transport", ["memory"])
async def test_fail_fast_cancels_the_running_tests(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = project_with(tmp_path / "proj", BAD_SOURCE, tests=HANGING_TEST)
    with anyio.fail_after(120):
        async with mcp_client(root) as client:
            result = await call(client, "check", {"phases": ["lint", "tests"], "fail_fast": True})
            assert result["status"] == "failed"
            assert by_name(result)["lint"]["status"] == "failed"
            assert by_name(result)["tests"]["status"] == "cancelled"
            assert result["fail_fast"].startswith("stopped after lint")
    pid_file = root / "pid.txt"
    if pid_file.exists():  # the hanging test had started: it was killed
        pid = int(pid_file.read_text())
        await wait_dead(pid)
        assert not alive(pid)


@pytest.mark.parametrize("transport", ["memory"])
async def test_bad_input(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = project_with(tmp_path / "proj", GOOD_SOURCE, tests=None)
    async with mcp_client(root) as client:
        bad = await client.call_tool("check", {"phases": ["lint", "typecheck"]})
        assert bad.is_error
        text = bad.content[0].text  # type: ignore[union-attr]
        assert "phases" in text and "'lint', 'format', 'analyze' or 'tests'" in text
        twice = await client.call_tool("check", {"phases": ["lint", "lint"]})
        assert twice.is_error and "twice" in twice.content[0].text  # type: ignore[union-attr]
        outside = await client.call_tool("check", {"root": str(tmp_path.parent)})
        assert outside.is_error
        escaping = await client.call_tool("check", {"paths": ["src", "../../etc"]})
        assert escaping.is_error and "../../etc" in escaping.content[0].text  # type: ignore[union-attr]
        missing = await client.call_tool("check", {"paths": ["no/such/file.py"]})
        assert missing.is_error
        assert not (await client.list_resources()).resources  # refused before any run was made
    with pytest.raises(SettingsError, match="check_max_complexity"):
        make_settings(root, tmp_path, check_max_complexity="high")
    with pytest.raises(SettingsError, match="check_tests_pass"):
        make_settings(root, tmp_path, check_tests_pass="perhaps")


@pytest.mark.parametrize("transport", ["memory"])
async def test_history_is_a_bounded_ring(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = project_with(tmp_path / "proj", GOOD_SOURCE, tests=None)
    with anyio.fail_after(60):
        async with mcp_client(root, check_history_size=2) as client:
            ids = [(await call(client, "check", {"phases": ["analyze"]}))["run_id"] for _ in range(3)]
            history = await call(client, "check_history", {})
            assert history["kept"] == 2
            assert [h["run_id"] for h in history["checks"]] == ids[:0:-1]  # newest first, oldest gone
            assert history["checks"][0]["phases"] == {"analyze": "passed"}


@pytest.mark.parametrize("transport", ["memory"])
async def test_affected_passes_through_when_run_tests_has_it(mcp_client: ClientFactory, tmp_path: Path) -> None:
    from tools.test_runner.args import RunTestsArgs

    root = project_with(tmp_path / "proj", GOOD_SOURCE, tests="def test_ok():\n    pass\n")
    with anyio.fail_after(120):
        async with mcp_client(root) as client:
            result = await call(client, "check", {"phases": ["tests"], "affected": True})
            tests = by_name(result)["tests"]
            assert tests["status"] in ("passed", "skipped")
            if "affected" in RunTestsArgs.model_fields:
                assert "note" not in tests["summary"]
            else:
                assert "not available" in tests["summary"]["note"]


WAITING_TEST = """
import os, pathlib, socket, time

def test_waits():
    pathlib.Path("pid.txt").write_text(str(os.getpid()))
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(pathlib.Path("signal_path.txt").read_text())
    sock.sendall(b"started")
    time.sleep(600)
"""


async def check_run_id(client: Client) -> str:
    """The run_id of the check in progress (its summary lists the phases)."""
    resources = await client.list_resources()
    for resource in resources.resources:
        uri = str(resource.uri)
        if uri.endswith("/log"):
            continue
        summary = await call(client, "get_run", {"run_id": uri.removeprefix("run://")})
        if "phases" in summary:
            return str(summary["run_id"])
    raise AssertionError("no check in progress")


@pytest.mark.parametrize("transport", ["memory"])
async def test_cancel_run_cancels_a_check_and_its_tests(
    mcp_client: ClientFactory, tmp_path: Path, signals: Signals
) -> None:
    root = project_with(tmp_path / "proj", GOOD_SOURCE, tests=WAITING_TEST)
    signals.install(root)
    answers: list[dict[str, Any]] = []
    with anyio.fail_after(120):
        async with mcp_client(root) as client:

            async def run_check() -> None:
                answers.append(await call(client, "check", {"phases": ["lint", "tests"]}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(run_check)
                await signals.wait()  # the test is running
                run_id = await check_run_id(client)
                running = await call(client, "get_run", {"run_id": run_id})
                assert running["status"] == "running"
                stopped = await call(client, "cancel_run", {"run_id": run_id})
                assert stopped["status"] == "cancelled"
    (answer,) = answers
    assert answer["status"] == "cancelled"
    assert by_name(answer)["tests"]["status"] == "cancelled"
    pid = int((root / "pid.txt").read_text())
    await wait_dead(pid)
    assert not alive(pid)


@pytest.mark.parametrize("transport", ["memory"])
async def test_a_tests_timeout_is_the_checks_status(
    mcp_client: ClientFactory, tmp_path: Path, signals: Signals
) -> None:
    root = project_with(tmp_path / "proj", GOOD_SOURCE, tests=WAITING_TEST)
    signals.install(root)
    with anyio.fail_after(120):
        async with mcp_client(root, run_timeout_max_s=2) as client:
            result = await call(client, "check", {"phases": ["tests", "lint"]})
    assert result["status"] == "timeout"
    assert by_name(result)["tests"]["status"] == "timeout"
    assert by_name(result)["lint"]["status"] == "passed"
