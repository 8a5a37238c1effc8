"""Bar-by-bar risk for the stream: `RollingRisk` (one series) and `RollingPortfolioRisk` (weights over
several), ring buffers with O(1) or O(window) work per bar, equal to the batch functions of
`finstream.risk.measures` on the same bars (see its docstring for the conventions).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from finstream.risk.measures import (
    es_column,
    fit_t_df,
    frame_columns,
    methods_for,
    model_var_es,
    normal_factors,
    student_t_factors,
    tail_count,
    validate_weights,
    var_column,
)
from finstream.risk.params import RiskParams

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RiskSnapshot:
    """The measures after one bar: `values` has the keys of `frame_columns` (NaN while warming up)."""

    ts: Any
    values: dict[str, float]


class _RingStats:
    """A fixed-length window of floats with a running sum and sum of squares (recomputed once per wrap to
    keep rounding from drifting) and, optionally, a sorted copy; NaNs are counted, never summed."""

    __slots__ = ("_pushed", "items", "nans", "size", "sorted", "sum", "sumsq")

    def __init__(self, size: int, keep_sorted: bool) -> None:
        self.size = size
        self.items: deque[float] = deque(maxlen=size)
        self.sorted: list[float] | None = [] if keep_sorted else None
        self.sum = 0.0
        self.sumsq = 0.0
        self.nans = 0
        self._pushed = 0

    @property
    def full(self) -> bool:
        return len(self.items) == self.size

    def push(self, value: float) -> None:
        items, ordered = self.items, self.sorted
        if len(items) == self.size:
            old = items[0]
            if old != old:
                self.nans -= 1
            else:
                self.sum -= old
                self.sumsq -= old * old
                if ordered is not None:
                    del ordered[bisect.bisect_left(ordered, old)]
        items.append(value)
        if value != value:
            self.nans += 1
        else:
            self.sum += value
            self.sumsq += value * value
            if ordered is not None:
                bisect.insort(ordered, value)
        self._pushed += 1
        if self._pushed % self.size == 0:
            finite = [v for v in items if v == v]
            self.sum = math.fsum(finite)
            self.sumsq = math.fsum(v * v for v in finite)

    def mean_std(self) -> tuple[float, float]:
        """Mean and sample std of a full window without NaNs (NaN otherwise)."""
        n = len(self.items)
        if n < self.size or self.nans:
            return math.nan, math.nan
        mean = self.sum / n
        return mean, math.sqrt(max(self.sumsq - self.sum * mean, 0.0) / (n - 1))


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's linear interpolation, rounding included (its `_lerp`)."""
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


