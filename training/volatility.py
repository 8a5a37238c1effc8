"""Walk-forward evaluation of next-bar variance forecasts: econometric baselines vs zoo candidates.

Design
------
The rows, features and folds are those of the return / direction tasks: a `training.dataset.Dataset` and
`training.walk_forward.walk_forward_splits` over its event and label times (purged, expanding window). The
validated bars of the same symbols give the returns and OHLC the baselines and the target are built from.
A row at event time t (the close of bar t) forecasts the variance of bar t + 1 from data up to bar t.

Target (the variance proxy of bar t + 1, per symbol; everything in squared percent, returns × 100):

* ``proxy="sq"`` (default): the squared close-to-close log return r_{t+1}² = ln(C_{t+1}/C_t)². This is what
  VaR and GARCH forecast: the conditional variance of the next close-to-close return. It is a noisy but
  conditionally unbiased proxy (E_t[r²_{t+1}] = σ²_{t+1} + μ², μ² negligible for daily bars), which is all
  the QLIKE and MSE rankings need (Patton 2011).
* ``proxy="gk"``: Garman–Klass of bar t + 1, 0.5·ln(H/L)² − (2 ln 2 − 1)·ln(C/O)². Less noisy, but a range
  estimator sees only the open-to-close session: it ignores the overnight gap C_t → O_{t+1}, so it is biased
  low for the close-to-close variance and would make GARCH (a close-to-close model) look biased. Use it to
  compare rankings, not as the headline.

Baselines (each per symbol, fitted on the fold's training rows only, i.e. the returns that are targets of the
symbol's training rows, all known before the test block starts; every test forecast uses bars up to t):

* ``garch``, ``gjr_garch``: GARCH(1,1) / GJR-GARCH(1,1) from `arch`, zero mean (so the forecast is E_t[r²],
  exactly what the squared-return proxy measures), normal QML, on percent returns. Fitted on the training
  returns, then `arch_model(series up to the last test origin).fix(params).forecast(start, horizon=1,
  reindex=False)`: one-step forecasts across the test block with the parameters fixed, the filter running
  on the realised returns (the backcast uses the first 75 returns, which are training returns).
* ``har``: HAR (Corsi 2009) on the proxy series RV: OLS of RV_{t+1} on 1, RV_t, mean(RV_{t-4..t}),
  mean(RV_{t-21..t}), fitted on the training rows' origins.
* ``rolling_20``: the mean of the last 20 squared returns r_{t-19}² … r_t² (nothing to fit).

Candidates (zoo regression families, default ridge and xgboost), pooled over symbols with the one-hot symbol
columns (`finstream.models.inputs.with_symbol_columns`) as pooled training does: fitted on the features to
predict log(proxy + eps). eps is the 5 % quantile of the fold's training proxy: a zero or tiny squared return
makes log(proxy) −∞ or a far outlier (log χ²₁ has a long left tail) that would dominate a squared-error fit
in log space; eps bounds that tail at a level where the proxy is noise, and leaves larger values almost
unchanged. The forecast is c_s · exp(prediction), where c_s = mean(proxy) / mean(exp(fitted)) over the
symbol's training rows (in-sample fitted values): exp of a log forecast estimates a geometric, not an
arithmetic mean (Jensen), and the gap depends on each symbol's residual dispersion, hence one factor per
symbol. In-sample fitted values of flexible models (xgboost) are closer to the proxy than out-of-sample ones,
so their c_s tends to be too small.

Every forecast is floored at 1 % of the symbol's mean training proxy (HAR can go negative); floors are logged.

Losses, per row, y the proxy and f the forecast (both in %²):

* QLIKE in the form robust to zero proxies, log(f) + y/f (it ranks forecasts exactly as y/f − log(y/f) − 1,
  which is undefined at y = 0); with MSE it is robust to noisy unbiased proxies (Patton 2011);
* MSE, (y − f)²; and the Mincer–Zarnowitz regression y = a + b·f + e (R², intercept, slope).

Diebold–Mariano (`training.metrics.dm_test`, HLN-corrected, one step, alternative "less" = the model's
QLIKE is lower) of every model against the best baseline of the scope (lowest mean QLIKE), per symbol and
pooled; pooled loss differentials are first averaged across symbols per UTC date (same-day errors of
different markets are not independent evidence). A model beats the best baseline when its QLIKE is lower
and the DM p-value is at most `max_dm_pvalue` (settings.promotion.max_dm_pvalue).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from finstream.config import TrainParams
from finstream.models.volatility import GK_K, ROLLING_WINDOW, SCALE, VolatilityModel, har_regressors
from training.dataset import Dataset
from training.metrics import dm_test
from training.walk_forward import Fold, _predict_fold, _utc_ns, walk_forward_splits

log = logging.getLogger(__name__)

Proxy = Literal["sq", "gk"]
PROXIES: tuple[str, ...] = ("sq", "gk")
#: the baselines, in the order they are reported
BASELINES: tuple[str, ...] = ("garch", "gjr_garch", "har", "rolling_20")
DEFAULT_FAMILIES: tuple[str, ...] = ("ridge", "xgboost")
#: eps of the log target: this quantile of the fold's training proxy
EPS_QUANTILE = 0.05
#: every forecast is at least this fraction of the symbol's mean training proxy
FLOOR_FRACTION = 0.01
#: fewest training returns a symbol needs in a fold for the GARCH fits
MIN_TRAIN_ROWS = 100
TABLE_COLUMNS = [
    "scope",
    "model",
    "kind",
    "qlike",
    "mse",
    "mz_r2",
    "mz_intercept",
    "mz_slope",
    "n",
    "dm_stat",
    "dm_pvalue",
    "best_baseline",
    "beats_best_baseline",
]


# --------------------------------------------------------------------------------------------- losses


def qlike(y: ArrayLike, f: ArrayLike) -> np.ndarray:
    """Per-row QLIKE loss log(f) + y/f (defined for y = 0; f must be > 0)."""
    yy, ff = np.asarray(y, dtype="float64"), np.asarray(f, dtype="float64")
    if np.any(ff <= 0.0):
        raise ValueError("QLIKE needs positive variance forecasts")
    return np.log(ff) + yy / ff


def squared_error(y: ArrayLike, f: ArrayLike) -> np.ndarray:
    """Per-row squared error (y − f)² of a variance forecast."""
    return (np.asarray(y, dtype="float64") - np.asarray(f, dtype="float64")) ** 2


def mincer_zarnowitz(y: ArrayLike, f: ArrayLike) -> tuple[float, float, float]:
    """(R², intercept, slope) of the OLS regression y = a + b·f; NaN when f or y is constant."""
    yy, ff = np.asarray(y, dtype="float64"), np.asarray(f, dtype="float64")
    if yy.size < 3 or np.std(ff) == 0.0 or np.std(yy) == 0.0:
        return math.nan, math.nan, math.nan
    A = np.column_stack([np.ones_like(ff), ff])
    (a, b), *_ = np.linalg.lstsq(A, yy, rcond=None)
    resid = yy - A @ np.array([a, b])
    r2 = 1.0 - float(resid @ resid) / float(((yy - yy.mean()) ** 2).sum())
    return r2, float(a), float(b)


def dm_vs(loss: np.ndarray, best_loss: np.ndarray, event_time: pd.Series) -> tuple[float, float]:
    """One-sided DM test (H1: `loss` is lower) on the loss differential averaged per UTC date."""
    d = pd.Series(np.asarray(loss) - np.asarray(best_loss))
    day = pd.to_datetime(pd.Series(event_time).reset_index(drop=True), utc=True).dt.normalize()
    daily = d.groupby(day.to_numpy()).mean().to_numpy()
    if daily.size < 3:
        return math.nan, math.nan
    return dm_test(daily, 1, alternative="less")


# --------------------------------------------------------------------------------------- bar series


@dataclass(frozen=True)
class SymbolBars:
    """One symbol's bars in time order: percent log returns r (r[0] NaN), the proxy series, bar times."""

    times: np.ndarray  # datetime64[ns] UTC (naive)
    returns: np.ndarray  # r[i] = 100 · ln(C_i / C_{i-1})
    proxy: np.ndarray  # proxy of bar i in %² (r[i]² or Garman–Klass of bar i)


