"""The replay producer: real history played onto the bus at a chosen speed or rate.

Sources (all real): `stored` — the validated bars under FINSTREAM_HOME (what the batch features were built
from, so the stream's rows equal the batch feature rows); `packaged` — the packaged history read directly
(daily indices, AAPL 1m-1h, ES=F bars aggregated from its trade ticks); `ticks` — ES=F's 500,000 packaged
trade ticks aggregated to bars here with `finstream.ticks.ticks_to_bars`.

Bars of every series are merged in time order (each series keeps its own order, as the bus requires) and
each goes to its interval's bus. Pace: `speed` plays market time that many times faster (`1000x`: an hour
of 1-minute bars in 3.6 s; gaps longer than `max_gap_s` of wall time, such as nights, are cut to it);
`rate` publishes that many bars per second whatever their timestamps; neither: as fast as Redis takes them.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from finstream.config import Settings
from finstream.errors import ConfigError, NoDataError
from finstream.storage import BarTable
from finstream.symbols import parse_symbol
from stream.bus import Bus
from stream.messages import BarMessage, bars_from_frame

log = logging.getLogger(__name__)

SOURCES = ("stored", "packaged", "ticks")
_SPEED = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*x?\s*$", re.IGNORECASE)
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(k)?\s*(?:/\s*s)?\s*$", re.IGNORECASE)


def parse_speed(text: str) -> float:
    """`1000x` (or `1000`) -> 1000.0: market time runs that many times faster than wall time."""
    match = _SPEED.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"speed {text!r}: give a positive factor such as 1000x")
    return float(match.group(1))


def parse_rate(text: str) -> float:
    """`20000/s`, `20k/s` or `20000` -> bars per second."""
    match = _RATE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"rate {text!r}: give bars per second such as 20000/s")
    return float(match.group(1)) * (1000 if match.group(2) else 1)


def load_history(
    settings: Settings,
    series: Sequence[tuple[str, str]],
    source: str = "stored",
    *,
    start: date | None = None,
    end: date | None = None,
    last: int | None = None,
) -> pd.DataFrame:
    """The bars of every (symbol, interval) from `source`, each series in ts order (Bar schema).

    `last` keeps each series' last that many bars (after the date bounds).
    """
    if source not in SOURCES:
        raise ConfigError(f"replay source {source!r}: use one of {', '.join(SOURCES)}")
    frames = []
    for symbol, interval in series:
        bars = _read(settings, symbol, interval, source, start, end)
        if bars.empty:
            raise NoDataError(
                f"no {source} {interval} bars of {symbol}"
                + (": run `finstream ingest` and `finstream validate` first" if source == "stored" else "")
            )
        bars = bars.sort_values("ts", kind="mergesort", ignore_index=True)
        frames.append(bars.iloc[-last:] if last else bars)
    return pd.concat(frames, ignore_index=True)


def _read(
    settings: Settings, symbol: str, interval: str, source: str, start: date | None, end: date | None
) -> pd.DataFrame:
    sym = parse_symbol(symbol)
    if source == "stored":
        bars = BarTable(settings.paths.validated_bars).read(symbols=[sym.canonical], intervals=[interval])
        if not bars.empty and (start or end):
            local = pd.DatetimeIndex(bars["ts"]).tz_convert(sym.tz).date
            keep = np.ones(len(bars), bool)
            if start:
                keep &= local >= start
            if end:
                keep &= local <= end
            bars = bars[keep]
        return bars
    if source == "ticks":
        from finstream.sources.base import clip_dates
        from finstream.sources.packaged import read_ticks
        from finstream.ticks import ticks_to_bars

        bars = ticks_to_bars(read_ticks(sym.canonical), sym, interval, source="packaged")
        return clip_dates(bars, start, end, sym.tz)
    from finstream.sources.packaged import PackagedSource

    return PackagedSource(settings).fetch(sym, start, end, interval)


@dataclass(frozen=True)
class ReplayReport:
    """What a replay published."""

    bars: int
    seconds: float
    first: str | None
    last: str | None
    per_interval: dict[str, int]

    @property
    def bars_per_s(self) -> float:
        return self.bars / self.seconds if self.seconds > 0 else 0.0


class Replayer:
    """Publishes bars to their interval's bus at a pace (see the module docstring)."""

    def __init__(
        self,
        buses: Mapping[str, Bus],
        *,
        speed: float | None = None,
        rate: float | None = None,
        max_gap_s: float = 1.0,
        chunk: int = 1000,
    ) -> None:
        if speed is not None and rate is not None:
            raise ConfigError("give a speed or a rate, not both")
        self.buses = dict(buses)
        self.speed = speed
        self.rate = rate
        self.max_gap_s = max_gap_s
        self.chunk = chunk

    def due_times(self, messages: Sequence[BarMessage]) -> np.ndarray:
        """Seconds after the start at which each message is due."""
        n = len(messages)
        if self.rate is not None:
            return np.arange(n) / self.rate
        if self.speed is None or n == 0:
            return np.zeros(n)
        ts = np.array([m.ts_ns for m in messages], dtype="float64") / 1e9
        gaps = np.clip(np.diff(ts, prepend=ts[0]) / self.speed, 0.0, self.max_gap_s)
        return np.cumsum(gaps)

    def run(
        self,
        bars: pd.DataFrame,
        stop: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ReplayReport:
        """Publish every bar of `bars` (checked first: a bad frame publishes nothing), in time order."""
        missing = sorted(set(bars["interval"].unique()) - set(self.buses))
        if missing:
            raise ConfigError(f"no bus for interval(s) {missing}")
        ordered = bars.sort_values("ts", kind="mergesort", ignore_index=True)
        messages = bars_from_frame(ordered)
        due = self.due_times(messages)
        counts: dict[str, int] = {}
        started = time.perf_counter()
        i = 0
        while i < len(messages):
            if stop is not None and stop.is_set():
                break
            now = time.perf_counter() - started
            if due[i] > now:
                time.sleep(min(due[i] - now, 0.5))
                continue
            j = min(int(np.searchsorted(due, now, side="right")), i + self.chunk, len(messages))
            j = max(j, i + 1)
            by_interval: dict[str, list[BarMessage]] = {}
            for message in messages[i:j]:
                by_interval.setdefault(message.interval, []).append(message)
            for interval, chunk in by_interval.items():
                self.buses[interval].publish(chunk)
                counts[interval] = counts.get(interval, 0) + len(chunk)
            if progress is not None:
                progress(j - i)
            i = j
        seconds = time.perf_counter() - started
        first = messages[0].ts.isoformat() if messages else None
        last = messages[i - 1].ts.isoformat() if i else None
        log.info("replayed %d bars in %.2f s (%.0f bars/s)", i, seconds, i / seconds if seconds else 0.0)
        return ReplayReport(i, seconds, first, last, counts)
