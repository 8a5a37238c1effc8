"""Family "ridge": L2-penalised linear models on standardised features (Ridge / LogisticRegression).

Prediction goes through `FoldedLinear`, the scaler and the linear head folded into one affine map: sklearn's
Pipeline re-validates the input at every step, which triples the cost of a one-row predict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from finstream.models.zoo.tabular import TabularForecaster


@dataclass(frozen=True)
class FoldedLinear:
    """A fitted StandardScaler + Ridge / binary LogisticRegression pipeline as w·x + b (+ logistic link)."""

    weights: np.ndarray
    intercept: float
    logistic: bool

    @classmethod
    def of(cls, pipeline: Pipeline) -> FoldedLinear:
        scaler, head = pipeline[0], pipeline[-1]
        if len(pipeline) != 2 or not isinstance(scaler, StandardScaler):
            raise TypeError("FoldedLinear folds a [StandardScaler, linear model] pipeline")
        logistic = isinstance(head, LogisticRegression)
        if logistic and list(head.classes_) != [0, 1]:
            raise ValueError(f"P(up) needs classes [0, 1], the model saw {list(head.classes_)}")
        mean = scaler.mean_ if scaler.with_mean else 0.0
        scale = scaler.scale_ if scaler.with_std else 1.0
        weights = np.ravel(head.coef_) / scale
        intercept = float(np.ravel(head.intercept_)[0]) - float(np.sum(mean * weights))
        return cls(np.ascontiguousarray(weights, dtype=np.float64), intercept, logistic)

    def predict(self, A: np.ndarray) -> np.ndarray:
        z = A @ self.weights + self.intercept
        return expit(z) if self.logistic else z


class RidgeForecaster(TabularForecaster):
    """Ridge regression of the return, or logistic regression of the direction, after StandardScaler.

    `alpha` is the penalty strength for both tasks (LogisticRegression gets C = 1 / alpha).
    """

    family: ClassVar[str] = "ridge"
    defaults: ClassVar[dict[str, Any]] = {"alpha": 1.0, "max_iter": 1000}

    def _fit_matrix(self, A: np.ndarray, t: np.ndarray, X: pd.DataFrame) -> Pipeline:
        alpha = float(self.params["alpha"])
        if alpha <= 0:
            raise ValueError(f"ridge alpha must be > 0, got {alpha}")
        if self.task == "regression":
            head: Ridge | LogisticRegression = Ridge(alpha=alpha)
        else:
            head = LogisticRegression(C=1.0 / alpha, max_iter=int(self.params["max_iter"]))
        return make_pipeline(StandardScaler(), head).fit(A, t)

    def _ready(self) -> None:
        self._folded = FoldedLinear.of(self.estimator_)

    def predict_matrix(self, A: np.ndarray) -> np.ndarray:
        return self._folded.predict(A)

    def feature_importance(self) -> pd.Series | None:
        """|coefficient| per standardised feature: the change in prediction per one std of the feature."""
        if self.estimator_ is None:
            return None
        coef = np.ravel(self.estimator_[-1].coef_)
        return pd.Series(np.abs(coef), index=self.feature_names, name="importance")
