"""What the file system says about a workspace: its files, ruff config files, content hashes.

Blocking functions, meant to run in a worker thread (`anyio.to_thread`). A `ConfigState` maps each
directory we looked at to the ruff config files in it and their stat signatures; comparing two of
them tells whether ruff's resolved settings for a file may have changed (ruff takes the closest
config going up from the file, then the user config). `config_key()` of a file's directory chain
is the "resolved config" part of every cache key.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from mcp_server.api import FileChecker, FileSkipped, ToolError, WalkLimit, safe_walk

CONFIG_NAMES = ("pyproject.toml", "ruff.toml", ".ruff.toml")
IGNORE_NAMES = (".gitignore", ".ignore")
SOURCE_SUFFIXES = frozenset({".py", ".pyi", ".pyw"})
# ruff's default `exclude`: never walked looking for changes (ruff's discovery still decides).
SKIP_DIRS = frozenset(
    {
        ".bzr",
        ".direnv",
        ".eggs",
        ".git",
        ".git-rewrite",
        ".hg",
        ".ipynb_checkpoints",
        ".mypy_cache",
        ".nox",
        ".pants.d",
        ".pyenv",
        ".pytest_cache",
        ".pytype",
        ".ruff_cache",
        ".svn",
        ".tox",
        ".venv",
        ".vscode",
        "__pypackages__",
        "__pycache__",
        "_build",
        "buck-out",
        "dist",
        "node_modules",
        "site-packages",
        "venv",
    }
)
MAX_SCAN_ENTRIES = 200_000
"""Names one walk looks at (for the change fingerprint); past it, ruff's discovery is redone each call."""
RACY_WINDOW_NS = 1_000_000_000
"""A file modified this close to when we hashed it may change again within one mtime tick: re-hash."""

Sig = tuple[int, int, int, int]
DirConfigs = tuple[tuple[str, Sig], ...]
ConfigState = dict[str, DirConfigs]
"""Directory (absolute, as str) -> the config files in it with their signatures (empty if none)."""


@functools.cache
def user_config_dir() -> str:
    """Where ruff looks for the user's own config when a project has none (XDG, as ruff does)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return os.path.join(base, "ruff")


def sig_of(st: os.stat_result) -> Sig:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _dir_configs(directory: str, names: Iterable[str] = CONFIG_NAMES) -> DirConfigs:
    found: list[tuple[str, Sig]] = []
    for name in names:
        try:
            st = os.stat(os.path.join(directory, name))
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            found.append((name, sig_of(st)))
    return tuple(found)


def chain_dirs(directory: str) -> list[str]:
    """`directory` and every ancestor up to the file system root, closest first."""
    chain = [directory]
    while True:
        parent = os.path.dirname(chain[-1])
        if parent == chain[-1]:
            return chain
        chain.append(parent)


def observe_chain(directory: str, into: ConfigState | None = None) -> ConfigState:
    """The config state of `directory`, its ancestors and the user config dir (what ruff can use)."""
    state: ConfigState = into if into is not None else {}
    for d in [*chain_dirs(directory), user_config_dir()]:
        if d not in state:
            state[d] = _dir_configs(d)
    return state


def config_key(directory: str, state: ConfigState, memo: dict[str, str] | None = None) -> str:
    """A short key for the configs that can apply to files in `directory` (fills `state` as needed)."""
    if memo is not None and directory in memo:
        return memo[directory]
    parent = os.path.dirname(directory)
    if directory not in state:
        state[directory] = _dir_configs(directory)
    if parent == directory:
        user = user_config_dir()
        if user not in state:
            state[user] = _dir_configs(user)
        above = repr(state[user])
    else:
        above = config_key(parent, state, memo)
    key = digest(f"{directory}\0{state[directory]!r}\0{above}".encode())
    if memo is not None:
        memo[directory] = key
    return key


def config_changed(before: Mapping[str, DirConfigs], now: Mapping[str, DirConfigs], since_ns: int) -> bool:
    """Whether `now` shows a config change against `before` (taken at wall time `since_ns`).

    Directories `before` never looked at count as changed only if a config in them is newer
    than `since_ns` (ruff, started after it was written, has seen it).
    """
    for directory, configs in now.items():
        seen = before.get(directory)
        if seen is None:
            if any(sig[0] >= since_ns for _, sig in configs):
                return True
        elif seen != configs:
            return True
    return False


@dataclass
class TreeScan:
    """One walk of the targets: every file name (for discovery) and every config state seen."""

    configs: ConfigState = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    ignore_files: list[tuple[str, Sig]] = field(default_factory=list)
    complete: bool = True
    linked_configs: list[str] = field(default_factory=list)
    """Config files that are links or special files (ruff reads configs itself: they need the path check)."""

    def fingerprint(self, targets: Sequence[str]) -> str:
        """Changes whenever ruff's discovery could: a file added or removed, a config or ignore file."""
        h = hashlib.blake2b(digest_size=16)
        for part in (targets, sorted(self.files), sorted(self.configs.items()), sorted(self.ignore_files)):
            h.update(repr(part).encode())
        return h.hexdigest()


