"""Champion models from the MLflow registry, swapped atomically when the `champion` alias moves.

Each registered model (`training.promotion.REGISTERED_MODELS`) is held as one immutable `LoadedModel`. A
request reads the reference once and predicts with that object to the end, so a reload (a background poll
of the alias every N seconds, or POST /admin/reload) never changes a model under a request in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from finstream.config import Settings
from finstream.errors import FinstreamError
from training.promotion import CHAMPION, REGISTERED_MODELS

log = logging.getLogger(__name__)

RETURN_TASK = "regression"
DIRECTION_TASK = "classification"


class NoChampion(FinstreamError):
    """No champion of a required model is loaded."""


@dataclass(frozen=True)
class LoadedModel:
    """One registry version ready to predict: the Forecaster and the exact input columns it was trained on."""

    name: str
    version: str
    task: str
    family: str | None
    forecaster: Any = field(repr=False)
    columns: tuple[str, ...]
    loaded_at: float

    def predict(self, A: np.ndarray, symbols: Sequence[str]) -> np.ndarray:
        """One value per row of A (`columns` order): predicted log return, or P(up).

        Tabular Forecasters take the matrix directly (no DataFrame: ~0.05 ms for ridge); others get X.
        """
        fast = getattr(self.forecaster, "predict_matrix", None)
        if fast is not None and tuple(self.forecaster.feature_names) == self.columns:
            return np.asarray(fast(A), dtype="float64")
        X = pd.DataFrame(A, columns=list(self.columns))
        X.insert(0, "symbol", list(symbols))
        return np.asarray(self.forecaster.predict(X), dtype="float64")


def _input_columns(pyfunc_model: Any, forecaster: Any) -> tuple[str, ...]:
    """The model's input columns from its MLflow signature (without `symbol`), else the Forecaster's."""
    schema = pyfunc_model.metadata.get_input_schema()
    names = schema.input_names() if schema is not None and schema.has_input_names() else []
    columns = [str(n) for n in names if n != "symbol"] or list(forecaster.feature_names)
    return tuple(columns)


def load_version(client: Any, name: str, version: str) -> LoadedModel:
    """Load `name` version `version` through MLflow; sequence models are refused (they need history)."""
    from training.mlflow_model import load_forecaster, unwrap_forecaster

    mv = client.get_model_version(name, version)
    pyfunc_model = load_forecaster(f"models:/{name}/{version}")
    forecaster = unwrap_forecaster(pyfunc_model)
    if getattr(forecaster, "sequential", False):
        raise FinstreamError(
            f"{name} v{version} ({forecaster.family}) needs a window of past features per symbol; "
            "this server serves tabular models only: promote a tabular version"
        )
    return LoadedModel(
        name=name,
        version=str(version),
        task=forecaster.task,
        family=mv.tags.get("family") or getattr(forecaster, "family", None),
        forecaster=forecaster,
        columns=_input_columns(pyfunc_model, forecaster),
        loaded_at=time.time(),
    )


class ChampionModels:
    """The loaded champion per task; `refresh` follows the registry's `champion` alias."""

    def __init__(
        self, settings: Settings, poll_seconds: float, names: Mapping[str, str] = REGISTERED_MODELS
    ) -> None:
        self.settings = settings
        self.poll_seconds = poll_seconds
        self.names = dict(names)
        self._models: dict[str, LoadedModel] = {}
        self.errors: dict[str, str] = {}
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None

    def get(self, task: str) -> LoadedModel | None:
        """The current model for `task` (a plain dict read: atomic under the GIL)."""
        return self._models.get(task)

    def require(self, task: str) -> LoadedModel:
        model = self._models.get(task)
        if model is None:
            name = self.names[task]
            why = self.errors.get(task)
            raise NoChampion(
                f"no champion of {name} is loaded: promote a version with "
                f"`finstream models promote {name} VERSION`" + (f" ({why})" if why else "")
            )
        return model

    def versions(self) -> dict[str, str | None]:
        return {self.names[t]: (m.version if (m := self._models.get(t)) else None) for t in self.names}

    def _registry(self) -> Any:
        if self._client is None:
            from training.tracking import configure_mlflow

            self._client = configure_mlflow(self.settings)
        return self._client

    def refresh(self) -> list[str]:
        """Load every champion whose alias moved; returns those that changed; failures keep the old one."""
        changed: list[str] = []
        with self._refresh_lock:
            for task, name in self.names.items():
                try:
                    target = self._champion_version(name)
                    current = self._models.get(task)
                    if target is None:
                        if current is not None:
                            log.warning("%s has no champion any more; keeping v%s", name, current.version)
                        self.errors[task] = "the registry has no champion"
                        continue
                    if current is not None and current.version == target:
                        self.errors.pop(task, None)
                        continue
                    started = time.perf_counter()
                    loaded = load_version(self._registry(), name, target)
                    self._models[task] = loaded  # one reference swap: requests in flight keep their object
                    self.errors.pop(task, None)
                    changed.append(name)
                    log.info(
                        "serving %s v%s (%s)",
                        name,
                        loaded.version,
                        loaded.family,
                        extra={
                            "model": name,
                            "version": loaded.version,
                            "previous": current.version if current else None,
                            "load_s": round(time.perf_counter() - started, 3),
                        },
                    )
                except Exception as exc:  # registry down, artifact missing, unloadable model
                    self.errors[task] = _first_line(exc)
                    log.warning("cannot refresh %s: %s", name, exc, extra={"model": name})
                    if not isinstance(exc, FinstreamError):
                        self._client = None  # reconnect next time
        return changed

    def _champion_version(self, name: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            model = self._registry().get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        holder = (model.aliases or {}).get(CHAMPION)
        return None if holder is None else str(holder)

    def start(self) -> None:
        """Poll the registry every `poll_seconds` in a daemon thread (0 or less: no polling)."""
        if self.poll_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll, name="finstream-model-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
