"""VaR backtests: exceedances against the expected rate, Kupiec's proportion-of-failures test,
Christoffersen's independence and conditional-coverage tests, the Basel traffic light, and a walk-forward
backtest.

An exceedance at bar t is a realised loss beyond the VaR forecast for t: -r_t > VaR_{t|t-1} (strict).

Edge cases never give NaN: every likelihood uses 0 * log(0) = 0 (`scipy.special.xlogy`), so
- Kupiec with zero exceedances gives LR = -2 n log(1 - p) and with only exceedances LR = -2 n log(p): both
  finite, with their chi2(1) p-values;
- Christoffersen's independence test has nothing to test when the transition counts cannot show dependence:
  no exceedance, only exceedances, fewer than two observations (no consecutive pair), no pair that starts
  with an exceedance (e.g. one exceedance, on the last bar) or none that starts without one. The likelihood
  ratio is then exactly 0: we give LR = 0 and p-value = 1.0 (cannot reject), with `informative` False so a
  report can say so;
- the conditional-coverage test adds the two statistics (chi2, 2 df) and is informative when the
  independence part is.
An empty sequence raises ValueError: there is nothing to backtest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from finstream.risk.measures import BASE_METHODS, rolling_t_df, rolling_var_es
from finstream.risk.params import RiskParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LRTest:
    """A likelihood-ratio test: statistic, its chi2 p-value and degrees of freedom."""

    statistic: float
    pvalue: float
    df: int
    informative: bool = True


def _hits(exceedances: Any) -> np.ndarray:
    hits = np.asarray(exceedances)
    if hits.ndim != 1 or hits.size == 0:
        raise ValueError("need a non-empty 1-D sequence of exceedances (True/1 where the loss beat VaR)")
    if not np.isin(hits, (0, 1)).all():
        raise ValueError("exceedances must be 0/1 or booleans")
    return hits.astype(bool)


def exceedances(losses: Any, var: Any) -> np.ndarray:
    """True where the realised loss is beyond the VaR forecast (loss > VaR)."""
    return np.asarray(losses, dtype=np.float64) > np.asarray(var, dtype=np.float64)


def kupiec_pof(exceedances: Any, level: float) -> LRTest:
    """Kupiec (1995) proportion-of-failures test: is the exceedance rate 1 - level?

    LR = -2 [ (n-x) log(1-p) + x log p - (n-x) log(1-x/n) - x log(x/n) ] ~ chi2(1), p = 1 - level.
    """
    hits = _hits(exceedances)
    n, x = hits.size, int(hits.sum())
    p, observed = 1.0 - level, x / n
    null = special.xlogy(n - x, 1.0 - p) + special.xlogy(x, p)
    alternative = special.xlogy(n - x, 1.0 - observed) + special.xlogy(x, observed)
    lr = max(-2.0 * (null - alternative), 0.0)
    return LRTest(float(lr), float(stats.chi2.sf(lr, 1)), 1)


def transition_counts(exceedances: Any) -> tuple[int, int, int, int]:
    """(n00, n01, n10, n11): consecutive pairs (I_{t-1}, I_t) of no-exceedance (0) / exceedance (1)."""
    hits = _hits(exceedances).astype(np.int8)
    pairs = 2 * hits[:-1] + hits[1:]
    counts = np.bincount(pairs, minlength=4)
    return int(counts[0]), int(counts[1]), int(counts[2]), int(counts[3])


def christoffersen_independence(exceedances: Any) -> LRTest:
    """Christoffersen (1998) independence test against a first-order Markov chain of exceedances.

    pi01 = n01 / (n00 + n01), pi11 = n11 / (n10 + n11), pi = (n01 + n11) / (n00 + n01 + n10 + n11);
    LR = -2 [ (n00+n10) log(1-pi) + (n01+n11) log pi
              - n00 log(1-pi01) - n01 log pi01 - n10 log(1-pi11) - n11 log pi11 ] ~ chi2(1).
    """
    n00, n01, n10, n11 = transition_counts(exceedances)
    from_zero, from_one = n00 + n01, n10 + n11
    informative = from_zero > 0 and from_one > 0 and (n01 + n11) > 0 and (n00 + n10) > 0
    if not informative:
        return LRTest(0.0, 1.0, 1, informative=False)
    pi01, pi11 = n01 / from_zero, n11 / from_one
    pi = (n01 + n11) / (from_zero + from_one)
    null = special.xlogy(n00 + n10, 1.0 - pi) + special.xlogy(n01 + n11, pi)
    alternative = (
        special.xlogy(n00, 1.0 - pi01)
        + special.xlogy(n01, pi01)
        + special.xlogy(n10, 1.0 - pi11)
        + special.xlogy(n11, pi11)
    )
    lr = max(-2.0 * (null - alternative), 0.0)
    return LRTest(float(lr), float(stats.chi2.sf(lr, 1)), 1)


def conditional_coverage(exceedances: Any, level: float) -> LRTest:
    """Christoffersen's conditional coverage: LR_cc = LR_pof + LR_ind ~ chi2(2)."""
    pof, ind = kupiec_pof(exceedances, level), christoffersen_independence(exceedances)
    lr = pof.statistic + ind.statistic
    return LRTest(float(lr), float(stats.chi2.sf(lr, 2)), 2, informative=ind.informative)


