"""Benchmark the stream's risk update per new bar against the batch computation; prints JSON.

For each packaged real daily series (S&P 500, NASDAQ Composite, CSI 300), every bar is fed to a
`RiskMonitor` (all measures of `RollingRisk`: historical / normal / Student-t / EWMA VaR and ES at each
level, realised and EWMA volatility, rolling and maximum drawdown, volatility spike, then the alert rules),
and the wall time of each `on_bar` call is taken with `time.perf_counter_ns`. Reported per symbol, after
the warm-up window: median, mean, p99 and max microseconds per bar. The mean includes the Student-t df
refits (one every `t_refit_bars` bars, under 1 ms each); `fixed_df` repeats the run with the df fixed,
which removes them.

For comparison: `batch_full_ms`, one `risk_frame` + `evaluate_frame` over the whole series (what the batch
report runs), its cost per bar, and `batch_last_window_us`: the same batch functions run on only the bars
the latest bar's measures need (its longest trailing window, df fixed), i.e. what a stateless stream would
pay per new bar instead of keeping an incremental state.

Usage: .venv/bin/python benchmarks/risk_update.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time

import numpy as np
import pandas as pd

from finstream.config import Settings
from finstream.risk.alerts import RiskMonitor, evaluate_frame
from finstream.risk.measures import risk_frame
from finstream.risk.params import RiskParams
from finstream.sources.packaged import PackagedSource
from finstream.symbols import parse_symbol

log = logging.getLogger("benchmarks.risk_update")
SYMBOLS = ("^GSPC", "^IXIC", "000300.SH")


def per_bar_us(close: pd.Series, params: RiskParams, warmup: int) -> dict[str, float]:
    """Microseconds per `RiskMonitor.on_bar` over `close`, bars after `warmup` only."""
    monitor = RiskMonitor(str(close.name), params)
    timings = []
    clock = time.perf_counter_ns
    for ts, price in zip(close.index, close.to_numpy(), strict=True):
        start = clock()
        monitor.on_bar(ts, float(price))
        timings.append(clock() - start)
    us = np.array(timings[warmup:]) / 1000
    return {
        "median": round(float(np.median(us)), 2),
        "mean": round(float(us.mean()), 2),
        "p99": round(float(np.percentile(us, 99)), 2),
        "max": round(float(us.max()), 1),
        "bars": int(us.size),
    }


def batch_ms(close: pd.Series, params: RiskParams, repeat: int) -> float:
    """Median milliseconds of `risk_frame` + `evaluate_frame` over the whole series."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        evaluate_frame(risk_frame(close, params), params, str(close.name))
        runs.append(time.perf_counter() - start)
    return statistics.median(runs) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="repeats of each timing (median taken)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    params = RiskParams()
    fixed = params.model_copy(update={"t_df": 5.0})
    # the last bar needs the longest of the windows behind it (VaR, drawdown, volatility + spike lookback)
    tail = max(params.window, params.drawdown_window, params.vol_window + params.spike_lookback) + 2
    warmup = tail
    source = PackagedSource(Settings())
    results: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "params": {
            "levels": list(params.levels),
            "window": params.window,
            "t_refit_bars": params.t_refit_bars,
        },
    }
    per_symbol: dict[str, dict[str, object]] = {}
    for symbol in SYMBOLS:
        bars = source.fetch(parse_symbol(symbol), None, None)
        close = pd.Series(
            bars["close"].to_numpy(dtype=float), index=pd.DatetimeIndex(bars["ts"]), name=symbol
        )
        log.info("%s: %d bars", symbol, len(close))
        incremental = min(
            (per_bar_us(close, params, warmup) for _ in range(args.repeat)), key=lambda r: r["median"]
        )
        fixed_df = min(
            (per_bar_us(close, fixed, warmup) for _ in range(args.repeat)), key=lambda r: r["median"]
        )
        full = batch_ms(close, params, args.repeat)
        last = close.iloc[-tail:]
        window_ms = batch_ms(last, fixed, max(args.repeat, 5))
        per_symbol[symbol] = {
            "bars": len(close),
            "incremental_us_per_bar": incremental,
            "incremental_fixed_df_us_per_bar": fixed_df,
            "batch_full_ms": round(full, 1),
            "batch_full_us_per_bar": round(full * 1000 / len(close), 2),
            "batch_last_window_us": round(window_ms * 1000, 1),
        }
    results["symbols"] = per_symbol
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
