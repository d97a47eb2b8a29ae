"""Which interpreter runs a project's tests, and the fingerprints that say when a zygote is stale.

`env_fingerprint` is a few `stat`s (`EnvFingerprints` caches it for a short TTL and takes it off
the event loop); `config_fingerprint` walks the project (bounded): call it through `anyio.to_thread`.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import anyio.to_thread

VENV_DIRS = (".venv", "venv")
CONFIG_FILES = ("pyproject.toml", "pytest.ini", ".pytest.ini", "setup.cfg", "tox.ini", "conftest.py")
# Directories pytest does not recurse into by default (`norecursedirs`), plus caches.
SKIP_DIRS = frozenset({"__pycache__", "node_modules", "build", "dist", "venv", "site-packages", "CVS", "_darcs"})
MAX_WALK_DIRS = 2000
ENV_TTL_S = 1.0
"""How long a fingerprint of the interpreter and its site directories is trusted: an install is
noticed by the runs that start at most this long after it."""
MAX_CACHED = 64


def find_interpreter(root: Path, configured: Path | None) -> Path:
    """The project's interpreter: `.venv/bin/python` or `venv/bin/python` under the root, else the
    configured one (setting `python`), else the server's own. Not resolved: a venv's `python` is
    a symlink whose location is what makes it that venv."""
    for name in VENV_DIRS:
        candidate = root / name / "bin" / "python"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    if configured is not None:
        return configured
    return Path(sys.executable)


def _signature(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "-"
    return f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}"


def _is_venv(path: str) -> bool:
    return os.path.exists(os.path.join(path, "pyvenv.cfg"))


def config_files(root: Path, max_dirs: int = MAX_WALK_DIRS) -> list[str]:
    """pytest's configuration files that apply to `root`: those in the root and its ancestors, and
    every `conftest.py` below it (skipping hidden, cache and virtual-environment directories, like
    pytest's `norecursedirs`; at most `max_dirs` directories are visited)."""
    found: list[str] = []
    for directory in [root, *root.parents]:
        found += [str(directory / name) for name in CONFIG_FILES]
    seen = 0
    stack = [str(root)]
    while stack and seen < max_dirs:
        current = stack.pop()
        seen += 1
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if entry.is_dir(follow_symlinks=False):
                if name.startswith(".") or name in SKIP_DIRS or name.endswith((".egg-info", ".egg")):
                    continue
                if not _is_venv(entry.path):
                    stack.append(entry.path)
            elif name == "conftest.py" and current != str(root):
                found.append(entry.path)
    return sorted(found)


def env_fingerprint(interpreter: Path, site_dirs: Sequence[str] = ()) -> str:
    """What the zygote's imports depend on: the interpreter, and the directories packages are
    installed in (their listing changes on install/uninstall/upgrade). A few `stat`s: cheap
    enough to check before every run."""
    return digest(
        [f"python {interpreter} {_signature(str(interpreter))}", *(f"site {d} {_signature(d)}" for d in site_dirs)]
    )


class EnvFingerprints:
    """`env_fingerprint` taken at most once per `ttl_s` for each (interpreter, site directories),
    in a worker thread: a burst of runs stats the site directories once, never on the event loop."""

    def __init__(self, ttl_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ENV_TTL_S if ttl_s is None else ttl_s
        self._clock = clock
        self._cache: dict[tuple[str, tuple[str, ...]], tuple[float, str]] = {}
        self.taken = 0

    async def get(self, interpreter: Path, site_dirs: Sequence[str] = ()) -> str:
        key = (str(interpreter), tuple(site_dirs))
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        value = await anyio.to_thread.run_sync(env_fingerprint, interpreter, site_dirs)
        self.taken += 1
        if len(self._cache) >= MAX_CACHED:  # bounded: expired entries go, then (rarely) all
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
        self._cache[key] = (now + self.ttl_s, value)
        return value


def config_fingerprint(root: Path) -> str:
    """pytest's configuration files for `root` (a bounded walk: run it in a thread)."""
    return digest(f"config {f} {_signature(f)}" for f in config_files(root))


def fingerprint(root: Path, interpreter: Path, site_dirs: Sequence[str] = ()) -> str:
    """Everything a zygote depends on."""
    return env_fingerprint(interpreter, site_dirs) + config_fingerprint(root)


def digest(lines: Iterable[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()
