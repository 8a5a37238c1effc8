"""Model inputs from store features: price-level indicators become scale-free, so symbols can be pooled."""

from __future__ import annotations

import numpy as np
import pandas as pd

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


def model_inputs(features: pd.DataFrame) -> pd.DataFrame:
    """Scale-free model inputs (MODEL_FEATURES) from store feature rows; inf becomes NaN."""
    missing = [c for c in STORE_FEATURES if c not in features.columns]
    if missing:
        raise KeyError(f"feature rows lack {missing}: rebuild features with `finstream features`")
    close = features["close"].astype("float64")
    out = {f"{c}_rel": features[c] / close - 1.0 for c in RELATIVE_TO_CLOSE}
    out.update({f"{c}_scaled": features[c] / close for c in SCALED_BY_CLOSE})
    out.update({c: features[c].astype("float64") for c in AS_IS})
    frame = pd.DataFrame(out, index=features.index)[MODEL_FEATURES]
    return frame.replace([np.inf, -np.inf], np.nan)
