"""What the file system says: config states and keys, tree walks, content hashes (blocking code, tested directly)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from mcp_server.paths import FileChecker, FileSkipped
from tools.code_analysis.workspace import (
    RACY_WINDOW_NS,
    StatCache,
    config_changed,
    config_key,
    observe_chain,
    scan_tree,
)


def make_tree(root: Path) -> None:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[tool.ruff]\n")
    (root / "pkg" / "a.py").write_text("a = 1\n")
    (root / "pkg" / "sub" / "b.py").write_text("b = 1\n")
    (root / ".venv" / "lib" / "c.py").write_text("c = 1\n")
    (root / ".gitignore").write_text("build/\n")


def test_scan_walks_targets_skipping_default_excludes(tmp_path: Path) -> None:
    make_tree(tmp_path)
    scan = scan_tree(tmp_path, [tmp_path])
    names = {Path(f).relative_to(tmp_path).as_posix() for f in scan.files}
    assert names == {"pyproject.toml", "pkg/a.py", "pkg/sub/b.py", ".gitignore"}
    assert scan.configs[str(tmp_path)][0][0] == "pyproject.toml"
    assert scan.configs[str(tmp_path / "pkg")] == ()
    assert str(tmp_path.parent) in scan.configs  # ancestors: ruff looks up from the root too
    assert any(path.endswith(".gitignore") for path, _ in scan.ignore_files)


def test_fingerprint_moves_when_discovery_could(tmp_path: Path) -> None:
    make_tree(tmp_path)
    before = scan_tree(tmp_path, [tmp_path]).fingerprint(["."])
    assert scan_tree(tmp_path, [tmp_path]).fingerprint(["."]) == before
    (tmp_path / "pkg" / "a.py").write_text("a = 2  # content changes do not matter to discovery\n")
    assert scan_tree(tmp_path, [tmp_path]).fingerprint(["."]) == before
    (tmp_path / "pkg" / "new.py").write_text("")
    added = scan_tree(tmp_path, [tmp_path]).fingerprint(["."])
    assert added != before
    (tmp_path / ".gitignore").write_text("build/\ndist/\n")
    assert scan_tree(tmp_path, [tmp_path]).fingerprint(["."]) != added


def test_config_keys_follow_the_configs_that_apply(tmp_path: Path) -> None:
    make_tree(tmp_path)
    sub = str(tmp_path / "pkg" / "sub")
    key = config_key(sub, observe_chain(sub))
    assert config_key(sub, observe_chain(sub)) == key
    assert config_key(str(tmp_path / "pkg"), observe_chain(str(tmp_path / "pkg"))) != key  # per directory
    (tmp_path / "pkg" / "ruff.toml").write_text("line-length = 10\n")
    assert config_key(sub, observe_chain(sub)) != key
    # A walk and a direct look at the chain give the same key (so the two paths share cache entries).
    assert config_key(sub, scan_tree(tmp_path, [tmp_path]).configs) == config_key(sub, observe_chain(sub))


def test_config_changed(tmp_path: Path) -> None:
    make_tree(tmp_path)
    taken = time.time_ns()
    before = scan_tree(tmp_path, [tmp_path]).configs
    sub = str(tmp_path / "pkg" / "sub")
    assert not config_changed(before, observe_chain(sub), taken)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[tool.ruff]\nline-length = 80\n")
    assert config_changed(before, observe_chain(sub), taken)
    # A directory the snapshot never saw counts only if a config in it is newer than the snapshot.
    hidden = tmp_path / ".venv" / "lib"
    (hidden / "ruff.toml").write_text("")
    old = taken - 10 * RACY_WINDOW_NS
    os.utime(hidden / "ruff.toml", ns=(old, old))
    assert not config_changed(before, {str(hidden): observe_chain(str(hidden))[str(hidden)]}, taken)
    os.utime(hidden / "ruff.toml")
    assert config_changed(before, {str(hidden): observe_chain(str(hidden))[str(hidden)]}, taken)


def test_stat_cache_rereads_only_changed_or_racy_files(tmp_path: Path) -> None:
    path = tmp_path / "f.py"
    path.write_text("one\n")
    old = time.time_ns() - 10 * RACY_WINDOW_NS
    os.utime(path, ns=(old, old))
    cache = StatCache()
    checker = FileChecker([tmp_path.resolve()], 1024)
    first = cache.hash_file(str(path), checker)
    assert cache.hash_file(str(path), checker) is first  # unchanged and not racy: not read again
    path.write_text("two\n")  # same size, new mtime
    second = cache.hash_file(str(path), checker)
    assert second.digest != first.digest
    # Just written: a second write within one mtime tick could look the same, so it is re-read.
    third = cache.hash_file(str(path), checker)
    assert third is not second and third.digest == second.digest
    assert cache.still(str(path), third)
    path.unlink()
    with pytest.raises(FileSkipped, match="cannot be read"):
        cache.hash_file(str(path), checker)
    assert not cache.still(str(path), third)


class LockCheckedDict(dict[str, Any]):
    """A dict that fails any change made without its owner's lock held."""

    lock: Any = None

    def _check(self) -> None:
        assert self.lock is not None and self.lock.locked(), "StatCache changed without its lock"

    def __setitem__(self, key: str, value: Any) -> None:
        self._check()
        super().__setitem__(key, value)

    def pop(self, *args: Any) -> Any:
        self._check()
        return super().pop(*args)


def test_stat_cache_changes_its_entries_only_under_its_lock(tmp_path: Path) -> None:
    """Issue 11 item 10: `hash_file` popped a vanished file's entry without the lock, while `record`
    (another call's worker thread) iterated the same dict under it."""
    path = tmp_path / "f.py"
    path.write_text("one\n")
    cache = StatCache(max_entries=1)
    states = LockCheckedDict()
    states.lock = cache._lock
    cache._states = states
    checker = FileChecker([tmp_path.resolve()], 1024)
    cache.hash_file(str(path), checker)
    cache.record(str(tmp_path / "other.py"), (0, 0, 0, 0), "x")  # evicts the first under the lock
    cache.hash_file(str(path), checker)
    path.unlink()
    with pytest.raises(FileSkipped):
        cache.hash_file(str(path), checker)  # the vanished file's entry goes, under the lock
    assert str(path) not in states
