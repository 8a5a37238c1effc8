"""The volatility model served as `finstream-volatility`: next-bar variance forecasts from a symbol's bars.

One class for every kind the volatility task can register (`training.volatility` evaluates them and fits the
winner on all rows):

* baselines, from the bars alone: ``garch`` / ``gjr_garch`` (GARCH(1,1) / GJR-GARCH(1,1), zero mean, the
  parameters `arch` fitted per symbol; the variance filter is `arch`'s recursion and backcast, so a forecast
  equals `arch_model(returns).fix(params).forecast(horizon=1)` on the same returns), ``har`` (per-symbol
  OLS on the daily, weekly and monthly means of the variance proxy) and ``rolling_20`` (mean of the last 20
  squared returns);
* candidates: a pooled zoo regression Forecaster fitted on log(proxy + eps) of the model inputs, its
  forecast exp(prediction) scaled per symbol by c_s (mean proxy / mean exp(fitted) on the training rows).

Units: returns in percent (100 · log return), variances in squared percent. Every forecast is floored at the
symbol's `floor` (1 % of its mean training proxy). `variance_path` gives, for every bar t of a history, the
forecast made at t of bar t + 1's variance (NaN where a forecast needs more history than there is).

As an MLflow pyfunc (`finstream.models.pyfunc.log_volatility_model`), the input is bars in time order per
symbol (`symbol`, `open`, `high`, `low`, `close`, plus the model's feature columns for a candidate) and the
output one forecast per row (`predict_frame`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

VolatilityKind = Literal["baseline", "candidate"]
BASELINE_METHODS: tuple[str, ...] = ("garch", "gjr_garch", "har", "rolling_20")
#: returns in percent, variances in squared percent
SCALE = 100.0
ROLLING_WINDOW = 20
HAR_WEEK, HAR_MONTH = 5, 22
#: arch's GARCH backcast: exponentially weighted mean of the first 75 squared returns, decay 0.94
BACKCAST_TAU, BACKCAST_DECAY = 75, 0.94
GK_K = 2.0 * math.log(2.0) - 1.0
SPEC_FILE = "volatility.json"
FORECASTER_DIR = "forecaster"


@dataclass(frozen=True)
class SymbolFit:
    """What one symbol's forecasts need: fitted coefficients (by method), the floor and the candidate scale.

    garch / gjr_garch: omega, alpha, gamma (0 for GARCH), beta; har: b0, b_day, b_week, b_month.
    """

    floor: float
    coef: dict[str, float] = field(default_factory=dict)
    scale: float = 1.0  # candidates: c_s
    eps: float = 0.0  # candidates: the log target's offset (kept for the record)


@dataclass
class VolatilityModel:
    """A fitted next-bar variance forecaster per symbol (see the module docstring)."""

    method: str
    kind: VolatilityKind
    proxy: str
    interval: str
    symbols: dict[str, SymbolFit]
    forecaster: Any = None  # candidates: a zoo regression Forecaster on log variance
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind == "baseline" and self.method not in BASELINE_METHODS:
            raise ValueError(f"unknown baseline {self.method!r}: use one of {', '.join(BASELINE_METHODS)}")
        if self.kind == "candidate" and self.forecaster is None:
            raise ValueError(f"candidate {self.method!r} needs its fitted forecaster")

    @property
    def needs_features(self) -> bool:
        return self.kind == "candidate"

    @property
    def feature_names(self) -> list[str]:
        return list(self.forecaster.feature_names) if self.forecaster is not None else []

    @property
    def label(self) -> str:
        """e.g. "gjr_garch (baseline)"."""
        return f"{self.method} ({self.kind})"

    def fit_of(self, symbol: str) -> SymbolFit:
        try:
            return self.symbols[symbol]
        except KeyError:
            known = ", ".join(sorted(self.symbols))
            raise KeyError(f"the volatility model was fitted on {known}, not {symbol}") from None

    def variance_path(
        self, symbol: str, bars: pd.DataFrame, features: pd.DataFrame | None = None
    ) -> np.ndarray:
        """Per bar t of `bars` (one symbol, time order; OHLC), the forecast of bar t + 1's variance (%²).

        Candidates need `features`: the model inputs (its `feature_names`) of the same bars, row for row;
        rows with missing inputs give NaN.
        """
        fit = self.fit_of(symbol)
        close = bars["close"].to_numpy(dtype="float64")
        r = np.concatenate([[np.nan], SCALE * np.diff(np.log(close))])
        if self.method in ("garch", "gjr_garch"):
            out = garch_path(r, fit.coef)
        elif self.method == "har":
            out = har_path(proxy_series(bars, r, self.proxy), fit.coef)
        elif self.method == "rolling_20":
            out = pd.Series(r**2).rolling(ROLLING_WINDOW, min_periods=ROLLING_WINDOW).mean().to_numpy()
        else:
            out = self._candidate_path(symbol, features, len(bars), fit)
        return np.where(np.isfinite(out), np.maximum(out, fit.floor), np.nan)

    def _candidate_path(
        self, symbol: str, features: pd.DataFrame | None, n: int, fit: SymbolFit
    ) -> np.ndarray:
        names = self.feature_names
        if features is None:
            raise ValueError(f"{self.label} forecasts from the model inputs: pass the features of the bars")
        if len(features) != n:
            raise ValueError(f"{len(features)} feature rows for {n} bars: pass one row per bar")
        missing = [c for c in names if c not in features.columns]
        if missing:
            raise ValueError(f"the feature rows lack {missing[:5]}")
        X = features[names].astype("float64").reset_index(drop=True)
        ok = np.isfinite(X.to_numpy()).all(axis=1)
        out = np.full(n, np.nan)
        if ok.any():
            Xok = X[ok].reset_index(drop=True)
            Xok.insert(0, "symbol", symbol)
            out[ok] = fit.scale * np.exp(np.asarray(self.forecaster.predict(Xok), dtype="float64"))
        return out

    def forecast(self, symbol: str, bars: pd.DataFrame, features: pd.DataFrame | None = None) -> float:
        """The forecast of the variance of the bar after the last one of `bars` (%²; NaN if undefined)."""
        return float(self.variance_path(symbol, bars, features)[-1])

    # ------------------------------------------------------------------------------------ persistence

    def save(self, path: Path) -> Path:
        """Write the model to the folder `path` (a JSON spec, and the candidate's forecaster folder)."""
        path.mkdir(parents=True, exist_ok=True)
        spec = {
            "method": self.method,
            "kind": self.kind,
            "proxy": self.proxy,
            "interval": self.interval,
            "symbols": {s: asdict(f) for s, f in self.symbols.items()},
            "metadata": self.metadata,
        }
        (path / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True))
        if self.forecaster is not None:
            self.forecaster.save(path / FORECASTER_DIR)
        return path


