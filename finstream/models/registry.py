"""The model registry (MLflow): registered model names, aliases, versions with their evidence, alias moves.

One registered model per task (`REGISTERED_MODELS`) plus the RL agent (`AGENT_MODEL`). Every version carries
its evidence as tags (`metric.<name>`, `features`, `data_version`, `family`, `task`); the alias `champion`
is what serving and the stream load, `challenger` the latest candidate that did not pass the gates. Each
move is recorded on the version (`promotion.decision`, `promotion.reason`, `previous_champion`), in the
model's `promotion.audit` tag, and announced to every serving worker (`finstream.models.notices`). The
gates that decide a move live in training (`training.promotion`); moving by hand is `promote`/`rollback`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.store.entities.paged_list import PagedList

from finstream.models import notices
from finstream.models.tracking import RegistryError

log = logging.getLogger(__name__)

REGISTERED_MODELS: dict[str, str] = {
    "regression": "finstream-return",
    "classification": "finstream-direction",
    "volatility": "finstream-volatility",
}
CHAMPION = "champion"
CHALLENGER = "challenger"

METRIC_TAG_PREFIX = "metric."
FOLDS_METRIC = "n_folds"  # walk-forward folds the metrics were averaged over
DM_METRIC = "dm_pvalue"  # Diebold-Mariano p-value, model vs naive forecast (small: model is better)
REQUIRED_TAGS = ("features", "data_version", "family", "task")
TAG_DECISION = "promotion.decision"
TAG_REASON = "promotion.reason"
TAG_DECIDED_AT = "promotion.decided_at"
TAG_PREVIOUS = "previous_champion"
TAG_PASSED_SYMBOLS = "passed_symbols"  # JSON list: the symbols a pooled model passed its gates on
TAG_KIND = "kind"  # volatility versions: "baseline" (GARCH, HAR, …) or "candidate" (a zoo model)
TAG_AUDIT = "promotion.audit"  # on the registered model: JSON list of the latest alias moves
AUDIT_MAX_CHARS = 4000  # registered-model tag values are VARCHAR(5000) in MLflow's SQL schema
AUDIT_REASON_CHARS = 160
AGENT_MODEL = "finstream-agent"

T = TypeVar("T")


def register_candidate(
    client: MlflowClient,
    name: str,
    model_uri: str,
    run_id: str | None,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
) -> ModelVersion:
    """Register a new version of `name` from a logged model, tagged with its metrics and provenance.

    `model_uri` is `ModelInfo.model_uri` from `mlflow.<flavor>.log_model` (`models:/<model_id>`), or
    `runs:/<run_id>/<name>`. `tags` must hold features, data_version, family and task.
    """
    missing = [key for key in REQUIRED_TAGS if not str(tags.get(key, "")).strip()]
    if missing:
        raise RegistryError(f"cannot register a version of {name!r}: tags {', '.join(missing)} are missing")
    source, model_id, run_id = _resolve_source(client, model_uri, run_id)
    version_tags = {key: str(value) for key, value in tags.items()}
    for key, value in metrics.items():
        try:
            version_tags[f"{METRIC_TAG_PREFIX}{key}"] = repr(float(value))
        except (TypeError, ValueError):
            raise RegistryError(f"metric {key!r} of {name!r} is not a number: {value!r}") from None
    try:
        client.create_registered_model(
            name, tags={"task": str(tags["task"])}, description=f"finstream {tags['task']} model"
        )
        log.info("created registered model %s", name, extra={"model": name})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise RegistryError(f"cannot create registered model {name!r}: {exc.message}") from exc
    try:
        version = client.create_model_version(
            name, source=source, run_id=run_id, tags=version_tags, model_id=model_id
        )
    except MlflowException as exc:
        raise RegistryError(f"cannot register {model_uri} as a version of {name!r}: {exc.message}") from exc
    log.info(
        "registered %s v%s (%s, run %s)",
        name,
        version.version,
        tags["family"],
        run_id,
        extra={"model": name, "version": version.version, "run_id": run_id, "family": tags["family"]},
    )
    return version


def _resolve_source(
    client: MlflowClient, model_uri: str, run_id: str | None
) -> tuple[str, str | None, str | None]:
    """(artifact location, logged-model id, run id) of a `models:/<id>` or `runs:/<run>/<name>` URI."""
    try:
        if model_uri.startswith("models:/") and not any(c in model_uri[8:] for c in "/@"):
            logged = client.get_logged_model(model_uri[8:])
            return logged.artifact_location, logged.model_id, run_id or logged.source_run_id
        if model_uri.startswith("runs:/"):
            source_run, _, artifact_name = model_uri[6:].partition("/")
            run = client.get_run(source_run)
            for output in run.outputs.model_outputs if run.outputs else []:
                logged = client.get_logged_model(output.model_id)
                if logged.name == artifact_name.strip("/"):
                    return logged.artifact_location, logged.model_id, run_id or source_run
            raise RegistryError(f"run {source_run} logged no model named {artifact_name!r} ({model_uri})")
    except MlflowException as exc:
        raise RegistryError(f"cannot find the logged model {model_uri}: {exc.message}") from exc
    return model_uri, None, run_id


def version_metrics(version: ModelVersion) -> dict[str, float]:
    """The `metric.<name>` tags of a version as floats (non-numeric values are skipped)."""
    metrics: dict[str, float] = {}
    for key, value in version.tags.items():
        if key.startswith(METRIC_TAG_PREFIX):
            try:
                metrics[key[len(METRIC_TAG_PREFIX) :]] = float(value)
            except ValueError:
                log.warning(
                    "%s v%s: non-numeric metric tag %s skipped",
                    version.name,
                    version.version,
                    key,
                    extra={"model": version.name, "tag": key},
                )
    return metrics


def promote(client: MlflowClient, name: str, version: str | int, reason: str = "manual") -> ModelVersion:
    """Human override: make `version` the champion without the gates (the old champion is remembered)."""
    candidate = get_version(client, name, version)
    champion = alias_version(client, name, CHAMPION)
    if champion is not None and champion.version == candidate.version:
        log.info(
            "%s v%s is already champion",
            name,
            candidate.version,
            extra={"model": name, "version": candidate.version},
        )
        return champion
    text = f"manual promotion (gates bypassed): {reason}"
    make_champion(client, name, candidate, champion, "manual", text)
    log.info(
        "%s v%s -> champion by hand (was %s): %s",
        name,
        candidate.version,
        version_of(champion),
        reason,
        extra={
            "model": name,
            "version": candidate.version,
            "champion_before": version_of(champion),
            "reason": reason,
        },
    )
    return get_version(client, name, candidate.version)


def rollback(client: MlflowClient, name: str) -> ModelVersion:
    """Give `champion` back to the version the current champion replaced; returns that version."""
    champion = alias_version(client, name, CHAMPION)
    if champion is None:
        raise RegistryError(f"{name} has no champion, so there is nothing to roll back")
    previous = champion.tags.get(TAG_PREVIOUS)
    if not previous:
        raise RegistryError(
            f"nothing to roll back to: champion v{champion.version} of {name} replaced no earlier champion"
            f" (choose a version by hand: finstream models promote {name} VERSION)"
        )
    try:
        target = client.get_model_version(name, previous)
    except MlflowException as exc:
        raise RegistryError(
            f"cannot roll back {name} to v{previous} (the previous champion): {exc.message}"
        ) from exc
    client.set_registered_model_alias(name, CHAMPION, target.version)
    _drop_alias_if_on(client, name, CHALLENGER, target.version)
    record_decision(client, name, champion.version, "rolled_back", f"rolled back to v{target.version}")
    record_decision(client, name, target.version, CHAMPION, f"restored by rollback from v{champion.version}")
    audit_move(client, name, "rollback", target.version, champion.version, "rollback")
    log.info(
        "%s rolled back: champion v%s -> v%s",
        name,
        champion.version,
        target.version,
        extra={"model": name, "from_version": champion.version, "to_version": target.version},
    )
    return get_version(client, name, target.version)


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The version number the `champion` alias of `name` points at, or None (unknown model: RegistryError)."""
    holder = _registered_model(client, name).aliases.get(CHAMPION)
    return None if holder is None else str(holder)


