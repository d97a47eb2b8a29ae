"""The leak check itself: it sees orphaned grandchildren, waits for the dying, reaps the dead."""

from __future__ import annotations

import subprocess

from tests.leakcheck import allow_long_lived, descendants, forget_long_lived, kill_and_reap, leftovers


def test_an_orphaned_grandchild_is_found_and_killed() -> None:
    before = set(descendants())
    # The shell exits at once; its background sleep is orphaned and adopted by pytest (subreaper).
    subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 &"], check=True, timeout=10)
    left = leftovers(before, wait_s=0.2)
    assert [p.cmdline for p in left] == ["sleep 60"]
    kill_and_reap(left)
    assert leftovers(before, wait_s=5) == []


def test_a_process_that_is_exiting_is_waited_for() -> None:
    before = set(descendants())
    proc = subprocess.Popen(["sleep", "0.05"])
    try:
        assert leftovers(before, wait_s=10) == []  # waited for its exit, then reaped the zombie
    finally:
        proc.wait(timeout=10)


def test_long_lived_fixture_processes_are_exempt() -> None:
    before = set(descendants())
    proc = subprocess.Popen(["sleep", "60"])
    try:
        allow_long_lived(proc.pid)
        assert leftovers(before, wait_s=0.1) == []
        forget_long_lived(proc.pid)
        assert [p.pid for p in leftovers(before, wait_s=0.1)] == [proc.pid]
    finally:
        forget_long_lived(proc.pid)
        proc.kill()
        proc.wait(timeout=10)
