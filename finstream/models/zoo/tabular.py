"""The shared shape of row-wise (non-sequential) families: params with defaults, fit on a feature matrix,
predict P(up) or the return, and persistence (metadata + joblib by default)."""

from __future__ import annotations

import logging
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self, get_args

import joblib
import numpy as np
import pandas as pd

from finstream.models.zoo.base import Forecaster, Task
from finstream.models.zoo.rows import feature_matrix, feature_names_of
from finstream.models.zoo.storage import installed_version, read_meta, write_meta

log = logging.getLogger(__name__)

TASKS: tuple[str, ...] = get_args(Task)


def check_task(task: str) -> Task:
    """The task, or a ValueError naming the valid ones."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    return task  # type: ignore[return-value]


def target_array(y: pd.Series | np.ndarray, task: Task) -> np.ndarray:
    """y as float64 returns (regression) or int64 0/1 labels (classification), checked."""
    arr = np.asarray(y)
    if task == "regression":
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValueError("regression targets must be finite log returns")
        return arr
    labels = arr.astype(np.int64)
    if not np.isin(labels, (0, 1)).all() or not np.array_equal(labels, arr):
        raise ValueError("classification targets must be 1 (up) or 0 (down)")
    return labels


def p_up(estimator: Any, A: np.ndarray) -> np.ndarray:
    """P(class 1) from a fitted sklearn classifier; 0 when class 1 never appeared in training."""
    classes = list(estimator.classes_)
    if 1 not in classes:
        return np.zeros(len(A))
    return np.asarray(estimator.predict_proba(A)[:, classes.index(1)], dtype=np.float64)


def sklearn_libraries() -> dict[str, str | None]:
    return {"scikit-learn": installed_version("scikit-learn"), "numpy": installed_version("numpy")}


class TabularForecaster(Forecaster):
    """A family that maps one feature row to one prediction; subclasses build and wrap the estimator."""

    #: params a family understands, with their defaults (constructor params override them)
    defaults: ClassVar[dict[str, Any]] = {}
    #: whether params outside `defaults` may be passed through to the underlying estimator
    passthrough: ClassVar[bool] = False

    def __init__(self, task: Task, **params: Any) -> None:
        check_task(task)
        unknown = sorted(set(params) - set(self.defaults))
        if unknown and not self.passthrough:
            raise ValueError(f"{self.family} does not take {unknown}; its params are {sorted(self.defaults)}")
        super().__init__(task, **{**self.defaults, **params})
        self.estimator_: Any = None

    # -- what a family supplies --------------------------------------------------------------------------

    @abstractmethod
    def _fit_matrix(self, A: np.ndarray, t: np.ndarray, X: pd.DataFrame) -> Any:
        """Fit and return the estimator on feature matrix A and target t (X is there for row order)."""

    def predict_matrix(self, A: np.ndarray) -> np.ndarray:
        """Predict from the feature matrix (columns in `feature_names` order), skipping the DataFrame."""
        if self.task == "classification":
            return p_up(self.estimator_, A)
        return np.asarray(self.estimator_.predict(A), dtype=np.float64)

    def _libraries(self) -> dict[str, str | None]:
        return sklearn_libraries()

    def _save_estimator(self, path: Path) -> None:
        joblib.dump(self.estimator_, path / "estimator.joblib")

    def _load_estimator(self, path: Path) -> Any:
        return joblib.load(path / "estimator.joblib")

    def _ready(self) -> None:
        """Prepare for prediction after fit or load (thread counts, fast paths)."""

    def _estimator_params(self, *family_only: str) -> dict[str, Any]:
        """Params to hand to the estimator: all of them except the family's own keys."""
        return {k: v for k, v in self.params.items() if k not in family_only}

    # -- the Forecaster interface ------------------------------------------------------------------------

    def fit(self, X: pd.DataFrame, y: pd.Series) -> Self:
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        self.feature_names = feature_names_of(X)
        A = feature_matrix(X, self.feature_names)
        t = target_array(y, self.task)
        self.estimator_ = self._fit_matrix(A, t, X)
        self._ready()
        log.info("fit %s (%s) on %d rows x %d features", self.family, self.task, len(A), A.shape[1])
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.estimator_ is None:
            raise RuntimeError(f"{self.family} model is not fitted: call fit() or load() first")
        return self.predict_matrix(feature_matrix(X, self.feature_names))

    def save(self, path: Path) -> None:
        if self.estimator_ is None:
            raise RuntimeError(f"{self.family} model is not fitted: nothing to save")
        path = Path(path)
        write_meta(path, self, self._libraries())
        self._save_estimator(path)

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        meta = read_meta(path, cls.family)
        model = cls(meta["task"], **meta["params"])
        model.feature_names = list(meta["feature_names"])
        model.estimator_ = model._load_estimator(path)
        model._ready()
        return model
