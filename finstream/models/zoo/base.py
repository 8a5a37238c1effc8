"""The one interface every model family implements: fit / predict / save / load (MLflow logging wraps it)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd

Task = Literal["regression", "classification"]


class Forecaster(ABC):
    """A next-period forecaster over feature rows.

    `X` holds one row per (symbol, bar), sorted by symbol then time, with the model's feature columns plus a
    `symbol` column (sequence models build their windows per symbol from it; tabular models ignore it unless
    `pooled` one-hot columns are given). `y` is the next-period log return (regression) or 1/0 for up/down
    (classification). `predict` returns one value per row of X: the predicted return, or P(up).
    A prediction for a row may use that row and earlier rows of the same symbol in X only (causal).
    """

    family: ClassVar[str]
    #: True for models that need earlier rows of the same symbol (windows); predict then wants that context
    sequential: ClassVar[bool] = False

    def __init__(self, task: Task, **params: Any) -> None:
        self.task: Task = task
        self.params: dict[str, Any] = params
        self.feature_names: list[str] = []

    @abstractmethod
    def fit(self, X: pd.DataFrame, y: pd.Series) -> Self:
        """Fit on training rows; remembers `feature_names` (X's columns except `symbol`)."""

    @abstractmethod
    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """float64 array, len(X): predicted log return, or P(up) for classification."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write everything needed to predict into the folder `path` (created if missing)."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path) -> Self:
        """Read a model written by `save`."""

    def feature_importance(self) -> pd.Series | None:
        """Importance per feature where the family has one (trees, linear coefficients), else None."""
        return None
