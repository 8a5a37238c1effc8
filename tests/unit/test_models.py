"""The model zoo on real data: every family and task fits, predicts, survives save/load and an MLflow
log -> register -> load round trip; plus the properties each family promises (exact fast paths, stacking on
out-of-fold predictions only, BMA likelihood weights, causal sequence windows)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from fixtures_training import real_dataset
from scipy.stats import norm
from sklearn.metrics import log_loss

from finstream.models.pyfunc import load_forecaster, log_forecaster, pip_requirements, unwrap_forecaster
from finstream.models.zoo import FAMILIES, Forecaster, load_model, make_model
from finstream.models.zoo.ensembles import BMAForecaster
from finstream.models.zoo.rows import SymbolRows
from finstream.models.zoo.tabular import p_up

TRAIN_ROWS = 2500
TASKS = ("regression", "classification")
SEQUENCE = ("lstm", "transformer", "cnn_lstm")
ENSEMBLES = ("voting", "stacking", "bma")
#: one OpenMP thread for fits: on busy shared cores, multi-threaded HGB / XGBoost fits stall 10x or more
HIST_GB = {"max_iter": 40, "fit_jobs": 1}
XGBOOST = {"n_estimators": 60, "fit_jobs": 1}
FAST_MEMBERS = ["ridge", ["hist_gb", HIST_GB], ["xgboost", XGBOOST]]
#: small settings keep this file fast; benchmarks/models.py fits the defaults
FAST: dict[str, dict[str, object]] = {
    "random_forest": {"n_estimators": 40},
    "hist_gb": HIST_GB,
    "xgboost": XGBOOST,
    "svm": {"max_train_rows": 1000},
    **{f: {"epochs": 1, "window": 10, "batch_size": 128} for f in SEQUENCE},
    "voting": {"members": FAST_MEMBERS},
    "stacking": {"members": FAST_MEMBERS, "n_folds": 3},
    "bma": {"members": FAST_MEMBERS},
}
SLOW = {*SEQUENCE, *ENSEMBLES, "svm"}
CASES = [
    pytest.param(f, t, id=f"{f}-{t}", marks=[pytest.mark.slow] if f in SLOW else [])
    for f in FAMILIES
    for t in TASKS
]


def train_test(task: str) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    """The first 2,500 real rows (all of CSI 300's, then S&P 500's earliest) to fit, the rest to predict."""
    ds = real_dataset()
    y = ds.target(task)
    return ds.X.iloc[:TRAIN_ROWS], y.iloc[:TRAIN_ROWS], ds.X.iloc[TRAIN_ROWS:], y.iloc[TRAIN_ROWS:]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch's one-thread-per-core default stalls on busy shared cores (10x slower fits): use one here.

    The library itself keeps torch's choice; the previous setting is restored afterwards.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@cache
def fitted(family: str, task: str) -> Forecaster:
    X, y, _, _ = train_test(task)
    return make_model(family, task, **FAST.get(family, {})).fit(X, y)


def test_registry_knows_every_family() -> None:
    assert set(FAMILIES) == {
        "ridge", "random_forest", "hist_gb", "xgboost", "svm", *SEQUENCE, *ENSEMBLES,
    }  # fmt: skip
    assert all(cls.family == name for name, cls in FAMILIES.items())
    assert {f for f, cls in FAMILIES.items() if cls.sequential} == set(SEQUENCE)


def test_make_model_rejects_unknown_family_task_and_params() -> None:
    with pytest.raises(ValueError, match=r"unknown model family 'arima'.*ridge"):
        make_model("arima", "regression")
    with pytest.raises(ValueError, match=r"unknown task 'ranking'.*regression, classification"):
        make_model("ridge", "ranking")
    with pytest.raises(ValueError, match="ridge does not take \\['depth'\\]"):
        make_model("ridge", "regression", depth=3)
    with pytest.raises(ValueError, match="lstm does not take"):
        make_model("lstm", "classification", hidden_size=8)
    with pytest.raises(ValueError, match="family name or a \\[family, \\{params\\}\\] pair"):
        make_model("voting", "regression", members=[3])
    with pytest.raises(ValueError, match="members must be tabular"):
        make_model("voting", "regression", members=["ridge", "lstm"]).fit(*train_test("regression")[:2])


@pytest.mark.parametrize(("family", "task"), CASES)
def test_fit_predict(family: str, task: str) -> None:
    _, _, X_test, _ = train_test(task)
    model = fitted(family, task)
    pred = model.predict(X_test)
    assert pred.shape == (len(X_test),)
    assert pred.dtype == np.float64
    assert np.isfinite(pred).all()
    assert np.ptp(pred) > 0, "a constant prediction means the model learned nothing from the features"
    assert model.feature_names == real_dataset().feature_names
    if task == "classification":
        assert ((pred >= 0) & (pred <= 1)).all()
    else:
        assert np.abs(pred).max() < 0.2, "a daily log return forecast should be on the scale of the targets"


@pytest.mark.parametrize(("family", "task"), CASES)
def test_save_load_round_trip(family: str, task: str, tmp_path: Path) -> None:
    _, _, X_test, _ = train_test(task)
    model = fitted(family, task)
    model.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert type(loaded) is type(model)
    assert (loaded.task, loaded.feature_names) == (task, model.feature_names)
    np.testing.assert_array_equal(loaded.predict(X_test), model.predict(X_test))
    with pytest.raises(ValueError, match="holds a"):
        FAMILIES["svm" if family != "svm" else "ridge"].load(tmp_path / "model")


@pytest.fixture
def mlflow_experiment(tmp_path: Path) -> Iterator[str]:
    """A SQLite tracking store and file artifacts under tmp_path; the previous tracking URI is restored."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        yield mlflow.create_experiment("model-zoo", artifact_location=(tmp_path / "artifacts").as_uri())
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.mark.slow
def test_mlflow_log_register_load_predicts_identically(mlflow_experiment: str) -> None:
    with mlflow.start_run(experiment_id=mlflow_experiment):
        logged = {}
        for family in FAMILIES:
            for task in TASKS:
                _, _, X_test, _ = train_test(task)
                info = log_forecaster(fitted(family, task), X_test.iloc[:40], name=f"{family}-{task}")
                logged[family, task] = info
    for (family, task), info in logged.items():
        _, _, X_test, _ = train_test(task)
        version = mlflow.register_model(info.model_uri, f"zoo-{family}-{task}")
        assert version.version in (1, "1")
        pyfunc = load_forecaster(f"models:/zoo-{family}-{task}/1")
        assert pyfunc.metadata.get_input_schema().input_names()[0] == "symbol"
        np.testing.assert_allclose(pyfunc.predict(X_test), fitted(family, task).predict(X_test), rtol=1e-6)
        assert type(unwrap_forecaster(pyfunc)) is FAMILIES[family]


