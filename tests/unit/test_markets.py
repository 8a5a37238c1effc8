"""Market clocks (sessions, bar close times) and the validation rules built on them, on real intraday bars."""

from __future__ import annotations

import pandas as pd
import pytest

from finstream.config import Settings
from finstream.intervals import bars_per_year, session_move_limit
from finstream.markets import MARKETS
from finstream.symbols import parse_symbol


def _at(*stamps: str, tz: str) -> pd.Series:
    return pd.Series(pd.DatetimeIndex(stamps).tz_localize(tz))


def test_sessions_of_each_market() -> None:
    cn = MARKETS["CN"]
    # Monday: open, morning, lunch break, afternoon close, after the close; then a Saturday
    stamps = _at("2024-03-04 09:30", "2024-03-04 10:00", "2024-03-04 12:00", "2024-03-04 15:00",
                 "2024-03-04 15:01", "2024-03-09 10:00", tz="Asia/Shanghai")  # fmt: skip
    assert cn.in_session(stamps).tolist() == [True, True, False, True, False, False]
    morning, afternoon = cn.session_of(stamps)[[1, 3]]
    assert morning >= 0 and afternoon >= 0 and morning != afternoon
    fx = MARKETS["FX"]  # Sunday evening and Wednesday 03:00 New York trade, Saturday does not
    ny = "America/New_York"
    assert fx.in_session(_at("2024-03-03 18:00", "2024-03-06 03:00", "2024-03-09 12:00", tz=ny)).tolist() == [
        True,
        True,
        False,
    ]
    cme = MARKETS["CME"]  # the daily halt 17:00-18:00 New York
    halt = _at("2024-03-05 16:59", "2024-03-05 17:30", "2024-03-05 18:01", tz=ny)
    assert cme.in_session(halt).tolist() == [True, False, True]


def test_bar_close_times_are_cut_at_the_session_end() -> None:
    us = MARKETS["US"]
    opens = _at("2024-03-04 14:30", "2024-03-04 15:30", tz="America/New_York")
    closes = us.close_times(opens, pd.Timedelta(hours=1))
    assert [t.strftime("%H:%M") for t in closes] == ["15:30", "16:00"]


def test_move_limits_and_annualisation_scale_with_the_interval() -> None:
    cn, us = MARKETS["CN"], MARKETS["US"]
    assert session_move_limit(0.11, "1d", cn, 3.0) == 0.11
    assert session_move_limit(0.11, "1m", cn, 3.0) == pytest.approx(0.11 * 3 / 240**0.5)  # 2.1 %
    assert session_move_limit(0.25, "1m", us, 3.0) == pytest.approx(0.25 * 3 / 390**0.5)  # 3.8 %
    assert session_move_limit(0.11, "1h", cn, 3.0) == 0.11  # capped at the daily limit
    assert bars_per_year("1d", us) == 252
    assert bars_per_year("1m", us) == 252 * 390
    assert bars_per_year("5m", cn) == 252 * 240 / 5


def test_symbols_of_fx_and_futures() -> None:
    eurusd = parse_symbol("EUR/USD")
    assert (eurusd.canonical, eurusd.market, eurusd.for_provider("yfinance")) == ("EURUSD", "FX", "EURUSD=X")
    es = parse_symbol("es=f")
    assert (es.canonical, es.market, es.tz) == ("ES=F", "CME", "America/New_York")
    assert parse_symbol("AAPL").market == "US"


def test_intraday_validation_quarantines_exactly_the_bad_minutes(settings: Settings) -> None:
    """Real AAPL minute bars with three injected faults: one close x1.10 inside a session (a 10 % minute
    move), one bar stamped on a Saturday and one at 03:00 New York. Exactly those three are quarantined;
    the overnight gaps between the real sessions stay valid (the daily limit applies across sessions)."""
    from finstream.data_stages import validate_stage
    from finstream.sources.packaged import PackagedSource
    from finstream.storage import BarTable

    bars = PackagedSource(settings).fetch(parse_symbol("AAPL"), None, None, "1m")
    spike = bars.index[500]
    bars.loc[spike, ["close", "high"]] = bars.loc[spike, "close"] * 1.10
    saturday = bars.iloc[[10]].assign(ts=pd.Timestamp("2026-08-01 14:00", tz="UTC"))
    night = bars.iloc[[11]].assign(ts=pd.Timestamp("2026-08-04 07:00", tz="UTC"))
    table = BarTable(settings.paths.raw_bars)
    table.upsert(pd.concat([bars, saturday, night], ignore_index=True))
    report = validate_stage(settings)
    assert report.input == len(bars) + 2
    assert report.quarantined == 3
    quarantine = BarTable(settings.paths.quarantine).read()
    reasons = dict(zip(quarantine["ts"], quarantine["reasons"], strict=True))
    assert "move limit" in reasons[bars.loc[spike, "ts"]]
    assert reasons[saturday["ts"].iloc[0]] == "bar closes inside a trading session"
    assert reasons[night["ts"].iloc[0]] == "bar closes inside a trading session"
    clean = BarTable(settings.paths.validated_bars).read()
    assert bars.loc[spike + 1, "ts"] in set(clean["ts"])  # measured against the last clean close
