"""The finstream BentoML service: forecasts, quotes, the model registry, health and admin over HTTP (JSON).

A FastAPI app is mounted at "/" of a `@bentoml.service` class, so status codes (401/403/404/422/429/503),
headers (Retry-After) and the error bodies are exactly what clients see; BentoML adds /metrics, /livez and
/readyz itself. Run it with `finstream serve` or `bentoml serve serving.service:FinstreamService`.

The hot endpoints (/predict, /signal, /quotes, /health, /ready) are `async`: with Redis they read the online
row with one non-blocking HMGET (serving.online.RedisFeatureReader) and predict in place (tabular models
take ~0.01-0.6 ms), so no request hops through a thread pool; responses are serialised by pydantic-core
straight to bytes. Registry and file reads (/models, /history, /admin) stay in FastAPI's thread pool.
"""

from __future__ import annotations

import functools
import gc
import inspect
import logging
import math
import os
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path as FilePath
from typing import Annotated, Any

import bentoml
import numpy as np
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from finstream.config import get_settings
from finstream.errors import FinstreamError
from finstream.models.agent import AgentSymbolMismatch
from finstream.models.champions import (
    AGENT_TASK,
    DIRECTION_TASK,
    RETURN_TASK,
    ChampionModels,
    LoadedModel,
    NoChampion,
)
from finstream.models.inputs import FeatureRows, input_matrix
from finstream.models.registry import CHALLENGER, CHAMPION
from finstream.models.windows import FeatureWindows, InsufficientHistory
from serving.audit import AuditLog
from serving.auth import (
    Authenticator,
    AuthError,
    Caller,
    RateLimited,
    RedisTokenBucket,
    Role,
    presented_key,
)
from serving.history import MAX_LIMIT as MAX_HISTORY
from serving.history import BarHistory
from serving.online import (
    PRICE_COLUMNS,
    RedisFeatureReader,
    StoreUnavailable,
    UnknownSymbol,
    open_reader,
)
from serving.payloads import (
    MAX_SYMBOLS,
    ABSettingsBody,
    ABStatus,
    AgentDecision,
    AuditResponse,
    Bar,
    HealthResponse,
    HistoryResponse,
    ModelDetail,
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
    SignalRequest,
    SignalResponse,
    SupervisedSignal,
    SymbolSignal,
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
    shared_rate_limit: bool = True  # buckets in Redis (shared by workers) when FINSTREAM_REDIS_URL is set
    rate_limit_burst: int = 40  # per API key, burst
    ab_mode: str = "off"  # initial A/B mode (off, split, shadow) unless the registry holds settings
    ab_share: float = 0.1  # initial challenger share in split mode
    cors_origins: list[str] = []  # e.g. '["https://dash.example.com"]'; empty: no CORS headers
    direct_redis: bool = True  # read Feast's Redis rows directly (False: through Feast's online API)
    audit_log: str | None = None  # default: FINSTREAM_HOME/audit/admin.jsonl


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

app = FastAPI(
    title="finstream",
    description="Forecasts, signals, quotes and history from the registry's models and the feature store.",
    version="1",
    docs_url="/docs",  # Swagger UI over /openapi.json (BentoML's own UI at / lists only bentoml.api methods)
    redoc_url=None,
)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _json(model: BaseModel, status: int = 200) -> Response:
    """The body serialised by pydantic-core in one call (FastAPI's response_model pass is skipped)."""
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


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


app.add_middleware(ObserveMiddleware)


def _caller(role: Role, deferred: bool = False) -> Any:
    """A dependency that authenticates the request's key for `role` and spends one rate-limit token.

    `deferred`: with Redis buckets the token is left for `FinstreamService._read` to spend in the same
    round trip as the feature read (one Redis round trip per request instead of two).
    """

    async def check(
        request: Request,
        x_api_key: Annotated[str | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Caller:
        auth: Authenticator = request.app.state.auth
        presented = presented_key(x_api_key, authorization)
        if deferred:
            return auth.identify_deferred(presented, role)
        return await auth.check_async(presented, role)

    return Depends(check)


ViewerKey = Annotated[Caller, _caller(Role.VIEWER)]
TraderKey = Annotated[Caller, _caller(Role.TRADER)]
AdminKey = Annotated[Caller, _caller(Role.ADMIN)]
# for endpoints that read features through `FinstreamService._read`, which spends the token
ReadingViewer = Annotated[Caller, _caller(Role.VIEWER, deferred=True)]
ReadingTrader = Annotated[Caller, _caller(Role.TRADER, deferred=True)]


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


def _inputs(rows: FeatureRows, model: LoadedModel) -> np.ndarray:
    A = input_matrix(rows, model.columns)
    bad = np.isnan(A).any(axis=1)
    if bad.any():
        symbols = ", ".join(s for s, b in zip(rows.symbols, bad, strict=True) if b)
        raise StoreUnavailable(f"incomplete features for {symbols} in the online store: rematerialize them")
    return A


def _version_info(row: dict[str, Any], served: dict[tuple[str, str], str]) -> ModelVersionInfo:
    return ModelVersionInfo(
        name=row["name"],
        version=row["version"],
        aliases=row["aliases"],
        family=row["family"],
        task=row["task"],
        metrics={k: v for k, v in row["metrics"].items() if math.isfinite(v)},
        decision=row["decision"],
        created=row["created"],
        serving=any(served.get((row["name"], alias)) == row["version"] for alias in (CHAMPION, CHALLENGER)),
    )


def _route(method: str, path: str, **options: Any) -> Any:
    """Mark a FinstreamService method as the endpoint of `method path` (bound by `_bind_routes`)."""

    def mark(fn: Any) -> Any:
        fn.__finstream_route__ = (method, path, options)
        return fn

    return mark


async def _current_service(request: Request) -> Any:
    """The service instance (an async dependency: BentoML's own `self` injection is a sync one, which
    FastAPI runs in its thread pool, a thread hop on every request)."""
    return request.app.state.service


def _bind_routes(cls: Any) -> None:
    """Register each marked method as a route whose `self` comes from `_current_service`."""
    for method in list(vars(getattr(cls, "inner", cls)).values()):  # bentoml.Service keeps the class
        spec = getattr(method, "__finstream_route__", None)
        if spec is None:
            continue
        verb, path, options = spec
        signature = inspect.signature(method)
        first, *rest = signature.parameters.values()
        parameters = [first.replace(default=Depends(_current_service), annotation=Any)]
        parameters += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in rest]
        if inspect.iscoroutinefunction(method):

            async def endpoint(_method: Any = method, **kwargs: Any) -> Any:
                return await _method(**kwargs)

        else:

            def endpoint(_method: Any = method, **kwargs: Any) -> Any:  # type: ignore[misc]
                return _method(**kwargs)

        bound = functools.partial(endpoint, _method=method)
        functools.update_wrapper(bound, method)
        bound.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        app.add_api_route(path, bound, methods=[verb], **options)


def _tracing() -> dict[str, Any]:
    """BentoML's OpenTelemetry middleware skips the hot endpoints unless FINSTREAM_SERVE_TRACE_ALL is set.

    BentoML samples no traces by default (tracing.sample_rate 0) yet still builds a span per request,
    ~0.3 ms of CPU; whoever configures an exporter and a sample rate sets FINSTREAM_SERVE_TRACE_ALL=1 too.
    """
    if os.environ.get("FINSTREAM_SERVE_TRACE_ALL", "").lower() in ("1", "true", "yes"):
        return {}
    return {"excluded_urls": ",".join(HOT_PATHS)}


HOT_PATHS = ("/predict", "/signal", "/quotes", "/health", "/ready")


@bentoml.service(
    name="finstream",
    workers=int(os.environ.get("FINSTREAM_SERVE_WORKERS", "1")),
    traffic={"timeout": 30},
    # access lines cost ~0.2 ms a request; request counts and latencies are in /metrics either way
    logging={"access": {"enabled": False}},
    tracing=_tracing(),
)
@bentoml.asgi_app(app, path="/")
class FinstreamService:
    """Loads the registry's models, polls for alias moves, answers the JSON API."""

    def __init__(self) -> None:
        from finstream.models.champions import ABSettings

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in server logs
        self.settings = get_settings()
        for package in ("serving", "finstream", "training"):  # BentoML's handlers, our level
            logging.getLogger(package).setLevel(self.settings.log_level.upper())
        self.options = ServingOptions()
        self.auth = Authenticator.from_env(
            self.options.rate_limit_per_s,
            self.options.rate_limit_burst,
            self.settings.redis_url if self.options.shared_rate_limit else None,
            prefix=f"finstream:{self.settings.feast_project}:ratelimit:",
        )
        self.features = open_reader(self.settings, direct=self.options.direct_redis)
        self.models = ChampionModels(
            self.settings,
            self.options.reload_interval_s,
            ab=ABSettings(self.options.ab_mode, self.options.ab_share),  # type: ignore[arg-type]
        )
        self.windows = FeatureWindows(self.settings)
        self.history_store = BarHistory(self.settings)
        self.models.refresh()
        self.models.start()
        for store in (self.windows, self.history_store):  # parse the files now, not in the first request
            try:
                store.symbols()
            except FinstreamError as exc:
                log.warning("%s", exc)
        audit_path = self.options.audit_log or str(self.settings.paths.home / "audit" / "admin.jsonl")
        self.audit = AuditLog(FilePath(audit_path))
        try:
            self.features.ping()  # open the store now: the first open costs seconds (Feast imports)
        except StoreUnavailable as exc:
            log.warning("online store not reachable at start-up: %s", exc)
        app.state.auth = self.auth
        app.state.service = self
        # everything loaded so far (Feast, MLflow, torch, models) lives as long as the process: keep it
        # out of the cyclic GC's generations so collections stay short (p99 latency)
        gc.collect()
        gc.freeze()
        log.info("finstream service ready", extra={"models": self.models.versions()})

    @bentoml.on_shutdown
    def _stop_polling(self) -> None:
        self.models.stop()
        self.features.close()

    @_route("GET", "/health", response_model=HealthResponse)
    async def health(self) -> HealthResponse:
        """Liveness: the process answers."""
        return HealthResponse()

    @_route("GET", "/ready", response_model=ReadyResponse, responses={503: {"description": "not ready"}})
    async def ready(self) -> ReadyResponse:
        """Readiness: the online store answers and a champion return model is loaded."""
        await self.features.ping_async()
        self.models.require(RETURN_TASK)
        versions = {name: v for name, v in self.models.versions().items() if v is not None}
        return ReadyResponse(online_store=self.features.store_kind, models=versions)

    @_route("POST", "/predict", response_model=PredictResponse)
    async def predict(self, body: PredictRequest, caller: ReadingTrader) -> Response:
        """Next-period return and direction per symbol, on the latest online features.

        The champions answer, or in A/B split mode the challengers for a configured share of requests
        (`variant` says which); in shadow mode the challengers predict too, for the metrics only.
        """
        ab = self.models.ab
        rows = await self._read(caller, body.symbols)
        variant, returns, direction, predicted, p_up = self._forecast(rows, ab.variant())
        if ab.mode == "shadow":
            self._shadow(rows, ((RETURN_TASK, returns, predicted), (DIRECTION_TASK, direction, p_up)))
        ages = rows.ages()
        out = []
        for i, symbol in enumerate(rows.symbols):
            value = float(predicted[i])
            prob = None if p_up is None else float(p_up[i])
            up = prob >= 0.5 if prob is not None else value >= 0.0
            FEATURE_AGE.labels(symbol=symbol).set(float(ages[i]))
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
                    variant=variant,  # type: ignore[arg-type]
                )
            )
        return _json(PredictResponse(predictions=out, variant=variant))  # type: ignore[arg-type]

    async def _read(self, caller: Caller, symbols: Sequence[str]) -> FeatureRows:
        """The symbols' online features; spends the caller's deferred rate-limit token in the same trip."""
        if caller.unspent_bucket is None:
            return await self.features.latest_async(symbols)
        limiter = self.auth.limiter
        if not isinstance(limiter, RedisTokenBucket):  # identify_deferred never defers then
            raise RuntimeError("a deferred rate-limit token needs Redis buckets")
        if not isinstance(self.features, RedisFeatureReader):  # Feast's reader: two round trips
            wait = await limiter.take_bucket_async(caller.unspent_bucket)
            if wait > 0:
                raise RateLimited(wait)
            return await self.features.latest_async(symbols)
        wait, rows = await self.features.latest_spending_token(
            symbols, caller.unspent_bucket, limiter.rate, limiter.burst
        )
        if rows is None:
            raise RateLimited(wait)
        return rows

    def _forecast(self, rows: FeatureRows, variant: str) -> tuple[str, Any, Any, np.ndarray, Any]:
        """(variant, return model, direction model or None, predicted returns, P(up) or None) for `rows`.

        Each model reference is read once: a reload cannot swap it in the middle of the request.
        """
        returns = self.models.get(RETURN_TASK, variant) if variant == CHALLENGER else None
        if returns is None:  # no challenger loaded: the champion answers
            variant = CHAMPION
            returns = self.models.require(RETURN_TASK)
        direction = self.models.get(DIRECTION_TASK, variant) or self.models.get(DIRECTION_TASK)
        predicted = self._predict(returns, rows)
        p_up = self._predict(direction, rows) if direction is not None else None
        n = len(rows.symbols)
        PREDICTIONS.labels(model=returns.name, version=returns.version, variant=variant).inc(n)
        if direction is not None:
            PREDICTIONS.labels(model=direction.name, version=direction.version, variant=variant).inc(n)
        return variant, returns, direction, predicted, p_up

    def _predict(self, model: LoadedModel, rows: FeatureRows) -> np.ndarray:
        if model.window is None:
            return model.predict(_inputs(rows, model), rows.symbols)
        bars = [rows.timestamp(i) for i in range(len(rows.symbols))]
        return model.predict_windows(self.windows, rows.symbols, bars)

    def _shadow(self, rows: FeatureRows, served: tuple[tuple[str, Any, Any], ...]) -> None:
        """Run each task's challenger on the same rows; record how far it is from what was served."""
        for task, model, answer in served:
            shadow = self.models.get(task, CHALLENGER)
            if shadow is None or model is None or answer is None:
                continue
            try:
                other = self._predict(shadow, rows)
            except Exception as exc:  # a shadow failure must never fail the request
                log.warning("shadow %s v%s failed: %s", shadow.name, shadow.version, exc)
                continue
            PREDICTIONS.labels(model=shadow.name, version=shadow.version, variant="shadow").inc(len(other))
            gap = SHADOW_GAP.labels(
                model=shadow.name, champion_version=model.version, challenger_version=shadow.version
            )
            for d in np.abs(np.asarray(other) - np.asarray(answer)):
                gap.observe(float(d))

    @_route("GET", "/quotes", response_model=QuotesResponse)
    async def quotes(
        self,
        symbols: Annotated[list[str], Query(description="Comma-separated or repeated, e.g. 000300.SH,^GSPC")],
        caller: ReadingViewer,
    ) -> Response:
        """The latest bar per symbol from the online store's price features."""
        wanted = _split_symbols(symbols)
        rows = await self._read(caller, wanted)
        ages = rows.ages()
        out = []
        for i, symbol in enumerate(rows.symbols):
            FEATURE_AGE.labels(symbol=symbol).set(float(ages[i]))
            out.append(
                Quote(
                    symbol=symbol,
                    ts=rows.timestamp(i),
                    **{c: _float(rows.values.get(c, [None] * (i + 1))[i]) for c in PRICE_COLUMNS},
                    stale=bool(ages[i] > self.options.max_feature_age_s),
                )
            )
        return _json(QuotesResponse(quotes=out))

    @_route("POST", "/signal", response_model=SignalResponse)
    async def signal(self, body: SignalRequest, caller: ReadingTrader) -> Response:
        """Trading signals per symbol: the supervised champions' long/flat and the RL agent's position.

        The supervised signal is the rule the walk-forward backtest traded (long when P(up) > 0.5, else
        when the predicted return > 0; flat otherwise). The agent (the `finstream-agent` champion) decides
        from its window of features ending at the latest bar, the position given for the symbol and
        `equity_return`; it answers only for the symbol it was trained on unless `allow_other_symbols`.
        """
        rows = await self._read(caller, body.symbols)
        _, returns, direction, predicted, p_up = self._forecast(rows, CHAMPION)
        agent = self.models.get(AGENT_TASK)
        ages = rows.ages()
        out = []
        for i, symbol in enumerate(rows.symbols):
            value = float(predicted[i])
            prob = None if p_up is None else float(p_up[i])
            long = prob > 0.5 if prob is not None else value > 0.0
            position = float(body.positions.get(symbol, 0.0))
            decision, note = self._agent_decision(agent, symbol, rows.timestamp(i), position, body)
            out.append(
                SymbolSignal(
                    symbol=symbol,
                    position=position,
                    feature_timestamp=rows.timestamp(i),
                    stale=bool(ages[i] > self.options.max_feature_age_s),
                    supervised=SupervisedSignal(
                        action="long" if long else "flat",
                        target_position=1.0 if long else 0.0,
                        source="classifier" if prob is not None else "return",
                        predicted_return=value,
                        probability_up=prob,
                        model=_ref(returns),
                        direction_model=_ref(direction) if direction is not None else None,
                    ),
                    agent=decision,
                    agent_note=note,
                )
            )
        return _json(SignalResponse(signals=out))

    def _agent_decision(
        self, agent: Any, symbol: str, bar: Any, position: float, body: SignalRequest
    ) -> tuple[AgentDecision | None, str | None]:
        if agent is None:
            why = self.models.errors.get(AGENT_TASK) or "no champion"
            return None, (
                f"no RL agent is served ({why}): train one with `finstream rl train` and promote it "
                f"with `finstream models promote {self.models.names[AGENT_TASK]} VERSION`"
            )
        try:
            got = agent.signal(
                self.windows,
                symbol,
                position,
                body.equity_return,
                allow_other_symbol=body.allow_other_symbols,
                as_of=bar,
            )
        except (AgentSymbolMismatch, InsufficientHistory) as exc:
            return None, str(exc)
        PREDICTIONS.labels(model=agent.name, version=agent.version, variant=CHAMPION).inc()
        return (
            AgentDecision(
                action=got.action,
                target_position=got.target_position,
                action_mode=got.action_mode,
                trained_on=got.trained_on,
                in_distribution=got.in_distribution,
                as_of=got.as_of,
                model=ModelRef(name=got.agent, version=got.version, family=got.algo),
            ),
            None,
        )

    @_route(
        "GET",
        "/history/{symbol}",
        response_model=HistoryResponse,
        responses={404: {"description": "unknown"}},
    )
    def history(
        self,
        symbol: Annotated[str, Path(description="e.g. 000300.SH")],
        caller: ViewerKey,
        start: Annotated[
            date | None, Query(description="First trading day (exchange-local), inclusive.")
        ] = None,
        end: Annotated[
            date | None, Query(description="Last trading day (exchange-local), inclusive.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_HISTORY)] = 1000,
    ) -> Response:
        """Validated daily bars of one symbol (the validate stage's output), ascending by time.

        At most `limit` bars: the latest ones of the range; `truncated` says older ones were left out
        (page back with `end` before the first bar returned).
        """
        try:
            page = self.history_store.bars(symbol, start, end, limit)
        except ValueError as exc:
            raise _QueryError(str(exc)) from None
        frame = page.bars
        columns = [c for c in ("ts", *PRICE_COLUMNS) if c in frame.columns]
        records = frame[columns].to_dict("records")
        return _json(
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

    def _registry_rows(self) -> list[dict[str, Any]]:
        from finstream.models.registry import list_models

        try:
            return list_models(self.models._registry())
        except FinstreamError:
            raise
        except Exception as exc:  # the registry database is unreachable
            raise StoreUnavailable(f"the model registry is unavailable: {str(exc).splitlines()[0]}") from exc

    def _served(self) -> dict[tuple[str, str], str]:
        return {
            (name, alias): v
            for alias in (CHAMPION, CHALLENGER)
            for name, v in self.models.versions(alias).items()
            if v
        }

    @_route("GET", "/models", response_model=ModelsResponse)
    def models_list(self, caller: ViewerKey) -> ModelsResponse:
        """Every registered model version with aliases and metrics, and which ones this server serves."""
        served = self._served()
        return ModelsResponse(models=[_version_info(r, served) for r in self._registry_rows()])

    @_route(
        "GET", "/models/{name}", response_model=ModelDetail, responses={404: {"description": "unknown model"}}
    )
    def model_detail(
        self, name: Annotated[str, Path(description="e.g. finstream-return")], caller: ViewerKey
    ) -> ModelDetail:
        """One registered model: versions (newest first) with metrics and gate decision, aliases, served."""
        served = self._served()
        rows = [r for r in self._registry_rows() if r["name"] == name]
        if not rows:
            raise UnknownModel(name)
        versions = sorted(rows, key=lambda r: int(r["version"]), reverse=True)
        aliases = {alias: r["version"] for r in versions for alias in r["aliases"]}
        return ModelDetail(
            name=name,
            aliases=aliases,
            serving={alias: v for (n, alias), v in served.items() if n == name},
            versions=[_version_info(r, served) for r in versions],
        )

    @_route("POST", "/admin/reload", response_model=ReloadResponse)
    def reload(self, caller: AdminKey) -> ReloadResponse:
        """Follow the registry's aliases now (requests in flight finish on the model they started with)."""
        changed = self.models.refresh()
        self.models.announce("reload")  # the other workers follow at once (with Redis)
        errors = {self.models.names[t]: e for t, e in self.models.errors.items()}
        self.audit.record(
            caller.key_id, caller.role.name.lower(), "reload", "ok" if not errors else "partial",
            changed=changed, errors=errors, models=self.models.versions(),
        )  # fmt: skip
        return ReloadResponse(models=self.models.versions(), changed=changed, errors=errors)

    def _ab_status(self) -> ABStatus:
        ab = self.models.ab
        return ABStatus(
            mode=ab.mode,
            share=ab.share,
            updated_by=ab.updated_by,
            updated_at=ab.updated_at,
            challengers=self.models.versions(CHALLENGER),
        )

    @_route("GET", "/admin/ab", response_model=ABStatus)
    def ab_status(self, caller: AdminKey) -> ABStatus:
        """The A/B experiment in force in this worker and the challengers it has loaded."""
        return self._ab_status()

    @_route("PUT", "/admin/ab", response_model=ABStatus)
    def ab_update(self, body: ABSettingsBody, caller: AdminKey) -> ABStatus:
        """Start, change or stop the A/B experiment (stored in the registry: every worker follows it)."""
        before = self.models.ab
        try:
            self.models.set_ab(body.mode, body.share, caller.key_id)
        except FinstreamError as exc:
            self.audit.record(
                caller.key_id, caller.role.name.lower(), "ab_update", "failed",
                requested=body.model_dump(), error=str(exc),
            )  # fmt: skip
            raise
        except Exception as exc:  # the registry is unreachable: nothing changed
            self.audit.record(
                caller.key_id, caller.role.name.lower(), "ab_update", "failed",
                requested=body.model_dump(), error=str(exc).splitlines()[0],
            )  # fmt: skip
            raise StoreUnavailable(f"the model registry is unavailable: {str(exc).splitlines()[0]}") from exc
        status = self._ab_status()
        self.audit.record(
            caller.key_id, caller.role.name.lower(), "ab_update", "ok",
            before={"mode": before.mode, "share": before.share}, after=body.model_dump(),
            challengers=status.challengers,
        )  # fmt: skip
        return status

    @_route("GET", "/admin/audit", response_model=AuditResponse)
    def audit_entries(
        self, caller: AdminKey, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> AuditResponse:
        """The latest admin actions from the append-only audit log (oldest first)."""
        return AuditResponse(entries=self.audit.entries(limit))  # type: ignore[arg-type]


_bind_routes(FinstreamService)


class UnknownModel(FinstreamError):
    """No registered model of that name (404)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no registered model named {name!r}: see GET /models")


@app.exception_handler(UnknownModel)
async def _unknown_model(_: Request, exc: UnknownModel) -> JSONResponse:
    return _error(404, str(exc))


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _configure_cors() -> None:
    origins = ServingOptions().cors_origins
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )


_configure_cors()

__all__ = ["FinstreamService", "NoChampion", "ServingOptions", "UnknownSymbol", "app"]
