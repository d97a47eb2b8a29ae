"""A hostile repository: links out of the root, special files and huge files reached by walks.

Explicit paths were always checked; these are the files reached by `{}` (the whole root) or by a
folder path, through our walk and ruff's own discovery. Nothing outside the root may come back,
no call may hang, nothing is read past `max_source_bytes`, and nothing is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import ClientFactory
from tests.tools.code_analysis.conftest import call, write_project

pytestmark = pytest.mark.anyio

CANARY = "CANARY_b2f1c9d4_OUTSIDE"
SECRET = f'AWS_SECRET_ACCESS_KEY   =   "{CANARY}"\nimport   os\ndef {CANARY.lower()}( x ):\n    return  x\n'
TOOLS = ("lint", "format_check", "analyze")
BOUND_S = 60  # a bound on the wait (never asserted as a duration): before the fix these never answered


def outside_dir(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    (out / "pkg").mkdir(parents=True, exist_ok=True)
    (out / "secret.py").write_text(SECRET, encoding="utf-8")
    (out / "pkg" / "secret2.py").write_text(SECRET, encoding="utf-8")
    return out


def skipped_paths(result: dict[str, Any]) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in result.get("skipped", [])}


def assert_no_canary(result: Any) -> None:
    text = json.dumps(result)
    assert CANARY not in text and CANARY.lower() not in text


@pytest.fixture
def escaping(tmp_path: Path) -> Path:
    root = write_project(tmp_path / "project")
    out = outside_dir(tmp_path)
    (root / "settings_local.py").symlink_to(out / "secret.py")
    (root / "pkg" / "x.py").symlink_to(out / "secret.py")
    (root / "passwd.py").symlink_to("/etc/passwd")
    (root / "outdir").symlink_to(out / "pkg")  # a folder link out: ruff's discovery does not follow it
    (root / "pkg" / "alias.py").symlink_to(root / "pkg" / "clean.py")  # a link inside is fine
    return root


async def test_links_out_of_the_root_are_skipped_by_every_walk(mcp_client: ClientFactory, escaping: Path) -> None:
    with anyio.fail_after(BOUND_S):
        async with mcp_client(escaping) as client:
            for tool in TOOLS:
                for args in ({}, {"paths": ["pkg"]}, {"paths": ["pkg", "settings_local.py"]}):
                    if "settings_local.py" in args.get("paths", []):
                        # An explicit link out is refused, as before.
                        result = await client.call_tool(tool, args)
                        assert result.is_error
                        assert_no_canary(result.content[0].text)  # type: ignore[union-attr]
                        continue
                    result = await call(client, tool, args)
                    assert_no_canary(result)
                    skipped = skipped_paths(result)
                    assert "pkg/x.py" in skipped, (tool, args, result)
                    assert "outside" in skipped["pkg/x.py"]
                    if not args:
                        assert "settings_local.py" in skipped and "passwd.py" in skipped
                    assert result["skipped_count"] == len(skipped)
            # A link that stays inside the root is still checked.
            lint = await call(client, "lint", {"paths": ["pkg"], "select": ["ALL"]})
            assert "pkg/alias.py" in {d["path"] for d in lint["diagnostics"]}


@pytest.fixture
def special(tmp_path: Path) -> Path:
    root = write_project(tmp_path / "project")
    os.mkfifo(root / "fifo.py")
    os.mkfifo(root / "pkg" / "pipe.py")
    (root / "zero.py").symlink_to("/dev/zero")
    (root / "pkg" / "out.py").symlink_to("/proc/self/fd/1")
    return root


@pytest.mark.parametrize("transport", ["memory", "stdio"])
async def test_fifos_and_device_links_never_block_a_walk(mcp_client: ClientFactory, special: Path) -> None:
    with anyio.fail_after(BOUND_S):
        async with mcp_client(special) as client:
            for tool in TOOLS:
                for args in ({}, {"paths": ["pkg"]}):
                    result = await call(client, tool, args)
                    skipped = skipped_paths(result)
                    assert "pkg/pipe.py" in skipped and "FIFO" in skipped["pkg/pipe.py"], (tool, skipped)
                    assert "pkg/out.py" in skipped, (tool, skipped)
                    if not args:
                        assert "FIFO" in skipped["fifo.py"] and "outside" in skipped["zero.py"]
            # The server still serves, and the project's real files were checked.
            lint = await call(client, "lint", {})
            assert "pkg/mod.py" in {d["path"] for d in lint["diagnostics"]}


async def test_a_huge_file_is_skipped_not_read(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = write_project(tmp_path / "project")
    with (root / "big.py").open("wb") as fh:  # sparse: 50 MB on paper, nothing on disk
        fh.truncate(50 * 1024 * 1024)
    with anyio.fail_after(BOUND_S):
        async with mcp_client(root) as client:
            for tool in TOOLS:
                result = await call(client, tool, {})
                reason = skipped_paths(result).get("big.py", "")
                assert "over the limit" in reason and "max_source_bytes" in reason, (tool, result)


@pytest.mark.parametrize("transport", ["memory"])
async def test_the_walk_is_bounded_in_files(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = write_project(tmp_path / "project")
    (root / "many").mkdir()
    for i in range(30):
        (root / "many" / f"m{i:02}.py").write_text("x = 1\n", encoding="utf-8")
    with anyio.fail_after(BOUND_S):
        async with mcp_client(root, max_walk_files=10) as client:
            for tool in TOOLS:
                result = await call(client, tool, {"paths": ["many"]})
                assert result["files_checked"] == 10 if tool != "analyze" else result["summary"]["files"] == 10
                assert result["skipped_count"] == 20
                assert "max_walk_files" in json.dumps(result["skipped"])


async def test_nothing_is_written_to_the_root_or_a_projects_cache_dir(
    mcp_client: ClientFactory, tmp_path: Path
) -> None:
    root = write_project(tmp_path / "project")
    hostile = tmp_path / "hostile-cache"
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    (root / "pyproject.toml").write_text(
        pyproject.replace("[tool.ruff]\n", f'[tool.ruff]\ncache-dir = "{hostile}"\n'), encoding="utf-8"
    )
    with anyio.fail_after(BOUND_S):
        async with mcp_client(root) as client:
            for tool in TOOLS:
                await call(client, tool, {})
                await call(client, tool, {"paths": ["pkg"]})
                await call(client, tool, {"paths": ["pkg/mod.py"]})  # the warm server's path
                await call(client, tool, {"source": "import os\n", "filename": "pkg/new.py"})
            await call(client, "lint", {"fix": True})
    assert not (root / ".ruff_cache").exists()
    assert not hostile.exists()
    assert sorted(p.name for p in root.rglob("*") if p.name.startswith(".")) == []


@pytest.mark.parametrize("transport", ["memory"])
async def test_config_files_ruff_would_read_pass_the_path_check(mcp_client: ClientFactory, tmp_path: Path) -> None:
    """ruff reads config files itself (and quotes them in its errors): a config that links outside
    the root, or is a FIFO, refuses the call instead of reaching ruff."""
    root = write_project(tmp_path / "project")
    out = outside_dir(tmp_path)
    (root / "pkg" / "pyproject.toml").symlink_to(out / "secret.py")
    (root / "legacy" / "sub").mkdir()
    (root / "legacy" / "sub" / "x.py").write_text("x = 1\n", encoding="utf-8")
    os.mkfifo(root / "legacy" / "sub" / "ruff.toml")
    with anyio.fail_after(BOUND_S):
        async with mcp_client(root) as client:
            for tool in TOOLS:
                for args in ({}, {"paths": ["pkg"]}, {"paths": ["pkg/mod.py"]}, {"paths": ["legacy/sub"]}):
                    result = await client.call_tool(tool, args)
                    text = result.content[0].text  # type: ignore[union-attr]
                    assert result.is_error, (tool, args, text)
                    assert "config file" in text and CANARY not in text and CANARY.lower() not in text
            source = await client.call_tool("lint", {"source": "x = 1\n", "filename": "pkg/new.py"})
            assert source.is_error
            fine = await call(client, "lint", {"paths": ["legacy/old.py"]})  # no suspect config on its chain
            assert fine["files_checked"] == 1


@pytest.mark.parametrize("stop", ["SIGTERM", "EOF"])
async def test_a_stdio_server_on_a_hostile_tree_keeps_serving_and_exits_promptly(special: Path, stop: str) -> None:
    """Issue 9 item 2: with one FIFO walk pending, SIGTERM had no effect for 15 s and EOF none for
    45 s; ~40 such calls exhausted the thread pool. Now: 45 walks answer, then the server stops."""
    from tests.mcp_server.transports.test_processes import INITIALIZE, StdioPeer, server_process

    with anyio.fail_after(BOUND_S):
        async with server_process(special) as proc:
            peer = StdioPeer(proc)
            await peer.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE})
            assert "result" in await peer.answer(1)
            await peer.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            for i in range(45):  # more than the worker threads anyio has (40)
                call = {"name": TOOLS[i % 3], "arguments": {}}
                await peer.send({"jsonrpc": "2.0", "id": 100 + i, "method": "tools/call", "params": call})
            answers: dict[int, dict[str, Any]] = {}
            while len(answers) < 45:  # answers come in any order
                line = (await peer.stdout.receive_until(b"\n", 64 * 1024 * 1024)).decode()
                message = json.loads(line)
                if "id" in message and "method" not in message:
                    answers[message["id"]] = message
            assert sorted(answers) == list(range(100, 145))
            for message in answers.values():
                result = message["result"]
                assert not result.get("isError"), result
                assert "fifo.py" in json.dumps(result["structuredContent"]["skipped"])
            await peer.send({"jsonrpc": "2.0", "id": 2, "method": "ping"})
            assert (await peer.answer(2))["result"] == {}
            if stop == "SIGTERM":
                proc.terminate()
            else:
                await proc.stdin.aclose()  # type: ignore[union-attr]
            await peer.rest()
            assert await proc.wait() == 0
