"""Leakage sentinel: refuse features, or models, that predict next-period returns implausibly well.

Daily-return predictors in real markets have |IC| well under 0.1; on the packaged CSI 300 + S&P 500
training set (2010–2018) the largest honest |Spearman| of any model input with the target is about 0.09
(per symbol; 0.05 pooled). A feature or an out-of-sample forecast above 0.3 is almost surely built from the
future (a shifted close, a target column left in the frame, a centred window), so training stops.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from finstream.config import TrainParams
from finstream.errors import FinstreamError
from finstream.models.zoo.base import Task
from training.dataset import Dataset
from training.walk_forward import WalkForwardResult, test_period_start

log = logging.getLogger(__name__)

#: fewer rows than this for one symbol: its own correlation is too noisy to judge (pooled still counts)
MIN_ROWS_PER_SYMBOL = 250


class LeakageSuspected(FinstreamError):
    """A feature or a model's out-of-sample forecast correlates with the target too strongly to be honest."""

    def __init__(self, message: str, suspects: dict[str, float]) -> None:
        super().__init__(message)
        self.suspects = suspects


def feature_target_correlations(
    dataset: Dataset, task: Task, test_years: float | None = None, min_train_years: float | None = None
) -> pd.Series:
    """Largest |Spearman| of each feature with the task's target on the training part, descending.

    Training part: rows whose label is known before the test period of the walk-forward
    (`training.walk_forward.test_period_start` of `test_years` and `min_train_years`, defaults those of
    `TrainParams()`). Per feature the score is the larger of the pooled
    correlation and the per-symbol ones (symbols with >= MIN_ROWS_PER_SYMBOL rows), so a leak confined to
    one symbol is not diluted by the others.
    """
    min_years = TrainParams().min_train_years if min_train_years is None else min_train_years
    cut = test_period_start(dataset.event_time, test_years, min_years)
    train = (pd.to_datetime(dataset.label_time, utc=True) < cut).to_numpy()
    if train.sum() < MIN_ROWS_PER_SYMBOL:
        raise ValueError(
            f"only {int(train.sum())} training rows before {cut.date()} (test_years={test_years}): "
            "pass the test_years and min_train_years the walk-forward uses"
        )
    X = dataset.X.loc[train, dataset.feature_names].reset_index(drop=True)
    y = dataset.target(task).loc[train].reset_index(drop=True)
    symbols = dataset.X["symbol"].loc[train].reset_index(drop=True)
    scores = [X.corrwith(y, method="spearman").abs()]
    for sym in symbols.unique():
        rows = (symbols == sym).to_numpy()
        if rows.sum() >= MIN_ROWS_PER_SYMBOL:
            scores.append(X.loc[rows].corrwith(y.loc[rows], method="spearman").abs())
    table = pd.concat(scores, axis=1).fillna(0.0)
    return table.max(axis=1).sort_values(ascending=False).rename("abs_spearman")


def check_feature_leakage(
    dataset: Dataset,
    task: Task,
    max_abs_corr: float = 0.3,
    test_years: float | None = None,
    min_train_years: float | None = None,
) -> pd.Series:
    """Raise LeakageSuspected naming every feature with |Spearman| > `max_abs_corr` against the target.

    Returns the scores (see `feature_target_correlations`) when the dataset passes.
    """
    scores = feature_target_correlations(dataset, task, test_years, min_train_years)
    suspects = scores[scores > max_abs_corr]
    if not suspects.empty:
        listed = ", ".join(f"{name} (|rho| = {value:.3f})" for name, value in suspects.items())
        raise LeakageSuspected(
            f"feature(s) correlate with the {task} target above {max_abs_corr} on the training rows, "
            f"which no honest daily-return predictor does: {listed}. "
            "Check that they use data up to the bar's close only.",
            {str(k): float(v) for k, v in suspects.items()},
        )
    log.info("leakage check: %d features, max |rho| %.4f (%s)", len(scores), scores.iloc[0], scores.index[0])
    return scores


def check_model_leakage(result: WalkForwardResult, max_abs_ic: float = 0.3) -> None:
    """Raise LeakageSuspected when the out-of-sample IC or rank IC exceeds `max_abs_ic` in absolute value."""
    ics: dict[str, float] = {k: float(result.overall[k]) for k in ("ic", "rank_ic") if k in result.overall}
    suspects: dict[str, float] = {k: v for k, v in ics.items() if np.isfinite(v) and abs(v) > max_abs_ic}
    if suspects:
        listed = ", ".join(f"{k} = {v:.3f}" for k, v in suspects.items())
        raise LeakageSuspected(
            f"out-of-sample {listed} exceeds {max_abs_ic}: the model almost surely sees the future "
            "(a leaked feature, or test rows in training). Inspect the features and the splits.",
            suspects,
        )
    log.info("model leakage check passed: %s", ics)
