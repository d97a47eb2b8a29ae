"""Rate limiting of tool calls: the token bucket, the call guard, and the shared Redis store."""

from __future__ import annotations

import logging
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp.shared.exceptions import MCPError

from mcp_server.connections import ConnectionInfo, new_connection
from mcp_server.ratelimit import (
    RATE_LIMITED,
    MemoryBucketStore,
    RateLimiter,
    RedisBucketStore,
    redacted_url,
    refill_and_take,
)
from mcp_server.server import CodeToolsServer
from mcp_server.transports.memory import memory_transport
from tests.conftest import OPENERS, TRANSPORTS, make_settings
from tests.redis_server import free_port, start_redis, stop_redis

pytestmark = pytest.mark.anyio

SLOW_RATE = 0.001  # one token per 1000 s: within a test, a bucket never refills on its own


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the bucket ---------------------------------------------------------------------------------


def test_refill_and_take() -> None:
    assert refill_and_take(3.0, 0.0, rate=1.0, burst=3) == (2.0, 0.0)
    assert refill_and_take(0.0, 0.0, rate=2.0, burst=3) == (0.0, 0.5)
    assert refill_and_take(0.5, 0.0, rate=1.0, burst=3) == (0.5, 0.5)
    assert refill_and_take(0.0, 100.0, rate=1.0, burst=3) == (2.0, 0.0)  # refill caps at the burst
    assert refill_and_take(1.0, -5.0, rate=1.0, burst=3) == (0.0, 0.0)  # a clock going back refills nothing


