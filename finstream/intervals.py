"""Bar intervals: their lengths, telling a file's interval from its timestamps, aggregating bars (or ticks)
into longer bars, and what an interval means for move limits and annualisation.

Every bar is stamped with its *close* time: a 5-minute bar stamped 09:35 covers (09:30, 09:35]. A file of
intraday bars is never collapsed to days without the user asking (that is silent corruption):
`detect_interval` names what a file holds, `resample_daily` / `aggregate_bars` aggregate when asked.
"""

from __future__ import annotations

import math

import pandas as pd

from finstream.errors import SchemaError
from finstream.markets import Market

#: supported bar intervals and their length
INTERVALS: dict[str, pd.Timedelta] = {
    "1m": pd.Timedelta(minutes=1),
    "5m": pd.Timedelta(minutes=5),
    "15m": pd.Timedelta(minutes=15),
    "30m": pd.Timedelta(minutes=30),
    "1h": pd.Timedelta(hours=1),
    "1d": pd.Timedelta(days=1),
}
DAILY = "1d"
#: how each bar column aggregates into a longer bar (ticks: open = high = low = close = price)
BAR_AGGREGATION = {
    "open": "first",
    "high": "max",
    "low": "min",
    "close": "last",
    "volume": "sum",
    "amount": "sum",
}


def check_interval(interval: str) -> str:
    """`interval` if supported, else SchemaError listing the supported ones."""
    if interval not in INTERVALS:
        raise SchemaError(f"unknown bar interval {interval!r}; supported: {', '.join(INTERVALS)}")
    return interval


def is_intraday(interval: str) -> bool:
    return check_interval(interval) != DAILY


def bars_per_year(interval: str, market: Market) -> float:
    """Bars of `interval` in a trading year of `market`: annualises returns and volatility.

    Daily: the market's trading days a year. Intraday: trading days x session minutes / bar minutes.
    """
    if not is_intraday(interval):
        return float(market.trading_days_per_year)
    minutes = INTERVALS[interval].total_seconds() / 60
    return market.trading_days_per_year * market.session_minutes_per_day / minutes


def session_move_limit(daily_limit: float, interval: str, market: Market, scale: float) -> float:
    """The plausible move of one `interval` bar within a session, from the market's daily limit."""
    if not is_intraday(interval):
        return daily_limit
    share = INTERVALS[interval].total_seconds() / 60 / market.session_minutes_per_day
    return daily_limit * min(1.0, scale * math.sqrt(share))


def aggregate_bars(rows: pd.DataFrame, interval: str) -> pd.DataFrame:
    """Bars of `interval` (intraday) from shorter bars or ticks: `rows` has `local_time` (tz-aware, each
    row's close time or trade time) and the columns of BAR_AGGREGATION it has; each output bar covers
    (close - interval, close] and is stamped `local_time` = its close. Empty buckets give no bar.
    """
    length = INTERVALS[check_interval(interval)]
    if length >= INTERVALS[DAILY]:
        raise SchemaError("aggregate to daily bars with resample_daily (days follow the exchange calendar)")
    frame = rows.sort_values("local_time", kind="stable").set_index("local_time")
    columns = [c for c in BAR_AGGREGATION if c in frame.columns]
    numeric = frame[columns].apply(pd.to_numeric, errors="coerce")
    grouped = numeric.resample(length, closed="right", label="right")
    bars = grouped.agg({c: BAR_AGGREGATION[c] for c in columns})
    counts = grouped["close"].count()
    bars = bars.loc[counts.gt(0)]
    for column in ("volume", "amount"):
        if column in bars.columns:
            bars.loc[grouped[column].count().loc[bars.index].eq(0), column] = float("nan")
    return bars.reset_index()


def detect_interval(local_times: pd.Series, where: str) -> str:
    """The interval of bars stamped `local_times` (exchange-local): "1d" when no day holds two bars,
    else the most common spacing of bars within a day; SchemaError when that is none of INTERVALS."""
    times = pd.Series(pd.DatetimeIndex(local_times)).sort_values(ignore_index=True)
    day = times.dt.normalize()
    same_day = day.eq(day.shift(1))
    if not same_day.any():
        return DAILY
    spacing = times.diff()[same_day & times.diff().gt(pd.Timedelta(0))]
    if spacing.empty:
        raise SchemaError(f"{where}: several rows share one timestamp, so the bar interval cannot be told")
    common = spacing.mode().iloc[0]
    for name, length in INTERVALS.items():
        if common == length:
            return name
    raise SchemaError(
        f"{where}: bars are most often {common} apart within a day, which is none of the supported "
        f"intervals ({', '.join(INTERVALS)})"
    )


def resample_daily(bars: pd.DataFrame) -> pd.DataFrame:
    """Daily bars from intraday ones: one row per exchange-local date (`local_time` column) with open =
    first, high = max, low = min, close = last, volume and amount = sum; `date` is that local date.

    Sums of a column with no values stay missing (NaN), not 0.
    """
    rows = bars.sort_values("local_time", kind="stable")
    day = rows["local_time"].dt.tz_localize(None).dt.normalize().rename("date")
    columns = [c for c in BAR_AGGREGATION if c in rows.columns]
    aggregation = {c: BAR_AGGREGATION[c] for c in columns}
    numeric = rows[columns].apply(pd.to_numeric, errors="coerce")
    grouped = numeric.groupby(day, sort=True)
    daily = grouped.agg(aggregation)
    for column in ("volume", "amount"):
        if column in daily.columns:
            daily.loc[grouped[column].count().eq(0), column] = float("nan")
    return daily.reset_index()
