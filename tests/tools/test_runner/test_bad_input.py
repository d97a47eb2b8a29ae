"""Bad input and hostile tests: each gets a clear answer, and the server goes on serving."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client

from tests.tools.test_runner.conftest import write_project

pytestmark = pytest.mark.anyio

TOKEN = "ghp_" + "A1b2" * 9


def error_text(result: Any) -> str:
    assert result.is_error, result
    return str(result.content[0].text)


async def run(client: Client, args: dict[str, Any] | None = None) -> dict[str, Any]:
    result = await client.call_tool("run_tests", args or {})
    assert not result.is_error, result.content
    return result.structured_content or {}


async def test_a_root_without_tests(memory_client: Any, tmp_path: Path) -> None:
    root = write_project(tmp_path / "empty", {"README.md": "nothing to test\n"})
    with anyio.fail_after(60):
        async with memory_client(root) as client:
            result = await run(client)
            assert result["status"] == "passed" and set(result["counts"].values()) == {0}
            assert result["message"] == "no tests ran: pytest collected none"
            listed = await client.call_tool("list_tests", {})
            assert (listed.structured_content or {})["tests"] == []


async def test_a_syntax_error_is_an_error_with_the_collection_error(memory_client: Any, tmp_path: Path) -> None:
    root = write_project(tmp_path / "syntax", {"test_ok.py": "def test_ok():\n    pass\n", "test_bad.py": "def (\n"})
    with anyio.fail_after(60):
        async with memory_client(root) as client:
            result = await run(client)
            assert result["status"] == "error"
            assert result["counts"]["errors"] == 1
            assert result["failures"][0]["nodeid"] == "test_bad.py"
            assert result["failures"][0]["outcome"] == "error"
            assert "SyntaxError" in result["failures"][0]["message"] + result["failures"][0]["traceback"]
            assert "1 error during collection; first in test_bad.py" in result["message"]


async def test_bad_expressions_and_selections(memory_client: Any, tmp_path: Path) -> None:
    write_project(tmp_path / "p", {"test_a.py": "def test_a():\n    pass\n"})
    (tmp_path / "outside.py").write_text("def test_out():\n    pass\n")
    with anyio.fail_after(60):
        async with memory_client(tmp_path) as client:
            base = {"root": "p"}
            usage = await client.call_tool("run_tests", {**base, "markers": "not ("})
            text = error_text(usage)
            assert "pytest usage error" in text and "-m" in text
            assert (usage.structured_content or {}).get("status") == "error"
            keyword = error_text(await client.call_tool("list_tests", {**base, "keyword": "a and"}))
            assert "usage error" in keyword and "-k" in keyword
            assert "not a pytest -m expression" in error_text(
                await client.call_tool("run_tests", {**base, "markers": "--co"})
            )
            outside = error_text(await client.call_tool("run_tests", {**base, "select": ["../outside.py"]}))
            assert "outside the root" in outside
            escape = error_text(await client.call_tool("run_tests", {**base, "select": ["/etc/passwd::x"]}))
            assert "outside every allowed root" in escape
            missing = error_text(await client.call_tool("run_tests", {**base, "select": ["test_nope.py::test_x"]}))
            assert "does not exist" in missing
            # Many selections are checked off the event loop, with the same answers.
            many = ["test_a.py::test_a"] * 40
            outside_many = error_text(await client.call_tool("run_tests", {**base, "select": [*many, "../outside.py"]}))
            assert "outside the root" in outside_many
            listed = await client.call_tool("list_tests", {**base, "select": many})
            assert not listed.is_error and (listed.structured_content or {}).get("total") == 1
            assert "timeout_s" in error_text(await client.call_tool("run_tests", {**base, "timeout_s": -1}))
            assert "wait" in error_text(await client.call_tool("run_tests", {**base, "wait": "soon"}))
            # An unknown marker is not an error for pytest: nothing is selected, and the answer says so.
            none = await run(client, {**base, "markers": "no_such_marker"})
            assert none["status"] == "passed" and none["counts"]["deselected"] == 1
            assert "no tests ran: 1 deselected" in none["message"]
            # The server still serves.
            assert (await run(client, base))["status"] == "passed"


async def test_an_interpreter_without_pytest(memory_client: Any, tmp_path: Path) -> None:
    root = write_project(tmp_path / "nopytest", {"test_a.py": "def test_a():\n    pass\n"})
    await anyio.run_process([sys.executable, "-m", "venv", "--without-pip", str(root / ".venv")])
    write_project(tmp_path / "fine", {"test_b.py": "def test_b():\n    pass\n"})
    venv_python = str(root / ".venv" / "bin" / "python")
    with anyio.fail_after(60):
        async with memory_client(tmp_path, max_concurrent_runs=1) as client:
            text = error_text(await client.call_tool("run_tests", {"root": "nopytest"}))
            assert "pytest cannot be imported by the interpreter" in text and venv_python in text
            assert venv_python in error_text(await client.call_tool("list_tests", {"root": "nopytest"}))
            # In the background, the run's result says it (a run queued behind it shows it is done).
            started = await run(client, {"root": "nopytest", "wait": False})
            assert (await run(client, {"root": "fine"}))["status"] == "passed"
            stored = await client.call_tool("get_run", {"run_id": started["run_id"]})
            failed = stored.structured_content or {}
            assert failed["status"] == "error" and venv_python in failed["message"]
        async with memory_client(root) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            assert "run_tests" not in names and "list_tests" not in names and "get_run" in names
            text = error_text(await client.call_tool("run_tests", {}))
            assert "not available" in text and venv_python in text


async def test_a_test_that_reads_stdin_does_not_hang(memory_client: Any, tmp_path: Path) -> None:
    tests = "import sys\n\ndef test_input():\n    input()\n\ndef test_read():\n    assert sys.stdin.read() == ''\n"
    write_project(tmp_path / "captured", {"test_stdin.py": tests})
    uncaptured = write_project(tmp_path / "uncaptured", {"test_stdin.py": tests}, ini="[pytest]\naddopts = -s\n")
    with anyio.fail_after(60):
        async with memory_client(tmp_path) as client:
            result = await run(client, {"root": "captured"})
            assert result["counts"]["failed"] == 2
            assert "reading from stdin while output is captured" in result["failures"][0]["message"]
            result = await run(client, {"root": str(uncaptured)})
            assert result["counts"] == {**result["counts"], "passed": 1, "failed": 1}
            assert "EOFError" in result["failures"][0]["message"]


async def test_megabytes_of_output_are_capped(memory_client: Any, tmp_path: Path) -> None:
    tests = (
        "def test_loud():\n    for i in range(60000):\n        print('x' * 60, i)\n\n"
        "def test_loud_failure():\n    print('y' * 3_000_000)\n    assert False, 'z' * 100_000\n"
    )
    root = write_project(tmp_path / "loud", {"test_loud.py": tests}, ini="[pytest]\naddopts = -s\n")
    with anyio.fail_after(60):
        async with memory_client(root, max_log_bytes=65536) as client:
            result = await run(client)
            assert result["counts"]["passed"] == 1 and result["counts"]["failed"] == 1
            assert len(json.dumps(result)) < 20_000
            log = await client.call_tool("get_run", {"run_id": result["run_id"], "section": "log", "limit": 100})
            total = (log.structured_content or {})["total"]
            assert 65536 - 100 <= total <= 65536  # the run log is capped exactly: a head and a tail
            tail = await client.call_tool(
                "get_run", {"run_id": result["run_id"], "section": "log", "offset": total - 200}
            )
            assert "[run ended: failed" in (tail.structured_content or {})["text"]


async def test_policy_refuses_test_execution(memory_client: Any, project: Path, tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with memory_client(project, allow_test_execution=False) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert "disabled by policy" in (tools["run_tests"].description or "")
            for name in ("run_tests", "list_tests"):
                text = error_text(await client.call_tool(name, {}))
                assert "allow_test_execution" in text
    audit = tmp_path / "audit.jsonl"
    assert not audit.exists() or "pytest" not in audit.read_text()


async def test_secrets_are_redacted_and_runs_are_audited(memory_client: Any, tmp_path: Path) -> None:
    tests = f"""