def scan_tree(root: Path, targets: Sequence[Path], max_entries: int = MAX_SCAN_ENTRIES) -> TreeScan:
    """Walk `targets` (files or directories under `root`) skipping ruff's default excludes.

    Only names and stat signatures: no file is opened, no directory link followed (`safe_walk`).
    Past `max_entries` the walk stops and `scan.complete` is False (discovery is then redone each call).
    """
    scan = TreeScan()
    for directory in chain_dirs(str(root)):
        _note_ignores(scan, directory)
    git = _find_git_dir(str(root))
    if git is not None:
        _note_ignores(scan, os.path.join(git, "info"), ("exclude",))
    for target in targets:
        top = str(target)
        scan.linked_configs += linked_configs_between(str(root), top if os.path.isdir(top) else os.path.dirname(top))
        if os.path.isdir(top):
            _walk(scan, top, max_entries)
            observe_chain(top, scan.configs)
        else:
            scan.files.append(top)
            observe_chain(os.path.dirname(top), scan.configs)
    observe_chain(str(root), scan.configs)
    return scan


def _walk(scan: TreeScan, top: str, max_entries: int) -> None:
    try:
        for directory, entries in safe_walk(top, SKIP_DIRS, max_entries):
            configs: list[tuple[str, Sig]] = []
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        continue
                    regular = entry.is_file(follow_symlinks=False)  # the directory entry's type: no syscall
                    scan.files.append(entry.path)
                    if entry.name in CONFIG_NAMES:
                        if regular:
                            configs.append((entry.name, sig_of(entry.stat(follow_symlinks=False))))
                        else:  # a link or a special file: ruff would read it, so it is checked first
                            scan.linked_configs.append(entry.path)
                            target = entry.stat()  # a stat never blocks, even on a FIFO
                            if stat.S_ISREG(target.st_mode):
                                configs.append((entry.name, sig_of(target)))
                    elif entry.name in IGNORE_NAMES:
                        scan.ignore_files.append((entry.path, sig_of(entry.stat())))
                except OSError:
                    continue
            scan.configs[directory] = tuple(sorted(configs, key=lambda c: CONFIG_NAMES.index(c[0])))
    except WalkLimit:
        scan.complete = False


def linked_configs_between(root: str, directory: str) -> list[str]:
    """Config files in `directory` and its parents up to `root` that are links or not regular files."""
    found: list[str] = []
    prefix = root.rstrip("/") + "/"
    while directory == root or directory.startswith(prefix):
        for name in CONFIG_NAMES:
            path = os.path.join(directory, name)
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    found.append(path)
            except OSError:
                continue
        if directory == root:
            break
        directory = os.path.dirname(directory)
    return found


def check_configs(paths: Iterable[str], checker: FileChecker) -> None:
    """Refuse to run ruff where it would read a config file that fails the path check (a link to a
    file outside the roots, a FIFO...): ruff reads configs itself, and its errors quote them."""
    for path in paths:
        try:
            checker.check(path)
        except FileSkipped as exc:
            raise ToolError(
                f"ruff would read the config file {path!r}, which is not read: {exc.reason}; remove or fix it"
            ) from None


def _note_ignores(scan: TreeScan, directory: str, names: Sequence[str] = IGNORE_NAMES) -> None:
    for name, sig in _dir_configs(directory, names):
        scan.ignore_files.append((os.path.join(directory, name), sig))


def _find_git_dir(start: str) -> str | None:
    for directory in chain_dirs(start):
        candidate = os.path.join(directory, ".git")
        if os.path.isdir(candidate):
            return candidate
    return None


class FileState(NamedTuple):
    sig: Sig
    digest: str
    recorded_ns: int


class StatCache:
    """Path -> (stat signature, content hash): an unchanged file is not read again.

    A file whose mtime is within `RACY_WINDOW_NS` of when it was hashed is re-read next time
    (the "racy clean" case: two writes within one mtime tick look alike).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._states: dict[str, FileState] = {}
        self._lock = threading.Lock()  # worker threads of concurrent calls record into it

    def __len__(self) -> int:
        return len(self._states)

    def hash_file(self, path: str, checker: FileChecker) -> FileState:
        """The file's current state, reading it only when its signature says it may have changed.

        Every file passes `checker` (inside a root, regular, not too big) first; `FileSkipped` says why not.
        """
        try:
            known = self._states.get(path)
            if known is not None:  # stat first: an unchanged file is not read (a new one is read at once)
                sig = sig_of(checker.check(path).st)
                if known[0] == sig and sig[0] < known[2] - RACY_WINDOW_NS:
                    return known
            checked, data = checker.read(path)  # checks the path itself
        except FileSkipped:
            with self._lock:
                self._states.pop(path, None)
            raise
        return self.record(path, sig_of(checked.st), digest(data))

    def record(self, path: str, sig: Sig, content_digest: str) -> FileState:
        state = FileState(sig, content_digest, time.time_ns())
        with self._lock:
            if len(self._states) >= self.max_entries and path not in self._states:
                self._states.pop(next(iter(self._states)))
            self._states[path] = state
        return state

    def still(self, path: str, state: FileState) -> bool:
        """Whether the file still has the signature it had when `state` was taken."""
        try:
            return sig_of(os.stat(path)) == state.sig
        except OSError:
            return False
