"""Families "voting", "stacking", "bma": ensembles of tabular members (default ridge, hist_gb, xgboost).

All three refit every member on the whole training set for prediction. Stacking and BMA also fit members on
earlier rows only, to learn combination weights from predictions on rows those members never saw; "earlier"
is a row's position within its own symbol (X is sorted by symbol, then time).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import joblib
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from finstream.models.zoo.base import Forecaster, Task
from finstream.models.zoo.linear import FoldedLinear
from finstream.models.zoo.rows import SymbolRows, feature_matrix, feature_names_of
from finstream.models.zoo.storage import read_meta, write_meta
from finstream.models.zoo.tabular import TabularForecaster, check_task, sklearn_libraries, target_array

log = logging.getLogger(__name__)

DEFAULT_MEMBERS: list[str] = ["ridge", "hist_gb", "xgboost"]
_MEMBERS_DIR = "members"


def member_specs(members: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """(family, params) per member; a member is a family name or a [family, {params}] pair."""
    specs: list[tuple[str, dict[str, Any]]] = []
    for m in members:
        if isinstance(m, str):
            specs.append((m, {}))
        elif isinstance(m, list | tuple) and len(m) == 2 and isinstance(m[0], str) and isinstance(m[1], dict):
            specs.append((m[0], dict(m[1])))
        else:
            raise ValueError(f"ensemble member {m!r} must be a family name or a [family, {{params}}] pair")
    if not specs:
        raise ValueError("an ensemble needs at least one member")
    return specs


class EnsembleForecaster(Forecaster):
    """Members built by `make_model`, refit on all training rows; subclasses learn how to combine them."""

    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, task: Task, **params: Any) -> None:
        check_task(task)
        known = {"members": DEFAULT_MEMBERS, **self.defaults}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"{self.family} does not take {unknown}; its params are {sorted(known)}")
        merged = {**known, **params}
        self.specs = member_specs(list(merged["members"]))
        merged["members"] = [family if not p else [family, p] for family, p in self.specs]
        super().__init__(task, **merged)
        self.members_: list[Forecaster] = []

    def _new_members(self) -> list[Forecaster]:
        from finstream.models.zoo import make_model  # the registry imports this module

        members = [make_model(family, self.task, **params) for family, params in self.specs]
        for m in members:
            if m.sequential:
                raise ValueError(
                    f"{self.family} members must be tabular; {m.family!r} needs window context that an "
                    "ensemble's callers do not provide"
                )
        return members

    def _fit_members(self, X: pd.DataFrame, y: pd.Series) -> list[Forecaster]:
        return [m.fit(X, y) for m in self._new_members()]

    def _predict_members(self, members: list[Forecaster], X: pd.DataFrame) -> np.ndarray:
        """(len(X), n_members) member predictions; tabular members share one feature matrix."""
        A: np.ndarray | None = None
        columns = []
        for m in members:
            if isinstance(m, TabularForecaster) and m.feature_names == self.feature_names:
                A = feature_matrix(X, self.feature_names) if A is None else A
                columns.append(m.predict_matrix(A))
            else:
                columns.append(m.predict(X))
        return np.column_stack(columns)

    @abstractmethod
    def _learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        """Learn the combination (before members are refit on everything)."""

    @abstractmethod
    def _combine(self, P: np.ndarray) -> np.ndarray:
        """One prediction per row from the (n, n_members) member predictions."""

    def _state(self) -> dict[str, Any]:
        """Extra JSON fields to save."""
        return {}

    def _save_extra(self, path: Path) -> None:
        """Extra files to save."""

    def _restore(self, path: Path, meta: dict[str, Any]) -> None:
        """Read back what `_state` and `_save_extra` wrote."""

    def fit(self, X: pd.DataFrame, y: pd.Series) -> Self:
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        target_array(y, self.task)
        self.feature_names = feature_names_of(X)
        X, y = X.reset_index(drop=True), y.reset_index(drop=True)
        self._learn(X, y)
        self.members_ = self._fit_members(X, y)
        log.info("fit %s (%s) with members %s", self.family, self.task, [f for f, _ in self.specs])
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if not self.members_:
            raise RuntimeError(f"{self.family} model is not fitted: call fit() or load() first")
        return np.asarray(self._combine(self._predict_members(self.members_, X)), dtype=np.float64)

    def save(self, path: Path) -> None:
        if not self.members_:
            raise RuntimeError(f"{self.family} model is not fitted: nothing to save")
        path = Path(path)
        dirs = [f"{_MEMBERS_DIR}/{i}_{m.family}" for i, m in enumerate(self.members_)]
        write_meta(path, self, sklearn_libraries(), member_dirs=dirs, **self._state())
        for m, d in zip(self.members_, dirs, strict=True):
            m.save(path / d)
        self._save_extra(path)

    @classmethod
    def load(cls, path: Path) -> Self:
        from finstream.models.zoo import load_model  # the registry imports this module

        path = Path(path)
        meta = read_meta(path, cls.family)
        model = cls(meta["task"], **meta["params"])
        model.feature_names = list(meta["feature_names"])
        model.members_ = [load_model(path / d) for d in meta["member_dirs"]]
        model._restore(path, meta)
        return model


class VotingForecaster(EnsembleForecaster):
    """The plain average of member predictions (returns, or P(up))."""

    family: ClassVar[str] = "voting"

    def _learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        return None

    def _combine(self, P: np.ndarray) -> np.ndarray:
        return P.mean(axis=1)


class StackingForecaster(EnsembleForecaster):
    """A Ridge / LogisticRegression meta-learner (on standardised member outputs) fit on out-of-fold
    predictions only.

    Each symbol's rows are cut into `n_folds + 1` time blocks; for fold k = 1..n_folds, fresh members are fit
    on blocks < k (less the last `gap` rows before block k; set it to horizon - 1 for multi-bar targets) and
    predict block k. Block 0 has no out-of-fold prediction and does not train the meta-learner.
    `oof_index_`, `oof_fold_` and `oof_predictions_` keep the rows, folds and member predictions it saw.
    """

    family: ClassVar[str] = "stacking"
    defaults: ClassVar[dict[str, Any]] = {"n_folds": 4, "gap": 0, "meta_alpha": 1.0}

    def _meta_learner(self) -> Pipeline:
        alpha = float(self.params["meta_alpha"])
        if self.task == "regression":
            return make_pipeline(StandardScaler(), Ridge(alpha=alpha))
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / alpha, max_iter=1000))

    def _learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        n_folds, gap = int(self.params["n_folds"]), int(self.params["gap"])
        rows = SymbolRows.of(X)
        block = rows.blocks(n_folds + 1)
        fold = np.full(len(X), -1, dtype=np.int64)
        oof = np.full((len(X), len(self.specs)), np.nan)
        #: training rows of each fold's members, kept so callers can check they never overlap its OOF rows
        self.fold_train_index_: dict[int, np.ndarray] = {}
        for k in range(1, n_folds + 1):
            block_start = -((-k * rows.row_count) // (n_folds + 1))  # first position of block k per row
            train = rows.pos < block_start - gap
            test = block == k
            if not train.any() or not test.any():
                raise ValueError(
                    f"stacking fold {k} has no training or no test rows: too few rows per symbol"
                )
            members = self._fit_members(X.loc[train], y.loc[train])
            oof[test] = self._predict_members(members, X.loc[test])
            fold[test] = k
            self.fold_train_index_[k] = np.flatnonzero(train)
        self.oof_index_ = np.flatnonzero(fold >= 1)
        self.oof_fold_ = fold[self.oof_index_]
        self.oof_predictions_ = oof[self.oof_index_]
        target = target_array(y, self.task)[self.oof_index_]
        self.meta_ = self._meta_learner().fit(self.oof_predictions_, target)
        self._folded_meta = FoldedLinear.of(self.meta_)
        log.info("stacking meta-learner fit on %d out-of-fold rows (%d folds)", len(self.oof_index_), n_folds)

    def _combine(self, P: np.ndarray) -> np.ndarray:
        return self._folded_meta.predict(P)

    def _save_extra(self, path: Path) -> None:
        joblib.dump(self.meta_, path / "meta_learner.joblib")
        np.savez(
            path / "oof.npz", index=self.oof_index_, fold=self.oof_fold_, predictions=self.oof_predictions_
        )

    def _restore(self, path: Path, meta: dict[str, Any]) -> None:
        self.meta_ = joblib.load(path / "meta_learner.joblib")
        self._folded_meta = FoldedLinear.of(self.meta_)
        with np.load(path / "oof.npz") as oof:
            self.oof_index_, self.oof_fold_ = oof["index"], oof["fold"]
            self.oof_predictions_ = oof["predictions"]


class BMAForecaster(EnsembleForecaster):
    """Bayesian model averaging: weight_j ∝ exp(log-likelihood of member j on a held-out time tail).

    Members are fit on all but the latest `validation_fraction` of each symbol's rows and scored on that tail:
    regression uses a Gaussian likelihood N(y; prediction, σ_j²) with σ_j² the member's mean squared residual
    on the tail; classification the Bernoulli log-likelihood of P(up) (clipped to [1e-6, 1 - 1e-6]).
    Log-likelihoods are summed over tail rows (no tempering): weights concentrate fast on the best member.
    """

    family: ClassVar[str] = "bma"
    defaults: ClassVar[dict[str, Any]] = {"validation_fraction": 0.2}

    def _learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        val = SymbolRows.of(X).tail_mask(float(self.params["validation_fraction"]))
        members = self._fit_members(X.loc[~val], y.loc[~val])
        P = self._predict_members(members, X.loc[val])
        t = target_array(y, self.task)[val].astype(np.float64)
        self.log_likelihood_ = self.log_likelihood(P, t, self.task)
        w = np.exp(self.log_likelihood_ - self.log_likelihood_.max())
        self.weights_ = w / w.sum()
        log.info(
            "bma weights %s from %d validation rows",
            dict(zip([f for f, _ in self.specs], np.round(self.weights_, 4).tolist(), strict=True)),
            int(val.sum()),
        )

    @staticmethod
    def log_likelihood(P: np.ndarray, t: np.ndarray, task: str) -> np.ndarray:
        """Total log-likelihood of targets t under each member's predictions (columns of P)."""
        if task == "regression":
            var = np.maximum(((t[:, None] - P) ** 2).mean(axis=0), 1e-18)
            # sum of log N(r_i; 0, var) with var the MLE of the residual variance
            return -0.5 * len(t) * (np.log(2.0 * np.pi * var) + 1.0)
        p = np.clip(P, 1e-6, 1.0 - 1e-6)
        return (t[:, None] * np.log(p) + (1.0 - t[:, None]) * np.log(1.0 - p)).sum(axis=0)

    def _combine(self, P: np.ndarray) -> np.ndarray:
        return P @ self.weights_

    def _state(self) -> dict[str, Any]:
        return {"weights": self.weights_, "log_likelihood": self.log_likelihood_}

    def _restore(self, path: Path, meta: dict[str, Any]) -> None:
        self.weights_ = np.asarray(meta["weights"], dtype=np.float64)
        self.log_likelihood_ = np.asarray(meta["log_likelihood"], dtype=np.float64)
