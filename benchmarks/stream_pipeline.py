"""Benchmark the real-time pipeline end to end on this Redis; prints JSON.

Setup: a FINSTREAM_HOME with the packaged daily bars of 000300.SH, ^GSPC and ^IXIC (14,919 real bars),
validated, their features, Feast definitions on the Redis online store (db 13, a Feast project of its own),
and ridge return / direction champions plus the volatility task's winner trained by the Prefect training flow
(promoted by hand when the gates keep them challengers); or an existing one with `--home`.

For 1 and 2 consumer processes (`finstream stream`'s Supervisor: spawn, warm-up, models loaded; start-up is
not timed), on a fresh bus of `--partitions` partitions (9: the three symbols split 2 / 1 between two
consumers; with 16 all three hash to even partitions, i.e. to one consumer):

- `latency`: the first `--latency-bars` bars, merged in time order, published one XADD at a time at
  `--rate` bars/s while the consumers run; for each bar that the `enhanced` channel reports (the latest bar of
  each handled batch), the time from just before its XADD to the subscriber's receipt of the message, i.e.
  XADD -> XREADGROUP -> indicators, volatility, risk, online HSET, scoring -> EXEC -> PUBLISH -> subscriber:
  p50 / p99 / max in ms;
- `throughput`: the remaining bars published as a backlog (pipelined XADD) while the consumers run: bars / s
  from the first XADD to the last bar committed (the producer shares the cores), and the consumers' own
  per-stage cost per bar (µs, from their heartbeats).

`online_write`: the cost of writing one symbol's row to Feast's Redis online store: the stream's direct
writer (HSET of Feast's layout, one pipelined round trip) vs Feast's `write_to_online_store` (both views),
per row, for batches of 1 and 100 rows (median of `--repeats`).

Usage: .venv/bin/python benchmarks/stream_pipeline.py [--home DIR] [--rate 1000] [--latency-bars 3000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SYMBOLS = ["000300.SH", "^GSPC", "^IXIC"]
REDIS_URL = "redis://127.0.0.1:6379/13"
FAST = {
    "FINSTREAM_TRAIN__SYMBOLS": json.dumps(SYMBOLS),
    "FINSTREAM_TRAIN__FOLDS": "2",
    "FINSTREAM_TRAIN__TEST_YEARS": "3",
    "FINSTREAM_TRAIN__MIN_TRAIN_YEARS": "4",
    "FINSTREAM_TRAIN__TUNE_SAMPLES": "0",
    "FINSTREAM_TRAIN__WORKERS": "1",
    "FINSTREAM_TRAIN__VOLATILITY_FAMILIES": '["ridge"]',
}
log = logging.getLogger("benchmarks.stream_pipeline")


def build_home() -> None:
    """Packaged daily bars -> features -> Redis online store; ridge champions (and a volatility winner)."""
    from finstream.config import Settings
    from finstream.data_stages import features_stage, ingest_stage, materialize_stage, validate_stage
    from finstream.models.registry import CHAMPION, alias_version, promote
    from finstream.models.tracking import configure_mlflow
    from flows.training import training_flow

    settings = Settings()
    ingest_stage(settings, ",".join(SYMBOLS), "packaged")
    validate_stage(settings)
    features_stage(settings)
    materialize_stage(settings)
    training_flow(families=["ridge"], tasks=["regression", "classification", "volatility"])
    client = configure_mlflow(settings)
    for name in ("finstream-return", "finstream-direction", "finstream-volatility"):
        if alias_version(client, name, CHAMPION) is None:
            promote(client, name, 1, reason="stream_pipeline benchmark")


def _percentiles(ms: list[float]) -> dict[str, Any]:
    if not ms:
        return {"n": 0}
    p50, p99 = np.percentile(np.asarray(ms), [50, 99])
    return {
        "n": len(ms),
        "p50_ms": round(float(p50), 2),
        "p99_ms": round(float(p99), 2),
        "max_ms": round(max(ms), 2),
    }


class Subscriber:
    """Receives `enhanced` messages and stamps each with its arrival time."""

    def __init__(self, url: str, channel: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.received: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.05)
            if message is not None:
                self.received.append((time.time(), message["data"]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pubsub.close()
        self.client.close()


def _wait(bus: Any, group: str, total: int, timeout: float) -> float:
    """Poll until `total` entries are settled; the time.time() when they were."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = bus.counts(group).total
        if (counts["processed"] or 0) + (counts["dead_lettered"] or 0) >= total:
            return time.time()
        time.sleep(0.01)
    raise SystemExit(f"the pipeline did not settle {total} bars in {timeout} s: {bus.counts(group).total}")


