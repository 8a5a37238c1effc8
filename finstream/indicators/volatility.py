"""Volatility indicators: Bollinger bands, average true range and the rolling std of log returns."""

from __future__ import annotations

import numpy as np
import pandas as pd

from finstream.indicators.trend import seeded_ewm


def bollinger(bars: pd.DataFrame, window: int = 20, k: float = 2.0) -> dict[str, pd.Series]:
    """Bollinger bands on close, population std (as `ta`); %B, and width as a fraction of the middle band."""
    close = bars["close"]
    rolling = close.rolling(window, min_periods=window)
    mid = rolling.mean()
    dev = k * rolling.std(ddof=0)
    upper, lower = mid + dev, mid - dev
    band = upper - lower
    return {
        "mid": mid,
        "upper": upper,
        "lower": lower,
        "pctb": (close - lower) / band.where(band != 0),
        "width": band / mid,
    }


def true_range(bars: pd.DataFrame) -> pd.Series:
    """True range; the first bar, with no previous close, uses high - low."""
    prev_close = bars["close"].shift(1).to_numpy(dtype=np.float64)
    high = bars["high"].to_numpy(dtype=np.float64)
    low = bars["low"].to_numpy(dtype=np.float64)
    value = np.fmax(np.fmax(high - low, np.abs(high - prev_close)), np.abs(low - prev_close))
    return pd.Series(value, index=bars.index)


def atr(bars: pd.DataFrame, window: int = 14) -> dict[str, pd.Series]:
    """Average true range as `ta.volatility.AverageTrueRange`: mean of the first `window` TRs, then Wilder."""
    tr = true_range(bars)
    seed = float(tr.iloc[:window].mean()) if len(tr) >= window else np.nan
    return {"atr": seeded_ewm(tr, 1.0 / window, window - 1, seed)}


def ret_std(bars: pd.DataFrame, window: int = 20) -> dict[str, pd.Series]:
    """Sample std (ddof=1) of the last `window` one-bar log returns of close."""
    close = bars["close"]
    log_ret = np.log(close / close.shift(1))
    return {"ret_std": log_ret.rolling(window, min_periods=window).std(ddof=1)}
