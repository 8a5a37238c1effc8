"""The bar bus on Redis Streams: partitioned streams, consumer groups, dead letters, idempotent effects.

Layout
    A bus (`prefix`, `name`, N partitions) sends each bar to partition `crc32(symbol) % N`, so every series
    (symbol, interval) lives in one partition and keeps its order. Partition p's keys share the Redis
    Cluster hash tag `{<name>.<p>}`, hence one slot, so one MULTI/EXEC can touch all of them::

        <prefix>:{bars.3}                  the stream (its consumer groups and their PELs live in it)
        <prefix>:{bars.3}:dead:<group>     dead letters: reason, kind, deliveries, the original fields
        <prefix>:{bars.3}:applied:<group>  hash "<symbol> <interval>" -> "<ts_ns> <entry id>" last applied
        <prefix>:{bars.3}:stats:<group>    hash processed / dead_lettered[:<kind>] / duplicates / trimmed
        <prefix>:bars:meta                 the partition count (no tag), checked so N cannot drift

    A handler's own keys belong in the same slot (`Batch.key(suffix)`) when they are written in the
    transaction. N is fixed for the life of the data (changing it moves symbols between partitions):
    choose it larger than the number of consumer processes you expect (16-64).

Delivery guarantees
    At-least-once delivery plus idempotent effects, i.e. effectively once. A bar stays in its group's
    pending list (PEL) until its effects are committed: the consumer gives the handler a MULTI pipeline,
    then adds the series' new last-applied (ts, id), the XACK and its counters, and runs one MULTI/EXEC
    guarded by WATCH on the applied hash. Effects written through that pipeline are therefore applied
    exactly once. Effects the handler makes elsewhere (an online store in another slot, a WebSocket
    relay) are at-least-once: make them overwrites keyed by (symbol, interval, ts).

Ordering and idempotency (key: symbol, interval, ts)
    A partition is handled in stream-ID order, also after a takeover: a consumer does not read new entries
    of a partition while that partition has pending entries, and it claims pending entries as an ordered
    prefix of the PEL (XPENDING, then XAUTOCLAIM from the first). So for each series, an entry whose ID is
    at or below the last applied entry's ID was already settled (applied, or dead-lettered): it is acked
    without effect and counted as a duplicate (a zombie consumer's redelivery). An entry after it whose
    ts is not after the last applied ts is a different bar: it goes to the dead letters as "duplicate or
    out-of-order bar".

Dead letters
    Undecodable entries (`stream.messages.BadMessage`) go at once with their reason (kind `bad_message`);
    out-of-order bars as above (`out_of_order`); a bar whose handler keeps failing is retried in place,
    each retry an XCLAIM that counts a delivery, and after `max_deliveries` it goes with the last error
    (`max_deliveries`); a bar found with more than `max_deliveries` deliveries when claimed (its
    consumers kept crashing on it) goes without being handed over. A delivery count is Redis's own:
    1 for a new read, XPENDING's times-delivered + 1 after a claim, + 1 per in-place retry.
    Dead-lettering is XADD + XACK in the same transaction. A failing batch is re-run one bar at a time so
    one poison bar does not take its neighbours with it, and a series never skips past a bar that is
    still being retried.

Trimming (`MAXLEN ~ maxlen` on every XADD)
    Trimming drops the oldest entries whether or not a group has read or acked them; their IDs stay in
    the PEL. XAUTOCLAIM reports such IDs as deleted (XCLAIM drops them silently): the consumer acks and
    counts them (`trimmed`) and logs a warning, since those bars are lost. Entries trimmed before any
    consumer read them leave no trace but the group's lag. Size `maxlen` above the largest backlog to
    survive (bars per partition per minute x minutes of consumer outage), e.g. 5,000 symbols of 1m bars
    over 16 partitions need about 19k entries per hour of outage; the default 100,000 covers five hours
    (the integration tests trim pending work on purpose and check the count). Redis 8.2's ACKED trim
    option would make this exact; the Redis here is 7.0.

Failures
    A consumer talks to Redis through its own client without redis-py's automatic retries (a retried
    XREADGROUP would lose the entries of the first, unanswered call; a retried transaction could apply
    twice). On a connection error it reconnects with exponential backoff and jitter (tenacity), then
    handles what it held and had not acked from the PEL again: acknowledged work is never redone, and
    work whose EXEC outcome is unknown (redis-py reports a connection lost under WATCH as WatchError) is
    re-checked against the applied hash (applied -> duplicate). Publishing keeps redis-py's retries: a
    resent XADD can add a bar twice, and the consumers dead-letter the copy instead of applying it.
    A consumer that stalls longer than `min_idle_ms` inside its handler may be taken over while alive;
    WATCH keeps its effects from being applied twice, so keep `min_idle_ms` above the worst batch time.

Scaling past one machine
    Partitions are the unit of parallelism. Consumers are processes, each owning a set of partitions
    (`assign_partitions`); there are more partitions than consumers, so adding a consumer means moving
    partitions, and a replacement for a dead consumer owns the same partitions and claims its pending
    entries after `min_idle_ms`. On Redis Cluster the hash tag spreads partitions across shards while
    keeping each partition's stream, dead letters and state in one slot (transactions stay legal).
    Reading across partitions in one XREADGROUP needs them on one node: this part of the bus targets a
    single Redis (or one shard per consumer); a cluster consumer would issue one XREADGROUP per slot.

Counts
    `Consumer.stats` holds this process's counts (received, processed, dead-lettered by kind, duplicates,
    trimmed, claimed, handler errors, reconnects); `Bus.counts(group)` reads the counters committed with the
    work plus the stream's own `entries-added`, PEL size and lag, for metrics: once a group is drained,
    in == processed + dead_lettered + trimmed.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import pandas as pd
import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.retry import Retry
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    stop_never,
    stop_when_event_set,
    wait_exponential_jitter,
)

from finstream.errors import ConfigError, FinstreamError
from stream.messages import BadMessage, BarMessage, bars_from_frame, decode_bar

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 16
DEFAULT_MAXLEN = 100_000
#: errors after which a consumer reconnects and re-handles its unacknowledged entries
CONNECTION_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
#: the fields a dead letter adds; the original entry's fields follow, each prefixed with "msg."
DEAD_LETTER_FIELDS = ("kind", "reason", "message_id", "partition", "group", "consumer", "deliveries", "at_ms")
ORIGINAL_PREFIX = "msg."
_WATCH_ATTEMPTS = 20
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")  # no braces (hash tags) and no ':' (key separator)
_PREFIX = re.compile(r"^[A-Za-z0-9_.:\-]+$")


class PartitionContention(FinstreamError):
    """Another consumer keeps writing a partition's state: two live consumers own the same partition."""