def test_pip_requirements_pin_what_the_family_needs(tmp_path: Path) -> None:
    fitted("xgboost", "regression").save(tmp_path / "xgb")
    reqs = pip_requirements(tmp_path / "xgb")
    assert all("==" in r for r in reqs)
    names = {r.split("==")[0] for r in reqs}
    assert {"mlflow", "scikit-learn", "pandas", "numpy"} <= names
    assert names & {"xgboost", "xgboost-cpu"}
    assert "torch" not in names


def test_fast_predict_paths_match_sklearn_including_missing_values() -> None:
    """Folded ridge / logistic maps and the flat tree walkers reproduce sklearn's own predict."""
    _, _, X_test, _ = train_test("regression")
    X_nan = X_test.copy()
    X_nan.iloc[::5, 4] = np.nan
    for family in ("ridge",):
        for task in TASKS:
            model = fitted(family, task)
            A = X_test[model.feature_names].to_numpy()
            expected = model.estimator_.predict(A) if task == "regression" else p_up(model.estimator_, A)
            np.testing.assert_allclose(model.predict(X_test), expected, rtol=1e-10, atol=1e-15)
    for family in ("random_forest", "hist_gb"):
        for task in TASKS:
            model = fitted(family, task)
            for X in (X_test, X_nan):
                A = X[model.feature_names].to_numpy()
                expected = model.estimator_.predict(A) if task == "regression" else p_up(model.estimator_, A)
                np.testing.assert_allclose(model.predict(X), expected, rtol=1e-12, atol=1e-15)


