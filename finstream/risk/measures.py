"""Risk measures: VaR and expected shortfall, portfolio VaR, rolling drawdown, volatility spikes, exposure.

One convention for the whole platform (batch report, service, stream):

- Returns are **simple** returns, r_t = p_t / p_{t-1} - 1: the loss L_t = -r_t is the fraction of position
  value lost over bar t, and a portfolio's return is exactly sum_i w_i r_i.
- VaR_a and ES_a are **positive loss fractions**: VaR_a = -q_{1-a}(r), ES_a = -E[r | r <= q_{1-a}(r)].
- An estimate at bar t uses the bars up to and including t and is the forecast for bar t+1.
- historical: q = `np.quantile(window, 1 - a, method="linear")` (Hyndman-Fan type 7, numpy's default, as
  empyrical's `value_at_risk`); ES = -mean of the k = floor((n-1)(1-a)) + 1 smallest returns, i.e. those at
  or below the interpolated quantile (empyrical's `conditional_value_at_risk`).
- normal: window mean and sample std (ddof=1).
- student_t: the window's mean and sample std, with a unit-variance Student-t shape (scale = std *
  sqrt((df-2)/df), so the variance matches); df by MLE of that very distribution on the window
  (`fit_t_df`), refitted every `t_refit_bars` bars, or fixed by `RiskParams.t_df`.
- ewma: zero mean and the RiskMetrics variance s2_t = lambda s2_{t-1} + (1-lambda) r_t^2, seeded with the
  mean of r^2 over the first `vol_window` returns; normal or unit-variance t (`model_dist`).
- model: zero mean and a given volatility forecast (std of the next bar's simple return; a log-return
  volatility forecast differs by O(sigma^2)), normal or unit-variance t.
- drawdown: on prices (or portfolio wealth), a positive fraction: current = 1 - p_t / max of the trailing
  `drawdown_window` prices, maximum = the largest peak-to-later-trough fall inside them (fewer prices at
  the start of a series).
- volatility spike: the realised (sample std of `vol_window` returns), EWMA or forecast volatility at t
  against its own previous `spike_lookback` values: z-score (ddof=1) or ratio to their median.

Batch functions are vectorised numpy; `finstream.risk.rolling.RollingRisk` is their bar-by-bar twin for the
stream (ring buffers, O(1) or O(window) per bar) and gives the same numbers on the same bars.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from scipy import optimize, signal, special

from finstream.errors import FinstreamError
from finstream.risk.params import RiskParams

log = logging.getLogger(__name__)

#: range searched for the Student-t degrees of freedom (the variance exists above 2)
DF_BOUNDS = (2.1, 200.0)
#: the VaR methods every estimate has; "model" is added when a volatility forecast is given
BASE_METHODS: tuple[str, ...] = ("historical", "normal", "student_t", "ewma")


class PortfolioWeightsError(FinstreamError, ValueError):
    """Portfolio weights that cannot be used; the message names every problem found."""


@functools.cache
def level_tag(level: float) -> str:
    """0.95 -> "95", 0.975 -> "97.5": the level as it appears in column names."""
    return f"{level * 100:g}"


@functools.cache
def var_column(method: str, level: float) -> str:
    return f"var_{method}_{level_tag(level)}"


@functools.cache
def es_column(method: str, level: float) -> str:
    return f"es_{method}_{level_tag(level)}"


def simple_returns(prices: Any) -> np.ndarray:
    """r_t = p_t / p_{t-1} - 1: one value fewer than `prices`."""
    p = np.asarray(prices, dtype=np.float64)
    return p[1:] / p[:-1] - 1.0


def _returns(returns: Any, minimum: int = 2) -> np.ndarray:
    """`returns` as a finite float array along the last axis, at least `minimum` long."""
    x = np.asarray(returns, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] < minimum:
        raise ValueError(f"need at least {minimum} returns, got {x.shape[-1] if x.ndim else 0}")
    if not np.isfinite(x).all():
        raise ValueError("returns contain NaN or infinite values; drop or fill them first")
    return x


def _levels(levels: Sequence[float]) -> np.ndarray:
    out = np.asarray(levels, dtype=np.float64)
    if out.ndim != 1 or out.size == 0 or ((out <= 0.5) | (out >= 1.0)).any():
        raise ValueError(f"confidence levels must lie in (0.5, 1): {levels}")
    return out


def tail_count(n: int, level: float) -> int:
    """How many of `n` returns make up the historical ES tail: floor((n - 1)(1 - level)) + 1."""
    return math.floor((n - 1) * (1.0 - level) + 1e-9) + 1


# --- one window (or many windows along the last axis) -----------------------------------------------


def historical_var_es(returns: Any, levels: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Historical VaR and ES of the returns along the last axis: arrays shaped (..., len(levels))."""
    x = _returns(returns)
    lv = _levels(levels)
    n = x.shape[-1]
    q = np.moveaxis(np.quantile(x, 1.0 - lv, axis=-1, method="linear"), 0, -1)
    ks = [tail_count(n, level) for level in lv]
    part = np.partition(x, sorted({k - 1 for k in ks}), axis=-1)
    es = np.stack([part[..., :k].mean(axis=-1) for k in ks], axis=-1)
    return -q, -es


