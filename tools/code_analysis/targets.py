"""What a call is about: unsaved text, a few single files (the warm-server path), or a tree (the CLI path).

Every path goes through the one path check (`ctx.path`/`ctx.root`). Bad input becomes a
`ToolError` naming the problem: both `source` and `paths`, `filename` without `source`, a directory
as `filename`, a binary or non-UTF-8 file, `source` over `max_source_bytes`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from mcp_server.api import FileChecker, FileSkipped, PathRefused, ResolvedPath, ToolContext, ToolError
from tools.code_analysis.args import TargetArgs
from tools.code_analysis.workspace import (
    ConfigState,
    check_configs,
    config_key,
    digest,
    linked_configs_between,
    observe_chain,
)

SINGLE_FILE_MAX = 16
"""Up to this many explicit files go through the warm servers one by one; more are a tree."""
DEFAULT_SOURCE_NAME = "untitled.py"
DOCUMENT_SUFFIXES = frozenset({".py", ".pyi", ".pyw", ""})
BINARY_PROBE_BYTES = 8192
INLINE_RESOLVE_PATHS = 16
"""Up to this many path arguments are resolved on the event loop; more go to a worker thread."""
INLINE_READ_BYTES = 256 * 1024
"""A few files (or a source text) this small are read and hashed on the event loop: that costs less
than the hop to a worker thread would."""


@dataclass(frozen=True)
class Document:
    """One text checked as one file: `source`, or a single file read from disk."""

    root: Path
    path: Path
    rel: str
    text: str
    digest: str
    configs: ConfigState
    config_key: str

    @property
    def for_language_server(self) -> bool:
        """ruff's server takes Python text; a notebook or a pyproject.toml goes to the CLI."""
        return self.path.suffix.lower() in DOCUMENT_SUFFIXES


@dataclass(frozen=True)
class Tree:
    """Files and folders for ruff's own discovery (`ruff check`/`ruff format` over them)."""

    root: Path
    paths: tuple[Path, ...]
    rels: tuple[str, ...]


Target = list[Document] | Tree


def _binary_error(raw: str) -> ToolError:
    return ToolError(f"path {raw!r} is not a text file (it looks binary)")


def make_document(root: Path, path: Path, rel: str, text: str, checker: FileChecker | None = None) -> Document:
    """Blocking: hash the text and look at the configs that apply to it (those inside the root
    pass the path check when they are links: ruff reads them itself)."""
    linked = linked_configs_between(str(root), str(path.parent))
    if linked:
        check_configs(linked, checker or FileChecker([root], 1 << 30))
    configs = observe_chain(str(path.parent))
    key = config_key(str(path.parent), configs)
    return Document(root, path, rel, text, digest(text.encode("utf-8", "surrogatepass")), configs, key)


def read_document(root: Path, path: Path, rel: str, raw: str, checker: FileChecker) -> Document:
    """Blocking: read a file as UTF-8 text through the path check, refusing binary content."""
    try:
        _, data = checker.read(str(path))
    except FileSkipped as exc:
        raise ToolError(f"path {raw!r} is not read: {exc.reason}") from None
    if b"\x00" in data:
        raise _binary_error(raw)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"path {raw!r} is not UTF-8 text") from None
    return make_document(root, path, rel, text, checker)


def _probe_binary(path: Path, raw: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ToolError(f"path {raw!r} cannot be read: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ToolError(f"path {raw!r} is not a regular file")
        head = os.read(fd, BINARY_PROBE_BYTES)
    except OSError as exc:
        raise ToolError(f"path {raw!r} cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if b"\x00" in head:
        raise _binary_error(raw)


def _plan(root: Path, files: list[tuple[ResolvedPath, str]], checker: FileChecker) -> list[Document] | None:
    """Blocking: read the files as documents, or None when they belong on the CLI path."""
    docs_ok = len(files) <= SINGLE_FILE_MAX
    for resolved, raw in files:
        if resolved.path.is_dir():
            docs_ok = False
            continue
        _probe_binary(resolved.path, raw)
        suffix = resolved.path.suffix.lower()
        if suffix not in DOCUMENT_SUFFIXES or os.path.getsize(resolved.path) > checker.max_bytes:
            docs_ok = False  # the tree path skips (and says so) what is too big
    if not docs_ok:
        return None
    return [read_document(root, r.path, r.rel, raw, checker) for r, raw in files]


def _resolve_all(ctx: ToolContext, root: Path, raws: list[str]) -> list[tuple[ResolvedPath, str]]:
    """Blocking: the one path check for each argument."""
    return [(ctx.path(raw, root=root), raw) for raw in raws]


def _total_size(files: list[tuple[ResolvedPath, str]]) -> int:
    total = 0
    for resolved, _ in files:
        try:
            total += os.stat(resolved.path).st_size
        except OSError:
            return INLINE_READ_BYTES + 1  # let the thread report it
    return total


async def resolve_target(ctx: ToolContext, args: TargetArgs) -> Target:
    max_bytes = ctx.settings.max_source_bytes
    if args.source is not None:
        if args.paths:
            raise ToolError("give either `source` (with `filename`) or `paths`, not both")
        size = len(args.source.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise ToolError(f"source is {size} bytes, over the limit of {max_bytes} (setting max_source_bytes)")
        if "\x00" in args.source:
            raise ToolError("source contains a NUL byte; it is not text")
        root = ctx.root(args.root)
        name = args.filename or DEFAULT_SOURCE_NAME
        resolved = ctx.path(name, root=root, must_exist=False, kind="file")
        if resolved.root != root:
            raise PathRefused(f"filename {name!r} is outside the root {str(root)!r}")
        checker = ctx.file_checker()
        if size <= INLINE_READ_BYTES:
            return [make_document(root, resolved.path, resolved.rel, args.source, checker)]
        return [await anyio.to_thread.run_sync(make_document, root, resolved.path, resolved.rel, args.source, checker)]
    if args.filename is not None:
        raise ToolError("`filename` names unsaved `source` text; to check a file on disk, pass it in `paths`")
    root = ctx.root(args.root)
    if not args.paths:
        return Tree(root, (root,), (".",))
    if len(args.paths) <= INLINE_RESOLVE_PATHS:
        resolved_paths = [(ctx.path(raw, root=root), raw) for raw in args.paths]
    else:  # resolving (and stat-ing) many paths is file system work: not on the event loop
        resolved_paths = await anyio.to_thread.run_sync(_resolve_all, ctx, root, args.paths)
    owners = {r.root for r, _ in resolved_paths}
    if owners != {root}:
        if args.root is not None or len(owners) > 1:
            raise PathRefused(f"paths must all lie inside one root ({str(root)!r}); call once per root, or pass `root`")
        root = owners.pop()  # every path lies in another allowed root: work there
    checker = ctx.file_checker()
    if len(resolved_paths) <= 4 and _total_size(resolved_paths) <= INLINE_READ_BYTES:
        plan = _plan(root, resolved_paths, checker)
    else:
        plan = await anyio.to_thread.run_sync(_plan, root, resolved_paths, checker)
    if plan is not None:
        return plan
    unique = list(dict.fromkeys(r.path for r, _ in resolved_paths))
    return Tree(root, tuple(unique), tuple(ResolvedPath(root, p).rel for p in unique))
