"""Honest evaluation: hand-checked metrics and backtest, purged walk-forward on real data, leakage checks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from fixtures_training import real_dataset
from scipy import stats
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression, Ridge

from finstream.config import CostParams, TrainParams
from finstream.errors import FinstreamError
from finstream.models.zoo.base import Forecaster
from training import metrics as m
from training.backtest import (
    backtest,
    buy_and_hold,
    naive_zero,
    positions_from_predictions,
    stamp_duty_applies,
)
from training.dataset import Dataset
from training.leakage import (
    LeakageSuspected,
    check_feature_leakage,
    check_model_leakage,
    feature_target_correlations,
)
from training.plots import equity_plot, evaluation_plots, feature_importance_plot, prediction_plot
from training.walk_forward import WalkForwardResult, evaluate, walk_forward_splits

#: the real set spans 2010-04 .. 2018-12 (8.7 years): 3 test years leave 5.7 years of first training history
PARAMS = TrainParams(folds=3, test_years=3.0, min_train_years=5.0)
COSTS = CostParams(commission=0.00025, stamp_duty=0.0005, slippage=0.0005)


class LinearForecaster(Forecaster):
    """Ridge / logistic regression on standardised features: a fast honest model for the tests."""

    family = "test_linear"

    def fit(self, X: pd.DataFrame, y: pd.Series) -> Self:
        self.feature_names = [c for c in X.columns if c != "symbol"]
        Z = X[self.feature_names].to_numpy()
        self.mu, self.sd = Z.mean(axis=0), Z.std(axis=0) + 1e-12
        self.model = (
            Ridge(alpha=1.0) if self.task == "regression" else LogisticRegression(C=0.1, max_iter=500)
        )
        self.model.fit((Z - self.mu) / self.sd, y.to_numpy())
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        Z = (X[self.feature_names].to_numpy() - self.mu) / self.sd
        if self.task == "regression":
            return self.model.predict(Z).astype("float64")
        return self.model.predict_proba(Z)[:, 1].astype("float64")

    def save(self, path: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path) -> Self:
        raise NotImplementedError


class TrailingMean(Forecaster):
    """A sequential model: the mean of the last 5 one-day returns of the symbol, so it needs context rows."""

    family = "test_trailing"
    sequential = True
    seen: ClassVar[list[pd.DataFrame]] = []  # what predict was given

    def fit(self, X: pd.DataFrame, y: pd.Series) -> Self:
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        TrailingMean.seen.append(X)
        rolled = X.groupby("symbol", sort=False)["logret_1"].transform(lambda s: s.rolling(5).mean())
        return rolled.fillna(0.0).to_numpy()

    def save(self, path: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path) -> Self:
        raise NotImplementedError


def _with_feature(dataset: Dataset, name: str, values: pd.Series) -> Dataset:
    X = dataset.X.copy()
    X[name] = values.to_numpy()
    return Dataset(
        X, dataset.y_return, dataset.y_direction, dataset.event_time, dataset.label_time, dataset.horizon
    )


@pytest.fixture(scope="module")
def regression_result() -> WalkForwardResult:
    return evaluate(lambda: LinearForecaster("regression"), real_dataset(), "regression", PARAMS)


# ------------------------------------------------------------------------------------------------ metrics


def test_oos_r2_hand_values() -> None:
    y = np.array([1.0, 2.0, 3.0])
    bench = np.array([2.0, 2.0, 2.0])
    assert m.oos_r2(y, y, bench) == 1.0
    assert m.oos_r2(y, bench, bench) == 0.0
    # SSE 1 vs benchmark SSE 2
    assert m.oos_r2(y, [1.0, 2.0, 2.0], bench) == pytest.approx(0.5)
    # worse than the benchmark: SSE 8 vs 2
    assert m.oos_r2(y, [3.0, 2.0, 1.0], bench) == pytest.approx(-3.0)


def test_historical_mean_uses_only_targets_known_at_forecast_time() -> None:
    day = pd.Timestamp("2020-01-01", tz="UTC")
    ev = pd.Series([day + pd.Timedelta(days=i) for i in range(4)] * 2)
    lab = ev + pd.Timedelta(days=1)
    y = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0])
    sym = pd.Series(["A"] * 4 + ["B"] * 4)
    out = m.historical_mean(y, ev, lab, sym)
    # row 0: nothing known yet; row 1 (day 1): y0 arrived at day 1; row 3: mean(y0..y2)
    np.testing.assert_allclose(out, [np.nan, 1.0, 1.5, 2.0, np.nan, 10.0, 15.0, 20.0])
    pooled = m.historical_mean(y, ev, lab)
    assert pooled[1] == pytest.approx((1.0 + 10.0) / 2)


def test_point_metrics_against_hand_values_and_oracles() -> None:
    y = np.array([0.01, -0.02, 0.0, 0.03])
    pred = np.array([0.02, 0.01, -0.01, 0.0])
    assert m.mae(y, pred) == pytest.approx((0.01 + 0.03 + 0.01 + 0.03) / 4)
    # predicted up [T, T, F, F] vs realised up [T, F, F, T] (a zero return is not up)
    assert m.hit_rate(y, pred) == 0.5
    assert m.hit_rate([1, 0, 1, 0], [0.7, 0.4, 0.5, 0.6], "classification") == 0.5
    assert m.pearson_ic(pred, y) == pytest.approx(np.corrcoef(pred, y)[0, 1])
    assert m.spearman_ic(pred, y) == pytest.approx(stats.spearmanr(pred, y).statistic)
    assert math.isnan(m.pearson_ic(np.zeros(4), y))


def test_probability_scores_against_hand_values_and_sklearn() -> None:
    assert m.brier([1, 0], [0.8, 0.3]) == pytest.approx((0.04 + 0.09) / 2)
    assert m.log_loss([1, 0], [0.8, 0.3]) == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    # positives 0.35 and 0.8 beat 1 and 2 of the two negatives (0.1, 0.4): 3 of 4 pairs
    assert m.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert m.auc([0, 1, 1], [0.5, 0.5, 0.5]) == 0.5
    assert math.isnan(m.auc([1, 1], [0.2, 0.3]))
    ds = real_dataset()  # sklearn as the oracle on real labels, with RSI/100 as a crude P(up)
    yb, p = ds.y_direction.to_numpy()[:500], ds.X["rsi_14"].to_numpy()[:500] / 100
    assert m.auc(yb, p) == pytest.approx(skm.roc_auc_score(yb, p))
    assert m.log_loss(yb, p) == pytest.approx(skm.log_loss(yb, p))
    assert m.brier(yb, p) == pytest.approx(skm.brier_score_loss(yb, p))


def test_diebold_mariano_hand_example() -> None:
    # d = e_m² − e_b² = [0, −1, 3, −3]: mean −0.25, sample sd 2.5, so DM·HLN = −0.25 / (2.5 / √4) = −0.2
    stat, p = m.diebold_mariano([1.0, 0.0, 2.0, 1.0], [1.0, 1.0, 1.0, 2.0])
    assert stat == pytest.approx(-0.2)
    assert p == pytest.approx(2 * stats.t(df=3).sf(0.2))
    stat_abs, _ = m.diebold_mariano([1.0, 0.0, 2.0, 1.0], [1.0, 1.0, 1.0, 2.0], loss="mae")
    # d = |e_m| − |e_b| = [0, −1, 1, −1]: mean −0.25, sample variance 2.75 / 3 → −0.25 / (√(11/12) / 2)
    assert stat_abs == pytest.approx(-0.25 / (math.sqrt(11 / 12) / 2))


def test_diebold_mariano_matches_statsmodels_hac_with_hln_correction() -> None:
    y = real_dataset().y_return.to_numpy()[:300]
    e_model = y - 0.0005
    e_bench = y - pd.Series(y).shift(1).fillna(0.0).to_numpy()
    d = e_model**2 - e_bench**2
    # h = 1: HLN-corrected DM equals the one-sample t-test of the loss differential
    stat, p = m.diebold_mariano(e_model, e_bench, horizon=1)
    ttest = stats.ttest_1samp(d, 0.0)
    assert stat == pytest.approx(ttest.statistic) and p == pytest.approx(ttest.pvalue)
    # h = 3: Newey-West (Bartlett) with 2 lags, as statsmodels' HAC on a constant, times the HLN factor
    h, t = 3, d.size
    ols = sm.OLS(d, np.ones(t)).fit(cov_type="HAC", cov_kwds={"maxlags": h - 1, "use_correction": False})
    expected = float(ols.tvalues[0]) * math.sqrt((t + 1 - 2 * h + h * (h - 1) / t) / t)
    stat3, p3 = m.diebold_mariano(e_model, e_bench, horizon=h)
    assert stat3 == pytest.approx(expected)
    assert p3 == pytest.approx(2 * stats.t(df=t - 1).sf(abs(expected)))
    _, p_less = m.diebold_mariano(e_model, e_bench, horizon=h, alternative="less")
    assert p_less == pytest.approx(stats.t(df=t - 1).cdf(expected))


def test_diebold_mariano_degenerate_inputs() -> None:
    assert m.diebold_mariano([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == (0.0, 1.0)
    with pytest.raises(ValueError, match=">= 3"):
        m.diebold_mariano([1.0, 2.0], [0.0, 0.0])


# ----------------------------------------------------------------------------------------------- backtest

SIMPLE = pd.Series([0.01, 0.02, -0.01, 0.03])


def test_backtest_one_round_trip_exact_equity_and_costs() -> None:
    res = backtest(SIMPLE, [0, 1, 1, 0], COSTS, log_returns=False)
    buy, sell = 0.00025 + 0.0005, 0.00025 + 0.0005 + 0.0005  # stamp duty on the sell only
    expected = np.cumprod([1.0, (1 - buy) * 1.02, 0.99, 1 - sell])
    np.testing.assert_allclose(res.equity.to_numpy(), expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(res.costs.to_numpy(), [0.0, buy, 0.0, sell])
    assert res.total_costs == pytest.approx(buy + sell)
    assert res.n_trades == 2
    assert res.turnover == 0.5 and res.turnover_per_year == 126.0
    assert res.max_drawdown == pytest.approx(expected[3] / expected[1] - 1)
    assert res.ann_return == pytest.approx(expected[-1] ** (252 / 4) - 1)
    net = res.returns.to_numpy()
    assert res.sharpe == pytest.approx(net.mean() / net.std(ddof=1) * math.sqrt(252))
    assert res.ann_vol == pytest.approx(net.std(ddof=1) * math.sqrt(252))
    # the same trip on log returns, and without stamp duty (e.g. a US index)
    as_log = backtest(np.log1p(SIMPLE), [0, 1, 1, 0], COSTS)
    np.testing.assert_allclose(as_log.equity.to_numpy(), expected)
    no_stamp = backtest(SIMPLE, [0, 1, 1, 0], COSTS, stamp_duty_on_sells=False, log_returns=False)
    assert no_stamp.equity.iloc[-1] == pytest.approx((1 - buy) * 1.02 * 0.99 * (1 - buy))


def test_backtest_short_positions_pay_no_stamp_duty() -> None:
    res = backtest(SIMPLE, [0, -1, -1, 0], COSTS, log_returns=False)
    fee = 0.00025 + 0.0005
    assert res.equity.iloc[-1] == pytest.approx((1 - fee) * 0.98 * 1.01 * (1 - fee))
    # long -> short sells the whole long (stamp duty) and trades 2 units
    flip = backtest(SIMPLE, [1, -1, 0, 0], COSTS, log_returns=False)
    np.testing.assert_allclose(flip.costs.to_numpy(), [fee, 2 * fee + 0.0005, fee, 0.0])


def test_baselines_and_positions() -> None:
    fee = 0.00075
    bh = buy_and_hold(SIMPLE, COSTS, log_returns=False)
    np.testing.assert_allclose(bh.equity.to_numpy(), (1 - fee) * np.cumprod(1 + SIMPLE.to_numpy()))
    naive = naive_zero(SIMPLE, COSTS, log_returns=False)
    assert (naive.equity == 1.0).all() and naive.sharpe == 0.0 and naive.n_trades == 0
    assert positions_from_predictions(pd.Series([0.1, 0.0, -0.2]), "regression").tolist() == [1, 0, 0]
    assert positions_from_predictions([0.1, 0.0, -0.2], "regression", "long_short").tolist() == [1, 0, -1]
    assert positions_from_predictions([0.6, 0.5, 0.4], "classification").tolist() == [1, 0, 0]
    assert positions_from_predictions([0.6, 0.5, 0.4], "classification", "long_short").tolist() == [1, 0, -1]
    assert positions_from_predictions([0.03, 0.01], "regression", threshold=0.02).tolist() == [1, 0]


def test_backtest_combines_symbols_equal_weight_on_the_date_calendar() -> None:
    d = pd.Timestamp("2021-03-01", tz="UTC")
    # CSI 300 closes 07:00 UTC, S&P 500 21:00 UTC; the S&P has a holiday on day 2
    frame = pd.DataFrame(
        {
            "symbol": ["000300.SH"] * 3 + ["^GSPC"] * 2,
            "time": [d + pd.Timedelta(hours=7 + 24 * i) for i in range(3)]
            + [d + pd.Timedelta(hours=21), d + pd.Timedelta(hours=21 + 48)],
            "r": [0.01, 0.02, -0.01, 0.03, 0.01],
            "pos": [1, 0, 0, 1, 1],
        }
    )
    res = backtest(
        frame["r"], frame["pos"], COSTS, 252, stamp_duty_applies,
        symbol=frame["symbol"], time=frame["time"], log_returns=False,
    )  # fmt: skip
    fee, stamp = 0.00075, 0.0005
    cn = [(1 - fee) * 1.01 - 1, -(fee + stamp), 0.0]
    us = [(1 - fee) * 1.03 - 1, 0.0, 0.01]  # no bar on day 2: 0 that date
    np.testing.assert_allclose(res.returns.to_numpy(), (np.array(cn) + np.array(us)) / 2)
    assert res.n_trades == 3
    assert res.periods_per_year == pytest.approx(252 * 3 / 2.5)
    assert set(res.per_symbol) == {"000300.SH", "^GSPC"}
    assert stamp_duty_applies("600036.SH") and not stamp_duty_applies("^GSPC")


def test_backtest_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="length"):
        backtest(SIMPLE, [1, 0], COSTS)
    with pytest.raises(ValueError, match="finite"):
        backtest(pd.Series([0.01, np.nan]), [1, 0], COSTS)
    with pytest.raises(ValueError, match="time"):
        backtest(SIMPLE, [1, 1, 1, 1], COSTS, symbol=pd.Series(["A"] * 4))


# ------------------------------------------------------------------------------------------- walk-forward


@pytest.mark.parametrize("horizon", [1, 5])
def test_splits_are_purged_contiguous_and_expanding(horizon: int) -> None:
    ds = real_dataset(horizon=horizon)
    folds = walk_forward_splits(ds.event_time, ds.label_time, 3, 3.0, 5.0)
    ev, lab = ds.event_time.reset_index(drop=True), ds.label_time.reset_index(drop=True)
    assert len(folds) == 3
    all_test = np.concatenate([f.test_idx for f in folds])
    assert len(np.unique(all_test)) == len(all_test)  # non-overlapping
    # contiguous: together the blocks are exactly the rows from the first test start on
    assert set(all_test) == set(np.flatnonzero((ev >= folds[0].test_start).to_numpy()))
    for k, fold in enumerate(folds):
        assert ev.iloc[fold.test_idx].min() == fold.test_start
        assert (lab.iloc[fold.train_idx] < fold.test_start).all()  # no training label reaches the test
        assert ev.iloc[fold.train_idx].min() == ev.min()  # expanding from the first row
        # the purge drops exactly `horizon` rows per symbol before the block
        before = ds.X["symbol"][(ev < fold.test_start).to_numpy()].value_counts()
        kept = ds.X["symbol"].iloc[fold.train_idx].value_counts()
        assert (before - kept).eq(horizon).all()
        if k:
            prev = folds[k - 1]
            assert prev.test_end < fold.test_start
            assert set(prev.train_idx) < set(fold.train_idx)
    first_history = (folds[0].test_start - ev.min()) / pd.Timedelta(days=365.25)
    assert first_history >= 5.0
    # without the purge the last training labels fall inside the test block
    loose = walk_forward_splits(ds.event_time, ds.label_time, 3, 3.0, 5.0, purge=False)
    assert (lab.iloc[loose[0].train_idx] >= loose[0].test_start).sum() == 2 * horizon


def test_splits_refuse_too_little_history_or_too_many_folds() -> None:
    ds = real_dataset()
    with pytest.raises(ValueError, match="min_train_years=5"):
        walk_forward_splits(ds.event_time, ds.label_time, 5, 5.0, 5.0)  # 8.7 years < 5 + 5
    with pytest.raises(ValueError, match="no rows"):
        walk_forward_splits(ds.event_time, ds.label_time, 2000, 1.0, 5.0)


def test_evaluate_regression_structure_and_only_test_rows(regression_result: WalkForwardResult) -> None:
    res, ds = regression_result, real_dataset()
    folds = walk_forward_splits(ds.event_time, ds.label_time, 3, 3.0, 5.0)
    assert len(res.folds) == 3 and [f["fold"] for f in res.folds] == [0, 1, 2]
    keys = (
        "oos_r2", "ic", "rank_ic", "hit_rate", "mae", "sharpe", "ann_return", "max_drawdown",
        "turnover", "dm_stat", "dm_pvalue", "bh_sharpe", "ls_sharpe", "naive_sharpe", "n_folds",
    )  # fmt: skip
    for key in keys:
        assert isinstance(res.overall[key], float), key
    assert res.overall["n_folds"] == 3.0 and res.overall["naive_sharpe"] == 0.0
    assert 0.0 <= res.overall["dm_pvalue"] <= 1.0
    assert list(res.predictions.columns[:5]) == ["symbol", "event_time", "y", "pred", "fold"]
    test_rows = np.concatenate([f.test_idx for f in folds])
    assert len(res.predictions) == len(test_rows) == res.overall["n_test"]
    expected_keys = set(zip(ds.X["symbol"].iloc[test_rows], ds.event_time.iloc[test_rows], strict=True))
    got_keys = set(zip(res.predictions["symbol"], res.predictions["event_time"], strict=True))
    assert got_keys == expected_keys  # predictions on test rows only, each once
    assert res.predictions["event_time"].min() == folds[0].test_start
    np.testing.assert_allclose(res.predictions["y"], ds.y_return.iloc[test_rows])
    assert list(res.equity.columns) == ["strategy", "long_short", "buy_and_hold", "naive"]
    # an honest linear model on daily returns: small IC, R² near zero (raw forecasts)
    assert abs(res.overall["raw_ic"]) < 0.2 and res.overall["raw_oos_r2"] < 0.05
    # calibrated fold by fold: fold 0 gets the zero forecast, later folds slope x raw (slope >= 0)
    preds = res.predictions
    assert (preds.loc[preds["fold"] == 0, "pred"] == 0.0).all()
    for _, fold in preds[preds["fold"] > 0].groupby("fold"):
        ratio = fold["pred"] / fold["pred_raw"]
        assert ratio.min() >= 0.0 and np.allclose(ratio, ratio.iloc[0])
    assert res.calibration is not None and res.calibration.kind in ("slope", "zero")


def test_evaluate_classification_metrics() -> None:
    res = evaluate(lambda: LinearForecaster("classification"), real_dataset(), "classification", PARAMS)
    for key in ("hit_rate", "accuracy", "auc", "log_loss", "brier", "ic", "rank_ic", "dm_pvalue", "sharpe"):
        assert math.isfinite(res.overall[key]), key
    assert res.predictions["pred"].between(0, 1).all()
    assert set(res.predictions["y"].unique()) <= {0, 1}
    assert res.overall["naive_brier"] == pytest.approx(0.25)


def test_evaluate_gives_sequential_models_earlier_rows_as_context() -> None:
    TrailingMean.seen.clear()
    ds = real_dataset()
    res = evaluate(lambda: TrailingMean("regression"), ds, "regression", PARAMS, calibrate=False)
    assert len(TrailingMean.seen) == 3
    folds = walk_forward_splits(ds.event_time, ds.label_time, 3, 3.0, 5.0)
    for X, fold in zip(TrailingMean.seen, folds, strict=True):
        assert len(X) > fold.test_idx.size  # context rows came along
    # the first test row of each symbol got a real 5-row window, not the zero fill
    first = res.predictions.groupby("symbol").head(1)
    assert (first["pred"] != 0.0).all()
    assert len(res.predictions) == sum(f.test_idx.size for f in folds)


def test_evaluate_rejects_a_model_for_the_wrong_task() -> None:
    with pytest.raises(ValueError, match="classification model"):
        evaluate(lambda: LinearForecaster("classification"), real_dataset(), "regression", PARAMS)


# ------------------------------------------------------------------------------------------------ leakage


def test_honest_real_dataset_passes_both_checks(regression_result: WalkForwardResult) -> None:
    ds = real_dataset()
    for task in ("regression", "classification"):
        scores = check_feature_leakage(ds, task, test_years=PARAMS.test_years)
        assert scores.max() < 0.15  # measured ≈ 0.09: a margin of 3x below the 0.3 threshold
        assert check_feature_leakage(ds, task) is not None  # the default test_years (5) too
    check_model_leakage(regression_result)


def test_leaked_future_return_is_caught_before_and_after_training() -> None:
    ds = real_dataset()
    leaked = _with_feature(ds, "future_return", ds.y_return)
    with pytest.raises(LeakageSuspected, match="future_return") as caught:
        check_feature_leakage(leaked, "regression")
    assert set(caught.value.suspects) == {"future_return"}
    assert isinstance(caught.value, FinstreamError)
    with pytest.raises(LeakageSuspected, match="future_return"):
        check_feature_leakage(leaked, "classification")
    result = evaluate(lambda: LinearForecaster("regression"), leaked, "regression", PARAMS)
    assert result.overall["raw_ic"] > 0.9
    with pytest.raises(LeakageSuspected, match="ic") as model_caught:
        check_model_leakage(result)
    assert "ic" in model_caught.value.suspects


def test_partial_leak_in_one_symbol_is_not_diluted() -> None:
    ds = real_dataset()
    is_spx = (ds.X["symbol"] == "^GSPC").to_numpy()
    honest = ds.X["logret_1"].to_numpy()
    leak = pd.Series(np.where(is_spx, ds.y_return.to_numpy(), honest))
    scores = feature_target_correlations(_with_feature(ds, "half_leak", leak), "regression")
    assert scores.index[0] == "half_leak" and scores.iloc[0] > 0.9


# -------------------------------------------------------------------------------------------------- plots


def test_plots_write_pngs(regression_result: WalkForwardResult, tmp_path: Path) -> None:
    png = b"\x89PNG"
    paths = [
        equity_plot(regression_result.equity, tmp_path / "equity.png"),
        prediction_plot(regression_result.predictions, "regression", tmp_path / "scatter.png"),
        feature_importance_plot(pd.Series({"a": 0.5, "b": -0.2, "c": 0.1}), tmp_path / "imp.png"),
    ]
    calib = regression_result.predictions.assign(
        y=(regression_result.predictions["y"] > 0).astype(int),
        pred=1 / (1 + np.exp(-200 * regression_result.predictions["pred"])),
    )
    paths.append(prediction_plot(calib, "classification", tmp_path / "calibration.png"))
    paths += evaluation_plots(regression_result, tmp_path / "all", pd.Series({"x": 1.0}))
    assert len(paths) == 7
    for path in paths:
        assert path.read_bytes()[:4] == png


class ConstantBull(Forecaster):
    """Always forecasts +2% a day: far worse than the zero forecast on squared error."""

    family = "test_constant"

    def fit(self, X: pd.DataFrame, y: pd.Series) -> Self:
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.full(len(X), 0.02)

    def save(self, path: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path) -> Self:
        raise NotImplementedError


def test_dm_pvalue_is_one_sided_so_a_worse_model_never_passes_the_gate() -> None:
    result = evaluate(
        lambda: ConstantBull("regression"), real_dataset(), "regression", PARAMS, calibrate=False
    )
    assert result.overall["dm_stat"] > 5  # the model's loss is much larger
    assert result.overall["dm_pvalue"] > 0.99
