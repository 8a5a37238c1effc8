"""Training sets: point-in-time features from Feast, next-period targets from validated bars."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from finstream.models.inputs import MODEL_FEATURES, STORE_FEATURES, model_inputs

log = logging.getLogger(__name__)


@dataclass
class Dataset:
    """Rows sorted by (symbol, event_timestamp): X (model inputs + `symbol`), targets, and the row times.

    `label_time` is when the target becomes known (the close `horizon` bars later): walk-forward splits
    purge training rows whose label_time is after the test period starts.
    """

    X: pd.DataFrame
    y_return: pd.Series
    y_direction: pd.Series
    event_time: pd.Series
    label_time: pd.Series
    horizon: int

    @property
    def feature_names(self) -> list[str]:
        return [c for c in self.X.columns if c != "symbol"]

    def target(self, task: str) -> pd.Series:
        return self.y_return if task == "regression" else self.y_direction

    def for_symbols(self, symbols: list[str]) -> Dataset:
        return self.subset(self.X["symbol"].isin(symbols).to_numpy())

    def subset(self, mask: np.ndarray) -> Dataset:
        """The rows where `mask` is True, re-indexed from 0."""
        return Dataset(
            self.X.loc[mask].reset_index(drop=True),
            self.y_return.loc[mask].reset_index(drop=True),
            self.y_direction.loc[mask].reset_index(drop=True),
            self.event_time.loc[mask].reset_index(drop=True),
            self.label_time.loc[mask].reset_index(drop=True),
            self.horizon,
        )


def add_targets(bars: pd.DataFrame, horizon: int = 1) -> pd.DataFrame:
    """Per symbol: next-`horizon`-bar log return of close and the time it is known (label_time)."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1 bar, got {horizon}")
    bars = bars.sort_values(["symbol", "ts"], kind="stable")
    grouped = bars.groupby("symbol", sort=False)
    future_close = grouped["close"].shift(-horizon)
    out = bars[["symbol", "ts"]].copy()
    out["target_return"] = np.log(future_close / bars["close"])
    out["label_time"] = grouped["ts"].shift(-horizon)
    return out.dropna(subset=["target_return"]).reset_index(drop=True)


def assemble(features: pd.DataFrame, targets: pd.DataFrame, horizon: int) -> Dataset:
    """Join feature rows (at event_timestamp t) with targets (known at t + horizon) into a Dataset.

    `features` must come from a point-in-time join (Feast `get_historical_features` at the bar times),
    so no feature row is from after its event time.
    """
    merged = features.merge(
        targets.rename(columns={"ts": "event_timestamp"}), on=["symbol", "event_timestamp"], how="inner"
    )
    X = model_inputs(merged)
    keep = X.notna().all(axis=1).to_numpy()
    merged, X = merged.loc[keep], X.loc[keep]
    order = np.lexsort((merged["event_timestamp"].to_numpy(), merged["symbol"].to_numpy()))
    merged, X = merged.iloc[order].reset_index(drop=True), X.iloc[order].reset_index(drop=True)
    X.insert(0, "symbol", merged["symbol"].to_numpy())
    y = merged["target_return"].astype("float64")
    log.info("dataset: %d rows, %d features, %d symbols", len(X), len(MODEL_FEATURES), X["symbol"].nunique())
    return Dataset(
        X=X,
        y_return=y,
        y_direction=(y > 0).astype("int64"),
        event_time=merged["event_timestamp"],
        label_time=merged["label_time"],
        horizon=horizon,
    )


def dataset_from_frames(features: pd.DataFrame, bars: pd.DataFrame, horizon: int = 1) -> Dataset:
    """A Dataset straight from a feature frame (already point-in-time by construction) and bars.

    For tests and notebooks; `finstream train` goes through Feast (`training.store_dataset`).
    """
    return assemble(
        features[["symbol", "event_timestamp", *STORE_FEATURES]], add_targets(bars, horizon), horizon
    )
