"""The finstream BentoML service: forecasts, quotes, the model registry, health and admin over HTTP (JSON).

A FastAPI app is mounted at "/" of a `@bentoml.service` class, so status codes (401/403/404/422/429/503),
headers (Retry-After) and the error bodies are exactly what clients see; BentoML adds /metrics, /livez and
/readyz itself. Run it with `finstream serve` or `bentoml serve serving.service:FinstreamService`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import bentoml
import numpy as np
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic_settings import BaseSettings, SettingsConfigDict

from finstream.config import get_settings
from finstream.errors import FinstreamError
from serving.auth import Authenticator, AuthError, Caller, RateLimited, Role, presented_key
from serving.features import (
    PRICE_COLUMNS,
    FeatureReader,
    FeatureRows,
    StoreUnavailable,
    UnknownSymbol,
    input_matrix,
)
from serving.models import DIRECTION_TASK, RETURN_TASK, ChampionModels, LoadedModel, NoChampion
from serving.schemas import (
    MAX_SYMBOLS,
    HealthResponse,
    ModelRef,
    ModelsResponse,
    ModelVersionInfo,
    Prediction,
    PredictRequest,
    PredictResponse,
    Quote,
    QuotesResponse,
    ReadyResponse,
    ReloadResponse,
)

log = logging.getLogger(__name__)


class ServingOptions(BaseSettings):
    """Server knobs from FINSTREAM_SERVE_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="FINSTREAM_SERVE_", extra="ignore")

    max_feature_age_s: float = 4 * 86400.0  # daily bars: a long weekend plus a holiday is still fresh
    reload_interval_s: float = (
        30.0  # registry alias poll; 0 turns polling off (POST /admin/reload still works)
    )
    rate_limit_per_s: float = 20.0  # per API key, sustained
    rate_limit_burst: int = 40  # per API key, burst


