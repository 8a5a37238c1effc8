"""Out-of-sample forecast metrics: R² vs the historical mean, IC, hit rate, Diebold–Mariano, Brier/AUC.

Every function takes array-likes of equal length and ignores nothing silently: NaN inputs propagate, and a
metric that is undefined on its input (a constant series for a correlation, one class for AUC) returns NaN.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

Loss = Literal["mse", "mae"]
Alternative = Literal["two-sided", "less", "greater"]


def _arr(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype="float64").ravel()


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = _arr(a), _arr(b)
    if x.shape != y.shape:
        raise ValueError(f"length mismatch: {x.size} vs {y.size}")
    return x, y


def historical_mean(
    y: ArrayLike, event_time: pd.Series, label_time: pd.Series, symbol: pd.Series | None = None
) -> np.ndarray:
    """Campbell–Thompson benchmark forecast for every row: the mean of the targets already known at its time.

    For row i (forecast made at the close `event_time[i]`) the benchmark is the mean of y[j] over every row j
    of the same symbol (all rows when `symbol` is None) with `label_time[j] <= event_time[i]`, i.e. every
    realised target of that symbol known when the forecast is made: training rows plus earlier test rows whose
    outcome has arrived (the expanding, recursively updated historical mean). NaN where nothing is known yet.
    """
    values = _arr(y)
    ev = pd.to_datetime(pd.Series(event_time).reset_index(drop=True), utc=True)
    lab = pd.to_datetime(pd.Series(label_time).reset_index(drop=True), utc=True)
    if not len(values) == len(ev) == len(lab):
        raise ValueError("y, event_time and label_time must have the same length")
    groups = np.zeros(len(values), dtype=int) if symbol is None else pd.factorize(pd.Series(symbol))[0]
    out = np.full(len(values), np.nan)
    ev_ns = ev.to_numpy(dtype="datetime64[ns]")
    lab_ns = lab.to_numpy(dtype="datetime64[ns]")
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        order = rows[np.argsort(lab_ns[rows], kind="stable")]
        csum = np.concatenate([[0.0], np.cumsum(values[order])])
        known = np.searchsorted(lab_ns[order], ev_ns[rows], side="right")
        with np.errstate(invalid="ignore", divide="ignore"):
            out[rows] = np.where(known > 0, csum[known] / np.maximum(known, 1), np.nan)
    return out


def oos_r2(y: ArrayLike, pred: ArrayLike, benchmark: ArrayLike) -> float:
    """Campbell–Thompson out-of-sample R²: 1 − Σ(y − pred)² / Σ(y − benchmark)².

    `benchmark` is the historical-mean forecast per row (see `historical_mean`); > 0 means the model beats it.
    """
    yy, pp = _pair(y, pred)
    _, bb = _pair(y, benchmark)
    denom = float(np.sum((yy - bb) ** 2))
    if denom == 0.0:
        return math.nan
    return 1.0 - float(np.sum((yy - pp) ** 2)) / denom


def mae(y: ArrayLike, pred: ArrayLike) -> float:
    """Mean absolute error."""
    yy, pp = _pair(y, pred)
    return float(np.mean(np.abs(yy - pp))) if yy.size else math.nan


def pearson_ic(pred: ArrayLike, y: ArrayLike) -> float:
    """Information coefficient: Pearson correlation of forecasts with outcomes (NaN if either is constant)."""
    pp, yy = _pair(pred, y)
    if yy.size < 2 or np.std(pp) == 0.0 or np.std(yy) == 0.0:
        return math.nan
    return float(np.corrcoef(pp, yy)[0, 1])


def spearman_ic(pred: ArrayLike, y: ArrayLike) -> float:
    """Rank IC: Spearman correlation of forecasts with outcomes (NaN if either is constant)."""
    pp, yy = _pair(pred, y)
    return pearson_ic(stats.rankdata(pp), stats.rankdata(yy))


def hit_rate(y: ArrayLike, pred: ArrayLike, task: str = "regression") -> float:
    """Share of rows whose predicted direction matches the realised one.

    Regression: (pred > 0) == (y > 0). Classification: y is 1/0 (up/not up), pred is P(up): (pred > 0.5) == y.
    A zero return counts as "not up", matching the direction label `y_direction = y_return > 0`.
    """
    yy, pp = _pair(y, pred)
    if not yy.size:
        return math.nan
    if task == "classification":
        return float(np.mean((pp > 0.5) == (yy > 0.5)))
    return float(np.mean((pp > 0.0) == (yy > 0.0)))


def log_loss(y: ArrayLike, p: ArrayLike, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy of P(up) against 1/0 outcomes (probabilities clipped to [eps, 1 − eps])."""
    yy, pp = _pair(y, p)
    pp = np.clip(pp, eps, 1.0 - eps)
    return float(-np.mean(yy * np.log(pp) + (1.0 - yy) * np.log(1.0 - pp))) if yy.size else math.nan


