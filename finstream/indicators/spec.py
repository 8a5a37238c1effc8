"""The indicator spec: one declarative list shared by the batch engine and the streaming engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Indicator:
    """One indicator: its kind (which function computes it), parameters and output column names."""

    kind: str
    params: Mapping[str, float] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()


DEFAULT_SPEC: tuple[Indicator, ...] = (
    Indicator("sma", {"window": 5}, ("sma_5",)),
    Indicator("sma", {"window": 10}, ("sma_10",)),
    Indicator("sma", {"window": 20}, ("sma_20",)),
    Indicator("sma", {"window": 60}, ("sma_60",)),
    Indicator("ema", {"window": 12}, ("ema_12",)),
    Indicator("ema", {"window": 26}, ("ema_26",)),
    Indicator("wma", {"window": 20}, ("wma_20",)),
    Indicator("rsi", {"window": 14}, ("rsi_14",)),
    Indicator("macd", {"fast": 12, "slow": 26, "signal": 9}, ("macd", "macd_signal", "macd_hist")),
    Indicator("kdj", {"window": 9, "k_smooth": 3, "d_smooth": 3}, ("kdj_k", "kdj_d", "kdj_j")),
    Indicator("willr", {"window": 14}, ("willr_14",)),
    Indicator(
        "bollinger",
        {"window": 20, "k": 2.0},
        ("bb_mid_20", "bb_upper_20", "bb_lower_20", "bb_pctb_20", "bb_width_20"),
    ),
    Indicator("atr", {"window": 14}, ("atr_14",)),
    Indicator("ret_std", {"window": 20}, ("ret_std_20",)),
    Indicator("obv", {}, ("obv",)),
    Indicator("vwap", {"window": 20}, ("vwap_20",)),
    Indicator("volume_ratio", {"window": 5}, ("volume_ratio_5",)),
    Indicator("momentum", {"window": 10}, ("mom_10",)),
    Indicator("roc", {"window": 10}, ("roc_10",)),
    Indicator("log_return", {"horizon": 1}, ("logret_1",)),
    Indicator("log_return", {"horizon": 5}, ("logret_5",)),
    Indicator("log_return", {"horizon": 20}, ("logret_20",)),
)


def feature_names(spec: tuple[Indicator, ...] = DEFAULT_SPEC) -> list[str]:
    """Every output column of a spec, in spec order (the Feast feature view's schema uses this)."""
    names = [name for ind in spec for name in ind.outputs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"indicator spec defines these columns twice: {sorted(dupes)}")
    return names
