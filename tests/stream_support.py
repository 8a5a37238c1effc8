"""Helpers for the stream fault tests: a private redis-server that can be killed and restarted, consumer
processes started the way `stream.runner.Supervisor` starts them, and readers of the pipeline's outputs."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis
from tests_support import free_port

from finstream.channels import history_key, parse_message
from finstream.config import Settings


class PrivateRedis:
    """A redis-server of our own on a free loopback port, persisting every write (AOF, fsync always), so
    that it can be killed (SIGKILL) and started again on the same port with the same data."""

    def __init__(self, root: Path) -> None:
        self.dir = root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / "redis.log"

    def start(self, timeout: float = 20.0) -> None:
        options = {"port": self.port, "bind": "127.0.0.1", "dir": self.dir, "appendonly": "yes",
                   "appendfsync": "always", "save": "", "logfile": self.log}  # fmt: skip
        args = ["redis-server"] + [a for k, v in options.items() for a in (f"--{k}", str(v))]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server on port {self.port} did not start: {self.log.read_text()[-2000:]}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save; what is on disk is what the AOF fsynced."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class ConsumerProcesses:
    """Consumer processes of one pipeline, each `stream.runner.worker_main` in a `spawn` child, as the
    Supervisor (and so `finstream stream`) runs them, but started, killed and stopped by the test."""

    def __init__(self, settings: Settings, config: Any, intervals: list[str], count: int) -> None:
        self.settings = settings
        self.config = config
        self.intervals = intervals
        self.count = count
        self.procs: list[Any] = []
        self.client = redis.Redis.from_url(config.url(settings), decode_responses=True)

    def label(self, index: int) -> str:
        return f"c{index}@{','.join(self.intervals)}"

    def start(self, index: int) -> Any:
        from stream.runner import worker_main

        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(
            target=worker_main,
            args=(self.settings, self.config, self.intervals, index, self.count),
            name=f"finstream-stream-c{index}",
            daemon=True,
        )
        proc.start()
        proc.index = index  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def heartbeat(self, index: int) -> dict[str, Any] | None:
        raw = self.client.hget(self.config.status_key(self.settings), self.label(index))
        return None if raw is None else json.loads(raw)

    def wait_up(self, procs: Iterable[Any], timeout: float = 150.0) -> None:
        """Until each process has written a `running` heartbeat with its own pid (set up and consuming)."""
        procs = list(procs)
        deadline = time.monotonic() + timeout
        while True:
            beats = {p.index: self.heartbeat(p.index) for p in procs}
            if all(b is not None and b["pid"] == p.pid and b["state"] == "running" for p, b in
                   zip(procs, beats.values(), strict=True)):  # fmt: skip
                return
            dead = [p for p in procs if not p.is_alive()]
            if dead or time.monotonic() > deadline:
                pytest.fail(
                    f"consumers not up (dead: {[(p.name, p.exitcode) for p in dead]}) after "
                    f"{timeout} s: {beats}"
                )
            time.sleep(0.1)

    def sigkill(self, proc: Any) -> None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        assert not proc.is_alive()

    def stop(self, procs: Iterable[Any] | None = None, timeout: float = 30.0) -> None:
        """SIGTERM (the consumers finish their batch, announce and exit), SIGKILL after `timeout`."""
        procs = [p for p in (self.procs if procs is None else procs) if p.is_alive()]
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    def close(self) -> None:
        """Kill what is still running (the tests stop consumers gracefully where that is under test)."""
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        self.client.close()


def train_and_promote(settings: Settings) -> None:
    """Ridge return/direction/volatility champions trained by the Prefect training flow, promoted by hand."""
    from finstream.models.registry import CHAMPION, alias_version, promote
    from finstream.models.tracking import configure_mlflow
    from flows.training import training_flow

    training_flow(families=["ridge"], tasks=["regression", "classification", "volatility"])
    client = configure_mlflow(settings)
    for name in ("finstream-return", "finstream-direction"):
        promote(client, name, 1, reason="stream fault test")
    if alias_version(client, "finstream-volatility", CHAMPION) is None:
        promote(client, "finstream-volatility", 1, reason="stream fault test")


def batch_features(settings: Settings, interval: str) -> pd.DataFrame:
    """The batch feature table of `interval`, indexed by (symbol, bar ts in ns)."""
    frame = pd.read_parquet(settings.paths.features_for(interval))
    frame["ts_ns"] = pd.DatetimeIndex(frame["event_timestamp"]).as_unit("ns").asi8
    return frame.set_index(["symbol", "ts_ns"])


def same(a: Any, b: Any) -> bool:
    """Equal floats, None and NaN counting as the same missing value."""
    missing_a = a is None or (isinstance(a, float) and np.isnan(a))
    missing_b = b is None or (isinstance(b, float) and np.isnan(b))
    return (missing_a and missing_b) or (not missing_a and not missing_b and float(a) == float(b))


def last_id(client: redis.Redis, key: str) -> str:
    """The newest entry ID of a stream ("0-0" when it is empty or missing)."""
    newest = client.xrevrange(key, count=1)
    return newest[0][0] if newest else "0-0"


def history_after(client: redis.Redis, project: str, channel: str, after: str) -> list[Any]:
    """The messages of `channel`'s history stream after entry `after`, parsed."""
    entries = client.xrange(history_key(project, channel), min=f"({after}")
    return [parse_message(fields["m"]) for _, fields in entries]


def once_each(keys: Iterable[Hashable], expected: Iterable[Hashable]) -> dict[str, Any]:
    """What differs from "every expected key exactly once": keys seen twice or more, missing, unexpected."""
    counts = Counter(keys)
    wanted = set(expected)
    return {
        "twice": {k: n for k, n in counts.items() if n > 1},
        "missing": sorted(map(str, wanted - set(counts))),
        "unexpected": sorted(map(str, set(counts) - wanted)),
    }


def bar_key(symbol: str, interval: str, ts: Any) -> tuple[str, str, int]:
    return symbol, interval, int(pd.Timestamp(ts).value)


def wait_processed(bus: Any, group: str, at_least: int, timeout: float = 120.0) -> dict[str, Any]:
    """Until the group committed at least `at_least` processed entries on `bus`."""
    deadline = time.monotonic() + timeout
    while True:
        total = bus.counts(group).total
        if (total["processed"] or 0) >= at_least:
            return total
        if time.monotonic() > deadline:
            pytest.fail(f"{bus.name}: fewer than {at_least} processed after {timeout} s: {total}")
        time.sleep(0.02)


def wait_drained(buses: dict[str, Any], group: str, timeout: float = 120.0) -> dict[str, dict[str, Any]]:
    """Until every bus's group read, settled and acknowledged everything published."""
    deadline = time.monotonic() + timeout
    while True:
        totals: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(redis.ConnectionError):  # Redis restarting
            totals = {i: bus.counts(group).total for i, bus in buses.items()}
        if totals and all(
            t["in"] == t["processed"] + t["dead_lettered"] + t["trimmed"]
            and t["pending"] == 0
            and t["lag"] == 0
            for t in totals.values()
        ):
            return totals
        if time.monotonic() > deadline:
            pytest.fail(f"the pipeline did not drain the bus in {timeout} s: {totals}")
        time.sleep(0.05)