def run_consumers(consumers: int, args: argparse.Namespace, bars: Any) -> dict[str, Any]:
    """One latency phase and one throughput phase with `consumers` consumer processes on a fresh bus."""
    import pandas as pd

    from finstream.channels import ENHANCED, channel_key, parse_message
    from finstream.config import Settings
    from stream.config import StreamConfig
    from stream.messages import bars_from_frame
    from stream.publish import Publisher
    from stream.runner import Supervisor

    settings = Settings()
    config = StreamConfig(partitions=args.partitions, block_ms=20, model_poll_s=0, metrics_s=0.5)
    bus = config.bus(settings, "1d")
    bus.destroy()
    client = redis.Redis.from_url(REDIS_URL)
    Publisher(settings.feast_project).destroy(client)
    client.delete(config.status_key(settings))
    supervisor = Supervisor(settings, config, ["1d"], consumers)
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    subscriber = Subscriber(REDIS_URL, channel_key(settings.feast_project, ENHANCED))
    try:
        deadline = time.monotonic() + 180
        while True:
            beats = [json.loads(v) for v in client.hgetall(config.status_key(settings)).values()]
            if sum(b["state"] == "running" for b in beats) == consumers:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{consumers} consumers did not start in 180 s: {beats}")
            time.sleep(0.2)
        ordered = bars.sort_values("ts", kind="mergesort", ignore_index=True)
        messages = bars_from_frame(ordered)
        first, rest = messages[: args.latency_bars], messages[args.latency_bars :]
        # latency: one XADD per bar at a fixed rate
        sent: dict[tuple[str, int], float] = {}
        started = time.perf_counter()
        for i, message in enumerate(first):
            due = started + i / args.rate
            while (now := time.perf_counter()) < due:
                time.sleep(min(due - now, 0.001))
            sent[(message.symbol, message.ts_ns)] = time.time()
            bus.publish([message])
        _wait(bus, config.group, len(first), 120)
        time.sleep(0.2)
        latencies = []
        received = list(subscriber.received)
        for arrived, raw in received:
            data = parse_message(raw).data
            key = (data.symbol, int(pd.Timestamp(data.bar_ts).value))
            if key in sent:
                latencies.append(1000 * (arrived - sent[key]))
        # throughput: the rest as a backlog
        t0 = time.time()
        bus.publish(rest)
        published = time.time()
        done = _wait(bus, config.group, len(messages), 300)
        time.sleep(config.heartbeat_s + 0.3)
        beats = [json.loads(v) for v in client.hgetall(config.status_key(settings)).values()]
        counts = bus.counts(config.group).total
    finally:
        subscriber.close()
        supervisor.stop()
        thread.join(60)
        bus.destroy()
        bus.close()
        client.close()
    stage_ns: dict[str, int] = {}
    stage_bars: dict[str, int] = {}
    for beat in beats:
        lane = beat["lanes"]["1d"]
        for stage, value in lane["stage_ns"].items():
            stage_ns[stage] = stage_ns.get(stage, 0) + value
            stage_bars[stage] = stage_bars.get(stage, 0) + lane["stage_bars"][stage]
    return {
        "consumers": consumers,
        "bars_per_consumer": {b["name"]: b["processed"] for b in beats},
        "latency": {
            "rate_bars_per_s": args.rate,
            "bars": len(first),
            "enhanced_messages": len(received),
            **_percentiles(latencies),
        },
        "throughput": {
            "bars": len(rest),
            "bars_per_s": round(len(rest) / (done - t0), 1),
            "publish_s": round(published - t0, 3),
            "drain_s": round(done - t0, 3),
        },
        "stage_us_per_bar": {s: round(stage_ns[s] / 1000 / stage_bars[s], 2) for s in stage_ns},
        "processed": counts["processed"],
        "dead_lettered": counts["dead_lettered"],
    }


