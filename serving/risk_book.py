"""Current risk per symbol and for a portfolio, from the validated bars the service holds (`BarHistory`):
the measures of `finstream.risk` at the latest bar, and the alert rules on it. Computed once per version of
the bar files and symbol, then served from memory.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from finstream.errors import UnknownSymbol
from finstream.intervals import DAILY
from finstream.risk.alerts import Alert, evaluate_bar, evaluate_limits
from finstream.risk.measures import (
    es_column,
    methods_for,
    portfolio_frame,
    risk_frame,
    validate_weights,
    var_column,
)
from finstream.risk.params import RiskParams
from serving.history import MAX_LIMIT, BarHistory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RiskView:
    """The measures at one bar (a row of `risk_frame`) and the alerts that bar raises."""

    name: str  # a symbol, or "portfolio"
    as_of: pd.Timestamp
    bars: int
    values: dict[str, float]
    alerts: list[Alert] = field(default_factory=list)

    def var(self, params: RiskParams) -> list[dict[str, Any]]:
        """VaR and ES per method and level (positive loss fractions of position value)."""
        return [
            {
                "method": method,
                "level": level,
                "var": _number(self.values.get(var_column(method, level))),
                "es": _number(self.values.get(es_column(method, level))),
            }
            for method in methods_for(False)
            for level in params.levels
        ]


class RiskBook:
    """Risk of the symbols whose validated bars `history` holds, cached per bar-file version."""

    def __init__(self, history: BarHistory, params: RiskParams) -> None:
        self.history = history
        self.params = params
        self._cache: dict[tuple[Any, str], RiskView] = {}
        self._lock = threading.Lock()

    @property
    def bars_needed(self) -> int:
        """Bars that make every measure defined at the latest one (windows, spike lookback), with room."""
        p = self.params
        return min(MAX_LIMIT, 2 * max(p.window, p.drawdown_window, p.spike_lookback + p.vol_window) + 2)

    def symbol(self, symbol: str) -> RiskView:
        """The latest risk of one symbol (UnknownSymbol when there are no validated bars for it)."""
        page = self.history.bars(symbol, limit=self.bars_needed)
        key = (self.history.version(), page.symbol)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        closes = page.bars.set_index("ts")["close"]
        frame = risk_frame(closes, self.params)
        view = _latest(page.symbol, frame, self.params)
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if k[0] == key[0]}
            self._cache[key] = view
        return view

    def portfolio(self, weights: Mapping[str, float]) -> RiskView:
        """The latest risk of a portfolio of validated symbols given by weights (PortfolioWeightsError,
        a ValueError, naming what is wrong with them); limit alerts on the weights themselves."""
        named = validate_weights(
            {self._name(s): w for s, w in weights.items()},
            self.history.symbols(),
            allow_short=self.params.allow_short,
            tolerance=self.params.weight_tolerance,
        )
        closes = {}
        for symbol in named:
            series = self.history.bars(symbol, limit=self.bars_needed).bars.set_index("ts")["close"]
            if self.history.interval == DAILY:  # markets close at different hours of one trading date
                series.index = series.index.normalize()
            closes[symbol] = series
        returns = pd.DataFrame(closes).dropna().pct_change().iloc[1:]
        frame = portfolio_frame(returns, named, self.params).iloc[1:]
        view = _latest("portfolio", frame, self.params)
        view.alerts.extend(evaluate_limits(named, view.as_of, self.params))
        return view

    def _name(self, symbol: str) -> str:
        """The stored name of `symbol`, or `symbol` itself when there are no bars of it (reported unknown)."""
        try:
            return self.history.canonical(symbol)
        except UnknownSymbol:
            return symbol


def _latest(name: str, frame: pd.DataFrame, params: RiskParams) -> RiskView:
    """The last row's measures and the bar rules on it (its VaR was forecast by the row before)."""
    last = frame.iloc[-1].to_dict()
    previous = frame.iloc[-2].to_dict() if len(frame) > 1 else None
    as_of = pd.Timestamp(frame.index[-1])
    alerts = evaluate_bar(last, previous, as_of, params, symbol=name)
    return RiskView(name, as_of, len(frame), {k: float(v) for k, v in last.items()}, list(alerts))


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
