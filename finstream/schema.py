"""The one Bar schema every source maps into, and the coercion that enforces it."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from finstream.errors import SchemaError
from finstream.intervals import DAILY, INTERVALS

PRICE_COLUMNS = ["open", "high", "low", "close"]
BAR_COLUMNS = [
    "symbol",
    "interval",
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "amount",
    "source",
    "ingested_at",
]
REQUIRED_COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume"]
#: what identifies one bar: a series (symbol, interval) and the bar's close time
BAR_KEY = ["symbol", "interval", "ts"]
#: one series of bars
SERIES_KEY = ["symbol", "interval"]
FLOAT_COLUMNS = [*PRICE_COLUMNS, "volume", "amount"]


class Bar(BaseModel):
    """One OHLCV bar (used at the API and stream edges; frames use `to_bar_frame`)."""

    symbol: str
    interval: str = Field(default=DAILY, description="bar length: 1m, 5m, 15m, 30m, 1h or 1d")
    ts: datetime = Field(description="bar close time, timezone-aware (UTC in storage)")
    open: float
    high: float
    low: float
    close: float
    volume: float
    amount: float | None = None
    source: str
    ingested_at: datetime


def to_bar_frame(
    df: pd.DataFrame, *, source: str, interval: str = DAILY, ingested_at: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Coerce a provider's mapped frame to the Bar schema: column order, dtypes, UTC timestamps.

    `interval` is the bars' length (one of INTERVALS); `ts` must be each bar's *close* time (a provider
    that stamps bars by their open time adds the interval first).

    Raises SchemaError naming the missing column or the column that cannot be converted.
    Row-level checks (OHLC consistency, duplicates, limits) belong to the validation suite, not here.
    """
    if interval not in INTERVALS:
        raise SchemaError(f"{source}: unknown bar interval {interval!r}; supported: {', '.join(INTERVALS)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(f"{source}: missing bar column(s) {missing}; got {list(df.columns)}")
    out = pd.DataFrame(index=range(len(df)))
    out["symbol"] = df["symbol"].astype(str).to_numpy()
    out["interval"] = interval
    ts = pd.Series(df["ts"].array)
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        try:
            ts = pd.to_datetime(ts)
        except (ValueError, TypeError) as exc:
            raise SchemaError(f"{source}: column 'ts' has values that are not timestamps ({exc})") from exc
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise SchemaError(
            f"{source}: column 'ts' must be timezone-aware (bar close time in the exchange zone)"
        )
    out["ts"] = ts.dt.tz_convert("UTC").dt.as_unit("ns").to_numpy()
    for col in FLOAT_COLUMNS:
        if col not in df.columns:
            out[col] = np.nan
            continue
        values = pd.to_numeric(pd.Series(df[col].to_numpy()), errors="coerce")
        bad = values.isna() & pd.Series(df[col].to_numpy()).notna()
        if bad.any():
            sample = pd.Series(df[col].to_numpy())[bad].iloc[0]
            raise SchemaError(
                f"{source}: column '{col}' has a non-numeric value {sample!r} at row {bad.idxmax()}"
            )
        out[col] = values.astype("float64").to_numpy()
    out["source"] = source
    stamp = ingested_at if ingested_at is not None else pd.Timestamp.now(tz="UTC")
    out["ingested_at"] = pd.Timestamp(stamp).tz_convert("UTC").as_unit("ns")
    return out[BAR_COLUMNS].sort_values(BAR_KEY, kind="stable").reset_index(drop=True)


def empty_bars() -> pd.DataFrame:
    """An empty frame with the Bar schema's columns and dtypes."""
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in BAR_COLUMNS})
    frame["symbol"] = frame["symbol"].astype(str)
    frame["interval"] = frame["interval"].astype(str)
    frame["source"] = frame["source"].astype(str)
    frame["ts"] = pd.Series(dtype="datetime64[ns, UTC]")
    frame["ingested_at"] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame[BAR_COLUMNS]


def daily_close_ts(
    dates: pd.Series | pd.DatetimeIndex, tz: str, close_hour: int, close_minute: int = 0
) -> pd.Series:
    """Stamp daily dates with the market's close time in its zone, as UTC (a bar is known at the close)."""
    d = pd.DatetimeIndex(pd.to_datetime(dates))
    if d.tz is not None:
        d = d.tz_localize(None)
    local = d.normalize() + pd.Timedelta(hours=close_hour, minutes=close_minute)
    return pd.Series(local.tz_localize(tz).tz_convert("UTC"))
