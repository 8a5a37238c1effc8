"""Technical indicators: one declarative spec, computed by the vectorised batch engine (`batch`) and, bar by
bar with identical results, by the incremental engine of the stream (`incremental`)."""

from finstream.indicators.batch import compute_indicators, warmup_bars
from finstream.indicators.incremental import IncrementalIndicators
from finstream.indicators.spec import DEFAULT_SPEC, Indicator, feature_names

__all__ = [
    "DEFAULT_SPEC",
    "IncrementalIndicators",
    "Indicator",
    "compute_indicators",
    "feature_names",
    "warmup_bars",
]
