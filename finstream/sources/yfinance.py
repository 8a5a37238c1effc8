"""yfinance provider: daily and intraday bars from Yahoo Finance for US, Hong Kong and (SS/SZ-listed) China
symbols.

Daily: `yf.Ticker(t).history(interval="1d", auto_adjust=True, ...)` (yfinance 1.7) returns a frame indexed
by a tz-aware DatetimeIndex named "Date" (midnight of each trading day in the exchange zone), with columns
Open, High, Low, Close (float64, split- and dividend-adjusted), Volume (int64, shares), Dividends,
"Stock Splits" and, for funds, "Capital Gains".

Intraday (1m, 5m, 15m, 30m, 1h -> Yahoo's "1m", "5m", "15m", "30m", "60m"): the same columns, indexed by a
tz-aware DatetimeIndex named "Datetime" in the exchange zone, regular session only (`prepost=False`).
Yahoo stamps an intraday bar with its OPEN time (the chart API's `timestamp`; yfinance itself drops a bar
as outside the session when `index >= session end` or `index + interval <= session start`, i.e. it reads
the index as the bar's start), so the close time is open + interval, cut at the end of the session the
bar opens in (Yahoo's last US hourly bar opens 15:30 and closes 16:00). yfinance builds 30m bars from
Yahoo's 15m ones (a Yahoo bug), stamped by their open as well.

Yahoo's intraday history limits, counted back from today: 1m bars for the last 30 days and at most 7 days
per request (fetched here in 7-day pieces); 5m, 15m and 30m bars for the last 60 days; 1h bars for the
last 730 days. A range that starts before the limit is refused with SourceUnavailable naming the limit
(not clamped: a silently shorter history would look like a complete one); an open start means "as far
back as Yahoo goes". A bar still forming (its close time after the clock) is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any, ClassVar

import pandas as pd

from finstream.config import Settings
from finstream.errors import SchemaError, SourceError, SourceUnavailable
from finstream.intervals import DAILY, INTERVALS
from finstream.schema import daily_close_ts, to_bar_frame
from finstream.sources.base import Source, clip_dates
from finstream.symbols import Symbol

log = logging.getLogger(__name__)

NAME = "yfinance"
PRICE_COLUMNS = ["Open", "High", "Low", "Close", "Volume"]
#: finstream interval -> Yahoo's
YAHOO_INTERVALS: dict[str, str] = {"1m": "1m", "5m": "5m", "15m": "15m", "30m": "30m", "1h": "60m"}
#: how many days back (today included) Yahoo serves each intraday interval
LOOKBACK_DAYS: dict[str, int] = {"1m": 30, "5m": 60, "15m": 60, "30m": 60, "1h": 730}
#: the longest span one request may cover (Yahoo refuses more than 7 days of 1m bars per request)
REQUEST_DAYS: dict[str, int] = {"1m": 7}


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


def intraday_range(start: date | None, end: date | None, interval: str, today: date) -> tuple[date, date]:
    """The [start, end] dates (inclusive) to ask Yahoo for; SourceUnavailable when `start` lies before
    Yahoo's limit for `interval` (an open start is the limit itself, an open or future end is today)."""
    days = LOOKBACK_DAYS[interval]
    earliest = today - timedelta(days=days - 1)
    if start is not None and start < earliest:
        raise SourceUnavailable(
            f"Yahoo serves {interval} bars for the last {days} days only (from {earliest}); "
            f"{start} is earlier"
        )
    first = start if start is not None else earliest
    last = min(end, today) if end is not None else today
    return first, last


