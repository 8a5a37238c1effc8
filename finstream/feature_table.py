"""Feature rows for the store: validated bars plus every indicator of the spec, one row per bar."""

from __future__ import annotations

import pandas as pd

from finstream.indicators import DEFAULT_SPEC, Indicator, compute_indicators, feature_names, warmup_bars

PRICE_FEATURES = ["open", "high", "low", "close", "volume", "amount"]


def build_features(bars: pd.DataFrame, spec: tuple[Indicator, ...] = DEFAULT_SPEC) -> pd.DataFrame:
    """Feature frame: symbol, event_timestamp (bar close), created_timestamp (ingest time), prices, features.

    The first `warmup_bars(spec)` bars of each symbol are dropped: some indicators are undefined there.
    """
    if bars.empty:
        cols = ["symbol", "event_timestamp", "created_timestamp", *PRICE_FEATURES, *feature_names(spec)]
        return pd.DataFrame(columns=cols)
    computed = compute_indicators(bars, spec)
    warm = warmup_bars(spec)
    position = computed.groupby("symbol").cumcount()
    computed = computed.loc[position >= warm]
    cols = ["symbol", "ts", "ingested_at", *PRICE_FEATURES, *feature_names(spec)]
    out = computed[cols].rename(columns={"ts": "event_timestamp", "ingested_at": "created_timestamp"})
    for col in (
        "event_timestamp",
        "created_timestamp",
    ):  # Feast's duckdb offline store reads microseconds only
        out[col] = out[col].dt.as_unit("us")
    return out.reset_index(drop=True)
