"""akshare provider: China A-share and SSE/SZSE index daily bars from East Money, through akshare.

- Stocks: `ak.stock_zh_a_hist(symbol="600036", period="daily", start_date, end_date, adjust, timeout)`,
  columns 日期 (datetime.date), 股票代码, 开盘, 收盘, 最高, 最低 (float64), 成交量 (int64, 手 = lots of
  100 shares), 成交额 (float64, yuan), 振幅, 涨跌幅, 涨跌额, 换手率.
- Indices: `ak.stock_zh_index_daily_em(symbol="sh000300", start_date, end_date)`, columns date (str
  YYYY-MM-DD), open, close, high, low (float64), volume (int64, 手), amount (float64, yuan). Chosen over
  `index_zh_a_hist`, which first pages through East Money's whole market list (dozens of requests) to
  guess the exchange from the bare code, and can confuse SSE index 000001 with SZSE stock 000001.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import ClassVar, Literal, get_args

import pandas as pd

from finstream.config import Settings
from finstream.errors import ConfigError, SchemaError, SourceError
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
    """China A-shares (forward-adjusted by default) and SSE/SZSE indices via akshare's East Money API."""

    name: ClassVar[str] = NAME
    #: both akshare functions used here call https://push2his.eastmoney.com/api/qt/stock/kline/get
    hosts: ClassVar[tuple[str, ...]] = ("push2his.eastmoney.com",)

    def __init__(self, settings: Settings, adjust: Adjust = "qfq") -> None:
        super().__init__(settings)
        if adjust not in get_args(Adjust):
            raise ConfigError(
                f"akshare adjust must be 'qfq' (forward), 'hfq' (backward) or '' (none), not {adjust!r}"
            )
        self.adjust: Adjust = adjust

    def fetch(self, symbol: Symbol, start: date | None, end: date | None) -> pd.DataFrame:
        """Daily bars in [start, end]; SourceError naming the symbol and akshare's failure otherwise."""
        code = self.provider_symbol(symbol)
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