def garman_klass(bars: pd.DataFrame) -> np.ndarray:
    """Garman–Klass variance of each bar in %²: 0.5·ln(H/L)² − (2 ln 2 − 1)·ln(C/O)² (× 100²)."""
    hl = np.log(bars["high"].to_numpy(dtype="float64") / bars["low"].to_numpy(dtype="float64"))
    co = np.log(bars["close"].to_numpy(dtype="float64") / bars["open"].to_numpy(dtype="float64"))
    return SCALE**2 * (0.5 * hl**2 - GK_K * co**2)


def symbol_bars(bars: pd.DataFrame, proxy: Proxy = "sq") -> dict[str, SymbolBars]:
    """Per symbol: returns and proxy series of `bars` (one interval; symbol, ts, open, high, low, close)."""
    if proxy not in PROXIES:
        raise ValueError(f"proxy must be one of {', '.join(PROXIES)}, got {proxy!r}")
    if "interval" in bars.columns and bars["interval"].nunique() > 1:
        raise ValueError(f"bars of several intervals {sorted(bars['interval'].unique())}: pass one")
    out: dict[str, SymbolBars] = {}
    for sym, group in bars.sort_values(["symbol", "ts"], kind="stable").groupby("symbol", sort=True):
        close = group["close"].to_numpy(dtype="float64")
        r = np.concatenate([[np.nan], SCALE * np.diff(np.log(close))])
        series = r**2 if proxy == "sq" else garman_klass(group)
        out[str(sym)] = SymbolBars(_utc_ns(group["ts"]), r, series)
    return out


