"""Has pytest's configuration of a root changed? A walk once, then a few `stat`s per check.

`ConfigSnapshot.take(root)` walks the root like `environment.config_files` (the configuration
files of the root and its ancestors, every `conftest.py` below it) and keeps, besides the
fingerprint of those files, the signature (mtime, ctime, size, inode) of every file it names (the
fingerprint holds them too: a file rewritten with its size and mtime kept still counts as
changed) and of every folder it visited. `refresh()` stats only those: a configuration file edited, created
or deleted in an ancestor shows in its own signature (the candidates are stat'ed whether they
exist or not), and a `conftest.py` (or a folder, or a venv's `pyvenv.cfg`) created, deleted or
renamed below the root changes its folder's mtime. Anything different, and the root is walked
again. A snapshot is trusted only when every signature it holds is older than the walk by
`SETTLE_NS` (a change in the same clock tick as the walk could leave a folder's mtime as it was)
and the walk was not cut short at `MAX_WALK_DIRS`; an untrusted one is never used to skip a walk.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from tools.test_runner.environment import CONFIG_FILES, MAX_WALK_DIRS, SKIP_DIRS, digest

SETTLE_NS = 2_000_000_000
"""How much older than the walk every signature must be for the snapshot to be trusted."""

Signature = tuple[int, int, int, int] | None
"""(mtime_ns, ctime_ns, size, inode); None: missing."""


def _stat(path: str) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def _line(path: str, sig: Signature) -> str:
    return f"config {path} " + (":".join(map(str, sig)) if sig is not None else "-")


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    fingerprint: str
    files: tuple[tuple[str, Signature], ...]
    """Every configuration file candidate (existing or not), with its signature."""
    folders: tuple[tuple[str, Signature], ...]
    """Every folder the walk listed (the root and those below it), as it was before the listing."""
    trusted: bool

    @classmethod
    def take(cls, root: Path, max_dirs: int = MAX_WALK_DIRS) -> ConfigSnapshot:
        """Walk `root` (bounded: run it in a thread)."""
        started = time.time_ns()
        found = [str(directory / name) for directory in [root, *root.parents] for name in CONFIG_FILES]
        folders: list[tuple[str, Signature]] = []
        stack = [str(root)]
        while stack and len(folders) < max_dirs:
            current = stack.pop()
            folders.append((current, _stat(current)))  # before the listing: a later change shows
            try:
                entries = list(os.scandir(current))
            except OSError:
                continue
            for entry in entries:
                name = entry.name
                if entry.is_dir(follow_symlinks=False):
                    if name.startswith(".") or name in SKIP_DIRS or name.endswith((".egg-info", ".egg")):
                        continue
                    if not os.path.exists(os.path.join(entry.path, "pyvenv.cfg")):
                        stack.append(entry.path)
                elif name == "conftest.py" and current != str(root):
                    found.append(entry.path)
        files = tuple((path, _stat(path)) for path in sorted(found))
        settled = started - SETTLE_NS
        signatures = [sig for _, sig in (*files, *folders) if sig is not None]
        trusted = not stack and all(sig[0] < settled and sig[1] < settled for sig in signatures)
        return cls(digest(_line(path, sig) for path, sig in files), files, tuple(folders), trusted)

    def unchanged(self) -> bool:
        """Trusted, and every file and folder it holds has the same signature now."""
        return self.trusted and all(_stat(path) == sig for path, sig in (*self.files, *self.folders))

    def refresh(self, root: Path) -> ConfigSnapshot:
        """This snapshot if nothing it holds changed, else a new walk (run it in a thread)."""
        return self if self.unchanged() else ConfigSnapshot.take(root)