class RollingRisk:
    """Every measure of `risk_frame`, updated bar by bar for one price (or wealth) series.

    Per bar: O(log window) search plus a list insertion for the historical quantiles, O(1) running sums for
    the normal / Student-t moments, realised and EWMA volatility and the spike z-score, a monotonic deque for
    the current drawdown, and O(window) for the maximum drawdown inside the window (and the spike median).
    The Student-t df is refitted every `t_refit_bars` bars (under 1 ms a fit), as `risk_frame` does. After a
    restart, feed it the stored bars again (the longest window's worth) to rebuild the same state.
    """

    def __init__(self, params: RiskParams | None = None, *, model: bool = False) -> None:
        self.params = p = params or RiskParams()
        self.model = model
        self.columns = frame_columns(p, model)
        self._methods = methods_for(model)
        self._levels = p.levels
        self._var_keys = {m: [var_column(m, a) for a in p.levels] for m in self._methods}
        self._es_keys = {m: [es_column(m, a) for a in p.levels] for m in self._methods}
        z, tail = normal_factors(p.levels)
        self._normal = (z.tolist(), tail.tolist())
        self._t: tuple[list[float], list[float]] | None = None
        self._df = math.nan
        if p.t_df is not None:
            self._set_df(float(p.t_df))
        self._qpos = []
        for level in p.levels:
            h = (p.window - 1) * (1.0 - level)
            lo = math.floor(h)
            self._qpos.append((lo, min(lo + 1, p.window - 1), h - lo))
        self._ks = [tail_count(p.window, a) for a in p.levels]
        self._rets = _RingStats(p.window, keep_sorted=True)
        self._vol = _RingStats(p.vol_window, keep_sorted=False)
        self._spike = _RingStats(p.spike_lookback, keep_sorted=p.spike_kind == "ratio")
        self._prices = np.empty(2 * p.drawdown_window)
        self._peaks: deque[tuple[int, float]] = deque()
        self._bar = -1
        self._n_returns = 0
        self._ewma_var = math.nan
        self._last_price = math.nan
        self.previous: RiskSnapshot | None = None
        self.current: RiskSnapshot | None = None

    @property
    def t_df(self) -> float:
        """The Student-t degrees of freedom in force (NaN before the first fit)."""
        return self._df

    def _set_df(self, df: float) -> None:
        self._df = df
        kq, ke = student_t_factors(df, self._levels)
        self._t = (np.ravel(kq).tolist(), np.ravel(ke).tolist())

    def update(self, ts: Any, price: float, vol_forecast: float | None = None) -> RiskSnapshot:
        """Take the bar closing at `ts` with `price`; `vol_forecast`: the forecast made now of the next bar's
        volatility (used by the "model" method and a "forecast" spike source)."""
        price = float(price)
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"price at {ts} must be finite and positive, got {price}")
        ret = price / self._last_price - 1.0 if self._bar >= 0 else math.nan
        self._last_price = price
        self._bar += 1
        values = dict.fromkeys(self.columns, math.nan)
        values["price"] = price
        self._drawdown(price, values)
        if ret == ret:
            self._returns(ret, values, vol_forecast)
        forecast = math.nan if vol_forecast is None else float(vol_forecast)
        if self.params.vol_source == "forecast":
            spike_value = forecast
        else:
            spike_value = values["vol" if self.params.vol_source == "realised" else "ewma_vol"]
        values["vol_spike"] = self._spike_score(spike_value)
        self.previous, self.current = self.current, RiskSnapshot(ts, values)
        return self.current

    def _returns(self, ret: float, values: dict[str, float], vol_forecast: float | None) -> None:
        p = self.params
        values["ret"], values["loss"] = ret, -ret
        self._n_returns += 1
        self._vol.push(ret)
        values["vol"] = self._vol.mean_std()[1]
        if self._n_returns == p.vol_window:
            self._ewma_var = float(np.mean(np.square(np.fromiter(self._vol.items, float))))
        elif self._n_returns > p.vol_window:
            lam = p.ewma_lambda
            self._ewma_var = (1.0 - lam) * ret * ret + lam * self._ewma_var
        ewma_sigma = math.sqrt(self._ewma_var) if self._ewma_var == self._ewma_var else math.nan
        values["ewma_vol"] = ewma_sigma
        rets = self._rets
        rets.push(ret)
        if rets.full:
            full_count = self._n_returns - p.window
            if p.t_df is None and full_count % p.t_refit_bars == 0:
                self._set_df(fit_t_df(np.fromiter(rets.items, float, count=p.window)))
            self._window_estimates(values)
        values["t_df"] = self._df
        sigmas = {"ewma": ewma_sigma}
        if self.model:
            sigmas["model"] = math.nan if vol_forecast is None else float(vol_forecast)
        for method, sigma in sigmas.items():
            self._parametric(method, 0.0, sigma, p.model_dist == "t", values)

    def _window_estimates(self, values: dict[str, float]) -> None:
        ordered = self._rets.sorted
        assert ordered is not None
        var_keys, es_keys = self._var_keys["historical"], self._es_keys["historical"]
        for i, (lo, hi, gamma) in enumerate(self._qpos):
            values[var_keys[i]] = -_lerp(ordered[lo], ordered[hi], gamma)
            k = self._ks[i]
            values[es_keys[i]] = -math.fsum(ordered[:k]) / k
        mu, sd = self._rets.mean_std()
        self._parametric("normal", mu, sd, False, values)
        self._parametric("student_t", mu, sd, True, values)

    def _parametric(self, method: str, mu: float, sigma: float, t: bool, values: dict[str, float]) -> None:
        factors = self._t if t else self._normal
        if factors is None:  # Student-t before its first df fit
            return
        kq, ke = factors
        var_keys, es_keys = self._var_keys[method], self._es_keys[method]
        for i in range(len(kq)):
            values[var_keys[i]] = -(mu + sigma * kq[i])
            values[es_keys[i]] = -(mu - sigma * ke[i])

    def _drawdown(self, price: float, values: dict[str, float]) -> None:
        window = self.params.drawdown_window
        peaks, bar = self._peaks, self._bar
        while peaks and peaks[-1][1] <= price:
            peaks.pop()
        peaks.append((bar, price))
        if peaks[0][0] <= bar - window:
            peaks.popleft()
        values["drawdown"] = 1.0 - price / peaks[0][1]
        # each price is written twice, window apart, so the window is always one contiguous slice
        slot = bar % window
        self._prices[slot] = self._prices[slot + window] = price
        prices = self._prices[slot + 1 : slot + 1 + window] if bar >= window else self._prices[: bar + 1]
        values["max_drawdown"] = 1.0 - float((prices / np.maximum.accumulate(prices)).min())

    def _spike_score(self, value: float) -> float:
        ring = self._spike
        score = math.nan
        if ring.full and not ring.nans and value == value:
            if self.params.spike_kind == "zscore":
                mean, sd = ring.mean_std()
                score = (value - mean) / sd if sd > 0 else math.nan
            else:
                ordered = ring.sorted
                assert ordered is not None
                m, half = len(ordered), len(ordered) // 2
                median = ordered[half] if m % 2 else 0.5 * (ordered[half - 1] + ordered[half])
                score = value / median if median > 0 else math.nan
        ring.push(value)
        return score


