"""Momentum indicators: RSI, KDJ, Williams %R, momentum and rate of change."""

from __future__ import annotations

import numpy as np
import pandas as pd

from finstream.indicators.trend import seeded_ewm

#: KDJ's K and D start from this neutral level, as in the Chinese convention
KDJ_START = 50.0


def rsi(bars: pd.DataFrame, window: int = 14) -> dict[str, pd.Series]:
    """Wilder's RSI (0..100) as `ta.momentum.RSIIndicator`: alpha 1/window smoothing of gains and losses."""
    diff = bars["close"].diff()
    gain = diff.where(diff > 0, 0.0)
    loss = -diff.where(diff < 0, 0.0)
    avg_gain = gain.ewm(alpha=1 / window, adjust=False, min_periods=window).mean()
    avg_loss = loss.ewm(alpha=1 / window, adjust=False, min_periods=window).mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(avg_loss == 0, 100.0, 100.0 - 100.0 / (1.0 + avg_gain / avg_loss))
    return {"rsi": pd.Series(value, index=bars.index)}


def kdj(bars: pd.DataFrame, window: int = 9, k_smooth: int = 3, d_smooth: int = 3) -> dict[str, pd.Series]:
    """KDJ stochastic (Chinese convention): K and D smooth RSV and K from 50, J = 3K - 2D.

    RSV is 50 (neutral) where the `window`-bar high-low range is zero.
    """
    low = bars["low"].rolling(window, min_periods=window).min()
    high = bars["high"].rolling(window, min_periods=window).max()
    span = high - low
    rsv = ((bars["close"] - low) / span.where(span != 0) * 100.0).mask(span == 0, 50.0)
    valid = np.flatnonzero(rsv.notna().to_numpy())
    if len(valid) == 0:
        empty = pd.Series(np.nan, index=bars.index, dtype=np.float64)
        return {"k": empty, "d": empty, "j": empty}
    start = int(valid[0])
    a_k, a_d = 1.0 / k_smooth, 1.0 / d_smooth
    k0 = (1 - a_k) * KDJ_START + a_k * rsv.iloc[start]
    k = seeded_ewm(rsv, a_k, start, k0)
    d = seeded_ewm(k, a_d, start, (1 - a_d) * KDJ_START + a_d * k0)
    return {"k": k, "d": d, "j": 3.0 * k - 2.0 * d}


def willr(bars: pd.DataFrame, window: int = 14) -> dict[str, pd.Series]:
    """Williams %R (-100..0) as `ta.momentum.WilliamsRIndicator`."""
    high = bars["high"].rolling(window, min_periods=window).max()
    low = bars["low"].rolling(window, min_periods=window).min()
    return {"willr": -100.0 * (high - bars["close"]) / (high - low)}


def momentum(bars: pd.DataFrame, window: int = 10) -> dict[str, pd.Series]:
    """Price change over `window` bars: close - close `window` bars ago."""
    close = bars["close"]
    return {"momentum": close - close.shift(window)}


def roc(bars: pd.DataFrame, window: int = 10) -> dict[str, pd.Series]:
    """Rate of change over `window` bars as a fraction (`ta`'s ROC / 100)."""
    close = bars["close"]
    return {"roc": close / close.shift(window) - 1.0}