def list_models(client: MlflowClient) -> list[dict[str, Any]]:
    """Every registered model and version with aliases, family, task, metrics and promotion decision."""
    rows: list[dict[str, Any]] = []
    models = _all_pages(
        lambda token: client.search_registered_models(order_by=["name ASC"], page_token=token)
    )
    for model in models:
        aliases_of: dict[str, list[str]] = {}
        for alias, number in (model.aliases or {}).items():
            aliases_of.setdefault(str(number), []).append(alias)
        quoted = model.name.replace("'", "\\'")
        versions = _all_pages(
            lambda token, q=quoted: client.search_model_versions(f"name = '{q}'", page_token=token)
        )
        for mv in sorted(versions, key=lambda v: int(v.version)):
            rows.append(
                {
                    "name": model.name,
                    "version": str(mv.version),
                    "aliases": sorted(aliases_of.get(str(mv.version), [])),
                    "family": mv.tags.get("family"),
                    "task": mv.tags.get("task"),
                    "features": mv.tags.get("features"),
                    "data_version": mv.tags.get("data_version"),
                    "metrics": version_metrics(mv),
                    "decision": mv.tags.get(TAG_DECISION),
                    "reason": mv.tags.get(TAG_REASON),
                    "previous_champion": mv.tags.get(TAG_PREVIOUS),
                    "run_id": mv.run_id,
                    "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(),
                }
            )
    return rows


