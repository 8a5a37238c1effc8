"""The one model-input transform: store feature rows → the scale-free inputs every model is fit and served on.

Price-level indicators become ratios to close so symbols can be pooled; pooled models add one 0/1 column per
symbol (`is_<symbol>`). Training (pandas frames, `model_inputs`), serving and the stream (one row per symbol,
`input_matrix`) all go through `input_matrix`, so a served input is the trained input bit for bit.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from finstream.errors import StoreUnavailable

#: price-level indicators, expressed as (indicator / close - 1)
RELATIVE_TO_CLOSE = [
    "sma_5",
    "sma_10",
    "sma_20",
    "sma_60",
    "ema_12",
    "ema_26",
    "wma_20",
    "bb_mid_20",
    "bb_upper_20",
    "bb_lower_20",
    "vwap_20",
]
#: price-difference indicators, expressed as (indicator / close)
SCALED_BY_CLOSE = ["atr_14", "macd", "macd_signal", "macd_hist", "mom_10"]
#: already scale-free
AS_IS = [
    "rsi_14",
    "kdj_k",
    "kdj_d",
    "kdj_j",
    "willr_14",
    "bb_pctb_20",
    "bb_width_20",
    "ret_std_20",
    "volume_ratio_5",
    "roc_10",
    "logret_1",
    "logret_5",
    "logret_20",
]
MODEL_FEATURES: list[str] = (
    [f"{c}_rel" for c in RELATIVE_TO_CLOSE] + [f"{c}_scaled" for c in SCALED_BY_CLOSE] + AS_IS
)
#: store features the transform reads
STORE_FEATURES: list[str] = ["close", *RELATIVE_TO_CLOSE, *SCALED_BY_CLOSE, *AS_IS]
#: prefix of the pooled models' symbol one-hot columns
ONEHOT_PREFIX = "is_"

_RELATIVE = {f"{c}_rel": c for c in RELATIVE_TO_CLOSE}
_SCALED = {f"{c}_scaled": c for c in SCALED_BY_CLOSE}
_AS_IS = frozenset(AS_IS)


@dataclass(frozen=True)
class FeatureRows:
    """Store features of some symbols, one row each: a (symbols x features) float matrix and bar times."""

    symbols: tuple[str, ...]
    names: tuple[str, ...]
    matrix: np.ndarray  # float64 (len(symbols), len(names)); NaN where the store holds no value
    timestamps: np.ndarray  # datetime64[s], UTC

    @functools.cached_property
    def values(self) -> dict[str, np.ndarray]:
        """One column (a view) per feature name."""
        return {name: self.matrix[:, j] for j, name in enumerate(self.names)}

    def ages(self, now: float | None = None) -> np.ndarray:
        """Seconds since each symbol's feature timestamp."""
        now = time.time() if now is None else now
        return now - self.timestamps.astype("int64").astype("float64")

    def timestamp(self, i: int) -> datetime:
        return datetime.fromtimestamp(int(self.timestamps[i].astype("int64")), tz=UTC)


def input_matrix(rows: FeatureRows, columns: Sequence[str]) -> np.ndarray:
    """Model inputs (rows x columns, float64) in the model's column order; ±inf becomes NaN.

    `columns` are MODEL_FEATURES names and `is_<symbol>` one-hot columns, in any order and subset. The
    column plan is computed once per (store layout, model columns): ~15 µs for one row.
    """
    plan = _plan(rows.names, tuple(columns))
    M = rows.matrix
    close = M[:, plan.close][:, None]
    out = np.empty((M.shape[0], len(plan.columns)), dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:, plan.as_is_at] = M[:, plan.as_is_from]
        out[:, plan.relative_at] = M[:, plan.relative_from] / close - 1.0
        out[:, plan.scaled_at] = M[:, plan.scaled_from] / close
    if plan.onehot_at:
        symbols = np.asarray(rows.symbols, dtype=object)[:, None]
        out[:, plan.onehot_at] = (symbols == np.asarray(plan.onehot_symbols, dtype=object)).astype("float64")
    out[~np.isfinite(out)] = np.nan
    return out


def model_inputs(features: pd.DataFrame) -> pd.DataFrame:
    """MODEL_FEATURES for every row of a store feature frame (training's batch form of `input_matrix`)."""
    missing = [c for c in STORE_FEATURES if c not in features.columns]
    if missing:
        raise KeyError(f"feature rows lack {missing}: rebuild features with `finstream features`")
    rows = FeatureRows(
        symbols=(),
        names=tuple(STORE_FEATURES),
        matrix=features[STORE_FEATURES].to_numpy(dtype="float64"),
        timestamps=np.empty(0, dtype="datetime64[s]"),
    )
    return pd.DataFrame(input_matrix(rows, MODEL_FEATURES), index=features.index, columns=MODEL_FEATURES)


def with_symbol_columns(X: pd.DataFrame) -> pd.DataFrame:
    """Pooled models: X plus one 0/1 column per symbol in it (`is_<symbol>`, symbols sorted)."""
    out = X.copy()
    for sym in sorted(out["symbol"].unique()):
        out[f"{ONEHOT_PREFIX}{sym}"] = (out["symbol"] == sym).astype("float64")
    return out


@dataclass(frozen=True)
class _Plan:
    columns: tuple[str, ...]
    close: int
    as_is_at: list[int]
    as_is_from: list[int]
    relative_at: list[int]
    relative_from: list[int]
    scaled_at: list[int]
    scaled_from: list[int]
    onehot_at: list[int]
    onehot_symbols: list[str]


@functools.lru_cache(maxsize=64)
def _plan(names: tuple[str, ...], columns: tuple[str, ...]) -> _Plan:
    where = {name: j for j, name in enumerate(names)}

    def source(name: str) -> int:
        try:
            return where[name]
        except KeyError:
            raise StoreUnavailable(
                f"the feature rows lack {name!r}: rebuild features and materialize them"
            ) from None

    plan = _Plan(columns, source("close"), [], [], [], [], [], [], [], [])
    for j, column in enumerate(columns):
        if column in _RELATIVE:
            plan.relative_at.append(j)
            plan.relative_from.append(source(_RELATIVE[column]))
        elif column in _SCALED:
            plan.scaled_at.append(j)
            plan.scaled_from.append(source(_SCALED[column]))
        elif column in _AS_IS:
            plan.as_is_at.append(j)
            plan.as_is_from.append(source(column))
        elif column.startswith(ONEHOT_PREFIX):
            plan.onehot_at.append(j)
            plan.onehot_symbols.append(column[len(ONEHOT_PREFIX) :])
        else:
            raise StoreUnavailable(f"the model wants input {column!r}, which no feature row provides")
    return plan
