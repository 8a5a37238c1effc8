"""Benchmark the incremental indicator engine on every packaged series; prints JSON.

Series: daily 000300.SH, ^GSPC, ^IXIC (whole history), intraday AAPL 1m and 1h, ES=F 1m. For each:

- `update_us`: one `IncrementalIndicators.update` (all outputs of DEFAULT_SPEC), timed bar by bar over the
  whole series: median and p99 of the best of `--repeats` passes (the pass with the lowest median, so a
  busy machine inflates the figures less), and `mean` = wall time of that pass / bars (timer included);
- `bars_per_s`: 1e6 / median;
- `batch_us_per_bar`: `compute_indicators` over the whole series / bars (vectorised, amortised), and
  `batch_recompute_ms`: `compute_indicators` over the last `warmup_bars() + 41` bars, what a stream that
  recomputed a window per new bar would pay (without parity for EMA-type indicators);
- `state`: the snapshot's JSON size and float count; `snapshot_us` / `restore_us`; `replay_s`: warm-up by
  replaying the whole series (`from_history`).

`per_indicator_us` (on ^GSPC): the median cost of each indicator alone (engine with that indicator minus
the empty engine). `alternatives_ns`: one rolling 20-bar mean update implemented as pandas' Kahan kernel in
Python floats (the engine's choice), the same with numpy scalars, a numpy ring recomputed with `mean()`,
and `math.fsum` over the ring; plus whether numba is importable.

Usage: .venv/bin/python benchmarks/incremental_indicators.py [--repeats N]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import math
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from finstream.config import Settings
from finstream.indicators import DEFAULT_SPEC, compute_indicators, warmup_bars
from finstream.indicators.incremental import IncrementalIndicators, RollingMean
from finstream.indicators.spec import Indicator
from finstream.sources.packaged import PackagedSource
from finstream.symbols import parse_symbol

log = logging.getLogger("benchmarks.incremental_indicators")

SERIES = (
    ("000300.SH", "1d"),
    ("^GSPC", "1d"),
    ("^IXIC", "1d"),
    ("AAPL", "1m"),
    ("AAPL", "1h"),
    ("ES=F", "1m"),
)
OHLCV = ["open", "high", "low", "close", "volume"]
Row = tuple[int, float, float, float, float, float]


def _load(symbol: str, interval: str) -> pd.DataFrame:
    bars = PackagedSource(Settings()).fetch(parse_symbol(symbol), None, None, interval)
    return bars[["symbol", "ts", *OHLCV]].sort_values("ts").reset_index(drop=True)


def _rows(bars: pd.DataFrame) -> list[Row]:
    ts = pd.DatetimeIndex(bars["ts"]).as_unit("ns").asi8.tolist()
    return list(zip(ts, *(bars[c].to_numpy(dtype=np.float64).tolist() for c in OHLCV), strict=True))


def _timed_pass(rows: list[Row], spec: tuple[Indicator, ...]) -> tuple[list[float], float]:
    """Per-bar update times (µs) of one pass with a fresh engine, and the pass's wall time (s)."""
    update = IncrementalIndicators(spec).update
    clock = time.perf_counter_ns
    times = [0.0] * len(rows)
    started = time.perf_counter()
    for i, row in enumerate(rows):
        t0 = clock()
        update(*row)
        times[i] = (clock() - t0) / 1000.0
    return times, time.perf_counter() - started


def _best_pass(rows: list[Row], spec: tuple[Indicator, ...], repeats: int) -> tuple[list[float], float]:
    passes = [_timed_pass(rows, spec) for _ in range(repeats)]
    return min(passes, key=lambda p: statistics.median(p[0]))


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def bench_series(symbol: str, interval: str, repeats: int) -> dict[str, Any]:
    """Per-bar cost, batch cost and state size on one series."""
    bars = _load(symbol, interval)
    rows = _rows(bars)
    times, wall = _best_pass(rows, DEFAULT_SPEC, repeats)
    ordered = sorted(times)
    median = statistics.median(times)
    batch_s = _best_of(lambda: compute_indicators(bars), repeats)
    window = bars.iloc[-(warmup_bars() + 41) :]
    recompute_s = _best_of(lambda: compute_indicators(window), repeats)
    replay_s = _best_of(lambda: IncrementalIndicators.from_history(bars), 1)
    engine = IncrementalIndicators.from_history(bars)
    state = engine.snapshot()
    snapshot_s = _best_of(engine.snapshot, 200) * 1e6
    restore_s = _best_of(lambda: IncrementalIndicators.restore(state), 200) * 1e6
    return {
        "series": f"{symbol} {interval}",
        "bars": len(rows),
        "update_us": {
            "median": round(median, 2),
            "p99": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
            "mean": round(wall / len(rows) * 1e6, 2),
        },
        "bars_per_s": round(1e6 / median),
        "batch_us_per_bar": round(batch_s / len(rows) * 1e6, 2),
        "batch_recompute_ms": round(recompute_s * 1e3, 2),
        "state": {
            "json_bytes": len(json.dumps(state)),
            "floats": len(state["state"]) * 3 // 4 // 8,
        },
        "snapshot_us": round(snapshot_s, 1),
        "restore_us": round(restore_s, 1),
        "replay_s": round(replay_s, 3),
    }


