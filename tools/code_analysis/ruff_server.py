"""One warm `ruff server` (ruff's language server) for one root and one rule selection.

`serve()` is the host task: it starts the process through the executor, speaks LSP to it, and
keeps it until `stop()` or its death; it never raises (but for cancellation). Calls send the
document's current text (`didOpen`, then full-text `didChange`) and pull diagnostics, fixes or
formatting. A dead or broken server raises `LinterGone`, which callers answer with the CLI path;
so does one that could not read the project's config (the CLI then reports why, as for trees).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from mcp_server.api import Executor
from tools.code_analysis.lsp import LinterGone, LspConnection, LspError
from tools.code_analysis.selection import Selection
from tools.code_analysis.text_edits import PositionEncoding
from tools.code_analysis.workspace import ConfigState, config_changed

logger = logging.getLogger("mcp_server.ruff_server")

START_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 1.0
MAX_OPEN_DOCUMENTS = 128
MAX_ANSWER_BYTES = 16 * 1024 * 1024
"""A bigger answer is skipped unread and the call falls back to the CLI (which streams, capped)."""
CLIENT_CAPABILITIES: dict[str, Any] = {
    "general": {"positionEncodings": ["utf-32", "utf-16"]},
    # Advertising pull diagnostics makes ruff lint on request only (no push after every change).
    "textDocument": {
        "diagnostic": {"dynamicRegistration": False},
        "codeAction": {"codeActionLiteralSupport": {"codeActionKind": {"valueSet": ["source.fixAll.ruff"]}}},
        "formatting": {"dynamicRegistration": False},
    },
}


def file_uri(path: Path) -> str:
    return path.as_uri()


class RuffServer:
    def __init__(
        self,
        *,
        root: Path,
        selection: Selection,
        executor: Executor,
        ruff_bin: str,
        configs: ConfigState,
        configs_taken_ns: int,
    ) -> None:
        self.root = root
        self.selection = selection
        self._executor = executor
        self._ruff_bin = ruff_bin
        self.configs = configs
        self.configs_taken_ns = configs_taken_ns
        self.ready = anyio.Event()
        self.stopped = anyio.Event()
        self._stop = anyio.Event()
        self._lock = anyio.Lock()
        self._conn: LspConnection | None = None
        self._docs: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self.encoding: PositionEncoding = "utf-16"
        self.error: str | None = None
        self.settings_error: str | None = None
        self.pid: int | None = None
        self.requests = 0
        self.in_use = 0
        self.last_used = time.monotonic()

    @property
    def alive(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.closed.is_set() and not self._stop.is_set()

    def stale(self, observed: ConfigState) -> bool:
        """Whether a config file it resolved settings from has changed since it started."""
        return config_changed(self.configs, observed, self.configs_taken_ns)

    def stop(self) -> None:
        """Ask the host task to shut the server down (gracefully, bounded). Idempotent."""
        self._stop.set()

    async def serve(self) -> None:
        """Run the server until `stop()` or its death. Sets `ready` once it answers (or failed)."""
        try:
            async with self._executor.open(
                [self._ruff_bin, "server"], cwd=self.root, tool="ruff server", connection="ruff-pool"
            ) as proc:
                self.pid = proc.pid
                assert proc.stdin is not None and proc.stdout is not None
                conn = LspConnection(proc.stdin, proc.stdout, self._notified, max_bytes=MAX_ANSWER_BYTES)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._read, conn)
                    tg.start_soon(_drain_stderr, proc.stderr, proc.pid)
                    if await self._initialize(conn):
                        self._conn = conn
                        self.ready.set()
                        await self._stop.wait()
                        await self._shutdown(conn)
                    tg.cancel_scope.cancel()
        except Exception as exc:  # a host task must not take the server down with it
            self.error = self.error or f"ruff server failed: {exc}"
            logger.warning("ruff server for %s: %s", self.root, self.error)
        finally:
            self._stop.set()
            self.ready.set()
            self.stopped.set()

    def _notified(self, method: str, params: Any) -> None:
        # ruff says "Error while resolving settings" here when the project's config is broken, and
        # then lints with defaults. Notifications are handled in order, so the flag is set before
        # the answer to any later request is.
        if method == "window/showMessage" and isinstance(params, dict) and params.get("type") == 1:
            self.settings_error = str(params.get("message") or "ruff server error")

    async def _read(self, conn: LspConnection) -> None:
        await conn.run()
        if not self._stop.is_set():
            self.error = conn.close_reason
            logger.warning("ruff server for %s (pid %s) went away: %s", self.root, self.pid, conn.close_reason)
        self._stop.set()

    async def _initialize(self, conn: LspConnection) -> bool:
        params = {
            "processId": os.getpid(),
            "clientInfo": {"name": "mcp-code-tools"},
            "rootUri": file_uri(self.root),
            "workspaceFolders": [{"uri": file_uri(self.root), "name": self.root.name or "root"}],
            "capabilities": CLIENT_CAPABILITIES,
            "initializationOptions": {"settings": self.selection.lsp_settings()},
        }
        try:
            reply = await conn.request("initialize", params, timeout_s=START_TIMEOUT_S)
            await conn.notify("initialized", {})
        except (TimeoutError, LinterGone, LspError) as exc:
            self.error = f"ruff server did not start: {exc or 'timed out'}"
            return False
        encoding = (reply or {}).get("capabilities", {}).get("positionEncoding", "utf-16")
        self.encoding = encoding if encoding in ("utf-8", "utf-16", "utf-32") else "utf-16"
        return True

    async def _shutdown(self, conn: LspConnection) -> None:
        with anyio.move_on_after(SHUTDOWN_TIMEOUT_S, shield=True):
            try:
                await conn.request("shutdown", None, timeout_s=SHUTDOWN_TIMEOUT_S)
                await conn.notify("exit", None)
                await conn.closed.wait()
            except (TimeoutError, LinterGone, LspError):
                pass

    # --- calls -----------------------------------------------------------------------------------

    async def _request(self, method: str, params: Any) -> Any:
        conn = self._conn
        if conn is None or not self.alive:
            raise LinterGone(self.error or "the ruff server is not running")
        self.requests += 1
        try:
            result = await conn.request(method, params, timeout_s=REQUEST_TIMEOUT_S)
        except TimeoutError:
            self.error = f"{method} timed out after {REQUEST_TIMEOUT_S:.0f}s"
            self.stop()
            raise LinterGone(self.error) from None
        if self.settings_error is not None:  # its answer ignores the project's config: not ours to give
            raise LinterGone(self.settings_error)
        return result

    async def _sync(self, uri: str, text: str) -> None:
        """Make the server's copy of `uri` equal `text`."""
        conn = self._conn
        if conn is None or not self.alive:
            raise LinterGone(self.error or "the ruff server is not running")
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        known = self._docs.get(uri)
        if known is not None:
            self._docs.move_to_end(uri)
            if known[1] == digest:
                return
            version = known[0] + 1
            params: dict[str, Any] = {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"text": text}],
            }
            await conn.notify("textDocument/didChange", params)
        else:
            version = 1
            doc = {"uri": uri, "languageId": "python", "version": version, "text": text}
            await conn.notify("textDocument/didOpen", {"textDocument": doc})
            while len(self._docs) >= MAX_OPEN_DOCUMENTS:
                old, _ = self._docs.popitem(last=False)
                await conn.notify("textDocument/didClose", {"textDocument": {"uri": old}})
        self._docs[uri] = (version, digest)

    async def diagnostics(self, path: Path, text: str) -> list[dict[str, Any]]:
        """Pull diagnostics for `text` as the content of `path`."""
        uri = file_uri(path)
        async with self._lock:
            await self._sync(uri, text)
            result = await self._request("textDocument/diagnostic", {"textDocument": {"uri": uri}})
        items = (result or {}).get("items") if isinstance(result, dict) else None
        return list(items or [])

    async def fix_all(self, path: Path, text: str) -> list[dict[str, Any]]:
        """The edits of `source.fixAll.ruff` (ruff's safe fixes) for `text` as `path`."""
        uri = file_uri(path)
        params = {
            "textDocument": {"uri": uri},
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}},
            "context": {"diagnostics": [], "only": ["source.fixAll.ruff"]},
        }
        async with self._lock:
            await self._sync(uri, text)
            actions = await self._request("textDocument/codeAction", params)
            if isinstance(actions, list) and actions and "edit" not in actions[0]:
                actions = [await self._request("codeAction/resolve", actions[0])]
        edits: list[dict[str, Any]] = []
        for action in actions or []:
            if not isinstance(action, dict) or action.get("kind") != "source.fixAll.ruff":
                continue
            workspace_edit = action.get("edit") or {}
            edits += (workspace_edit.get("changes") or {}).get(uri, [])
            for change in workspace_edit.get("documentChanges") or []:
                if (change.get("textDocument") or {}).get("uri") == uri:
                    edits += change.get("edits", [])
        return edits

    async def format(self, path: Path, text: str) -> list[dict[str, Any]] | None:
        """Formatting edits for `text` as `path`; `None` when ruff has none (formatted, or unparsable)."""
        uri = file_uri(path)
        params = {"textDocument": {"uri": uri}, "options": {"tabSize": 4, "insertSpaces": True}}
        async with self._lock:
            await self._sync(uri, text)
            result = await self._request("textDocument/formatting", params)
        return list(result) if isinstance(result, list) else None

    def status(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            **self.selection.describe(),
            "pid": self.pid,
            "alive": self.alive,
            "requests": self.requests,
            "open_documents": len(self._docs),
            "idle_s": round(time.monotonic() - self.last_used, 1),
        }


async def _drain_stderr(stream: anyio.abc.ByteReceiveStream | None, pid: int) -> None:
    """ruff logs to stderr; read it so the pipe never fills, and pass warnings on at debug level."""
    if stream is None:
        return
    try:
        async for chunk in stream:
            logger.debug("ruff server %s: %s", pid, chunk.decode("utf-8", "replace").rstrip())
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