class RollingPortfolioRisk:
    """The stream form of a fixed-weight portfolio: its wealth runs through a `RollingRisk`, and the EWMA
    covariance of the symbols' returns is kept (O(d^2) per bar) for the VaR of any other weights."""

    def __init__(self, weights: Mapping[str, float], params: RiskParams | None = None) -> None:
        self.params = p = params or RiskParams()
        self.weights = validate_weights(
            weights, list(weights), allow_short=p.allow_short, tolerance=p.weight_tolerance
        )
        self.symbols = list(self.weights)
        self._w = np.array([self.weights[s] for s in self.symbols])
        self.risk = RollingRisk(p)
        self.risk.update(None, 1.0)
        self._seed: list[np.ndarray] = []
        self.covariance = np.full((len(self.symbols), len(self.symbols)), np.nan)
        self._wealth = 1.0

    def update(self, ts: Any, returns: Mapping[str, float]) -> RiskSnapshot:
        """Take one bar's simple returns of every symbol (same bar time for all)."""
        missing = [s for s in self.symbols if s not in returns]
        if missing:
            raise ValueError(f"bar {ts}: no return for {missing}")
        r = np.array([float(returns[s]) for s in self.symbols])
        lam = self.params.ewma_lambda
        if len(self._seed) < self.params.vol_window:
            self._seed.append(np.outer(r, r))
            if len(self._seed) == self.params.vol_window:
                self.covariance = np.mean(self._seed, axis=0)
        else:
            self.covariance = (1.0 - lam) * np.outer(r, r) + lam * self.covariance
        self._wealth *= 1.0 + float(r @ self._w)
        return self.risk.update(ts, self._wealth)

    def ewma_var_es(self, weights: Mapping[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """EWMA VaR / ES (zero mean, `model_dist`) of `weights` (default: the portfolio's own) now."""
        w_map = self.weights
        if weights is not None:
            w_map = validate_weights(
                weights,
                self.symbols,
                allow_short=self.params.allow_short,
                tolerance=self.params.weight_tolerance,
            )
        w = np.array([w_map.get(s, 0.0) for s in self.symbols])
        sigma = float(np.sqrt(w @ self.covariance @ w))
        var, es = model_var_es(sigma, self.params.levels, self.params.model_dist, self.risk.t_df)
        return var, es
