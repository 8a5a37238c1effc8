"""akshare provider: China A-share and SSE/SZSE index bars from East Money, through akshare.

Daily bars:
- Stocks: `ak.stock_zh_a_hist(symbol="600036", period="daily", start_date, end_date, adjust, timeout)`,
  columns 日期 (datetime.date), 股票代码, 开盘, 收盘, 最高, 最低 (float64), 成交量 (int64, 手 = lots of
  100 shares), 成交额 (float64, yuan), 振幅, 涨跌幅, 涨跌额, 换手率.
- Indices: `ak.stock_zh_index_daily_em(symbol="sh000300", start_date, end_date)`, columns date (str
  YYYY-MM-DD), open, close, high, low (float64), volume (int64, 手), amount (float64, yuan). Chosen over
  `index_zh_a_hist`, which first pages through East Money's whole market list (dozens of requests) to
  guess the exchange from the bare code, and can confuse SSE index 000001 with SZSE stock 000001.

Intraday bars (1m, 5m, 15m, 30m, 1h = East Money periods "1", "5", "15", "30", "60"):
- Stocks: `ak.stock_zh_a_hist_min_em(symbol="600036", start_date="YYYY-MM-DD HH:MM:SS", end_date=...,
  period=..., adjust=...)` (akshare 1.19; no timeout argument, it waits 15 s). Period "1" reads East
  Money's `trends2` endpoint and returns 时间 (str "YYYY-MM-DD HH:MM:SS"), 开盘, 收盘, 最高, 最低,
  成交量, 成交额, 均价; periods 5-60 read the `kline` endpoint (klt=period) and return 时间, 开盘, 收盘,
  最高, 最低, 涨跌幅, 涨跌额, 成交量, 成交额, 振幅, 换手率. 成交量 is in 手 (x 100 -> shares) and 成交额 in
  yuan, as for daily bars.
- Indices: the same two East Money endpoints, asked for `secid` "1.000300" (SSE) / "0.399001" (SZSE)
  taken from the canonical symbol, and parsed into the frame `ak.index_zh_a_hist_min_em` returns (same
  columns as above). `ak.index_zh_a_hist_min_em` itself is not called: before every first call in a
  process it pages through East Money's whole index list (`index_code_id_map_em`, one request per 100
  indices with a 0.5-1.5 s pause between pages) to guess the exchange from the bare code, which alone
  outlasts the router's timeout.
- Time stamps: East Money stamps a minute bar with its END time, in Beijing time, so 时间 already is
  finstream's close time and is only localized to Asia/Shanghai. A day of 1-minute bars is 241 rows:
  09:30 (the opening call auction), 09:31 ... 11:30 and 13:01 ... 15:00 - 11:30 and 15:00 exist and 13:00
  does not, which only end stamps allow; 5-minute bars run 09:35 ... 11:30 and 13:05 ... 15:00, hourly
  bars 10:30, 11:30, 14:00, 15:00. Verified from akshare's documented `index_zh_a_hist_min_em` sample
  (rows 09:30, 09:31, 09:32 ...) and Tushare's `stk_mins` documentation of the same exchange convention
  ("(HH:MM, HH:MM+1] is stamped HH:MM+1", 241 one-minute bars a day, no 13:00 bar); akshare's code only
  passes East Money's strings through (`pd.to_datetime(...).astype(str)`), shifting nothing.
- History: East Money serves 1-minute bars for the last 5 trading days only, and unadjusted (the
  trends2 endpoint has no adjustment; akshare: "1 分钟数据只返回近 5 个交易日数据且不复权"). 5-60 minute
  bars reach further back (adjusted like the daily bars) but not over the whole history: akshare calls it
  "近期" (recent) and East Money publishes no bound. A range before what East Money holds is answered
  with fewer days (logged) or, when nothing is left, a SourceError naming the limit.
- A bar still forming (its close time after the clock) is dropped: East Money includes it during trading.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from typing import Any, ClassVar, Literal, get_args

import pandas as pd

from finstream.config import Settings
from finstream.errors import ConfigError, SchemaError, SourceError, SourceUnavailable
from finstream.intervals import DAILY
from finstream.schema import daily_close_ts, to_bar_frame
from finstream.sources.base import Source, clip_dates
from finstream.symbols import Symbol

log = logging.getLogger(__name__)

NAME = "akshare"
Adjust = Literal["qfq", "hfq", ""]
#: East Money reports 成交量 in 手 (board lots); one lot is 100 shares on SSE, SZSE and BSE
SHARES_PER_LOT = 100

STOCK_COLUMNS = {
    "日期": "date",
    "开盘": "open",
    "最高": "high",
    "最低": "low",
    "收盘": "close",
    "成交量": "volume",
    "成交额": "amount",
}
INDEX_COLUMNS = ["date", "open", "high", "low", "close", "volume", "amount"]
#: finstream interval -> East Money minute period (akshare's `period`, East Money's `klt`)
PERIODS: dict[str, str] = {"1m": "1", "5m": "5", "15m": "15", "30m": "30", "1h": "60"}
MINUTE_COLUMNS = {
    "时间": "time",
    "开盘": "open",
    "最高": "high",
    "最低": "low",
    "收盘": "close",
    "成交量": "volume",
    "成交额": "amount",
}
#: the frames akshare's *_hist_min_em functions return: period "1" (trends2) and periods 5-60 (kline)
TRENDS_FRAME_COLUMNS = ["时间", "开盘", "收盘", "最高", "最低", "成交量", "成交额", "均价"]
KLINE_FRAME_COLUMNS = [
    "时间",
    "开盘",
    "收盘",
    "最高",
    "最低",
    "涨跌幅",
    "涨跌额",
    "成交量",
    "成交额",
    "振幅",
    "换手率",
]
#: what East Money's kline endpoint sends for klt=5..60 (f51..f61), before akshare reorders it
KLINE_FIELDS = [
    "时间",
    "开盘",
    "收盘",
    "最高",
    "最低",
    "成交量",
    "成交额",
    "振幅",
    "涨跌幅",
    "涨跌额",
    "换手率",
]
TRENDS_URL = "https://push2his.eastmoney.com/api/qt/stock/trends2/get"
KLINE_URL = "https://push2his.eastmoney.com/api/qt/stock/kline/get"
#: East Money market ids of the two index exchanges (`secid` = "<market>.<code>")
EM_MARKETS = {"sh": 1, "sz": 0}
#: akshare's own open-ended defaults for the minute functions
MIN_START, MIN_END = "1979-09-01 09:32:00", "2222-01-01 09:32:00"


def _yyyymmdd(day: date | None, default: str) -> str:
    """akshare's date argument format (YYYYMMDD), or its own default for an open end."""
    return day.strftime("%Y%m%d") if day is not None else default


