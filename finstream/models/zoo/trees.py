"""Families "random_forest" and "hist_gb": scikit-learn tree ensembles on the raw features.

sklearn predicts a forest with one joblib task per tree (about 8 ms for one row with 200 trees) and a
HistGradientBoosting model inside an OpenMP region per call (slow and jumpy on busy cores), so both predict
through `FlatTrees`: every tree's nodes in flat arrays, walked for all trees at once with numpy. It applies
sklearn's decision rule exactly (NaN goes to the learned side, else `x <= threshold`; forests compare float32
inputs, HGB float64) and is checked against sklearn's own predict in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from threadpoolctl import threadpool_limits

from finstream.models.zoo.tabular import TabularForecaster

_CHUNK_ROWS = 2048


@dataclass
class FlatTrees:
    """Many binary trees as one node table. Leaves point to themselves with an infinite threshold, so
    `depth` steps from the roots land every row on its leaf in every tree."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    nan_left: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    depth: int
    input_dtype: type
    #: "mean" of leaf values (forests) or baseline + "sum" (gradient boosting)
    reduce: str
    baseline: float = 0.0

    @classmethod
    def _build(cls, parts: list[dict[str, np.ndarray]], depth: int, **kw: Any) -> FlatTrees:
        cols: dict[str, list[np.ndarray]] = {
            k: [] for k in ("left", "right", "feature", "threshold", "nan_left", "value")
        }
        roots, offset = [], 0
        for part in parts:
            n = len(part["leaf"])
            idx = np.arange(n)
            leaf = part["leaf"]
            cols["left"].append(np.where(leaf, idx, part["left"]) + offset)
            cols["right"].append(np.where(leaf, idx, part["right"]) + offset)
            cols["feature"].append(np.where(leaf, 0, part["feature"]))
            cols["threshold"].append(np.where(leaf, np.inf, part["threshold"]))
            cols["nan_left"].append(np.where(leaf, True, part["nan_left"].astype(bool)))
            cols["value"].append(np.where(leaf, part["value"], 0.0))
            roots.append(offset)
            offset += n
        flat = {k: np.concatenate(v) for k, v in cols.items()}
        return cls(
            left=flat["left"].astype(np.intp),
            right=flat["right"].astype(np.intp),
            feature=flat["feature"].astype(np.intp),
            threshold=flat["threshold"].astype(np.float64),
            nan_left=flat["nan_left"],
            value=flat["value"].astype(np.float64),
            roots=np.asarray(roots, dtype=np.intp),
            depth=int(depth),
            **kw,
        )

    @classmethod
    def from_forest(cls, forest: RandomForestRegressor | RandomForestClassifier, task: str) -> FlatTrees:
        """Leaf values: the tree's mean target (regression) or its share of class 1 (classification)."""
        classes = list(forest.classes_) if task == "classification" else []
        parts = []
        for est in forest.estimators_:
            tree = est.tree_
            if task == "regression":
                value = tree.value[:, 0, 0]
            elif 1 in classes:
                counts = tree.value[:, 0, :]
                total = counts.sum(axis=1)
                value = counts[:, classes.index(1)] / np.where(total == 0, 1.0, total)
            else:
                value = np.zeros(tree.node_count)
            parts.append(
                {
                    "leaf": tree.children_left == -1,
                    "left": tree.children_left,
                    "right": tree.children_right,
                    "feature": tree.feature,
                    "threshold": tree.threshold,
                    "nan_left": tree.missing_go_to_left,
                    "value": value,
                }
            )
        depth = max(est.tree_.max_depth for est in forest.estimators_)
        return cls._build(parts, depth, input_dtype=np.float32, reduce="mean")

    @classmethod
    def from_hist_gb(
        cls, model: HistGradientBoostingRegressor | HistGradientBoostingClassifier
    ) -> FlatTrees | None:
        """The raw score (before the link) of a one-output HGB model; None if it uses categorical splits."""
        predictors = [it[0] for it in model._predictors]
        if model.n_trees_per_iteration_ != 1 or any(p.nodes["is_categorical"].any() for p in predictors):
            return None
        parts = [
            {
                "leaf": p.nodes["is_leaf"].astype(bool),
                "left": p.nodes["left"],
                "right": p.nodes["right"],
                "feature": p.nodes["feature_idx"],
                "threshold": p.nodes["num_threshold"],
                "nan_left": p.nodes["missing_go_to_left"],
                "value": p.nodes["value"],
            }
            for p in predictors
        ]
        depth = max((int(p.nodes["depth"].max()) for p in predictors), default=0)
        baseline = float(np.ravel(model._baseline_prediction)[0])
        return cls._build(parts, depth, input_dtype=np.float64, reduce="sum", baseline=baseline)

    def predict(self, A: np.ndarray) -> np.ndarray:
        """Mean (or baseline + sum) over trees of the leaf value each row lands in; float64, len(A)."""
        A = np.asarray(A, dtype=self.input_dtype)
        has_nan = bool(np.isnan(A).any())
        out = np.empty(len(A), dtype=np.float64)
        for lo in range(0, len(A), _CHUNK_ROWS):
            a = A[lo : lo + _CHUNK_ROWS]
            rows = np.arange(len(a))[:, None]
            node = np.broadcast_to(self.roots, (len(a), len(self.roots))).copy()
            for _ in range(self.depth):
                x = a[rows, self.feature[node]]
                go_left = x <= self.threshold[node]
                if has_nan:
                    go_left |= np.isnan(x) & self.nan_left[node]
                node = np.where(go_left, self.left[node], self.right[node])
            leaves = self.value[node]
            out[lo : lo + len(a)] = (
                leaves.mean(axis=1) if self.reduce == "mean" else self.baseline + leaves.sum(axis=1)
            )
        return out


