"""API keys and signed-in users' tokens with roles (viewer < trader < admin), and a per-caller token-bucket
rate limit.

Keys come from `FINSTREAM_API_KEYS`, e.g. "key1:viewer,key2:trader,key3:admin"; users and their JWTs from
`serving.tokens` (`POST /auth/token`). Clients send either as `X-API-Key: <key>` or
`Authorization: Bearer <key or token>`. With neither keys nor users configured every protected endpoint
answers 401 saying so: the server never runs open by accident.

The buckets live in Redis when the server has one (`RedisTokenBucket`: one Lua script call per request on
Redis's own clock, so every worker process and replica shares a key's budget), else in the process
(`TokenBucket`). If Redis cannot be reached the process buckets take over until it answers again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from finstream.errors import ConfigError
from serving.tokens import TokenIssuer, looks_like_jwt

log = logging.getLogger(__name__)

API_KEYS_ENV = "FINSTREAM_API_KEYS"


class Role(IntEnum):
    """Ordered roles: a higher role may do everything a lower one may."""

    VIEWER = 1
    TRADER = 2
    ADMIN = 3


@dataclass(frozen=True)
class Caller:
    """An authenticated client: which key (its position in the list, never the key itself) and role."""

    key_id: str
    role: Role
    #: set when the rate-limit token is still to be spent, in the same Redis round trip as the feature
    #: read (`Authenticator.identify_deferred`); the bucket name, never the key
    unspent_bucket: str | None = None


def parse_api_keys(text: str | None) -> dict[str, Role]:
    """{key: role} from "key1:viewer,key2:trader"; raises ConfigError naming the bad entry."""
    keys: dict[str, Role] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, role = item.rpartition(":")
        if not sep or not key.strip():
            raise ConfigError(f"{API_KEYS_ENV}: entry {len(keys) + 1} is not KEY:ROLE")
        try:
            keys[key.strip()] = Role[role.strip().upper()]
        except KeyError:
            raise ConfigError(
                f"{API_KEYS_ENV}: unknown role {role.strip()!r} (use viewer, trader or admin)"
            ) from None
    return keys


class AuthError(Exception):
    """401 (no or unknown key) or 403 (role too low); `status` and a message the client can act on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(Exception):
    """429: the key spent its budget; retry after `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limit exceeded: retry after {math.ceil(retry_after)} s")
        self.retry_after = retry_after


class TokenBucket:
    """Per-key buckets of `burst` tokens refilled at `rate` per second (thread-safe)."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ConfigError(f"rate limit needs rate > 0 and burst ≥ 1, got rate={rate}, burst={burst}")
        self.rate = rate
        self.burst = burst
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend a token: 0.0 when allowed, else the seconds until one is available."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._state[key] = (tokens - 1.0, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    async def take_async(self, key: str) -> float:
        return self.take(key)


# KEYS[1]: the bucket; ARGV: rate per second, burst. Returns the seconds to wait (0 when a token was taken).
BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local last = tonumber(state[2])
if tokens == nil or last == nil then
  tokens = burst
  last = now
end
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return string.format('%.6f', wait)
"""
BUCKET_SHA = hashlib.sha1(BUCKET_LUA.encode()).hexdigest()


class RedisTokenBucket:
    """Token buckets in Redis shared by all workers; falls back to `fallback` while Redis is unreachable.

    Buckets are keyed by a hash of the API key (the key itself is never stored) and expire once full.
    """

    def __init__(self, url: str, rate: float, burst: int, fallback: TokenBucket, prefix: str) -> None:
        if rate <= 0 or burst < 1:
            raise ConfigError(f"rate limit needs rate > 0 and burst ≥ 1, got rate={rate}, burst={burst}")
        self.url = url
        self.rate = rate
        self.burst = burst
        self.fallback = fallback
        self.prefix = prefix
        self._scripts: dict[int, Any] = {}  # one asyncio client per event loop
        self._down = False

    def _script(self) -> Any:
        import asyncio

        import redis.asyncio
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        loop = id(asyncio.get_running_loop())
        script = self._scripts.get(loop)
        if script is None:
            client = redis.asyncio.Redis.from_url(
                self.url, socket_connect_timeout=0.5, socket_timeout=1.0, retry=Retry(NoBackoff(), 0)
            )
            script = client.register_script(BUCKET_LUA)
            self._scripts[loop] = script
        return script

    def bucket(self, key: str) -> str:
        return self.prefix + hashlib.sha256(key.encode()).hexdigest()[:24]

    async def take_async(self, key: str) -> float:
        """Spend a token of `key`'s shared bucket: 0.0 when allowed, else the seconds to wait."""
        return await self.take_bucket_async(self.bucket(key))

    async def take_bucket_async(self, bucket: str) -> float:
        """`take_async` by bucket name (the process fallback is keyed by the same name)."""
        key = bucket
        try:
            wait = await self._script()(keys=[bucket], args=[self.rate, self.burst])
        except Exception as exc:  # redis down or unreachable: keep limiting, per process
            if not self._down:  # once per outage, not once per request
                log.warning("rate limit store unavailable (%s): per-process limits until it is back", exc)
                self._down = True
            return self.fallback.take(key)
        if self._down:
            log.info("rate limit store is back: limits are shared again")
            self._down = False
        return float(wait)


