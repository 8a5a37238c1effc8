"""Publishing to the real-time channels (`finstream.channels`): numbered JSON envelopes over Redis pub/sub,
with each channel's last messages kept in a capped stream for clients that reconnect.

One Lua script per channel and batch numbers the messages (INCRBY on the channel's counter), PUBLISHes each
and appends it to the channel's history stream (MAXLEN ~). Queued in the consumer's bus transaction
(`queue`), it runs only if the transaction commits, so a bar's messages go out exactly once; `publish`
sends at once (metrics and status). Scripts are sent with EVAL (Redis caches them by hash), so a restarted
Redis needs no reloading and no command in a transaction can fail for want of a loaded script.

On Redis Cluster the channel keys (counter, history) are not in a bus partition's slot, so the messages
would have to be published after the transaction instead (at-least-once; a client de-duplicates by
(symbol, interval, bar ts)): the bus targets one Redis for now (see `stream.bus`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from finstream.channels import HISTORY_MAXLEN, PAYLOADS, channel_key, envelope_parts, history_key, seq_key

log = logging.getLogger(__name__)

#: KEYS: counter, history; ARGV: pub/sub channel, history maxlen, then (head, tail) per message.
#: Returns the seq of the last message.
PUBLISH_LUA = """
local n = (#ARGV - 2) / 2
local last = redis.call('INCRBY', KEYS[1], n)
local maxlen = tonumber(ARGV[2])
for i = 1, n do
  local seq = string.format('%d', last - n + i)
  local message = ARGV[2 * i + 1] .. seq .. ARGV[2 * i + 2]
  redis.call('PUBLISH', ARGV[1], message)
  if maxlen > 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'seq', seq, 'm', message)
  end
end
return last
"""


class Publisher:
    """Publishes payloads of `finstream.channels` for one Feast project."""

    def __init__(self, project: str, history_maxlen: int = HISTORY_MAXLEN) -> None:
        self.project = project
        self.history_maxlen = history_maxlen
        self._keys = {
            channel: (seq_key(project, channel), history_key(project, channel), channel_key(project, channel))
            for channel in PAYLOADS
        }

    def channel(self, channel: str) -> str:
        """The pub/sub channel a subscriber listens on."""
        return self._keys[channel][2]

    def queue(self, pipe: Any, channel: str, payloads: Iterable[BaseModel]) -> int:
        """Queue the publication of `payloads` on `pipe` (one script call); how many were queued."""
        now = datetime.now(UTC)
        parts: list[str] = []
        for data in payloads:
            parts.extend(envelope_parts(channel, data, now))  # type: ignore[arg-type]
        if not parts:
            return 0
        counter, history, pubsub = self._keys[channel]
        pipe.eval(PUBLISH_LUA, 2, counter, history, pubsub, self.history_maxlen, *parts)
        return len(parts) // 2

    def queue_all(self, pipe: Any, messages: dict[str, list[BaseModel]]) -> int:
        """`queue` for several channels at once."""
        return sum(self.queue(pipe, channel, payloads) for channel, payloads in messages.items())

    def publish(self, client: Any, channel: str, payloads: Iterable[BaseModel]) -> int | None:
        """Publish now (outside any transaction); the seq of the last message, None when there was none."""
        pipe = client.pipeline(transaction=False)
        if not self.queue(pipe, channel, payloads):
            return None
        (last,) = pipe.execute()
        return int(last)

    def destroy(self, client: Any) -> int:
        """Delete every channel's counter and history (tests, benchmarks)."""
        keys = [k for keys in self._keys.values() for k in keys[:2]]
        return int(client.delete(*keys))