def download_stock(
    code: str, start: date | None, end: date | None, adjust: Adjust, timeout: float
) -> pd.DataFrame:
    """Call `ak.stock_zh_a_hist` for one A-share code (e.g. "600036"); raw frame, Chinese column names."""
    import akshare as ak

    return ak.stock_zh_a_hist(
        symbol=code,
        period="daily",
        start_date=_yyyymmdd(start, "19700101"),
        end_date=_yyyymmdd(end, "20500101"),
        adjust=adjust,
        timeout=timeout,
    )


def download_index(prefixed: str, start: date | None, end: date | None) -> pd.DataFrame:
    """Call `ak.stock_zh_index_daily_em` for one exchange-prefixed index (e.g. "sh000300"); raw frame."""
    import akshare as ak

    return ak.stock_zh_index_daily_em(
        symbol=prefixed, start_date=_yyyymmdd(start, "19900101"), end_date=_yyyymmdd(end, "20500101")
    )


def _day_start(day: date | None) -> str:
    """akshare's minute-function start argument: midnight of `day` (or akshare's own open start)."""
    return f"{day.isoformat()} 00:00:00" if day is not None else MIN_START


def _day_end(day: date | None) -> str:
    """akshare's minute-function end argument: the last second of `day` (or akshare's own open end)."""
    return f"{day.isoformat()} 23:59:59" if day is not None else MIN_END


