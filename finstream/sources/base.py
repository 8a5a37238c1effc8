"""The provider interface: every source returns frames in the Bar schema for one canonical symbol."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import date
from typing import ClassVar

import pandas as pd

from finstream.config import Settings
from finstream.errors import SourceUnavailable, SymbolError
from finstream.intervals import DAILY
from finstream.symbols import Symbol


class Source(ABC):
    """A market-data provider. Subclasses map their library's real output into the Bar schema."""

    name: ClassVar[str]
    #: hosts the provider talks to; the router probes them once to fail fast with no network
    hosts: ClassVar[tuple[str, ...]] = ()
    #: True for providers that need the network
    live: ClassVar[bool] = True
    #: bar intervals the provider serves (see finstream.intervals.INTERVALS)
    intervals: ClassVar[tuple[str, ...]] = (DAILY,)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def unavailable_reason(self, symbol: Symbol) -> str | None:
        """Why this provider cannot serve `symbol` here (missing credentials, market not covered), or None.

        By default: the symbol has no form for this provider (`Symbol.for_provider` refuses it).
        """
        try:
            symbol.for_provider(self.name)
        except SymbolError as exc:
            return str(exc)
        return None

    def interval_unavailable(self, symbol: Symbol, interval: str) -> str | None:
        """Why this provider cannot serve `interval` bars of `symbol`, or None (default: `intervals`)."""
        if interval not in self.intervals:
            return f"{self.name} serves {', '.join(self.intervals)} bars, not {interval}"
        return None

    def provider_symbol(self, symbol: Symbol) -> str:
        """The provider's form of `symbol`; SourceUnavailable when the provider does not cover it."""
        try:
            return symbol.for_provider(self.name)
        except SymbolError as exc:
            raise SourceUnavailable(str(exc)) from exc

    @abstractmethod
    def fetch(
        self, symbol: Symbol, start: date | None, end: date | None, interval: str = DAILY
    ) -> pd.DataFrame:
        """`interval` bars for `symbol` whose exchange-local date is in [start, end] (inclusive), coerced
        with `to_bar_frame(..., interval=interval)`; `ts` is each bar's close time."""


def clip_dates(bars: pd.DataFrame, start: date | None, end: date | None, tz: str) -> pd.DataFrame:
    """Keep bars whose exchange-local date lies in [start, end]."""
    if bars.empty:
        return bars
    local = bars["ts"].dt.tz_convert(tz).dt.date
    mask = pd.Series(True, index=bars.index)
    if start is not None:
        mask &= local >= start
    if end is not None:
        mask &= local <= end
    return bars.loc[mask].reset_index(drop=True)
