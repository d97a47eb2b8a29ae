"""Fuzzing the file system side: random hostile trees through the code-analysis tools.

Each tree is a random mix of what a cloned repository can hold: links into the root and out of it,
link loops, FIFOs, links to devices and /proc, files over `max_source_bytes`, binary files, config
files that link out, odd names (newlines, non-UTF-8 bytes, a leading dash). Beside the root, canary
files hold a unique string. Asserted for every call: it is answered within a bound, and the canary
never comes back, not in an answer, a stored run (`get_run`, `run://` resources), the server's log
or its audit log.

`list_tests` is not run here: collecting tests imports project code, which follows whatever links
the project holds (the README says so); the walk-based tools are what must never leave the root.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client

from tests.conftest import open_memory

pytestmark = pytest.mark.anyio

CANARY = "CANARY_7e3d0a51_NEVER_SHOWN"
CANARY_CODE = (
    f'TOKEN   =   "{CANARY}"\nimport  os\ndef {CANARY.lower()}( x ):\n    return x == None\nclass {CANARY}:\n    pass\n'
)
MAX_SOURCE_BYTES = 64 * 1024
CALL_BOUND_S = 30.0  # a bound on each wait, never asserted as a duration
SEEDS = range(8)
KINDS = (
    "py",
    "py",
    "bad_py",
    "binary",
    "huge",
    "link_in_file",
    "link_in_dir",
    "link_out_file",
    "link_out_file",
    "link_out_dir",
    "loop",
    "dir_loop",
    "fifo",
    "dev",
    "proc",
    "dangling",
    "config_out",
)
DEVICES = ("/dev/zero", "/dev/null", "/dev/urandom", "/proc/self/fd/1", "/proc/self/fd/0", "/proc/self/mem")


def make_outside(base: Path) -> Path:
    out = base / "outside"
    (out / "deep").mkdir(parents=True, exist_ok=True)
    for name in ("secret.py", "deep/more.py", "notes.txt"):
        (out / name).write_text(CANARY_CODE, encoding="utf-8")
    return out


def odd_name(rng: random.Random, suffix: str = ".py") -> bytes:
    stem = rng.choice(
        [
            b"mod",
            b"with space",
            b"-rf",
            b"new\nline",
            b"\xff\xfe",
            "é\u202e".encode(),
            b"x" * 150,
            b"--select=ALL",
            b".hidden",
        ]
    )
    return stem + str(rng.randrange(1000)).encode() + suffix.encode()


def hostile_tree(rng: random.Random, root: Path, outside: Path) -> None:
    """A random hostile tree in `root` (created), pointing at `outside` here and there."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.ruff]\nline-length = 60\n[tool.ruff.lint]\nselect = ["E", "F"]\n')
    dirs = [root]
    for _ in range(rng.randint(1, 3)):
        sub = rng.choice(dirs) / f"pkg{rng.randrange(100)}"
        sub.mkdir(exist_ok=True)
        dirs.append(sub)
    (root / "ok.py").write_text("import os\n", encoding="utf-8")
    for _ in range(rng.randint(8, 16)):
        directory = rng.choice(dirs)
        kind = rng.choice(KINDS)
        path = os.path.join(os.fsencode(directory), odd_name(rng))
        if os.path.lexists(path):
            continue
        if kind == "py":
            Path(os.fsdecode(path)).write_bytes(b"import sys\nx = {  'a':1 }\n")
        elif kind == "bad_py":
            Path(os.fsdecode(path)).write_bytes(b"def broken(:\n")
        elif kind == "binary":
            Path(os.fsdecode(path)).write_bytes(bytes(rng.randrange(256) for _ in range(512)) + b"\x00")
        elif kind == "huge":
            with open(path, "wb") as fh:
                fh.truncate(MAX_SOURCE_BYTES * 4 + rng.randrange(1000))
        elif kind == "link_in_file":
            os.symlink(root / "ok.py", path)
        elif kind == "link_in_dir":
            os.symlink(rng.choice(dirs), path)
        elif kind == "link_out_file":
            os.symlink(outside / rng.choice(["secret.py", "deep/more.py", "notes.txt"]), path)
        elif kind == "link_out_dir":
            os.symlink(
                outside / rng.choice([".", "deep"]),
                os.path.join(os.fsencode(directory), b"outdir%d" % rng.randrange(99)),
            )
        elif kind == "loop":
            other = path + b".b.py"
            os.symlink(other, path)
            os.symlink(path, other)
        elif kind == "dir_loop":
            os.symlink("..", os.path.join(os.fsencode(directory), b"up%d" % rng.randrange(99)))
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind in ("dev", "proc"):
            os.symlink(rng.choice(DEVICES), path)
        elif kind == "dangling":
            os.symlink(outside / "missing.py", path)
        elif kind == "config_out" and rng.random() < 0.5:
            config = os.path.join(os.fsencode(rng.choice(dirs[1:] or dirs)), rng.choice([b"ruff.toml", b".ruff.toml"]))
            if not os.path.lexists(config):
                os.symlink(outside / "secret.py", config)


def leaks(value: Any) -> bool:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return CANARY in text or CANARY.lower() in text


async def checked_call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    with anyio.fail_after(CALL_BOUND_S):
        result = await client.call_tool(tool, args)
    texts = [getattr(c, "text", "") for c in result.content]
    assert not leaks(texts) and not leaks(result.structured_content or {}), (tool, args)
    structured = dict(result.structured_content or {})
    run_id = structured.get("run_id")
    if run_id:
        with anyio.fail_after(CALL_BOUND_S):
            stored = await client.call_tool("get_run", {"run_id": run_id})
        assert not leaks([getattr(c, "text", "") for c in stored.content]), (tool, args, "get_run")
        assert not leaks(stored.structured_content or {}), (tool, args, "get_run")
    return structured


@pytest.mark.parametrize("seed", SEEDS)
async def test_hostile_trees_never_leak_or_hang(seed: int, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(seed)
    outside = make_outside(tmp_path)
    root = tmp_path / "root"
    hostile_tree(rng, root, outside)
    caplog.set_level(logging.DEBUG)
    skipped = errors = 0
    async with open_memory(root, tmp_path, max_source_bytes=MAX_SOURCE_BYTES, output_budget=2000) as client:
        folders = [p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink()]
        calls: list[tuple[str, dict[str, Any]]] = [
            ("lint", {}),
            ("lint", {"fix": True, "unsafe_fixes": True}),
            ("format_check", {}),
            ("analyze", {}),
        ]
        if folders:
            calls.append(("lint", {"paths": [rng.choice(folders)], "select": ["ALL"]}))
            calls.append(("analyze", {"paths": [rng.choice(folders)]}))
        for tool, args in calls:
            result = await checked_call(client, tool, args)
            skipped += result.get("skipped_count", 0)
            errors += "skipped_count" not in result
        # The server still answers a plain call, and stored runs read as resources do not leak either.
        ok = await checked_call(client, "lint", {"paths": ["ok.py"]})
        assert ok["files_checked"] == 1
        with anyio.fail_after(CALL_BOUND_S):
            listed = await client.list_resources()
            for resource in listed.resources[:20]:
                read = await client.read_resource(str(resource.uri))
                assert not leaks([getattr(c, "text", "") for c in read.contents])
    print(f"seed {seed}: {skipped} files skipped, {errors} calls refused")
    assert not leaks(caplog.text)
    audit = tmp_path / "audit.jsonl"
    assert not audit.exists() or not leaks(audit.read_text(encoding="utf-8", errors="replace"))
