"""Vectorised backtest of a position series with transaction costs, plus buy-and-hold and naive baselines.

Conventions (all per row, one row = one bar of one symbol):

* `returns[t]` is the return from the close of bar t to the close of bar t + 1 (the target's period);
  `positions[t]` is the position held over that period, set at the close of bar t (1 long, 0 flat, −1 short;
  fractions and leverage work too). The position before the first row is 0 (the backtest starts flat).
* Costs are paid at the close of bar t when the position changes from p[t−1] to p[t], as a fraction of the
  equity then: (commission + slippage)·|p[t] − p[t−1]| on every change, both ways, plus stamp duty on the
  amount of a long position sold, max(p[t−1], 0) − max(p[t], 0) when positive (opening a short is not
  charged stamp duty). The final position is not liquidated at the end.
* Equity starts at 1: E[t] = E[t−1]·(1 − c[t])·(1 + p[t]·R[t]), R the simple return, so the net period
  return is g[t] = (1 − c[t])(1 + p[t]R[t]) − 1.
* Sharpe uses a zero risk-free rate: mean(g)/std(g)·√periods_per_year (0 for a series that never moves).
  Annualised return is geometric, E_end^(periods_per_year/n) − 1; max drawdown is ≤ 0, from a start of 1.
* Turnover is mean |p[t] − p[t−1]| per period (the first entry included) and that × periods_per_year;
  n_trades counts the rows where the position changes (a round trip is 2); total_costs is Σ c[t], the
  summed cost drag in return units.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from finstream.config import CostParams
from finstream.errors import SymbolError
from finstream.symbols import parse_symbol

log = logging.getLogger(__name__)

Mode = Literal["long_flat", "long_short"]
StampRule = bool | Callable[[str], bool]


@dataclass
class BacktestResult:
    """Equity curve, net returns and summary figures of one backtest (combined over symbols if several)."""

    equity: pd.Series
    returns: pd.Series
    costs: pd.Series
    ann_return: float
    ann_vol: float
    sharpe: float
    max_drawdown: float
    turnover: float
    turnover_per_year: float
    n_trades: int
    total_costs: float
    periods_per_year: float
    per_symbol: dict[str, BacktestResult] = field(default_factory=dict)

    def summary(self, prefix: str = "") -> dict[str, float]:
        """The scalar figures as a flat dict, keys optionally prefixed (e.g. `bh_sharpe`)."""
        keys = (
            "ann_return", "ann_vol", "sharpe", "max_drawdown", "turnover",
            "turnover_per_year", "n_trades", "total_costs",
        )  # fmt: skip
        return {f"{prefix}{k}": float(getattr(self, k)) for k in keys}


def stamp_duty_applies(symbol: str) -> bool:
    """True for China-market symbols (.SH/.SZ/.BJ), where sells pay stamp duty.

    Indices are included on purpose (conservative): an index is traded through funds or futures that are in
    fact exempt, so this may overstate the cost of trading `000300.SH`, never understate it.
    """
    try:
        return parse_symbol(symbol).market == "CN"
    except SymbolError:
        return False


def _stats(net: np.ndarray, periods_per_year: float) -> tuple[np.ndarray, float, float, float, float]:
    """Equity curve, annualised return, annualised volatility, Sharpe (rf = 0) and max drawdown."""
    equity = np.cumprod(1.0 + net)
    n = net.size
    end = float(equity[-1]) if n else 1.0
    ann_return = end ** (periods_per_year / n) - 1.0 if n and end > 0 else (-1.0 if n else math.nan)
    sd = float(np.std(net, ddof=1)) if n > 1 else math.nan
    mean = float(np.mean(net)) if n else math.nan
    ann_vol = sd * math.sqrt(periods_per_year)
    flat = 0.0 if mean == 0.0 else math.nan
    sharpe = flat if sd == 0.0 else mean / sd * math.sqrt(periods_per_year)
    path = np.concatenate([[1.0], equity])
    max_dd = float(np.min(path / np.maximum.accumulate(path) - 1.0))
    return equity, ann_return, ann_vol, sharpe, max_dd


def trade_cost(prev: ArrayLike, pos: ArrayLike, costs: CostParams, stamp: bool) -> np.ndarray:
    """Cost of moving from position `prev` to `pos`, as a fraction of equity (scalars or arrays).

    (commission + slippage) on |Δposition| both ways, plus stamp duty on the sold part of a long position
    where `stamp` is set. The backtest and the RL environment both book costs with this.
    """
    prev, pos = np.asarray(prev, dtype=np.float64), np.asarray(pos, dtype=np.float64)
    cost = (costs.commission + costs.slippage) * np.abs(pos - prev)
    if stamp:
        cost = cost + costs.stamp_duty * np.clip(np.maximum(prev, 0.0) - np.maximum(pos, 0.0), 0.0, None)
    return cost


def _single(
    simple: np.ndarray,
    pos: np.ndarray,
    costs: CostParams,
    stamp: bool,
    periods_per_year: float,
    index: pd.Index,
) -> BacktestResult:
    """Backtest one symbol's series (rows in time order)."""
    prev = np.concatenate([[0.0], pos[:-1]])
    change = np.abs(pos - prev)
    cost = trade_cost(prev, pos, costs, stamp)
    net = (1.0 - cost) * (1.0 + pos * simple) - 1.0
    equity, ann_return, ann_vol, sharpe, max_dd = _stats(net, periods_per_year)
    turnover = float(change.mean()) if change.size else math.nan
    return BacktestResult(
        equity=pd.Series(equity, index=index, name="equity"),
        returns=pd.Series(net, index=index, name="return"),
        costs=pd.Series(cost, index=index, name="cost"),
        ann_return=ann_return,
        ann_vol=ann_vol,
        sharpe=sharpe,
        max_drawdown=max_dd,
        turnover=turnover,
        turnover_per_year=turnover * periods_per_year,
        n_trades=int(np.count_nonzero(change)),
        total_costs=float(cost.sum()),
        periods_per_year=float(periods_per_year),
    )


