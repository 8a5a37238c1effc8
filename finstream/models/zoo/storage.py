"""The metadata file every saved Forecaster folder holds: family, task, params, features, library versions."""

from __future__ import annotations

import json
import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from finstream.models.zoo.base import Forecaster

log = logging.getLogger(__name__)

META_FILE = "forecaster.json"
FORMAT_VERSION = 1


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(
        f"cannot store {type(value).__name__} in {META_FILE}: pass plain params (str, number, list)"
    )


def installed_version(*dists: str) -> str | None:
    """Version of the first installed distribution among `dists` (e.g. xgboost-cpu, then xgboost)."""
    for dist in dists:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def write_meta(path: Path, model: Forecaster, libraries: dict[str, str | None], **extra: Any) -> None:
    """Create `path` and write the model's metadata (plus family-specific `extra` fields) into it."""
    path.mkdir(parents=True, exist_ok=True)
    meta = {
        "format_version": FORMAT_VERSION,
        "family": model.family,
        "task": model.task,
        "params": model.params,
        "feature_names": model.feature_names,
        "libraries": libraries,
        **extra,
    }
    (path / META_FILE).write_text(json.dumps(meta, indent=2, default=_jsonable))


def saved_family(path: Path) -> str:
    """The family of the model saved in `path`."""
    return str(_read(path)["family"])


def _read(path: Path) -> dict[str, Any]:
    file = Path(path) / META_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path} holds no saved forecaster ({META_FILE} missing)")
    meta: dict[str, Any] = json.loads(file.read_text())
    return meta


def read_meta(path: Path, family: str | None = None) -> dict[str, Any]:
    """Read a saved model's metadata; with `family`, check the folder holds that family."""
    meta = _read(path)
    if family is not None and meta.get("family") != family:
        raise ValueError(f"{path} holds a {meta.get('family')!r} model, not {family!r}")
    for lib, saved in meta.get("libraries", {}).items():
        now = installed_version(lib)
        if saved and now and saved != now:
            log.warning("model at %s was saved with %s %s, loading with %s", path, lib, saved, now)
    return meta