# ------------------------------------------------------------------------------------------- helpers


def make_champion(
    client: MlflowClient,
    name: str,
    candidate: ModelVersion,
    champion: ModelVersion | None,
    action: str,
    reason: str,
) -> None:
    client.set_registered_model_alias(name, CHAMPION, candidate.version)
    if champion is not None:
        client.set_model_version_tag(name, candidate.version, TAG_PREVIOUS, str(champion.version))
    _drop_alias_if_on(client, name, CHALLENGER, candidate.version)
    record_decision(client, name, candidate.version, CHAMPION, reason)
    audit_move(client, name, action, candidate.version, version_of(champion), reason)


def record_decision(client: MlflowClient, name: str, version: str | int, decision: str, reason: str) -> None:
    client.set_model_version_tag(name, version, TAG_DECISION, decision)
    client.set_model_version_tag(name, version, TAG_REASON, reason)
    client.set_model_version_tag(name, version, TAG_DECIDED_AT, _now())


def audit_move(
    client: MlflowClient, name: str, action: str, version: str | int, previous: str | int | None, reason: str
) -> None:
    """Append one alias move to the model's audit tag (oldest entries dropped to stay in size), and tell
    the serving workers (finstream.models.notices)."""
    model = client.get_registered_model(name)
    try:
        entries = json.loads(model.tags.get(TAG_AUDIT, "[]"))
    except json.JSONDecodeError:
        log.warning("%s: unreadable %s tag replaced", name, TAG_AUDIT, extra={"model": name})
        entries = []
    entries.append(
        {
            "at": _now(),
            "action": action,
            "version": str(version),
            "previous": None if previous is None else str(previous),
            "reason": reason[:AUDIT_REASON_CHARS],
        }
    )
    text = json.dumps(entries, ensure_ascii=False, separators=(",", ":"))
    while len(text) > AUDIT_MAX_CHARS and len(entries) > 1:
        entries.pop(0)
        text = json.dumps(entries, ensure_ascii=False, separators=(",", ":"))
    client.set_registered_model_tag(name, TAG_AUDIT, text)
    notices.publish({"model": name, "action": action, "version": str(version)})


def _drop_alias_if_on(client: MlflowClient, name: str, alias: str, version: str | int) -> None:
    holder = _registered_model(client, name).aliases.get(alias)
    if holder is not None and str(holder) == str(version):
        client.delete_registered_model_alias(name, alias)


def _registered_model(client: MlflowClient, name: str) -> RegisteredModel:
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"cannot read registered model {name!r}: {exc.message}") from exc
        known = [m.name for m in _all_pages(lambda t: client.search_registered_models(page_token=t))]
        hint = f"registered models: {', '.join(sorted(known))}" if known else "the registry is empty"
        raise RegistryError(f"unknown model {name!r} ({hint})") from None


def get_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    _registered_model(client, name)
    number = str(version).strip().lstrip("vV")
    if not number.isdigit():
        raise RegistryError(f"model version must be a number such as 3, not {version!r}")
    try:
        return client.get_model_version(name, number)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"cannot read {name} v{number}: {exc.message}") from exc
        quoted = name.replace("'", "\\'")
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{quoted}'"))
        have = ", ".join(map(str, versions)) or "none"
        raise RegistryError(f"{name} has no version {number} (versions: {have})") from None


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    holder = _registered_model(client, name).aliases.get(alias)
    return None if holder is None else client.get_model_version(name, str(holder))


def _all_pages(fetch: Callable[[str | None], PagedList[T]]) -> Iterator[T]:
    token: str | None = None
    while True:
        page = fetch(token)
        yield from page
        token = page.token
        if not token:
            return


def version_of(version: ModelVersion | None) -> str | None:
    return None if version is None else str(version.version)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