def basel_zone(exceedances: int, n: int, level: float) -> str:
    """Basel traffic light for x exceedances in n bars: green while P(X <= x) < 95 %, yellow while < 99.99 %,
    else red, with X ~ Binomial(n, 1 - level).

    For 250 days at 99 %: 0-4 green, 5-9 yellow, 10 or more red (Basel Committee, 1996).
    """
    cumulative = float(stats.binom.cdf(exceedances, n, 1.0 - level))
    if cumulative < 0.95:
        return "green"
    return "yellow" if cumulative < 0.9999 else "red"


@dataclass(frozen=True)
class VaRBacktest:
    """The backtest of one VaR method at one level."""

    method: str
    level: float
    observations: int
    exceedances: int
    expected: float
    rate: float
    kupiec: LRTest
    independence: LRTest
    conditional_coverage: LRTest
    transitions: tuple[int, int, int, int]
    zone: str
    #: mean loss on exceedance days over the mean ES forecast for them (near 1 when ES is right; NaN if none)
    es_ratio: float

    def as_row(self) -> dict[str, Any]:
        """A flat dict for a report table."""
        row = {k: v for k, v in asdict(self).items() if not isinstance(v, dict | tuple)}
        for name in ("kupiec", "independence", "conditional_coverage"):
            test: LRTest = getattr(self, name)
            row[f"{name}_lr"], row[f"{name}_pvalue"] = test.statistic, test.pvalue
        row["independence_informative"] = self.independence.informative
        row.update(zip(("n00", "n01", "n10", "n11"), self.transitions, strict=True))
        return row


def backtest_var(losses: Any, var: Any, level: float, es: Any = None, method: str = "") -> VaRBacktest:
    """Backtest VaR forecasts `var` (for the same bars as `losses`) at `level`; bars with NaN are left out."""
    loss = np.asarray(losses, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    e = np.full_like(v, np.nan) if es is None else np.asarray(es, dtype=np.float64)
    keep = np.isfinite(loss) & np.isfinite(v)
    loss, v, e = loss[keep], v[keep], e[keep]
    hits = exceedances(loss, v)
    x, n = int(hits.sum()), int(hits.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        es_ratio = float(loss[hits].mean() / e[hits].mean()) if x else float("nan")
    return VaRBacktest(
        method=method,
        level=level,
        observations=n,
        exceedances=x,
        expected=n * (1.0 - level),
        rate=x / n if n else float("nan"),
        kupiec=kupiec_pof(hits, level),
        independence=christoffersen_independence(hits),
        conditional_coverage=conditional_coverage(hits, level),
        transitions=transition_counts(hits),
        zone=basel_zone(x, n, level),
        es_ratio=es_ratio,
    )


def walk_forward(
    returns: pd.Series,
    params: RiskParams | None = None,
    methods: Sequence[str] = BASE_METHODS,
    vol_forecast: Any = None,
) -> pd.DataFrame:
    """Walk-forward VaR: for each bar t, VaR / ES from the returns up to t-1 only, against the return at t.

    `returns`: simple returns indexed by bar time; `vol_forecast` (the "model" method): per bar, the forecast
    made at that bar of the next bar's volatility. Long format: ts, method, level, var, es, ret, loss,
    exceedance; bars without a full trailing window are left out.
    """
    params = params or RiskParams()
    r = returns.to_numpy(dtype=np.float64)
    if not np.isfinite(r).all():
        raise ValueError("returns contain NaN or infinite values; drop them before the backtest")
    needs_df = "student_t" in methods or params.model_dist == "t"
    df = rolling_t_df(r, params.window, params.t_refit_bars, params.t_df) if needs_df else None
    frames = []
    for method in methods:
        var, es = rolling_var_es(r, method, params, vol_forecast, df)
        for i, level in enumerate(params.levels):
            forecast_var = np.concatenate([[np.nan], var[:-1, i]])  # made at t-1 for t
            forecast_es = np.concatenate([[np.nan], es[:-1, i]])
            frame = pd.DataFrame(
                {
                    "ts": returns.index,
                    "method": method,
                    "level": level,
                    "var": forecast_var,
                    "es": forecast_es,
                    "ret": r,
                    "loss": -r,
                }
            )
            frames.append(frame.loc[np.isfinite(forecast_var)])
    out = pd.concat(frames, ignore_index=True)
    out["exceedance"] = out["loss"] > out["var"]
    log.debug("walk-forward: %d forecasts, methods %s", len(out), list(methods))
    return out


def backtest_table(walk: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, level) of a `walk_forward` frame: counts, tests, zone, ES ratio."""
    rows = [
        backtest_var(group["loss"], group["var"], float(level), group["es"], str(method)).as_row()
        for (method, level), group in walk.groupby(["method", "level"], sort=False)
    ]
    return pd.DataFrame(rows)
