"""The model registry and its administration: GET /models, GET /models/{name} (viewer key);
POST /admin/reload, GET/PUT /admin/ab, GET /admin/audit (admin key). Admin actions go to the audit log.

These read the MLflow registry or files, so they are sync endpoints: FastAPI runs them in its thread pool.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from finstream.errors import FinstreamError, StoreUnavailable
from finstream.models.registry import CHALLENGER, CHAMPION, list_models
from serving.payloads import (
    ABSettingsBody,
    ABStatus,
    AuditResponse,
    ModelDetail,
    ModelsResponse,
    ModelVersionInfo,
    ReloadResponse,
)
from serving.routes.access import AdminKey, ViewerKey
from serving.runtime import Runtime, ServingRuntime

router = APIRouter()


class UnknownModel(FinstreamError):
    """No registered model of that name (404)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no registered model named {name!r}: see GET /models")


@router.get("/models", response_model=ModelsResponse)
def models_list(caller: ViewerKey, runtime: Runtime) -> ModelsResponse:
    """Every registered model version with aliases and metrics, and which ones this server serves."""
    served = _served(runtime)
    return ModelsResponse(models=[_version_info(r, served) for r in _registry_rows(runtime)])


@router.get("/models/{name}", response_model=ModelDetail, responses={404: {"description": "unknown model"}})
def model_detail(
    name: Annotated[str, Path(description="e.g. finstream-return")], caller: ViewerKey, runtime: Runtime
) -> ModelDetail:
    """One registered model: versions (newest first) with metrics and gate decision, aliases, served."""
    served = _served(runtime)
    rows = [r for r in _registry_rows(runtime) if r["name"] == name]
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


@router.post("/admin/reload", response_model=ReloadResponse)
def reload(caller: AdminKey, runtime: Runtime) -> ReloadResponse:
    """Follow the registry's aliases now (requests in flight finish on the model they started with)."""
    models = runtime.models
    changed = models.refresh()
    models.announce("reload")  # the other workers follow at once (with Redis)
    errors = {models.names[t]: e for t, e in models.errors.items()}
    runtime.audit.record(
        caller.key_id, caller.role.name.lower(), "reload", "ok" if not errors else "partial",
        changed=changed, errors=errors, models=models.versions(),
    )  # fmt: skip
    return ReloadResponse(models=models.versions(), changed=changed, errors=errors)


@router.get("/admin/ab", response_model=ABStatus)
def ab_status(caller: AdminKey, runtime: Runtime) -> ABStatus:
    """The A/B experiment in force in this worker and the challengers it has loaded."""
    return _ab_status(runtime)


@router.put("/admin/ab", response_model=ABStatus)
def ab_update(body: ABSettingsBody, caller: AdminKey, runtime: Runtime) -> ABStatus:
    """Start, change or stop the A/B experiment (stored in the registry: every worker follows it)."""
    before = runtime.models.ab
    try:
        runtime.models.set_ab(body.mode, body.share, caller.key_id)
    except FinstreamError as exc:
        runtime.audit.record(
            caller.key_id, caller.role.name.lower(), "ab_update", "failed",
            requested=body.model_dump(), error=str(exc),
        )  # fmt: skip
        raise
    except Exception as exc:  # the registry is unreachable: nothing changed
        runtime.audit.record(
            caller.key_id, caller.role.name.lower(), "ab_update", "failed",
            requested=body.model_dump(), error=str(exc).splitlines()[0],
        )  # fmt: skip
        raise StoreUnavailable(f"the model registry is unavailable: {str(exc).splitlines()[0]}") from exc
    status = _ab_status(runtime)
    runtime.audit.record(
        caller.key_id, caller.role.name.lower(), "ab_update", "ok",
        before={"mode": before.mode, "share": before.share}, after=body.model_dump(),
        challengers=status.challengers,
    )  # fmt: skip
    return status


@router.get("/admin/audit", response_model=AuditResponse)
def audit_entries(
    caller: AdminKey, runtime: Runtime, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> AuditResponse:
    """The latest admin actions from the append-only audit log (oldest first)."""
    return AuditResponse(entries=runtime.audit.entries(limit))  # type: ignore[arg-type]


def _registry_rows(runtime: ServingRuntime) -> list[dict[str, Any]]:
    """Every registered version as `list_models` rows; an unreachable registry is a 503."""
    try:
        return list_models(runtime.models._registry())
    except FinstreamError:
        raise
    except Exception as exc:  # the registry database is unreachable
        raise StoreUnavailable(f"the model registry is unavailable: {str(exc).splitlines()[0]}") from exc


def _served(runtime: ServingRuntime) -> dict[tuple[str, str], str]:
    """(model name, alias) -> the version this worker serves under that alias."""
    return {
        (name, alias): v
        for alias in (CHAMPION, CHALLENGER)
        for name, v in runtime.models.versions(alias).items()
        if v
    }


def _ab_status(runtime: ServingRuntime) -> ABStatus:
    ab = runtime.models.ab
    return ABStatus(
        mode=ab.mode,
        share=ab.share,
        updated_by=ab.updated_by,
        updated_at=ab.updated_at,
        challengers=runtime.models.versions(CHALLENGER),
    )


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