def _combine(
    sleeves: dict[str, BacktestResult], dates: dict[str, pd.Index], periods_per_year: float
) -> BacktestResult:
    """Equal-weight portfolio of per-symbol sleeves, rebalanced to 1/N every date of the union calendar.

    A sleeve with no bar on a date (holiday in its market) earns 0 that date; the daily rebalancing between
    sleeves is assumed costless (trading costs are those of each sleeve's own position changes). The union
    calendar has more dates per year than each market, so the annualisation factor becomes
    periods_per_year · n_dates / mean(rows per symbol).
    """

    def frame(attr: str) -> pd.DataFrame:
        cols = {s: pd.Series(getattr(r, attr).to_numpy(), index=dates[s]) for s, r in sleeves.items()}
        return pd.DataFrame(cols).sort_index().fillna(0.0)

    net_f, cost_f = frame("returns"), frame("costs")
    n_sym = len(sleeves)
    net = net_f.mean(axis=1)
    cost = cost_f.mean(axis=1)
    mean_rows = float(np.mean([len(r.returns) for r in sleeves.values()]))
    ppy = periods_per_year * len(net) / mean_rows
    equity, ann_return, ann_vol, sharpe, max_dd = _stats(net.to_numpy(), ppy)
    turnover_per_year = sum(r.turnover * len(r.returns) for r in sleeves.values()) / n_sym / len(net) * ppy
    return BacktestResult(
        equity=pd.Series(equity, index=net.index, name="equity"),
        returns=net.rename("return"),
        costs=cost.rename("cost"),
        ann_return=ann_return,
        ann_vol=ann_vol,
        sharpe=sharpe,
        max_drawdown=max_dd,
        turnover=turnover_per_year / ppy,
        turnover_per_year=turnover_per_year,
        n_trades=sum(r.n_trades for r in sleeves.values()),
        total_costs=float(cost.sum()),
        periods_per_year=ppy,
        per_symbol=sleeves,
    )


