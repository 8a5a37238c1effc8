"""Rate-limit buckets in the real Redis: shared by every worker process, falling back per process when
Redis cannot be reached."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import redis
from tests_support import service_unavailable

from serving.auth import (
    API_KEYS_ENV,
    Authenticator,
    AuthError,
    RateLimited,
    RedisTokenBucket,
    Role,
    TokenBucket,
)

pytestmark = pytest.mark.integration

URL = "redis://127.0.0.1:6379/15"


@pytest.fixture
def prefix() -> Iterator[str]:
    client = redis.Redis.from_url(URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        service_unavailable(f"Redis at {URL} does not answer PING ({exc}); start redis-server")
    name = f"finstream:test-{uuid.uuid4().hex[:8]}:ratelimit:"
    yield name
    for key in client.scan_iter(match=name + "*"):
        client.delete(key)
    client.close()


def test_workers_share_one_budget_per_key(prefix: str) -> None:
    """Two limiters (two worker processes) on one Redis: a key's burst is spent once, not once each."""

    async def run() -> tuple[list[float], list[float], float]:
        workers = [RedisTokenBucket(URL, 2.0, 5, TokenBucket(2.0, 5), prefix) for _ in range(2)]
        waits = [await workers[i % 2].take_async("trader-key") for i in range(5)]
        after = [await workers[i % 2].take_async("trader-key") for i in range(2)]
        other = await workers[1].take_async("viewer-key")
        return waits, after, other

    waits, after, other = asyncio.run(run())
    assert waits == [0.0] * 5
    assert 0.3 < after[0] <= 0.5 and after[1] > 0  # empty after 5 takes across both workers
    assert other == 0.0  # buckets are per key
    stored = redis.Redis.from_url(URL).keys(prefix + "*")
    assert len(stored) == 2 and all(b"trader-key" not in k and b"viewer-key" not in k for k in stored)


def test_refills_at_the_rate_on_redis_time(prefix: str) -> None:
    async def run() -> list[float]:
        bucket = RedisTokenBucket(URL, 10.0, 1, TokenBucket(10.0, 1), prefix)
        first = await bucket.take_async("k")
        second = await bucket.take_async("k")
        await asyncio.sleep(0.15)
        third = await bucket.take_async("k")
        return [first, second, third]

    first, second, third = asyncio.run(run())
    assert first == 0.0 and 0.0 < second <= 0.1 and third == 0.0


def test_unreachable_redis_falls_back_to_process_buckets(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_KEYS_ENV, "trader-key:trader")
    auth = Authenticator.from_env(1.0, 2, "redis://127.0.0.1:1/0", prefix=prefix)

    async def run() -> None:
        assert (await auth.check_async("trader-key", Role.TRADER)).key_id == "key1"
        await auth.check_async("trader-key", Role.VIEWER)
        with pytest.raises(RateLimited):
            await auth.check_async("trader-key", Role.TRADER)
        with pytest.raises(AuthError, match="admin role"):
            await auth.check_async("trader-key", Role.ADMIN)

    asyncio.run(run())
