"""The service's Prometheus metrics (defined once, served by BentoML at /metrics) and the ASGI middleware that
records each request's latency and error status."""

from __future__ import annotations

import time
from typing import Any

import bentoml
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_SECONDS = bentoml.metrics.Histogram(
    name="finstream_request_duration_seconds",
    documentation="finstream API request latency by endpoint and status",
    labelnames=["endpoint", "method", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PREDICTIONS = bentoml.metrics.Counter(
    name="finstream_predictions_total",
    documentation="symbols forecast, by registered model, version and A/B variant",
    labelnames=["model", "version", "variant"],
)
SHADOW_GAP = bentoml.metrics.Histogram(
    name="finstream_shadow_abs_difference",
    documentation="|challenger - champion| per symbol in shadow mode, by registered model",
    labelnames=["model", "champion_version", "challenger_version"],
    buckets=(1e-5, 1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
)
FEATURE_AGE = bentoml.metrics.Gauge(
    name="finstream_feature_age_seconds",
    documentation="age of the latest online features served, per symbol",
    labelnames=["symbol"],
    multiprocess_mode="livemostrecent",  # one value per symbol across workers
)
ERRORS = bentoml.metrics.Counter(
    name="finstream_errors_total",
    documentation="finstream API error responses by endpoint and status",
    labelnames=["endpoint", "status"],
)


class ObserveMiddleware:
    """Latency histogram and error counter per route template (bounded cardinality); plain ASGI, so it
    adds no task or thread per request (Starlette's BaseHTTPMiddleware did, at ~0.3 ms a request)."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.inner(scope, receive, observe)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            REQUEST_SECONDS.labels(endpoint=endpoint, method=scope["method"], status=str(status)).observe(
                time.perf_counter() - started
            )
            if status >= 400:
                ERRORS.labels(endpoint=endpoint, status=str(status)).inc()


RISK_VAR = bentoml.metrics.Gauge(
    name="finstream_risk_var",
    documentation="latest value at risk served (fraction of position value), per symbol or portfolio",
    labelnames=["name", "method", "level"],
    multiprocess_mode="livemostrecent",
)
RISK_ALERTS = bentoml.metrics.Gauge(
    name="finstream_risk_alerts",
    documentation="risk alerts active at the latest bar, per symbol or portfolio and severity",
    labelnames=["name", "severity"],
    multiprocess_mode="livemostrecent",
)
VOLATILITY_FORECAST = bentoml.metrics.Gauge(
    name="finstream_volatility_forecast",
    documentation="the volatility champion's next-bar forecast (fraction), per symbol and model kind",
    labelnames=["name", "kind"],
    multiprocess_mode="livemostrecent",
)
WS_CONNECTIONS = bentoml.metrics.Gauge(
    name="finstream_ws_connections",
    documentation="open WebSocket sockets per real-time channel",
    labelnames=["channel"],
    multiprocess_mode="livesum",
)
WS_MESSAGES = bentoml.metrics.Counter(
    name="finstream_ws_messages",
    documentation="real-time channel messages sent to WebSocket clients, per channel",
    labelnames=["channel"],
)
MODEL_LOADED = bentoml.metrics.Gauge(
    name="finstream_model_loaded",
    documentation="1 when this worker serves a version of the model under the alias, else 0",
    labelnames=["model", "alias"],
    multiprocess_mode="livemin",  # 0 when any live worker lacks it
)


def export_loaded(models: Any) -> None:
    """Set MODEL_LOADED from a ChampionModels after its refresh (its `on_refresh` hook)."""
    for alias in ("champion", "challenger"):
        for name, version in models.versions(alias).items():
            MODEL_LOADED.labels(model=name, alias=alias).set(0.0 if version is None else 1.0)
