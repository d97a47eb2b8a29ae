"""A project interpreter on CPython 3.12+, for the tests of the recorder's `sys.monitoring` tracer.

Tests run in a project's own interpreter (the forked child of its zygote), and on 3.12+ the recorder
traces with `sys.monitoring` instead of cProfile (tools/test_runner/tracers.py): a path the main
venv's 3.11 never takes. This builds `.venv-py312` at the top of the checkout (git-ignored), with
only pytest in it, as a project's venv would have: from the newest CPython >= 3.12 on the machine
(`python3.13`/`python3.12` on PATH, or pyenv's versions). Debian 12 packages none and uv cannot
fetch one here (no network beyond the registries): without one the tests that need it skip, and
say why. Standard library only, like tests/sdk1_venv.py, so that scripts/setup can build it:

    python3 tests/py312_venv.py     # exit 0 when it works (or no 3.12+ exists: says so), else 1
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-py312"
REQUIREMENTS = ["pytest>=8"]
BUILD_TIMEOUT_S = 600
NONE_FOUND = "no CPython >= 3.12 on this machine (PATH, pyenv)"


def venv_python() -> Path:
    return VENV / "bin" / "python"


def _version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.fullmatch(r"(\d+)\.(\d+)\s*", out.stdout)
    return (int(found[1]), int(found[2])) if out.returncode == 0 and found else None


def find_base() -> str | None:
    """The newest CPython >= 3.12 found, or None."""
    candidates = [shutil.which(f"python3.{minor}") for minor in range(20, 11, -1)]
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(os.path.join(pyenv, "versions", "3.1[2-9]*", "bin", "python3")), reverse=True)
    best: tuple[tuple[int, int], str] | None = None
    for path in filter(None, candidates):
        version = _version(path)
        if version is not None and version >= (3, 12) and (best is None or version > best[0]):
            best = (version, path)
    return best[1] if best else None


def _works(python: Path) -> bool:
    if not python.exists():
        return False
    probe = [str(python), "-c", "import sys, pytest; assert sys.version_info >= (3, 12)"]
    return subprocess.run(probe, capture_output=True, timeout=120).returncode == 0


def build() -> str | None:
    """Build the venv unless it works already (under a lock: another process may be building it).
    None when it works, else why not (`NONE_FOUND` when there is no 3.12+ to build it from)."""
    python = venv_python()
    with open(REPO / ".venv-py312.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _works(python):
            return None
        base = find_base()
        if base is None:
            return NONE_FOUND
        steps = [
            [base, "-m", "venv", "--clear", str(VENV)],
            [str(python), "-m", "pip", "install", "--quiet", "--no-compile", *REQUIREMENTS],
        ]
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                return f"building the 3.12+ venv timed out after {BUILD_TIMEOUT_S} s: {' '.join(step)}"
            if done.returncode != 0:
                tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
                return f"cannot build the 3.12+ venv from {base} (is a package registry reachable?): {tail}"
        if not _works(python):
            return f"the 3.12+ venv was built from {base} but pytest does not import"
    return None


if __name__ == "__main__":
    reason = build()
    if reason:
        print(f"py312_venv: {reason}", file=sys.stderr)
    sys.exit(1 if reason and reason != NONE_FOUND else 0)
