"""Current risk per symbol and for a portfolio, from the validated bars the service holds (`BarHistory`):
the measures of `finstream.risk` at the latest bar, and the alert rules on it. With a `finstream-volatility`
champion loaded, each symbol also gets its next-bar volatility forecast and the model-based VaR / ES from it
(a baseline such as GJR-GARCH forecasts from the bars; a zoo candidate from the feature rows of the
features file). Computed once per version of the bar files, symbol and volatility model, then served from
memory.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from finstream.errors import FinstreamError, UnknownSymbol
from finstream.intervals import DAILY, bars_per_year
from finstream.models.champions import VOLATILITY_TASK, ChampionModels, LoadedVolatility
from finstream.models.volatility import SCALE
from finstream.models.windows import FeatureWindows
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
    forecast: dict[str, Any] | None = None  # the volatility champion's next-bar forecast, when one served

    def var(self, params: RiskParams) -> list[dict[str, Any]]:
        """VaR and ES per method and level (positive loss fractions of position value)."""
        model = var_column("model", params.levels[0]) in self.values
        return [
            {
                "method": method,
                "level": level,
                "var": _number(self.values.get(var_column(method, level))),
                "es": _number(self.values.get(es_column(method, level))),
            }
            for method in methods_for(model)
            for level in params.levels
        ]


class RiskBook:
    """Risk of the symbols whose validated bars `history` holds, cached per bar-file version."""

    #: feature rows a zoo volatility model forecasts from: the last two bars (the latest VaR and the one
    #: its breach rule is judged against)
    FEATURE_ROWS = 2

    def __init__(
        self,
        history: BarHistory,
        params: RiskParams,
        models: ChampionModels | None = None,
        windows: FeatureWindows | None = None,
    ) -> None:
        self.history = history
        self.params = params
        self.models = models
        self.windows = windows
        self._cache: dict[tuple[Any, str], RiskView] = {}
        self._lock = threading.Lock()

    @property
    def bars_needed(self) -> int:
        """Bars that make every measure defined at the latest one (windows, spike lookback), with room."""
        p = self.params
        return min(MAX_LIMIT, 2 * max(p.window, p.drawdown_window, p.spike_lookback + p.vol_window) + 2)

    def volatility_model(self) -> LoadedVolatility | None:
        """The `finstream-volatility` champion being served, if any."""
        return self.models.get(VOLATILITY_TASK) if self.models is not None else None

    def symbol(self, symbol: str) -> RiskView:
        """The latest risk of one symbol (UnknownSymbol when there are no validated bars for it)."""
        page = self.history.bars(symbol, limit=self.bars_needed)
        vol = self.volatility_model()
        key = (self.history.version(), page.symbol, None if vol is None else vol.version)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        bars = page.bars.reset_index(drop=True)
        closes = bars.set_index("ts")["close"]
        forecast, variance = None, None
        if vol is not None and page.symbol in vol.model.symbols:
            try:
                variance = self._variance(vol, page.symbol, bars)
                forecast = np.sqrt(variance) / SCALE
            except FinstreamError as exc:  # e.g. a zoo model's feature rows are missing: serve the rest
                log.warning("no volatility forecast for %s from %s: %s", page.symbol, vol.name, exc)
        frame = risk_frame(closes, self.params, vol_forecast=forecast)
        view = _latest(page.symbol, frame, self.params)
        if vol is not None and variance is not None:
            view = _with_forecast(view, vol, float(variance[-1]), self.history.interval)
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if k[0] == key[0]}
            self._cache[key] = view
        return view

    def _variance(self, vol: LoadedVolatility, symbol: str, bars: pd.DataFrame) -> np.ndarray:
        """The model's next-bar variance forecast (%²) at every bar (a candidate: at the last two)."""
        features = None
        if vol.model.needs_features:
            if self.windows is None:
                raise FinstreamError(f"{vol.name} v{vol.version} forecasts from features; none are loaded")
            last = pd.Timestamp(bars["ts"].iloc[-1])
            rows = self.windows.latest(symbol, self.FEATURE_ROWS, columns=vol.model.feature_names, as_of=last)
            features = pd.DataFrame(np.nan, index=range(len(bars)), columns=vol.model.feature_names)
            times = pd.to_datetime(bars["ts"], utc=True).dt.tz_localize(None).to_numpy("datetime64[us]")
            wanted = rows.times.astype("datetime64[us]")
            at = np.minimum(np.searchsorted(times, wanted), len(times) - 1)
            ok = times[at] == wanted
            features.iloc[at[ok]] = rows.values[ok]
        return vol.model.variance_path(symbol, bars, features)

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


def _with_forecast(view: RiskView, vol: LoadedVolatility, variance: float, interval: str) -> RiskView:
    """`view` with the volatility champion's next-bar forecast (variance in %² of the log return)."""
    from finstream.symbols import parse_symbols

    if not math.isfinite(variance):
        return view
    market = parse_symbols([view.name])[0].exchange_market
    per_bar = math.sqrt(variance) / SCALE
    forecast = {
        "model": vol.name,
        "version": vol.version,
        "family": vol.family,
        "kind": vol.kind,
        "gate": vol.reason,
        "variance": variance,
        "volatility": per_bar,
        "annualised": per_bar * math.sqrt(bars_per_year(interval, market)),
    }
    return RiskView(view.name, view.as_of, view.bars, view.values, view.alerts, forecast)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
