"""Benchmark the bar bus (stream.bus) on this Redis from Python; prints JSON.

Data: every packaged real series (000300.SH, ^GSPC, ^IXIC daily; AAPL 1m and 1h; ES=F 1m), 23,044 bars.

- `raw_xadd`: XADD of those bars' wire fields from one redis-py client, pipelined in batches of 1 (no
  pipeline), 10, 100 and 1,000: messages/s;
- `raw_xreadgroup_xack`: XREADGROUP COUNT n (no BLOCK) followed by one XACK of the n IDs, n = 10, 100,
  1,000, draining a stream of those bars: messages/s;
- `codec_us`: `bars_from_frame` (check + build) and `decode_bar` per bar;
- `bus_publish`: `Bus.publish` of the Bar frame (check, encode, partition, pipelined `XADD MAXLEN ~`):
  bars/s;
- `bus_consume`: `Consumer` with a no-op handler draining the published backlog (16 partitions), at
  XREADGROUP COUNT 100 and 1,000, in 1 and 2 consumer processes (partitions split to balance bars):
  bars/s from the first bar handed over to the last, process start-up excluded; each commit is WATCH +
  HMGET + MULTI/EXEC per partition batch.

Each figure is the best of `--repeats` runs. Keys live under a prefix of their own and are deleted after.
Usage: .venv/bin/python benchmarks/stream_bus.py [--url redis://127.0.0.1:6379/0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import redis

from finstream.config import Settings
from finstream.sources.packaged import PackagedSource
from finstream.symbols import parse_symbol
from stream.bus import Batch, Bus, Consumer
from stream.messages import bars_from_frame, decode_bar

log = logging.getLogger("benchmarks.stream_bus")

SERIES = (
    ("000300.SH", "1d"),
    ("^GSPC", "1d"),
    ("^IXIC", "1d"),
    ("AAPL", "1m"),
    ("AAPL", "1h"),
    ("ES=F", "1m"),
)
PARTITIONS = 16
GROUP = "bench"
REPO = Path(__file__).resolve().parents[1]


def _bars() -> pd.DataFrame:
    source = PackagedSource(Settings())
    frames = [source.fetch(parse_symbol(s), None, None, i) for s, i in SERIES]
    return pd.concat(frames, ignore_index=True)


def _raw_xadd(client: redis.Redis, key: str, fields: list[dict[str, str]], batch: int) -> float:
    messages = fields[:3000] if batch == 1 else fields
    client.delete(key)
    started = time.perf_counter()
    if batch == 1:
        for f in messages:
            client.xadd(key, f)  # type: ignore[arg-type]
    else:
        for start in range(0, len(messages), batch):
            pipe = client.pipeline(transaction=False)
            for f in messages[start : start + batch]:
                pipe.xadd(key, f)  # type: ignore[arg-type]
            pipe.execute()
    elapsed = time.perf_counter() - started
    client.delete(key)
    return len(messages) / elapsed


def _raw_read_ack(client: redis.Redis, key: str, fields: list[dict[str, str]], count: int) -> float:
    client.delete(key)
    for start in range(0, len(fields), 1000):
        pipe = client.pipeline(transaction=False)
        for f in fields[start : start + 1000]:
            pipe.xadd(key, f)  # type: ignore[arg-type]
        pipe.execute()
    client.xgroup_create(key, "g", id="0")
    done = 0
    started = time.perf_counter()
    while True:
        reply = client.xreadgroup("g", "c", {key: ">"}, count=count)
        if not reply or not reply[0][1]:
            break
        ids = [entry_id for entry_id, _ in reply[0][1]]
        client.xack(key, "g", *ids)
        done += len(ids)
    elapsed = time.perf_counter() - started
    client.delete(key)
    assert done == len(fields)
    return done / elapsed


def _balanced(counts: dict[int, int], consumers: int) -> list[list[int]]:
    """Partitions split over `consumers` so each gets about as many bars (largest first, to the lightest)."""
    shares: list[list[int]] = [[] for _ in range(consumers)]
    loads = [0] * consumers
    for partition, n in sorted(counts.items(), key=lambda item: -item[1]):
        lightest = loads.index(min(loads))
        shares[lightest].append(partition)
        loads[lightest] += n
    return shares


def _consume_child(url: str, prefix: str, name: str, owned: list[int], batch_size: int) -> None:
    """Child mode: drain `owned` with a no-op handler; print first/last handler times and the count."""
    bus = Bus(url, prefix=prefix, partitions=PARTITIONS)
    times: list[float] = []

    def handler(batch: Batch) -> None:
        now = time.time()
        if not times:
            times.append(now)
        times[1:] = [now]

    consumer = Consumer(
        bus, GROUP, name, owned, handler, batch_size=batch_size, block_ms=100, min_idle_ms=60_000
    )
    stats = consumer.run(idle_exit_s=0.5)
    first = times[0] if times else 0.0
    print(json.dumps({"first": first, "last": times[-1] if times else 0.0, "processed": stats.processed}))


def _bus_consume(url: str, bars: pd.DataFrame, consumers: int, batch_size: int) -> dict[str, Any]:
    bus = Bus(url, prefix=f"bench-{uuid.uuid4().hex[:10]}", partitions=PARTITIONS, maxlen=None)
    try:
        bus.publish(bars)
        counts = {
            p: int(n)
            for p, n in pd.Series([bus.partition_of(s) for s in bars["symbol"]]).value_counts().items()
        }
        shares = _balanced(counts, consumers)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "consume",
                    url,
                    bus.prefix,
                    f"c{i}",
                    ",".join(map(str, share)),
                    str(batch_size),
                ],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i, share in enumerate(shares)
        ]
        results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
        processed = sum(r["processed"] for r in results)
        assert processed == len(bars), (processed, len(bars))
        elapsed = max(r["last"] for r in results) - min(r["first"] for r in results)
        return {
            "bars_per_s": processed / elapsed,
            "seconds": elapsed,
            "bars_per_consumer": [r["processed"] for r in results],
            "per_consumer_bars_per_s": [r["processed"] / (r["last"] - r["first"]) for r in results],
        }
    finally:
        bus.destroy()
        bus.close()


def _bus_publish(url: str, bars: pd.DataFrame) -> float:
    bus = Bus(url, prefix=f"bench-{uuid.uuid4().hex[:10]}", partitions=PARTITIONS)
    try:
        bus.check_layout()
        started = time.perf_counter()
        bus.publish(bars)
        return len(bars) / (time.perf_counter() - started)
    finally:
        bus.destroy()
        bus.close()


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    if args and args[0] == "consume":
        url, prefix, name, owned, count = args[1:6]
        _consume_child(url, prefix, name, [int(p) for p in owned.split(",")], int(count))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args(args)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    bars = _bars()
    messages = bars_from_frame(bars)
    fields = [m.to_fields() for m in messages]
    client = redis.Redis.from_url(options.url, decode_responses=True)
    scratch = f"bench-{uuid.uuid4().hex[:10]}:raw"
    best = max
    report: dict[str, Any] = {
        "redis": client.info("server")["redis_version"],
        "redis_py": importlib.metadata.version("redis"),
        "hiredis": importlib.metadata.version("hiredis"),
        "cpus": os.cpu_count(),
        "bars": len(bars),
    }
    try:
        log.info("raw XADD")
        report["raw_xadd_msgs_per_s"] = {
            str(n): round(best(_raw_xadd(client, scratch, fields, n) for _ in range(options.repeats)))
            for n in (1, 10, 100, 1000)
        }
        log.info("raw XREADGROUP + XACK")
        report["raw_xreadgroup_xack_msgs_per_s"] = {
            str(n): round(best(_raw_read_ack(client, scratch, fields, n) for _ in range(options.repeats)))
            for n in (10, 100, 1000)
        }
    finally:
        client.delete(scratch)
    started = time.perf_counter()
    bars_from_frame(bars)
    check_us = (time.perf_counter() - started) / len(bars) * 1e6
    started = time.perf_counter()
    for f in fields:
        decode_bar(f)
    report["codec_us_per_bar"] = {
        "bars_from_frame": round(check_us, 2),
        "decode_bar": round((time.perf_counter() - started) / len(fields) * 1e6, 2),
    }
    log.info("bus publish")
    report["bus_publish_bars_per_s"] = round(
        best(_bus_publish(options.url, bars) for _ in range(options.repeats))
    )
    report["bus_consume"] = {}
    for batch_size in (100, 1000):
        for consumers in (1, 2):
            log.info("bus consume, COUNT %d, %d process(es)", batch_size, consumers)
            runs = [_bus_consume(options.url, bars, consumers, batch_size) for _ in range(options.repeats)]
            top = max(runs, key=lambda r: r["bars_per_s"])
            report["bus_consume"][f"count_{batch_size}_{consumers}_process"] = {
                "bars_per_s": round(top["bars_per_s"]),
                "all_runs_bars_per_s": [round(r["bars_per_s"]) for r in runs],
                "bars_per_consumer": top["bars_per_consumer"],
                "per_consumer_bars_per_s": [round(x) for x in top["per_consumer_bars_per_s"]],
            }
    client.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
