"""The FastAPI app that `FinstreamService` mounts at "/": the routers of `serving.routes` (included with
FastAPI's `include_router`), the exception handlers that turn errors into status codes
(401/403/404/422/429/503/500) with `{"detail": ...}` bodies, the request size limit (413, `serving.limits`),
the metrics middleware, CORS (when FINSTREAM_SERVE_CORS_ORIGINS is set) and Swagger UI at /docs from local
files (`serving.docs`: the page works offline).

FastAPI 0.150 matches an included router's path twice per request: +7-12 µs on the hot routes measured in
process, under 1 % of a sequential /predict and not visible end to end (benchmarks/serve_load.py), so every
router is included the standard way rather than bound by hand.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware

from finstream.errors import FinstreamError, UnknownSymbol
from serving.auth import AuthError, RateLimited
from serving.docs import mount_docs
from serving.limits import BodyLimitMiddleware, BodyLimitOptions
from serving.routes import channels, dashboard, inference, market, model_admin, operations, risk, signin
from serving.routes.market import QueryError
from serving.routes.model_admin import UnknownModel
from serving.runtime import ServingOptions
from serving.telemetry import ObserveMiddleware

log = logging.getLogger(__name__)

app = FastAPI(
    title="finstream",
    description="Forecasts, signals, quotes and history from the registry's models and the feature store.",
    version="1",
    docs_url=None,  # Swagger UI at /docs is mount_docs' (local files, no CDN)
    redoc_url=None,
)


for router in (
    operations.router,
    inference.router,
    market.router,
    risk.router,
    model_admin.router,
    channels.router,
    signin.router,
    dashboard.router,
):
    app.include_router(router)

# Swagger UI over /openapi.json (BentoML's own UI at / lists only bentoml.api methods)
mount_docs(app, "/docs")


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


@app.exception_handler(UnknownModel)
async def _unknown_model(_: Request, exc: UnknownModel) -> JSONResponse:
    return _error(404, str(exc))


@app.exception_handler(QueryError)
async def _query_error(_: Request, exc: QueryError) -> JSONResponse:
    return _error(422, str(exc))


@app.exception_handler(FinstreamError)
async def _unavailable(_: Request, exc: FinstreamError) -> JSONResponse:
    """NoChampion, StoreUnavailable and other finstream errors: the server cannot answer right now."""
    return _error(503, str(exc))


@app.exception_handler(Exception)
async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path)
    return _error(500, "internal server error (logged on the server)")


# added first, so it runs inside the metrics middleware: 413s are counted like every other error
app.add_middleware(BodyLimitMiddleware, max_body_bytes=BodyLimitOptions().max_body_bytes)
app.add_middleware(ObserveMiddleware)


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