def bar_positions(dataset: Dataset, series: dict[str, SymbolBars]) -> np.ndarray:
    """For every dataset row, the position of its event bar in its symbol's bars (checked)."""
    symbol = dataset.X["symbol"].to_numpy()
    event = _utc_ns(dataset.event_time)
    label = _utc_ns(dataset.label_time)
    pos = np.empty(len(symbol), dtype=np.int64)
    for sym in np.unique(symbol):
        rows = np.flatnonzero(symbol == sym)
        if sym not in series:
            raise ValueError(f"no bars for {sym}: pass the validated bars of every dataset symbol")
        times = series[sym].times
        p = np.searchsorted(times, event[rows])
        if np.any(p >= times.size) or np.any(times[np.minimum(p, times.size - 1)] != event[rows]):
            raise ValueError(f"{sym}: some dataset rows have no bar at their event time")
        if np.any(p + 1 >= times.size):
            raise ValueError(f"{sym}: the last dataset row has no next bar to take the target from")
        if dataset.horizon == 1 and np.any(times[p + 1] != label[rows]):
            raise ValueError(f"{sym}: label times are not the next bar's time: bars and dataset disagree")
        pos[rows] = p
    return pos


# ---------------------------------------------------------------------------------------- baselines


def garch_forecasts(
    returns: np.ndarray, fit_slice: slice, origins: np.ndarray, gjr: bool = False
) -> tuple[np.ndarray, Any]:
    """One-step GARCH(1,1) (GJR with `gjr`) variance forecasts at bar positions `origins` (in %²).

    Fitted (zero mean, normal QML) on returns[fit_slice]; then the model on returns[fit_slice.start ..
    max(origins)] with those parameters fixed gives σ²_{t+1|t} for each origin t. Returns the forecasts and
    the fit result.
    """
    from arch import arch_model

    spec: dict[str, Any] = {"mean": "Zero", "vol": "GARCH", "p": 1, "o": int(gjr), "q": 1, "rescale": False}
    train = returns[fit_slice]
    if not np.all(np.isfinite(train)):
        raise ValueError("GARCH training returns must be finite")
    res = arch_model(train, **spec).fit(disp="off", show_warning=False)
    if res.convergence_flag != 0:
        log.warning("%s fit did not converge (flag %s); using its parameters", spec, res.convergence_flag)
    start, last = fit_slice.start, int(origins.max())
    series = returns[start : last + 1]
    fixed = arch_model(series, **spec).fix(res.params)
    first = int(origins.min()) - start
    var = fixed.forecast(start=first, horizon=1, reindex=False).variance["h.1"].to_numpy()
    return var[origins - start - first], res


