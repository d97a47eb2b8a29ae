"""Which interpreter runs a project's tests, and what makes its zygote stale."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from tools.test_runner.environment import EnvFingerprints, config_files, env_fingerprint, find_interpreter, fingerprint


def fake_python(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_the_projects_interpreter_comes_first(tmp_path: Path) -> None:
    configured = tmp_path / "configured-python"
    assert find_interpreter(tmp_path, None) == Path(sys.executable)
    assert find_interpreter(tmp_path, configured) == configured
    venv = fake_python(tmp_path / "venv" / "bin" / "python")
    assert find_interpreter(tmp_path, configured) == venv
    dot_venv = fake_python(tmp_path / ".venv" / "bin" / "python")
    assert find_interpreter(tmp_path, configured) == dot_venv
    dot_venv.chmod(0o644)  # not executable: not an interpreter
    assert find_interpreter(tmp_path, configured) == venv


def test_what_changes_the_fingerprint(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "tests").mkdir(parents=True)
    site = tmp_path / "site-packages"
    site.mkdir()
    python = fake_python(tmp_path / "python")

    def fp() -> str:
        return fingerprint(root, python, [str(site)])

    before = fp()
    assert fp() == before

    changes = [
        lambda: (root / "tests" / "conftest.py").write_text("# added\n"),
        lambda: (root / "tests" / "conftest.py").write_text("# edited, longer\n"),
        lambda: (root / "pytest.ini").write_text("[pytest]\n"),
        lambda: (root / "tox.ini").write_text("[tox]\n"),
        lambda: (root / "setup.cfg").write_text("[metadata]\n"),
        lambda: (root / "pyproject.toml").write_text("[project]\n"),
        lambda: (site / "newpkg-1.0.dist-info").mkdir(),
        lambda: os.utime(python, ns=(1, 1)),
    ]
    for change in changes:
        change()
        after = fp()
        assert after != before
        before = after

    # Not pytest configuration: test files, hidden directories, virtual environments, caches.
    ignored = [
        lambda: (root / "tests" / "test_x.py").write_text("def test_x(): pass\n"),
        lambda: (root / ".hidden").mkdir() or (root / ".hidden" / "conftest.py").write_text("\n"),
        lambda: (root / "env").mkdir() or (root / "env" / "pyvenv.cfg").write_text("home = /usr\n"),
        lambda: (root / "env" / "conftest.py").write_text("\n"),
        lambda: (root / "tests" / "__pycache__").mkdir() or (root / "tests" / "__pycache__" / "conftest.py").touch(),
    ]
    for change in ignored:
        change()
        assert fp() == before


def test_config_files_walk_is_bounded(tmp_path: Path) -> None:
    for i in range(30):
        (tmp_path / f"d{i:02d}").mkdir()
        (tmp_path / f"d{i:02d}" / "conftest.py").write_text("\n")
    found = [f for f in config_files(tmp_path, max_dirs=10) if f.endswith("conftest.py") and "/d" in f]
    assert 0 < len(found) < 30
    assert len([f for f in config_files(tmp_path) if "/d" in f]) == 30


@pytest.mark.anyio
async def test_env_fingerprints_are_cached_for_the_ttl_then_taken_again(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    python = fake_python(tmp_path / "python")
    now = [100.0]
    cache = EnvFingerprints(ttl_s=1.0, clock=lambda: now[0])
    with anyio.fail_after(10):
        before = await cache.get(python, [str(site)])
        (site / "newpkg-1.0.dist-info").mkdir()  # an install
        assert await cache.get(python, [str(site)]) == before  # within the TTL: not looked at
        now[0] += 1.0
        after = await cache.get(python, [str(site)])
    assert after != before and after == env_fingerprint(python, [str(site)])
    assert cache.taken == 2