class Authenticator:
    """Checks a presented key against the configured ones, its role, and its rate limit."""

    def __init__(
        self,
        keys: dict[str, Role],
        limiter: TokenBucket | RedisTokenBucket,
        issuer: TokenIssuer | None = None,
    ) -> None:
        self._keys = keys
        self._ids = {key: f"key{i + 1}" for i, key in enumerate(keys)}
        self.limiter = limiter
        self.issuer = issuer

    @classmethod
    def from_env(
        cls, rate: float, burst: int, redis_url: str | None = None, prefix: str = "finstream:ratelimit:"
    ) -> Authenticator:
        """Keys from FINSTREAM_API_KEYS; buckets in Redis when `redis_url` is given, else in the process."""
        local = TokenBucket(rate, burst)
        limiter = RedisTokenBucket(redis_url, rate, burst, local, prefix) if redis_url else local
        issuer = TokenIssuer.from_env({role.name.lower(): role.value for role in Role})
        return cls(parse_api_keys(os.environ.get(API_KEYS_ENV)), limiter, issuer)

    async def check_async(self, presented: str | None, needed: Role) -> Caller:
        """The caller for `presented`, or AuthError / RateLimited (the bucket may be in Redis)."""
        key, role = self._identify(presented, needed)
        wait = await self.limiter.take_async(key)
        if wait > 0:
            raise RateLimited(wait)
        return Caller(self._ids.get(key, key), role)

    def identify_deferred(self, presented: str | None, needed: Role) -> Caller:
        """The caller, its token not spent yet when the buckets are in Redis (`unspent_bucket`): the
        endpoint spends it in the same round trip as its feature read. Process buckets spend it now."""
        if not isinstance(self.limiter, RedisTokenBucket):
            return self.check(presented, needed)
        key, role = self._identify(presented, needed)
        return Caller(self._ids.get(key, key), role, unspent_bucket=self.limiter.bucket(key))

    def check(self, presented: str | None, needed: Role) -> Caller:
        """The caller for `presented`, or AuthError / RateLimited (process buckets only)."""
        key, role = self._identify(presented, needed)
        limiter = self.limiter.fallback if isinstance(self.limiter, RedisTokenBucket) else self.limiter
        wait = limiter.take(key)
        if wait > 0:
            raise RateLimited(wait)
        return Caller(self._ids.get(key, key), role)

    def _identify(self, presented: str | None, needed: Role) -> tuple[str, Role]:
        """The configured key matching `presented` and its role (a token: "user:<name>" and the role it
        grants), or AuthError."""
        tokens = self.issuer is not None and self.issuer.enabled
        if not self._keys and not tokens:
            raise AuthError(401, f"no API keys are configured on this server: set {API_KEYS_ENV}")
        if not presented:
            raise AuthError(
                401, "missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'"
            )
        if tokens and looks_like_jwt(presented):
            try:
                name, granted = self.issuer.verify(presented)  # type: ignore[union-attr]
            except ValueError as exc:
                raise AuthError(401, str(exc)) from None
            if granted < needed:
                raise AuthError(
                    403,
                    f"this endpoint needs the {needed.name.lower()} role; the token grants "
                    f"{Role(granted).name.lower()}",
                )
            return f"user:{name}", Role(granted)
        role = None
        for key, key_role in self._keys.items():
            if hmac.compare_digest(key.encode(), presented.encode()):
                role, presented = key_role, key
                break
        if role is None:
            raise AuthError(401, "invalid API key")
        if role < needed:
            raise AuthError(
                403, f"this endpoint needs the {needed.name.lower()} role; the key is {role.name.lower()}"
            )
        return presented, role


def presented_key(x_api_key: str | None, authorization: str | None) -> str | None:
    """The key from `X-API-Key`, else from `Authorization: Bearer …`."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None
