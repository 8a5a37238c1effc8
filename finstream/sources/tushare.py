"""Tushare Pro provider: the HTTP call behind `tushare.pro_api().daily(...)` / `.index_daily(...)`.

Request: POST http://api.tushare.pro with JSON {"api_name": "daily" | "index_daily", "token": ...,
"params": {"ts_code": "600036.SH", "start_date": "YYYYMMDD", "end_date": "YYYYMMDD"}, "fields": ...}.
Answer: {"request_id": ..., "code": 0, "msg": "", "data": {"fields": [...], "items": [[...], ...],
"has_more": false}}, newest first; code != 0 carries the reason in "msg" (bad token, rate limit,
no permission).
`daily` is unadjusted (raw exchange prices); `vol` is in 手 (lots of 100 shares) and `amount` in 千元.

Daily bars only: Tushare's minute bars (`stk_mins` for stocks, `idx_mins` for indices) need a separately
bought minute permission that ordinary tokens lack, so `intervals` is ("1d",) and the router asks akshare
or yfinance for intraday bars instead.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any, ClassVar

import httpx
import pandas as pd

from finstream.config import Settings
from finstream.errors import SchemaError, SourceError, SourceUnavailable
from finstream.intervals import DAILY
from finstream.schema import daily_close_ts, to_bar_frame
from finstream.sources.base import Source, clip_dates
from finstream.symbols import Symbol

log = logging.getLogger(__name__)

NAME = "tushare"
API_URL = "http://api.tushare.pro"
FIELDS = "ts_code,trade_date,open,high,low,close,vol,amount"
NO_TOKEN = "no Tushare token: set FINSTREAM_TUSHARE_TOKEN or TUSHARE_TOKEN"
SHARES_PER_LOT = 100  # vol is in 手
YUAN_PER_AMOUNT_UNIT = 1000  # amount is in 千元
#: Tushare answers at most a few thousand rows per call; has_more pages are fetched with `offset`
MAX_PAGES = 20
#: code for a wrong or expired token ("您的token不对，请确认。")
BAD_TOKEN_CODE = 40101
#: rate limits ("抱歉，您每分钟最多访问该接口500次…") pass; these refusals do not, so the router moves on
PERMANENT_MARKERS = ("token", "访问权限", "积分")


def _is_permanent(code: object, msg: str) -> bool:
    """A bad token, no permission for the API, or too few points: retrying will not help."""
    if "最多访问" in msg:
        return False
    return code == BAD_TOKEN_CODE or any(m in msg.lower() for m in PERMANENT_MARKERS)


def api_name_for(symbol: Symbol) -> str:
    """`index_daily` for indices, `daily` for stocks."""
    return "index_daily" if symbol.is_index else "daily"


def query(
    api_name: str,
    params: dict[str, Any],
    *,
    token: str,
    fields: str = FIELDS,
    timeout: float,
    url: str = API_URL,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """POST one Tushare Pro query and return the decoded JSON answer (a non-zero `code` is kept)."""
    body = {"api_name": api_name, "token": token, "params": params, "fields": fields}
    try:
        with httpx.Client(timeout=timeout, transport=transport) as client:
            resp = client.post(url, json=body)
    except httpx.HTTPError as exc:
        raise SourceError(f"Tushare {api_name} request failed: {type(exc).__name__}: {exc}") from exc
    if resp.status_code != 200:
        raise SourceError(f"Tushare {api_name} answered HTTP {resp.status_code}: {resp.text[:200]!r}")
    try:
        answer = resp.json()
    except ValueError as exc:
        raise SourceError(f"Tushare {api_name} answer is not JSON: {resp.text[:200]!r}") from exc
    if not isinstance(answer, dict):
        raise SourceError(f"Tushare {api_name} answer is not a JSON object: {resp.text[:200]!r}")
    return answer


def download(
    symbol: Symbol,
    start: date | None,
    end: date | None,
    *,
    token: str,
    timeout: float,
    url: str = API_URL,
    transport: httpx.BaseTransport | None = None,
) -> list[dict[str, Any]]:
    """Every answer page for one symbol's daily bars in [start, end] (open ends left to Tushare)."""
    params: dict[str, Any] = {"ts_code": symbol.for_provider(NAME)}
    if start is not None:
        params["start_date"] = start.strftime("%Y%m%d")
    if end is not None:
        params["end_date"] = end.strftime("%Y%m%d")
    api_name = api_name_for(symbol)
    pages: list[dict[str, Any]] = []
    offset = 0
    for _ in range(MAX_PAGES):
        page_params = {**params, "offset": offset} if offset else params
        answer = query(api_name, page_params, token=token, timeout=timeout, url=url, transport=transport)
        pages.append(answer)
        data = answer.get("data") or {}
        items = data.get("items") or []
        if answer.get("code") != 0 or not data.get("has_more") or not items:
            return pages
        offset += len(items)
    log.warning(
        "tushare pages capped", extra={"source": NAME, "symbol": symbol.canonical, "pages": MAX_PAGES}
    )
    return pages


