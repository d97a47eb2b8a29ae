"""What the recorder cannot see, as fingerprints: the files under a root that are not Python.

A test may read any file (data, templates, fixtures as JSON); reads are not recorded, so a change
to any non-Python file under the root selects every test ("run all"). Hidden files and folders,
caches, virtual environments and build output are left out (pytest's `norecursedirs` and
friends), as are compiled files. Python files are listed with their `stat` signature, so the
block parser only reads the ones that changed. Blocking: call from a worker thread.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from tools.test_runner.environment import SKIP_DIRS

MAX_DIRS = 5000
MAX_FILES = 100_000
SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".egg", ".so.tmp")


def signature(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "-"
    return f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}"


@dataclass
class Snapshot:
    """Relative path -> stat signature, for Python files and for the others."""

    python: dict[str, str] = field(default_factory=dict)
    others: dict[str, str] = field(default_factory=dict)
    complete: bool = True
    """False when the walk hit its bounds (then the others' digest also says so)."""

    def others_digest(self) -> str:
        h = hashlib.blake2b(digest_size=12)
        for rel in sorted(self.others):
            h.update(f"{rel}\0{self.others[rel]}\n".encode("utf-8", "surrogateescape"))
        if not self.complete:
            h.update(b"incomplete")
        return h.hexdigest()


def take(root: Path) -> Snapshot:
    snap = Snapshot()
    stack = [str(root)]
    dirs = files = 0
    prefix = len(str(root)) + 1
    while stack:
        if dirs >= MAX_DIRS or files >= MAX_FILES:
            snap.complete = False
            break
        current = stack.pop()
        dirs += 1
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                if is_dir:
                    if name in SKIP_DIRS or name.endswith((".egg-info", ".egg")):
                        continue
                    if not os.path.exists(os.path.join(entry.path, "pyvenv.cfg")):
                        stack.append(entry.path)
                    continue
                if name.endswith(SKIP_SUFFIXES):
                    continue
                st = entry.stat()
            except OSError:
                continue
            files += 1
            rel = entry.path[prefix:]
            sig = f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}"
            (snap.python if name.endswith(".py") else snap.others)[rel] = sig
    return snap
