"""End to end with a client we did not write: the MCP Inspector's CLI (`mcp-inspector --cli`), over
stdio and Streamable HTTP, on a copy of examples/sample_project.

Each `--cli` invocation is one connection, and run contexts belong to their connection: over
stdio and handshake-era HTTP a run made by one invocation is "not found" in the next (asserted).
Over 2026-07-28-era HTTP requests are sessionless and the bearer token owns the runs, so
run_tests -> get_run -> resources/list and resources/read run:// span invocations there.

The Inspector (and a Node.js >= 22.19 when needed) comes from the npm registry through
scripts/npm-tools. Without npm the tests skip, except under CI (CI=true or
MCP_CODE_TOOLS_REQUIRE_NPM=1), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.setup_lock import wait_for_setup

REPO = Path(__file__).resolve().parents[2]
TOKEN = "e2e-inspector-token-0123456789"
BEARER = ["--header", f"Authorization: Bearer {TOKEN}"]
SAMPLE = REPO / "examples" / "sample_project"
CLI_TIMEOUT_S = 120
CONNECT_TIMEOUT_MS = 60_000
"""The Inspector's own connect timeout (default 15 s): a loaded CI machine can take longer to start a server."""


def _npm_required() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get("MCP_CODE_TOOLS_REQUIRE_NPM") == "1"


@pytest.fixture(scope="session")
def npm_tools() -> Path:
    waited = wait_for_setup()  # scripts/setup --background may be installing them
    if waited:
        if _npm_required():
            pytest.fail(waited)
        pytest.skip(waited)
    try:
        out = subprocess.run(
            ["bash", str(REPO / "scripts" / "npm-tools")], capture_output=True, text=True, timeout=900, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        out = subprocess.CompletedProcess([], 1, "", str(exc))
    if out.returncode != 0:
        message = f"the Inspector could not be installed from npm: {out.stderr.strip()[-500:]}"
        if _npm_required():
            pytest.fail(message)
        pytest.skip(message)
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class Project:
    root: Path
    env: dict[str, str]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = tmp_path / "sample_project"
    shutil.copytree(SAMPLE, root)
    env = {
        "MCP_CODE_TOOLS_PAGE_SIZE": "2",  # tools/list takes several pages: the Inspector follows the cursors
        "MCP_CODE_TOOLS_ALLOW_TEST_EXECUTION": "true",
        "MCP_CODE_TOOLS_CACHE_DIR": str(tmp_path / "cache"),
        "MCP_CODE_TOOLS_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
    }
    return Project(root, env)


class Inspector:
    def __init__(self, tools: Path, target: list[str], tmp: Path, extra: list[str] | None = None) -> None:
        self.node = str(tools / "node_modules" / ".bin" / "node")
        self.cli = str(tools / "node_modules" / ".bin" / "mcp-inspector")
        self.target = target
        self.extra = extra or []
        self.env = {**os.environ, "MCP_CATALOG_PATH": str(tmp / "inspector-catalog.json"), "NO_COLOR": "1"}

    def run(self, method: str, *args: str) -> tuple[int, Any, str]:
        cmd = [self.node, self.cli, "--cli", *self.target, *self.extra, "--format", "json", "-q"]
        cmd += ["--connect-timeout", str(CONNECT_TIMEOUT_MS), "--method", method]
        out = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=self.env)
        try:
            data = json.loads(out.stdout) if out.stdout.strip() else None
        except json.JSONDecodeError:
            data = None
        return out.returncode, data, out.stdout + out.stderr

    def ok(self, method: str, *args: str, is_error: bool = False) -> Any:
        """The result printed; with `is_error`, a tool result with isError: true (the CLI exits 5)."""
        code, data, raw = self.run(method, *args)
        assert code == (5 if is_error else 0) and isinstance(data, dict) and "result" in data, raw
        return data["result"]


def stdio_inspector(tools: Path, project: Project, tmp: Path) -> Inspector:
    env_args = [arg for key, value in project.env.items() for arg in ("-e", f"{key}={value}")]
    server = [sys.executable, "-m", "mcp_server", "--root", str(project.root)]
    return Inspector(tools, [*env_args, "--cwd", str(REPO), *server], tmp)