def test_memory_store_burst_then_refill() -> None:
    clock = FakeClock()
    store = MemoryBucketStore(clock=clock)
    assert [store.take_now("a", rate=2.0, burst=3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert store.take_now("a", rate=2.0, burst=3) == pytest.approx(0.5)
    assert store.take_now("b", rate=2.0, burst=3) == 0.0  # clients do not share buckets
    clock.now += 0.5
    assert store.take_now("a", rate=2.0, burst=3) == 0.0
    assert store.take_now("a", rate=2.0, burst=3) == pytest.approx(0.5)


def test_memory_store_is_bounded() -> None:
    store = MemoryBucketStore(clock=FakeClock(), max_keys=10)
    for i in range(100):
        store.take_now(f"client-{i}", rate=1.0, burst=1)
    assert len(store) == 10


def test_redacted_url_hides_the_password() -> None:
    assert redacted_url("redis://:hunter22@db:6379/0") == "redis://:***@db:6379/0"
    assert redacted_url("redis://me:hunter22@db/0") == "redis://me:***@db/0"
    assert redacted_url("redis://db:6379/0") == "redis://db:6379/0"


# --- the guard, through the server --------------------------------------------------------------


@asynccontextmanager
async def network_server(tmp_path: Path, **settings: Any) -> AsyncIterator[CodeToolsServer]:
    """A server configured as a network transport, served over in-memory connections."""
    app = CodeToolsServer(make_settings(tmp_path, tmp_path, transport="websocket", **settings))
    async with app.running():
        yield app


def client_connection(client: str) -> ConnectionInfo:
    base = new_connection("websocket")
    return ConnectionInfo(id=base.id, owner=base.owner, transport="websocket", client=client)


async def call(client: Client) -> None:
    result = await client.call_tool("get_run", {"run_id": "run_unknown"})
    assert result.is_error  # not found, but served: the limit counts served calls


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_calls_past_the_burst_get_a_json_rpc_error_saying_when_to_retry(tmp_path: Path, mode: str) -> None:
    with anyio.fail_after(30):
        async with (
            network_server(tmp_path, rate_limit_rps=SLOW_RATE, rate_limit_burst=3) as app,
            Client(memory_transport(app, client_connection("ip:192.0.2.1")), mode=mode) as first,
            Client(memory_transport(app, client_connection("ip:192.0.2.1")), mode=mode) as second,
            Client(memory_transport(app, client_connection("ip:192.0.2.2")), mode=mode) as other,
        ):
            await call(first)
            await call(second)  # two connections of one client share its bucket
            await call(first)
            with pytest.raises(MCPError) as refused:
                await call(second)
            error = refused.value
            assert error.code == RATE_LIMITED
            assert "retry after" in error.message
            assert "rate_limit_rps" in error.message and "rate_limit_burst" in error.message
            assert isinstance(error.data, dict)
            assert 0 < error.data["retry_after_s"] <= 1 / SLOW_RATE
            assert error.data["rate_limit_burst"] == 3
            await call(other)  # another client is not affected
            # Only tool calls are limited, and a refused call costs nothing else: the connection serves on.
            assert (await first.list_tools(cache_mode="bypass")).tools


async def test_stdio_is_not_rate_limited(tmp_path: Path) -> None:
    app = CodeToolsServer(make_settings(tmp_path, tmp_path, rate_limit_rps=SLOW_RATE, rate_limit_burst=1))
    assert app.rate_limiter is None and app.guards == []
    with anyio.fail_after(30):
        async with Client(memory_transport(app)) as client:
            for _ in range(5):
                await call(client)


# --- the Redis store against a real redis-server -------------------------------------------------


def unique_prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


@pytest.mark.redis
async def test_two_redis_stores_share_one_limit(redis_url: str) -> None:
    prefix = unique_prefix()
    a = RedisBucketStore(redis_url, prefix=prefix)
    b = RedisBucketStore(redis_url, prefix=prefix)
    try:
        with anyio.fail_after(10):
            assert await a.take("client", rate=SLOW_RATE, burst=3) == 0.0
            assert await b.take("client", rate=SLOW_RATE, burst=3) == 0.0
            assert await a.take("client", rate=SLOW_RATE, burst=3) == 0.0
            wait_a = await a.take("client", rate=SLOW_RATE, burst=3)
            wait_b = await b.take("client", rate=SLOW_RATE, burst=3)
            assert 0 < wait_a <= 1 / SLOW_RATE and 0 < wait_b <= 1 / SLOW_RATE
            assert await b.take("another", rate=SLOW_RATE, burst=3) == 0.0
            assert not a.degraded and not b.degraded
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.redis
async def test_redis_buckets_expire_once_full_again(redis_url: str) -> None:
    from redis.asyncio import Redis

    prefix = unique_prefix()
    store = RedisBucketStore(redis_url, prefix=prefix)
    inspect = Redis.from_url(redis_url)
    try:
        with anyio.fail_after(10):
            await store.take("client", rate=10.0, burst=5)
            ttl_ms = await inspect.pttl(prefix + "client")
            # One token short of full at 10/s: full again in 100 ms, plus a second of slack.
            assert 0 < ttl_ms <= 1100
    finally:
        await store.aclose()
        await inspect.aclose()


@pytest.mark.redis
async def test_two_servers_with_the_redis_store_share_one_limit(redis_url: str, tmp_path: Path) -> None:
    settings = {"rate_limit_rps": SLOW_RATE, "rate_limit_burst": 2, "rate_limit_store": "redis", "redis_url": redis_url}
    client_id = f"token:{uuid.uuid4().hex[:16]}"
    with anyio.fail_after(30):
        async with (
            network_server(tmp_path, **settings) as one,
            network_server(tmp_path, **settings) as two,
            Client(memory_transport(one, client_connection(client_id))) as on_one,
            Client(memory_transport(two, client_connection(client_id))) as on_two,
        ):
            assert isinstance(one.rate_limiter, RateLimiter)
            assert isinstance(one.rate_limiter.store, RedisBucketStore)
            await call(on_one)
            await call(on_two)
            for client in (on_one, on_two):
                with pytest.raises(MCPError) as refused:
                    await call(client)
                assert refused.value.code == RATE_LIMITED


class PrivateRedis:
    """A redis-server of one test's own, to stop and start again on the same port (an outage)."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.proc, self.port = start_redis(binary, workdir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_redis(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def restart(self) -> None:
        self.proc, _ = start_redis(self.binary, self.workdir, port=self.port)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary on PATH (install it with: bash .ci/redis.sh)")
    server = PrivateRedis(binary, tmp_path)
    try:
        yield server
    finally:
        if server.proc.returncode is None:
            server.stop()


@pytest.mark.redis
async def test_redis_outage_fails_open_to_a_local_limit_and_recovers(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    store = RedisBucketStore(private_redis.url, prefix=unique_prefix(), retry_after_failure_s=5.0, clock=clock)
    caplog.set_level(logging.INFO, logger="mcp_server.ratelimit")
    try:
        with anyio.fail_after(30):
            assert await store.take("c", rate=SLOW_RATE, burst=2) == 0.0  # shared: 1 left in Redis
            assert not store.degraded
            private_redis.stop()
            assert await store.take("c", rate=SLOW_RATE, burst=2) == 0.0  # local bucket: 1 left
            assert store.degraded
            assert await store.take("c", rate=SLOW_RATE, burst=2) == 0.0  # local bucket: 0 left
            assert await store.take("c", rate=SLOW_RATE, burst=2) > 0  # the local limit holds
            private_redis.restart()  # a fresh, empty Redis
            clock.now += 10  # past the pause: Redis is tried again
            assert await store.take("c", rate=SLOW_RATE, burst=2) == 0.0
            assert not store.degraded
    finally:
        await store.aclose()
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [m for level, m in messages if level >= logging.ERROR and "unreachable" in m]
    assert [m for level, m in messages if level == logging.WARNING and "reachable again" in m]


async def test_unreachable_redis_fails_open_to_a_local_limit(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    clock = FakeClock()
    store = RedisBucketStore(
        f"redis://:hunter22@127.0.0.1:{port}/0", timeout_s=1.0, retry_after_failure_s=5.0, clock=clock
    )
    caplog.set_level(logging.INFO, logger="mcp_server.ratelimit")
    try:
        with anyio.fail_after(20):
            assert await store.take("c", rate=SLOW_RATE, burst=2) == 0.0
            assert store.degraded
            assert await store.take("c", rate=SLOW_RATE, burst=2) == 0.0
            assert await store.take("c", rate=SLOW_RATE, burst=2) > 0  # the local limit still holds
            clock.now += 10  # past the pause: Redis is tried again, fails again, no second error line
            assert await store.take("c", rate=SLOW_RATE, burst=2) > 0
    finally:
        await store.aclose()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    text = errors[0].getMessage()
    assert "unreachable" in text and "per-instance" in text
    assert "hunter22" not in text  # the password never reaches the log


async def test_a_redis_that_never_answers_is_bounded_by_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        store = RedisBucketStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
        try:
            with anyio.fail_after(10):
                assert await store.take("c", rate=SLOW_RATE, burst=1) == 0.0
                assert store.degraded
        finally:
            await store.aclose()


# --- over the real network transports ------------------------------------------------------------

NETWORK = [t for t in TRANSPORTS if t not in ("memory", "stdio")]


@pytest.mark.parametrize(
    "network_transport",
    NETWORK
    or [pytest.param("none", marks=pytest.mark.skip("no network transport in tests/conftest.py TRANSPORTS yet"))],
)
async def test_rate_limit_over_the_network_transport(network_transport: str, tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with OPENERS[network_transport](
            tmp_path, tmp_path, "legacy", rate_limit_rps=SLOW_RATE, rate_limit_burst=2
        ) as client:
            await call(client)
            await call(client)
            with pytest.raises(MCPError) as refused:
                await call(client)
            assert refused.value.code == RATE_LIMITED
            assert isinstance(refused.value.data, dict) and refused.value.data["retry_after_s"] > 0


async def test_loopback_clients_without_a_token_each_get_their_own_bucket(tmp_path: Path) -> None:
    """Every local process shares the loopback address: one must not starve another (WebSocket
    connections and HTTP sessions each have a bucket; a remote address still shares one)."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from mcp_server.transports.http import http_server
    from mcp_server.transports.websocket import websocket_server
    from mcp_server.transports.ws_client import websocket_client

    settings = {"rate_limit_rps": SLOW_RATE, "rate_limit_burst": 2, "host": "127.0.0.1", "port": 0}
    with anyio.fail_after(60):
        ws_app = CodeToolsServer(make_settings(tmp_path, tmp_path, transport="websocket", **settings))
        http_app = CodeToolsServer(make_settings(tmp_path, tmp_path, transport="http", **settings))
        async with (
            websocket_server(ws_app) as ws,
            http_server(http_app) as http,
            httpx2.AsyncClient(timeout=30) as transport,
        ):
            for opener in (
                lambda: Client(websocket_client(ws.url), mode="legacy"),
                # Sessions are of the handshake era: a sessionless (2026) request has no connection
                # of its own, and local ones share the address's bucket.
                lambda: Client(streamable_http_client(http.url, http_client=transport), mode="legacy"),
            ):
                async with opener() as busy, opener() as calm:
                    await call(busy)
                    await call(busy)
                    with pytest.raises(MCPError) as refused:
                        await call(busy)
                    assert refused.value.code == RATE_LIMITED
                    await call(calm)  # another local client: its own bucket
