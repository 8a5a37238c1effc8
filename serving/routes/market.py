"""Market data (viewer key): GET /quotes, the latest bar per symbol from the online store, and
GET /history/{symbol}, validated daily bars from the validate stage's files."""

from __future__ import annotations

import math
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from serving.history import MAX_LIMIT as MAX_HISTORY
from serving.online import PRICE_COLUMNS
from serving.payloads import MAX_SYMBOLS, Bar, HistoryResponse, Quote, QuotesResponse, json_response
from serving.routes.access import ReadingViewer, ViewerKey
from serving.runtime import Runtime
from serving.telemetry import FEATURE_AGE

router = APIRouter()


class QueryError(Exception):
    """A query parameter that parses but makes no sense (422)."""


@router.get("/quotes", response_model=QuotesResponse)
async def quotes(
    symbols: Annotated[list[str], Query(description="Comma-separated or repeated, e.g. 000300.SH,^GSPC")],
    caller: ReadingViewer,
    runtime: Runtime,
) -> Response:
    """The latest bar per symbol from the online store's price features."""
    wanted = split_symbols(symbols)
    rows = await runtime.read(caller, wanted)
    ages = rows.ages()
    out = []
    for i, symbol in enumerate(rows.symbols):
        FEATURE_AGE.labels(symbol=symbol).set(float(ages[i]))
        out.append(
            Quote(
                symbol=symbol,
                ts=rows.timestamp(i),
                **{c: _float(rows.values.get(c, [None] * (i + 1))[i]) for c in PRICE_COLUMNS},
                stale=runtime.is_stale(ages[i]),
            )
        )
    return json_response(QuotesResponse(quotes=out))


@router.get("/history/{symbol}", response_model=HistoryResponse, responses={404: {"description": "unknown"}})
def history(
    symbol: Annotated[str, Path(description="e.g. 000300.SH")],
    caller: ViewerKey,
    runtime: Runtime,
    start: Annotated[date | None, Query(description="First trading day (exchange-local), inclusive.")] = None,
    end: Annotated[date | None, Query(description="Last trading day (exchange-local), inclusive.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = 1000,
) -> Response:
    """Validated daily bars of one symbol (the validate stage's output), ascending by time.

    At most `limit` bars: the latest ones of the range; `truncated` says older ones were left out
    (page back with `end` before the first bar returned).
    """
    try:
        page = runtime.history.bars(symbol, start, end, limit)
    except ValueError as exc:
        raise QueryError(str(exc)) from None
    frame = page.bars
    columns = [c for c in ("ts", *PRICE_COLUMNS) if c in frame.columns]
    records = frame[columns].to_dict("records")
    return json_response(
        HistoryResponse(
            symbol=page.symbol,
            bars=[
                Bar.model_validate({k: (_float(v) if k != "ts" else v) for k, v in r.items()})
                for r in records
            ],
            total=page.total,
            truncated=page.truncated,
        )
    )


def split_symbols(values: list[str]) -> list[str]:
    symbols = list(dict.fromkeys(s.strip() for v in values for s in v.split(",") if s.strip()))
    if not symbols:
        raise QueryError("symbols: give at least one symbol, e.g. ?symbols=000300.SH,^GSPC")
    if len(symbols) > MAX_SYMBOLS:
        raise QueryError(f"symbols: at most {MAX_SYMBOLS} per request")
    return symbols


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
