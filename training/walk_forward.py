"""Purged expanding-window walk-forward evaluation: out-of-sample forecasts, metrics, backtest and DM test.

Splits: the test period is everything after the first `min_train_years` of the data (from the UTC midnight
after the first event time + min_train_years; the default), or the last `test_years` (from UTC midnight of
the day `test_years` before the last event time). It is cut into `n_folds` consecutive blocks of equal
calendar length, edges at UTC midnight, all symbols together; by default one block per year of the test
period (its length in years, rounded, at least one). Fold k trains on every row whose label is known
strictly before the block's first event time (purge), so with horizon h the last h rows of each symbol
before the block drop out and no training target overlaps the test period. Training always starts at the
first row (expanding window). Forecasts are then calibrated fold by fold (`training.calibration`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from finstream.config import TrainParams
from finstream.models.calibration import Calibration
from finstream.models.zoo.base import Forecaster, Task
from training.backtest import (
    BacktestResult,
    backtest,
    buy_and_hold,
    naive_zero,
    positions_from_predictions,
    stamp_duty_applies,
)
from training.dataset import Dataset
from training.metrics import classification_metrics, dm_test, historical_mean, regression_metrics

log = logging.getLogger(__name__)

YEAR = pd.Timedelta(days=365.25)


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: positional row indices into the dataset and the test block's time range."""

    index: int
    train_idx: np.ndarray
    test_idx: np.ndarray
    test_start: pd.Timestamp  # first event time in the test block
    test_end: pd.Timestamp  # last event time in the test block


@dataclass
class WalkForwardResult:
    """Out-of-sample evaluation of one model family on one task.

    `folds`: one dict per fold (sizes, time ranges, metrics, fold backtest). `overall`: flat dict of floats
    over all out-of-sample rows. `predictions`: symbol, event_time, y, pred, fold, y_return, benchmark.
    `naive_<metric>` keys in `overall` hold the naive forecast's value (return 0 or P(up) = 0.5, flat).
    `equity`: strategy (long/flat), long_short, buy_and_hold and naive equity on the UTC-date calendar.
    With calibration (the default) every figure is of the calibrated forecasts (`training.calibration`,
    fitted on earlier folds only), `pred_raw` holds the raw ones, `raw_<metric>` keys their metrics, and
    `calibration` is the final map (fitted on every out-of-sample pair) the registered model carries.
    """

    task: Task
    folds: list[dict[str, object]]
    overall: dict[str, float]
    predictions: pd.DataFrame
    equity: pd.DataFrame
    calibration: Calibration | None = None


def _utc_ns(times: pd.Series) -> np.ndarray:
    """datetime64[ns] (UTC, naive) array of a timestamp series."""
    return (
        pd.DatetimeIndex(pd.to_datetime(pd.Series(times), utc=True))
        .tz_localize(None)
        .as_unit("ns")
        .to_numpy()
    )


def oos_period_start(event_time: pd.Series, test_years: float) -> pd.Timestamp:
    """Start of the test period: UTC midnight of the day `test_years` before the last event time."""
    if test_years <= 0:
        raise ValueError(f"test_years must be > 0, got {test_years}")
    last = pd.to_datetime(pd.Series(event_time), utc=True).max()
    return (last - test_years * YEAR).normalize()


def test_period_start(
    event_time: pd.Series, test_years: float | None, min_train_years: float
) -> pd.Timestamp:
    """Start of the walk-forward's test period (UTC): the last `test_years`, or (None) everything after the
    first `min_train_years` of the data, from the next UTC midnight."""
    if test_years is not None:
        return oos_period_start(event_time, test_years)
    first = pd.to_datetime(pd.Series(event_time), utc=True).min()
    return (first + min_train_years * YEAR).ceil("D")


def fold_count(start: pd.Timestamp, end: pd.Timestamp, n_folds: int | None) -> int:
    """`n_folds`, or (None) one fold per year of the period start..end (rounded, at least one)."""
    if n_folds is not None:
        return n_folds
    return max(1, round((end - start) / YEAR))


