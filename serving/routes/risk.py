"""Risk (viewer key): GET /risk, the current VaR / ES per method and level (with the model-based method
from the `finstream-volatility` champion), its volatility forecast, drawdown and the active alerts per
symbol; POST /risk/portfolio, the same for a portfolio given by weights (422 naming what
is wrong with them). Computed from the validated bars the service holds, by `finstream.risk`."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from finstream.risk.measures import PortfolioWeightsError
from serving.payloads import (
    PortfolioRequest,
    PortfolioRiskResponse,
    RiskAlert,
    RiskResponse,
    RiskSummary,
    VaREstimate,
    VolatilityForecast,
    json_response,
)
from serving.risk_book import RiskView
from serving.routes.access import ViewerKey
from serving.routes.market import QueryError, split_symbols
from serving.runtime import Runtime
from serving.telemetry import RISK_ALERTS, RISK_VAR, VOLATILITY_FORECAST

router = APIRouter()


@router.get("/risk", response_model=RiskResponse, responses={404: {"description": "unknown symbol"}})
def risk(
    symbols: Annotated[list[str], Query(description="Comma-separated or repeated, e.g. 000300.SH,^GSPC")],
    caller: ViewerKey,
    runtime: Runtime,
) -> Response:
    """Current risk per symbol at its latest validated bar."""
    views = [runtime.risk.symbol(s) for s in split_symbols(symbols)]
    return json_response(
        RiskResponse(interval=runtime.history.interval, risk=[_summary(v, runtime) for v in views])
    )


@router.post("/risk/portfolio", response_model=PortfolioRiskResponse)
def portfolio(body: PortfolioRequest, caller: ViewerKey, runtime: Runtime) -> Response:
    """Current risk of a portfolio of validated symbols, and the position / gross-exposure limit alerts."""
    try:
        view = runtime.risk.portfolio(body.weights)
    except PortfolioWeightsError as exc:
        raise QueryError(str(exc)) from None
    return json_response(
        PortfolioRiskResponse(
            interval=runtime.history.interval, weights=body.weights, risk=_summary(view, runtime)
        )
    )


def _summary(view: RiskView, runtime: Runtime) -> RiskSummary:
    params = runtime.risk.params
    estimates = [VaREstimate.model_validate(e) for e in view.var(params)]
    for e in estimates:
        if e.var is not None:
            RISK_VAR.labels(name=view.name, method=e.method, level=f"{e.level:g}").set(e.var)
    counts: dict[str, int] = {"info": 0, "warning": 0, "critical": 0}
    for alert in view.alerts:
        counts[alert.severity] += 1
    for severity, n in counts.items():
        RISK_ALERTS.labels(name=view.name, severity=severity).set(n)
    forecast = None
    if view.forecast is not None:
        forecast = VolatilityForecast.model_validate(view.forecast)
        VOLATILITY_FORECAST.labels(name=view.name, kind=forecast.kind).set(forecast.volatility)
    return RiskSummary(
        name=view.name,
        as_of=view.as_of.to_pydatetime(),
        bars=view.bars,
        var=estimates,
        volatility=_value(view, "vol"),
        ewma_volatility=_value(view, "ewma_vol"),
        drawdown=_value(view, "drawdown"),
        max_drawdown=_value(view, "max_drawdown"),
        volatility_spike=_value(view, "vol_spike"),
        volatility_forecast=forecast,
        alerts=[RiskAlert.model_validate(a.to_dict()) for a in view.alerts],
    )


def _value(view: RiskView, key: str) -> float | None:
    number = view.values.get(key, math.nan)
    return number if math.isfinite(number) else None
