"""Walk-forward calibration (training.calibration, finstream.models.calibration) and the data-snooping-aware
gate (training.snooping): no calibration uses a pair from the fold it is applied to or after; the maps equal
their textbook fits; a calibrated model logged to MLflow predicts calibrated; SPA / MCS equal arch's on a
fixed seed; and on real returns in permuted order (nothing predictable) the full gate promotes a candidate
no more often than its level."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest
from fixtures_training import real_dataset

from finstream.config import PromotionParams, Settings
from finstream.models.calibration import (
    CalibratedForecaster,
    Calibration,
    fit_platt,
    fit_slope,
)
from finstream.sources.packaged import PackagedSource
from finstream.symbols import parse_symbol
from training.calibration import calibrate_walk_forward
from training.metrics import pearson_ic
from training.promotion import decide
from training.snooping import BENCHMARK, loss_table, search_tests
from training.walk_forward import dm_vs_zero, walk_forward_splits


def fold_frame(seed: int = 0, folds: int = 4, per_fold: int = 50) -> pd.DataFrame:
    """Out-of-sample pairs of `folds` consecutive daily blocks: y = 0.3·pred + noise (label = next day)."""
    rng = np.random.default_rng(seed)
    n = folds * per_fold
    event = pd.date_range("2020-01-01", periods=n, freq="D", tz="UTC")
    pred = rng.normal(0, 0.01, n)
    return pd.DataFrame(
        {
            "symbol": "X",
            "event_time": event,
            "label_time": event + pd.Timedelta(days=1),
            "fold": np.repeat(np.arange(folds), per_fold),
            "pred": pred,
            "y": 0.3 * pred + rng.normal(0, 0.01, n),
        }
    )


def test_each_fold_is_calibrated_from_earlier_folds_only() -> None:
    """Fold k's slope is the through-origin fit on the pairs of folds < k whose outcome was known before fold
    k starts (as the training purge: label strictly before; fold 0 gets the zero forecast); a pair planted
    in fold 2 changes no map up to fold 2's own, only fold 3's."""
    frame = fold_frame()
    out, maps = calibrate_walk_forward(frame, "regression")
    assert maps[0].kind == "zero" and (out.loc[out["fold"] == 0, "pred"] == 0.0).all()
    for k in (1, 2, 3):
        start = frame.loc[frame["fold"] == k, "event_time"].min()
        earlier = frame[(frame["fold"] < k) & (frame["label_time"] < start)]
        assert len(earlier) == 50 * k - 1  # the last pair before the fold resolves at its first bar
        slope = float(earlier["pred"] @ earlier["y"] / (earlier["pred"] @ earlier["pred"]))
        assert maps[k].slope == pytest.approx(slope, rel=1e-12)
        rows = out["fold"] == k
        np.testing.assert_allclose(out.loc[rows, "pred"], slope * frame.loc[rows, "pred"], rtol=1e-12)
    np.testing.assert_array_equal(out["pred_raw"], frame["pred"])

    planted = frame.copy()
    at = planted.index[planted["fold"] == 2][10]
    planted.loc[at, ["pred", "y"]] = [0.5, -5.0]  # a pair that would flip any slope it entered
    _, after_maps = calibrate_walk_forward(planted, "regression")
    for k in (0, 1, 2):
        assert after_maps[k] == maps[k], k  # fold 2's own pair does not calibrate fold 2
    assert after_maps[3].slope == 0.0 < maps[3].slope  # fold 3 sees it (and floors at 0)


def test_a_pair_whose_outcome_lands_in_the_fold_is_purged() -> None:
    """The last pair of fold 1 is relabelled to resolve inside fold 2: fold 2's map must not use it."""
    frame = fold_frame()
    last = frame.index[frame["fold"] == 1][-1]
    frame.loc[last, "label_time"] = frame.loc[frame["fold"] == 2, "event_time"].iloc[5]
    frame.loc[last, ["pred", "y"]] = [0.5, -5.0]
    _, maps = calibrate_walk_forward(frame, "regression")
    start = frame.loc[frame["fold"] == 2, "event_time"].min()
    earlier = frame[(frame["fold"] < 2) & (frame["label_time"] < start)]
    assert last not in earlier.index and len(earlier) == 99
    slope = float(earlier["pred"] @ earlier["y"] / (earlier["pred"] @ earlier["pred"]))
    assert maps[2].slope == pytest.approx(slope, rel=1e-12)


