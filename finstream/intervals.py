"""Bar intervals: telling a file's interval from its timestamps, and resampling intraday bars to days.

finstream stores daily bars today; a file of intraday bars must never be collapsed to one arbitrary bar a
day without the user asking (that is silent corruption). `detect_interval` names what a file holds, and
`resample_daily` aggregates it within each exchange-local trading day when the user asks for it.
"""

from __future__ import annotations

import pandas as pd

from finstream.errors import SchemaError

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
#: how each OHLCV column of intraday bars aggregates into the day's bar
DAILY_AGGREGATION = {
    "open": "first",
    "high": "max",
    "low": "min",
    "close": "last",
    "volume": "sum",
    "amount": "sum",
}


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
    columns = [c for c in DAILY_AGGREGATION if c in rows.columns]
    aggregation = {c: DAILY_AGGREGATION[c] for c in columns}
    numeric = rows[columns].apply(pd.to_numeric, errors="coerce")
    grouped = numeric.groupby(day, sort=True)
    daily = grouped.agg(aggregation)
    for column in ("volume", "amount"):
        if column in daily.columns:
            daily.loc[grouped[column].count().eq(0), column] = float("nan")
    return daily.reset_index()
