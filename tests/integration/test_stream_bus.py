"""The bar bus against the real Redis at 127.0.0.1:6379, with real bars (AAPL 1m and 1h, ES=F 1m).

Consumer processes (a small script run with the venv's interpreter) apply every bar exactly once, also when
one is SIGKILLed inside its handler and a replacement claims what it left pending; bad, duplicate and
out-of-order bars end in the dead letters with their reasons; a bar whose handler keeps failing is
dead-lettered after `max_deliveries`; trimmed pending entries are counted and acked; a consumer whose
connections are killed reconnects without losing or repeating work. Each test has its own key prefix and
deletes its keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import redis
from redis.crc import key_slot
from tests_support import service_unavailable

from finstream.config import Settings
from finstream.errors import ConfigError
from finstream.sources.packaged import PackagedSource
from finstream.symbols import parse_symbol
from stream.bus import Batch, Bus, Consumer, assign_partitions, partition_of
from stream.messages import BadMessage, bars_from_frame

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"
GROUP = "it"
PARTITIONS = 8  # AAPL -> 4 and ES=F -> 1: consumer 0 (even partitions) gets AAPL, consumer 1 ES=F
AAPL_PARTITION = 4

CHILD = """
import json, logging, sys, time
from stream.bus import Bus, Consumer

url, prefix, partitions, name, owned, stall_ts = sys.argv[1:7]
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
bus = Bus(url, prefix=prefix, partitions=int(partitions))

def handler(batch):
    for m in batch.messages:
        if m.bar.ts_ns == int(stall_ts):  # read, not acked: announce it and hang until killed
            bus.client.set(batch.key("stalled"), m.id)
            time.sleep(600)
        batch.pipeline.hincrby(batch.key("effects"), f"{m.bar.symbol} {m.bar.interval} {m.bar.ts_ns}", 1)

