"""Per-client rate limiting of tool calls: a token bucket in a pluggable store.

A client (`ConnectionInfo.rate_limit_key`: a token hash, or the peer address; a loopback client
without a token, its connection or HTTP session: see `connections.rate_limit_bucket`) has a bucket of
`rate_limit_burst` tokens refilled at `rate_limit_rps` per second; a tool call takes one. A call
that finds the bucket empty is refused with a JSON-RPC error (`RATE_LIMITED`) whose message and
`data.retry_after_s` say when a token will be there.

Stores: `MemoryBucketStore` (one server process; the default) and `RedisBucketStore` (several
server instances behind a load balancer share one limit; a Lua script makes refill-and-take
atomic, timed by the Redis server's clock so instances need not agree on time).

When Redis is unreachable the Redis store *fails open to the local limit*: it logs one clear
error, limits each instance with its own in-memory bucket, and tries Redis again after a pause.
Why not fail closed: the rate limit is abuse and fairness control, not the security boundary
(that is the token and the policy), so an outage of a shared cache must not take every tool
offline. Why not fail fully open: a Redis outage must not also remove all limits; per instance
the limit still holds, so N instances admit at most N times the configured rate.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import anyio
from mcp.shared.exceptions import MCPError

from mcp_server.config import Settings
from mcp_server.connections import ConnectionInfo
from mcp_server.lru import BoundedLRU

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("mcp_server.ratelimit")

RATE_LIMITED = -32029
"""JSON-RPC error code of a refused call: the implementation-defined server-error range, 429-ish."""

REDIS_KEY_PREFIX = "mcp-code-tools:ratelimit:"

# Refill and take one token, atomically. KEYS[1] = bucket; ARGV = rate (tokens/s), burst, cost.
# Returns the seconds to wait as a string (Lua numbers become integers on the way out): "0" = taken.
# The bucket expires once it would be full again: a missing bucket is a full one.
_TAKE_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1])
local stamp = tonumber(state[2])
if tokens == nil or stamp == nil then
  tokens = burst
  stamp = now
end
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return tostring(wait)
"""


class BucketStore(Protocol):
    """Where buckets live. `take` is safe to cancel: a cancelled take may or may not have counted."""

    async def take(self, key: str, *, rate: float, burst: int) -> float:
        """Take one token from `key`'s bucket: 0.0 when taken, else the seconds until one is there."""
        ...

    async def aclose(self) -> None: ...


def refill_and_take(tokens: float, elapsed: float, *, rate: float, burst: int) -> tuple[float, float]:
    """The token bucket: `(tokens left, seconds to wait)` after refilling for `elapsed` s and taking one."""
    tokens = min(float(burst), tokens + max(0.0, elapsed) * rate)
    if tokens >= 1.0:
        return tokens - 1.0, 0.0
    return tokens, (1.0 - tokens) / rate


class MemoryBucketStore:
    """Buckets in this process. At most `max_keys` are kept (least recently used go first: a
    forgotten bucket is a full one, which only ever favours its client)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._buckets: BoundedLRU[str, tuple[float, float]] = BoundedLRU(max_keys)

    def __len__(self) -> int:
        return len(self._buckets)

    def take_now(self, key: str, *, rate: float, burst: int) -> float:
        now = self._clock()
        tokens, stamp = self._buckets.pop(key) or (float(burst), now)
        tokens, wait = refill_and_take(tokens, now - stamp, rate=rate, burst=burst)
        self._buckets.put(key, (tokens, now))
        return wait

    async def take(self, key: str, *, rate: float, burst: int) -> float:
        return self.take_now(key, rate=rate, burst=burst)

    async def aclose(self) -> None:
        self._buckets.clear()


def redacted_url(url: str) -> str:
    """`url` without its password, for logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        return urlunsplit(parts._replace(netloc=user + netloc))
    except ValueError:
        return "<unparseable url>"


class RedisBucketStore:
    """Buckets in Redis, shared by every server instance that uses the same `url` and `prefix`.

    Fails open to `fallback` (a per-instance memory store) while Redis is unreachable, retrying
    Redis at most every `retry_after_failure_s`; each outage and each recovery is logged once.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = REDIS_KEY_PREFIX,
        timeout_s: float = 0.5,
        retry_after_failure_s: float = 5.0,
        fallback: MemoryBucketStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.retry_after_failure_s = retry_after_failure_s
        self.fallback = fallback or MemoryBucketStore()
        self._clock = clock
        self._client: Redis | None = None
        self._script: Any = None
        self._down_until: float | None = None

    @property
    def degraded(self) -> bool:
        """True while Redis is considered unreachable and the local fallback limits calls."""
        return self._down_until is not None

    def _connect(self) -> Any:
        if self._script is None:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            # No retries inside the client: one bounded attempt, then the fallback.
            self._client = Redis.from_url(
                self.url,
                socket_connect_timeout=self.timeout_s,
                socket_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
            self._script = self._client.register_script(_TAKE_LUA)
        return self._script

    async def take(self, key: str, *, rate: float, burst: int) -> float:
        now = self._clock()
        if self._down_until is not None and now < self._down_until:
            return await self.fallback.take(key, rate=rate, burst=burst)
        from redis.exceptions import RedisError

        try:
            script = self._connect()
            with anyio.fail_after(self.timeout_s * 2):
                raw = await script(keys=[self.prefix + key], args=[repr(float(rate)), burst, 1])
            wait = float(raw)
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            if self._down_until is None:
                logger.error(
                    "rate limit store redis at %s is unreachable (%s: %s); failing open to a per-instance "
                    "limit until it is back (retrying every %.0f s)",
                    redacted_url(self.url),
                    type(exc).__name__,
                    exc,
                    self.retry_after_failure_s,
                )
            self._down_until = now + self.retry_after_failure_s
            return await self.fallback.take(key, rate=rate, burst=burst)
        if self._down_until is not None:
            logger.warning(
                "rate limit store redis at %s is reachable again: limit shared again", redacted_url(self.url)
            )
            self._down_until = None
        return wait

    async def aclose(self) -> None:
        client, self._client, self._script = self._client, None, None
        if client is not None:
            with anyio.move_on_after(self.timeout_s * 2, shield=True):
                await client.aclose()
        await self.fallback.aclose()


class RateLimiter:
    """The call guard: refuses a tool call when its client's bucket is empty."""

    def __init__(self, store: BucketStore, *, rate: float, burst: int) -> None:
        self.store = store
        self.rate = rate
        self.burst = burst

    async def __call__(self, info: ConnectionInfo, tool: str) -> None:
        wait = await self.store.take(info.rate_limit_key, rate=self.rate, burst=self.burst)
        if wait <= 0:
            return
        retry_after = math.ceil(wait * 1000) / 1000  # never 0 when refused
        raise MCPError(
            RATE_LIMITED,
            f"rate limit exceeded: retry after {retry_after:g} s "
            f"(settings rate_limit_rps={self.rate:g}, rate_limit_burst={self.burst})",
            data={"retry_after_s": retry_after, "rate_limit_rps": self.rate, "rate_limit_burst": self.burst},
        )

    async def aclose(self) -> None:
        await self.store.aclose()


def rate_limiter_for(settings: Settings) -> RateLimiter:
    """The limiter the settings ask for (`rate_limit_store`: memory or redis)."""
    store: BucketStore = (
        RedisBucketStore(settings.redis_url) if settings.rate_limit_store == "redis" else MemoryBucketStore()
    )
    return RateLimiter(store, rate=settings.rate_limit_rps, burst=settings.rate_limit_burst)
