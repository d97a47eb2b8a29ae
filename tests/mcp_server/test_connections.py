"""Who owns a request's runs and which bucket it draws from, over HTTP (no transport context)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mcp_server.connections import (
    CONNECTION_STATE_KEY,
    ConnectionInfo,
    connection_for_request,
    current_connection,
    http_connection,
    new_connection,
    token_identity,
)


@dataclass
class _Client:
    host: str


@dataclass
class _Request:
    headers: dict[str, str] = field(default_factory=dict)
    client: _Client = field(default_factory=lambda: _Client("127.0.0.1"))


def test_a_made_up_token_is_not_an_identity_when_the_server_checks_none() -> None:
    a = connection_for_request(_Request({"authorization": "Bearer one"}))
    b = connection_for_request(_Request({"authorization": "Bearer two"}))
    # Both draw from the peer's bucket, and sessionless runs belong to whoever holds the run_id.
    assert a.client == b.client == "ip:127.0.0.1"
    assert a.owner is None and b.owner is None


def test_a_checked_token_names_the_client_and_owns_sessionless_runs() -> None:
    info = connection_for_request(_Request({"authorization": "Bearer s3cret"}), trust_bearer=True)
    assert info.client == token_identity("s3cret")
    assert info.owner == token_identity("s3cret")
    assert "s3cret" not in info.client


def test_an_http_session_owns_its_runs_whatever_the_token() -> None:
    headers = {"authorization": "Bearer s3cret", "mcp-session-id": "abc123"}
    info = connection_for_request(_Request(headers), trust_bearer=True)
    assert info.owner == "http-session:abc123"
    assert info.client == token_identity("s3cret")


def test_a_stream_transport_connection_wins() -> None:
    mine = ConnectionInfo(id="ws-9", owner="ws-9", transport="websocket", client="ip:10.0.0.1")
    reset = current_connection.set(mine)
    try:
        assert connection_for_request(_Request({"authorization": "Bearer x"}), trust_bearer=True) is mine
    finally:
        current_connection.reset(reset)


def test_no_request_is_in_process() -> None:
    assert connection_for_request(None).transport == "inproc"


@dataclass
class _ScopedRequest(_Request):
    scope: dict[str, object] = field(default_factory=dict)


def test_the_connection_the_http_transport_attached_wins_over_the_headers() -> None:
    attached = http_connection("abc123", "token:feedface")
    headers = {"authorization": "Bearer made-up", "mcp-session-id": "other"}
    request = _ScopedRequest(headers, scope={"state": {CONNECTION_STATE_KEY: attached}})
    assert connection_for_request(request, trust_bearer=True) is attached


def test_loopback_clients_draw_from_their_connection_or_session_bucket() -> None:
    local = new_connection("ws", client="ip:127.0.0.1")
    assert local.rate_limit_key == f"conn:{local.id}"
    assert new_connection("ws", client="ip:::ffff:127.0.0.1").rate_limit_key.startswith("conn:")
    assert new_connection("ws", client="ip:192.0.2.1").rate_limit_key == "ip:192.0.2.1"
    assert new_connection("ws", client=token_identity("t")).rate_limit_key == token_identity("t")
    assert http_connection("s1", "ip:::1").rate_limit_key == "http-session:s1"
    assert http_connection(None, "ip:127.0.0.1").rate_limit_key == "ip:127.0.0.1"  # sessionless: the address's
