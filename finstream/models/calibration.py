"""Forecast calibration: what a registered model applies to its raw forecasts, as it was evaluated.

* returns (`slope`): the Mincer–Zarnowitz slope of realised on predicted through the origin, floored at 0,
  f = b · p. No intercept: the benchmark the gates compare with is the zero forecast, and an intercept would
  add an estimated mean return, the historical-mean benchmark's job; the slope alone is the
  Campbell–Thompson-style shrinkage of a forecast that ranks well but is scaled too boldly.
* direction probabilities (`platt`): Platt scaling on the logit, p' = σ(a + b · logit(p)).
* `zero` / `half`: no pairs to fit on (the first walk-forward fold): the naive forecast (0, or P(up) = ½).
* `identity`: uncalibrated.

`training.calibration` fits them walk-forward (each fold's from earlier folds' out-of-sample pairs only) and
finally on every out-of-sample pair; the registered pyfunc carries that final calibration
(`finstream.models.pyfunc`), so serving, the stream and any backtest of the served model use exactly it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

CalibrationKind = Literal["identity", "slope", "platt", "zero", "half"]
#: probabilities are clipped to [EPS, 1 - EPS] before the logit
EPS = 1e-6


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration map (see the module docstring) and the pairs it was fitted on."""

    kind: CalibrationKind = "identity"
    slope: float = 1.0
    intercept: float = 0.0  # Platt's a
    pairs: int = 0

    def apply(self, pred: Any) -> np.ndarray:
        """The calibrated forecasts of raw forecasts `pred` (float64 array)."""
        p = np.asarray(pred, dtype="float64")
        if self.kind == "identity":
            return p
        if self.kind == "slope":
            return self.slope * p
        if self.kind == "zero":
            return np.zeros_like(p)
        if self.kind == "half":
            return np.full_like(p, 0.5)
        if self.kind == "platt":
            q = np.clip(p, EPS, 1.0 - EPS)
            z = self.intercept + self.slope * np.log(q / (1.0 - q))
            return 1.0 / (1.0 + np.exp(-z))
        raise ValueError(f"unknown calibration kind {self.kind!r}")

    def describe(self) -> str:
        """e.g. "slope 0.212 (3,400 pairs)"."""
        if self.kind == "slope":
            return f"slope {self.slope:.4g} ({self.pairs:,} pairs)"
        if self.kind == "platt":
            return f"Platt a {self.intercept:.4g}, b {self.slope:.4g} ({self.pairs:,} pairs)"
        return self.kind

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        raw = json.loads(text)
        return cls(str(raw["kind"]), float(raw["slope"]), float(raw["intercept"]), int(raw["pairs"]))  # type: ignore[arg-type]


def fit_slope(pred: Any, realised: Any) -> Calibration:
    """The slope of `realised` on `pred` through the origin, floored at 0; `zero` without usable pairs."""
    p, y = np.asarray(pred, dtype="float64"), np.asarray(realised, dtype="float64")
    ok = np.isfinite(p) & np.isfinite(y)
    p, y = p[ok], y[ok]
    denom = float(p @ p)
    if p.size == 0 or denom == 0.0:
        return Calibration("zero", 0.0, 0.0, int(p.size))
    return Calibration("slope", max(0.0, float(p @ y) / denom), 0.0, int(p.size))


def fit_platt(prob: Any, outcome: Any) -> Calibration:
    """Platt scaling of probabilities `prob` to 0/1 `outcome` (logistic regression on the logit, unpenalised
    in effect); `half` without both outcomes among the pairs."""
    from sklearn.linear_model import LogisticRegression

    p, y = np.asarray(prob, dtype="float64"), np.asarray(outcome, dtype="float64")
    ok = np.isfinite(p) & np.isfinite(y)
    p, y = p[ok], y[ok]
    if p.size == 0 or np.unique(y).size < 2:
        return Calibration("half", 0.0, 0.0, int(p.size))
    q = np.clip(p, EPS, 1.0 - EPS)
    z = np.log(q / (1.0 - q))[:, None]
    model = LogisticRegression(C=1e6, max_iter=1000).fit(z, y.astype(int))
    a, b = float(model.intercept_[0]), float(model.coef_[0, 0])
    if not (math.isfinite(a) and math.isfinite(b)):
        return Calibration("half", 0.0, 0.0, int(p.size))
    return Calibration("platt", b, a, int(p.size))


def fit_calibration(task: str, pred: Any, realised: Any) -> Calibration:
    """`fit_slope` for regression (realised = return), `fit_platt` for classification (realised = 0/1)."""
    return fit_slope(pred, realised) if task == "regression" else fit_platt(pred, realised)


class CalibratedForecaster:
    """A Forecaster whose forecasts pass through a Calibration; everything else is the wrapped model's.

    `predict` and (when the model has it) `predict_matrix` are calibrated; attributes such as
    `feature_names`, `task`, `family`, `sequential` and `params` are read from the wrapped model.
    """

    def __init__(self, model: Any, calibration: Calibration) -> None:
        self.model = model
        self.calibration = calibration

    def predict(self, X: Any) -> np.ndarray:
        return self.calibration.apply(self.model.predict(X))

    def __getattr__(self, name: str) -> Any:
        if name in ("model", "calibration"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        if name == "predict_matrix":
            fast = self.model.predict_matrix  # AttributeError when the model has none

            def predict_matrix(A: Any) -> np.ndarray:
                return self.calibration.apply(fast(A))

            return predict_matrix
        return getattr(self.model, name)


def raw_model(model: Any) -> Any:
    """The model inside a CalibratedForecaster (the model itself otherwise)."""
    return model.model if isinstance(model, CalibratedForecaster) else model
