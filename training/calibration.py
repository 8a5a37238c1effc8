"""Walk-forward calibration of out-of-sample forecasts: each fold's map is fitted on earlier folds only.

For test fold k, the calibration (`finstream.models.calibration.fit_calibration`: the through-origin
Mincer–Zarnowitz slope for returns, Platt scaling for direction) is fitted on the out-of-sample pairs of
folds before k whose label was known before fold k's first event time (purge: no pair's outcome lies in or
after the block it calibrates). Fold 0 has no such pairs and gets the naive forecast (return 0, P(up) ½).
The final calibration, fitted on every out-of-sample pair, is what the registered model carries.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from finstream.models.calibration import Calibration, fit_calibration

log = logging.getLogger(__name__)


def calibrate_walk_forward(predictions: pd.DataFrame, task: str) -> tuple[pd.DataFrame, list[Calibration]]:
    """`predictions` (fold, event_time, label_time, y, pred) with `pred` calibrated fold by fold and the raw
    forecast kept as `pred_raw`; and each fold's calibration, in fold order."""
    for column in ("fold", "event_time", "label_time", "y", "pred"):
        if column not in predictions.columns:
            raise KeyError(f"calibration needs the forecasts' {column!r} column")
    out = predictions.copy()
    raw = out["pred"].to_numpy(dtype="float64")
    y = out["y"].to_numpy(dtype="float64")
    fold = out["fold"].to_numpy()
    event = pd.to_datetime(out["event_time"], utc=True).to_numpy()
    label = pd.to_datetime(out["label_time"], utc=True).to_numpy()
    calibrated = np.empty_like(raw)
    fitted: list[Calibration] = []
    for k in np.unique(fold):
        rows = fold == k
        earlier = (fold < k) & (label < event[rows].min())
        calibration = fit_calibration(task, raw[earlier], y[earlier])
        calibrated[rows] = calibration.apply(raw[rows])
        fitted.append(calibration)
        log.info("fold %s: calibration %s", k, calibration.describe())
    out["pred_raw"] = raw
    out["pred"] = calibrated
    return out, fitted


def final_calibration(predictions: pd.DataFrame, task: str) -> Calibration:
    """The calibration fitted on every out-of-sample pair (raw forecast → outcome): the registered model's."""
    raw = predictions["pred_raw"] if "pred_raw" in predictions.columns else predictions["pred"]
    return fit_calibration(task, raw.to_numpy(dtype="float64"), predictions["y"].to_numpy(dtype="float64"))
