"""The one path check: every path argument of every tool is resolved here, and only here; every file a
walk reaches passes `FileChecker` before anything reads it or hands it to a subprocess."""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from mcp_server.errors import ToolError


class PathRefused(ToolError):
    """A path argument that the policy refuses."""


@dataclass(frozen=True, slots=True)
class ResolvedPath:
    root: Path
    path: Path

    @property
    def rel(self) -> str:
        """The path relative to its root, `/`-separated; `.` for the root itself."""
        rel = self.path.relative_to(self.root).as_posix()
        return rel or "."


def _check_text(raw: str, what: str) -> None:
    if not isinstance(raw, str) or raw == "":
        raise PathRefused(f"{what} must be a non-empty string")
    if "\x00" in raw:
        raise PathRefused(f"{what} {raw!r} contains a NUL byte")


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def resolve_root(roots: Sequence[Path], root: str | None) -> Path:
    """The workspace root a call works in: the first allowed root, or the given one if it lies inside one."""
    if root is None:
        return roots[0]
    _check_text(root, "root")
    candidate = Path(root).expanduser()
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    resolved = candidate.resolve()
    if not any(_inside(resolved, allowed) for allowed in roots):
        raise PathRefused(f"root {root!r} is outside every allowed root (setting roots / --root)")
    if not resolved.is_dir():
        raise PathRefused(f"root {root!r} is not a directory")
    return resolved


def resolve_path(
    roots: Sequence[Path],
    raw: str,
    *,
    root: Path | None = None,
    must_exist: bool = True,
    kind: str = "any",
) -> ResolvedPath:
    """Resolve a user-supplied path against the allowed roots.

    Relative paths are taken from `root` (default: the first allowed root). Symlinks are resolved
    *before* the containment check, so a link inside a root that points outside is refused, as is
    any `..` that climbs out. Device files, FIFOs and sockets are refused. `kind` is `any`,
    `file` or `dir`.
    """
    _check_text(raw, "path")
    base = root or roots[0]
    candidate = Path(raw).expanduser()
    if not candidate.is_absolute():
        candidate = base / candidate
    try:
        resolved = candidate.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # symlink loops
        raise PathRefused(f"path {raw!r} cannot be resolved: {exc}") from None
    owner = next((r for r in roots if _inside(resolved, r)), None)
    if owner is None:
        raise PathRefused(f"path {raw!r} is outside every allowed root (setting roots / --root)")
    # Report paths relative to the call's root when they lie inside it, else to the allowed root.
    owner = base if _inside(resolved, base) else owner
    try:
        st = os.stat(resolved)
    except FileNotFoundError:
        if must_exist:
            raise PathRefused(f"path {raw!r} does not exist") from None
        return ResolvedPath(owner, resolved)
    except OSError as exc:
        raise PathRefused(f"path {raw!r} cannot be read: {exc.strerror}") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise PathRefused(f"path {raw!r} is not a regular file or directory")
    if kind == "file" and not stat.S_ISREG(st.st_mode):
        raise PathRefused(f"path {raw!r} is a directory, not a file")
    if kind == "dir" and not stat.S_ISDIR(st.st_mode):
        raise PathRefused(f"path {raw!r} is not a directory")
    return ResolvedPath(owner, resolved)


# --- files reached by a walk ------------------------------------------------------------------------
#
# A folder walk (ours, or ruff's discovery) reaches names nobody checked: a link to a secret outside
# the root, a FIFO that blocks whoever opens it, a link to /dev/zero, a 50 MB file. Every such
# file passes `FileChecker` before it is read or handed to a subprocess.

OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
READ_CHUNK = 1024 * 1024