def har_design(rv: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """HAR regressors at each origin t: 1, RV_t, mean(RV_{t-4..t}), mean(RV_{t-21..t}) (NaN if incomplete)."""
    return har_regressors(rv)[origins]


def har_forecasts(rv: np.ndarray, train_origins: np.ndarray, test_origins: np.ndarray) -> np.ndarray:
    """HAR forecasts of RV_{t+1} at `test_origins`, OLS-fitted on RV_{t+1} at `train_origins`."""
    A, y = har_design(rv, train_origins), rv[train_origins + 1]
    ok = np.isfinite(A).all(axis=1) & np.isfinite(y)
    if ok.sum() < 10:
        raise ValueError(f"HAR has only {int(ok.sum())} complete training rows")
    beta, *_ = np.linalg.lstsq(A[ok], y[ok], rcond=None)
    B = har_design(rv, test_origins)
    if not np.isfinite(B).all():
        raise ValueError("HAR regressors are incomplete at some test rows (too little history before them)")
    return B @ beta


def rolling_forecasts(returns: np.ndarray, origins: np.ndarray, window: int = ROLLING_WINDOW) -> np.ndarray:
    """Mean of the last `window` squared returns r_{t-window+1}² … r_t² at each origin t."""
    sq = pd.Series(returns**2).rolling(window, min_periods=window).mean().to_numpy()
    out = sq[origins]
    if not np.isfinite(out).all():
        raise ValueError(f"fewer than {window} returns before some test rows")
    return out


# ----------------------------------------------------------------------------------------- candidates


def family_params(params: TrainParams, family: str) -> dict[str, Any]:
    """The constructor params `finstream train` gives a family (seed, window, epochs)."""
    if family in {"lstm", "transformer", "cnn_lstm"}:
        return {"window": params.window, "epochs": params.epochs, "seed": params.seed}
    if family in {"random_forest", "xgboost", "hist_gb"}:
        return {"random_state": params.seed}
    return {}


def zoo_forecasts(
    family: str,
    params: TrainParams,
    X: pd.DataFrame,
    y: np.ndarray,
    fold: Fold,
    event_ns: np.ndarray,
    dataset: Dataset,
    overrides: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """A pooled zoo model's variance forecasts for the fold's test rows (see the module docstring).

    X: pooled inputs (with symbol one-hot columns) of every dataset row; y: every row's proxy (%²);
    overrides: constructor params on top of `family_params`.
    """
    from finstream.models.zoo import make_model

    tr, te = fold.train_idx, fold.test_idx
    eps = float(np.quantile(y[tr], EPS_QUANTILE))
    if eps <= 0.0:
        eps = float(np.min(y[tr][y[tr] > 0.0]))
    model = make_model(family, "regression", **{**family_params(params, family), **(overrides or {})})
    X_tr = X.iloc[tr].reset_index(drop=True)
    model.fit(X_tr, pd.Series(np.log(y[tr] + eps)))
    fitted = np.exp(np.asarray(model.predict(X_tr), dtype="float64"))
    pooled = Dataset(X, dataset.y_return, dataset.y_direction, dataset.event_time, dataset.label_time, 1)
    pred = np.exp(_predict_fold(model, pooled, fold, event_ns))
    symbol = X["symbol"].to_numpy()
    for sym in np.unique(symbol[te]):
        in_tr = symbol[tr] == sym
        c = float(y[tr][in_tr].mean() / fitted[in_tr].mean())
        pred[symbol[te] == sym] *= c
        log.info("%s fold %d %s: eps %.4g, bias factor %.3f", family, fold.index, sym, eps, c)
    return pred


# ---------------------------------------------------------------------------------------- evaluation


@dataclass
class VolatilityLeaderboard:
    """Out-of-sample variance forecasts and their leaderboard.

    `table`: one row per scope ("pooled", then each symbol) and model, columns TABLE_COLUMNS (losses in %²
    units). `forecasts`: symbol, event_time, fold, y (the proxy of the next bar, %²), r_next (its return, %)
    and one column per model. `folds`: sizes and time range of each fold.
    """

    proxy: str
    baselines: list[str]
    candidates: list[str]
    table: pd.DataFrame
    forecasts: pd.DataFrame
    folds: list[dict[str, object]]
    max_dm_pvalue: float
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: VAR_COLUMNS: each model's forecasts as a normal VaR, backtested per symbol and level
    var_backtests: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=VAR_COLUMNS))

    @property
    def models(self) -> list[str]:
        return [*self.baselines, *self.candidates]

    def scope(self, name: str) -> pd.DataFrame:
        """The table rows of one scope ("pooled" or a symbol), best QLIKE first."""
        return self.table[self.table["scope"] == name].reset_index(drop=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (NaN as None)."""
        rows = [
            {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
            for r in self.table.to_dict("records")
        ]
        return {
            "proxy": self.proxy,
            "units": "variance in squared percent (returns x 100)",
            "baselines": self.baselines,
            "candidates": self.candidates,
            "max_dm_pvalue": self.max_dm_pvalue,
            "folds": self.folds,
            "seconds": round(self.seconds, 2),
            "leaderboard": rows,
            "var_backtests": [
                {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                for r in self.var_backtests.to_dict("records")
            ],
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        """The leaderboard as a markdown report (pooled first, then each symbol)."""
        target = "squared close-to-close log return" if self.proxy == "sq" else "Garman–Klass"
        lines = [
            "# Volatility forecasts: walk-forward leaderboard",
            "",
            f"Target: next bar's {target} variance proxy, in %² (returns × 100). Losses: QLIKE ="
            f" log f + y/f, MSE = (y − f)²; MZ: OLS y = a + b·f. DM: one-sided test of each model's"
            f" QLIKE against the scope's best baseline; beats = lower QLIKE, DM p ≤ {self.max_dm_pvalue:g}.",
            "",
            "| fold | train rows | test rows | test start | test end |",
            "|---:|---:|---:|---|---|",
        ]
        lines += [
            f"| {f['fold']} | {f['train_rows']} | {f['test_rows']} | {str(f['test_start'])[:10]} | "
            f"{str(f['test_end'])[:10]} |"
            for f in self.folds
        ]
        for scope in self.table["scope"].unique():
            frame = self.scope(scope)
            lines += ["", f"## {scope} (best baseline: {frame['best_baseline'].iloc[0]})", ""]
            lines.append("| model | kind | QLIKE | MSE | MZ R² | MZ slope | n | DM stat | DM p | beats |")
            lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
            for r in frame.itertuples(index=False):
                lines.append(
                    f"| {r.model} | {r.kind} | {_fmt(r.qlike, 4)} | {_fmt(r.mse, 3)} | {_fmt(r.mz_r2, 3)} | "
                    f"{_fmt(r.mz_slope, 2)} | {r.n} | {_fmt(r.dm_stat, 2)} | {_fmt(r.dm_pvalue, 3)} | "
                    f"{'yes' if r.beats_best_baseline else 'no'} |"
                )
        if not self.var_backtests.empty:
            lines += [
                "",
                "## VaR backtests of the forecasts",
                "",
                "Each forecast as a normal, zero-mean VaR of the next bar's simple return, out of"
                " sample: exceedances vs expected, Kupiec (coverage) and Christoffersen (independence)"
                " p-values; pass = neither rejects at 5 %.",
                "",
                "| symbol | model | level | n | exceedances | expected | Kupiec p | Christoffersen p | zone "
                "| verdict |",
                "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
            ]
            lines += [
                f"| {r.scope} | {r.model} | {r.level:g} | {r.n} | {r.exceedances} | {r.expected:.1f} | "
                f"{_fmt(r.kupiec_pvalue, 3)} | {_fmt(r.independence_pvalue, 3)} | {r.zone} | {r.verdict} |"
                for r in self.var_backtests.itertuples(index=False)
            ]
        lines += ["", *[f"- {n}" for n in self.notes]] if self.notes else []
        return "\n".join(lines) + "\n"

    def write_markdown(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_markdown(), encoding="utf-8")
        return path


def _fmt(value: float, digits: int) -> str:
    return "-" if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}f}"


def volatility_forecasts(
    dataset: Dataset,
    bars: pd.DataFrame,
    params: TrainParams,
    families: Sequence[str] = DEFAULT_FAMILIES,
    proxy: Proxy = "sq",
    family_overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[pd.DataFrame, list[dict[str, object]]]:
    """Walk-forward forecasts of every baseline and family on `params`' folds: (forecasts, folds)."""
    from finstream.models.inputs import with_symbol_columns

    series = symbol_bars(bars, proxy)
    pos = bar_positions(dataset, series)
    symbol = dataset.X["symbol"].to_numpy()
    y = np.empty(len(pos))
    r_next = np.empty(len(pos))
    for sym in np.unique(symbol):
        rows = symbol == sym
        y[rows] = series[sym].proxy[pos[rows] + 1]
        r_next[rows] = series[sym].returns[pos[rows] + 1]
    if not np.isfinite(y).all():
        raise ValueError(f"the {proxy} proxy is not finite on every row: check the bars' OHLC")
    folds = walk_forward_splits(
        dataset.event_time, dataset.label_time, params.folds, params.test_years, params.min_train_years
    )
    X = with_symbol_columns(dataset.X) if families else dataset.X
    event_ns = _utc_ns(dataset.event_time)
    event_time = pd.to_datetime(dataset.event_time.reset_index(drop=True), utc=True)
    frames, fold_rows = [], []
    for fold in folds:
        te = fold.test_idx
        out: dict[str, np.ndarray] = {name: np.full(te.size, np.nan) for name in (*BASELINES, *families)}
        floors = np.empty(te.size)
        for sym in np.unique(symbol[te]):
            s = series[sym]
            tr_rows = fold.train_idx[symbol[fold.train_idx] == sym]
            te_mask = symbol[te] == sym
            if tr_rows.size < MIN_TRAIN_ROWS:
                raise ValueError(
                    f"{sym} has {tr_rows.size} training rows in fold {fold.index}, need {MIN_TRAIN_ROWS}"
                )
            train_origins, test_origins = pos[tr_rows], pos[te[te_mask]]
            fit = slice(int(train_origins.min()) + 1, int(train_origins.max()) + 2)
            out["garch"][te_mask], _ = garch_forecasts(s.returns, fit, test_origins)
            out["gjr_garch"][te_mask], _ = garch_forecasts(s.returns, fit, test_origins, gjr=True)
            out["har"][te_mask] = har_forecasts(s.proxy, train_origins, test_origins)
            out["rolling_20"][te_mask] = rolling_forecasts(s.returns, test_origins)
            floors[te_mask] = FLOOR_FRACTION * float(y[tr_rows].mean())
        for family in families:
            t0 = time.perf_counter()
            overrides = (family_overrides or {}).get(family)
            out[family] = zoo_forecasts(family, params, X, y, fold, event_ns, dataset, overrides)
            log.info("fold %d %s: %.1f s", fold.index, family, time.perf_counter() - t0)
        for name, f in out.items():
            low = f < floors
            if low.any():
                log.warning("fold %d %s: %d forecast(s) floored", fold.index, name, int(low.sum()))
            out[name] = np.maximum(f, floors)
        frames.append(
            pd.DataFrame(
                {
                    "symbol": symbol[te],
                    "event_time": event_time.iloc[te].to_numpy(),
                    "fold": fold.index,
                    "y": y[te],
                    "r_next": r_next[te],
                    **out,
                }
            )
        )
        fold_rows.append(
            {
                "fold": fold.index,
                "train_rows": int(fold.train_idx.size),
                "test_rows": int(te.size),
                "train_end": event_time.iloc[fold.train_idx].max().isoformat(),
                "test_start": fold.test_start.isoformat(),
                "test_end": fold.test_end.isoformat(),
            }
        )
        log.info("fold %d: %d test rows forecast", fold.index, te.size)
    return pd.concat(frames, ignore_index=True), fold_rows


def leaderboard_table(
    forecasts: pd.DataFrame,
    baselines: Sequence[str],
    candidates: Sequence[str],
    max_dm_pvalue: float,
) -> pd.DataFrame:
    """Per scope (pooled, each symbol) and model: losses, MZ, DM vs the scope's best baseline, verdict."""
    rows: list[dict[str, Any]] = []
    models = [*baselines, *candidates]
    scopes = [("pooled", forecasts)] + [
        (str(sym), g.reset_index(drop=True)) for sym, g in forecasts.groupby("symbol", sort=True)
    ]
    for scope, frame in scopes:
        y = frame["y"].to_numpy()
        losses = {m: qlike(y, frame[m].to_numpy()) for m in models}
        best = min(baselines, key=lambda m: float(losses[m].mean()))
        best_q = float(losses[best].mean())
        for m in models:
            f = frame[m].to_numpy()
            r2, a, b = mincer_zarnowitz(y, f)
            q = float(losses[m].mean())
            stat, p = (
                (math.nan, math.nan) if m == best else dm_vs(losses[m], losses[best], frame["event_time"])
            )
            rows.append(
                {
                    "scope": scope,
                    "model": m,
                    "kind": "baseline" if m in baselines else "candidate",
                    "qlike": q,
                    "mse": float(squared_error(y, f).mean()),
                    "mz_r2": r2,
                    "mz_intercept": a,
                    "mz_slope": b,
                    "n": len(frame),
                    "dm_stat": stat,
                    "dm_pvalue": p,
                    "best_baseline": best,
                    "beats_best_baseline": bool(math.isfinite(p) and p <= max_dm_pvalue and q < best_q),
                }
            )
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    order = {s: i for i, (s, _) in enumerate(scopes)}
    table["_scope"] = table["scope"].map(order)
    return table.sort_values(["_scope", "qlike"], kind="stable").drop(columns="_scope").reset_index(drop=True)


VAR_COLUMNS = [
    "scope", "model", "level", "n", "exceedances", "expected", "kupiec_pvalue", "independence_pvalue",
    "zone", "verdict",
]  # fmt: skip


def var_backtest_table(
    forecasts: pd.DataFrame, models: Sequence[str], levels: Sequence[float], significance: float = 0.05
) -> pd.DataFrame:
    """Each model's out-of-sample forecasts as a normal, zero-mean VaR of the next bar's simple return, per
    symbol and level: exceedances, Kupiec (coverage) and Christoffersen (independence) p-values, Basel zone;
    `verdict` is "pass" when neither test rejects at `significance` (the risk report's convention)."""
    from finstream.risk.backtests import backtest_var
    from finstream.risk.measures import model_var_es

    rows: list[dict[str, Any]] = []
    for sym, frame in forecasts.groupby("symbol", sort=True):
        loss = -np.expm1(frame["r_next"].to_numpy(dtype="float64") / SCALE)
        for m in models:
            sigma = np.sqrt(frame[m].to_numpy(dtype="float64")) / SCALE
            var, _ = model_var_es(sigma, levels)
            for i, level in enumerate(levels):
                bt = backtest_var(loss, var[:, i], level, method=m)
                ok = bt.kupiec.pvalue > significance and bt.independence.pvalue > significance
                rows.append(
                    {
                        "scope": str(sym), "model": m, "level": level, "n": bt.observations,
                        "exceedances": bt.exceedances, "expected": bt.expected,
                        "kupiec_pvalue": bt.kupiec.pvalue, "independence_pvalue": bt.independence.pvalue,
                        "zone": bt.zone, "verdict": "pass" if ok else "fail",
                    }
                )  # fmt: skip
    return pd.DataFrame(rows, columns=VAR_COLUMNS)


def evaluate_volatility(
    dataset: Dataset,
    bars: pd.DataFrame,
    params: TrainParams,
    families: Sequence[str] = DEFAULT_FAMILIES,
    proxy: Proxy = "sq",
    max_dm_pvalue: float = 0.10,
    family_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    var_levels: Sequence[float] = (0.95, 0.99),
) -> VolatilityLeaderboard:
    """Walk-forward variance forecasts of the baselines and `families`, and their leaderboard.

    `dataset`: rows, features and times (as `finstream train` builds them); `bars`: the validated bars of
    its symbols at the dataset's interval (returns and OHLC); folds from `params` (folds, test_years,
    min_train_years); `families`: zoo regression families, pooled, built with the params `finstream train`
    gives them plus `family_overrides[family]`; `proxy`: "sq" or "gk".
    """
    from finstream.models.zoo import family_class

    families = list(dict.fromkeys(families))
    for family in families:
        family_class(family)
    t0 = time.perf_counter()
    forecasts, folds = volatility_forecasts(dataset, bars, params, families, proxy, family_overrides)
    table = leaderboard_table(forecasts, BASELINES, families, max_dm_pvalue)
    var_table = var_backtest_table(forecasts, [*BASELINES, *families], var_levels)
    notes = []
    if dataset.horizon != 1:
        notes.append(f"the dataset's horizon is {dataset.horizon}: the target is still the next bar")
    if proxy == "gk":
        notes.append("Garman–Klass ignores the overnight gap: close-to-close models (GARCH) look biased low")
    board = VolatilityLeaderboard(
        proxy=proxy,
        baselines=list(BASELINES),
        candidates=families,
        table=table,
        forecasts=forecasts,
        folds=folds,
        max_dm_pvalue=max_dm_pvalue,
        seconds=time.perf_counter() - t0,
        notes=notes,
        var_backtests=var_table,
    )
    pooled = board.scope("pooled")
    log.info(
        "volatility (%s proxy): %d test rows, %d folds, best baseline %s, best model %s (QLIKE %.4f), %.1f s",
        proxy, len(forecasts), len(folds), pooled["best_baseline"].iloc[0], pooled["model"].iloc[0],
        pooled["qlike"].iloc[0], board.seconds,
    )  # fmt: skip
    return board


# ------------------------------------------------------------------------------------- final model


def fit_volatility_model(
    method: str,
    dataset: Dataset,
    bars: pd.DataFrame,
    params: TrainParams,
    proxy: Proxy = "sq",
    family_overrides: Mapping[str, Any] | None = None,
) -> VolatilityModel:
    """`method` (a baseline, or a tabular zoo family) fitted on every row of `dataset`, as served.

    The same fits as one walk-forward fold whose training rows are all rows: GARCH/GJR on each symbol's
    returns that are targets of its rows, HAR by OLS on its rows, a zoo family pooled on log(proxy + eps)
    with the per-symbol scale c_s; the floor is FLOOR_FRACTION of each symbol's mean proxy.
    """
    from finstream.models.volatility import BASELINE_METHODS, SymbolFit

    series = symbol_bars(bars, proxy)
    pos = bar_positions(dataset, series)
    symbol = dataset.X["symbol"].to_numpy()
    y = np.empty(len(pos))
    for sym in np.unique(symbol):
        rows = symbol == sym
        y[rows] = series[sym].proxy[pos[rows] + 1]
    fits: dict[str, SymbolFit] = {}
    forecaster = None
    if method in BASELINE_METHODS:
        kind = "baseline"
        for sym in np.unique(symbol):
            s, origins = series[sym], pos[symbol == sym]
            coef: dict[str, float] = {}
            if method in ("garch", "gjr_garch"):
                fit = slice(int(origins.min()) + 1, int(origins.max()) + 2)
                _, res = garch_forecasts(s.returns, fit, origins[-1:], gjr=method == "gjr_garch")
                p = res.params
                coef = {
                    "omega": float(p["omega"]),
                    "alpha": float(p["alpha[1]"]),
                    "gamma": float(p["gamma[1]"]) if "gamma[1]" in p else 0.0,
                    "beta": float(p["beta[1]"]),
                }
            elif method == "har":
                A, target = har_design(s.proxy, origins), s.proxy[origins + 1]
                ok = np.isfinite(A).all(axis=1) & np.isfinite(target)
                beta, *_ = np.linalg.lstsq(A[ok], target[ok], rcond=None)
                coef = dict(zip(("b0", "b_day", "b_week", "b_month"), map(float, beta), strict=True))
            fits[str(sym)] = SymbolFit(floor=FLOOR_FRACTION * float(y[symbol == sym].mean()), coef=coef)
    else:
        from finstream.models.inputs import with_symbol_columns
        from finstream.models.zoo import make_model

        kind = "candidate"
        overrides = dict(family_overrides or {})
        forecaster = make_model(method, "regression", **{**family_params(params, method), **overrides})
        if forecaster.sequential:
            raise ValueError(f"{method} is a sequence model: the volatility task takes tabular families")
        X = with_symbol_columns(dataset.X).reset_index(drop=True)
        eps = float(np.quantile(y, EPS_QUANTILE))
        if eps <= 0.0:
            eps = float(np.min(y[y > 0.0]))
        forecaster.fit(X, pd.Series(np.log(y + eps)))
        fitted = np.exp(np.asarray(forecaster.predict(X), dtype="float64"))
        for sym in np.unique(symbol):
            rows = symbol == sym
            fits[str(sym)] = SymbolFit(
                floor=FLOOR_FRACTION * float(y[rows].mean()),
                scale=float(y[rows].mean() / fitted[rows].mean()),
                eps=eps,
            )
    return VolatilityModel(
        method=method,
        kind=kind,  # type: ignore[arg-type]
        proxy=proxy,
        interval=str(bars["interval"].iloc[0]) if "interval" in bars.columns else params.interval,
        symbols=fits,
        forecaster=forecaster,
        metadata={"rows": len(y), "symbols": sorted(fits)},
    )
