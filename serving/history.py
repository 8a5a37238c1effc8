"""Stored validated bars of one symbol over a date range, for `GET /history/{symbol}?start=&end=&limit=`.

Source: the validate stage's output (`Paths.validated_bars`, one interval's partitions): bars that passed
the expectation suite, the ones features and training are computed from (quarantined rows never appear).

Date semantics. A bar is stamped at its market close, stored in UTC (`finstream.schema.daily_close_ts`).
A `date` bound means a trading day on the symbol's exchange calendar: `start=2015-06-12` includes every bar
whose exchange-local date is 2015-06-12 or later, `end=` likewise through the end of that local day
(both inclusive). For the packaged markets (CN closes 15:00 Asia/Shanghai, US 16:00 America/New_York, HK
16:00 Asia/Hong_Kong) the local date of a close equals its UTC date; local dates stay right for bars that
are not (intraday bars, other markets). A `datetime` bound is an instant, compared with `ts` directly
(naive = UTC), also inclusive.

Limit semantics: the range's *latest* `limit` bars, in ascending time order; `truncated` says older bars in
the range were left out (`total` counts them all). To page back, ask again with `end` before the first
bar returned. The latest bars are what a chart or a model window wants when the range is open.

The files are parsed once per version, keyed on (path, newest mtime_ns, size), and split per symbol, so a
request costs a stat, two binary searches and a slice (no parse of other symbols' rows); a file the pipeline
rewrites (atomically) is picked up by the next request.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from finstream.config import Settings
from finstream.errors import FinstreamError, StoreUnavailable, SymbolError, UnknownSymbol
from finstream.file_snapshots import FileSnapshots, stat_key
from finstream.intervals import DAILY
from finstream.schema import BAR_COLUMNS
from finstream.symbols import parse_symbol

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
_INT64_MIN = np.iinfo(np.int64).min
_INT64_MAX = np.iinfo(np.int64).max


class UnknownBarSymbol(UnknownSymbol):
    """No validated bars for these symbols (an UnknownSymbol: the API answers 404)."""

    def __init__(self, symbols: list[str], path: Path) -> None:
        FinstreamError.__init__(
            self,
            f"no validated bars for {', '.join(symbols)} (unknown symbol, or not ingested: "
            "run `finstream pipeline -s SYMBOL`)",
        )
        self.symbols = list(symbols)


@dataclass(frozen=True)
class BarPage:
    """Bars of one symbol in a range: `bars` ascending by ts, at most `limit` of the `total` in range."""

    symbol: str
    bars: pd.DataFrame  # the Bar schema's columns (ts UTC); a fresh frame, the caller may modify it
    truncated: bool  # True when older bars of the range were left out by the limit
    total: int  # bars in the range before the limit


@dataclass(frozen=True)
class _Snapshot:
    key: tuple[str, int, int]  # (path, mtime_ns, size) of the file these bars were read from
    bars: dict[str, pd.DataFrame]  # per symbol, ts ascending, index 0..n-1
    ts: dict[str, np.ndarray]  # per symbol, ts as int64 ns since the epoch (UTC)


class BarHistory:
    """Validated bars of one interval per symbol from the validate stage's table; one cached parse per
    version of its files."""

    def __init__(self, settings: Settings, path: Path | None = None, interval: str = DAILY) -> None:
        self.interval = interval
        self.path = Path(path) if path is not None else settings.paths.validated_bars / interval
        self._snapshots: FileSnapshots[_Snapshot] = FileSnapshots(self.path, self._load, self._missing)

    def version(self) -> tuple[str, int, int]:
        """The key of the bar files as they are now (changes when the pipeline rewrites them)."""
        return self._current().key

    def canonical(self, symbol: str) -> str:
        """`symbol` as the stored bars name it (UnknownBarSymbol when there are none)."""
        return self._resolve(self._current(), symbol)

    def symbols(self) -> tuple[str, ...]:
        """Symbols with validated bars, sorted."""
        return tuple(sorted(self._current().bars))

    def bars(
        self,
        symbol: str,
        start: date | datetime | None = None,
        end: date | datetime | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> BarPage:
        """The latest `limit` validated bars of `symbol` with start <= bar <= end (see the module doc).

        ValueError for start after end or a limit outside 1..MAX_LIMIT; UnknownBarSymbol (404) when the
        file has no bars of the symbol; StoreUnavailable (503) when there is no validated file yet.
        """
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        snapshot = self._current()
        name = self._resolve(snapshot, symbol)
        tz = _exchange_tz(name)
        lo = _INT64_MIN if start is None else _bound(start, tz, upper=False)
        hi = _INT64_MAX if end is None else _bound(end, tz, upper=True)
        if start is not None and end is not None:
            both_dates = not isinstance(start, datetime) and not isinstance(end, datetime)
            if (start > end) if both_dates else lo >= hi:  # type: ignore[operator]
                raise ValueError(f"start {start.isoformat()} is after end {end.isoformat()}")
        ts = snapshot.ts[name]
        i = int(np.searchsorted(ts, lo, side="left"))
        j = int(np.searchsorted(ts, hi, side="left"))
        total = max(j - i, 0)
        first = max(i, j - limit)
        frame = snapshot.bars[name].iloc[first:j].reset_index(drop=True).copy()
        return BarPage(name, frame, truncated=total > limit, total=total)

    def _resolve(self, snapshot: _Snapshot, symbol: str) -> str:
        if symbol in snapshot.bars:
            return symbol
        try:
            canonical = parse_symbol(symbol).canonical
        except SymbolError:
            canonical = symbol
        if canonical not in snapshot.bars:
            raise UnknownBarSymbol([symbol], self.path)
        return canonical

    def _current(self) -> _Snapshot:
        """The parsed file as it is now: re-read only when its (mtime_ns, size) changed."""
        return self._snapshots.current()

    def _missing(self) -> str:
        return (
            f"no validated bars at {self.path}: run `finstream ingest` then `finstream validate` "
            "(or `finstream pipeline`)"
        )

    def _load(self) -> _Snapshot:
        try:
            if (
                self.path.is_dir()
            ):  # one interval of the partitioned table: <interval>/<symbol>/<part>.parquet
                key = stat_key(self.path)
                files = sorted(self.path.glob("*/*.parquet"))
                if key is None or not files:
                    raise FileNotFoundError(self.path)
                frame = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
            else:
                with open(self.path, "rb") as fh:
                    st = os.fstat(fh.fileno())  # the key of the very bytes read, even if the file is replaced
                    frame = pq.read_table(fh).to_pandas()
                key = (str(self.path), st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            raise StoreUnavailable(self._missing()) from None
        except Exception as exc:  # a truncated or foreign file
            raise StoreUnavailable(
                f"cannot read the validated bars {self.path}: {exc}; rebuild them with `finstream validate`"
            ) from exc
        missing = [c for c in ("symbol", "ts") if c not in frame.columns]
        if missing:
            raise StoreUnavailable(f"the validated bars {self.path} lack columns {missing}: re-run validate")
        frame = frame[[c for c in BAR_COLUMNS if c in frame.columns]].copy()
        ts = pd.DatetimeIndex(frame["ts"])
        frame["ts"] = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
        frame = frame.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
        stamps = pd.DatetimeIndex(frame["ts"]).as_unit("ns").asi8
        symbols = frame["symbol"].astype(str).to_numpy()
        names, starts = np.unique(symbols, return_index=True)
        bounds = [*starts.tolist(), symbols.size]
        bars: dict[str, pd.DataFrame] = {}
        times: dict[str, np.ndarray] = {}
        for k, name in enumerate(names.tolist()):
            lo, hi = bounds[k], bounds[k + 1]
            bars[name] = frame.iloc[lo:hi].reset_index(drop=True)
            times[name] = stamps[lo:hi].copy()
        log.info(
            "bar history loaded", extra={"path": str(self.path), "rows": len(frame), "symbols": len(bars)}
        )
        return _Snapshot(key, bars, times)


def _exchange_tz(symbol: str) -> str:
    """The symbol's exchange time zone (calendar dates are exchange-local); UTC if it does not parse."""
    try:
        return parse_symbol(symbol).tz
    except SymbolError:
        return "UTC"


def _bound(value: date | datetime, tz: str, *, upper: bool) -> int:
    """A range bound as int64 ns UTC: inclusive lower, exclusive upper (a date's upper is its day's end)."""
    if not isinstance(value, date):
        raise TypeError(f"start/end must be a date or a datetime, got {type(value).__name__}")
    try:
        if isinstance(value, datetime):
            stamp = pd.Timestamp(value)
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
            return int(stamp.as_unit("ns").value) + (1 if upper else 0)
        day = value + timedelta(days=1) if upper else value
        midnight = pd.Timestamp(day.year, day.month, day.day).tz_localize(tz)
        return int(midnight.tz_convert("UTC").as_unit("ns").value)
    except (OverflowError, pd.errors.OutOfBoundsDatetime):  # beyond pandas' years 1677..2262
        return _INT64_MAX if value.year >= 1970 else _INT64_MIN