def per_indicator(rows: list[Row], repeats: int) -> dict[str, float]:
    """Median cost of each indicator alone, over the empty engine's."""
    base = statistics.median(_best_pass(rows, (), repeats)[0])
    out = {}
    for ind in DEFAULT_SPEC:
        cost = statistics.median(_best_pass(rows, (ind,), repeats)[0]) - base
        out[",".join(ind.outputs)] = round(cost, 2)
    return out


class _NumpyScalarMean:
    """pandas' rolling-mean kernel with numpy float64 scalars instead of Python floats."""

    def __init__(self, window: int) -> None:
        self.ring: deque[np.float64] = deque([np.float64(np.nan)] * window, maxlen=window)
        self.total = self.comp_add = self.comp_remove = np.float64(0.0)
        self.nobs = 0
        self.window = window

    def push(self, x: np.float64) -> np.float64:
        old = self.ring[0]
        self.ring.append(x)
        if old == old:
            self.nobs -= 1
            y = -old - self.comp_remove
            t = self.total + y
            self.comp_remove = t - self.total - y
            self.total = t
        self.nobs += 1
        y = x - self.comp_add
        t = self.total + y
        self.comp_add = t - self.total - y
        self.total = t
        return self.total / self.nobs if self.nobs >= self.window else np.float64(np.nan)


class _NumpyRingMean:
    """A numpy ring buffer, its mean recomputed every update (pairwise sum, no drift)."""

    def __init__(self, window: int) -> None:
        self.ring = np.full(window, np.nan)
        self.pos = 0

    def push(self, x: float) -> float:
        self.ring[self.pos] = x
        self.pos = (self.pos + 1) % len(self.ring)
        return float(self.ring.mean())


class _FsumMean:
    """`math.fsum` over a deque ring, recomputed every update (exactly rounded)."""

    def __init__(self, window: int) -> None:
        self.ring: deque[float] = deque(maxlen=window)

    def push(self, x: float) -> float:
        self.ring.append(x)
        return math.fsum(self.ring) / len(self.ring)


def _push_all(push: Callable[[Any], Any], values: list[Any]) -> None:
    for value in values:
        push(value)


def alternatives(closes: list[float], repeats: int) -> dict[str, Any]:
    """ns per update of one 20-bar rolling mean, four ways."""
    values_np = [np.float64(c) for c in closes]
    kernels: dict[str, tuple[Any, list[Any]]] = {
        "python_kahan_port": (RollingMean(20), closes),
        "numpy_scalar_kahan": (_NumpyScalarMean(20), values_np),
        "numpy_ring_mean": (_NumpyRingMean(20), closes),
        "fsum_ring": (_FsumMean(20), closes),
    }
    out: dict[str, Any] = {}
    for name, (kernel, values) in kernels.items():
        seconds = _best_of(functools.partial(_push_all, kernel.push, values), repeats)
        out[name] = round(seconds / len(values) * 1e9)
    out["numba_installed"] = importlib.util.find_spec("numba") is not None
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="passes per measurement (best is kept)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    results = []
    for symbol, interval in SERIES:
        log.info("benchmarking %s %s", symbol, interval)
        results.append(bench_series(symbol, interval, args.repeats))
    gspc = _rows(_load("^GSPC", "1d"))
    log.info("per-indicator costs and alternatives")
    report = {
        "outputs": sum(len(ind.outputs) for ind in DEFAULT_SPEC),
        "python": sys.version.split()[0],
        "series": results,
        "per_indicator_us": per_indicator(gspc, max(args.repeats // 2, 2)),
        "alternatives_ns": alternatives([row[4] for row in gspc], args.repeats),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
