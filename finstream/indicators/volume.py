"""Volume indicators: on-balance volume, rolling VWAP and the volume ratio."""

from __future__ import annotations

import numpy as np
import pandas as pd


def obv(bars: pd.DataFrame) -> dict[str, pd.Series]:
    """On-balance volume: running sum of +volume on up closes, -volume on down closes, 0 otherwise.

    Starts at 0 on the first bar, so its level depends on where the history starts.
    """
    step = np.sign(bars["close"].diff()).fillna(0.0) * bars["volume"]
    return {"obv": step.cumsum()}


def vwap(bars: pd.DataFrame, window: int = 20) -> dict[str, pd.Series]:
    """Rolling VWAP of the typical price (high + low + close) / 3 over `window` bars; NaN on zero volume."""
    typical = (bars["high"] + bars["low"] + bars["close"]) / 3.0
    volume = bars["volume"]
    total_pv = (typical * volume).rolling(window, min_periods=window).sum()
    total_volume = volume.rolling(window, min_periods=window).sum()
    return {"vwap": total_pv / total_volume.where(total_volume != 0)}


def volume_ratio(bars: pd.DataFrame, window: int = 5) -> dict[str, pd.Series]:
    """Today's volume over the mean volume of the previous `window` bars (today excluded); NaN if 0."""
    volume = bars["volume"]
    previous = volume.shift(1).rolling(window, min_periods=window).mean()
    return {"volume_ratio": volume / previous.where(previous != 0)}
