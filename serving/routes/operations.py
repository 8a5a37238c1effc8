"""Liveness and readiness: GET /health, GET /ready (no API key: for load balancers and orchestrators)."""

from __future__ import annotations

from fastapi import APIRouter

from finstream.models.champions import RETURN_TASK
from serving.payloads import HealthResponse, ReadyResponse
from serving.runtime import Runtime

router = APIRouter()


@router.get("/health", response_model=HealthResponse)
async def health() -> HealthResponse:
    """Liveness: the process answers."""
    return HealthResponse()


@router.get("/ready", response_model=ReadyResponse, responses={503: {"description": "not ready"}})
async def ready(runtime: Runtime) -> ReadyResponse:
    """Readiness: the online store answers and a champion return model is loaded."""
    await runtime.features.ping_async()
    runtime.models.require(RETURN_TASK)
    versions = {name: v for name, v in runtime.models.versions().items() if v is not None}
    return ReadyResponse(online_store=runtime.features.store_kind, models=versions)