def brier(y: ArrayLike, p: ArrayLike) -> float:
    """Brier score: mean squared error of P(up) against 1/0 outcomes (0.25 for a constant 0.5)."""
    yy, pp = _pair(y, p)
    return float(np.mean((pp - yy) ** 2)) if yy.size else math.nan


def auc(y: ArrayLike, p: ArrayLike) -> float:
    """ROC AUC via the Mann–Whitney rank statistic (ties count one half); NaN if only one class is present."""
    yy, pp = _pair(y, p)
    pos = yy > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = stats.rankdata(pp)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def newey_west_variance(x: ArrayLike, lags: int) -> float:
    """Newey–West long-run variance of a series: γ₀ + 2 Σ_{k=1..lags} (1 − k/(lags+1)) γ_k (γ with 1/T)."""
    d = _arr(x)
    d = d - d.mean()
    t = d.size
    lrv = float(d @ d) / t
    for k in range(1, lags + 1):
        lrv += 2.0 * (1.0 - k / (lags + 1.0)) * float(d[k:] @ d[:-k]) / t
    return lrv


def dm_test(d: ArrayLike, horizon: int = 1, alternative: Alternative = "two-sided") -> tuple[float, float]:
    """Diebold–Mariano test on a loss differential d = loss_model − loss_benchmark, HLN-corrected.

    DM = mean(d) / sqrt(LRV / T), LRV the Newey–West long-run variance with h − 1 lags (for h = 1 just the
    variance of d). Harvey–Leybourne–Newbold (1997) small-sample correction:
    DM* = DM · sqrt((T + 1 − 2h + h(h − 1)/T) / T), compared with Student's t with T − 1 degrees of freedom.
    A negative statistic means the model has the smaller loss. `alternative="less"` tests "model better".
    """
    dd = _arr(d)
    if dd.size < 3 or not np.all(np.isfinite(dd)):
        raise ValueError(f"Diebold–Mariano needs >= 3 finite loss differentials, got {dd.size}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    t, h = dd.size, horizon
    hln = (t + 1 - 2 * h + h * (h - 1) / t) / t
    if hln <= 0.0:
        raise ValueError(f"horizon {h} is too long for {t} loss differentials (HLN factor <= 0)")
    mean = float(dd.mean())
    lrv = newey_west_variance(dd, h - 1)
    if lrv <= 0.0:
        stat = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    else:
        stat = mean / math.sqrt(lrv / t) * math.sqrt(hln)
    dist = stats.t(df=t - 1)
    if alternative == "less":
        pvalue = float(dist.cdf(stat))
    elif alternative == "greater":
        pvalue = float(dist.sf(stat))
    else:
        pvalue = float(2.0 * dist.sf(abs(stat)))
    return float(stat), pvalue


def diebold_mariano(
    e_model: ArrayLike,
    e_bench: ArrayLike,
    horizon: int = 1,
    loss: Loss = "mse",
    alternative: Alternative = "two-sided",
) -> tuple[float, float]:
    """(statistic, p-value) of the HLN-corrected Diebold–Mariano test of equal predictive accuracy.

    `e_model`, `e_bench`: forecast errors of the two forecasts on the same targets; loss "mse" (squared
    errors) or "mae" (absolute errors). Negative statistic: the model's loss is lower. See `dm_test`.
    """
    em, eb = _pair(e_model, e_bench)
    if loss == "mse":
        d = em**2 - eb**2
    elif loss == "mae":
        d = np.abs(em) - np.abs(eb)
    else:
        raise ValueError(f"loss must be 'mse' or 'mae', got {loss!r}")
    return dm_test(d, horizon, alternative)


def regression_metrics(y: ArrayLike, pred: ArrayLike, benchmark: ArrayLike) -> dict[str, float]:
    """oos_r2 (vs `benchmark`), mae, rmse, ic, rank_ic and hit_rate of a return forecast."""
    yy, pp = _pair(y, pred)
    return {
        "oos_r2": oos_r2(y, pred, benchmark),
        "mae": mae(y, pred),
        "rmse": float(np.sqrt(np.mean((yy - pp) ** 2))) if yy.size else math.nan,
        "ic": pearson_ic(pred, y),
        "rank_ic": spearman_ic(pred, y),
        "hit_rate": hit_rate(y, pred, "regression"),
    }


def classification_metrics(y: ArrayLike, p: ArrayLike, returns: ArrayLike) -> dict[str, float]:
    """hit_rate (= accuracy at 0.5), auc, log_loss, brier, and ic / rank_ic of P(up) − 0.5 with returns."""
    hit = hit_rate(y, p, "classification")
    centred = _arr(p) - 0.5
    return {
        "hit_rate": hit,
        "accuracy": hit,
        "auc": auc(y, p),
        "log_loss": log_loss(y, p),
        "brier": brier(y, p),
        "ic": pearson_ic(centred, returns),
        "rank_ic": spearman_ic(centred, returns),
    }
