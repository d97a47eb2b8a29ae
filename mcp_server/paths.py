"""The one path check: every path argument of every tool is resolved here, and only here."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