import pytest

@pytest.mark.parametrize("token", ["{TOKEN}"])
def test_leaks(token):
    print("the token is", token)
    assert token == "nope"
"""
    root = write_project(tmp_path / "leaky", {"test_leak.py": tests}, ini="[pytest]\naddopts = -s\n")
    messages: list[str | None] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        messages.append(message)

    with anyio.fail_after(60):
        async with memory_client(root) as client:
            result = await client.call_tool("run_tests", {}, progress_callback=on_progress)
            text = json.dumps(result.structured_content)
            assert TOKEN not in text and "[REDACTED]" in text
            run_id = (result.structured_content or {})["run_id"]
            log = await client.call_tool("get_run", {"run_id": run_id, "section": "log"})
            assert TOKEN not in json.dumps(log.structured_content) and "[REDACTED]" in json.dumps(
                log.structured_content
            )
            assert messages and all(TOKEN not in (m or "") for m in messages)
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    runs = [line for line in lines if line["tool"] == "run_tests"]
    assert len(runs) == 1
    assert runs[0]["argv"][1:3] == ["-m", "pytest"] and runs[0]["cwd"] == str(root)
    assert runs[0]["exit_status"] == 1 and runs[0]["outcome"] == "exited" and runs[0]["output_bytes"] > 0
    assert TOKEN not in json.dumps(lines)


async def test_bytecode_is_written_and_options_apply(
    memory_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    tests = """
import os, sys

def test_env():
    assert "PYTHONDONTWRITEBYTECODE" not in os.environ and not sys.dont_write_bytecode

def test_b_fails():
    assert False

def test_c_fails():
    assert False
"""
    root = write_project(tmp_path / "opts", {"test_opts.py": tests})
    progress: list[str | None] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    with anyio.fail_after(60):
        async with memory_client(root, pass_env="PYTHONDONTWRITEBYTECODE") as client:
            first = await run(client, {"max_failures": 1})
            assert first["counts"] == {**first["counts"], "passed": 1, "failed": 1}
            assert list((root / "__pycache__").glob("test_opts*pytest*.pyc")), "rewritten tests are cached"
            await client.call_tool("run_tests", {"failed_first": True}, progress_callback=on_progress)
            assert progress[0] == "test_opts.py::test_b_fails failed"


async def test_the_configured_interpreter_runs_the_tests(memory_client: Any, tmp_path: Path) -> None:
    """Without a venv under the root, setting `python` names the interpreter (here a wrapper)."""
    wrapper = tmp_path / "bin" / "python-wrapper"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    tests = "import sys\n\ndef test_which():\n    print('interpreter', sys.executable)\n"
    root = write_project(tmp_path / "proj", {"test_which.py": tests})
    with anyio.fail_after(60):
        async with memory_client(root, python=str(wrapper)) as client:
            result = await run(client)
            assert result["status"] == "passed"
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [line["argv"][0] for line in lines if line["tool"] == "run_tests"] == [str(wrapper)]
