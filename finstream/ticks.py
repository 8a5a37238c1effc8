"""Trade ticks -> bars: the one tick aggregation shared by the packaged tick history and the real-time stream.

A tick is one trade: `ts` (timezone-aware trade time), `price`, `volume`. Ticks are bucketed by
`finstream.intervals.aggregate_bars` in the exchange's zone: a bar stamped `close` holds the ticks traded in
(close - interval, close], so a trade at exactly 09:31:00.000 belongs to the bar that closes 09:31. Each bar
has open = first trade, high / low = extreme trade price, close = last trade (file order breaks ties within
one timestamp), volume = summed size, amount = sum(price x size). Only buckets that hold ticks give bars.

Nothing is dropped: ticks outside every session of the symbol's market are kept and make bars of their own,
which validation then flags as out of session (their count is logged here). Ticks with a missing trade time
or price are refused with SchemaError, not skipped; a tick with unknown size (NaN volume) still sets prices,
and a bar's volume / amount are missing (NaN) only when none of its ticks has a size.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from finstream.errors import SchemaError
from finstream.intervals import aggregate_bars, check_interval, is_intraday
from finstream.schema import empty_bars, to_bar_frame
from finstream.symbols import Symbol

log = logging.getLogger(__name__)

TICK_COLUMNS = ["ts", "price", "volume"]


def _checked_ticks(ticks: pd.DataFrame, where: str) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """(trade times, prices, sizes) of `ticks`; SchemaError naming the column when one is unusable."""
    missing = [c for c in TICK_COLUMNS if c not in ticks.columns]
    if missing:
        raise SchemaError(
            f"{where}: ticks lack column(s) {missing}; need {TICK_COLUMNS}, got {list(ticks.columns)}"
        )
    ts = pd.Series(ticks["ts"].array)
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise SchemaError(f"{where}: tick column 'ts' must hold timezone-aware trade times, got {ts.dtype}")
    if ts.isna().any():
        raise SchemaError(
            f"{where}: {int(ts.isna().sum())} tick(s) have no trade time (first at row {ts.isna().idxmax()})"
        )
    price = pd.to_numeric(pd.Series(ticks["price"].to_numpy()), errors="coerce")
    if price.isna().any():
        raise SchemaError(
            f"{where}: {int(price.isna().sum())} tick(s) have a missing or non-numeric price "
            f"(first at row {price.isna().idxmax()})"
        )
    raw_volume = pd.Series(ticks["volume"].to_numpy())
    volume = pd.to_numeric(raw_volume, errors="coerce")
    bad = volume.isna() & raw_volume.notna()
    if bad.any():
        raise SchemaError(
            f"{where}: tick column 'volume' has a non-numeric value {raw_volume[bad].iloc[0]!r}"
        )
    return ts, price.to_numpy(dtype="float64"), volume.to_numpy(dtype="float64")


def ticks_to_bars(
    ticks: pd.DataFrame,
    symbol: Symbol,
    interval: str,
    *,
    source: str,
    ingested_at: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """`interval` bars of `symbol` in the Bar schema from trade `ticks` (columns ts, price, volume).

    `interval` is intraday (1m ... 1h); buckets follow the wall clock of the symbol's exchange zone and each
    bar is stamped by its close time. Daily bars follow an exchange's trading day, not a clock bucket: build
    intraday bars here and use `finstream.intervals.resample_daily` for days.
    """
    if not is_intraday(check_interval(interval)):
        raise SchemaError(
            f"{source}: ticks_to_bars makes intraday bars, not {interval!r}; build intraday bars and "
            "aggregate them to days with finstream.intervals.resample_daily"
        )
    ts, price, volume = _checked_ticks(ticks, source)
    rows = pd.DataFrame(
        {
            "local_time": ts.dt.tz_convert(symbol.tz).array,
            "open": price,
            "high": price,
            "low": price,
            "close": price,
            "volume": volume,
            "amount": price * volume,
        }
    )
    if rows.empty:
        log.debug("%s: no ticks for %s, so no %s bars", source, symbol, interval)
        return empty_bars()
    bars = aggregate_bars(rows, interval).rename(columns={"local_time": "ts"})
    bars.insert(0, "symbol", symbol.canonical)
    out = to_bar_frame(bars, source=source, interval=interval, ingested_at=ingested_at)
    outside = int((~symbol.exchange_market.in_session(out["ts"])).sum())
    if outside:
        log.info(
            "%s %s: %d of %d bars from ticks close outside %s sessions (kept; validation flags them)",
            symbol,
            interval,
            outside,
            len(out),
            symbol.market,
        )
    log.debug("%s: %d ticks -> %d %s bars of %s", source, len(rows), len(out), interval, symbol)
    return out
