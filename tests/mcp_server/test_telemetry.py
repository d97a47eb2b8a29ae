"""Telemetry: off by default; `--otel-exporter console` writes spans to stderr, never stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import settings_env

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_run", "arguments": {"run_id": "x"}}}


def test_console_exporter_writes_spans_to_stderr_only(tmp_path: Path) -> None:
    lines = [INIT, {"jsonrpc": "2.0", "method": "notifications/initialized"}, CALL]
    stdin = "".join(json.dumps(m) + "\n" for m in lines)
    proc = subprocess.run(
        [sys.executable, "-m", "mcp_server", "--otel-exporter", "console"],
        input=stdin,
        capture_output=True,
        text=True,
        env=settings_env(tmp_path, tmp_path),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r.get("id") for r in replies] == [1, 2]  # protocol only on stdout
    assert "tools/call get_run" in proc.stderr  # the span, on stderr