class RandomForestForecaster(TabularForecaster):
    """RandomForestRegressor / RandomForestClassifier; fits on all cores, predicts through FlatTrees.

    Defaults are modest for noisy daily returns: 200 trees, leaves of at least 50 rows, sqrt(features) per
    split. Other params go to the sklearn estimator; `fit_jobs` is the fit-time n_jobs.
    """

    family: ClassVar[str] = "random_forest"
    passthrough: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {
        "n_estimators": 200,
        "min_samples_leaf": 50,
        "max_features": "sqrt",
        "random_state": 0,
        "fit_jobs": -1,
    }

    def _fit_matrix(self, A: np.ndarray, t: np.ndarray, X: pd.DataFrame) -> Any:
        cls = RandomForestRegressor if self.task == "regression" else RandomForestClassifier
        est = cls(n_jobs=self.params["fit_jobs"], **self._estimator_params("fit_jobs"))
        return est.fit(A, t)

    def _ready(self) -> None:
        self.estimator_.set_params(n_jobs=1)
        self._flat = FlatTrees.from_forest(self.estimator_, self.task)

    def predict_matrix(self, A: np.ndarray) -> np.ndarray:
        return self._flat.predict(A)

    def feature_importance(self) -> pd.Series | None:
        if self.estimator_ is None:
            return None
        return pd.Series(self.estimator_.feature_importances_, index=self.feature_names, name="importance")


class HistGBForecaster(TabularForecaster):
    """HistGradientBoostingRegressor / Classifier (squared error / log loss).

    sklearn's built-in early stopping holds out a random (not time-ordered) split, so it is off by default.
    `fit_jobs` caps the OpenMP threads of fit (None = all cores; on busy shared cores 1 is far faster, as
    OpenMP barriers stall on descheduled threads). Other params go to the sklearn estimator.
    """

    family: ClassVar[str] = "hist_gb"
    passthrough: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {
        "max_iter": 200,
        "learning_rate": 0.05,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 50,
        "l2_regularization": 1.0,
        "early_stopping": False,
        "random_state": 0,
        "fit_jobs": None,
    }

    def _fit_matrix(self, A: np.ndarray, t: np.ndarray, X: pd.DataFrame) -> Any:
        cls = HistGradientBoostingRegressor if self.task == "regression" else HistGradientBoostingClassifier
        with threadpool_limits(limits=self.params["fit_jobs"], user_api="openmp"):
            return cls(**self._estimator_params("fit_jobs")).fit(A, t)

    def _ready(self) -> None:
        self._flat = FlatTrees.from_hist_gb(self.estimator_)

    def predict_matrix(self, A: np.ndarray) -> np.ndarray:
        if self._flat is None:  # categorical splits: sklearn's own predict
            return super().predict_matrix(A)
        raw = self._flat.predict(A)
        if self.task == "classification":
            # binary log loss: P(class 1) = expit(raw score) when classes_ are [0, 1]
            return expit(raw) if list(self.estimator_.classes_) == [0, 1] else super().predict_matrix(A)
        return raw
