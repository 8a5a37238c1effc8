"""API keys with roles (viewer < trader < admin) and a per-key token-bucket rate limit.

Keys come from `FINSTREAM_API_KEYS`, e.g. "key1:viewer,key2:trader,key3:admin". Clients send the key as
`X-API-Key: <key>` or `Authorization: Bearer <key>`. With no keys configured every protected endpoint
answers 401 saying so: the server never runs open by accident.
"""

from __future__ import annotations

import hmac
import math
import os
import threading
import time
from dataclasses import dataclass
from enum import IntEnum

from finstream.errors import ConfigError

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


class Authenticator:
    """Checks a presented key against the configured ones, its role, and its rate limit."""

    def __init__(self, keys: dict[str, Role], limiter: TokenBucket) -> None:
        self._keys = keys
        self._ids = {key: f"key{i + 1}" for i, key in enumerate(keys)}
        self.limiter = limiter

    @classmethod
    def from_env(cls, rate: float, burst: int) -> Authenticator:
        return cls(parse_api_keys(os.environ.get(API_KEYS_ENV)), TokenBucket(rate, burst))

    def check(self, presented: str | None, needed: Role) -> Caller:
        """The caller for `presented`, or AuthError / RateLimited."""
        if not self._keys:
            raise AuthError(401, f"no API keys are configured on this server: set {API_KEYS_ENV}")
        if not presented:
            raise AuthError(
                401, "missing API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'"
            )
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
        wait = self.limiter.take(presented)
        if wait > 0:
            raise RateLimited(wait)
        return Caller(self._ids[presented], role)


def presented_key(x_api_key: str | None, authorization: str | None) -> str | None:
    """The key from `X-API-Key`, else from `Authorization: Bearer …`."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None
