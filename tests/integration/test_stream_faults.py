"""Faults of the real-time pipeline against a real Redis: a consumer process killed mid-stream, the whole
pipeline restarted mid-replay, Redis itself killed and restarted mid-stream.

The Redis is a redis-server of the test's own (a free port, a temporary data folder, AOF with fsync on every
write), so it can be killed with SIGKILL and started again on the same port with the same data; the Feast
online store lives on it too. The home is set up as in test_stream_pipeline.py: AAPL 1-hour bars and ES=F
1-minute bars (from real trade ticks) ingested, validated, turned into features and materialized; ridge
return, direction and volatility champions trained by the Prefect training flow on AAPL 1h.

Consumers are processes running `stream.runner.worker_main` (the entry point the Supervisor, and so
`finstream stream`, spawns), one bar per batch, so that every bar has its own `enhanced` message (and AAPL's
its own `ai-predictions` message). Each test replays the stored tail of both series onto fresh buses and
counts the outputs by (symbol, interval, bar ts) in the channels' history streams: every bar exactly once,
none missing, none twice; the bus counts reconcile (in = processed + dead-lettered), and every `enhanced`
feature row equals the batch feature row (parity), the online rows are the last bars' batch rows, the
alerts are the batch alerts of the replayed bars.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest
import redis
from stream_support import (
    ConsumerProcesses,
    PrivateRedis,
    bar_key,
    batch_features,
    history_after,
    last_id,
    once_each,
    same,
    train_and_promote,
    wait_drained,
    wait_processed,
)
from tests_support import isolate_env

from finstream.channels import AI_PREDICTIONS, ENHANCED, RISK_ALERTS, history_key
from finstream.config import Settings
from finstream.data_stages import features_stage, ingest_stage, materialize_stage, validate_stage
from finstream.storage import BarTable

pytestmark = pytest.mark.integration

PARTITIONS = 8  # AAPL -> partition 4 (consumer c0 of 2), ES=F -> partition 1 (c1)
HEAD, REST = 60, 30  # bars per series published before the fault, and after it
SERIES = (("AAPL", "1h"), ("ES=F", "1m"))
INTERVALS = [i for _, i in SERIES]
TRAIN = {
    "FINSTREAM_TRAIN__INTERVAL": "1h",
    "FINSTREAM_TRAIN__SYMBOLS": '["AAPL"]',
    "FINSTREAM_TRAIN__TEST_YEARS": "0.5",
    "FINSTREAM_TRAIN__MIN_TRAIN_YEARS": "1",
    "FINSTREAM_TRAIN__FOLDS": "2",
    "FINSTREAM_TRAIN__TUNE_SAMPLES": "0",
    "FINSTREAM_TRAIN__WORKERS": "1",
    "FINSTREAM_TRAIN__VOLATILITY_FAMILIES": '["ridge"]',
}
BAR_CHANNELS = (ENHANCED, AI_PREDICTIONS, RISK_ALERTS)


@dataclass
class Home:
    settings: Settings
    redis: PrivateRedis
    bars: pd.DataFrame  # the replayed tail of each series (stored validated bars), ts order per series


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Iterator[Home]:
    root = tmp_path_factory.mktemp("stream-faults")
    data = root / "redis"
    data.mkdir()
    server = PrivateRedis(data)
    server.start()
    project = f"faults{uuid.uuid4().hex[:10]}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            isolate_env(
                mp,
                root,
                FINSTREAM_OFFLINE="1",
                FINSTREAM_REDIS_URL=server.url,
                FINSTREAM_FEAST_PROJECT=project,
                **TRAIN,
            )
            settings = Settings()
            for symbol, interval in SERIES:
                ingest_stage(settings, symbol, "packaged", interval=interval)
            validate_stage(settings)
            features_stage(settings)
            materialize_stage(settings)
            train_and_promote(settings)
            from stream.replay import load_history

            bars = load_history(settings, list(SERIES), "stored", last=HEAD + REST)
            yield Home(settings, server, bars)
    finally:
        server.stop()


@dataclass
class Run:
    """One test's pipeline: fresh buses, its consumers, and where the channels' histories stood before."""

    home: Home
    config: Any
    buses: dict[str, Any]
    consumers: ConsumerProcesses
    marks: dict[str, str]
    client: redis.Redis

    @property
    def group(self) -> str:
        return str(self.config.group)

    def head(self) -> pd.DataFrame:
        return self.home.bars.groupby("symbol", group_keys=False).head(HEAD)

    def rest(self) -> pd.DataFrame:
        return self.home.bars.groupby("symbol", group_keys=False).tail(REST)

    def publish(self, bars: pd.DataFrame) -> None:
        from stream.replay import Replayer

        report = Replayer(self.buses).run(bars)  # as fast as Redis takes them: a backlog
        assert report.bars == len(bars)


@pytest.fixture
def run(home: Home) -> Iterator[Run]:
    from stream.config import StreamConfig

    settings = home.settings
    config = StreamConfig(
        partitions=PARTITIONS,
        group="faults",
        batch_size=1,  # one bar per commit: every bar has its own enhanced / ai-predictions message
        block_ms=50,
        min_idle_ms=5000,
        heartbeat_s=0.2,
        model_poll_s=0,
    )
    buses = {i: config.bus(settings, i) for i in INTERVALS}
    client = redis.Redis.from_url(home.redis.url, decode_responses=True)
    for bus in buses.values():
        bus.destroy()
    client.delete(config.status_key(settings))
    marks = {c: last_id(client, history_key(settings.feast_project, c)) for c in BAR_CHANNELS}
    consumers = ConsumerProcesses(settings, config, INTERVALS, 2)
    try:
        yield Run(home, config, buses, consumers, marks, client)
    finally:
        consumers.close()
        for bus in buses.values():
            bus.close()
        client.close()


# the outputs --------------------------------------------------------------------------------------------
def check_outputs(run: Run) -> dict[str, dict[str, Any]]:
    """Drained, and every replayed bar in the outputs exactly once, equal to the batch rows."""
    settings, bars, group = run.home.settings, run.home.bars, run.group
    drained = wait_drained(run.buses, group)
    for interval, totals in drained.items():
        expected = int((bars["interval"] == interval).sum())
        assert totals["in"] == expected == totals["processed"] + totals["dead_lettered"], (interval, totals)
        assert (totals["dead_lettered"], totals["trimmed"], totals["duplicates"]) == (0, 0, 0), totals
        assert run.buses[interval].dead_letters(group) == []

    project = settings.feast_project
    keys = [bar_key(r.symbol, r.interval, r.ts) for r in bars.itertuples()]
    enhanced = history_after(run.client, project, ENHANCED, run.marks[ENHANCED])
    got = [bar_key(m.data.symbol, m.data.interval, m.data.bar_ts) for m in enhanced]
    assert once_each(got, keys) == {"twice": {}, "missing": [], "unexpected": []}
    predictions = history_after(run.client, project, AI_PREDICTIONS, run.marks[AI_PREDICTIONS])
    got = [bar_key(m.data.symbol, m.data.interval, m.data.bar_ts) for m in predictions]
    scored = [k for k in keys if k[:2] == ("AAPL", "1h")]  # the champions are AAPL 1h's
    assert once_each(got, scored) == {"twice": {}, "missing": [], "unexpected": []}

    # parity: every row equals its batch feature row (the bars after a fault included)
    tables = {i: batch_features(settings, i) for i in INTERVALS}
    for m in enhanced:
        row = tables[m.data.interval].loc[(m.data.symbol, int(pd.Timestamp(m.data.bar_ts).value))]
        assert m.data.feature_row
        differ = [k for k, v in m.data.features.items() if not same(v, row[k])]
        assert differ == [], (m.data.symbol, m.data.bar_ts, differ)
        assert m.data.bar.close == row["close"]

    # alerts: the batch alerts of the replayed bars, each once
    from finstream.risk.alerts import evaluate_frame
    from finstream.risk.measures import risk_frame

    alerts = history_after(run.client, project, RISK_ALERTS, run.marks[RISK_ALERTS])
    stored = BarTable(settings.paths.validated_bars)
    for symbol, interval in SERIES:
        series = stored.read(symbols=[symbol], intervals=[interval])
        frame = risk_frame(series.set_index("ts")["close"], settings.risk)
        replayed = set(bars.loc[bars["symbol"] == symbol, "ts"])
        expected_alerts = Counter(
            (a.rule, pd.Timestamp(a.bar_time)) for a in evaluate_frame(frame, settings.risk, symbol)
            if a.bar_time in replayed
        )  # fmt: skip
        got_alerts = Counter(
            (m.data.rule, pd.Timestamp(m.data.bar_time))
            for m in alerts
            if (m.data.symbol, m.data.interval) == (symbol, interval)
        )
        assert got_alerts == expected_alerts, symbol

    # the online store: one row per symbol, the last replayed bar's batch row
    from finstream import featurestore

    store = featurestore.open_store(settings)
    raw = redis.Redis.from_url(run.home.redis.url)
    online_keys = list(raw.scan_iter(match=f"*{project}".encode(), count=1000))  # Feast: entity key + project
    raw.close()
    assert len(online_keys) == len(SERIES)
    for symbol, interval in SERIES:
        rows = tables[interval].loc[symbol]
        assert rows.index[-1] == bars.loc[bars["symbol"] == symbol, "ts"].iloc[-1].value  # the replay's last
        last = rows.iloc[-1]
        online = featurestore.online_features(store, [symbol], interval=interval).iloc[0]
        names = [c for c in online.index if c != "symbol"]
        assert [n for n in names if not same(online[n], last[n])] == [], symbol
    return drained


def kill_holding_pending(run: Run, proc: Any, interval: str, symbol: str, timeout: float = 30.0) -> int:
    """SIGKILL `proc` at a moment it holds a bar it read and has not acknowledged (frozen with SIGSTOP
    while its pending list is looked at); the number of such bars."""
    bus = run.buses[interval]
    key = bus.stream_key(bus.partition_of(symbol))
    name = f"c{proc.index}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(0.02)  # let Redis run what the process had sent (an EXEC on its way)
        pending = bus.client.xpending_range(key, run.group, "-", "+", 100, consumername=name)
        if pending:
            run.consumers.sigkill(proc)
            client_name = f"finstream-consumer.{run.group}.{name}"
            while any(c.get("name") == client_name for c in bus.client.client_list()):
                assert time.monotonic() < deadline, "Redis still lists the killed consumer's connection"
                time.sleep(0.01)  # until Redis has closed its connection (and run all it had sent)
            return len(pending)
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.005)
    pytest.fail(f"{name} never held an unacknowledged bar of {symbol} in {timeout} s")


# the faults ---------------------------------------------------------------------------------------------
def test_a_consumer_killed_mid_stream_is_replaced_and_every_bar_counts_once(run: Run) -> None:
    consumers = run.consumers
    c0, c1 = consumers.start(0), consumers.start(1)
    consumers.wait_up([c0, c1])
    run.publish(run.head())
    wait_processed(run.buses["1h"], run.group, 10)
    held = kill_holding_pending(run, c0, "1h", "AAPL")
    at_kill = run.buses["1h"].counts(run.group).total
    assert held == 1  # one bar per batch: the bar it was handling
    assert 10 <= at_kill["processed"] < HEAD and at_kill["pending"] == 1, at_kill  # mid-stream
    # the other consumer is not held up by the dead one
    wait_processed(run.buses["1m"], run.group, HEAD)
    assert run.buses["1h"].counts(run.group).total["processed"] == at_kill["processed"]
    # a new consumer takes c0's place (what the Supervisor does), settles the bar left pending, goes on
    replacement = consumers.start(0)
    consumers.wait_up([replacement])
    run.publish(run.rest())
    check_outputs(run)
    beat = consumers.heartbeat(0)
    assert beat is not None and beat["pid"] == replacement.pid
    assert beat["lanes"]["1h"]["consumer"]["processed"] == HEAD + REST - at_kill["processed"]
    assert beat["handler_errors"] == 0 and c1.is_alive()


def test_a_pipeline_restarted_mid_replay_continues_with_the_batch_features(run: Run) -> None:
    consumers = run.consumers
    first = [consumers.start(0), consumers.start(1)]
    consumers.wait_up(first)
    run.publish(run.head())
    # mid-replay: freeze each consumer (c0 has AAPL 1h, c1 ES=F 1m) once it has done a few bars, then stop
    # them both (SIGTERM)
    deadline = time.monotonic() + 60
    running = dict(zip(INTERVALS, first, strict=True))
    while running:
        for interval, proc in list(running.items()):
            if (run.buses[interval].counts(run.group).total["processed"] or 0) >= 5:
                os.kill(proc.pid, signal.SIGSTOP)
                del running[interval]
        assert time.monotonic() < deadline, f"the consumers did not consume: {list(running)}"
        time.sleep(0.002)
    frozen = {i: run.buses[i].counts(run.group).total for i in INTERVALS}
    for proc in first:
        proc.terminate()
        os.kill(proc.pid, signal.SIGCONT)
    consumers.stop(first)
    assert all(p.exitcode == 0 for p in first), [p.exitcode for p in first]  # a clean stop
    stopped = {i: run.buses[i].counts(run.group).total for i in INTERVALS}
    for interval in INTERVALS:
        assert 5 <= frozen[interval]["processed"] < HEAD, frozen  # mid-replay
        assert stopped[interval]["pending"] == 0, stopped  # a stopped consumer finished its batch
    # a new pipeline: both consumers warm up from the stored bars and go on from where the group stopped
    second = [consumers.start(0), consumers.start(1)]
    consumers.wait_up(second)
    run.publish(run.rest())
    check_outputs(run)  # parity over every bar, those handled after the restart included
    beats = {i: consumers.heartbeat(i) for i in (0, 1)}
    assert [b["pid"] for b in beats.values()] == [p.pid for p in second]
    after = {"1h": beats[0]["lanes"]["1h"], "1m": beats[1]["lanes"]["1m"]}
    for interval in INTERVALS:
        assert after[interval]["consumer"]["processed"] == HEAD + REST - stopped[interval]["processed"]
        assert after[interval]["warmed"] >= 1


def test_redis_restarted_mid_stream_loses_nothing_acknowledged(run: Run) -> None:
    consumers, server = run.consumers, run.home.redis
    consumers.count = 1  # one consumer process owns every partition (both series)
    proc = consumers.start(0)
    consumers.wait_up([proc])
    run.publish(run.head())
    wait_processed(run.buses["1h"], run.group, 10)
    # what Redis acknowledged before the crash: the group's counters, applied state and published messages
    project = run.home.settings.feast_project
    acked = {
        "stats": {
            i: {p: bus.client.hgetall(bus.stats_key(p, run.group)) for p in range(PARTITIONS)}
            for i, bus in run.buses.items()
        },
        "applied": {
            i: {p: bus.client.hgetall(bus.applied_key(p, run.group)) for p in range(PARTITIONS)}
            for i, bus in run.buses.items()
        },
        "history": {
            c: run.client.xrange(history_key(project, c), min=f"({run.marks[c]}") for c in BAR_CHANNELS
        },
    }
    server.kill()
    server.start()
    # everything acknowledged before the kill is still there, unchanged where it cannot have moved on
    for channel, entries in acked["history"].items():
        now = run.client.xrange(history_key(project, channel), min=f"({run.marks[channel]}")
        assert now[: len(entries)] == entries, channel
    for interval, bus in run.buses.items():
        for partition in range(PARTITIONS):
            before = acked["stats"][interval][partition]
            now = bus.client.hgetall(bus.stats_key(partition, run.group))
            assert all(int(now.get(k, 0)) >= int(v) for k, v in before.items()), (before, now)
            applied = bus.client.hgetall(bus.applied_key(partition, run.group))
            assert set(applied) >= set(acked["applied"][interval][partition])
            for series, value in acked["applied"][interval][partition].items():
                assert int(applied[series].split()[0]) >= int(value.split()[0])
    assert sum(len(e) for e in acked["history"].values()) >= 10
    # the consumers (the same processes) reconnect and finish the backlog, then take new bars
    wait_drained(run.buses, run.group)
    run.publish(run.rest())
    check_outputs(run)
    assert proc.is_alive()
    # the consumer committed each bar once: its own count of commits equals the group's committed count
    # (an acknowledged commit lost by Redis would have been handled, and counted, again)
    deadline = time.monotonic() + 10
    while True:
        beat = consumers.heartbeat(0)
        if (beat is not None and beat["processed"] >= 2 * (HEAD + REST)) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert beat is not None and beat["pid"] == proc.pid
    assert beat["processed"] == 2 * (HEAD + REST) and beat["dead_lettered"] == 0, beat
    assert beat["reconnects"] >= 1 and beat["handler_errors"] == 0, beat