def download_stock_minutes(
    code: str, start: date | None, end: date | None, interval: str, adjust: Adjust
) -> pd.DataFrame:
    """Call `ak.stock_zh_a_hist_min_em` for one A-share code; raw frame (columns: see the module doc).

    `adjust` applies to periods 5-60 only: East Money's 1-minute bars are always unadjusted.
    """
    import akshare as ak

    return ak.stock_zh_a_hist_min_em(
        symbol=code,
        start_date=_day_start(start),
        end_date=_day_end(end),
        period=PERIODS[interval],
        adjust=adjust,
    )


def download_index_minutes(
    prefixed: str, start: date | None, end: date | None, interval: str, timeout: float
) -> pd.DataFrame:
    """`ak.index_zh_a_hist_min_em`'s request and frame for one exchange-prefixed index ("sh000300"), with
    the exchange taken from the prefix instead of from East Money's paged index list (see the module doc).

    An answer without data (East Money's `"data": null` for an unknown code) gives an empty frame.
    """
    import requests

    period = PERIODS[interval]
    secid = f"{EM_MARKETS[prefixed[:2]]}.{prefixed[2:]}"
    params: dict[str, Any]
    if period == "1":
        url, key, fields = TRENDS_URL, "trends", TRENDS_FRAME_COLUMNS
        params = {
            "fields1": "f1,f2,f3,f4,f5,f6,f7,f8,f9,f10,f11,f12,f13",
            "fields2": "f51,f52,f53,f54,f55,f56,f57,f58",
            "iscr": "0",
            "ndays": "5",
            "secid": secid,
        }
    else:
        url, key, fields = KLINE_URL, "klines", KLINE_FIELDS
        params = {
            "secid": secid,
            "ut": "7eea3edcaed734bea9cbfc24409ed989",
            "fields1": "f1,f2,f3,f4,f5,f6",
            "fields2": "f51,f52,f53,f54,f55,f56,f57,f58,f59,f60,f61",
            "klt": period,
            "fqt": "1",
            "beg": "0",
            "end": "20500000",
        }
    answer = requests.get(url, params=params, timeout=timeout).json()
    rows = ((answer or {}).get("data") or {}).get(key) or []
    columns = TRENDS_FRAME_COLUMNS if period == "1" else KLINE_FRAME_COLUMNS
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame([row.split(",") for row in rows], columns=fields)
    frame.index = pd.to_datetime(frame["时间"])
    frame = frame[_day_start(start) : _day_end(end)].reset_index(drop=True)
    for column in fields[1:]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["时间"] = pd.to_datetime(frame["时间"]).astype(str)
    return frame[columns]


