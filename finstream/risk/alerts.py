"""Risk alerts: rules evaluated on each bar's measures, with thresholds from `RiskParams`.

Rules (each bar, level-triggered: a rule fires on every bar its condition holds; de-duplication is the
consumer's choice):

- ``var_breach``: the bar's realised loss against the forecasts made one bar earlier by
  `RiskParams.alert_method`: beyond the ES at the highest level -> critical; beyond the VaR at the highest
  level -> warning; beyond the VaR at a lower level only -> info (a 95 % VaR is meant to be beaten one bar in
  twenty, so that alone is information, not a warning).
- ``drawdown``: the current drawdown within the drawdown window beyond `drawdown_warning` / `_critical`.
- ``vol_spike``: the volatility's spike score beyond `spike_warning` / `spike_critical`.
- ``max_weight`` / ``max_gross``: a symbol's absolute weight, or the gross exposure, beyond
  `limit_warning_fraction` x its limit -> warning, beyond the limit -> critical.

"beyond" is strict (>); a NaN measure (still warming up) never fires.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from finstream.risk.measures import es_column, exposure, level_tag, var_column
from finstream.risk.params import RiskParams
from finstream.risk.rolling import RiskSnapshot, RollingRisk

log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]
#: the symbol of an alert about the whole portfolio
PORTFOLIO = "portfolio"


@dataclass(frozen=True, slots=True)
class Alert:
    """One rule firing on one bar for one symbol (or the portfolio)."""

    severity: Severity
    rule: str
    value: float
    limit: float
    symbol: str
    bar_time: Any
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the bar time as ISO 8601."""
        when = self.bar_time.isoformat() if hasattr(self.bar_time, "isoformat") else self.bar_time
        return {
            "severity": self.severity,
            "rule": self.rule,
            "value": self.value,
            "limit": self.limit,
            "symbol": self.symbol,
            "bar_time": when,
            "message": self.message,
        }


def _graded(value: float, warning: float, critical: float) -> tuple[Severity, float] | None:
    """(severity, limit crossed) for a value against two thresholds; None below both or when NaN."""
    if value > critical:
        return "critical", critical
    if value > warning:
        return "warning", warning
    return None


def var_breach(
    loss: float, previous: Mapping[str, float], params: RiskParams
) -> tuple[Severity, float, str] | None:
    """(severity, limit, what the limit is) when `loss` beats the forecasts in `previous`; None otherwise."""
    method, levels = params.alert_method, params.levels
    top = levels[-1]
    es_top = previous.get(es_column(method, top), math.nan)
    if loss > es_top:
        return "critical", es_top, f"{method} ES {level_tag(top)}%"
    var_top = previous.get(var_column(method, top), math.nan)
    if loss > var_top:
        return "warning", var_top, f"{method} VaR {level_tag(top)}%"
    for level in reversed(levels[:-1]):
        var = previous.get(var_column(method, level), math.nan)
        if loss > var:
            return "info", var, f"{method} VaR {level_tag(level)}%"
    return None


def evaluate_bar(
    current: Mapping[str, float],
    previous: Mapping[str, float] | None,
    bar_time: Any,
    params: RiskParams,
    symbol: str = PORTFOLIO,
) -> list[Alert]:
    """The bar rules on one bar's measures (`RiskSnapshot.values` or a `risk_frame` row); `previous` is the
    bar before (its VaR / ES are the forecasts for this bar)."""
    alerts: list[Alert] = []
    loss = current.get("loss", math.nan)
    if previous is not None:
        hit = var_breach(loss, previous, params)
        if hit is not None:
            severity, limit, label = hit
            message = f"{symbol}: loss {loss:.2%} beyond the {label} forecast {limit:.2%}"
            alerts.append(Alert(severity, "var_breach", loss, limit, symbol, bar_time, message))
    dd = current.get("drawdown", math.nan)
    graded = _graded(dd, params.drawdown_warning, params.drawdown_critical)
    if graded is not None:
        severity, limit = graded
        message = f"{symbol}: drawdown {dd:.2%} over {params.drawdown_window} bars beyond {limit:.2%}"
        alerts.append(Alert(severity, "drawdown", dd, limit, symbol, bar_time, message))
    spike = current.get("vol_spike", math.nan)
    graded = _graded(spike, params.spike_warning, params.spike_critical)
    if graded is not None:
        severity, limit = graded
        message = (
            f"{symbol}: {params.vol_source} volatility spike {params.spike_kind} {spike:.2f} beyond {limit:g}"
        )
        alerts.append(Alert(severity, "vol_spike", spike, limit, symbol, bar_time, message))
    return alerts


