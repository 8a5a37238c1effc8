"""The model zoo: every family by name, and building / loading a Forecaster from a family name or a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finstream.models.zoo.base import Forecaster, Task
from finstream.models.zoo.boosting import XGBoostForecaster
from finstream.models.zoo.ensembles import BMAForecaster, StackingForecaster, VotingForecaster
from finstream.models.zoo.linear import RidgeForecaster
from finstream.models.zoo.sequence import CNNLSTMForecaster, LSTMForecaster, TransformerForecaster
from finstream.models.zoo.storage import saved_family
from finstream.models.zoo.svm import SVMForecaster
from finstream.models.zoo.tabular import check_task
from finstream.models.zoo.trees import HistGBForecaster, RandomForestForecaster

FAMILIES: dict[str, type[Forecaster]] = {
    cls.family: cls
    for cls in (
        RidgeForecaster,
        RandomForestForecaster,
        HistGBForecaster,
        XGBoostForecaster,
        SVMForecaster,
        LSTMForecaster,
        TransformerForecaster,
        CNNLSTMForecaster,
        VotingForecaster,
        StackingForecaster,
        BMAForecaster,
    )
}


def family_class(family: str) -> type[Forecaster]:
    """The Forecaster class of a family name, or a ValueError listing the known families."""
    try:
        return FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}: use one of {', '.join(FAMILIES)}") from None


def make_model(family: str, task: str, **params: Any) -> Forecaster:
    """An unfitted Forecaster of `family` for `task` ("regression" or "classification")."""
    cls = family_class(family)
    return cls(check_task(task), **params)


def load_model(path: Path | str) -> Forecaster:
    """Load a Forecaster saved with `save(path)`, whatever its family (read from the folder's metadata)."""
    return family_class(saved_family(Path(path))).load(Path(path))


__all__ = ["FAMILIES", "Forecaster", "Task", "family_class", "load_model", "make_model"]
