"""Intraday bars from the live providers, fed answers in the exact format each library or API returns.

As in test_sources_live.py only the HTTP answer is stubbed: akshare's and yfinance's own code parse it.
- 600000.SH (SPDB) 2023-08-25, 1-minute bars 09:34 and 14:56..15:00: the real bars of Tushare's `stk_mins`
  documentation sample (vol in shares there, / 100 for East Money's 手; same exchange convention: a bar is
  stamped with its end). East Money's 均价 column (the day's running average price) is illustrative. The
  15:00 5-minute bar is the sum of those five 1-minute bars; the other 5-minute bars are illustrative.
- 000016.SH (SSE 50) 2022-02-15 09:30..09:32, 1-minute: close, volume and turnover from akshare's
  documented `index_zh_a_hist_min_em` sample (its open printed as 0.00); high and low are illustrative.
- Yahoo (AAPL) and Alpha Vantage (IBM) intraday prices are illustrative; time stamps follow each API's
  convention (Yahoo and Alpha Vantage stamp a bar with its open time).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from finstream.config import Settings
from finstream.errors import NoDataError, SourceError, SourceUnavailable
from finstream.schema import BAR_COLUMNS
from finstream.sources import akshare as ak_src
from finstream.sources import alphavantage as av_src
from finstream.sources import tushare as ts_src
from finstream.sources import yfinance as yf_src
from finstream.sources.router import SourceRouter
from finstream.symbols import parse_symbol

INGESTED = pd.Timestamp("2024-06-01 00:00", tz="UTC")
SPDB = parse_symbol("600000.SH")


def utc(*stamps: str) -> list[pd.Timestamp]:
    """UTC timestamps from ISO strings."""
    return [pd.Timestamp(s, tz="UTC") for s in stamps]


def fixed_clock(stamp: str, tz: str = "UTC") -> Callable[[], pd.Timestamp]:
    """A clock that always reads `stamp` (in `tz`), as UTC."""
    now = pd.Timestamp(stamp, tz=tz).tz_convert("UTC")
    return lambda: now


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Online settings with keys for both HTTP providers and no environment leaking in."""
    for var in (
        "ALPHAVANTAGE_API_KEY",
        "TUSHARE_TOKEN",
        "FINSTREAM_ALPHAVANTAGE_API_KEY",
        "FINSTREAM_TUSHARE_TOKEN",
        "FINSTREAM_OFFLINE",
    ):
        monkeypatch.delenv(var, raising=False)
    return Settings(alphavantage_api_key="AVKEY123", tushare_token="TSTOKEN456", offline=False)


def assert_bar_frame(bars: pd.DataFrame, source: str, interval: str) -> None:
    """Column order, dtypes, UTC timestamps, ascending order, the interval and the source stamp."""
    assert list(bars.columns) == BAR_COLUMNS
    assert str(bars["ts"].dtype) == "datetime64[ns, UTC]"
    for col in ("open", "high", "low", "close", "volume", "amount"):
        assert bars[col].dtype == np.float64, col
    assert (bars["interval"] == interval).all()
    assert (bars["source"] == source).all()
    assert bars["ts"].is_monotonic_increasing