def test_slope_is_floored_at_zero_and_platt_is_the_logistic_fit() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    p = rng.normal(size=500)
    assert fit_slope(p, -p).slope == 0.0 and fit_slope([], []).kind == "zero"
    assert fit_slope(p, 2 * p).slope == pytest.approx(2.0)
    prob = rng.uniform(0.3, 0.7, 2000)
    outcome = (rng.uniform(size=2000) < 0.5 + 0.5 * (prob - 0.5)).astype(float)
    platt = fit_platt(prob, outcome)
    logit = np.log(prob / (1 - prob))[:, None]
    oracle = LogisticRegression(C=np.inf, max_iter=1000).fit(logit, outcome.astype(int))
    assert platt.slope == pytest.approx(oracle.coef_[0, 0], rel=1e-3)
    assert platt.intercept == pytest.approx(oracle.intercept_[0], abs=1e-3)
    expected = oracle.predict_proba(logit)[:, 1]
    np.testing.assert_allclose(platt.apply(prob), expected, rtol=1e-3)
    assert fit_platt(prob, np.ones(2000)).kind == "half"
    assert Calibration.from_json(platt.to_json()) == platt


def test_a_logged_calibrated_model_predicts_calibrated(tmp_path: object) -> None:
    """log_forecaster with a calibration → the loaded pyfunc (and its unwrapped Forecaster, fast path too)
    gives slope × the raw model's forecasts."""
    import mlflow

    from finstream.models.pyfunc import load_forecaster, log_forecaster, unwrap_forecaster
    from finstream.models.zoo import make_model

    ds = real_dataset()
    X, y = ds.X.tail(600).reset_index(drop=True), ds.y_return.tail(600).reset_index(drop=True)
    model = make_model("ridge", "regression").fit(X, y)
    calibration = Calibration("slope", 0.25, 0.0, 600)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("calibrated")
    with mlflow.start_run():
        info = log_forecaster(model, X.tail(5), calibration=calibration)
    loaded = load_forecaster(info.model_uri)
    raw = model.predict(X)
    np.testing.assert_allclose(np.asarray(loaded.predict(X)), 0.25 * raw, rtol=1e-12)
    inner = unwrap_forecaster(loaded)
    assert isinstance(inner, CalibratedForecaster) and inner.calibration == calibration
    A = X[inner.feature_names].to_numpy()
    np.testing.assert_allclose(inner.predict_matrix(A), 0.25 * raw, rtol=1e-12)
    assert inner.family == "ridge" and inner.task == "regression"


# ------------------------------------------------------------------------------------- search tests


def candidate_frames(seed: int = 3) -> dict[str, pd.DataFrame]:
    """Three forecasts of real S&P 500 returns 2012-2018 (trailing means: honest, weak), one row a day."""
    bars = PackagedSource(Settings()).fetch(parse_symbol("^GSPC"), date(2011, 1, 1), date(2018, 12, 31))
    r = np.log(bars["close"]).diff().to_numpy()
    ts = pd.to_datetime(bars["ts"], utc=True)
    frames = {}
    for k in (1, 5, 20):
        pred = pd.Series(r).rolling(k).mean().shift(0).to_numpy()  # known at t, forecasts r[t+1]
        frame = pd.DataFrame({"symbol": "^GSPC", "event_time": ts, "y": np.roll(r, -1), "pred": 0.1 * pred})
        frames[f"mean_{k}"] = frame.iloc[60:-1].reset_index(drop=True)
    return frames


