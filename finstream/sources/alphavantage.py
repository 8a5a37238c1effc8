"""Alpha Vantage provider: TIME_SERIES_DAILY (raw, unadjusted daily OHLCV) and TIME_SERIES_INTRADAY over
HTTPS.

The JSON answer is {"Meta Data": {..., "5. Time Zone": "US/Eastern"}, "Time Series (Daily)":
{"2024-01-02": {"1. open": "187.1500", "2. high": ..., "3. low": ..., "4. close": ...,
"5. volume": "82488700"}, ...}}, newest first, every value a string. Problems come back as HTTP 200
with a single key instead: "Error Message" (bad symbol or key), "Note" (per-minute rate limit) or
"Information" (daily quota, or a premium feature such as outputsize=full on a free key).

Intraday (1m, 5m, 15m, 30m, 1h -> interval=1min, 5min, 15min, 30min, 60min): TIME_SERIES_INTRADAY with
outputsize=full, adjusted=false (raw prices, like the daily series) and extended_hours=false (the regular
session, like the other providers). Without `month` Alpha Vantage answers the trailing 30 days; for a
range with a start, one request per calendar month (`month=YYYY-MM`, history back to 2000-01), at most
MAX_MONTHS of them (the free key allows 25 requests a day). The answer is {"Meta Data": {...,
"4. Interval": "5min", "5. Output Size": "Full size", "6. Time Zone": "US/Eastern"}, "Time Series (5min)":
{"2024-08-02 15:55:00": {"1. open": ..., ...}}}, stamped "YYYY-MM-DD HH:MM:SS" in the meta data's zone.
Alpha Vantage does not document whether a stamp is the bar's start or end; its answers show the START:
with extended hours (04:00-20:00 New York) the latest 5min bar of a day is stamped 19:55:00 (e.g. IBM,
"3. Last Refreshed": "2024-08-02 19:55:00"), which only an open-time stamp allows. So the close time is
stamp + interval, cut at the end of the regular session. Intraday bars are served for US symbols only
(Alpha Vantage's intraday series is documented for US equities; its China symbols are daily-only here).
A bar still forming (its close time after the clock) is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from typing import Any, ClassVar, Literal

import httpx
import pandas as pd

from finstream.config import Settings
from finstream.errors import SchemaError, SourceError, SourceUnavailable
from finstream.intervals import DAILY, INTERVALS
from finstream.schema import daily_close_ts, to_bar_frame
from finstream.sources.base import Source, clip_dates
from finstream.symbols import Symbol

log = logging.getLogger(__name__)

NAME = "alphavantage"
BASE_URL = "https://www.alphavantage.co/query"
SERIES_KEY = "Time Series (Daily)"
FIELDS = {"1. open": "open", "2. high": "high", "3. low": "low", "4. close": "close", "5. volume": "volume"}
NO_KEY = "no Alpha Vantage key: set FINSTREAM_ALPHAVANTAGE_API_KEY or ALPHAVANTAGE_API_KEY"
OutputSize = Literal["full", "compact"]
#: finstream interval -> Alpha Vantage's intraday `interval`
AV_INTERVALS: dict[str, str] = {"1m": "1min", "5m": "5min", "15m": "15min", "30m": "30min", "1h": "60min"}
#: at most this many monthly intraday requests for one fetch
MAX_MONTHS = 24
#: Alpha Vantage's intraday history starts here
FIRST_MONTH = pd.Period("2000-01", freq="M")


def series_key(interval: str) -> str:
    """The JSON key of the bars: "Time Series (Daily)" or, e.g., "Time Series (5min)"."""
    return SERIES_KEY if interval == DAILY else f"Time Series ({AV_INTERVALS[interval]})"


def intraday_months(start: date | None, end: date | None, today: date) -> list[str | None]:
    """The `month` of each intraday request for [start, end]: [None] (the trailing 30 days) for an open
    start, else every YYYY-MM from start's month to end's (or today's). SourceUnavailable past MAX_MONTHS."""
    if start is None:
        return [None]
    first = max(pd.Period(start, freq="M"), FIRST_MONTH)
    last = pd.Period(min(end, today) if end is not None else today, freq="M")
    months: list[str | None] = [str(p) for p in pd.period_range(first, last, freq="M")]
    if len(months) > MAX_MONTHS:
        raise SourceUnavailable(
            f"Alpha Vantage intraday history comes one month per request; {start} to {end or today} is "
            f"{len(months)} months, more than the {MAX_MONTHS} this provider asks for in one fetch"
        )
    return months


def download(
    ticker: str,
    api_key: str,
    *,
    timeout: float,
    outputsize: OutputSize = "full",
    transport: httpx.BaseTransport | None = None,
    interval: str = DAILY,
    month: str | None = None,
) -> dict[str, Any]:
    """GET TIME_SERIES_DAILY (or, for an intraday `interval`, TIME_SERIES_INTRADAY for `month` or the
    trailing 30 days) for one ticker and return the decoded JSON (errors in the body are kept)."""
    params = {
        "function": "TIME_SERIES_DAILY" if interval == DAILY else "TIME_SERIES_INTRADAY",
        "symbol": ticker,
        "outputsize": outputsize,
        "apikey": api_key,
        "datatype": "json",
    }
    if interval != DAILY:
        params.update({"interval": AV_INTERVALS[interval], "adjusted": "false", "extended_hours": "false"})
        if month is not None:
            params["month"] = month
    try:
        with httpx.Client(timeout=timeout, transport=transport) as client:
            resp = client.get(BASE_URL, params=params)
    except httpx.HTTPError as exc:
        raise SourceError(f"Alpha Vantage request for {ticker} failed: {type(exc).__name__}: {exc}") from exc
    if resp.status_code != 200:
        # the URL carries the key: report the status and the start of the body, never the URL
        raise SourceError(f"Alpha Vantage answered HTTP {resp.status_code} for {ticker}: {resp.text[:200]!r}")
    try:
        payload = resp.json()
    except ValueError as exc:
        raise SourceError(f"Alpha Vantage answer for {ticker} is not JSON: {resp.text[:200]!r}") from exc
    if not isinstance(payload, dict):
        raise SourceError(f"Alpha Vantage answer for {ticker} is not a JSON object: {resp.text[:200]!r}")
    return payload


def payload_to_bars(
    payload: dict[str, Any] | list[dict[str, Any]],
    symbol: Symbol,
    ingested_at: pd.Timestamp | None = None,
    interval: str = DAILY,
) -> pd.DataFrame:
    """Map TIME_SERIES_DAILY / _INTRADAY answers (one, or one per month) to the Bar schema (volume in
    shares; Alpha Vantage gives no turnover). Intraday stamps are bar open times (see the module doc).

    Raises SourceUnavailable for "Error Message" (symbol or key rejected: retrying will not help) and
    SourceError quoting the "Note" / "Information" text (rate limit, quota, premium-only option).
    """
    if isinstance(payload, list):
        frames = [payload_to_bars(p, symbol, ingested_at, interval) for p in payload]
        bars = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        bars = bars.drop_duplicates(subset="ts", keep="last")
        return bars.sort_values("ts", kind="stable").reset_index(drop=True)
    key = series_key(interval)
    if "Error Message" in payload:
        raise SourceUnavailable(f"Alpha Vantage rejected {symbol}: {payload['Error Message']}")
    if "Note" in payload:
        raise SourceError(f"Alpha Vantage rate limit for {symbol}: {payload['Note']}")
    if "Information" in payload:
        raise SourceError(f"Alpha Vantage refused {symbol}: {payload['Information']}")
    series = payload.get(key)
    if not isinstance(series, dict):
        raise SourceError(f"Alpha Vantage answer for {symbol} has no {key!r}; keys: {sorted(payload)}")
    if not series:
        raise SourceError(f"Alpha Vantage returned an empty {key!r} for {symbol}")
    frame = pd.DataFrame.from_dict(series, orient="index")
    missing = [c for c in FIELDS if c not in frame.columns]
    if missing:
        raise SourceError(
            f"Alpha Vantage series for {symbol} lacks field(s) {missing}; got {list(frame.columns)}"
        )
    frame = frame[list(FIELDS)].rename(columns=FIELDS)
    if interval == DAILY:
        close = symbol.close_time
        ts = daily_close_ts(
            pd.to_datetime(frame.index, format="%Y-%m-%d"), symbol.tz, close.hour, close.minute
        ).to_numpy()
    else:
        try:
            opens = pd.to_datetime(pd.Series(frame.index), format="%Y-%m-%d %H:%M:%S")
        except (ValueError, TypeError) as exc:
            raise SourceError(
                f"Alpha Vantage {key!r} for {symbol} has unreadable time stamps: {exc}"
            ) from exc
        zone = _time_zone(payload, symbol)
        ts = symbol.exchange_market.close_times(opens.dt.tz_localize(zone), INTERVALS[interval]).to_numpy()
    mapped = pd.DataFrame(
        {
            "symbol": symbol.canonical,
            "ts": ts,
            **{col: frame[col].to_numpy() for col in FIELDS.values()},
        }
    )
    return to_bar_frame(mapped, source=NAME, interval=interval, ingested_at=ingested_at)


def _time_zone(payload: dict[str, Any], symbol: Symbol) -> str:
    """The zone the answer's stamps are in: its meta data's "N. Time Zone", else the exchange's."""
    meta = payload.get("Meta Data")
    if isinstance(meta, dict):
        for name, value in meta.items():
            if name.endswith("Time Zone") and isinstance(value, str) and value:
                return value
    return symbol.tz


class AlphaVantageSource(Source):
    """US stocks (and SSE/SZSE stocks as .SHH/.SHZ) from Alpha Vantage; needs an API key. Daily bars for
    all of them, 1m/5m/15m/30m/1h bars for US stocks."""

    name: ClassVar[str] = NAME
    hosts: ClassVar[tuple[str, ...]] = ("www.alphavantage.co",)
    intervals: ClassVar[tuple[str, ...]] = (DAILY, *AV_INTERVALS)

    def __init__(
        self,
        settings: Settings,
        *,
        outputsize: OutputSize = "full",
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], pd.Timestamp] | None = None,
    ) -> None:
        super().__init__(settings)
        self.outputsize: OutputSize = outputsize
        self.transport = transport
        #: "now": the last month asked for, and which intraday bars are still forming
        self.clock = clock or (lambda: pd.Timestamp.now(tz="UTC"))

    def unavailable_reason(self, symbol: Symbol) -> str | None:
        """A missing key, or a symbol Alpha Vantage has no daily series for (indices, HK, Beijing)."""
        if not self.settings.api_key(NAME):
            return NO_KEY
        return super().unavailable_reason(symbol)

    def interval_unavailable(self, symbol: Symbol, interval: str) -> str | None:
        """`intervals`, and intraday bars for US symbols only."""
        reason = super().interval_unavailable(symbol, interval)
        if reason is None and interval != DAILY and symbol.market != "US":
            return f"Alpha Vantage intraday bars cover US symbols only, not {symbol.canonical}"
        return reason

    def fetch(
        self, symbol: Symbol, start: date | None, end: date | None, interval: str = DAILY
    ) -> pd.DataFrame:
        """`interval` bars in [start, end]; SourceUnavailable without a key, SourceError on API errors."""
        api_key = self.settings.api_key(NAME)
        if not api_key:
            raise SourceUnavailable(NO_KEY)
        ticker = self.provider_symbol(symbol)
        reason = self.interval_unavailable(symbol, interval)
        if reason:
            raise SourceUnavailable(reason)
        now = self.clock()
        months = (
            [None] if interval == DAILY else intraday_months(start, end, now.tz_convert(symbol.tz).date())
        )
        payloads = [
            download(
                ticker,
                api_key,
                timeout=self.settings.router.timeout_s,
                outputsize=self.outputsize,
                transport=self.transport,
                interval=interval,
                month=month,
            )
            for month in months
        ]
        try:
            bars = payload_to_bars(payloads if len(payloads) > 1 else payloads[0], symbol, interval=interval)
        except SchemaError as exc:
            raise SourceError(
                f"Alpha Vantage answer for {symbol} does not fit the Bar schema: {exc}"
            ) from exc
        bars = clip_dates(bars, start, end, symbol.tz)
        if interval != DAILY:
            forming = bars["ts"] > now
            if forming.any():
                log.info(
                    "alphavantage %s %s: dropped %d bar(s) still forming",
                    symbol,
                    interval,
                    int(forming.sum()),
                )
                bars = bars.loc[~forming].reset_index(drop=True)
        log.info(
            "alphavantage bars",
            extra={"source": NAME, "symbol": symbol.canonical, "interval": interval, "rows": len(bars)},
        )
        return bars