partitions = [int(p) for p in owned.split(",")]
consumer = Consumer(bus, "it", name, partitions, handler, batch_size=50, block_ms=100, min_idle_ms=1000)
print(json.dumps(consumer.run(idle_exit_s=1.5).as_dict()))
"""


@pytest.fixture(scope="module")
def real_bars() -> pd.DataFrame:
    """AAPL 1m, AAPL 1h and ES=F 1m from the packaged real history, each series in ts order."""
    source = PackagedSource(Settings())
    frames = [
        source.fetch(parse_symbol(symbol), None, None, interval)
        for symbol, interval in (("AAPL", "1m"), ("AAPL", "1h"), ("ES=F", "1m"))
    ]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture()
def bus() -> Iterator[Bus]:
    """A bus under a prefix of its own; every key it made is deleted afterwards."""
    prefix = f"finstream-test-{uuid.uuid4().hex[:12]}"
    bus = Bus(REDIS_URL, prefix=prefix, partitions=PARTITIONS)
    try:
        bus.client.ping()
    except redis.RedisError as exc:
        service_unavailable(f"Redis at {REDIS_URL} does not answer PING ({exc}); start redis-server")
    try:
        yield bus
    finally:
        bus.destroy()
        assert list(bus.client.scan_iter(match=f"{prefix}:*")) == []
        bus.close()


def _keys(frame: pd.DataFrame) -> set[str]:
    return {f"{b.symbol} {b.interval} {b.ts_ns}" for b in bars_from_frame(frame)}


def _effects(bus: Bus) -> Counter[str]:
    """How many times each (symbol, interval, ts) was applied, over all partitions."""
    out: Counter[str] = Counter()
    for partition in range(bus.partitions):
        out.update(
            {k: int(v) for k, v in bus.client.hgetall(bus.partition_key(partition, "effects")).items()}
        )
    return out


def _count_effects(batch: Batch) -> None:
    """The test handler's effect: count each application, in the consumer's transaction."""
    for m in batch.messages:
        batch.pipeline.hincrby(batch.key("effects"), f"{m.bar.symbol} {m.bar.interval} {m.bar.ts_ns}", 1)


def _start(bus: Bus, name: str, partitions: list[int], stall_ts: int = 0) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    args = [REDIS_URL, bus.prefix, str(bus.partitions), name, ",".join(map(str, partitions)), str(stall_ts)]
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> dict[str, int]:
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _drain(bus: Bus, **options: object) -> Consumer:
    """Run an in-process consumer of every partition until nothing is left."""
    settings: dict[str, object] = {"block_ms": 50, "min_idle_ms": 200, "retry_backoff_s": 0.01, **options}
    handler = settings.pop("handler", _count_effects)
    consumer = Consumer(bus, GROUP, "solo", range(bus.partitions), handler, **settings)  # type: ignore[arg-type]
    consumer.run(idle_exit_s=0.5)
    consumer.close()
    return consumer


def _assert_reconciled(bus: Bus, processed: int, dead: int = 0, trimmed: int = 0) -> None:
    counts = bus.counts(GROUP).total
    assert counts["in"] == processed + dead + trimmed
    assert (counts["processed"], counts["dead_lettered"], counts["trimmed"]) == (processed, dead, trimmed)
    assert (counts["pending"], counts["lag"]) == (0, 0)


def test_keys_of_a_partition_share_one_cluster_slot(bus: Bus) -> None:
    assert bus.stream_key(3) == f"{bus.prefix}:{{bars.3}}"
    keys = [bus.stream_key(3), bus.dead_key(3, GROUP), bus.applied_key(3, GROUP), bus.stats_key(3, GROUP)]
    assert {key_slot(k.encode()) for k in keys} == {key_slot(b"{bars.3}")}
    assert len({key_slot(bus.stream_key(p).encode()) for p in range(PARTITIONS)}) == PARTITIONS
    assert [partition_of(s, PARTITIONS) for s in ("AAPL", "ES=F")] == [AAPL_PARTITION, 1]
    owned = [assign_partitions(PARTITIONS, 3, i) for i in range(3)]
    assert sorted(p for share in owned for p in share) == list(range(PARTITIONS))


def test_groups_are_created_idempotently_and_the_partition_count_is_pinned(bus: Bus) -> None:
    bus.ensure_group(GROUP)
    bus.ensure_group(GROUP)
    assert [g["name"] for g in bus.client.xinfo_groups(bus.stream_key(0))] == [GROUP]
    other = Bus(REDIS_URL, prefix=bus.prefix, partitions=PARTITIONS * 2)
    with pytest.raises(ConfigError, match="created with 8 partitions, not 16"):
        other.ensure_group(GROUP)
    other.close()


def test_a_bad_frame_is_refused_before_anything_is_published(bus: Bus, real_bars: pd.DataFrame) -> None:
    frame = real_bars.head(10).copy()
    frame.loc[5, "high"] = frame.loc[5, "low"] - 1.0
    with pytest.raises(BadMessage, match="row 5"):
        bus.publish(frame)
    assert bus.counts(GROUP).total["in"] == 0


def test_two_consumer_processes_apply_every_bar_exactly_once(bus: Bus, real_bars: pd.DataFrame) -> None:
    ids = bus.publish(real_bars)
    assert len(ids) == len(real_bars) == 2382 + 3479 + 2264
    procs = [_start(bus, f"c{i}", assign_partitions(PARTITIONS, 2, i)) for i in range(2)]
    stats = [_finish(p) for p in procs]
    assert _effects(bus) == dict.fromkeys(_keys(real_bars), 1)
    assert [s["processed"] for s in stats] == [2382 + 3479, 2264]  # AAPL's partition, ES=F's partition
    assert all(s["dead_lettered"] == s["duplicates"] == s["claimed"] == 0 for s in stats)
    _assert_reconciled(bus, processed=len(real_bars))


def test_a_consumer_killed_inside_its_handler_is_replaced_and_nothing_is_lost_or_repeated(
    bus: Bus, real_bars: pd.DataFrame
) -> None:
    bus.publish(real_bars)
    stall = real_bars[real_bars["symbol"].eq("AAPL") & real_bars["interval"].eq("1m")].iloc[1000]
    victim = _start(bus, "c0", assign_partitions(PARTITIONS, 2, 0), stall_ts=stall["ts"].value)
    other = _start(bus, "c1", assign_partitions(PARTITIONS, 2, 1))
    marker = bus.partition_key(AAPL_PARTITION, "stalled")
    deadline = time.monotonic() + 60
    while not bus.client.get(marker):
        assert victim.poll() is None, victim.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the consumer never reached the stalling bar"
        time.sleep(0.05)
    applied_before = sum(_effects(bus).values())
    assert 0 < applied_before < len(real_bars)  # mid-stream: earlier batches are committed
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=10)
    pending = bus.client.xpending_range(bus.stream_key(AAPL_PARTITION), GROUP, "-", "+", 1000)
    assert pending and {p["consumer"] for p in pending} == {"c0"}  # read, never acked
    assert bus.client.get(marker) in {p["message_id"] for p in pending}

    replacement = _start(bus, "c0-replacement", assign_partitions(PARTITIONS, 2, 0))
    stats = _finish(replacement)
    _finish(other)
    assert stats["claimed"] == len(pending)
    assert _effects(bus) == dict.fromkeys(_keys(real_bars), 1)  # exactly once, the stalled bar included
    _assert_reconciled(bus, processed=len(real_bars))
    assert bus.dead_letters(GROUP) == []


def test_bad_duplicate_and_out_of_order_bars_are_dead_lettered_with_reasons(
    bus: Bus, real_bars: pd.DataFrame
) -> None:
    aapl = real_bars[real_bars["symbol"].eq("AAPL") & real_bars["interval"].eq("1m")].head(20)
    good = bars_from_frame(aapl)
    bus.publish(good[:10])
    stream = bus.stream_key(AAPL_PARTITION)
    last, older = good[9].to_fields(), good[4].to_fields()
    bad = {
        "missing field": (
            {k: v for k, v in last.items() if k != "close"},
            "bad_message",
            "missing field(s) close",
        ),
        "non-numeric price": ({**last, "open": "n/a"}, "bad_message", "open is not a number: 'n/a'"),
        "non-finite price": ({**last, "high": "inf"}, "bad_message", "high is not finite"),
        "negative volume": ({**last, "volume": "-300.0"}, "bad_message", "negative volume -300.0"),
        "inverted range": ({**last, "high": last["low"], "low": last["high"]}, "bad_message", "is below low"),
        "unknown symbol": (
            {**last, "symbol": "NO SUCH THING"},
            "bad_message",
            "unknown symbol 'NO SUCH THING'",
        ),
        "unknown interval": ({**last, "interval": "7m"}, "bad_message", "unknown interval '7m'"),
        "ISO ts": ({**last, "ts": good[9].ts.isoformat()}, "bad_message", "integer nanoseconds"),
        "duplicate ts": (last, "out_of_order", "duplicate or out-of-order bar"),
        "out-of-order ts": (older, "out_of_order", "is not after 2026-07-29T13:40:00+00:00"),
    }
    sent = {bus.client.xadd(stream, fields): label for label, (fields, _, _) in bad.items()}
    bus.publish(good[10:])

    consumer = _drain(bus)
    letters = {d.message_id: d for d in bus.dead_letters(GROUP)}
    assert set(letters) == set(sent)
    for message_id, label in sent.items():
        fields, kind, reason = bad[label]
        assert (letters[message_id].kind, letters[message_id].fields) == (kind, fields), label
        assert reason in letters[message_id].reason, (label, letters[message_id].reason)
        assert letters[message_id].deliveries == 1 and letters[message_id].partition == AAPL_PARTITION
    assert _effects(bus) == dict.fromkeys(_keys(aapl), 1)
    assert consumer.stats.dead_by_kind == {"bad_message": 8, "out_of_order": 2}
    _assert_reconciled(bus, processed=20, dead=len(bad))
    assert bus.counts(GROUP).partitions[AAPL_PARTITION]["dead_lettered:out_of_order"] == 2


def test_a_bar_whose_handler_always_fails_is_dead_lettered_after_max_deliveries(
    bus: Bus, real_bars: pd.DataFrame
) -> None:
    aapl = real_bars[real_bars["symbol"].eq("AAPL") & real_bars["interval"].eq("1m")].head(8)
    poison = int(aapl["ts"].iloc[2].value)
    seen: list[int] = []

    def handler(batch: Batch) -> None:
        for m in batch.messages:
            if m.bar.ts_ns == poison:
                seen.append(m.deliveries)
                raise RuntimeError("poison")
        _count_effects(batch)

    bus.publish(aapl)
    consumer = _drain(bus, handler=handler, max_deliveries=3)
    assert seen == [1, 1, 2, 3]  # the batch, then the bar alone on deliveries 1, 2, 3
    [letter] = bus.dead_letters(GROUP)
    assert (letter.kind, letter.deliveries, letter.fields["ts"]) == ("max_deliveries", 3, str(poison))
    assert letter.reason == "handler failed on delivery 3 of 3: RuntimeError('poison')"
    assert _effects(bus) == dict.fromkeys(_keys(aapl) - {f"AAPL 1m {poison}"}, 1)  # the series went on
    assert consumer.stats.handler_errors == 3
    _assert_reconciled(bus, processed=7, dead=1)


def test_a_bar_that_keeps_crashing_its_consumers_is_dead_lettered_when_claimed(
    bus: Bus, real_bars: pd.DataFrame
) -> None:
    aapl = real_bars[real_bars["symbol"].eq("AAPL") & real_bars["interval"].eq("1m")].head(3)
    ids = bus.publish(aapl)
    bus.ensure_group(GROUP)
    stream = bus.stream_key(AAPL_PARTITION)
    bus.client.xreadgroup(GROUP, "crashed", {stream: ">"}, count=10)
    bus.client.xclaim(stream, GROUP, "crashed", 0, [ids[1]], retrycount=3)  # three consumers died on it
    time.sleep(0.3)
    handled: list[str] = []

    def handler(batch: Batch) -> None:
        handled.extend(m.id for m in batch.messages)
        _count_effects(batch)

    consumer = _drain(bus, handler=handler, max_deliveries=3)
    assert handled == [ids[0], ids[2]] and consumer.stats.claimed == 3
    [letter] = bus.dead_letters(GROUP)
    assert (letter.message_id, letter.kind, letter.deliveries) == (ids[1], "max_deliveries", 4)
    assert "crashed or stalled" in letter.reason
    _assert_reconciled(bus, processed=2, dead=1)


def test_trimmed_pending_entries_are_counted_and_acked(real_bars: pd.DataFrame) -> None:
    bus = Bus(REDIS_URL, prefix=f"finstream-test-{uuid.uuid4().hex[:12]}", partitions=PARTITIONS, maxlen=400)
    try:
        try:
            bus.client.ping()
        except redis.RedisError as exc:
            service_unavailable(f"Redis at {REDIS_URL} does not answer PING ({exc}); start redis-server")
        aapl = real_bars[real_bars["symbol"].eq("AAPL") & real_bars["interval"].eq("1m")].head(600)
        stream = bus.stream_key(AAPL_PARTITION)
        bus.ensure_group(GROUP)
        bus.publish(aapl.head(300))
        assert len(bus.client.xreadgroup(GROUP, "crashed", {stream: ">"}, count=1000)[0][1]) == 300
        bus.publish(aapl.tail(300))  # MAXLEN ~ 400 trims the oldest entries: all of them pending
        trimmed = 600 - bus.client.xlen(stream)
        assert 0 < trimmed <= 200
        consumer = _drain(bus)
        assert consumer.stats.trimmed == trimmed
        assert _effects(bus) == dict.fromkeys(sorted(_keys(aapl))[trimmed:], 1)  # the newest 600 - trimmed
        _assert_reconciled(bus, processed=600 - trimmed, trimmed=trimmed)
    finally:
        bus.destroy()
        bus.close()


def test_a_consumer_reconnects_after_its_connections_are_killed(bus: Bus, real_bars: pd.DataFrame) -> None:
    def slow_handler(batch: Batch) -> None:
        time.sleep(0.002)
        _count_effects(batch)

    bus.publish(real_bars)
    consumer = Consumer(
        bus, GROUP, "flaky", range(PARTITIONS), slow_handler, batch_size=20, block_ms=50, min_idle_ms=60_000
    )
    done = threading.Event()
    worker = threading.Thread(target=lambda: (consumer.run(idle_exit_s=0.5), done.set()), daemon=True)
    worker.start()
    killed = 0
    try:
        while killed < 3 and not done.is_set():
            time.sleep(0.15)
            for client in bus.client.client_list():
                if client["name"] == consumer.client_name:
                    with contextlib.suppress(redis.ResponseError):  # already gone
                        killed += int(bus.client.client_kill_filter(_id=client["id"]))
        worker.join(timeout=60)
    finally:
        consumer.stop()
        worker.join(timeout=10)
        consumer.close()
    assert killed >= 2 and consumer.stats.reconnects >= 1, (
        consumer.stats
    )  # a kill between commands heals unseen
    assert _effects(bus) == dict.fromkeys(_keys(real_bars), 1)
    _assert_reconciled(bus, processed=len(real_bars))


def test_entries_read_but_never_seen_are_handled_when_the_consumer_comes_back(
    bus: Bus, real_bars: pd.DataFrame
) -> None:
    """An XREADGROUP whose reply was lost leaves entries in the reader's PEL: the consumer of that name takes
    them back at once (no `min_idle_ms` wait for its own entries), in order, before reading new ones."""
    es = real_bars[real_bars["symbol"].eq("ES=F")].head(50)
    bus.publish(es.head(30))
    bus.ensure_group(GROUP)
    bus.client.xreadgroup(GROUP, "solo", {bus.stream_key(1): ">"}, count=20)  # the lost reply
    bus.publish(es.tail(20))
    order: list[int] = []

    def handler(batch: Batch) -> None:
        order.extend(m.bar.ts_ns for m in batch.messages)
        _count_effects(batch)

    started = time.monotonic()
    consumer = _drain(bus, handler=handler, min_idle_ms=60_000)
    assert time.monotonic() - started < 10
    assert order == sorted(order) and len(order) == 50
    assert (consumer.stats.claimed, consumer.stats.processed) == (0, 50)
    _assert_reconciled(bus, processed=50)
