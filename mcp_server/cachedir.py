"""The server's own per-root storage: `<cache_dir>/<hash of the root's resolved path>/`.

Everything the server keeps on disk about a root (ruff's cache, affected-test data, test history)
lives here, never inside the repository: a repository is attacker-controlled, and a database or
cache shipped inside it could hide failures or point ruff at files outside the root.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


class CacheDirUnavailable(OSError):
    """The cache folder cannot be created or written; callers degrade (no cache, a note in the result)."""


def root_key(root: Path) -> str:
    """A stable, filesystem-safe name for a root: its resolved path's hash plus its base name."""
    resolved = str(Path(root).resolve())
    digest = hashlib.sha256(resolved.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(resolved).name)[:40] or "root"
    return f"{name}-{digest}"


def root_cache_dir(cache_dir: Path, root: Path, *parts: str) -> Path:
    """Blocking: `<cache_dir>/<root key>/<parts...>`, created (mode 0700) if missing.

    Raises `CacheDirUnavailable` when it cannot be created or is not a writable directory.
    """
    path = Path(cache_dir).expanduser() / root_key(root)
    for part in parts:
        path = path / part
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheDirUnavailable(f"cache folder {str(path)!r} cannot be created: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise CacheDirUnavailable(f"cache folder {str(path)!r} is not writable")
    return path
