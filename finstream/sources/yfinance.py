"""yfinance provider: daily bars from Yahoo Finance for US, Hong Kong and (SS/SZ-listed) China symbols.

`yf.Ticker(t).history(interval="1d", auto_adjust=True, ...)` (yfinance 1.7) returns a frame indexed by a
tz-aware DatetimeIndex named "Date" (midnight of each trading day in the exchange zone), with columns
Open, High, Low, Close (float64, split- and dividend-adjusted), Volume (int64, shares), Dividends,
"Stock Splits" and, for funds, "Capital Gains".
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any, ClassVar

import pandas as pd

from finstream.errors import SchemaError, SourceError
from finstream.schema import daily_close_ts, to_bar_frame
from finstream.sources.base import Source, clip_dates
from finstream.symbols import Symbol

log = logging.getLogger(__name__)

NAME = "yfinance"
PRICE_COLUMNS = ["Open", "High", "Low", "Close", "Volume"]


def download(ticker: str, start: date | None, end: date | None, timeout: float) -> pd.DataFrame:
    """Call `yf.Ticker(ticker).history` for [start, end] inclusive (yfinance's own `end` is exclusive).

    Failures raise instead of being logged behind an empty frame: yfinance 1.7 deprecates the per-call
    `raise_errors=True` (it warns) in favour of its process-wide `yf.config.debug.hide_exceptions = False`.
    """
    import yfinance as yf

    yf.config.debug.hide_exceptions = False
    kwargs: dict[str, Any] = {"interval": "1d", "auto_adjust": True, "timeout": timeout}
    if start is None:
        kwargs["period"] = "max"
    else:
        kwargs["start"] = start.isoformat()
    if end is not None:
        kwargs["end"] = (end + timedelta(days=1)).isoformat()
    return yf.Ticker(ticker).history(**kwargs)


def history_to_bars(
    raw: pd.DataFrame, symbol: Symbol, ingested_at: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Map a `history()` frame to the Bar schema: each exchange-local date stamped with the close, as UTC.

    Volume is in shares; yfinance reports no turnover, so `amount` is left empty. Dividends and splits
    are already folded into the adjusted prices (auto_adjust=True) and are dropped.
    """
    if raw.empty:
        raise SourceError(
            f"yfinance returned no rows for {symbol} (delisted, wrong ticker, or no trading in range)"
        )
    missing = [c for c in PRICE_COLUMNS if c not in raw.columns]
    if missing:
        raise SourceError(
            f"yfinance history for {symbol} lacks column(s) {missing}; got {list(raw.columns)} "
            "(has the installed yfinance changed its output?)"
        )
    if not isinstance(raw.index, pd.DatetimeIndex):
        raise SourceError(
            f"yfinance history for {symbol} is not indexed by date (got {type(raw.index).__name__})"
        )
    close = symbol.close_time
    # the index is midnight in the exchange zone: its wall-clock date is the trading day
    ts = daily_close_ts(raw.index, symbol.tz, close.hour, close.minute)
    mapped = pd.DataFrame(
        {
            "symbol": symbol.canonical,
            "ts": ts.to_numpy(),
            "open": raw["Open"].to_numpy(),
            "high": raw["High"].to_numpy(),
            "low": raw["Low"].to_numpy(),
            "close": raw["Close"].to_numpy(),
            "volume": raw["Volume"].to_numpy(),
        }
    )
    return to_bar_frame(mapped, source=NAME, ingested_at=ingested_at)


class YfinanceSource(Source):
    """US, Hong Kong and China symbols from Yahoo Finance via yfinance (adjusted prices)."""

    name: ClassVar[str] = NAME
    hosts: ClassVar[tuple[str, ...]] = ("query1.finance.yahoo.com", "query2.finance.yahoo.com")

    def fetch(self, symbol: Symbol, start: date | None, end: date | None) -> pd.DataFrame:
        """Daily bars in [start, end]; SourceError naming the ticker and yfinance's failure otherwise."""
        ticker = self.provider_symbol(symbol)
        try:
            raw = download(ticker, start, end, self.settings.router.timeout_s)
        except Exception as exc:  # yfinance raises YF*Error, HTTP-client and parsing errors alike
            raise SourceError(
                f"yfinance history({ticker!r}) failed for {symbol}: {type(exc).__name__}: {exc}"
            ) from exc
        if raw is None or raw.empty:
            raise SourceError(
                f"yfinance history({ticker!r}) returned no rows for {symbol} between {start or 'the start'} "
                f"and {end or 'today'} (delisted, wrong ticker, or no trading in range)"
            )
        try:
            bars = history_to_bars(raw, symbol)
        except SchemaError as exc:
            raise SourceError(f"yfinance answer for {symbol} does not fit the Bar schema: {exc}") from exc
        bars = clip_dates(bars, start, end, symbol.tz)
        log.info("yfinance bars", extra={"source": NAME, "symbol": symbol.canonical, "rows": len(bars)})
        return bars