class FakeResponse:
    """The parts of a `requests` response that akshare and yfinance read."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self._payload = payload
        self.text = json.dumps(payload)
        self.status_code = 200

    def json(self) -> dict[str, Any]:
        return self._payload

    def raise_for_status(self) -> None:
        """A 200 answer: nothing to raise."""


# --------------------------------------------------------------------------- akshare / East Money

# trends2 `trends` strings (f51..f58: time, open, close, high, low, 手, yuan, running average price)
SPDB_TRENDS = [
    "2023-08-25 09:34,7.02,7.01,7.02,7.00,1205,845311.00,7.015",
    "2023-08-25 14:56,7.05,7.05,7.06,7.04,927,653831.00,7.031",
    "2023-08-25 14:57,7.06,7.05,7.06,7.05,518,365491.00,7.031",
    "2023-08-25 14:58,7.05,7.05,7.05,7.05,0,0.00,7.031",
    "2023-08-25 14:59,7.05,7.05,7.05,7.05,0,0.00,7.031",
    "2023-08-25 15:00,7.05,7.05,7.05,7.05,2355,1660275.00,7.032",
]
# kline `klines` strings for klt=5 (f51..f61: time, open, close, high, low, 手, yuan, 振幅, 涨跌幅, 涨跌额,
# 换手率)
SPDB_KLINES_5 = [
    "2023-08-25 09:35,7.00,7.02,7.03,6.99,8120,5695330.00,0.57,0.29,0.02,0.00",
    "2023-08-25 13:05,7.04,7.04,7.05,7.03,3044,2142980.00,0.28,0.00,0.00,0.00",
    "2023-08-25 15:00,7.05,7.05,7.06,7.04,3800,2679597.00,0.28,0.00,0.00,0.00",
]
SSE50_TRENDS = [
    "2022-02-15 09:30,0.00,3101.36,3101.36,3101.36,145226,332156600.00,3104.273",
    "2022-02-15 09:31,3101.36,3106.01,3108.20,3100.95,495049,1174811000.00,3108.621",
    "2022-02-15 09:32,3106.01,3107.55,3109.02,3105.40,361315,795451600.00,3110.788",
]
CSI300_KLINES_60 = [
    "2024-01-02 10:30,3426.27,3410.12,3426.27,3405.51,31200455,49731200000.00,0.61,-0.46,-15.79,0.00",
    "2024-01-02 11:30,3410.12,3402.88,3412.40,3399.03,18855210,30012560000.00,0.39,-0.21,-7.24,0.00",
]


@pytest.fixture
def eastmoney(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Serve East Money's trends2 / kline / index-list answers to akshare's own code; records requests."""
    import requests

    calls: list[dict[str, Any]] = []
    trends = {"1.600000": SPDB_TRENDS, "1.000016": SSE50_TRENDS}
    klines = {("1.600000", "5"): SPDB_KLINES_5, ("1.000300", "60"): CSI300_KLINES_60}

    def answer(url: str, params: dict[str, Any]) -> dict[str, Any]:
        secid = params.get("secid", "")
        if url.endswith("/clist/get"):  # akshare's index list (index_code_id_map_em), one page
            diff = [{"f3": 0.1, "f12": "000016", "f13": 1}, {"f3": 0.2, "f12": "000300", "f13": 1}]
            return {"rc": 0, "data": {"total": len(diff), "diff": diff}}
        if url.endswith("/trends2/get") and secid in trends:
            code, market = secid.split(".")[1], int(secid.split(".")[0])
            rows = trends[secid]
            return {
                "rc": 0,
                "data": {"code": code, "market": market, "trendsTotal": len(rows), "trends": rows},
            }
        if url.endswith("/kline/get") and (secid, params.get("klt")) in klines:
            code, market = secid.split(".")[1], int(secid.split(".")[0])
            return {"rc": 0, "data": {"code": code, "market": market, "klines": klines[secid, params["klt"]]}}
        return {"rc": 0, "data": None}

    def fake_get(url: str, params: dict[str, Any] | None = None, **kwargs: Any) -> FakeResponse:
        calls.append({"url": url, "params": dict(params or {}), **kwargs})
        return FakeResponse(answer(url, dict(params or {})))

    def fake_session_get(self: Any, url: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return fake_get(url, params, **kwargs)

    monkeypatch.setattr(requests, "get", fake_get)
    monkeypatch.setattr(requests.Session, "get", fake_session_get)
    return calls


def spdb_1m_frame() -> pd.DataFrame:
    """`ak.stock_zh_a_hist_min_em(symbol="600000", period="1", ...)` for 2023-08-25, as akshare 1.19 returns
    it (the trends2 endpoint's columns)."""
    return pd.DataFrame(
        {
            "时间": [f"2023-08-25 {t}:00" for t in ("09:34", "14:56", "14:57", "14:58", "14:59", "15:00")],
            "开盘": [7.02, 7.05, 7.06, 7.05, 7.05, 7.05],
            "收盘": [7.01, 7.05, 7.05, 7.05, 7.05, 7.05],
            "最高": [7.02, 7.06, 7.06, 7.05, 7.05, 7.05],
            "最低": [7.00, 7.04, 7.05, 7.05, 7.05, 7.05],
            "成交量": np.array([1205, 927, 518, 0, 0, 2355], dtype=np.int64),
            "成交额": [845311.0, 653831.0, 365491.0, 0.0, 0.0, 1660275.0],
            "均价": [7.015, 7.031, 7.031, 7.031, 7.031, 7.032],
        }
    )


def test_akshare_real_1m_output_is_what_the_mapper_expects(eastmoney: list[dict[str, Any]]) -> None:
    raw = ak_src.download_stock_minutes("600000", date(2023, 8, 25), date(2023, 8, 25), "1m", "qfq")
    pd.testing.assert_frame_equal(raw, spdb_1m_frame())
    (call,) = eastmoney
    assert call["url"] == "https://push2his.eastmoney.com/api/qt/stock/trends2/get"
    assert call["params"]["secid"] == "1.600000"
    assert call["params"]["ndays"] == "5"  # East Money keeps 5 trading days of 1-minute bars


def test_akshare_1m_bars_are_stamped_at_their_end_in_beijing_time_in_shares() -> None:
    bars = ak_src.minute_frame_to_bars(spdb_1m_frame(), SPDB, "1m", ingested_at=INGESTED)
    assert_bar_frame(bars, "akshare", "1m")
    assert list(bars["symbol"]) == ["600000.SH"] * 6
    # East Money's 15:00 bar is the last minute (14:59-15:00, the closing auction): 15:00 Beijing = 07:00 UTC
    assert list(bars["ts"]) == utc(
        "2023-08-25 01:34",
        "2023-08-25 06:56",
        "2023-08-25 06:57",
        "2023-08-25 06:58",
        "2023-08-25 06:59",
        "2023-08-25 07:00",
    )
    assert list(bars["open"]) == [7.02, 7.05, 7.06, 7.05, 7.05, 7.05]
    assert list(bars["high"]) == [7.02, 7.06, 7.06, 7.05, 7.05, 7.05]
    assert list(bars["low"]) == [7.00, 7.04, 7.05, 7.05, 7.05, 7.05]
    assert list(bars["close"]) == [7.01, 7.05, 7.05, 7.05, 7.05, 7.05]
    # 手 x 100: the share counts Tushare's stk_mins reports for the same minutes (235500 at 15:00)
    assert list(bars["volume"]) == [120500.0, 92700.0, 51800.0, 0.0, 0.0, 235500.0]
    assert list(bars["amount"]) == [845311.0, 653831.0, 365491.0, 0.0, 0.0, 1660275.0]  # yuan


def test_akshare_fetch_5m_through_akshare_uses_the_kline_endpoint(
    settings: Settings, eastmoney: list[dict[str, Any]]
) -> None:
    bars = ak_src.AkshareSource(settings).fetch(SPDB, date(2023, 8, 25), date(2023, 8, 25), interval="5m")
    (call,) = eastmoney
    assert call["url"] == "https://push2his.eastmoney.com/api/qt/stock/kline/get"
    assert (call["params"]["secid"], call["params"]["klt"], call["params"]["fqt"]) == ("1.600000", "5", "1")
    assert_bar_frame(bars, "akshare", "5m")
    # 09:35 closes the first 5 minutes (09:30-09:35), 13:05 the first after lunch, 15:00 the last
    assert list(bars["ts"]) == utc("2023-08-25 01:35", "2023-08-25 05:05", "2023-08-25 07:00")
    # the 15:00 bar sums the five real 1-minute bars 14:56..15:00
    last = bars.iloc[-1]
    assert (last["open"], last["high"], last["low"], last["close"]) == (7.05, 7.06, 7.04, 7.05)
    assert last["volume"] == 380000.0 and last["amount"] == 2679597.0


def test_akshare_fetch_1m_drops_the_bar_still_forming(
    settings: Settings, eastmoney: list[dict[str, Any]]
) -> None:
    src = ak_src.AkshareSource(settings, clock=fixed_clock("2023-08-25 14:58:30", "Asia/Shanghai"))
    bars = src.fetch(SPDB, date(2023, 8, 25), None, interval="1m")
    # 14:59 and 15:00 close after the clock: still forming
    assert list(bars["ts"]) == utc(
        "2023-08-25 01:34", "2023-08-25 06:56", "2023-08-25 06:57", "2023-08-25 06:58"
    )


def test_akshare_index_minutes_match_akshare_without_its_index_list(
    eastmoney: list[dict[str, Any]],
) -> None:
    import akshare as ak
    from akshare.index.index_zh_em import index_code_id_map_em

    index_code_id_map_em.cache_clear()
    try:
        expected = ak.index_zh_a_hist_min_em(
            symbol="000016", period="1", start_date="2022-02-15 00:00:00", end_date="2022-02-15 23:59:59"
        )
        kline_expected = ak.index_zh_a_hist_min_em(
            symbol="000300", period="60", start_date="2024-01-02 00:00:00", end_date="2024-01-02 23:59:59"
        )
    finally:
        index_code_id_map_em.cache_clear()
    assert any(c["url"].endswith("/clist/get") for c in eastmoney)  # akshare pages its index list first
    eastmoney.clear()
    got = ak_src.download_index_minutes("sh000016", date(2022, 2, 15), date(2022, 2, 15), "1m", 5.0)
    pd.testing.assert_frame_equal(got, expected)
    got = ak_src.download_index_minutes("sh000300", date(2024, 1, 2), date(2024, 1, 2), "1h", 5.0)
    pd.testing.assert_frame_equal(got, kline_expected)
    # one request each, to the exchange named by the symbol: no index list
    assert [(c["url"].rsplit("/", 2)[-2], c["params"]["secid"], c["timeout"]) for c in eastmoney] == [
        ("trends2", "1.000016", 5.0),
        ("kline", "1.000300", 5.0),
    ]


def test_akshare_index_minute_bars(settings: Settings, eastmoney: list[dict[str, Any]]) -> None:
    src = ak_src.AkshareSource(settings)
    bars = src.fetch(parse_symbol("000016.SH"), date(2022, 2, 15), date(2022, 2, 15), interval="1m")
    assert_bar_frame(bars, "akshare", "1m")
    # 09:30 is the opening auction, 09:31 the first continuous minute
    assert list(bars["ts"]) == utc("2022-02-15 01:30", "2022-02-15 01:31", "2022-02-15 01:32")
    assert np.isnan(bars["open"].iloc[0])  # East Money's 0.00 open is missing, not a price of zero
    assert list(bars["close"]) == [3101.36, 3106.01, 3107.55]
    assert list(bars["volume"]) == [14522600.0, 49504900.0, 36131500.0]
    hourly = src.fetch(parse_symbol("000300.SH"), date(2024, 1, 2), date(2024, 1, 2), interval="1h")
    # East Money's hourly bars end 10:30 and 11:30 (then 14:00 and 15:00): 02:30 and 03:30 UTC
    assert list(hourly["ts"]) == utc("2024-01-02 02:30", "2024-01-02 03:30")
    assert (hourly["interval"] == "1h").all()


def test_akshare_minute_errors_name_the_history_limit(
    settings: Settings, eastmoney: list[dict[str, Any]]
) -> None:
    src = ak_src.AkshareSource(settings)
    # East Money's 1-minute answer covers its last 5 trading days: an older range is empty
    with pytest.raises(SourceError, match=r"no 1m bars for 600000\.SH .*last 5 trading days"):
        src.fetch(SPDB, date(2023, 7, 3), date(2023, 7, 7), interval="1m")
    # an unknown code: East Money answers data=null, which akshare's own minute code fails on
    with pytest.raises(SourceError, match=r"stock_zh_a_hist_min_em\('600036', period='5'\) failed"):
        src.fetch(parse_symbol("600036.SH"), None, None, interval="5m")
    with pytest.raises(SourceError, match=r"lacks column\(s\) \['成交额'\]"):
        ak_src.minute_frame_to_bars(spdb_1m_frame().drop(columns=["成交额"]), SPDB, "1m")
    assert src.intervals == ("1d", "1m", "5m", "15m", "30m", "1h")
    assert src.interval_unavailable(SPDB, "5m") is None


# --------------------------------------------------------------------------- yfinance / Yahoo

NY = "America/New_York"
# (open time in New York, open, high, low, close, volume): AAPL 2024-03-27 (illustrative prices)
AAPL_5M = [
    ("2024-03-27 09:30", 170.41, 171.02, 170.16, 170.93, 2113802),
    ("2024-03-27 09:35", 170.93, 171.40, 170.77, 171.31, 1010238),
    ("2024-03-27 15:55", 173.22, 173.38, 173.10, 173.31, 1894410),
]
AAPL_15M = [
    ("2024-03-27 09:30", 170.41, 171.40, 170.16, 171.55, 3902110),
    ("2024-03-27 09:45", 171.55, 171.90, 171.20, 171.62, 1800455),
    ("2024-03-27 10:00", 171.62, 171.75, 171.01, 171.18, 1204777),
]
AAPL_60M = [
    ("2024-03-27 09:30", 170.41, 172.10, 170.16, 171.88, 9871220),
    ("2024-03-27 10:30", 171.88, 172.30, 171.42, 172.05, 5120399),
    ("2024-03-27 15:30", 173.02, 173.38, 172.90, 173.31, 6044321),
]
AAPL_1M = [
    ("2024-03-22 15:59", 172.20, 172.31, 172.18, 172.28, 402111),
    ("2024-03-27 09:30", 170.41, 170.62, 170.16, 170.55, 930118),
]
CLOCK = "2024-03-28 12:00"  # New York: "today" is 2024-03-28


def _epoch(local: str) -> int:
    return int(pd.Timestamp(local, tz=NY).timestamp())


def yahoo_intraday_chart(rows: list[tuple[Any, ...]], params: dict[str, Any]) -> dict[str, Any]:
    """A v8/finance/chart answer for AAPL as Yahoo sends it for an intraday interval (no pre/post): bars
    stamped at their open, within [period1, period2), with each day's regular trading period."""
    lo, hi = params.get("period1", 0), params.get("period2", 2**40)
    rows = [r for r in rows if lo <= _epoch(r[0]) < hi]
    days = sorted({r[0][:10] for r in rows})
    period = [
        {"timezone": "EDT", "start": _epoch(f"{d} 09:30"), "end": _epoch(f"{d} 16:00"), "gmtoffset": -14400}
        for d in days
    ]
    meta = {
        "currency": "USD",
        "symbol": "AAPL",
        "exchangeName": "NMS",
        "fullExchangeName": "NasdaqGS",
        "instrumentType": "EQUITY",
        "firstTradeDate": 345479400,
        "regularMarketTime": _epoch("2024-03-27 16:00"),
        "hasPrePostMarketData": True,
        "gmtoffset": -14400,
        "timezone": "EDT",
        "exchangeTimezoneName": NY,
        "priceHint": 2,
        "currentTradingPeriod": {
            name: {
                "timezone": "EDT",
                "start": _epoch(f"2024-03-27 {a}"),
                "end": _epoch(f"2024-03-27 {b}"),
                "gmtoffset": -14400,
            }
            for name, a, b in (
                ("pre", "04:00", "09:30"),
                ("regular", "09:30", "16:00"),
                ("post", "16:00", "20:00"),
            )
        },
        "dataGranularity": params.get("interval", "1d"),
        "range": "",
        "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
        "tradingPeriods": [[p] for p in period],
    }
    quote = {
        k: [r[i] for r in rows] for i, k in enumerate(["open", "high", "low", "close", "volume"], start=1)
    }
    if not rows:  # Yahoo's answer for a range without trading: no timestamps, an empty quote
        return {"chart": {"result": [{"meta": meta, "indicators": {"quote": [{}]}}], "error": None}}
    result = {"meta": meta, "timestamp": [_epoch(r[0]) for r in rows], "indicators": {"quote": [quote]}}
    return {"chart": {"result": [result], "error": None}}


@pytest.fixture
def yahoo(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Serve intraday chart answers (by requested interval) to yfinance's own code; records requests."""
    import yfinance.cache
    from yfinance.data import YfData

    calls: list[dict[str, Any]] = []
    by_interval = {"1m": AAPL_1M, "5m": AAPL_5M, "15m": AAPL_15M, "60m": AAPL_60M}

    def fake_get(self: Any, url: str, params: dict[str, Any] | None = None, timeout: float = 30) -> Any:
        params = dict(params or {})
        calls.append({"url": url, "params": params, "timeout": timeout})
        rows = by_interval.get(params.get("interval", ""), AAPL_60M)
        return FakeResponse(yahoo_intraday_chart(rows, params))

    monkeypatch.setattr(YfData, "get", fake_get)
    monkeypatch.setattr(YfData, "cache_get", fake_get)
    monkeypatch.setattr(yfinance.cache, "get_tz_cache", yfinance.cache._TzCacheDummy)
    return calls


def chart_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history requests (not yfinance's own time-zone lookup)."""
    return [c for c in calls if "period1" in c["params"]]


def test_yfinance_real_intraday_output_is_indexed_by_open_time(yahoo: list[dict[str, Any]]) -> None:
    raw = yf_src.download_intraday("AAPL", date(2024, 3, 27), date(2024, 3, 27), "5m", 7.0)
    assert raw.index.name == "Datetime"
    assert str(raw.index.tz) == NY
    assert list(raw.index) == [pd.Timestamp(r[0], tz=NY) for r in AAPL_5M]
    assert list(raw.columns[:5]) == ["Open", "High", "Low", "Close", "Volume"]
    assert raw["Volume"].dtype == np.int64
    (call,) = chart_calls(yahoo)
    assert call["params"]["interval"] == "5m" and call["params"]["includePrePost"] is False
    assert (call["params"]["period1"], call["params"]["period2"]) == (
        _epoch("2024-03-27 00:00"),
        _epoch("2024-03-28 00:00"),
    )


def test_yfinance_5m_bars_are_stamped_at_open_plus_five_minutes(
    settings: Settings, yahoo: list[dict[str, Any]]
) -> None:
    src = yf_src.YfinanceSource(settings, clock=fixed_clock(CLOCK, NY))
    bars = src.fetch(parse_symbol("AAPL"), date(2024, 3, 27), date(2024, 3, 27), interval="5m")
    assert_bar_frame(bars, "yfinance", "5m")
    # the 09:30 bar closes 09:35 New York (EDT) = 13:35 UTC; the 15:55 bar closes 16:00 = 20:00 UTC
    assert list(bars["ts"]) == utc("2024-03-27 13:35", "2024-03-27 13:40", "2024-03-27 20:00")
    assert list(bars["open"]) == [r[1] for r in AAPL_5M]
    assert list(bars["close"]) == [r[4] for r in AAPL_5M]
    assert list(bars["volume"]) == [2113802.0, 1010238.0, 1894410.0]  # shares
    assert bars["amount"].isna().all()


def test_yfinance_hourly_bars_end_at_the_close_and_30m_comes_from_15m(
    settings: Settings, yahoo: list[dict[str, Any]]
) -> None:
    src = yf_src.YfinanceSource(settings, clock=fixed_clock(CLOCK, NY))
    hourly = src.fetch(parse_symbol("AAPL"), date(2024, 3, 27), date(2024, 3, 27), interval="1h")
    assert chart_calls(yahoo)[-1]["params"]["interval"] == "60m"
    # Yahoo's last hourly bar opens 15:30 and closes with the market at 16:00 (20:00 UTC), not 16:30
    assert list(hourly["ts"]) == utc("2024-03-27 14:30", "2024-03-27 15:30", "2024-03-27 20:00")
    half = src.fetch(parse_symbol("AAPL"), date(2024, 3, 27), date(2024, 3, 27), interval="30m")
    assert chart_calls(yahoo)[-1]["params"]["interval"] == "15m"  # yfinance resamples 15m to 30m
    assert list(half["ts"]) == utc("2024-03-27 14:00", "2024-03-27 14:30")
    assert list(half["open"]) == [170.41, 171.62]
    assert list(half["high"]) == [171.90, 171.75]
    assert list(half["close"]) == [171.62, 171.18]
    assert list(half["volume"]) == [5702565.0, 1204777.0]


def test_yfinance_1m_is_fetched_in_seven_day_pieces(settings: Settings, yahoo: list[dict[str, Any]]) -> None:
    src = yf_src.YfinanceSource(settings, clock=fixed_clock(CLOCK, NY))
    bars = src.fetch(parse_symbol("AAPL"), date(2024, 3, 18), None, interval="1m")
    pieces = [(c["params"]["period1"], c["params"]["period2"]) for c in chart_calls(yahoo)]
    assert pieces == [
        (_epoch("2024-03-18 00:00"), _epoch("2024-03-25 00:00")),
        (_epoch("2024-03-25 00:00"), _epoch("2024-03-29 00:00")),
    ]
    assert list(bars["ts"]) == utc("2024-03-22 20:00", "2024-03-27 13:31")
    # a piece without trading (Saturday and Sunday) is skipped; with no bars at all, Yahoo's reason is raised
    yahoo.clear()
    weekend_tail = src.fetch(parse_symbol("AAPL"), date(2024, 3, 16), date(2024, 3, 24), interval="1m")
    assert len(chart_calls(yahoo)) == 2
    assert list(weekend_tail["ts"]) == utc("2024-03-22 20:00")
    with pytest.raises(
        SourceError, match=r"yfinance history\('AAPL'\) failed for AAPL: YFPricesMissingError"
    ):
        src.fetch(parse_symbol("AAPL"), date(2024, 3, 23), date(2024, 3, 24), interval="1m")


def test_yfinance_refuses_ranges_beyond_yahoos_intraday_limits(
    settings: Settings, yahoo: list[dict[str, Any]]
) -> None:
    src = yf_src.YfinanceSource(settings, clock=fixed_clock(CLOCK, NY))
    aapl = parse_symbol("AAPL")
    with pytest.raises(SourceUnavailable, match=r"5m bars for the last 60 days only \(from 2024-01-29\)"):
        src.fetch(aapl, date(2024, 1, 28), date(2024, 3, 27), interval="5m")
    with pytest.raises(SourceUnavailable, match=r"1m bars for the last 30 days only \(from 2024-02-28\)"):
        src.fetch(aapl, date(2024, 2, 27), None, interval="1m")
    with pytest.raises(SourceUnavailable, match=r"1h bars for the last 730 days only"):
        src.fetch(aapl, date(2022, 3, 1), None, interval="1h")
    assert chart_calls(yahoo) == []  # refused before asking Yahoo
    today = date(2024, 3, 28)
    assert yf_src.intraday_range(None, None, "5m", today) == (date(2024, 1, 29), today)
    assert yf_src.intraday_range(date(2024, 1, 29), date(2024, 4, 30), "5m", today) == (
        date(2024, 1, 29),
        today,
    )
    assert yf_src.intraday_range(date(2022, 3, 30), None, "1h", today) == (date(2022, 3, 30), today)


def test_yfinance_drops_the_bar_still_forming(settings: Settings, yahoo: list[dict[str, Any]]) -> None:
    src = yf_src.YfinanceSource(settings, clock=fixed_clock("2024-03-27 15:57", NY))
    bars = src.fetch(parse_symbol("AAPL"), date(2024, 3, 27), None, interval="5m")
    assert list(bars["ts"]) == utc("2024-03-27 13:35", "2024-03-27 13:40")  # 15:55-16:00 is still forming


# --------------------------------------------------------------------------- Alpha Vantage

# TIME_SERIES_INTRADAY, interval=5min, extended_hours=false, month=2024-03 (illustrative prices)
IBM_5MIN: dict[str, Any] = {
    "Meta Data": {
        "1. Information": "Intraday (5min) open, high, low, close prices and volume",
        "2. Symbol": "IBM",
        "3. Last Refreshed": "2024-03-01 15:55:00",
        "4. Interval": "5min",
        "5. Output Size": "Full size",
        "6. Time Zone": "US/Eastern",
    },
    "Time Series (5min)": {
        "2024-03-01 15:55:00": {
            "1. open": "185.1200",
            "2. high": "185.4000",
            "3. low": "185.0100",
            "4. close": "185.3100",
            "5. volume": "412530",
        },
        "2024-03-01 09:30:00": {
            "1. open": "185.4900",
            "2. high": "186.0300",
            "3. low": "185.2200",
            "4. close": "185.8800",
            "5. volume": "201377",
        },
    },
}
IBM_5MIN_FEB: dict[str, Any] = {
    "Meta Data": {**IBM_5MIN["Meta Data"], "3. Last Refreshed": "2024-02-29 15:55:00"},
    "Time Series (5min)": {
        "2024-02-29 15:55:00": {
            "1. open": "184.9000",
            "2. high": "185.1000",
            "3. low": "184.8200",
            "4. close": "185.0300",
            "5. volume": "388120",
        },
    },
}


def months_transport(answers: dict[str | None, Any], seen: list[httpx.Request]) -> httpx.MockTransport:
    """Answer each intraday request with the body for its `month` parameter (None: no month)."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=answers[request.url.params.get("month")])

    return httpx.MockTransport(handler)


def test_alphavantage_intraday_bars_are_stamped_at_open_plus_interval() -> None:
    bars = av_src.payload_to_bars(IBM_5MIN, parse_symbol("IBM"), ingested_at=INGESTED, interval="5m")
    assert_bar_frame(bars, "alphavantage", "5m")
    # "09:30:00" is the first regular 5 minutes: it closes 09:35 New York (EST) = 14:35 UTC
    assert list(bars["ts"]) == utc("2024-03-01 14:35", "2024-03-01 21:00")
    assert list(bars["open"]) == [185.49, 185.12]
    assert list(bars["high"]) == [186.03, 185.40]
    assert list(bars["low"]) == [185.22, 185.01]
    assert list(bars["close"]) == [185.88, 185.31]
    assert list(bars["volume"]) == [201377.0, 412530.0]
    assert bars["amount"].isna().all()
    hourly = {
        "Meta Data": {**IBM_5MIN["Meta Data"], "4. Interval": "60min"},
        "Time Series (60min)": {"2024-03-01 15:00:00": IBM_5MIN["Time Series (5min)"]["2024-03-01 15:55:00"]},
    }
    assert list(av_src.payload_to_bars(hourly, parse_symbol("IBM"), interval="1h")["ts"]) == utc(
        "2024-03-01 21:00"
    )
    with pytest.raises(SourceError, match=r"has no 'Time Series \(5min\)'"):
        av_src.payload_to_bars(hourly, parse_symbol("IBM"), interval="5m")


def test_alphavantage_intraday_requests_one_month_each(settings: Settings) -> None:
    seen: list[httpx.Request] = []
    transport = months_transport({"2024-02": IBM_5MIN_FEB, "2024-03": IBM_5MIN}, seen)
    src = av_src.AlphaVantageSource(settings, transport=transport, clock=fixed_clock("2024-03-04 12:00", NY))
    bars = src.fetch(parse_symbol("IBM"), date(2024, 2, 29), date(2024, 3, 1), interval="5m")
    assert [dict(r.url.params) for r in seen] == [
        {
            "function": "TIME_SERIES_INTRADAY",
            "symbol": "IBM",
            "interval": "5min",
            "outputsize": "full",
            "adjusted": "false",
            "extended_hours": "false",
            "month": month,
            "apikey": "AVKEY123",
            "datatype": "json",
        }
        for month in ("2024-02", "2024-03")
    ]
    assert list(bars["ts"]) == utc("2024-02-29 21:00", "2024-03-01 14:35", "2024-03-01 21:00")
    # an open start: the trailing 30 days, no month
    seen.clear()
    recent = av_src.AlphaVantageSource(
        settings,
        transport=months_transport({None: IBM_5MIN}, seen),
        clock=fixed_clock("2024-03-04 12:00", NY),
    ).fetch(parse_symbol("IBM"), None, None, interval="5m")
    assert "month" not in seen[0].url.params and len(recent) == 2


def test_alphavantage_intraday_is_us_only_and_bounded(settings: Settings) -> None:
    src = av_src.AlphaVantageSource(settings, clock=fixed_clock("2024-03-04 12:00", NY))
    assert src.interval_unavailable(parse_symbol("IBM"), "5m") is None
    assert "US symbols only, not 600036.SH" in (
        src.interval_unavailable(parse_symbol("600036.SH"), "5m") or ""
    )
    assert src.interval_unavailable(parse_symbol("600036.SH"), "1d") is None
    with pytest.raises(SourceUnavailable, match="US symbols only"):
        src.fetch(parse_symbol("600036.SH"), None, None, interval="1m")
    with pytest.raises(SourceUnavailable, match="27 months, more than the 24"):
        src.fetch(parse_symbol("IBM"), date(2022, 1, 3), None, interval="1h")
    assert av_src.intraday_months(date(2024, 1, 31), date(2024, 3, 1), date(2024, 3, 4)) == [
        "2024-01",
        "2024-02",
        "2024-03",
    ]


# --------------------------------------------------------------------------- Tushare and the router


def test_tushare_serves_daily_bars_only(settings: Settings) -> None:
    seen: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: seen.append(request) or httpx.Response(500))
    src = ts_src.TushareSource(settings, transport=transport)
    assert src.intervals == ("1d",)
    assert src.interval_unavailable(SPDB, "1d") is None
    assert src.interval_unavailable(SPDB, "5m") == "tushare serves 1d bars, not 5m"
    with pytest.raises(SourceUnavailable, match="tushare serves 1d bars, not 5m"):
        src.fetch(SPDB, date(2023, 8, 25), date(2023, 8, 25), interval="5m")
    assert seen == []


def test_router_fails_over_from_a_daily_only_provider_to_one_serving_the_interval(
    settings: Settings, eastmoney: list[dict[str, Any]]
) -> None:
    never = httpx.MockTransport(lambda request: httpx.Response(500))
    sources = {
        "tushare": ts_src.TushareSource(settings, transport=never),
        "akshare": ak_src.AkshareSource(settings),
    }
    router = SourceRouter(
        settings, sources=sources, priority={"CN": ["tushare", "akshare"]}, probe=lambda host, timeout: True
    )
    got = router.fetch(SPDB, date(2023, 8, 25), date(2023, 8, 25), source="auto", interval="5m")
    assert got.provider == "akshare"
    assert [(a.provider, a.outcome) for a in got.attempts] == [("tushare", "unavailable"), ("akshare", "ok")]
    assert got.attempts[0].detail == "tushare serves 1d bars, not 5m"
    assert (got.bars["interval"] == "5m").all()
    assert got.bars["ts"].iloc[-1] == pd.Timestamp("2023-08-25 07:00", tz="UTC")
    # no provider serves the interval: the error lists why
    only_tushare = SourceRouter(
        settings,
        sources={"tushare": sources["tushare"]},
        priority={"CN": ["tushare"]},
        probe=lambda host, timeout: True,
    )
    with pytest.raises(
        NoDataError, match=r"600000\.SH 1m bars: tushare: unavailable \(tushare serves 1d bars"
    ):
        only_tushare.fetch(SPDB, None, None, interval="1m")
