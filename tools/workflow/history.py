"""The server's history of `check` runs: a ring buffer (setting `check_history_size`), never a growing map."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from mcp_server.api import AppState

SERVICE = "check_history"


class CheckHistory:
    def __init__(self, size: int) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=size)

    async def aclose(self) -> None:
        self.entries.clear()

    def add(self, owner: str | None, root: str | None, result: dict[str, Any]) -> None:
        self.entries.append(
            {
                "owner": owner,
                "run_id": result["run_id"],
                "root": root,
                "status": result["status"],
                "finished_at": round(time.time(), 3),
                "duration_s": result.get("duration_s"),
                "phases": {p["name"]: p["status"] for p in result["phases"]},
            }
        )

    def recent(self, owner: str | None, limit: int) -> list[dict[str, Any]]:
        """The owner's latest checks, newest first (another connection's are not shown)."""
        mine = [{k: v for k, v in e.items() if k != "owner"} for e in self.entries if e["owner"] == owner]
        return mine[::-1][:limit]

    def status(self) -> dict[str, Any]:
        return {"check_history": {"entries": len(self.entries), "size": self.entries.maxlen}}


async def get_history(app: AppState) -> CheckHistory:
    async def factory() -> CheckHistory:
        return CheckHistory(app.settings.check_history_size)

    return await app.services.get(SERVICE, factory)
