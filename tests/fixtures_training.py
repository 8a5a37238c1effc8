"""A real training set for tests: packaged CSI 300 + S&P 500 bars -> features -> Dataset (cached)."""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import pandas as pd

from finstream.config import Settings
from finstream.feature_table import build_features
from finstream.sources.packaged import PackagedSource
from finstream.symbols import parse_symbol
from training.dataset import Dataset, dataset_from_frames


@lru_cache(maxsize=4)
def real_dataset(start: date = date(2010, 1, 1), end: date = date(2018, 12, 31), horizon: int = 1) -> Dataset:
    """CSI 300 and S&P 500 daily bars in [start, end] as a training Dataset (real data only)."""
    src = PackagedSource(Settings())
    bars = pd.concat(
        [src.fetch(parse_symbol(s), start, end) for s in ("000300.SH", "^GSPC")], ignore_index=True
    )
    return dataset_from_frames(build_features(bars), bars, horizon)