def online_write(repeats: int) -> dict[str, Any]:
    """Direct HSET of Feast's Redis layout vs Feast's write_to_online_store, per row."""
    import pandas as pd

    from finstream import featurestore
    from finstream.config import Settings
    from stream.online import FeastOnlineWriter, OnlineRow, RedisOnlineWriter

    settings = Settings()
    store = featurestore.open_store(settings)
    direct = RedisOnlineWriter(settings, "1d", store)
    feast = FeastOnlineWriter(settings, "1d", store)
    frame = pd.read_parquet(settings.paths.features_for("1d"))
    last = frame.groupby("symbol").tail(1)
    names = direct.names
    base = [
        OnlineRow(
            r["symbol"],
            int(pd.Timestamp(r["event_timestamp"]).as_unit("ns").value),
            {n: float(r[n]) for n in names},
        )
        for _, r in last.iterrows()
    ]
    out: dict[str, Any] = {}
    for size in (1, 100):
        rows = [base[i % len(base)] for i in range(size)]
        for label, writer in (("direct_redis", direct), ("feast_write_to_online_store", feast)):
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                if writer is direct:
                    direct.write(rows)
                else:
                    feast.queue(None, rows)
                    feast.flush()
                times.append(time.perf_counter() - started)
            median = statistics.median(times)
            out[f"{label}_{size}_rows"] = {
                "ms_per_call": round(1000 * median, 3),
                "us_per_row": round(1e6 * median / size, 1),
            }
    direct.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--home", type=Path, help="an existing FINSTREAM_HOME built as described (else build one)"
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="latency phase: bars per second")
    parser.add_argument("--latency-bars", type=int, default=3000)
    parser.add_argument("--partitions", type=int, default=9)
    parser.add_argument("--consumers", default="1,2", help="consumer process counts to run, e.g. 1,2")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the built home (its path goes to stderr)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="finstream-stream-bench-"))
    os.chdir(workdir)  # no params.yaml here
    built = args.home is None
    for key in list(os.environ):
        if key.startswith("FINSTREAM_"):
            del os.environ[key]
    os.environ["FINSTREAM_REDIS_URL"] = REDIS_URL
    os.environ.update(FAST)
    build_s = 0.0
    if built:
        os.environ["FINSTREAM_HOME"] = str(workdir / "home")
        os.environ["FINSTREAM_FEAST_PROJECT"] = f"streambench{uuid.uuid4().hex[:10]}"
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Feast prints progress: keep stdout pure JSON
            build_home()
        build_s = time.perf_counter() - started
    else:
        os.environ["FINSTREAM_HOME"] = str(args.home.resolve())
        os.environ["FINSTREAM_FEAST_PROJECT"] = (args.home / "project").read_text().strip()
    from finstream.config import Settings
    from finstream.storage import BarTable

    settings = Settings()
    if built:
        (settings.paths.home / "project").write_text(settings.feast_project)
    bars = BarTable(settings.paths.validated_bars).read(symbols=SYMBOLS, intervals=["1d"])
    results = []
    try:
        with contextlib.redirect_stdout(sys.stderr):
            writes = online_write(args.repeats)
            for n in (int(c) for c in args.consumers.split(",")):
                results.append(run_consumers(n, args, bars))
    finally:
        if built and not args.keep:
            from finstream import featurestore

            with contextlib.suppress(Exception):
                featurestore.open_store(settings).teardown()  # the Feast rows of this run's project
            client = redis.Redis.from_url(REDIS_URL)
            leftover = list(client.scan_iter(match=f"finstream:{settings.feast_project}:*", count=1000))
            if leftover:
                client.delete(*leftover)
            client.close()
            shutil.rmtree(workdir, ignore_errors=True)
        elif built:
            print(f"home kept at {settings.paths.home}", file=sys.stderr)
    print(
        json.dumps(
            {
                "bars": len(bars),
                "series": SYMBOLS,
                "partitions": args.partitions,
                "build_s": round(build_s, 1),
                "online_write": writes,
                "runs": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