def answers_to_bars(
    answers: dict[str, Any] | list[dict[str, Any]], symbol: Symbol, ingested_at: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Map Tushare answers to the Bar schema: vol (手) x 100 -> shares, amount (千元) x 1000 -> yuan."""
    pages = [answers] if isinstance(answers, dict) else answers
    api_name = api_name_for(symbol)
    frames = []
    for answer in pages:
        code = answer.get("code")
        if code != 0:
            msg = answer.get("msg") or "(no message)"
            if _is_permanent(code, msg):
                raise SourceUnavailable(f"Tushare {api_name} refused {symbol} (code {code}): {msg}")
            raise SourceError(f"Tushare {api_name} failed for {symbol} (code {code}): {msg}")
        data = answer.get("data") or {}
        frames.append(pd.DataFrame(data.get("items") or [], columns=data.get("fields") or FIELDS.split(",")))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if frame.empty:
        raise SourceError(
            f"Tushare {api_name} returned no rows for {symbol} "
            "(suspended, not listed then, or outside the dates)"
        )
    missing = [c for c in FIELDS.split(",") if c not in frame.columns]
    if missing:
        raise SourceError(
            f"Tushare {api_name} answer for {symbol} lacks field(s) {missing}; got {list(frame.columns)}"
        )
    close = symbol.close_time
    days = pd.to_datetime(frame["trade_date"].astype(str), format="%Y%m%d")
    mapped = pd.DataFrame(
        {
            "symbol": symbol.canonical,
            "ts": daily_close_ts(days, symbol.tz, close.hour, close.minute).to_numpy(),
            "open": frame["open"].to_numpy(),
            "high": frame["high"].to_numpy(),
            "low": frame["low"].to_numpy(),
            "close": frame["close"].to_numpy(),
            "volume": pd.to_numeric(frame["vol"], errors="coerce").to_numpy() * SHARES_PER_LOT,
            "amount": pd.to_numeric(frame["amount"], errors="coerce").to_numpy() * YUAN_PER_AMOUNT_UNIT,
        }
    )
    return to_bar_frame(mapped, source=NAME, ingested_at=ingested_at)


class TushareSource(Source):
    """China A-shares (unadjusted `daily`) and indices (`index_daily`) from Tushare Pro; needs a token."""

    name: ClassVar[str] = NAME
    hosts: ClassVar[tuple[str, ...]] = ("api.tushare.pro",)
    #: daily only: minute bars (`stk_mins`) need a paid permission (see the module doc)
    intervals: ClassVar[tuple[str, ...]] = (DAILY,)

    def __init__(
        self, settings: Settings, *, url: str = API_URL, transport: httpx.BaseTransport | None = None
    ) -> None:
        super().__init__(settings)
        self.url = url
        self.transport = transport

    def unavailable_reason(self, symbol: Symbol) -> str | None:
        """A missing token, or a symbol outside China's A-share market."""
        if not self.settings.api_key(NAME):
            return NO_TOKEN
        return super().unavailable_reason(symbol)

    def fetch(
        self, symbol: Symbol, start: date | None, end: date | None, interval: str = DAILY
    ) -> pd.DataFrame:
        """Daily bars in [start, end]; SourceUnavailable without a token, SourceError on API errors."""
        token = self.settings.api_key(NAME)
        if not token:
            raise SourceUnavailable(NO_TOKEN)
        self.provider_symbol(symbol)
        reason = self.interval_unavailable(symbol, interval)
        if reason:
            raise SourceUnavailable(reason)
        pages = download(
            symbol,
            start,
            end,
            token=token,
            timeout=self.settings.router.timeout_s,
            url=self.url,
            transport=self.transport,
        )
        try:
            bars = answers_to_bars(pages, symbol)
        except SchemaError as exc:
            raise SourceError(f"Tushare answer for {symbol} does not fit the Bar schema: {exc}") from exc
        bars = clip_dates(bars, start, end, symbol.tz)
        log.info("tushare bars", extra={"source": NAME, "symbol": symbol.canonical, "rows": len(bars)})
        return bars