@pytest.fixture
def http_url(project: Project, tmp_path: Path) -> Iterator[str]:
    env = {**os.environ, **project.env, "PYTHONPATH": str(REPO), "MCP_CODE_TOOLS_TOKEN": TOKEN}
    argv = [sys.executable, "-m", "mcp_server", "--transport", "http", "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(
        [*argv, "--root", str(project.root)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=str(REPO),
    )
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if not found and "listening on " in line:
                found.append(line.split("listening on ", 1)[1].split()[0])
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(60) and found, "the HTTP server did not start"
        yield found[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        reader.join(timeout=5)


def assert_tools_listed(inspector: Inspector) -> None:
    listed = inspector.ok("tools/list")
    names = [t["name"] for t in listed["tools"]]
    assert {"lint", "run_tests", "get_run", "format_check", "cancel_run"} <= set(names)
    assert len(names) > 2  # more than one page of 2: the Inspector followed next_cursor
    assert len(names) == len(set(names))


def assert_lint(inspector: Inspector) -> None:
    result = inspector.ok("tools/call", "--tool-name", "lint", "--tool-args-json", '{"paths": ["src"]}')
    assert result.get("isError") is not True
    codes = {d["code"] for d in result["structuredContent"]["diagnostics"]}
    assert "F401" in codes


def run_tests(inspector: Inspector) -> str:
    result = inspector.ok("tools/call", "--tool-name", "run_tests")
    body = result["structuredContent"]
    assert body["status"] == "failed"
    assert body["counts"]["passed"] == 4 and body["counts"]["failed"] == 1
    assert [f["nodeid"] for f in body["failures"]] == ["tests/test_shapes.py::test_deliberately_failing"]
    return str(body["run_id"])


def assert_prompts(inspector: Inspector) -> None:
    names = [p["name"] for p in inspector.ok("prompts/list")["prompts"]]
    assert names == ["fix-lint", "triage-failures", "review-change"]
    got = inspector.ok("prompts/get", "--prompt-name", "fix-lint", "--prompt-args", "path=src/sample/shapes.py")
    text = got["messages"][0]["content"]["text"]
    assert "F401" in text and "-import os" in text
    code, _, raw = inspector.run("prompts/get", "--prompt-name", "fix-lint")
    assert code != 0 and "missing required argument 'path'" in raw


def assert_run_is_gone(inspector: Inspector, run_id: str) -> None:
    gone = inspector.ok("tools/call", "--tool-name", "get_run", "--tool-arg", f"run_id={run_id}", is_error=True)
    assert gone["isError"] is True and "not found" in gone["content"][0]["text"]
    code, _, raw = inspector.run("resources/read", "--uri", f"run://{run_id}")
    assert code != 0 and "not found" in raw


def test_inspector_over_stdio(npm_tools: Path, project: Project, tmp_path: Path) -> None:
    inspector = stdio_inspector(npm_tools, project, tmp_path)
    assert_tools_listed(inspector)
    assert_lint(inspector)
    run_id = run_tests(inspector)
    assert_run_is_gone(inspector, run_id)  # that invocation's server process (and its runs) ended
    templates = inspector.ok("resources/templates/list")["resourceTemplates"]
    assert [t["uriTemplate"] for t in templates] == ["run://{run_id}", "run://{run_id}/log"]
    assert inspector.ok("resources/list")["resources"] == []  # a fresh connection owns no runs
    assert_prompts(inspector)


def test_inspector_over_http_handshake_era(npm_tools: Path, http_url: str, tmp_path: Path) -> None:
    inspector = Inspector(npm_tools, [http_url], tmp_path, ["--transport", "http", "--protocol-era", "legacy", *BEARER])
    assert_tools_listed(inspector)
    assert_lint(inspector)
    run_id = run_tests(inspector)
    assert_run_is_gone(inspector, run_id)  # the session ended with the invocation, and its runs with it


def test_inspector_over_http_modern_era(npm_tools: Path, http_url: str, tmp_path: Path) -> None:
    inspector = Inspector(npm_tools, [http_url], tmp_path, ["--transport", "http", "--protocol-era", "modern", *BEARER])
    assert_tools_listed(inspector)
    assert_lint(inspector)
    run_id = run_tests(inspector)
    page = inspector.ok("tools/call", "--tool-name", "get_run", "--tool-arg", f"run_id={run_id}")
    assert page.get("isError") is not True
    assert page["structuredContent"]["run_id"] == run_id
    listed = [r["uri"] for r in inspector.ok("resources/list")["resources"]]
    assert f"run://{run_id}" in listed and f"run://{run_id}/log" in listed  # the token owns the run
    read = inspector.ok("resources/read", "--uri", f"run://{run_id}")
    body = json.loads(read["contents"][0]["text"])
    assert body["run_id"] == run_id and body["running"] is False and body["result"]["status"] == "failed"
    log = inspector.ok("resources/read", "--uri", f"run://{run_id}/log")
    assert log["contents"][0]["mimeType"] == "text/plain"
    assert_prompts(inspector)
