"""Trend indicators: simple, exponential and weighted moving averages and MACD."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view


def seeded_ewm(values: pd.Series, alpha: float, seed_pos: int, seed_value: float) -> pd.Series:
    """Recursive `y = (1 - alpha) * y_prev + alpha * x` starting at `seed_value` on row `seed_pos`.

    Rows before `seed_pos` are NaN; this is how Wilder's SMA-seeded averages are vectorised.
    """
    data = values.to_numpy(dtype=np.float64, copy=True)
    if seed_pos >= len(data):
        return pd.Series(np.nan, index=values.index, dtype=np.float64)
    data[:seed_pos] = np.nan
    data[seed_pos] = seed_value
    return pd.Series(data, index=values.index).ewm(alpha=alpha, adjust=False).mean()


def _ema(values: pd.Series, window: int) -> pd.Series:
    """EMA seeded with the first value, reported once `window` values were seen (as `ta` does)."""
    return values.ewm(span=window, adjust=False, min_periods=window).mean()


def sma(bars: pd.DataFrame, window: int = 20) -> dict[str, pd.Series]:
    """Simple moving average of close over `window` bars."""
    return {"sma": bars["close"].rolling(window, min_periods=window).mean()}


def ema(bars: pd.DataFrame, window: int = 20) -> dict[str, pd.Series]:
    """Exponential moving average of close with span `window`."""
    return {"ema": _ema(bars["close"], window)}


def wma(bars: pd.DataFrame, window: int = 20) -> dict[str, pd.Series]:
    """Linearly weighted moving average of close: weights 1..window, the newest bar weighs most."""
    close = bars["close"].to_numpy(dtype=np.float64)
    out = np.full(len(close), np.nan)
    if len(close) >= window:
        weights = np.arange(1, window + 1, dtype=np.float64)
        out[window - 1 :] = sliding_window_view(close, window) @ (weights / weights.sum())
    return {"wma": pd.Series(out, index=bars.index)}


def macd(bars: pd.DataFrame, fast: int = 12, slow: int = 26, signal: int = 9) -> dict[str, pd.Series]:
    """MACD line (EMA fast - EMA slow), its signal line (EMA of MACD) and the histogram (their difference)."""
    close = bars["close"]
    line = _ema(close, fast) - _ema(close, slow)
    signal_line = _ema(line, signal)
    return {"macd": line, "signal": signal_line, "hist": line - signal_line}
