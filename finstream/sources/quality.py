"""The router's quality gate: a provider's answer is accepted only if it looks like real bars."""

from __future__ import annotations

import pandas as pd

from finstream.errors import QualityGateError
from finstream.symbols import Symbol


def check_quality(bars: pd.DataFrame, symbol: Symbol, provider: str, max_bad_fraction: float) -> None:
    """Raise QualityGateError when the answer is empty, about another symbol, or too often inconsistent.

    A few bad rows are left for the validation suite to quarantine; a provider whose answer is mostly
    broken (wrong columns mapped, wrong units, garbage) is rejected here so the router tries the next one.
    """
    if bars.empty:
        raise QualityGateError(f"{provider} returned no bars for {symbol}")
    other = set(bars["symbol"].unique()) - {symbol.canonical}
    if other:
        raise QualityGateError(
            f"{provider} returned bars for other symbols {sorted(other)} when asked for {symbol}"
        )
    prices = bars[["open", "high", "low", "close"]]
    bad = (
        prices.isna().any(axis=1)
        | (prices <= 0).any(axis=1)
        | (bars["high"] < prices[["open", "close", "low"]].max(axis=1))
        | (bars["low"] > prices[["open", "close"]].min(axis=1))
        | (bars["volume"] < 0)
    )
    dup = bars["ts"].duplicated()
    fraction = float((bad | dup).mean())
    if fraction > max_bad_fraction:
        raise QualityGateError(
            f"{provider} answer for {symbol} failed the quality gate: {fraction:.1%} of {len(bars)} rows are "
            f"inconsistent (limit {max_bad_fraction:.1%}; {int(bad.sum())} bad OHLC/volume, "
            f"{int(dup.sum())} duplicate ts)"
        )