REQUEST_SECONDS = bentoml.metrics.Histogram(
    name="finstream_request_duration_seconds",
    documentation="finstream API request latency by endpoint and status",
    labelnames=["endpoint", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PREDICTIONS = bentoml.metrics.Counter(
    name="finstream_predictions_total",
    documentation="symbols forecast, by registered model and version",
    labelnames=["model", "version"],
)
ERRORS = bentoml.metrics.Counter(
    name="finstream_errors_total",
    documentation="finstream API error responses by endpoint and status",
    labelnames=["endpoint", "status"],
)

app = FastAPI(
    title="finstream",
    description="Forecasts and quotes from the champion models and the online feature store.",
    version="1",
    docs_url=None,
    redoc_url=None,
)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


@app.exception_handler(AuthError)
async def _auth_error(_: Request, exc: AuthError) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="finstream"'} if exc.status == 401 else None
    return _error(exc.status, str(exc), headers)


@app.exception_handler(RateLimited)
async def _rate_limited(_: Request, exc: RateLimited) -> JSONResponse:
    return _error(429, str(exc), {"Retry-After": str(max(1, math.ceil(exc.retry_after)))})


@app.exception_handler(UnknownSymbol)
async def _unknown_symbol(_: Request, exc: UnknownSymbol) -> JSONResponse:
    return _error(404, str(exc))


@app.exception_handler(FinstreamError)
async def _unavailable(_: Request, exc: FinstreamError) -> JSONResponse:
    """NoChampion, StoreUnavailable and other finstream errors: the server cannot answer right now."""
    return _error(503, str(exc))


@app.exception_handler(Exception)
async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path)
    return _error(500, "internal server error (logged on the server)")


@app.middleware("http")
async def _observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Latency histogram and error counter, labelled by route template (bounded cardinality)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        route = request.scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        REQUEST_SECONDS.labels(endpoint=endpoint, method=request.method, status=str(status)).observe(
            time.perf_counter() - started
        )
        if status >= 400:
            ERRORS.labels(endpoint=endpoint, status=str(status)).inc()


def _caller(role: Role) -> Any:
    """A dependency that authenticates the request's key for `role` and spends one rate-limit token."""

    def check(
        request: Request,
        x_api_key: Annotated[str | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Caller:
        auth: Authenticator = request.app.state.auth
        return auth.check(presented_key(x_api_key, authorization), role)

    return Depends(check)


ViewerKey = Annotated[Caller, _caller(Role.VIEWER)]
TraderKey = Annotated[Caller, _caller(Role.TRADER)]
AdminKey = Annotated[Caller, _caller(Role.ADMIN)]


def _ref(model: LoadedModel) -> ModelRef:
    return ModelRef(name=model.name, version=model.version, family=model.family)


def _split_symbols(values: list[str]) -> list[str]:
    symbols = list(dict.fromkeys(s.strip() for v in values for s in v.split(",") if s.strip()))
    if not symbols:
        raise _QueryError("symbols: give at least one symbol, e.g. ?symbols=000300.SH,^GSPC")
    if len(symbols) > MAX_SYMBOLS:
        raise _QueryError(f"symbols: at most {MAX_SYMBOLS} per request")
    return symbols


class _QueryError(Exception):
    """A query parameter that parses but makes no sense (422)."""


@app.exception_handler(_QueryError)
async def _query_error(_: Request, exc: _QueryError) -> JSONResponse:
    return _error(422, str(exc))


@bentoml.service(name="finstream", workers=1, traffic={"timeout": 30})
@bentoml.asgi_app(app, path="/")
class FinstreamService:
    """Loads the champions, polls the registry for alias moves, answers the JSON API."""

    def __init__(self) -> None:
        self.settings = get_settings()
        self.options = ServingOptions()
        self.auth = Authenticator.from_env(self.options.rate_limit_per_s, self.options.rate_limit_burst)
        self.features = FeatureReader(self.settings)
        self.models = ChampionModels(self.settings, self.options.reload_interval_s)
        self.models.refresh()
        self.models.start()
        try:
            self.features.ping()  # open the store now: the first open costs seconds (Feast imports)
        except StoreUnavailable as exc:
            log.warning("online store not reachable at start-up: %s", exc)
        app.state.auth = self.auth
        log.info("finstream service ready", extra={"models": self.models.versions()})

    @bentoml.on_shutdown
    def _stop_polling(self) -> None:
        self.models.stop()

    @app.get("/health", response_model=HealthResponse)
    def health(self) -> HealthResponse:
        """Liveness: the process answers."""
        return HealthResponse()

    @app.get("/ready", response_model=ReadyResponse, responses={503: {"description": "not ready"}})
    def ready(self) -> ReadyResponse:
        """Readiness: the online store answers and a champion return model is loaded."""
        self.features.ping()
        self.models.require(RETURN_TASK)
        versions = {name: v for name, v in self.models.versions().items() if v is not None}
        return ReadyResponse(online_store=self.features.store_kind, models=versions)

    @app.post("/predict", response_model=PredictResponse)
    def predict(self, body: PredictRequest, caller: TraderKey) -> PredictResponse:
        """Next-period return and direction per symbol from the champions, on the latest online features."""
        returns = self.models.require(RETURN_TASK)  # read once: a reload cannot swap it mid-request
        direction = self.models.get(DIRECTION_TASK)
        rows = self.features.latest(body.symbols)
        predicted = returns.predict(self._inputs(rows, returns), rows.symbols)
        p_up = (
            direction.predict(self._inputs(rows, direction), rows.symbols) if direction is not None else None
        )
        PREDICTIONS.labels(model=returns.name, version=returns.version).inc(len(rows.symbols))
        if direction is not None:
            PREDICTIONS.labels(model=direction.name, version=direction.version).inc(len(rows.symbols))
        ages = rows.ages()
        out = []
        for i, symbol in enumerate(rows.symbols):
            value = float(predicted[i])
            prob = None if p_up is None else float(p_up[i])
            up = prob >= 0.5 if prob is not None else value >= 0.0
            out.append(
                Prediction(
                    symbol=symbol,
                    predicted_return=value,
                    direction="up" if up else "down",
                    probability_up=prob,
                    direction_source="classifier" if prob is not None else "return_sign",
                    model=_ref(returns),
                    direction_model=_ref(direction) if direction is not None else None,
                    feature_timestamp=rows.timestamp(i),
                    feature_age_seconds=float(ages[i]),
                    stale=bool(ages[i] > self.options.max_feature_age_s),
                )
            )
        return PredictResponse(predictions=out)

    @staticmethod
    def _inputs(rows: FeatureRows, model: LoadedModel) -> np.ndarray:
        A = input_matrix(rows, model.columns)
        bad = np.isnan(A).any(axis=1)
        if bad.any():
            symbols = ", ".join(s for s, b in zip(rows.symbols, bad, strict=True) if b)
            raise StoreUnavailable(
                f"incomplete features for {symbols} in the online store: rematerialize them"
            )
        return A

    @app.get("/quotes", response_model=QuotesResponse)
    def quotes(
        self,
        symbols: Annotated[list[str], Query(description="Comma-separated or repeated, e.g. 000300.SH,^GSPC")],
        caller: ViewerKey,
    ) -> QuotesResponse:
        """The latest bar per symbol from the online store's price features."""
        wanted = _split_symbols(symbols)
        rows = self.features.latest(wanted)
        ages = rows.ages()
        out = []
        for i, symbol in enumerate(rows.symbols):
            out.append(
                Quote(
                    symbol=symbol,
                    ts=rows.timestamp(i),
                    **{c: _float(rows.values.get(c, [None] * (i + 1))[i]) for c in PRICE_COLUMNS},
                    stale=bool(ages[i] > self.options.max_feature_age_s),
                )
            )
        return QuotesResponse(quotes=out)

    @app.get("/models", response_model=ModelsResponse)
    def models_list(self, caller: ViewerKey) -> ModelsResponse:
        """Every registered model version with aliases and metrics, and which ones this server serves."""
        from training.promotion import list_models

        try:
            rows = list_models(self.models._registry())
        except FinstreamError:
            raise
        except Exception as exc:  # the registry database is unreachable
            raise StoreUnavailable(f"the model registry is unavailable: {str(exc).splitlines()[0]}") from exc
        served = {name: v for name, v in self.models.versions().items() if v}
        return ModelsResponse(
            models=[
                ModelVersionInfo(
                    name=r["name"],
                    version=r["version"],
                    aliases=r["aliases"],
                    family=r["family"],
                    task=r["task"],
                    metrics={k: v for k, v in r["metrics"].items() if math.isfinite(v)},
                    decision=r["decision"],
                    created=r["created"],
                    serving=served.get(r["name"]) == r["version"],
                )
                for r in rows
            ]
        )

    @app.post("/admin/reload", response_model=ReloadResponse)
    def reload(self, caller: AdminKey) -> ReloadResponse:
        """Follow the champion aliases now (requests in flight finish on the model they started with)."""
        changed = self.models.refresh()
        errors = {self.models.names[t]: e for t, e in self.models.errors.items()}
        return ReloadResponse(models=self.models.versions(), changed=changed, errors=errors)


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


__all__ = ["FinstreamService", "NoChampion", "ServingOptions", "UnknownSymbol", "app"]