def test_spa_and_mcs_equal_arch_on_a_fixed_seed() -> None:
    from arch.bootstrap import MCS, SPA

    frames = candidate_frames()
    tests = search_tests(frames, "regression", reps=300, seed=7)
    losses, bench = loss_table(frames, "regression")
    spa = SPA(bench, losses, reps=300, seed=7)
    spa.compute()
    assert tests.spa_pvalue == float(spa.pvalues["consistent"])
    mcs = MCS(pd.concat([losses, bench], axis=1), size=0.10, reps=300, seed=7)
    mcs.compute()
    assert {n for n, ok in tests.mcs_members.items() if ok} == set(mcs.included) - {BENCHMARK}
    assert tests.benchmark_in_mcs == (BENCHMARK in mcs.included)
    assert tests.days == len(losses) > 1500


#: permuted runs, and bootstrap replications per run (the gate's p-values need ~0.01 resolution at most)
RUNS, RUN_REPS = 200, 100


def _permuted_run(returns: np.ndarray, times: pd.DatetimeIndex, rng: np.random.Generator) -> dict[str, bool]:
    """One training run's gate on permuted returns: 6 trailing-mean / reversal candidates, yearly folds,
    walk-forward calibration; the best by IC is gated with and without the search tests."""
    r = rng.permutation(returns)
    y = np.roll(r, -1)
    label = times + pd.Timedelta(days=1)
    folds = walk_forward_splits(pd.Series(times), pd.Series(label), None, None, 2.0)
    fold = np.full(r.size, -1)
    for f in folds:
        fold[f.test_idx] = f.index
    test = fold >= 0
    frames, metrics = {}, {}
    for sign in (1, -1):
        for k in (1, 5, 20):
            raw = sign * pd.Series(r).rolling(k, min_periods=1).mean().to_numpy()
            frame = pd.DataFrame(
                {"symbol": "X", "event_time": times, "label_time": label, "fold": fold, "y": y, "pred": raw}
            )[test].reset_index(drop=True)
            frame, _ = calibrate_walk_forward(frame, "regression")
            name = f"{'mom' if sign > 0 else 'rev'}_{k}"
            frames[name] = frame
            _, p = dm_vs_zero("regression", frame, 1)
            metrics[name] = {
                "ic": pearson_ic(frame["pred"], frame["y"]),
                "dm_pvalue": p,
                "n_folds": len(folds),
            }
    best = max(metrics, key=lambda n: metrics[n]["ic"] if math.isfinite(metrics[n]["ic"]) else -1.0)
    tests = search_tests(frames, "regression", reps=RUN_REPS, seed=int(rng.integers(1 << 30)))
    params = PromotionParams()
    alone = decide(metrics[best], None, params).promote
    full = decide({**metrics[best], **tests.metrics(best)}, None, params, search=True).promote
    return {"dm_only": alone, "full": full}


def test_on_permuted_real_returns_the_gate_promotes_no_more_often_than_its_level() -> None:
    """RUNS runs on S&P 500 daily returns (2011-2018) in random order: nothing is predictable, so every
    promotion is a false one. The full gate (IC > 0, DM p ≤ 0.10, SPA p ≤ 0.10, in the 90 % MCS) must
    promote at most ~10 % of runs (binomial slack: ≤ 15 %); the rate is printed beside that of the DM gate
    alone on the best-of-6 candidate, which the search tests are there to correct."""
    bars = PackagedSource(Settings()).fetch(parse_symbol("^GSPC"), date(2011, 1, 1), date(2018, 12, 31))
    returns = np.log(bars["close"]).diff().to_numpy()[1:]
    times = pd.DatetimeIndex(pd.to_datetime(bars["ts"], utc=True))[1:]
    rng = np.random.default_rng(2026)
    runs = [_permuted_run(returns, times, rng) for _ in range(RUNS)]
    full = sum(r["full"] for r in runs) / len(runs)
    dm_only = sum(r["dm_only"] for r in runs) / len(runs)
    print(f"false promotions on permuted returns: full gate {full:.3f}, DM gate alone {dm_only:.3f}")
    assert full <= 0.15
    assert full <= dm_only