def walk_forward_splits(
    event_time: pd.Series,
    label_time: pd.Series,
    n_folds: int | None,
    test_years: float | None,
    min_train_years: float,
    purge: bool = True,
) -> list[Fold]:
    """Expanding-window folds over the test period, purged by label time (see the module docstring).

    `n_folds` None: yearly folds; `test_years` None: the test period is all data after `min_train_years`.
    Without `purge` a fold trains on rows whose event time is before the block (labels may overlap it; for
    comparison only). Raises ValueError when the first block leaves less than `min_train_years` of history
    or a block would be empty.
    """
    if n_folds is not None and n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if min_train_years < 0:
        raise ValueError(f"min_train_years must be >= 0, got {min_train_years}")
    ev, lab = _utc_ns(event_time), _utc_ns(label_time)
    if ev.size != lab.size or ev.size == 0:
        raise ValueError("event_time and label_time must be non-empty and of equal length")
    start = test_period_start(event_time, test_years, min_train_years).tz_localize(None)
    end = pd.Timestamp(ev.max()) + pd.Timedelta(days=1)
    if start >= end:
        raise ValueError(
            f"no test period: the data ends {pd.Timestamp(ev.max()).date()}, before {start.date()} "
            f"(min_train_years={min_train_years} after the first row): load more history"
        )
    n_folds = fold_count(start, end, n_folds)
    edges = [start] + [(start + (end - start) * (k / n_folds)).normalize() for k in range(1, n_folds)] + [end]
    first_row = pd.Timestamp(ev.min())
    folds: list[Fold] = []
    for k in range(n_folds):
        lo, hi = np.datetime64(edges[k]), np.datetime64(edges[k + 1])
        test_idx = np.flatnonzero((ev >= lo) & (ev < hi))
        if test_idx.size == 0:
            raise ValueError(
                f"test block {k} ({edges[k].date()} to {edges[k + 1].date()}) has no rows: "
                f"use fewer folds than {n_folds} or more test_years than {test_years}"
            )
        first_test = ev[test_idx].min()
        if k == 0:
            history = (pd.Timestamp(first_test) - first_row) / YEAR
            if history < min_train_years:
                raise ValueError(
                    f"only {history:.2f} years of data before the test period starting {edges[0].date()}, "
                    f"need min_train_years={min_train_years}: load more history, or lower test_years "
                    f"({test_years}) or min_train_years"
                )
        train_idx = np.flatnonzero(lab < first_test) if purge else np.flatnonzero(ev < first_test)
        if train_idx.size == 0:
            raise ValueError(f"fold {k} has no training rows before {pd.Timestamp(first_test)}")
        folds.append(
            Fold(
                index=k,
                train_idx=train_idx,
                test_idx=test_idx,
                test_start=pd.Timestamp(first_test, tz="UTC"),
                test_end=pd.Timestamp(ev[test_idx].max(), tz="UTC"),
            )
        )
    return folds


def _predict_fold(model: Forecaster, dataset: Dataset, fold: Fold, event_ns: np.ndarray) -> np.ndarray:
    """Predictions for the fold's test rows; sequential models also get every earlier row as context."""
    if model.sequential:
        rows = np.flatnonzero(event_ns <= np.datetime64(fold.test_end.tz_localize(None)))
        full = np.asarray(model.predict(dataset.X.iloc[rows].reset_index(drop=True)), dtype="float64")
        if full.shape != (rows.size,):
            raise ValueError(f"{type(model).__name__}.predict returned {full.shape}, expected ({rows.size},)")
        pred = full[np.searchsorted(rows, fold.test_idx)]
    else:
        pred = np.asarray(
            model.predict(dataset.X.iloc[fold.test_idx].reset_index(drop=True)), dtype="float64"
        )
        if pred.shape != (fold.test_idx.size,):
            raise ValueError(
                f"{type(model).__name__}.predict returned {pred.shape}, expected ({fold.test_idx.size},)"
            )
    if not np.all(np.isfinite(pred)):
        raise ValueError(f"{type(model).__name__} produced non-finite predictions in fold {fold.index}")
    return pred


@dataclass
class Forecasts:
    """Out-of-sample forecasts of one family: every test row of every fold, and where each fold sits.

    `predictions`: symbol, event_time, y, pred, fold, y_return, benchmark (the historical-mean forecast).
    `folds`: per fold its sizes and time range (fold, train_rows, test_rows, train_end, test_start, test_end).
    """

    task: Task
    predictions: pd.DataFrame
    folds: list[dict[str, object]]