def partition_of(symbol: str, partitions: int) -> int:
    """The partition of a (canonical) symbol: crc32 of its UTF-8 bytes, modulo the partition count."""
    return zlib.crc32(symbol.encode()) % partitions


def assign_partitions(partitions: int, consumers: int, index: int) -> list[int]:
    """Consumer `index` of `consumers`' share of `partitions`, round robin (every partition owned once)."""
    if not 0 <= index < consumers:
        raise ConfigError(f"consumer index {index} is outside 0..{consumers - 1}")
    return list(range(index, partitions, consumers))


def _check_name(kind: str, value: str, pattern: re.Pattern[str] = _NAME) -> str:
    """`value` if it is a safe key part: letters, digits, '_', '.', '-' (and ':' in a prefix)."""
    if not pattern.match(value):
        allowed = "letters, digits, '_', '.', '-'" + (" and ':'" if pattern is _PREFIX else "")
        raise ConfigError(f"{kind} {value!r} may hold only {allowed}")
    return value


def _id_key(entry_id: str) -> tuple[int, int]:
    """A stream ID as a comparable (ms, seq) pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-lettered entry: why, after how many deliveries, and the original fields as they were."""

    partition: int
    id: str
    message_id: str
    kind: str
    reason: str
    deliveries: int
    consumer: str
    at_ms: int
    fields: dict[str, str]


@dataclass(frozen=True)
class StreamCounts:
    """A group's counts over the bus (`total`) and per partition, as committed in Redis."""

    total: dict[str, int | None]
    partitions: dict[int, dict[str, int | None]]


