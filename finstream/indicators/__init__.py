"""Technical indicators: one declarative spec, computed here by the vectorised batch engine."""

from finstream.indicators.batch import compute_indicators, warmup_bars
from finstream.indicators.spec import DEFAULT_SPEC, Indicator, feature_names

__all__ = ["DEFAULT_SPEC", "Indicator", "compute_indicators", "feature_names", "warmup_bars"]