class FileSkipped(Exception):
    """A file a walk reached that is not read: `reason` says why (shown to the client)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CheckedFile(NamedTuple):
    """A file that passed the check (a named tuple: made for every file of every tree call)."""

    path: str
    """As reached (the walk's or discovery's name for it; may be a link inside a root)."""
    real: str
    """What it resolves to: the file that is opened."""
    st: os.stat_result


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _normal_absolute(path: str) -> bool:
    """Whether `os.path.abspath(path)` is `path` itself (no `.`/`..` part, no doubled or trailing
    slash); conservative: a name starting with a dot says False and takes the slow way."""
    return path[:1] == "/" and "/." not in path and "//" not in path and path[-1:] != "/"


class FileChecker:
    """The path check for files a walk reached: inside an allowed root once resolved, a regular
    file, at most `max_bytes` on disk. Blocking (stat, open); one per call, in a worker thread.

    `check()` only stats (it never opens, so it cannot block on a FIFO). `read()` opens the resolved
    path with `O_NOFOLLOW | O_NONBLOCK`, `fstat`s the descriptor (the file it has, not the name) and
    reads at most `max_bytes`.
    """

    def __init__(self, roots: Sequence[Path], max_bytes: int) -> None:
        self.roots = [str(r) for r in roots]
        self._prefixes = [r.rstrip("/") + "/" for r in self.roots]
        self.max_bytes = max_bytes
        self._dirs: dict[str, str | None] = {}
        self._resolved: dict[str, str] = {}

    def _inside(self, real: str) -> bool:
        return real in self.roots or any(real.startswith(p) for p in self._prefixes)

    def _real_dir(self, directory: str) -> str | None:
        """The resolved directory, or None if it lies outside every root (memoized per call)."""
        if directory in self._dirs:
            return self._dirs[directory]
        real = self._realpath(directory)
        found = real if self._inside(real) else None
        self._dirs[directory] = found
        return found

    def _realpath(self, directory: str) -> str:
        """`os.path.realpath(directory)`, memoized per call: below a folder already resolved, each
        further part costs one `lstat` (realpath would look at every part from `/` again)."""
        if not _normal_absolute(directory):
            return os.path.realpath(directory)
        known = self._resolved
        parts: list[tuple[str, str]] = []  # (the name up to a part, the part), deepest first
        top = directory
        while top not in known and top != "/":
            parent, _, name = top.rpartition("/")
            parts.append((top, name))
            top = parent or "/"
        real = known.get(top, "/")
        for name_so_far, part in reversed(parts):
            candidate = f"{real}/{part}" if real != "/" else f"/{part}"
            try:
                link = stat.S_ISLNK(os.lstat(candidate).st_mode)
            except OSError:  # as realpath: a missing part is kept as it is
                link = False
            real = os.path.realpath(candidate) if link else candidate
            known[name_so_far] = real
        return real

    def _size_ok(self, st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise FileSkipped(f"{_kind(st.st_mode)}, not a regular file")
        if st.st_size > self.max_bytes:
            raise FileSkipped(f"{st.st_size} bytes, over the limit of {self.max_bytes} (setting max_source_bytes)")

    def check(self, path: str) -> CheckedFile:
        """Stat `path` (never open it); raise `FileSkipped` unless it may be read.

        One `lstat` for a plain file whose folder was seen before in this call (a hot loop: every
        file of a tree, on every tree call); links are resolved and checked again."""
        if "\x00" in path:
            raise FileSkipped("the name contains a NUL byte")
        if not _normal_absolute(path):
            path = os.path.abspath(path)
        directory, _, name = path.rpartition("/")
        directory = directory or "/"
        try:
            real_dir = self._dirs[directory]
        except KeyError:
            real_dir = self._real_dir(directory)
        if real_dir is None:
            raise FileSkipped("outside every allowed root")
        real = f"{real_dir}/{name}" if real_dir != "/" else f"/{name}"
        try:
            st = os.lstat(real)
            if stat.S_ISLNK(st.st_mode):
                try:
                    real = str(Path(real).resolve(strict=True))
                except RuntimeError:
                    raise FileSkipped("a symlink loop") from None
                except FileNotFoundError:
                    raise FileSkipped("a dangling symlink") from None
                if not self._inside(real):
                    raise FileSkipped("a link to outside every allowed root")
                st = os.stat(real)
        except OSError as exc:
            raise FileSkipped(f"cannot be read: {exc.strerror or exc}") from None
        self._size_ok(st)
        return CheckedFile(path, real, st)

    def read(self, path: str) -> tuple[CheckedFile, bytes]:
        """Check, then open the resolved file without following links or blocking; read it bounded."""
        checked = self.check(path)
        try:
            fd = os.open(checked.real, OPEN_FLAGS)
        except OSError as exc:
            raise FileSkipped(f"cannot be opened: {exc.strerror or exc}") from None
        try:
            st = os.fstat(fd)
            self._size_ok(st)  # what the descriptor is, not what the name was a moment ago
            parts: list[bytes] = []
            left = self.max_bytes + 1
            while left > 0:
                chunk = os.read(fd, min(READ_CHUNK, left))
                if not chunk:
                    break
                parts.append(chunk)
                left -= len(chunk)
        except BlockingIOError:
            raise FileSkipped("would block") from None
        except OSError as exc:
            raise FileSkipped(f"cannot be read: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        if left <= 0:
            raise FileSkipped(f"grew past the limit of {self.max_bytes} bytes while read (setting max_source_bytes)")
        return CheckedFile(checked.path, checked.real, st), b"".join(parts)


class WalkLimit(Exception):
    """A walk reached more entries than it may look at."""


def safe_walk(top: str, skip_dirs: frozenset[str], max_entries: int) -> Iterator[tuple[str, list[os.DirEntry[str]]]]:
    """Blocking: (directory, its entries) for `top` and the directories under it, breadth first.

    Never follows a link to a directory (as ruff's discovery does not: no loops, no way out of the
    root), skips directories named in `skip_dirs`, and raises `WalkLimit` after `max_entries`
    entries. Entries are only listed, never opened.
    """
    seen = 0
    queue = deque([top])
    while queue:
        directory = queue.popleft()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError:
            continue
        seen += len(entries)
        if seen > max_entries:
            raise WalkLimit(f"more than {max_entries} entries")
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False) and entry.name not in skip_dirs:
                    queue.append(entry.path)
            except OSError:
                continue
        yield directory, entries