def forecast(
    model_factory: Callable[[], Forecaster], dataset: Dataset, task: Task, params: TrainParams
) -> Forecasts:
    """Walk-forward forecasts: a fresh model per fold, fit on the fold's purged training rows only."""
    folds = walk_forward_splits(
        dataset.event_time, dataset.label_time, params.folds, params.test_years, params.min_train_years
    )
    y = dataset.target(task).reset_index(drop=True)
    symbol = dataset.X["symbol"].reset_index(drop=True)
    benchmark = historical_mean(y, dataset.event_time, dataset.label_time, symbol)
    event_ns = _utc_ns(dataset.event_time)
    event_time = pd.to_datetime(dataset.event_time.reset_index(drop=True), utc=True)
    label_time = pd.to_datetime(dataset.label_time.reset_index(drop=True), utc=True)
    fold_rows: list[dict[str, object]] = []
    frames: list[pd.DataFrame] = []
    for fold in folds:
        model = model_factory()
        if model.task != task:
            raise ValueError(f"model_factory built a {model.task} model for a {task} evaluation")
        model.fit(
            dataset.X.iloc[fold.train_idx].reset_index(drop=True),
            y.iloc[fold.train_idx].reset_index(drop=True),
        )
        pred = _predict_fold(model, dataset, fold, event_ns)
        idx = fold.test_idx
        frames.append(
            pd.DataFrame(
                {
                    "symbol": symbol.iloc[idx].to_numpy(),
                    "event_time": event_time.iloc[idx].to_numpy(),
                    "y": y.iloc[idx].to_numpy(),
                    "pred": pred,
                    "fold": fold.index,
                    "y_return": dataset.y_return.iloc[idx].to_numpy(),
                    "benchmark": benchmark[idx],
                    "label_time": label_time.iloc[idx].to_numpy(),
                }
            )
        )
        fold_rows.append(
            {
                "fold": fold.index,
                "train_rows": int(fold.train_idx.size),
                "test_rows": int(idx.size),
                "train_end": event_time.iloc[fold.train_idx].max().isoformat(),
                "test_start": fold.test_start.isoformat(),
                "test_end": fold.test_end.isoformat(),
            }
        )
    return Forecasts(task, pd.concat(frames, ignore_index=True), fold_rows)


def forecast_metrics(task: Task, frame: pd.DataFrame) -> dict[str, float]:
    """Forecast quality of `frame`'s rows: regression or classification metrics (training.metrics)."""
    if task == "regression":
        return regression_metrics(frame["y"], frame["pred"], frame["benchmark"])
    return classification_metrics(frame["y"], frame["pred"], frame["y_return"])


def backtests(task: Task, frame: pd.DataFrame, params: TrainParams, ppy: float) -> dict[str, BacktestResult]:
    """Long/flat (headline), long/short, buy-and-hold and naive-zero backtests of the out-of-sample rows."""
    kw = {"symbol": frame["symbol"], "time": frame["event_time"]}
    r, costs = frame["y_return"], params.costs
    long_flat = positions_from_predictions(frame["pred"], task, "long_flat")
    long_short = positions_from_predictions(frame["pred"], task, "long_short")
    return {
        "strategy": backtest(r, long_flat, costs, ppy, stamp_duty_applies, **kw),
        "long_short": backtest(r, long_short, costs, ppy, stamp_duty_applies, **kw),
        "buy_and_hold": buy_and_hold(r, costs, ppy, stamp_duty_applies, **kw),
        "naive": naive_zero(r, costs, ppy, **kw),
    }


def dm_vs_zero(task: Task, frame: pd.DataFrame, horizon: int) -> tuple[float, float]:
    """DM test of the model against the naive forecast (return 0, or P(up) = 0.5) on squared-error loss.

    One-sided (H1: the model's loss is lower): the p-value is the evidence that the model *beats* the naive
    forecast, so a model that is significantly worse gets a p-value near 1, never a passing one.

    Loss differentials are averaged across symbols per UTC date first, so same-day errors of different markets
    are not counted as independent evidence; the test runs on that daily series.
    """
    naive = 0.5 if task == "classification" else 0.0
    d = (frame["y"] - frame["pred"]) ** 2 - (frame["y"] - naive) ** 2
    day = pd.to_datetime(frame["event_time"], utc=True).dt.normalize()
    daily = d.groupby(day.to_numpy()).mean()
    if len(daily) < 3:
        return math.nan, math.nan
    return dm_test(daily.to_numpy(), horizon, alternative="less")


def symbol_metrics(predictions: pd.DataFrame, task: Task, horizon: int) -> dict[str, dict[str, float]]:
    """Per symbol of a pooled model's out-of-sample rows: its forecast metrics, DM test vs the naive
    forecast and row count (the per-symbol verdicts are judged on these)."""
    out: dict[str, dict[str, float]] = {}
    for symbol, frame in predictions.groupby("symbol", sort=True):
        frame = frame.reset_index(drop=True)
        metrics = forecast_metrics(task, frame)
        naive = frame.assign(pred=0.5 if task == "classification" else 0.0)
        metrics.update({f"naive_{k}": v for k, v in forecast_metrics(task, naive).items()})
        metrics["dm_stat"], metrics["dm_pvalue"] = dm_vs_zero(task, frame, horizon)
        metrics["n_test"] = float(len(frame))
        out[str(symbol)] = {k: float(v) for k, v in metrics.items()}
    return out