def normal_factors(levels: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(z, tail) per level: VaR = -(mu + sigma z), ES = -(mu - sigma tail).

    z = Phi^-1(1 - a) and tail = phi(z) / (1 - a), the standard normal's quantile and tail mean.
    """
    p = 1.0 - _levels(levels)
    z = special.ndtri(p)
    return z, np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi) / p


def student_t_factors(df: Any, levels: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(kq, ke) per df and level for a unit-variance Student-t: VaR = -(mu + sigma kq), ES = -(mu - sigma ke).

    With s = sqrt((df-2)/df) and t_p = T_df^-1(p): kq = s t_p, ke = s f_df(t_p) (df + t_p^2) / ((df-1) p).
    """
    p = 1.0 - _levels(levels)
    nu = np.asarray(df, dtype=np.float64)[..., None]
    scale = np.sqrt((nu - 2.0) / nu)
    tq = special.stdtrit(nu, p)  # scipy.stats.t.ppf without its per-call overhead (~0.3 ms)
    log_pdf = (
        special.gammaln((nu + 1.0) / 2.0)
        - special.gammaln(nu / 2.0)
        - 0.5 * np.log(nu * math.pi)
        - (nu + 1.0) / 2.0 * np.log1p(tq**2 / nu)
    )
    tail = np.exp(log_pdf) * (nu + tq**2) / ((nu - 1.0) * p)
    return scale * tq, scale * tail


def _expand(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)[..., None]


def normal_var_es(mu: Any, sigma: Any, levels: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Normal VaR and ES for mean `mu` and std `sigma` (scalars or arrays): shaped (..., len(levels))."""
    z, tail = normal_factors(levels)
    m, s = _expand(mu), _expand(sigma)
    return -(m + s * z), -(m - s * tail)


def student_t_var_es(mu: Any, sigma: Any, df: Any, levels: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Unit-variance Student-t VaR and ES with mean `mu`, std `sigma`, `df` degrees of freedom (> 2)."""
    kq, ke = student_t_factors(df, levels)
    m, s = _expand(mu), _expand(sigma)
    return -(m + s * kq), -(m - s * ke)


def model_var_es(
    sigma: Any, levels: Sequence[float], dist: str = "normal", df: Any = None, mu: Any = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """VaR and ES from a volatility forecast `sigma` (std of the next simple return): normal or unit-variance
    Student-t (`dist` "t", with `df`)."""
    if dist == "normal":
        return normal_var_es(mu, sigma, levels)
    if dist == "t":
        if df is None:
            raise ValueError("a Student-t model VaR needs df (degrees of freedom > 2)")
        return student_t_var_es(mu, sigma, df, levels)
    raise ValueError(f"unknown distribution {dist!r}: use 'normal' or 't'")


def fit_t_df(returns: Any) -> float:
    """Degrees of freedom of the unit-variance Student-t (location = mean, variance = sample variance) that
    maximise the likelihood of `returns`; bounded to DF_BOUNDS (a near-normal sample sits at the top)."""
    x = _returns(returns, minimum=3)
    sd = x.std(ddof=1)
    if sd == 0.0:
        raise ValueError("cannot fit a Student-t to returns that never change")
    z2 = ((x - x.mean()) / sd) ** 2
    n = z2.size

    def negative_loglik(nu: float) -> float:
        c = nu - 2.0
        const = special.gammaln((nu + 1.0) / 2.0) - special.gammaln(nu / 2.0) - 0.5 * math.log(math.pi * c)
        return -(n * const - (nu + 1.0) / 2.0 * float(np.log1p(z2 / c).sum()))

    result = optimize.minimize_scalar(
        negative_loglik, bounds=DF_BOUNDS, method="bounded", options={"xatol": 1e-5}
    )
    return float(result.x)


# --- rolling (batch) --------------------------------------------------------------------------------


def _pad(values: np.ndarray, total: int) -> np.ndarray:
    """`values` placed at the end of an array of length `total` along axis 0, NaN in front."""
    out = np.full((total, *values.shape[1:]), np.nan)
    if len(values):
        out[total - len(values) :] = values
    return out


def rolling_moments(returns: Any, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1) of each trailing `window` of returns; NaN before the first full one."""
    x = np.asarray(returns, dtype=np.float64)
    if len(x) < window:
        return np.full(len(x), np.nan), np.full(len(x), np.nan)
    w = sliding_window_view(x, window)
    return _pad(w.mean(axis=1), len(x)), _pad(w.std(axis=1, ddof=1), len(x))


def rolling_historical(returns: Any, window: int, levels: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Historical VaR and ES of each trailing `window`: (n, levels), NaN rows before the first full one."""
    x = np.asarray(returns, dtype=np.float64)
    if len(x) < window:
        empty = np.full((len(x), len(levels)), np.nan)
        return empty, empty.copy()
    var, es = historical_var_es(sliding_window_view(x, window), levels)
    return _pad(var, len(x)), _pad(es, len(x))


def rolling_t_df(returns: Any, window: int, refit: int, fixed: float | None = None) -> np.ndarray:
    """Student-t df in force at each bar: fitted on the trailing window at bars window-1, window-1+refit, ...
    and held until the next fit (or `fixed` everywhere); NaN before the first full window unless fixed."""
    x = np.asarray(returns, dtype=np.float64)
    if fixed is not None:
        return np.full(len(x), float(fixed))
    out = np.full(len(x), np.nan)
    for start in range(window - 1, len(x), refit):
        out[start : start + refit] = fit_t_df(x[start - window + 1 : start + 1])
    return out


def ewma_variance(returns: Any, lam: float, seed: int) -> np.ndarray:
    """RiskMetrics EWMA variance after each return (the forecast for the next): at bar seed-1 the mean of the
    first `seed` squared returns, then s2_t = lam s2_{t-1} + (1 - lam) r_t^2; NaN before."""
    x = np.asarray(returns, dtype=np.float64)
    out = np.full(len(x), np.nan)
    if len(x) < seed:
        return out
    sq = x * x
    start = float(sq[:seed].mean())
    out[seed - 1] = start
    if len(x) > seed:
        out[seed:], _ = signal.lfilter([1.0 - lam], [1.0, -lam], sq[seed:], zi=[lam * start])
    return out


def realised_volatility(returns: Any, window: int) -> np.ndarray:
    """Sample std (ddof=1) of each trailing `window` of returns; NaN before the first full window."""
    return rolling_moments(returns, window)[1]


def volatility_spike(vol: Any, lookback: int, kind: str = "zscore") -> np.ndarray:
    """Each volatility against the `lookback` values before it: z-score (ddof=1) or ratio to their median.

    NaN where the current value or any of those before it is NaN (or fewer than `lookback` exist).
    """
    v = np.asarray(vol, dtype=np.float64)
    out = np.full(len(v), np.nan)
    if len(v) <= lookback:
        return out
    history = sliding_window_view(v[:-1], lookback)
    current = v[lookback:]
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "zscore":
            out[lookback:] = (current - history.mean(axis=1)) / history.std(axis=1, ddof=1)
        elif kind == "ratio":
            out[lookback:] = current / np.median(history, axis=1)
        else:
            raise ValueError(f"unknown spike kind {kind!r}: use 'zscore' or 'ratio'")
    return out


def rolling_drawdown(prices: Any, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(current, maximum) drawdown within each trailing `window` of prices (fewer at the start): current =
    1 - p_t / max(window), maximum = the largest fall from a peak to a later price inside the window."""
    p = np.asarray(prices, dtype=np.float64)
    padded = np.concatenate([np.full(window - 1, np.nan), p])
    w = sliding_window_view(padded, window)
    peak = np.fmax.accumulate(w, axis=1)
    dd = 1.0 - w / peak
    return dd[:, -1], np.nanmax(dd, axis=1)


# --- the batch twin of RollingRisk -------------------------------------------------------------------


def methods_for(model: bool) -> tuple[str, ...]:
    """The VaR methods estimated: the base ones, plus "model" when a volatility forecast is given."""
    return (*BASE_METHODS, "model") if model else BASE_METHODS


def frame_columns(params: RiskParams, model: bool = False) -> list[str]:
    """Column names of `risk_frame` and keys of `RiskSnapshot.values`, in order."""
    columns = ["price", "ret", "loss", "vol", "ewma_vol", "t_df"]
    for method in methods_for(model):
        for level in params.levels:
            columns += [var_column(method, level), es_column(method, level)]
    return [*columns, "drawdown", "max_drawdown", "vol_spike"]


def rolling_var_es(
    returns: Any, method: str, params: RiskParams, vol_forecast: Any = None, df: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """VaR and ES of `method` at every bar of `returns` (estimate at t from returns up to t): (n, levels).

    `vol_forecast` (the "model" method): per bar, the forecast made then of the next bar's volatility;
    `df`: the Student-t df per bar when already known (else `rolling_t_df` under `params`).
    """
    x = np.asarray(returns, dtype=np.float64)
    levels, window = params.levels, params.window
    if method == "historical":
        return rolling_historical(x, window, levels)
    if method == "normal":
        mu, sd = rolling_moments(x, window)
        return normal_var_es(mu, sd, levels)
    needs_df = method == "student_t" or params.model_dist == "t"
    if df is None and needs_df:
        df = rolling_t_df(x, window, params.t_refit_bars, params.t_df)
    if method == "student_t":
        mu, sd = rolling_moments(x, window)
        return student_t_var_es(mu, sd, df, levels)
    if method == "ewma":
        sigma = np.sqrt(ewma_variance(x, params.ewma_lambda, params.vol_window))
    elif method == "model":
        if vol_forecast is None:
            raise ValueError("the model method needs a volatility forecast per bar")
        sigma = np.asarray(vol_forecast, dtype=np.float64)
    else:
        raise ValueError(f"unknown VaR method {method!r}; known: {', '.join(methods_for(True))}")
    return model_var_es(sigma, levels, params.model_dist, df if params.model_dist == "t" else None)


def _check_prices(prices: Any) -> np.ndarray:
    p = np.asarray(prices, dtype=np.float64)
    if p.ndim != 1 or not (np.isfinite(p) & (p > 0)).all():
        raise ValueError("prices must be a 1-D series of finite positive numbers (drop missing bars first)")
    return p


def risk_frame(prices: pd.Series, params: RiskParams | None = None, vol_forecast: Any = None) -> pd.DataFrame:
    """Every measure at every bar of `prices` (index kept): the batch twin of `RollingRisk`.

    `vol_forecast` (optional, aligned with `prices`): the forecast made at each bar of the next bar's
    volatility; it adds the "model" method.
    """
    params = params or RiskParams()
    p = _check_prices(prices)
    n = len(p)
    r = simple_returns(p)
    forecast = None
    if vol_forecast is not None:
        forecast = np.asarray(vol_forecast, dtype=np.float64)
        if forecast.shape != p.shape:
            raise ValueError(f"vol_forecast has {forecast.size} values for {n} prices")
    out: dict[str, np.ndarray] = {"price": p, "ret": _pad(r, n), "loss": _pad(-r, n)}
    out["vol"] = _pad(realised_volatility(r, params.vol_window), n)
    out["ewma_vol"] = _pad(np.sqrt(ewma_variance(r, params.ewma_lambda, params.vol_window)), n)
    df = rolling_t_df(r, params.window, params.t_refit_bars, params.t_df)
    out["t_df"] = _pad(df, n)
    for method in methods_for(forecast is not None):
        var, es = rolling_var_es(r, method, params, None if forecast is None else forecast[1:], df)
        for i, level in enumerate(params.levels):
            out[var_column(method, level)] = _pad(var[:, i], n)
            out[es_column(method, level)] = _pad(es[:, i], n)
    out["drawdown"], out["max_drawdown"] = rolling_drawdown(p, params.drawdown_window)
    source = {"realised": out["vol"], "ewma": out["ewma_vol"]}.get(params.vol_source)
    if source is None:
        source = forecast if forecast is not None else np.full(n, np.nan)
    out["vol_spike"] = volatility_spike(source, params.spike_lookback, params.spike_kind)
    index = prices.index if isinstance(prices, pd.Series) else None
    return pd.DataFrame(out, index=index)[frame_columns(params, forecast is not None)]


# --- portfolio ---------------------------------------------------------------------------------------


def validate_weights(
    weights: Mapping[str, float],
    symbols: Sequence[str],
    *,
    allow_short: bool = False,
    tolerance: float = 1e-6,
) -> dict[str, float]:
    """`weights` as floats when they are usable: known symbols, finite, summing to 1 within `tolerance`,
    none negative unless `allow_short`; else PortfolioWeightsError (a ValueError) naming every problem."""
    if not weights:
        raise PortfolioWeightsError("portfolio weights are empty: give at least one symbol -> weight")
    problems = []
    unknown = sorted(set(weights) - set(symbols))
    if unknown:
        problems.append(f"unknown symbols {unknown} (known: {sorted(symbols)})")
    values = {str(s): float(w) for s, w in weights.items()}
    bad = sorted(s for s, w in values.items() if not math.isfinite(w))
    if bad:
        problems.append(f"weights of {bad} are not finite numbers")
    negative = {s: w for s, w in values.items() if w < 0}
    if negative and not allow_short:
        problems.append(f"negative weights {negative} but shorting is not allowed (allow_short=False)")
    total = math.fsum(w for w in values.values() if math.isfinite(w))
    if not bad and abs(total - 1.0) > tolerance:
        problems.append(f"weights sum to {total:.10g}, not 1 (tolerance {tolerance:g})")
    if problems:
        raise PortfolioWeightsError("portfolio weights: " + "; ".join(problems))
    return values


def portfolio_returns(returns: pd.DataFrame, weights: Mapping[str, float]) -> pd.Series:
    """The portfolio's simple return per bar, sum_i w_i r_i (weights rebalanced to target every bar)."""
    symbols = list(weights)
    return returns[symbols] @ np.array([weights[s] for s in symbols], dtype=np.float64)


def rolling_covariance(returns: Any, window: int) -> np.ndarray:
    """Sample covariance (ddof=1) of each trailing `window` of return vectors: (n, d, d), NaN before."""
    x = np.asarray(returns, dtype=np.float64)
    n, d = x.shape
    out = np.full((n, d, d), np.nan)
    if n < window:
        return out
    w = sliding_window_view(x, window, axis=0)  # (n - window + 1, d, window)
    dev = w - w.mean(axis=2, keepdims=True)
    out[window - 1 :] = np.einsum("tiw,tjw->tij", dev, dev) / (window - 1)
    return out


def ewma_covariance(returns: Any, lam: float, seed: int) -> np.ndarray:
    """RiskMetrics EWMA covariance (zero mean) after each bar: (n, d, d); at bar seed-1 the mean of the first
    `seed` outer products r r', then S_t = lam S_{t-1} + (1 - lam) r_t r_t'; NaN before."""
    x = np.asarray(returns, dtype=np.float64)
    n, d = x.shape
    out = np.full((n, d, d), np.nan)
    if n < seed:
        return out
    outer = (x[:, :, None] * x[:, None, :]).reshape(n, d * d)
    start = outer[:seed].mean(axis=0)
    out[seed - 1] = start.reshape(d, d)
    if n > seed:
        filtered, _ = signal.lfilter(
            [1.0 - lam], [1.0, -lam], outer[seed:], axis=0, zi=(lam * start)[None, :]
        )
        out[seed:] = filtered.reshape(n - seed, d, d)
    return out


@dataclass(frozen=True)
class PortfolioRisk:
    """VaR / ES of a weighted portfolio at the last bar, per method, with the covariances behind them."""

    weights: dict[str, float]
    levels: tuple[float, ...]
    var: dict[str, np.ndarray]  # method -> one value per level
    es: dict[str, np.ndarray]
    sigma: dict[str, float]  # "sample" (over the window) and "ewma" portfolio std
    covariance: dict[str, np.ndarray]  # "sample" and "ewma", ordered as `weights`
    t_df: float


def portfolio_var_es(
    returns: pd.DataFrame, weights: Mapping[str, float], params: RiskParams | None = None
) -> PortfolioRisk:
    """Portfolio VaR / ES at the last row of `returns` (simple returns, one column per symbol).

    historical: the weighted returns of the last `window` rows; normal / student_t: mean w'mu and std
    sqrt(w' S w) with the sample covariance S of that window (df by MLE on the weighted returns); ewma: zero
    mean and sqrt(w' S w) with the EWMA covariance over all rows (`model_dist`).
    """
    params = params or RiskParams()
    w_map = validate_weights(
        weights, list(returns.columns), allow_short=params.allow_short, tolerance=params.weight_tolerance
    )
    symbols = list(w_map)
    x = _returns(returns[symbols].to_numpy(dtype=np.float64).T, minimum=params.window).T
    w = np.array([w_map[s] for s in symbols])
    window = x[-params.window :]
    port = window @ w
    sample = np.atleast_2d(np.cov(window, rowvar=False, ddof=1))
    ewma = ewma_covariance(x, params.ewma_lambda, params.vol_window)[-1]
    sigma = {"sample": float(np.sqrt(w @ sample @ w)), "ewma": float(np.sqrt(w @ ewma @ w))}
    mu = float(window.mean(axis=0) @ w)
    df = float(params.t_df) if params.t_df is not None else fit_t_df(port)
    estimates = {
        "historical": historical_var_es(port, params.levels),
        "normal": normal_var_es(mu, sigma["sample"], params.levels),
        "student_t": student_t_var_es(mu, sigma["sample"], df, params.levels),
        "ewma": model_var_es(sigma["ewma"], params.levels, params.model_dist, df),
    }
    return PortfolioRisk(
        weights=w_map,
        levels=params.levels,
        var={m: v for m, (v, _) in estimates.items()},
        es={m: e for m, (_, e) in estimates.items()},
        sigma=sigma,
        covariance={"sample": sample, "ewma": ewma},
        t_df=df,
    )


def portfolio_frame(
    returns: pd.DataFrame, weights: Mapping[str, float], params: RiskParams | None = None
) -> pd.DataFrame:
    """`risk_frame` of the portfolio's wealth (1 before the first row, then compounded portfolio returns)."""
    params = params or RiskParams()
    w_map = validate_weights(
        weights, list(returns.columns), allow_short=params.allow_short, tolerance=params.weight_tolerance
    )
    port = portfolio_returns(returns, w_map).to_numpy(dtype=np.float64)
    wealth = np.concatenate([[1.0], np.cumprod(1.0 + port)])
    frame = risk_frame(pd.Series(wealth), params)
    frame.index = returns.index.insert(0, pd.NaT)
    return frame


def exposure(weights: Mapping[str, float]) -> dict[str, float]:
    """Absolute weight per symbol plus "gross" (sum of |w|) and "net" (sum of w): what limits are set on."""
    out = {str(s): abs(float(w)) for s, w in weights.items()}
    out["gross"] = math.fsum(abs(float(w)) for w in weights.values())
    out["net"] = math.fsum(float(w) for w in weights.values())
    return out


# --- the incremental (stream) form ------------------------------------------------------------------
