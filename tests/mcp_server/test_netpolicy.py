"""The admission policy of the network transports, without a socket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mcp_server.connections import token_identity
from mcp_server.netpolicy import (
    ConnectionCounter,
    NetPolicy,
    bearer_token,
    host_is_loopback,
    loopback_origins,
    origin_allowed,
)
from tests.conftest import make_settings

TOKEN = "tok-123"


def policy(tmp_path: Path, **settings: Any) -> NetPolicy:
    return NetPolicy(make_settings(tmp_path, tmp_path, transport="websocket", **settings))


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("BEARER abc", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer    ", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost", True),
        ("http://localhost:3000", True),
        ("https://127.0.0.1:8443", True),
        ("http://[::1]:9000", True),
        ("http://localhost:3000/path", False),
        ("http://localhost:", False),
        ("http://localhost.evil.com", False),
        ("http://localhost:80.evil.com", False),
        ("http://evil.com", False),
        ("null", False),
    ],
)
def test_loopback_origin_patterns(origin: str, allowed: bool) -> None:
    assert origin_allowed(origin, loopback_origins()) is allowed


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.1:8765", True),
        ("localhost:1", True),
        ("LOCALHOST", True),
        ("[::1]:8765", True),
        ("[::1]", True),
        ("attacker.example", False),
        ("attacker.example:8765", False),
        ("127.0.0.1.nip.io:8765", False),
        ("", False),
    ],
)
def test_host_is_loopback(host: str, loopback: bool) -> None:
    assert host_is_loopback(host) is loopback


def test_without_a_token_anyone_local_is_admitted(tmp_path: Path) -> None:
    p = policy(tmp_path)
    assert p.check({"host": "127.0.0.1:8765"}) is None
    assert p.check({"host": "127.0.0.1:8765", "authorization": "Bearer whatever"}) is None
    assert p.client_identity({"authorization": "Bearer whatever"}, "127.0.0.1") == "ip:127.0.0.1"


def test_with_a_token_it_is_required_and_compared_exactly(tmp_path: Path) -> None:
    p = policy(tmp_path, token=TOKEN)
    host = {"host": "127.0.0.1:1"}
    missing = p.check(host)
    assert missing is not None and missing.status == 401 and "missing" in missing.message
    assert ("WWW-Authenticate", 'Bearer realm="mcp-code-tools"') in missing.headers
    for wrong in ("tok-12", "tok-1234", "TOK-123", "tok-123 extra"):
        refused = p.check({**host, "authorization": f"Bearer {wrong}"})
        assert refused is not None and refused.status == 401 and "wrong" in refused.message
        assert wrong not in refused.message and TOKEN not in refused.message
    assert p.check({**host, "authorization": f"Bearer {TOKEN}"}) is None
    assert p.client_identity({"authorization": f"Bearer {TOKEN}"}, "10.0.0.1") == token_identity(TOKEN)


def test_the_token_is_checked_before_the_origin(tmp_path: Path) -> None:
    refused = policy(tmp_path, token=TOKEN).check({"origin": "https://evil.example", "host": "localhost"})
    assert refused is not None and refused.status == 401


def test_allowed_origins_extend_the_loopback_ones(tmp_path: Path) -> None:
    p = policy(tmp_path, allowed_origins=["https://ide.example.com", "http://dev.example.com:*"])
    assert p.check({"origin": "https://ide.example.com", "host": "localhost"}) is None
    assert p.check({"origin": "http://dev.example.com:8080", "host": "localhost"}) is None
    assert p.check({"origin": "http://localhost:3000", "host": "localhost"}) is None
    refused = p.check({"origin": "https://ide.example.com.evil", "host": "localhost"})
    assert refused is not None and refused.status == 403 and "allowed_origins" in refused.message


def test_off_loopback_only_listed_origins_pass_and_any_host_does(tmp_path: Path) -> None:
    p = policy(tmp_path, host="0.0.0.0", token=TOKEN, allowed_origins=["https://ide.example.com"])
    auth = {"authorization": f"Bearer {TOKEN}", "host": "build-box.internal:8765"}
    assert p.check(auth) is None
    assert p.check({**auth, "origin": "https://ide.example.com"}) is None
    refused = p.check({**auth, "origin": "http://localhost:3000"})
    assert refused is not None and refused.status == 403


def test_a_rebound_host_is_refused_on_loopback(tmp_path: Path) -> None:
    refused = policy(tmp_path).check({"host": "attacker.example:8765"})
    assert refused is not None and refused.status == 421


def test_connection_counter_caps_each_client_separately() -> None:
    counter = ConnectionCounter(2)
    assert counter.try_acquire("a") and counter.try_acquire("a")
    assert not counter.try_acquire("a") and not counter.has_room("a")
    assert counter.try_acquire("b")
    counter.release("a")
    assert counter.has_room("a") and counter.count("a") == 1
    counter.release("a")
    counter.release("b")
    assert counter.count("a") == counter.count("b") == 0
