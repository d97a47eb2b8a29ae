"""ConfigSnapshot: pytest's configuration of a root walked once, then checked by `stat`s only; every
kind of change still seen (the zygote pool retires its zygote on it), and a snapshot taken in the
same moment as a change never trusted."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tools.test_runner import config_watch
from tools.test_runner.config_watch import ConfigSnapshot
from tools.test_runner.environment import config_files

OLD_NS = 1_000_000_000 * 1_000_000_000  # 2001: long settled


def settle(root: Path) -> None:
    """Set every time under `root` far in the past (as in a tree nobody touched lately). The
    ctimes stay new: the snapshot's settle window is moved instead (`walks`)."""
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.utime(os.path.join(folder, name), ns=(OLD_NS, OLD_NS))
        os.utime(folder, ns=(OLD_NS, OLD_NS))


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The folders listed (each `os.scandir`); ctimes of just now count as settled."""
    listed: list[str] = []
    scandir = os.scandir

    def counted(path: str) -> Iterator[os.DirEntry[str]]:
        if f"{os.sep}proj" in path:
            listed.append(path)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", counted)
    monkeypatch.setattr(config_watch, "SETTLE_NS", -60 * 1_000_000_000)
    yield listed


def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    for rel, text in {
        "pytest.ini": "[pytest]\n",
        "tests/conftest.py": "# conftest\n",
        "tests/unit/test_a.py": "def test_a():\n    pass\n",
        "src/pkg/__init__.py": "",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    settle(root)
    return root


def test_the_fingerprint_is_the_walks_and_an_unchanged_tree_is_not_walked_again(
    tmp_path: Path, walks: list[str]
) -> None:
    root = project(tmp_path)
    snapshot = ConfigSnapshot.take(root)
    assert snapshot.trusted and snapshot.files == ConfigSnapshot.take(root).files
    assert [path for path, _ in snapshot.files] == config_files(root)
    walked = len(walks)
    assert walked >= 5  # proj, tests, tests/unit, src, src/pkg
    for _ in range(3):
        assert snapshot.refresh(root) is snapshot
    assert len(walks) == walked  # stats only


def rewrite_keeping_size_and_mtime(root: Path) -> None:  # environment.config_fingerprint misses it
    (root / "tests" / "conftest.py").write_text("# CONFTEST\n")
    os.utime(root / "tests" / "conftest.py", ns=(OLD_NS, OLD_NS))


def conftest_in_a_new_folder(root: Path) -> None:
    (root / "tests" / "new").mkdir()
    (root / "tests" / "new" / "conftest.py").write_text("#\n")


def folder_with_a_conftest_moved_in(root: Path) -> None:
    outside = root.parent / "outside"
    outside.mkdir()
    (outside / "conftest.py").write_text("#\n")
    settle(outside)
    outside.rename(root / "src" / "moved")


def pytest_ini_replaced(root: Path) -> None:
    (root / "new.ini").write_text("[pytest]\n")
    os.utime(root / "new.ini", ns=(OLD_NS, OLD_NS))
    (root / "new.ini").replace(root / "pytest.ini")


CHANGES: dict[str, Callable[[Path], object]] = {
    "a conftest edited": lambda root: (root / "tests" / "conftest.py").write_text("# edited\n"),
    "a conftest rewritten, its size and mtime kept": rewrite_keeping_size_and_mtime,
    "a conftest deleted": lambda root: (root / "tests" / "conftest.py").unlink(),
    "a conftest created in a known folder": lambda root: (root / "tests" / "unit" / "conftest.py").write_text("#\n"),
    "a conftest in a new folder": conftest_in_a_new_folder,
    "a folder with a conftest moved in": folder_with_a_conftest_moved_in,
    "a root config file created": lambda root: (root / "pyproject.toml").write_text("[tool.pytest.ini_options]\n"),
    "an ancestor's config file created": lambda root: (root.parent / "tox.ini").write_text("[pytest]\n"),
    "the root's pytest.ini replaced": pytest_ini_replaced,
    "a folder turned into a venv": lambda root: (root / "tests" / "pyvenv.cfg").write_text("home = /usr\n"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_every_change_of_the_configuration_is_seen(tmp_path: Path, walks: list[str], change: str) -> None:
    root = project(tmp_path)
    snapshot = ConfigSnapshot.take(root)
    assert snapshot.trusted
    CHANGES[change](root)
    fresh = snapshot.refresh(root)
    assert fresh is not snapshot
    assert fresh.fingerprint == ConfigSnapshot.take(root).fingerprint != snapshot.fingerprint


def test_a_new_test_file_walks_again_with_the_same_fingerprint(tmp_path: Path, walks: list[str]) -> None:
    root = project(tmp_path)
    snapshot = ConfigSnapshot.take(root)
    (root / "tests" / "unit" / "test_b.py").write_text("def test_b():\n    pass\n")
    fresh = snapshot.refresh(root)
    assert fresh is not snapshot and fresh.fingerprint == snapshot.fingerprint  # the zygote is kept


def test_a_snapshot_of_a_tree_changed_just_now_is_never_trusted(tmp_path: Path) -> None:
    """Within the settle window a change could leave a folder's mtime as the walk saw it: such
    a snapshot walks again on every check (until the tree has settled)."""
    root = project(tmp_path)
    (root / "tests" / "unit" / "conftest.py").write_text("#\n")  # just now
    snapshot = ConfigSnapshot.take(root)
    assert not snapshot.trusted and not snapshot.unchanged()
    assert snapshot.refresh(root) is not snapshot


def test_a_walk_cut_short_is_never_trusted(tmp_path: Path, walks: list[str]) -> None:
    root = project(tmp_path)
    snapshot = ConfigSnapshot.take(root, max_dirs=2)
    assert not snapshot.trusted and snapshot.refresh(root) is not snapshot