class Bus:
    """A partitioned bar bus on one Redis: key layout, group creation, publishing, dead letters, counts."""

    def __init__(
        self,
        url: str,
        *,
        partitions: int = DEFAULT_PARTITIONS,
        prefix: str = "finstream",
        name: str = "bars",
        maxlen: int | None = DEFAULT_MAXLEN,
        dead_maxlen: int | None = DEFAULT_MAXLEN,
        pipeline_size: int = 1000,
    ) -> None:
        if partitions < 1:
            raise ConfigError(f"a bus needs at least one partition, got {partitions}")
        if maxlen is not None and maxlen < 1:
            raise ConfigError(f"maxlen must be positive or None (no trimming), got {maxlen}")
        self.url = url
        self.partitions = partitions
        self.prefix = _check_name("bus prefix", prefix, _PREFIX)
        self.name = _check_name("bus name", name)
        self.maxlen = maxlen
        self.dead_maxlen = dead_maxlen
        self.pipeline_size = pipeline_size
        self.client = self.connect()
        self._layout_checked = False
        self._partition_cache: dict[str, int] = {}

    def connect(
        self, *, client_name: str | None = None, retries: int | None = None, socket_timeout: float = 30.0
    ) -> redis.Redis:
        """A new client for this bus's Redis (str replies); `retries=0` turns redis-py's retries off."""
        kwargs: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": 5.0,
            "socket_timeout": socket_timeout,
            "client_name": client_name,
        }
        if retries is not None:
            kwargs["retry"] = Retry(NoBackoff(), retries)
        return redis.Redis.from_url(self.url, **kwargs)

    # keys -----------------------------------------------------------------------------------------------
    def hash_tag(self, partition: int) -> str:
        """The Redis Cluster hash tag every key of `partition` carries: `{<name>.<partition>}`."""
        return f"{{{self.name}.{partition}}}"

    def partition_key(self, partition: int, suffix: str = "") -> str:
        """A key in `partition`'s slot: `<prefix>:{<name>.<p>}` or `<prefix>:{<name>.<p>}:<suffix>`."""
        key = f"{self.prefix}:{self.hash_tag(partition)}"
        return f"{key}:{suffix}" if suffix else key

    def stream_key(self, partition: int) -> str:
        return self.partition_key(partition)

    def dead_key(self, partition: int, group: str) -> str:
        return self.partition_key(partition, f"dead:{group}")

    def applied_key(self, partition: int, group: str) -> str:
        return self.partition_key(partition, f"applied:{group}")

    def stats_key(self, partition: int, group: str) -> str:
        return self.partition_key(partition, f"stats:{group}")

    @property
    def meta_key(self) -> str:
        return f"{self.prefix}:{self.name}:meta"

    def partition_of(self, symbol: str) -> int:
        cached = self._partition_cache.get(symbol)
        if cached is None:
            cached = self._partition_cache[symbol] = partition_of(symbol, self.partitions)
        return cached

    # setup ----------------------------------------------------------------------------------------------
    def check_layout(self) -> None:
        """Record the partition count on first use and refuse a bus that disagrees with the recorded one."""
        if self._layout_checked:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.hsetnx(self.meta_key, "partitions", str(self.partitions))
        pipe.hget(self.meta_key, "partitions")
        _, recorded = pipe.execute()
        if int(recorded) != self.partitions:
            raise ConfigError(
                f"bus {self.prefix}:{self.name} was created with {recorded} partitions, not "
                f"{self.partitions}: symbols would move between partitions "
                "(use the recorded count, or a new bus name)"
            )
        self._layout_checked = True

    def ensure_group(self, group: str, start_id: str = "0") -> None:
        """Create `group` on every partition's stream (creating the streams); a no-op where it exists.

        `start_id` "0" lets a group created after publishing still read the backlog; "$" reads only new bars.
        """
        _check_name("group", group)
        self.check_layout()
        pipe = self.client.pipeline(transaction=False)
        for partition in range(self.partitions):
            pipe.xgroup_create(self.stream_key(partition), group, id=start_id, mkstream=True)
        for result in pipe.execute(raise_on_error=False):
            if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                raise result

    # producing ------------------------------------------------------------------------------------------
    def publish(self, bars: pd.DataFrame | Iterable[BarMessage]) -> list[str]:
        """XADD every bar to its partition (pipelined, `MAXLEN ~ maxlen`); the stream IDs, in input order.

        A frame is checked as a whole first (BadMessage names the first bad row), so nothing of a bad frame
        is published. Publish each series in ts order: a bar not after its series' last applied bar is
        dead-lettered. The publishing client retries on connection errors (redis-py's default), so a lost
        reply can add a bar twice; consumers dead-letter the second copy, they never apply it twice.
        """
        messages = bars_from_frame(bars) if isinstance(bars, pd.DataFrame) else list(bars)
        self.check_layout()
        ids: list[str] = []
        for start in range(0, len(messages), self.pipeline_size):
            pipe = self.client.pipeline(transaction=False)
            for message in messages[start : start + self.pipeline_size]:
                pipe.xadd(
                    self.stream_key(self.partition_of(message.symbol)),
                    message.to_fields(),  # type: ignore[arg-type]
                    maxlen=self.maxlen,
                    approximate=True,
                )
            ids.extend(pipe.execute())
        log.debug("published %d bars to %s:%s", len(ids), self.prefix, self.name)
        return ids

    # reading back ---------------------------------------------------------------------------------------
    def dead_letters(
        self, group: str, partitions: Sequence[int] | None = None, count: int = 10_000
    ) -> list[DeadLetter]:
        """The dead letters of `group` (all partitions by default), oldest first per partition."""
        out: list[DeadLetter] = []
        for partition in partitions if partitions is not None else range(self.partitions):
            for entry_id, fields in self.client.xrange(self.dead_key(partition, group), count=count):
                original = {
                    k[len(ORIGINAL_PREFIX) :]: v for k, v in fields.items() if k.startswith(ORIGINAL_PREFIX)
                }
                out.append(
                    DeadLetter(
                        partition=partition,
                        id=entry_id,
                        message_id=fields["message_id"],
                        kind=fields["kind"],
                        reason=fields["reason"],
                        deliveries=int(fields["deliveries"]),
                        consumer=fields["consumer"],
                        at_ms=int(fields["at_ms"]),
                        fields=original,
                    )
                )
        return out

    def counts(self, group: str) -> StreamCounts:
        """`in` (entries ever added), `pending`, `lag` and the committed counters of `group`."""
        pipe = self.client.pipeline(transaction=False)
        for partition in range(self.partitions):
            pipe.xinfo_stream(self.stream_key(partition))
            pipe.xinfo_groups(self.stream_key(partition))
            pipe.hgetall(self.stats_key(partition, group))
        results = pipe.execute(raise_on_error=False)
        per: dict[int, dict[str, int | None]] = {}
        for partition in range(self.partitions):
            info, groups, stats = results[3 * partition : 3 * partition + 3]
            row: dict[str, int | None] = {
                "in": 0 if isinstance(info, Exception) else int(info["entries-added"]),
                "pending": 0,
                "lag": 0,
                "processed": 0,
                "dead_lettered": 0,
                "duplicates": 0,
                "trimmed": 0,
            }
            for entry in [] if isinstance(groups, Exception) else groups:
                if entry["name"] == group:
                    row["pending"] = int(entry["pending"])
                    row["lag"] = None if entry["lag"] is None else int(entry["lag"])
            if isinstance(stats, dict):
                row.update({k: int(v) for k, v in stats.items()})
            per[partition] = row
        total: dict[str, int | None] = {}
        for row in per.values():
            for key, value in row.items():
                before = total.get(key, 0)
                total[key] = None if value is None or before is None else before + value
        return StreamCounts(total, per)

    def destroy(self) -> int:
        """Delete every key of this bus (streams, groups, dead letters, state, and handlers' keys named with
        `partition_key`); the number deleted."""
        keys = list(self.client.scan_iter(match=f"{self.prefix}:{{{self.name}.*", count=1000))
        keys.append(self.meta_key)
        deleted = 0
        for start in range(0, len(keys), 500):
            deleted += int(self.client.delete(*keys[start : start + 500]))
        self._layout_checked = False
        return deleted

    def close(self) -> None:
        self.client.close()


