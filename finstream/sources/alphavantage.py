"""Alpha Vantage provider: TIME_SERIES_DAILY over HTTPS (raw, unadjusted daily OHLCV).

The JSON answer is {"Meta Data": {..., "5. Time Zone": "US/Eastern"}, "Time Series (Daily)":
{"2024-01-02": {"1. open": "187.1500", "2. high": ..., "3. low": ..., "4. close": ...,
"5. volume": "82488700"}, ...}}, newest first, every value a string. Problems come back as HTTP 200
with a single key instead: "Error Message" (bad symbol or key), "Note" (per-minute rate limit) or
"Information" (daily quota, or a premium feature such as outputsize=full on a free key).
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any, ClassVar, Literal

import httpx
import pandas as pd

from finstream.config import Settings
from finstream.errors import SchemaError, SourceError, SourceUnavailable
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


def download(
    ticker: str,
    api_key: str,
    *,
    timeout: float,
    outputsize: OutputSize = "full",
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """GET TIME_SERIES_DAILY for one ticker and return the decoded JSON (errors in the body are kept)."""
    params = {
        "function": "TIME_SERIES_DAILY",
        "symbol": ticker,
        "outputsize": outputsize,
        "apikey": api_key,
        "datatype": "json",
    }
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
    payload: dict[str, Any], symbol: Symbol, ingested_at: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Map a TIME_SERIES_DAILY answer to the Bar schema (volume in shares; Alpha Vantage gives no turnover).

    Raises SourceUnavailable for "Error Message" (symbol or key rejected: retrying will not help) and
    SourceError quoting the "Note" / "Information" text (rate limit, quota, premium-only option).
    """
    if "Error Message" in payload:
        raise SourceUnavailable(f"Alpha Vantage rejected {symbol}: {payload['Error Message']}")
    if "Note" in payload:
        raise SourceError(f"Alpha Vantage rate limit for {symbol}: {payload['Note']}")
    if "Information" in payload:
        raise SourceError(f"Alpha Vantage refused {symbol}: {payload['Information']}")
    series = payload.get(SERIES_KEY)
    if not isinstance(series, dict):
        raise SourceError(f"Alpha Vantage answer for {symbol} has no {SERIES_KEY!r}; keys: {sorted(payload)}")
    if not series:
        raise SourceError(f"Alpha Vantage returned an empty {SERIES_KEY!r} for {symbol}")
    frame = pd.DataFrame.from_dict(series, orient="index")
    missing = [c for c in FIELDS if c not in frame.columns]
    if missing:
        raise SourceError(
            f"Alpha Vantage series for {symbol} lacks field(s) {missing}; got {list(frame.columns)}"
        )
    frame = frame[list(FIELDS)].rename(columns=FIELDS)
    close = symbol.close_time
    mapped = pd.DataFrame(
        {
            "symbol": symbol.canonical,
            "ts": daily_close_ts(
                pd.to_datetime(frame.index, format="%Y-%m-%d"), symbol.tz, close.hour, close.minute
            ).to_numpy(),
            **{col: frame[col].to_numpy() for col in FIELDS.values()},
        }
    )
    return to_bar_frame(mapped, source=NAME, ingested_at=ingested_at)


class AlphaVantageSource(Source):
    """US stocks (and SSE/SZSE stocks as .SHH/.SHZ) from Alpha Vantage; needs an API key."""

    name: ClassVar[str] = NAME
    hosts: ClassVar[tuple[str, ...]] = ("www.alphavantage.co",)

    def __init__(
        self,
        settings: Settings,
        *,
        outputsize: OutputSize = "full",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(settings)
        self.outputsize: OutputSize = outputsize
        self.transport = transport

    def unavailable_reason(self, symbol: Symbol) -> str | None:
        """A missing key, or a symbol Alpha Vantage has no daily series for (indices, HK, Beijing)."""
        if not self.settings.api_key(NAME):
            return NO_KEY
        return super().unavailable_reason(symbol)

    def fetch(self, symbol: Symbol, start: date | None, end: date | None) -> pd.DataFrame:
        """Daily bars in [start, end]; SourceUnavailable without a key, SourceError on API errors."""
        api_key = self.settings.api_key(NAME)
        if not api_key:
            raise SourceUnavailable(NO_KEY)
        ticker = self.provider_symbol(symbol)
        payload = download(
            ticker,
            api_key,
            timeout=self.settings.router.timeout_s,
            outputsize=self.outputsize,
            transport=self.transport,
        )
        try:
            bars = payload_to_bars(payload, symbol)
        except SchemaError as exc:
            raise SourceError(
                f"Alpha Vantage answer for {symbol} does not fit the Bar schema: {exc}"
            ) from exc
        bars = clip_dates(bars, start, end, symbol.tz)
        log.info("alphavantage bars", extra={"source": NAME, "symbol": symbol.canonical, "rows": len(bars)})
        return bars
