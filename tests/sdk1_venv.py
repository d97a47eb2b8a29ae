"""The 1.x SDK's virtual environment for tests/mcp_server/transports/test_sdk1_interop.py.

The 1.x SDK cannot live beside the 2.x one, so it gets its own virtual environment, built once (under a
lock) and cached in `.venv-sdk1` at the top of the checkout (git-ignored). Standard library only, so
that scripts/setup can build it with any Python 3.11+ beside the main install (mostly downloads):

    python3 tests/sdk1_venv.py      # exit 0 when it works, else 1 and the reason on stderr
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SDK1_VENV = REPO / ".venv-sdk1"
SDK1_REQUIREMENTS = ["mcp<2", "websockets>=14"]
BUILD_TIMEOUT_S = 600


def sdk1_python() -> Path:
    return SDK1_VENV / "bin" / "python"


def _works(python: Path) -> bool:
    if not python.exists():
        return False
    probe = [str(python), "-c", "import mcp.client.websocket, importlib.metadata as m; assert m.version('mcp') < '2'"]
    return subprocess.run(probe, capture_output=True, timeout=120).returncode == 0


def build(base_python: str = sys.executable) -> str | None:
    """Build the venv unless it works already (another process may be building it: the lock waits for
    it). None when it works, else why not."""
    python = sdk1_python()
    with open(REPO / ".venv-sdk1.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _works(python):
            return None
        steps = [
            [base_python, "-m", "venv", "--clear", str(SDK1_VENV)],
            [str(python), "-m", "pip", "install", "--quiet", "--no-compile", *SDK1_REQUIREMENTS],
        ]
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                return f"building the 1.x SDK venv timed out after {BUILD_TIMEOUT_S} s: {' '.join(step)}"
            if done.returncode != 0:
                tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
                return f"cannot build the 1.x SDK venv (is a package registry reachable?): {tail}"
        if not _works(python):
            return "the 1.x SDK venv was built but `mcp.client.websocket` does not import"
    return None


if __name__ == "__main__":
    reason = build()
    if reason:
        print(f"sdk1_venv: {reason}", file=sys.stderr)
    sys.exit(1 if reason else 0)
