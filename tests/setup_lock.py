"""Wait for `scripts/setup --background` (scripts/test, .ci/run) to finish installing redis-server, the npm
tools and the 1.x SDK venv, for the few tests that need them.

That part holds an exclusive lock on `.setup.lock` at the top of the checkout while it runs (taken before the
tests can start); `wait_for_setup()` takes a shared lock on it with a bounded wait, through util-linux's
`flock`, and says why when the wait ran out. No lock file, or no background part running: no wait. Its
output is in `.setup.log`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / ".setup.lock"
LOG = REPO / ".setup.log"
WAIT_S = 600
"""On a fresh machine the whole background part took ~35 s (`npm install` 33 s)."""

_done = False


def wait_for_setup(timeout_s: float = WAIT_S) -> str | None:
    """None once no background part holds the lock; else why not (the wait timed out, or it failed)."""
    global _done
    if _done or not LOCK.exists():
        return None
    flock = shutil.which("flock")
    if flock is None:
        return None  # util-linux missing: no waiting (scripts/setup needs flock too)
    begun = time.monotonic()
    try:
        argv = [flock, "--shared", "--wait", str(timeout_s), str(LOCK), "true"]
        done = subprocess.run(argv, capture_output=True, timeout=timeout_s + 30)
    except subprocess.TimeoutExpired:
        done = subprocess.CompletedProcess([], 1)
    if done.returncode != 0:
        return (
            f"scripts/setup's background part (redis-server, npm tools, 1.x SDK venv) still held {LOCK.name} "
            f"after {time.monotonic() - begun:.0f} s; its log so far ({LOG}):\n{_log_tail()}"
        )
    _done = True
    return None


def setup_log_tail() -> str:
    """The end of the background part's log, to explain a missing tool."""
    return _log_tail()


def _log_tail() -> str:
    try:
        return "\n".join(LOG.read_text(errors="replace").splitlines()[-20:])
    except OSError:
        return "(no log)"
