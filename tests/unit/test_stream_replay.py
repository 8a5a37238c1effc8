"""Replay pacing: speed and rate parsing, and when each real bar is due."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finstream.config import Settings
from finstream.errors import ConfigError
from finstream.sources.packaged import PackagedSource
from finstream.symbols import parse_symbol
from stream.messages import bars_from_frame
from stream.replay import Replayer, parse_rate, parse_speed


def test_speed_and_rate_are_parsed() -> None:
    assert parse_speed("1000x") == parse_speed("1000") == parse_speed(" 1000 X ") == 1000.0
    assert parse_rate("20000/s") == parse_rate("20k/s") == parse_rate("20000") == 20000.0
    for bad in ("fast", "0x", "-3x", ""):
        with pytest.raises(ConfigError, match="speed"):
            parse_speed(bad)
    for bad in ("many", "0/s", "20000/min"):
        with pytest.raises(ConfigError, match="rate"):
            parse_rate(bad)


def test_due_times_follow_market_time_with_long_gaps_cut() -> None:
    bars = PackagedSource(Settings()).fetch(parse_symbol("AAPL"), None, None, "1m").iloc[380:400]
    messages = bars_from_frame(bars)
    due = Replayer({}, speed=1000.0, max_gap_s=0.5).due_times(messages)
    gaps = np.diff(due)
    ts = pd.DatetimeIndex(bars["ts"])
    minute = np.diff(ts.asi8) == 60 * 10**9
    assert minute.sum() >= 18 and not minute.all()  # a session boundary inside the slice
    np.testing.assert_allclose(gaps[minute], 0.06)  # a minute at 1000x
    np.testing.assert_allclose(gaps[~minute], 0.5)  # the night, cut to max_gap_s
    assert due[0] == 0.0


def test_a_rate_spaces_bars_evenly_and_speed_and_rate_exclude_each_other() -> None:
    messages = bars_from_frame(PackagedSource(Settings()).fetch(parse_symbol("^GSPC"), None, None).iloc[:5])
    np.testing.assert_allclose(Replayer({}, rate=20000).due_times(messages), np.arange(5) / 20000)
    np.testing.assert_array_equal(Replayer({}).due_times(messages), np.zeros(5))
    with pytest.raises(ConfigError, match="not both"):
        Replayer({}, speed=10.0, rate=10.0)
