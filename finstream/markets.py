"""Markets: exchange time zone, daily close, trading sessions and trading days per year.

Sessions are regular trading hours in the exchange zone (holidays are not modelled: a holiday is a missing
day, not a bar out of session). A bar is in session when its close time lies within a session, ends
included (an exchange's opening-auction bar is stamped at the open). They drive validation (bars outside
every session are quarantined, gaps inside a session reported) and annualisation of intraday bars.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from typing import Literal

import numpy as np
import pandas as pd

MarketName = Literal["CN", "US", "HK", "FX", "CME"]
WEEK_MINUTES = 7 * 24 * 60
_DAY = 24 * 60


def _minute(t: time) -> int:
    return t.hour * 60 + t.minute


def _weekdays(*ranges: tuple[time, time]) -> tuple[tuple[int, int], ...]:
    """The same sessions Monday to Friday, as minutes of the week (Monday 00:00 = 0)."""
    return tuple(
        (day * _DAY + _minute(start), day * _DAY + _minute(end)) for day in range(5) for start, end in ranges
    )


def _around_the_clock(open_sunday: time, close_friday: time, halt: tuple[time, time] | None) -> tuple:
    """Sunday `open_sunday` to Friday `close_friday` (exchange time), with an optional daily halt."""
    start, end = 6 * _DAY + _minute(open_sunday) - WEEK_MINUTES, 4 * _DAY + _minute(close_friday)
    if halt is None:
        return ((start, end),)
    ranges, cursor = [], start
    for day in range(5):
        halt_start, halt_end = day * _DAY + _minute(halt[0]), day * _DAY + _minute(halt[1])
        if cursor < halt_start < end:
            ranges.append((cursor, halt_start))
            cursor = halt_end
    ranges.append((cursor, end))
    return tuple(ranges)


@dataclass(frozen=True)
class Market:
    """One market's clock."""

    name: MarketName
    tz: str
    close: time  # the daily bar's close time
    #: sessions as (start, end) minutes of the week in `tz`, Monday 00:00 = 0; a start below 0 is Sunday
    sessions: tuple[tuple[int, int], ...]
    #: the annualisation convention for daily bars (252 for every exchange, as the backtests used so far)
    trading_days_per_year: int

    @property
    def session_minutes_per_day(self) -> float:
        """Trading minutes in an average trading day."""
        total = sum(end - start for start, end in self.sessions)
        return total / 5

    def _minutes_of_week(self, ts: pd.Series | pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
        """(minute of the week as a float, week number) of each time, in the exchange zone."""
        local = pd.DatetimeIndex(ts).tz_convert(self.tz).tz_localize(None)
        midnight = local.normalize()
        minute = (local - midnight).total_seconds().to_numpy() / 60 + local.dayofweek.to_numpy() * _DAY
        week = (midnight - pd.to_timedelta(local.dayofweek, unit="D")).asi8 // (7 * 86_400 * 10**9)
        return minute, week

    def session_of(self, ts: pd.Series | pd.DatetimeIndex) -> np.ndarray:
        """A number per bar close time naming its session (bars of one session share it); -1 outside every
        session. A session that opens on Sunday belongs to the week it trades in."""
        minute, week = self._minutes_of_week(ts)
        out = np.full(minute.size, -1, dtype="int64")
        n = len(self.sessions)
        for index, (start, end) in enumerate(self.sessions):
            for shift in (0, WEEK_MINUTES):  # Sunday's part of a session that opens before Monday 00:00
                hit = (out < 0) & (minute >= start + shift) & (minute <= end + shift)
                out[hit] = (week[hit] + (shift > 0)) * n + index
        return out

    def close_times(self, opens: pd.Series, length: pd.Timedelta) -> pd.Series:
        """Close times of bars that open at `opens` (tz-aware) and last `length`, cut at the end of the
        session they open in (Yahoo's last US hourly bar opens 15:30 and closes 16:00, not 16:30)."""
        opens = pd.Series(opens).reset_index(drop=True)
        close = opens + length
        minute, _ = self._minutes_of_week(opens)
        for start, end in self.sessions:
            for shift in (0, WEEK_MINUTES):
                inside = (minute >= start + shift) & (minute < end + shift)
                session_end = opens + pd.to_timedelta(end + shift - minute, unit="min")
                cut = inside & (close > session_end).to_numpy()
                close = close.where(~cut, session_end)
        return close

    def in_session(self, ts: pd.Series | pd.DatetimeIndex) -> np.ndarray:
        """Whether each bar close time lies inside a session of this market."""
        return self.session_of(ts) >= 0


MARKETS: dict[str, Market] = {
    "CN": Market(
        "CN", "Asia/Shanghai", time(15), _weekdays((time(9, 30), time(11, 30)), (time(13), time(15))), 252
    ),
    "US": Market("US", "America/New_York", time(16), _weekdays((time(9, 30), time(16))), 252),
    "HK": Market(
        "HK", "Asia/Hong_Kong", time(16), _weekdays((time(9, 30), time(12)), (time(13), time(16))), 252
    ),
    # spot FX: Sunday 17:00 to Friday 17:00 New York time; the daily bar closes at 17:00 New York
    "FX": Market("FX", "America/New_York", time(17, 0), _around_the_clock(time(17), time(17), None), 260),
    # CME Globex equity-index futures: Sunday 18:00 to Friday 17:00 Chicago-listed, quoted in New York time,
    # with a daily halt 17:00-18:00; the daily bar (settlement) closes at 16:00 New York
    "CME": Market(
        "CME",
        "America/New_York",
        time(16, 0),
        _around_the_clock(time(18), time(17), (time(17), time(18))),
        252,
    ),
}