def backtest(
    returns: pd.Series,
    positions: pd.Series | ArrayLike,
    costs: CostParams,
    periods_per_year: float = 252,
    stamp_duty_on_sells: StampRule = True,
    *,
    symbol: pd.Series | None = None,
    time: pd.Series | None = None,
    log_returns: bool = True,
) -> BacktestResult:
    """Backtest `positions` against next-period `returns` (log returns unless `log_returns=False`).

    One symbol: rows are in time order. Several: pass `symbol` and `time` (aligned with the rows); each
    symbol is backtested on its own and the sleeves are combined equal-weight on the UTC-date calendar for
    daily bars, on the bar close times for intraday ones (see `_combine`). `stamp_duty_on_sells` is a bool
    or a per-symbol rule such as `stamp_duty_applies`.
    """
    r = np.asarray(returns, dtype="float64").ravel()
    p = np.asarray(positions, dtype="float64").ravel()
    if r.shape != p.shape:
        raise ValueError(f"returns and positions differ in length: {r.size} vs {p.size}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(p))):
        raise ValueError("returns and positions must be finite (drop rows without a realised return first)")
    if r.size == 0:
        raise ValueError("nothing to backtest: no rows")
    simple = np.expm1(r) if log_returns else r
    index = returns.index if isinstance(returns, pd.Series) else pd.RangeIndex(r.size)
    if symbol is None:
        if callable(stamp_duty_on_sells):
            raise ValueError("a per-symbol stamp duty rule needs `symbol`")
        return _single(simple, p, costs, bool(stamp_duty_on_sells), periods_per_year, index)
    if time is None:
        raise ValueError("several symbols need `time` to align them on one calendar")
    sym = np.asarray(symbol).ravel()
    when = pd.to_datetime(pd.Series(np.asarray(time).ravel()), utc=True)
    if sym.size != r.size or len(when) != r.size:
        raise ValueError("symbol and time must have one entry per row")
    # daily bars meet on UTC dates (markets close at different hours of one date); intraday bars on their
    # close times
    day = when.dt.normalize().to_numpy()
    if pd.DataFrame({"s": sym, "d": day}).duplicated().any():
        day = when.to_numpy()
    sleeves: dict[str, BacktestResult] = {}
    dates: dict[str, pd.Index] = {}
    for s in pd.unique(sym):
        rows = np.flatnonzero(sym == s)
        rows = rows[np.argsort(when.to_numpy()[rows], kind="stable")]
        d = pd.DatetimeIndex(day[rows])
        if d.has_duplicates:
            raise ValueError(f"symbol {s} has more than one row per bar time")
        stamp = stamp_duty_on_sells(str(s)) if callable(stamp_duty_on_sells) else bool(stamp_duty_on_sells)
        sleeves[str(s)] = _single(simple[rows], p[rows], costs, stamp, periods_per_year, index[rows])
        dates[str(s)] = d
    result = _combine(sleeves, dates, periods_per_year)
    log.debug("backtest: %d symbols, %d dates, sharpe %.3f", len(sleeves), len(result.returns), result.sharpe)
    return result


def positions_from_predictions(
    pred: pd.Series | ArrayLike, task: str, mode: Mode = "long_flat", threshold: float | None = None
) -> pd.Series:
    """Target positions from forecasts: long above the threshold; below it flat (long/flat) or short.

    Default threshold: 0.0 for predicted returns, 0.5 for P(up). A forecast exactly at the threshold is flat.
    """
    thr = (0.5 if task == "classification" else 0.0) if threshold is None else threshold
    values = np.asarray(pred, dtype="float64").ravel()
    if not np.all(np.isfinite(values)):
        raise ValueError("predictions must be finite to turn them into positions")
    long = (values > thr).astype("float64")
    if mode == "long_flat":
        out = long
    elif mode == "long_short":
        out = long - (values < thr).astype("float64")
    else:
        raise ValueError(f"mode must be 'long_flat' or 'long_short', got {mode!r}")
    index = pred.index if isinstance(pred, pd.Series) else pd.RangeIndex(values.size)
    return pd.Series(out, index=index, name="position")


def buy_and_hold(
    returns: pd.Series,
    costs: CostParams,
    periods_per_year: float = 252,
    stamp_duty_on_sells: StampRule = True,
    *,
    symbol: pd.Series | None = None,
    time: pd.Series | None = None,
    log_returns: bool = True,
) -> BacktestResult:
    """Baseline: long 1 from the first row to the end (one entry cost per symbol)."""
    ones = np.ones(len(returns))
    return backtest(
        returns, ones, costs, periods_per_year, stamp_duty_on_sells,
        symbol=symbol, time=time, log_returns=log_returns,
    )  # fmt: skip


def naive_zero(
    returns: pd.Series,
    costs: CostParams,
    periods_per_year: float = 252,
    mode: Mode = "long_flat",
    *,
    symbol: pd.Series | None = None,
    time: pd.Series | None = None,
    log_returns: bool = True,
) -> BacktestResult:
    """Baseline: the naive zero-return forecast traded by the same rule; it never trades (flat, equity 1)."""
    pos = positions_from_predictions(np.zeros(len(returns)), "regression", mode)
    return backtest(
        returns,
        pos.to_numpy(),
        costs,
        periods_per_year,
        True,
        symbol=symbol,
        time=time,
        log_returns=log_returns,
    )
