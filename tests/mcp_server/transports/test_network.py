"""The door of the network transports as pure rules: health answers, token-gated readiness details."""

from __future__ import annotations

from pathlib import Path

from mcp_server.health import Readiness, ReadinessMonitor
from mcp_server.netpolicy import NetPolicy
from mcp_server.server import build_app_state
from mcp_server.transports.network import BindError, Door, bind
from tests.conftest import make_settings

TOKEN = "door-token"


def door(tmp_path: Path, **settings: object) -> Door:
    config = make_settings(tmp_path, tmp_path, transport="http", **settings)
    monitor = ReadinessMonitor(build_app_state(config), 60)
    monitor.current = Readiness(False, {"status": "not ready", "reasons": ["x"], "ruff": {"path": "/secret/ruff"}})
    return Door(NetPolicy(config), monitor)


def test_readiness_details_need_the_token_and_health_needs_a_loopback_host(tmp_path: Path) -> None:
    gate = door(tmp_path, token=TOKEN)
    local = {"host": "127.0.0.1:8766"}
    bare = gate.health("/readyz", local)
    assert bare is not None and bare.status == 503 and bare.body == {"status": "not ready"}
    authed = gate.health("/readyz", {**local, "authorization": f"Bearer {TOKEN}"})
    assert authed is not None and authed.body["ruff"] == {"path": "/secret/ruff"}
    live = gate.health("/healthz", local)
    assert live is not None and live.status == 200 and live.body == {"status": "ok"}
    for path in ("/healthz", "/readyz"):
        rebound = gate.health(path, {"host": "attacker.example", "authorization": f"Bearer {TOKEN}"})
        assert rebound is not None and rebound.status == 421
    assert gate.health("/mcp", local) is None


def test_without_a_token_readiness_shows_its_details(tmp_path: Path) -> None:
    answer = door(tmp_path).health("/readyz", {"host": "localhost"})
    assert answer is not None and "ruff" in answer.body


def test_a_port_in_use_is_a_one_line_bind_error() -> None:
    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        try:
            bind("127.0.0.1", port)
        except BindError as exc:
            assert exc.code == 2
            assert exc.message == f"mcp-code-tools: cannot listen on 127.0.0.1:{port}: Address already in use"
        else:
            raise AssertionError("bound a port in use")
    finally:
        taken.close()
