"""The WebSocket relay of one worker: the real-time channels' Redis messages fanned out to its sockets.

The stream publishes each channel's messages on Redis pub/sub and keeps the last ones in a history stream
(`finstream.channels`). A worker holds one pub/sub subscription per channel that has a socket open (one
reader task each) and copies every message into each socket's bounded queue; a socket that falls behind
loses its oldest queued messages (counted, and visible to the client as a gap in `seq`: it can reconnect
with `since=<last seq>` to fetch what it missed from the history stream). The reader reconnects to Redis
with backoff; messages published while it is away are in the history stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from finstream.channels import CHANNELS, channel_key, history_key

log = logging.getLogger(__name__)

#: messages a socket may have queued before its oldest are dropped
QUEUE_SIZE = 1000
#: history entries read per round trip when a client catches up
HISTORY_PAGE = 500


class ChannelRelay:
    """Redis pub/sub of the real-time channels → asyncio queues, one per connected socket."""

    def __init__(self, redis_url: str, project: str) -> None:
        self.redis_url = redis_url
        self.project = project
        self._queues: dict[str, set[asyncio.Queue[str]]] = {c: set() for c in CHANNELS}
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._client: Any = None
        self.dropped = 0

    def _redis(self) -> Any:
        if self._client is None:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(self.redis_url, decode_responses=True)
        return self._client

    def subscribe(self, channel: str) -> asyncio.Queue[str]:
        """A new queue that receives every message of `channel` from now on."""
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        self._queues[channel].add(queue)
        reader = self._readers.get(channel)
        if reader is None or reader.done():
            self._readers[channel] = asyncio.create_task(self._read(channel), name=f"relay-{channel}")
        return queue

    def unsubscribe(self, channel: str, queue: asyncio.Queue[str]) -> None:
        self._queues[channel].discard(queue)

    def sockets(self, channel: str) -> int:
        return len(self._queues[channel])

    async def history(self, channel: str, since: int) -> list[str]:
        """The messages of `channel` with seq > `since` still in its history stream, oldest first."""
        client = self._redis()
        key = history_key(self.project, channel)
        out: list[str] = []
        end = "+"
        while True:
            page = await client.xrevrange(key, max=end, min="-", count=HISTORY_PAGE)
            if not page:
                break
            for entry_id, fields in page:
                if int(fields.get("seq", 0)) <= since:
                    return out[::-1]
                out.append(fields["m"])
                end = f"({entry_id}"
            if len(page) < HISTORY_PAGE:
                break
        return out[::-1]

    async def _read(self, channel: str) -> None:
        """Copy `channel`'s pub/sub messages to the queues while any socket listens; reconnect on errors."""
        delay = 0.5
        while self._queues[channel]:
            pubsub = self._redis().pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel_key(self.project, channel))
                delay = 0.5
                while self._queues[channel]:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._fan_out(channel, str(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis gone: retry; the history stream covers the gap
                log.warning("relay %s: %s; reconnecting in %.1f s", channel, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _fan_out(self, channel: str, text: str) -> None:
        for queue in list(self._queues[channel]):
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(text)

    async def close(self) -> None:
        for task in self._readers.values():
            task.cancel()
        for task in self._readers.values():
            with contextlib.suppress(BaseException):
                await task
        self._readers.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def symbol_of(text: str) -> str | None:
    """The `data.symbol` of a channel message (None for messages about no one symbol)."""
    try:
        data = json.loads(text).get("data") or {}
    except (ValueError, AttributeError):
        return None
    symbol = data.get("symbol") if isinstance(data, dict) else None
    return str(symbol) if symbol is not None else None
