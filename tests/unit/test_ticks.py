"""Ticks -> bars on the real E-mini S&P 500 trade ticks (mlfinpy 0.1.2), checked against a pandas oracle."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from finstream.errors import SchemaError
from finstream.intervals import INTERVALS
from finstream.schema import BAR_COLUMNS
from finstream.sources.packaged import read_ticks
from finstream.symbols import parse_symbol
from finstream.ticks import ticks_to_bars

ES = parse_symbol("ES=F")
INTRADAY = ["1m", "5m", "15m", "30m", "1h"]
#: bars per interval from the 500,000 ticks (2013-09-01 17:00 CT - 2013-09-03 13:51 CT)
BAR_COUNTS = {"1m": 2264, "5m": 461, "15m": 154, "30m": 77, "1h": 39}


@pytest.fixture(scope="module")
def ticks() -> pd.DataFrame:
    return read_ticks("ES=F")


def oracle(ticks: pd.DataFrame, interval: str) -> pd.DataFrame:
    """Bars by a plain groupby: each tick goes to the bar closing at its time rounded up to the interval."""
    close = ticks["ts"].dt.tz_convert("UTC").dt.ceil(INTERVALS[interval])
    frame = ticks.assign(close=close, amount=ticks["price"] * ticks["volume"])
    return frame.groupby("close", sort=True).agg(
        open=("price", "first"),
        high=("price", "max"),
        low=("price", "min"),
        close=("price", "last"),
        volume=("volume", "sum"),
        amount=("amount", "sum"),
        ticks=("price", "size"),
    )


def test_the_tick_file_is_central_time_and_complete(ticks: pd.DataFrame) -> None:
    assert len(ticks) == 500_000
    assert int(ticks["volume"].sum()) == 1_844_058
    assert ticks["ts"].is_monotonic_increasing
    # Globex opens Sunday 17:00 Chicago time; CME's Labor Day halt ran 10:30 - 17:00 CT
    assert ticks["ts"].iloc[0] == pd.Timestamp("2013-09-01 17:00:00.083", tz="America/Chicago")
    gap = ticks["ts"].diff()
    at = gap.idxmax()
    assert ticks["ts"][at - 1] == pd.Timestamp("2013-09-02 10:29:59.246", tz="America/Chicago")
    assert ticks["ts"][at] == pd.Timestamp("2013-09-02 17:00:00.026", tz="America/Chicago")
    assert gap.drop(at).max() < pd.Timedelta(minutes=4)


@pytest.mark.parametrize("interval", INTRADAY)
def test_bars_equal_a_pandas_groupby_oracle(ticks: pd.DataFrame, interval: str) -> None:
    bars = ticks_to_bars(ticks, ES, interval, source="packaged")
    expected = oracle(ticks, interval)
    assert list(bars.columns) == BAR_COLUMNS
    assert set(bars["interval"]) == {interval}
    assert set(bars["symbol"]) == {"ES=F"}
    assert list(bars["ts"]) == list(expected.index)
    for column in ("open", "high", "low", "close", "volume"):
        assert bars[column].tolist() == expected[column].astype(float).tolist(), column
    assert bars["amount"].to_numpy() == pytest.approx(expected["amount"].to_numpy(), rel=1e-12)
    assert (expected["ticks"] > 0).all()


@pytest.mark.parametrize("interval", INTRADAY)
def test_volume_is_preserved_and_bar_counts(ticks: pd.DataFrame, interval: str) -> None:
    bars = ticks_to_bars(ticks, ES, interval, source="packaged")
    assert len(bars) == BAR_COUNTS[interval]
    assert bars["volume"].sum() == ticks["volume"].sum() == 1_844_058
    assert not bars["ts"].duplicated().any()
    assert ES.exchange_market.in_session(bars["ts"]).all()  # the file holds no trade outside CME hours


def test_minute_bars_close_times_in_new_york(ticks: pd.DataFrame) -> None:
    bars = ticks_to_bars(ticks, ES, "1m", source="packaged")
    local = bars["ts"].dt.tz_convert("America/New_York")
    # the first trade, 17:00:00.083 CT = 18:00:00.083 ET, is in the bar (18:00, 18:01]
    assert local.iloc[0] == pd.Timestamp("2013-09-01 18:01", tz="America/New_York")
    assert local.iloc[-1] == pd.Timestamp("2013-09-03 14:52", tz="America/New_York")
    halted = (local > pd.Timestamp("2013-09-02 11:30", tz="America/New_York")) & (
        local <= pd.Timestamp("2013-09-02 18:00", tz="America/New_York")
    )
    assert not halted.any()


def test_a_trade_on_the_minute_belongs_to_the_bar_closing_then(ticks: pd.DataFrame) -> None:
    """Hand-checked edge: real prices and sizes of the first three trades, times put on a bucket edge."""
    edge = ticks.head(3).copy()
    edge["ts"] = pd.to_datetime(
        ["2013-09-03 09:00:59.999", "2013-09-03 09:01:00.000", "2013-09-03 09:01:00.001"]
    ).tz_localize("America/Chicago")
    bars = ticks_to_bars(edge, ES, "1m", source="test")
    assert list(bars["ts"].dt.tz_convert("America/Chicago").dt.strftime("%H:%M")) == ["09:01", "09:02"]
    assert bars["volume"].tolist() == [8.0 + 1.0, 2.0]


def test_ticks_outside_sessions_are_kept_and_logged(
    ticks: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    """Real trades moved into CME's daily halt (17:00-18:00 New York) still make a bar, flagged later."""
    halt = ticks.head(2).copy()
    halt["ts"] = pd.to_datetime(["2013-09-03 17:21:00", "2013-09-03 17:21:30"]).tz_localize(
        "America/New_York"
    )
    with caplog.at_level(logging.INFO, logger="finstream.ticks"):
        bars = ticks_to_bars(halt, ES, "5m", source="test")
    assert len(bars) == 1
    assert bars["volume"].iloc[0] == 9.0
    assert not ES.exchange_market.in_session(bars["ts"]).any()
    assert "outside CME sessions" in caplog.text


def test_unusable_ticks_are_refused(ticks: pd.DataFrame) -> None:
    sample = ticks.head(5)
    with pytest.raises(SchemaError, match="timezone-aware"):
        ticks_to_bars(sample.assign(ts=sample["ts"].dt.tz_localize(None)), ES, "1m", source="test")
    with pytest.raises(SchemaError, match="price"):
        ticks_to_bars(
            sample.assign(price=[1640.25, None, 1640.25, 1640.25, 1640.25]), ES, "1m", source="test"
        )
    with pytest.raises(SchemaError, match="lack column"):
        ticks_to_bars(sample.drop(columns="volume"), ES, "1m", source="test")
    with pytest.raises(SchemaError, match="resample_daily"):
        ticks_to_bars(sample, ES, "1d", source="test")


def test_no_ticks_no_bars(ticks: pd.DataFrame) -> None:
    bars = ticks_to_bars(ticks.head(0), ES, "1m", source="test")
    assert bars.empty
    assert list(bars.columns) == BAR_COLUMNS