def test_xgboost_predicts_on_one_thread_and_early_stops() -> None:
    X, y, X_test, _ = train_test("regression")
    model = make_model("xgboost", "regression", n_estimators=400, early_stopping_rounds=10, fit_jobs=1).fit(
        X, y
    )
    booster = model.estimator_
    assert booster.num_boosted_rounds() < 400
    assert json.loads(booster.save_config())["learner"]["generic_param"]["nthread"] == "1"
    assert np.isfinite(model.predict(X_test)).all()
    assert model.feature_importance() is not None


def test_svm_fits_on_the_most_recent_rows_only() -> None:
    model = fitted("svm", "regression")
    X, _, _, _ = train_test("regression")
    assert model.estimator_.regressor_[-1].shape_fit_[0] in range(1000, 1003)
    # the same latest share of each symbol: the earliest CSI 300 rows are not used
    rows = SymbolRows.of(X)
    assert rows.recent_mask(1000).sum() == model.estimator_.regressor_[-1].shape_fit_[0]
    assert not rows.recent_mask(1000)[0] and rows.recent_mask(1000)[-1]


def test_symbol_rows_windows_tails_and_blocks_on_a_hand_checked_frame() -> None:
    X = pd.DataFrame({"symbol": ["A", "A", "A", "B", "B"], "f": [1.0, 2.0, 3.0, 4.0, 5.0]})
    rows = SymbolRows.of(X)
    np.testing.assert_array_equal(rows.pos, [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(rows.windows(3), [[0, 0, 0], [0, 0, 1], [0, 1, 2], [3, 3, 3], [3, 3, 4]])
    np.testing.assert_array_equal(rows.tail_mask(0.34), [False, False, True, False, True])
    np.testing.assert_array_equal(rows.blocks(2), [0, 0, 1, 0, 1])


@pytest.mark.slow
def test_stacking_meta_learner_is_fit_on_out_of_fold_predictions_only() -> None:
    model = fitted("stacking", "regression")
    X, y, _, _ = train_test("regression")
    rows = SymbolRows.of(X)
    n_folds = 3
    block = rows.blocks(n_folds + 1)
    # every row after each symbol's first block has exactly one out-of-fold prediction, block 0 has none
    np.testing.assert_array_equal(model.oof_index_, np.flatnonzero(block >= 1))
    np.testing.assert_array_equal(model.oof_fold_, block[block >= 1])
    assert model.oof_predictions_.shape == (len(model.oof_index_), 3)
    assert np.isfinite(model.oof_predictions_).all()
    assert model.meta_[0].n_samples_seen_ == len(model.oof_index_)
    P = model.oof_predictions_[:50]
    np.testing.assert_allclose(model._combine(P), model.meta_.predict(P), rtol=1e-10, atol=1e-15)
    for k in range(1, n_folds + 1):
        train, test = model.fold_train_index_[k], model.oof_index_[model.oof_fold_ == k]
        assert np.intersect1d(train, test).size == 0
        for code in np.unique(rows.codes[test]):
            # the fold's members saw only rows of this symbol from before every row they predicted
            assert (
                rows.pos[train][rows.codes[train] == code].max()
                < rows.pos[test][rows.codes[test] == code].min()
            )
    # the fold-1 predictions are what fresh members fit on fold 1's training rows predict
    train1, test1 = model.fold_train_index_[1], model.oof_index_[model.oof_fold_ == 1]
    members = [make_model(f, "regression", **p).fit(X.iloc[train1], y.iloc[train1]) for f, p in model.specs]
    refit = np.column_stack([m.predict(X.iloc[test1]) for m in members])
    np.testing.assert_allclose(model.oof_predictions_[model.oof_fold_ == 1], refit, rtol=1e-10)


@pytest.mark.slow
def test_voting_and_bma_combine_member_predictions() -> None:
    _, _, X_test, _ = train_test("regression")
    voting, bma = fitted("voting", "regression"), fitted("bma", "regression")
    P = np.column_stack([m.predict(X_test) for m in voting.members_])
    np.testing.assert_allclose(voting.predict(X_test), P.mean(axis=1), rtol=1e-12)
    w = bma.weights_
    assert w.shape == (3,) and (w >= 0).all() and np.isclose(w.sum(), 1.0)
    assert np.argmax(w) == np.argmax(bma.log_likelihood_)
    np.testing.assert_allclose(
        np.log(w / w.max()), bma.log_likelihood_ - bma.log_likelihood_.max(), atol=1e-9
    )
    P_bma = np.column_stack([m.predict(X_test) for m in bma.members_])
    np.testing.assert_allclose(bma.predict(X_test), P_bma @ w, rtol=1e-12)


def test_bma_log_likelihood_is_gaussian_for_returns_and_bernoulli_for_direction() -> None:
    y = real_dataset().y_return.to_numpy()[:200]
    P = np.column_stack([np.zeros(200), y * 0.5, np.full(200, y.mean())])
    sd = np.sqrt(((y[:, None] - P) ** 2).mean(axis=0))
    expected = [norm.logpdf(y, loc=P[:, j], scale=sd[j]).sum() for j in range(3)]
    np.testing.assert_allclose(BMAForecaster.log_likelihood(P, y, "regression"), expected, rtol=1e-10)
    up = (y > 0).astype(float)
    probs = np.column_stack([np.full(200, 0.5), np.clip(0.5 + 20 * y, 0.05, 0.95)])
    expected = [-log_loss(up, probs[:, j], normalize=False) for j in range(2)]
    np.testing.assert_allclose(
        BMAForecaster.log_likelihood(probs, up, "classification"), expected, rtol=1e-10
    )


@pytest.mark.slow
@pytest.mark.parametrize("family", SEQUENCE)
def test_sequence_predictions_are_causal(family: str) -> None:
    ds = real_dataset()
    model = fitted(family, "regression")
    cut = TRAIN_ROWS + 150  # inside the S&P 500 rows
    full = model.predict(ds.X)
    # dropping every row after t leaves predictions up to t unchanged
    np.testing.assert_allclose(model.predict(ds.X.iloc[:cut]), full[:cut], rtol=1e-5, atol=1e-9)
    # so does rewriting later rows; and another symbol's rows never enter a window
    changed = ds.X.copy()
    changed.iloc[cut:, 1:] = changed.iloc[cut:, 1:] * 3.0
    np.testing.assert_allclose(model.predict(changed)[:cut], full[:cut], rtol=1e-5, atol=1e-9)
    only_sp = ds.X[ds.X["symbol"] == "^GSPC"]
    np.testing.assert_allclose(model.predict(only_sp), full[only_sp.index], rtol=1e-5, atol=1e-9)
    assert not np.allclose(model.predict(changed)[cut:], full[cut:]), "later rows must matter to later rows"


@pytest.mark.slow
def test_sequence_training_is_seeded() -> None:
    X, y, X_test, _ = train_test("classification")
    a = make_model("lstm", "classification", epochs=1, window=5).fit(X.iloc[:600], y.iloc[:600])
    b = make_model("lstm", "classification", epochs=1, window=5).fit(X.iloc[:600], y.iloc[:600])
    np.testing.assert_array_equal(a.predict(X_test), b.predict(X_test))
