"""`completion/complete`: run ids for the `run://` templates, paths and test node ids for prompts.

- `run://{run_id}` and `run://{run_id}/log`, argument `run_id`: the caller's own live runs
  (never another connection's: the same owner check as reading them);
- prompt arguments `path`/`paths` (the last comma-separated item): entries under the roots,
  through the one path check, listed in a worker thread, bounded;
- prompt argument `test`: node ids of the failures of the caller's last test run, then test files.
Anything else (an unknown prompt, template or argument) is -32602.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import anyio.to_thread
import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from mcp_server.paths import PathRefused, resolve_path, resolve_root
from mcp_server.prompts import PromptCatalog
from mcp_server.runs import RunContext, RunStore

MAX_VALUES: Final = 100
"""The spec's cap on values in one completion."""
MAX_SCANNED: Final = 2000
RUN_TEMPLATES: Final = ("run://{run_id}", "run://{run_id}/log")

LastRun = Callable[[str | None, str], RunContext | None]


def _completion(values: Sequence[str]) -> types.CompleteResult:
    shown = list(values[:MAX_VALUES])
    return types.CompleteResult(
        completion=types.Completion(values=shown, total=len(values), has_more=len(values) > len(shown))
    )


def _is_test_file(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


class Completer:
    def __init__(self, runs: RunStore, roots: Sequence[Path], prompts: PromptCatalog) -> None:
        self.runs = runs
        self.roots = list(roots)
        self.prompts = prompts

    async def complete(self, owner: str | None, params: types.CompleteRequestParams) -> types.CompleteResult:
        ref = params.ref
        arg = params.argument
        context = (params.context.arguments if params.context else None) or {}
        if isinstance(ref, types.ResourceTemplateReference):
            if ref.uri not in RUN_TEMPLATES:
                raise MCPError(INVALID_PARAMS, f"unknown resource template {ref.uri!r}")
            if arg.name != "run_id":
                raise MCPError(INVALID_PARAMS, f"template {ref.uri!r} has no argument {arg.name!r}")
            return _completion(self.run_ids(owner, arg.value))
        spec = self.prompts.get(ref.name)
        if spec is None:
            raise MCPError(INVALID_PARAMS, f"unknown prompt {ref.name!r}")
        if arg.name not in {a.name for a in spec.arguments}:
            raise MCPError(INVALID_PARAMS, f"prompt {ref.name!r} has no argument {arg.name!r}")
        if arg.name in ("path", "paths"):
            head, sep, last = arg.value.rpartition(",")
            prefix = head + sep + (" " if sep and last.startswith(" ") else "")
            found = await anyio.to_thread.run_sync(self._paths, context.get("root"), last.strip())
            return _completion([prefix + p for p in found])
        if arg.name == "root":
            return _completion([str(r) for r in self.roots if str(r).startswith(arg.value)])
        if arg.name == "test":
            return _completion(await self.node_ids(owner, context.get("root"), arg.value))
        return _completion([])

    def run_ids(self, owner: str | None, prefix: str) -> list[str]:
        if owner is None:  # sessionless and tokenless: runs are never listed, so never completed
            return []
        return [r.run_id for r in reversed(self.runs.list(owner)) if r.run_id.startswith(prefix)]

    async def node_ids(self, owner: str | None, root: str | None, prefix: str) -> list[str]:
        ids: list[str] = []
        if owner is not None:
            for run in reversed(self.runs.list(owner)):
                if run.tool == "run_tests" and run.result:
                    ids += [str(f.get("nodeid")) for f in run.result.get("failures", []) if isinstance(f, dict)]
                    break
        ids = [i for i in dict.fromkeys(ids) if i.startswith(prefix)]
        if "::" not in prefix:
            files = await anyio.to_thread.run_sync(self._paths, root, prefix)
            ids += [
                f for f in files if f.endswith("/") or (f.rsplit("/", 1)[-1].startswith("test") and f.endswith(".py"))
            ]
        return ids

    def _paths(self, root_arg: str | None, value: str) -> list[str]:
        """Blocking: entries under a root whose relative path starts with `value`."""
        try:
            root = resolve_root(self.roots, root_arg)
            folder, _, stem = value.rpartition("/")
            base = resolve_path(self.roots, folder or ".", root=root, must_exist=True, kind="dir")
        except (PathRefused, OSError, ValueError):
            return []
        found: list[str] = []
        try:
            with os.scandir(base.path) as entries:
                for n, entry in enumerate(entries):
                    if n >= MAX_SCANNED:
                        break
                    if entry.name.startswith(".") and not stem.startswith("."):
                        continue
                    if not entry.name.startswith(stem) or entry.name == "__pycache__":
                        continue
                    rel = f"{folder}/{entry.name}" if folder else entry.name
                    found.append(rel + "/" if entry.is_dir(follow_symlinks=False) else rel)
        except OSError:
            return []
        return sorted(found)