# consuming --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Delivery:
    """A bar handed to a handler: its stream ID and how many times it has been delivered (1 = first)."""

    id: str
    bar: BarMessage
    deliveries: int


@dataclass(frozen=True)
class Batch:
    """One partition's new bars in stream order, and the transaction (MULTI) to queue the handler's writes in.

    Queue writes on `pipeline` and return; do not execute it (the consumer adds the applied state, the
    XACK and its counters and runs it). Reads through `pipeline` are queued too: read with another client.
    Keys written here must be in the partition's slot on a cluster: name them with `key(suffix)`.
    `applied` lets a handler with in-memory state check it is in step with what the group committed (a
    handler may see the same bars again when a commit did not happen: a WATCH conflict, a lost connection).
    """

    bus: Bus
    group: str
    partition: int
    messages: list[Delivery]
    pipeline: Pipeline
    #: the ts (ns) of the last bar applied before this batch, per series of the batch that has one
    applied: Mapping[tuple[str, str], int] = field(default_factory=dict)

    @property
    def bars(self) -> list[BarMessage]:
        return [m.bar for m in self.messages]

    def key(self, suffix: str) -> str:
        """A key in this partition's slot (`<prefix>:{<name>.<p>}:<suffix>`)."""
        return self.bus.partition_key(self.partition, suffix)