def download_intraday(ticker: str, start: date, end: date, interval: str, timeout: float) -> pd.DataFrame:
    """Call `yf.Ticker(ticker).history(interval=...)` for [start, end] inclusive, in pieces Yahoo accepts
    (7 days for 1m bars); the pieces joined, oldest first.

    A piece without trading (a weekend, a holiday week) is skipped; when no piece has bars, the first
    piece's error is raised (it carries Yahoo's reason).
    """
    import yfinance as yf
    from yfinance.exceptions import YFPricesMissingError

    yf.config.debug.hide_exceptions = False
    step = timedelta(days=REQUEST_DAYS.get(interval, (end - start).days + 1))
    ticker_obj = yf.Ticker(ticker)
    frames: list[pd.DataFrame] = []
    missing: YFPricesMissingError | None = None
    piece = start
    while piece <= end:
        stop = min(piece + step, end + timedelta(days=1))  # yfinance's end is exclusive
        try:
            frame = ticker_obj.history(
                interval=YAHOO_INTERVALS[interval],
                start=piece.isoformat(),
                end=stop.isoformat(),
                auto_adjust=True,
                timeout=timeout,
            )
        except YFPricesMissingError as exc:
            log.info("yfinance %s %s: no bars from %s to %s: %s", ticker, interval, piece, stop, exc)
            missing = missing or exc
        else:
            if frame is not None and not frame.empty:
                frames.append(frame)
        piece = stop
    if not frames:
        if missing is not None:
            raise missing
        return pd.DataFrame()
    joined = pd.concat(frames) if len(frames) > 1 else frames[0]
    return joined[~joined.index.duplicated(keep="last")].sort_index()


def history_to_bars(
    raw: pd.DataFrame, symbol: Symbol, ingested_at: pd.Timestamp | None = None, interval: str = DAILY
) -> pd.DataFrame:
    """Map a `history()` frame to the Bar schema. Daily: each exchange-local date stamped with the close,
    as UTC. Intraday: each bar's open time (the index) + `interval`, cut at its session's end, as UTC.

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
    if interval == DAILY:
        close = symbol.close_time
        # the index is midnight in the exchange zone: its wall-clock date is the trading day
        ts = daily_close_ts(raw.index, symbol.tz, close.hour, close.minute)
    else:
        if raw.index.tz is None:
            raise SourceError(f"yfinance {interval} history for {symbol} has a naive index (no time zone)")
        ts = symbol.exchange_market.close_times(pd.Series(raw.index), INTERVALS[interval])
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
    return to_bar_frame(mapped, source=NAME, interval=interval, ingested_at=ingested_at)


class YfinanceSource(Source):
    """US, Hong Kong and China symbols from Yahoo Finance via yfinance (adjusted prices): daily bars, and
    1m/5m/15m/30m/1h bars within Yahoo's intraday limits (see the module doc)."""

    name: ClassVar[str] = NAME
    hosts: ClassVar[tuple[str, ...]] = ("query1.finance.yahoo.com", "query2.finance.yahoo.com")
    intervals: ClassVar[tuple[str, ...]] = (DAILY, *YAHOO_INTERVALS)

    def __init__(self, settings: Settings, *, clock: Callable[[], pd.Timestamp] | None = None) -> None:
        super().__init__(settings)
        #: "now": where Yahoo's intraday limits are counted from, and which bars are still forming
        self.clock = clock or (lambda: pd.Timestamp.now(tz="UTC"))

    def fetch(
        self, symbol: Symbol, start: date | None, end: date | None, interval: str = DAILY
    ) -> pd.DataFrame:
        """`interval` bars in [start, end]; SourceUnavailable for a range beyond Yahoo's intraday limit,
        SourceError naming the ticker and yfinance's failure otherwise."""
        ticker = self.provider_symbol(symbol)
        reason = self.interval_unavailable(symbol, interval)
        if reason:
            raise SourceUnavailable(reason)
        now = self.clock()
        try:
            if interval == DAILY:
                raw = download(ticker, start, end, self.settings.router.timeout_s)
            else:
                first, last = intraday_range(start, end, interval, now.tz_convert(symbol.tz).date())
                raw = download_intraday(ticker, first, last, interval, self.settings.router.timeout_s)
        except SourceError:
            raise
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
            bars = history_to_bars(raw, symbol, interval=interval)
        except SchemaError as exc:
            raise SourceError(f"yfinance answer for {symbol} does not fit the Bar schema: {exc}") from exc
        bars = clip_dates(bars, start, end, symbol.tz)
        if interval != DAILY:
            forming = bars["ts"] > now
            if forming.any():
                log.info(
                    "yfinance %s %s: dropped %d bar(s) still forming", symbol, interval, int(forming.sum())
                )
                bars = bars.loc[~forming].reset_index(drop=True)
        log.info(
            "yfinance bars",
            extra={"source": NAME, "symbol": symbol.canonical, "interval": interval, "rows": len(bars)},
        )
        return bars
