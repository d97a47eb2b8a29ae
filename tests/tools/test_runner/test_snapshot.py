"""The root's non-Python files as the affected selection sees them (`selection/snapshot.py`): by
content, read only when a file's `stat` signature moved, and never by opening what is not a
regular file (a FIFO would block a read; a link may lead out of the root, or to a device)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tools.test_runner.selection import snapshot
from tools.test_runner.selection.snapshot import MAX_HASHED, Snapshot, take


def test_the_others_count_by_content_and_specials_by_signature(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "a.txt").write_text("one\n")
    (root / "mod.py").write_text("x = 1\n")
    os.mkfifo(root / "data.fifo")
    (root / "zero.txt").symlink_to("/dev/zero")
    (root / "passwd.txt").symlink_to("/etc/passwd")
    with (root / "big.bin").open("wb") as fh:  # sparse: past the bound, never read
        fh.truncate(MAX_HASHED + 1)
    done: list[Snapshot] = []
    walker = threading.Thread(target=lambda: done.append(take(root)), daemon=True)
    walker.start()
    walker.join(30)
    assert done, "the walk blocked"
    snap = done[0]
    assert set(snap.others) == {"a.txt", "data.fifo", "zero.txt", "passwd.txt", "big.bin"}
    keys = snap.keys
    assert not keys["a.txt"].startswith("stat:")
    assert all(keys[rel].startswith("stat:") for rel in ("data.fifo", "zero.txt", "passwd.txt", "big.bin"))

    os.utime(root / "a.txt", (1, 1))  # touched: the same content, the same digest
    touched = take(root, snap.known())
    assert touched.keys["a.txt"] == keys["a.txt"] and touched.others_digest() == snap.others_digest()
    (root / "a.txt").write_text("two\n")
    assert take(root, touched.known()).others_digest() != snap.others_digest()


def test_one_snapshot_reads_a_bounded_amount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    for i in range(4):
        (root / f"d{i}.txt").write_bytes(bytes([i]) * 1000)
    monkeypatch.setattr(snapshot, "MAX_READ", 2500)  # two files' worth
    first = take(root)
    assert sorted(k.startswith("stat:") for k in first.keys.values()) == [False, False, True, True]
    again = take(root, first.known())  # nothing moved: nothing read, the same keys
    assert again.keys == first.keys and again.others_digest() == first.others_digest()