def minute_frame_to_bars(
    raw: pd.DataFrame, symbol: Symbol, interval: str, ingested_at: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Map a `*_hist_min_em` frame to the Bar schema: 时间 (East Money's bar END time, Beijing time) is the
    close time as it is; 成交量 (手) x 100 -> shares; 成交额 -> amount in yuan.

    A 开盘 of 0 (East Money leaves the open of some index 1-minute rows empty) is kept as missing, not as
    a price of zero.
    """
    if raw.empty:
        raise SourceError(f"akshare returned no {interval} bars for {symbol}")
    missing = [c for c in MINUTE_COLUMNS if c not in raw.columns]
    if missing:
        raise SourceError(
            f"akshare {interval} answer for {symbol} lacks column(s) {missing}; got {list(raw.columns)} "
            "(has the installed akshare changed its output?)"
        )
    frame = raw[list(MINUTE_COLUMNS)].rename(columns=MINUTE_COLUMNS).reset_index(drop=True)
    try:
        local = pd.to_datetime(frame["time"], format="%Y-%m-%d %H:%M:%S")
    except (ValueError, TypeError) as exc:
        raise SourceError(
            f"akshare {interval} answer for {symbol} has unreadable 时间 values: {exc}"
        ) from exc
    opens = pd.to_numeric(frame["open"], errors="coerce")
    mapped = pd.DataFrame(
        {
            "symbol": symbol.canonical,
            "ts": local.dt.tz_localize(symbol.tz),
            "open": opens.where(opens != 0),
            "high": frame["high"],
            "low": frame["low"],
            "close": frame["close"],
            "volume": pd.to_numeric(frame["volume"], errors="coerce") * SHARES_PER_LOT,
            "amount": frame["amount"],
        }
    )
    return to_bar_frame(mapped, source=NAME, interval=interval, ingested_at=ingested_at)


def _to_bars(
    raw: pd.DataFrame,
    columns: dict[str, str],
    symbol: Symbol,
    function: str,
    ingested_at: pd.Timestamp | None,
) -> pd.DataFrame:
    """Rename, stamp each date with the exchange close (as UTC) and convert lots to shares."""
    if raw.empty:
        raise SourceError(
            f"akshare {function} returned no rows for {symbol} (suspended, not listed then, or wrong code)"
        )
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise SourceError(
            f"akshare {function} answer for {symbol} lacks column(s) {missing}; got {list(raw.columns)} "
            "(has the installed akshare changed its output?)"
        )
    frame = raw[list(columns)].rename(columns=columns).reset_index(drop=True)
    close = symbol.close_time
    mapped = pd.DataFrame(
        {
            "symbol": symbol.canonical,
            "ts": daily_close_ts(frame["date"], symbol.tz, close.hour, close.minute),
            "open": frame["open"],
            "high": frame["high"],
            "low": frame["low"],
            "close": frame["close"],
            "volume": pd.to_numeric(frame["volume"], errors="coerce") * SHARES_PER_LOT,
            "amount": frame["amount"],
        }
    )
    return to_bar_frame(mapped, source=NAME, ingested_at=ingested_at)


def stock_frame_to_bars(
    raw: pd.DataFrame, symbol: Symbol, ingested_at: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Map `stock_zh_a_hist` output to the Bar schema: 成交量 (手) x 100 -> shares, 成交额 -> amount."""
    return _to_bars(raw, STOCK_COLUMNS, symbol, "stock_zh_a_hist", ingested_at)


def index_frame_to_bars(
    raw: pd.DataFrame, symbol: Symbol, ingested_at: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Map `stock_zh_index_daily_em` output to the Bar schema: volume (手) x 100 -> shares, amount in yuan."""
    return _to_bars(raw, {c: c for c in INDEX_COLUMNS}, symbol, "stock_zh_index_daily_em", ingested_at)


class AkshareSource(Source):
    """China A-shares (forward-adjusted by default) and SSE/SZSE indices via akshare's East Money API:
    daily bars, and 1m/5m/15m/30m/1h bars over East Money's recent window (see the module doc)."""

    name: ClassVar[str] = NAME
    #: every akshare function used here calls https://push2his.eastmoney.com/api/qt/stock/{kline,trends2}/get
    hosts: ClassVar[tuple[str, ...]] = ("push2his.eastmoney.com",)
    intervals: ClassVar[tuple[str, ...]] = (DAILY, *PERIODS)

    def __init__(
        self,
        settings: Settings,
        adjust: Adjust = "qfq",
        *,
        clock: Callable[[], pd.Timestamp] | None = None,
    ) -> None:
        super().__init__(settings)
        if adjust not in get_args(Adjust):
            raise ConfigError(
                f"akshare adjust must be 'qfq' (forward), 'hfq' (backward) or '' (none), not {adjust!r}"
            )
        self.adjust: Adjust = adjust
        #: "now", for dropping intraday bars still forming
        self.clock = clock or (lambda: pd.Timestamp.now(tz="UTC"))

    def fetch(
        self, symbol: Symbol, start: date | None, end: date | None, interval: str = DAILY
    ) -> pd.DataFrame:
        """`interval` bars in [start, end]; SourceError naming the symbol and akshare's failure otherwise."""
        code = self.provider_symbol(symbol)
        reason = self.interval_unavailable(symbol, interval)
        if reason:
            raise SourceUnavailable(reason)
        if interval != DAILY:
            return self._fetch_minutes(symbol, code, start, end, interval)
        function = "stock_zh_index_daily_em" if symbol.is_index else "stock_zh_a_hist"
        try:
            if symbol.is_index:
                raw = download_index(code, start, end)
            else:
                raw = download_stock(code, start, end, self.adjust, self.settings.router.timeout_s)
        except Exception as exc:  # akshare raises requests, JSON, KeyError and TypeError failures alike
            raise SourceError(
                f"akshare {function}({code!r}) failed for {symbol}: {type(exc).__name__}: {exc}"
            ) from exc
        if raw is None or raw.empty:
            raise SourceError(
                f"akshare {function}({code!r}) returned no rows for {symbol} between {start or 'the start'} "
                f"and {end or 'today'} (suspended, not listed then, or wrong code)"
            )
        try:
            bars = index_frame_to_bars(raw, symbol) if symbol.is_index else stock_frame_to_bars(raw, symbol)
        except SchemaError as exc:
            raise SourceError(
                f"akshare {function} answer for {symbol} does not fit the Bar schema: {exc}"
            ) from exc
        bars = clip_dates(bars, start, end, symbol.tz)
        log.info("akshare bars", extra={"source": NAME, "symbol": symbol.canonical, "rows": len(bars)})
        return bars

    def _fetch_minutes(
        self, symbol: Symbol, code: str, start: date | None, end: date | None, interval: str
    ) -> pd.DataFrame:
        """Intraday bars in [start, end] from East Money's recent window; bars still forming are dropped."""
        function = "index_zh_a_hist_min_em" if symbol.is_index else "stock_zh_a_hist_min_em"
        limit = "the last 5 trading days" if interval == "1m" else "a recent window"
        try:
            if symbol.is_index:
                raw = download_index_minutes(code, start, end, interval, self.settings.router.timeout_s)
            else:
                raw = download_stock_minutes(code, start, end, interval, self.adjust)
        except Exception as exc:  # akshare raises requests, JSON, KeyError and TypeError failures alike
            raise SourceError(
                f"akshare {function}({code!r}, period={PERIODS[interval]!r}) failed for {symbol}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if raw is None or raw.empty:
            raise SourceError(
                f"akshare {function}({code!r}) returned no {interval} bars for {symbol} between "
                f"{start or 'the start'} and {end or 'today'}: East Money keeps {interval} bars for {limit} "
                "only (or the symbol did not trade then)"
            )
        try:
            bars = minute_frame_to_bars(raw, symbol, interval)
        except SchemaError as exc:
            raise SourceError(
                f"akshare {function} answer for {symbol} does not fit the Bar schema: {exc}"
            ) from exc
        bars = clip_dates(bars, start, end, symbol.tz)
        now = self.clock()
        forming = bars["ts"] > now
        if forming.any():
            log.info("akshare %s %s: dropped %d bar(s) still forming", symbol, interval, int(forming.sum()))
            bars = bars.loc[~forming].reset_index(drop=True)
        if start is not None and not bars.empty:
            first = bars["ts"].iloc[0].tz_convert(symbol.tz).date()
            if first > start:
                log.info(
                    "akshare %s %s bars start %s, not %s (East Money keeps %s only, or no trading before)",
                    symbol,
                    interval,
                    first,
                    start,
                    limit,
                )
        log.info(
            "akshare bars",
            extra={"source": NAME, "symbol": symbol.canonical, "interval": interval, "rows": len(bars)},
        )
        return bars
