"""Market-data providers and the router that fails over between them."""

from __future__ import annotations

from finstream.config import Settings
from finstream.sources.base import Source


def build_sources(settings: Settings) -> dict[str, Source]:
    """Every built-in provider, keyed by name (imports are lazy: akshare and yfinance are slow to import)."""
    from finstream.sources.akshare import AkshareSource
    from finstream.sources.alphavantage import AlphaVantageSource
    from finstream.sources.packaged import PackagedSource
    from finstream.sources.tushare import TushareSource
    from finstream.sources.yfinance import YfinanceSource

    classes: list[type[Source]] = [
        AkshareSource,
        YfinanceSource,
        AlphaVantageSource,
        TushareSource,
        PackagedSource,
    ]
    return {cls.name: cls(settings) for cls in classes}


__all__ = ["Source", "build_sources"]