def load_volatility_model(path: Path) -> VolatilityModel:
    """The model `VolatilityModel.save` wrote to `path`."""
    spec = json.loads((path / SPEC_FILE).read_text())
    forecaster = None
    if spec["kind"] == "candidate":
        from finstream.models.zoo import load_model

        forecaster = load_model(path / FORECASTER_DIR)
    return VolatilityModel(
        method=spec["method"],
        kind=spec["kind"],
        proxy=spec["proxy"],
        interval=spec["interval"],
        symbols={s: SymbolFit(**f) for s, f in spec["symbols"].items()},
        forecaster=forecaster,
        metadata=spec.get("metadata", {}),
    )


# ------------------------------------------------------------------------------------------ filters


def garch_backcast(returns: np.ndarray) -> float:
    """`arch`'s GARCH backcast: the 0.94-decay weighted mean of the first 75 squared returns."""
    head = returns[: min(BACKCAST_TAU, returns.size)]
    w = BACKCAST_DECAY ** np.arange(head.size)
    return float(np.sum(w * head**2) / w.sum())


def garch_path(r: np.ndarray, coef: Mapping[str, float]) -> np.ndarray:
    """σ²_{t+1|t} for every bar t of the percent returns `r` (r[0] may be NaN: the filter starts at the
    first finite return), GJR when coef["gamma"] ≠ 0: arch's recursion from arch's backcast."""
    omega, alpha, beta = coef["omega"], coef["alpha"], coef["beta"]
    gamma = coef.get("gamma", 0.0)
    out = np.full(r.size, np.nan)
    start = int(np.argmax(np.isfinite(r)))
    x = r[start:]
    if x.size == 0 or not np.isfinite(x).all():
        raise ValueError("GARCH needs finite returns after the first bar")
    back = garch_backcast(x)
    s2 = omega + (alpha + 0.5 * gamma + beta) * back  # σ² of the first return (arch's t = 0)
    for i, ri in enumerate(x):
        sq = ri * ri
        s2 = omega + (alpha + (gamma if ri < 0 else 0.0)) * sq + beta * s2
        out[start + i] = s2
    return out


def proxy_series(bars: pd.DataFrame, r: np.ndarray, proxy: str) -> np.ndarray:
    """The variance proxy of each bar (%²): r² ("sq") or Garman–Klass ("gk")."""
    if proxy == "sq":
        return r**2
    if proxy == "gk":
        hl = np.log(bars["high"].to_numpy(dtype="float64") / bars["low"].to_numpy(dtype="float64"))
        co = np.log(bars["close"].to_numpy(dtype="float64") / bars["open"].to_numpy(dtype="float64"))
        return SCALE**2 * (0.5 * hl**2 - GK_K * co**2)
    raise ValueError(f"unknown variance proxy {proxy!r}: use sq or gk")


def har_regressors(rv: np.ndarray) -> np.ndarray:
    """HAR regressors at every bar: 1, RV_t, mean(RV_{t-4..t}), mean(RV_{t-21..t}) (NaN if incomplete)."""
    s = pd.Series(rv)
    week = s.rolling(HAR_WEEK, min_periods=HAR_WEEK).mean().to_numpy()
    month = s.rolling(HAR_MONTH, min_periods=HAR_MONTH).mean().to_numpy()
    return np.column_stack([np.ones(rv.size), rv, week, month])


def har_path(rv: np.ndarray, coef: Mapping[str, float]) -> np.ndarray:
    """HAR forecasts of RV_{t+1} at every bar t."""
    beta = np.array([coef["b0"], coef["b_day"], coef["b_week"], coef["b_month"]])
    return har_regressors(rv) @ beta


def predict_frame(model: VolatilityModel, frame: pd.DataFrame) -> np.ndarray:
    """Each row's next-bar variance forecast (%²) from bars in time order per symbol (the pyfunc input)."""
    out = np.full(len(frame), np.nan)
    frame = frame.reset_index(drop=True)
    for symbol, rows in frame.groupby("symbol", sort=False):
        feats = rows if model.needs_features else None
        out[rows.index.to_numpy()] = model.variance_path(str(symbol), rows, feats)
    return out
