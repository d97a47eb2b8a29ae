"""What the recorder cannot see, as fingerprints: the files under a root that are not Python.

A test may read any file (data, templates, fixtures as JSON); reads are not recorded, so a change
to any non-Python file under the root selects every test ("run all"). Hidden files and folders,
caches, virtual environments and build output are left out (pytest's `norecursedirs` and
friends), as are compiled files. Python files are listed with their `stat` signature, so the
block parser only reads the ones that changed. The others count by their content (a digest of
each regular file up to `MAX_HASHED`, read again only when its `stat` signature moved): a test
that only touches a file (jinja2's suite sets a template's times with `os.utime`) changes nothing;
a larger file, or one that is not a regular file (a link, a FIFO: never opened), counts by its
signature. Blocking: call from a worker thread.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tools.test_runner.environment import SKIP_DIRS

MAX_DIRS = 5000
MAX_FILES = 100_000
SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".egg", ".so.tmp")
MAX_HASHED = 8 * 1024 * 1024
"""A non-Python file up to this size counts by its content; a larger one by its signature."""
MAX_READ = 256 * 1024 * 1024
"""What one snapshot reads at most (a root's first one reads every file; later ones only those
whose signature moved): past it, files count by their signature, as a larger one does."""
Known = Mapping[str, tuple[str, str]]
"""Relative path -> (stat signature, content key) of the others, from an earlier snapshot."""


def signature(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "-"
    return f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}"


def content_key(path: str, sig: str, budget: list[int] | None = None) -> str:
    """What a non-Python file counts by: a digest of its bytes when it is a regular file of at most
    `MAX_HASHED` bytes (opened without following a link, and non-blocking: a FIFO never blocks),
    and `budget` (bytes left to read, taken from) covers it; else its signature."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return "stat:" + sig
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_HASHED:
            return "stat:" + sig
        if budget is not None:
            if st.st_size > budget[0]:
                return "stat:" + sig
            budget[0] -= st.st_size
        h = hashlib.blake2b(digest_size=12)
        left = MAX_HASHED + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
        return "stat:" + sig if left <= 0 else h.hexdigest()
    except OSError:
        return "stat:" + sig
    finally:
        os.close(fd)


@dataclass
class Snapshot:
    """Relative path -> stat signature, for Python files and for the others; the others' content
    keys (`content_key`)."""

    python: dict[str, str] = field(default_factory=dict)
    others: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    complete: bool = True
    """False when the walk hit its bounds (then the others' digest also says so)."""

    def known(self) -> dict[str, tuple[str, str]]:
        """The others as (signature, content key): what the next snapshot need not read again."""
        return {rel: (sig, self.keys.get(rel, "stat:" + sig)) for rel, sig in self.others.items()}

    def others_digest(self) -> str:
        h = hashlib.blake2b(digest_size=12)
        for rel in sorted(self.others):
            key = self.keys.get(rel) or "stat:" + self.others[rel]
            h.update(f"{rel}\0{key}\n".encode("utf-8", "surrogateescape"))
        if not self.complete:
            h.update(b"incomplete")
        return h.hexdigest()


def take(root: Path, known: Known | None = None) -> Snapshot:
    """The tree now; the others' content keys are taken from `known` where a file's signature is
    the same, else read."""
    snap = Snapshot()
    budget = [MAX_READ]
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
            if name.endswith(".py"):
                snap.python[rel] = sig
                continue
            snap.others[rel] = sig
            before = known.get(rel) if known is not None else None
            if before is not None and before[0] == sig:
                snap.keys[rel] = before[1]
            else:  # only a regular file is opened (a device may do something when opened)
                regular = entry.is_file(follow_symlinks=False)
                snap.keys[rel] = content_key(entry.path, sig, budget) if regular else "stat:" + sig
    return snap