def fold_table(forecasts: Forecasts, params: TrainParams, periods_per_year: float) -> list[dict[str, object]]:
    """Per fold: its sizes and range, forecast metrics and the fold's long/flat and buy-and-hold backtest."""
    rows: list[dict[str, object]] = []
    by_fold = forecasts.predictions.groupby("fold", sort=True)
    for info in forecasts.folds:
        frame = by_fold.get_group(info["fold"]).reset_index(drop=True)
        metrics = forecast_metrics(forecasts.task, frame)
        bt = backtests(forecasts.task, frame, params, periods_per_year)
        rows.append({**info, **metrics, **bt["strategy"].summary(), **bt["buy_and_hold"].summary("bh_")})
        log.info(
            "fold %s: train %s rows to %s, test %s rows %s..%s, ic %.4f",
            info["fold"], info["train_rows"], info["train_end"], info["test_rows"],
            str(info["test_start"])[:10], str(info["test_end"])[:10], metrics["ic"],
        )  # fmt: skip
    return rows


def summarise(
    forecasts: Forecasts,
    folds: list[dict[str, object]],
    params: TrainParams,
    horizon: int,
    periods_per_year: float,
) -> tuple[dict[str, float], dict[str, BacktestResult]]:
    """Overall figures over every out-of-sample row: metrics, the naive forecast's, backtests, DM test."""
    task, predictions = forecasts.task, forecasts.predictions
    overall = forecast_metrics(task, predictions)
    naive = predictions.assign(pred=0.5 if task == "classification" else 0.0)
    overall.update({f"naive_{k}": v for k, v in forecast_metrics(task, naive).items()})
    bt = backtests(task, predictions, params, periods_per_year)
    overall.update(bt["strategy"].summary())
    overall.update(bt["long_short"].summary("ls_"))
    overall.update(bt["buy_and_hold"].summary("bh_"))
    overall.update(bt["naive"].summary("naive_"))
    overall["dm_stat"], overall["dm_pvalue"] = dm_vs_zero(task, predictions, horizon)
    fold_ic = np.array([float(r["ic"]) for r in folds])  # type: ignore[arg-type]
    finite_ic = fold_ic[np.isfinite(fold_ic)]
    overall["ic_fold_mean"] = float(finite_ic.mean()) if finite_ic.size else math.nan
    overall["ic_fold_std"] = float(finite_ic.std(ddof=1)) if finite_ic.size > 1 else math.nan
    overall["n_folds"] = float(len(folds))
    overall["n_test"] = float(len(predictions))
    return overall, bt


#: the raw (uncalibrated) figures reported beside the calibrated ones, as `raw_<name>`
RAW_METRICS = ("ic", "rank_ic", "oos_r2", "mae", "rmse", "hit_rate", "auc", "log_loss", "brier", "dm_pvalue")


def evaluate(
    model_factory: Callable[[], Forecaster],
    dataset: Dataset,
    task: Task,
    params: TrainParams,
    periods_per_year: float = 252,
    calibrate: bool = True,
) -> WalkForwardResult:
    """Walk-forward evaluation of a model family: forecast, calibrate (each fold from earlier folds' pairs),
    then metrics, backtests and the DM test of the calibrated forecasts, the raw ones' beside them.

    Backtest headline (`sharpe`, `ann_return`, ...) is long/flat, the only form tradable for A-shares;
    long/short (`ls_*`) is reported for every symbol alongside. Stamp duty is charged on China-market symbols.
    """
    from training.calibration import calibrate_walk_forward, final_calibration

    forecasts = forecast(model_factory, dataset, task, params)
    raw: dict[str, float] = {}
    calibration = None
    if calibrate:
        raw = forecast_metrics(task, forecasts.predictions)
        raw["dm_stat"], raw["dm_pvalue"] = dm_vs_zero(task, forecasts.predictions, dataset.horizon)
        calibrated, fold_maps = calibrate_walk_forward(forecasts.predictions, task)
        calibration = final_calibration(calibrated, task)
        forecasts = Forecasts(task, calibrated, forecasts.folds)
    folds = fold_table(forecasts, params, periods_per_year)
    if calibrate:
        for row, fold_map in zip(folds, fold_maps, strict=True):
            row["calibration"] = fold_map.describe()
    overall, bt = summarise(forecasts, folds, params, dataset.horizon, periods_per_year)
    overall.update({f"raw_{k}": float(raw[k]) for k in RAW_METRICS if k in raw})
    if calibration is not None:
        overall["calibration_slope"] = calibration.slope
        overall["calibration_intercept"] = calibration.intercept
    log.info(
        "walk-forward %s: %d folds, %d test rows, ic %.4f, sharpe %.2f (buy-and-hold %.2f), DM p %.3f",
        task, len(folds), len(forecasts.predictions), overall["ic"], overall["sharpe"], overall["bh_sharpe"],
        overall["dm_pvalue"],
    )  # fmt: skip
    equity = pd.DataFrame({name: res.equity for name, res in bt.items()})
    return WalkForwardResult(
        task=task,
        folds=folds,
        overall=overall,
        predictions=forecasts.predictions,
        equity=equity,
        calibration=calibration,
    )