def evaluate_frame(frame: pd.DataFrame, params: RiskParams, symbol: str = PORTFOLIO) -> list[Alert]:
    """The bar rules on every row of a `risk_frame` (its index is the bar time), in bar order: the batch
    twin of calling `evaluate_bar` bar by bar. Rows no rule can fire on are skipped with vectorised masks."""
    loss = frame["loss"].to_numpy(dtype=np.float64)
    lowest = np.full(len(frame), np.inf)
    for level in params.levels:
        lowest = np.fmin(lowest, frame[var_column(params.alert_method, level)].to_numpy(dtype=np.float64))
    prior_lowest = np.concatenate([[np.nan], lowest[:-1]])
    candidates = (
        (loss > prior_lowest)
        | (frame["drawdown"].to_numpy(dtype=np.float64) > params.drawdown_warning)
        | (frame["vol_spike"].to_numpy(dtype=np.float64) > params.spike_warning)
    )
    records = frame.to_dict("records")
    alerts: list[Alert] = []
    for i in np.flatnonzero(candidates):
        previous = records[i - 1] if i > 0 else None
        alerts += evaluate_bar(records[i], previous, frame.index[i], params, symbol)
    return alerts


def evaluate_limits(
    weights: Mapping[str, float], bar_time: Any, params: RiskParams, portfolio: str = PORTFOLIO
) -> list[Alert]:
    """Position (absolute weight per symbol) and gross-exposure limits on current weights (fractions of
    equity, e.g. market value / portfolio value)."""
    alerts: list[Alert] = []
    used = exposure(weights)
    checks = [(s, "max_weight", used[s], params.max_weight) for s in weights]
    checks.append((portfolio, "max_gross", used["gross"], params.max_gross))
    for symbol, rule, value, limit in checks:
        graded = _graded(value, params.limit_warning_fraction * limit, limit)
        if graded is None:
            continue
        severity = graded[0]
        share = value / limit
        message = f"{symbol}: {rule.replace('_', ' ')} {value:.2%} is {share:.0%} of the limit {limit:.2%}"
        alerts.append(Alert(severity, rule, value, limit, symbol, bar_time, message))
    return alerts


class RiskMonitor:
    """What the stream runs per bar for one symbol (or a portfolio's wealth): update the measures, then the
    bar rules."""

    def __init__(self, symbol: str, params: RiskParams | None = None, *, model: bool = False) -> None:
        self.symbol = symbol
        self.params = params or RiskParams()
        if self.params.alert_method == "model" and not model:
            raise ValueError("alert_method 'model' needs model=True and a volatility forecast with each bar")
        self.risk = RollingRisk(self.params, model=model)

    def on_bar(
        self, ts: Any, price: float, vol_forecast: float | None = None
    ) -> tuple[RiskSnapshot, list[Alert]]:
        snapshot = self.risk.update(ts, price, vol_forecast)
        previous = self.risk.previous
        alerts = evaluate_bar(
            snapshot.values, None if previous is None else previous.values, ts, self.params, self.symbol
        )
        for alert in alerts:
            if alert.severity == "critical":
                log.info("risk alert %s", alert.message, extra={"alert": alert.to_dict()})
        return snapshot, alerts