Handler = Callable[[Batch], None]


@dataclass
class ConsumerStats:
    """What one consumer process did since it started (for metrics)."""

    received: int = 0
    processed: int = 0
    dead_lettered: int = 0
    dead_by_kind: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    trimmed: int = 0
    claimed: int = 0
    handler_errors: int = 0
    watch_conflicts: int = 0
    reconnects: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Entry(NamedTuple):
    id: str
    fields: dict[str, str]
    deliveries: int


@dataclass
class _Plan:
    """How one commit settles its entries."""

    good: list[Delivery] = field(default_factory=list)
    duplicates: list[_Entry] = field(default_factory=list)
    dead: list[tuple[_Entry, str, str]] = field(default_factory=list)
    applied: dict[str, str] = field(default_factory=dict)


class Consumer:
    """A member of consumer group `group` that owns `partitions` and feeds their bars to `handler`.

    `batch_size` is the XREADGROUP COUNT (per partition), `block_ms` its BLOCK; pending entries of another
    consumer are claimed once idle for `min_idle_ms`; a bar is dead-lettered after `max_deliveries`
    deliveries. `run()` loops until stopped; `poll()` does one round.
    """

    def __init__(
        self,
        bus: Bus,
        group: str,
        name: str,
        partitions: Sequence[int],
        handler: Handler,
        *,
        batch_size: int = 100,
        block_ms: int = 1000,
        min_idle_ms: int = 30_000,
        max_deliveries: int = 5,
        retry_backoff_s: float = 0.05,
        reconnect_timeout_s: float | None = None,
    ) -> None:
        owned = sorted(set(partitions))
        if not owned or owned[0] < 0 or owned[-1] >= bus.partitions:
            raise ConfigError(
                f"partitions {list(partitions)} must be a non-empty subset of 0..{bus.partitions - 1}"
            )
        if batch_size < 1 or block_ms < 1 or min_idle_ms < 1 or max_deliveries < 1:
            raise ConfigError("batch_size, block_ms, min_idle_ms and max_deliveries must be positive")
        self.bus = bus
        self.group = _check_name("group", group)
        self.name = _check_name("consumer name", name)
        self.partitions = owned
        self.handler = handler
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.min_idle_ms = min_idle_ms
        self.max_deliveries = max_deliveries
        self.retry_backoff_s = retry_backoff_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.client_name = f"finstream-consumer.{group}.{name}"
        self.client = bus.connect(
            client_name=self.client_name, retries=0, socket_timeout=block_ms / 1000 + 30
        )
        self.stats = ConsumerStats()
        self._keys = {p: bus.stream_key(p) for p in owned}
        self._partition_by_key = {key: p for p, key in self._keys.items()}
        # partitions with pending entries to settle before new ones are read -> when to look again
        self._recovering: dict[int, float] = dict.fromkeys(owned, 0.0)
        self._group_ready = False
        self._stop = threading.Event()

    # loop -----------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None, idle_exit_s: float | None = None) -> ConsumerStats:
        """Consume until `stop` (or `self.stop()`) is set, or, with `idle_exit_s`, until nothing arrived and
        nothing was pending for that long; reconnects after connection errors. Returns the stats."""
        stop_event = stop or self._stop
        idle_since = time.monotonic()
        while not stop_event.is_set() and not self._stop.is_set():
            try:
                settled = self.poll()
            except CONNECTION_ERRORS as exc:
                if stop_event.is_set():
                    break
                try:
                    self._reconnect(exc, stop_event)
                except CONNECTION_ERRORS:
                    if stop_event.is_set():
                        break
                    raise  # reconnect_timeout_s passed: let the supervisor restart the process
                idle_since = time.monotonic()
                continue
            now = time.monotonic()
            if settled or self._recovering:
                idle_since = now
            elif idle_exit_s is not None and now - idle_since >= idle_exit_s:
                break
        log.info("consumer %s/%s stopped: %s", self.group, self.name, self.stats.as_dict())
        return self.stats

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.client.close()

    def poll(self) -> int:
        """One round: settle what is pending in recovering partitions, then read and handle new bars.

        Returns how many entries were settled (processed, dead-lettered, duplicates, trimmed).
        """
        if not self._group_ready:
            self.bus.ensure_group(self.group)
            self._group_ready = True
        settled = 0
        now = time.monotonic()
        for partition, due in sorted(self._recovering.items()):
            if due <= now:
                settled += self._recover(partition)
        live = [p for p in self.partitions if p not in self._recovering]
        wait_s = self.block_ms / 1000
        if self._recovering:
            wait_s = min(wait_s, max(0.001, min(self._recovering.values()) - time.monotonic()))
        if not live:
            if not settled:
                self._stop.wait(wait_s)
            return settled
        block = None if settled else max(1, int(wait_s * 1000))
        reply = self.client.xreadgroup(
            self.group, self.name, {self._keys[p]: ">" for p in live}, count=self.batch_size, block=block
        )
        for key, entries in reply or []:
            if entries:
                batch = [_Entry(entry_id, fields, 1) for entry_id, fields in entries]
                self.stats.received += len(batch)
                settled += self._handle(self._partition_by_key[key], batch)
        return settled

    def _reconnect(self, exc: Exception, stop_event: threading.Event) -> None:
        """Back off and reconnect; everything held and not acked is handled again from the PEL."""
        self.stats.reconnects += 1
        log.warning("consumer %s/%s lost Redis (%r); reconnecting", self.group, self.name, exc)
        self._recovering = dict.fromkeys(self.partitions, 0.0)
        limit = stop_after_delay(self.reconnect_timeout_s) if self.reconnect_timeout_s else stop_never
        retrying = Retrying(
            retry=retry_if_exception_type(CONNECTION_ERRORS),
            wait=wait_exponential_jitter(initial=0.1, max=5.0),
            stop=limit | stop_when_event_set(stop_event),
            sleep=stop_event.wait,  # type: ignore[arg-type]  # returns a bool tenacity ignores
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self.client.ping()

    # recovery -------------------------------------------------------------------------------------------
    def _recover(self, partition: int) -> int:
        """Claim and handle the oldest run of `partition`'s pending entries that may be taken now.

        The run is a prefix of the PEL in ID order: this consumer's own entries (left by a connection error
        or an earlier process of the same name) at once, another consumer's once idle for `min_idle_ms`.
        The partition goes live (new entries are read) once its PEL is empty.
        """
        key = self._keys[partition]
        pending = self.client.xpending_range(key, self.group, "-", "+", self.batch_size)
        if not pending:
            del self._recovering[partition]
            return 0
        own = pending[0]["consumer"] == self.name
        run = []
        for entry in pending:
            if (entry["consumer"] == self.name) != own:
                break
            if not own and entry["time_since_delivered"] < self.min_idle_ms:
                break
            run.append(entry)
        if not run:
            wait_ms = self.min_idle_ms - pending[0]["time_since_delivered"]
            self._recovering[partition] = time.monotonic() + max(wait_ms, 1) / 1000
            return 0
        _, claimed, deleted = self.client.xautoclaim(
            key, self.group, self.name, 0 if own else self.min_idle_ms, run[0]["message_id"], count=len(run)
        )
        delivered = {entry["message_id"]: entry["times_delivered"] for entry in run}
        gone = list(deleted) + [entry_id for entry_id, fields in claimed if not fields]
        entries = [_Entry(i, fields, delivered.get(i, 1) + 1) for i, fields in claimed if fields]
        settled = self._settle_trimmed(partition, gone) if gone else 0
        if entries:
            if not own:
                self.stats.claimed += len(entries)
                log.info(
                    "consumer %s/%s claimed %d entries of partition %d left pending by %s",
                    self.group,
                    self.name,
                    len(entries),
                    partition,
                    run[0]["consumer"],
                )
            self.stats.received += len(entries)
            settled += self._handle(partition, entries)
        self._recovering[partition] = 0.0
        return settled

    def _settle_trimmed(self, partition: int, ids: list[str]) -> int:
        """Ack and count pending IDs whose entries were trimmed away (MAXLEN reached unacknowledged work)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self._keys[partition], self.group, *ids)
        pipe.hincrby(self.bus.stats_key(partition, self.group), "trimmed", len(ids))
        pipe.execute()
        self.stats.trimmed += len(ids)
        log.warning(
            "partition %d: %d pending entries were trimmed before being acknowledged (MAXLEN below the "
            "backlog); those bars are lost: %s",
            partition,
            len(ids),
            ids[:5],
        )
        return len(ids)

    # handling -------------------------------------------------------------------------------------------
    def _handle(self, partition: int, entries: list[_Entry]) -> int:
        """Settle `entries` (in stream order); a failing batch is re-run one bar at a time."""
        error = self._commit(partition, entries)
        if error is None:
            return len(entries)
        if len(entries) == 1:
            return self._retry(partition, entries[0], error)
        log.warning(
            "handler failed on a batch of %d from partition %d (%r); handling its bars one at a time",
            len(entries),
            partition,
            error,
        )
        settled = 0
        for entry in entries:
            single_error = self._commit(partition, [entry])
            settled += 1 if single_error is None else self._retry(partition, entry, single_error)
        return settled

    def _retry(self, partition: int, entry: _Entry, error: Exception) -> int:
        """Redeliver a bar whose handler failed (XCLAIM counts the delivery) until it succeeds or
        `max_deliveries` is reached, then dead-letter it with the last error."""
        while True:
            self.stats.handler_errors += 1
            if entry.deliveries >= self.max_deliveries:
                reason = f"handler failed on delivery {entry.deliveries} of {self.max_deliveries}: {error!r}"
                self._commit(partition, [entry], dead=("max_deliveries", reason))
                return 1
            log.warning(
                "handler failed on %s (partition %d, delivery %d of %d): %r; retrying",
                entry.id,
                partition,
                entry.deliveries,
                self.max_deliveries,
                error,
            )
            time.sleep(min(1.0, self.retry_backoff_s * 2 ** (entry.deliveries - 1)))
            claimed = self.client.xclaim(self._keys[partition], self.group, self.name, 0, [entry.id])
            if not claimed or not claimed[0][1]:
                return self._settle_trimmed(partition, [entry.id])
            entry = _Entry(entry.id, claimed[0][1], entry.deliveries + 1)
            next_error = self._commit(partition, [entry])
            if next_error is None:
                return 1
            error = next_error

    def _plan(
        self,
        decoded: list[tuple[_Entry, BarMessage | BadMessage]],
        state: dict[tuple[str, str], tuple[int, tuple[int, int], str]],
        dead: tuple[str, str] | None,
    ) -> _Plan:
        plan = _Plan()
        for entry, bar in decoded:
            if dead is not None:
                plan.dead.append((entry, *dead))
            elif isinstance(bar, BadMessage):
                plan.dead.append((entry, "bad_message", bar.reason))
            else:
                last = state.get(bar.series)
                position = _id_key(entry.id)
                if last is not None and position <= last[1]:
                    plan.duplicates.append(entry)
                elif entry.deliveries > self.max_deliveries:
                    reason = (
                        f"delivered {entry.deliveries} times (limit {self.max_deliveries}) without being "
                        "acknowledged: the consumers handling it crashed or stalled"
                    )
                    plan.dead.append((entry, "max_deliveries", reason))
                elif last is not None and bar.ts_ns <= last[0]:
                    reason = (
                        f"duplicate or out-of-order bar: ts {bar.ts.isoformat()} is not after "
                        f"{pd.Timestamp(last[0], tz='UTC').isoformat()}, the last applied bar of "
                        f"{bar.symbol} {bar.interval} (entry {last[2]})"
                    )
                    plan.dead.append((entry, "out_of_order", reason))
                else:
                    plan.good.append(Delivery(entry.id, bar, entry.deliveries))
                    state[bar.series] = (bar.ts_ns, position, entry.id)
                    plan.applied[f"{bar.symbol} {bar.interval}"] = f"{bar.ts_ns} {entry.id}"
        return plan

    def _commit(
        self, partition: int, entries: list[_Entry], dead: tuple[str, str] | None = None
    ) -> Exception | None:
        """Hand the good bars of `entries` to the handler and commit its writes with the applied state, the
        dead letters, the XACK and the counters in one WATCHed MULTI/EXEC. The handler's exception, if any
        (nothing is then committed); None once committed."""
        decoded: list[tuple[_Entry, BarMessage | BadMessage]] = []
        for entry in entries:
            try:
                decoded.append((entry, decode_bar(entry.fields)))
            except BadMessage as exc:
                decoded.append((entry, exc))
        series = sorted({bar.series for _, bar in decoded if isinstance(bar, BarMessage)})
        fields = [f"{symbol} {interval}" for symbol, interval in series]
        applied_key = self.bus.applied_key(partition, self.group)
        stream_key = self._keys[partition]
        conflicts = 0
        while conflicts < _WATCH_ATTEMPTS:
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    state: dict[tuple[str, str], tuple[int, tuple[int, int], str]] = {}
                    if series and dead is None:
                        pipe.watch(applied_key)
                        for key, value in zip(series, pipe.hmget(applied_key, fields), strict=True):
                            if value:
                                ts_text, entry_id = value.split(" ")
                                state[key] = (int(ts_text), _id_key(entry_id), entry_id)
                    applied = {key: value[0] for key, value in state.items()}
                    plan = self._plan(decoded, state, dead)
                    pipe.multi()
                    if plan.good:
                        try:
                            self.handler(Batch(self.bus, self.group, partition, plan.good, pipe, applied))
                        except CONNECTION_ERRORS:
                            raise
                        except Exception as exc:
                            return exc
                    self._queue_settlement(pipe, partition, entries, plan)
                    pipe.execute()
                except redis.WatchError as exc:
                    if isinstance(exc.__context__, CONNECTION_ERRORS):
                        # redis-py turns a connection lost while watching into WatchError: whether EXEC ran is
                        # unknown, and the re-check below tells (applied entries come back as duplicates)
                        self.stats.reconnects += 1
                        log.warning(
                            "partition %d: connection lost in a commit (%r); re-checking what was applied",
                            partition,
                            exc.__context__,
                        )
                    else:
                        conflicts += 1
                        self.stats.watch_conflicts += 1
                        log.warning(
                            "partition %d: applied state changed under a commit; re-checking", partition
                        )
                    continue
            self._count(plan)
            return None
        raise PartitionContention(
            f"partition {partition} of group {self.group}: the applied state changed under {_WATCH_ATTEMPTS} "
            f"commits in a row; another live consumer owns this partition ({stream_key})"
        )

    def _queue_settlement(self, pipe: Pipeline, partition: int, entries: list[_Entry], plan: _Plan) -> None:
        if plan.applied:
            pipe.hset(self.bus.applied_key(partition, self.group), mapping=plan.applied)
        now_ms = str(int(time.time() * 1000))
        dead_key = self.bus.dead_key(partition, self.group)
        for entry, kind, reason in plan.dead:
            letter = {
                "kind": kind,
                "reason": reason,
                "message_id": entry.id,
                "partition": str(partition),
                "group": self.group,
                "consumer": self.name,
                "deliveries": str(entry.deliveries),
                "at_ms": now_ms,
            }
            letter.update({f"{ORIGINAL_PREFIX}{k}": v for k, v in entry.fields.items()})
            pipe.xadd(dead_key, letter, maxlen=self.bus.dead_maxlen, approximate=True)  # type: ignore[arg-type]
        pipe.xack(self._keys[partition], self.group, *[entry.id for entry in entries])
        stats_key = self.bus.stats_key(partition, self.group)
        counters = {
            "processed": len(plan.good),
            "duplicates": len(plan.duplicates),
            "dead_lettered": len(plan.dead),
        }
        for _, kind, _ in plan.dead:
            counters[f"dead_lettered:{kind}"] = counters.get(f"dead_lettered:{kind}", 0) + 1
        for name, value in counters.items():
            if value:
                pipe.hincrby(stats_key, name, value)

    def _count(self, plan: _Plan) -> None:
        self.stats.batches += 1
        self.stats.processed += len(plan.good)
        self.stats.duplicates += len(plan.duplicates)
        self.stats.dead_lettered += len(plan.dead)
        for entry, kind, reason in plan.dead:
            self.stats.dead_by_kind[kind] = self.stats.dead_by_kind.get(kind, 0) + 1
            log.warning("dead letter %s (%s, %d deliveries): %s", entry.id, kind, entry.deliveries, reason)
