"""Walk-forward variance forecasts (training.volatility) on real packaged history (CSI 300 and S&P 500,
2010-2018, two folds over the last two years): the baselines against direct computations (arch, numpy lstsq,
rolling means), no look-ahead (a return planted in the test block changes no forecast made before it), the
losses and DM test by hand, the leaderboard, the Garman–Klass proxy, and `finstream risk volatility`."""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from arch import arch_model
from tests_support import isolate_env
from typer.testing import CliRunner

from finstream.cli.main import app
from finstream.config import Settings, TrainParams
from finstream.data_stages import ingest_stage, validate_stage
from finstream.feature_table import build_features
from finstream.storage import BarTable
from training.dataset import Dataset, dataset_from_frames
from training.metrics import dm_test
from training.volatility import (
    BASELINES,
    TABLE_COLUMNS,
    VolatilityLeaderboard,
    evaluate_volatility,
    fit_volatility_model,
    qlike,
    squared_error,
)
from training.walk_forward import walk_forward_splits

runner = CliRunner()
SYMBOLS = ["000300.SH", "^GSPC"]
PARAMS = TrainParams(symbols=SYMBOLS, folds=2, test_years=2.0, min_train_years=4.0)
FAMILIES = ["ridge", "xgboost"]
#: a small, single-threaded xgboost keeps the file fast on a busy 2-core machine
OVERRIDES = {"xgboost": {"n_estimators": 100, "fit_jobs": 1}}


@pytest.fixture(scope="module")
def vol_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FINSTREAM_HOME with the validated daily bars of CSI 300 and S&P 500, 2010-2018 (built once)."""
    root = tmp_path_factory.mktemp("volatility")
    with pytest.MonkeyPatch.context() as mp:
        isolate_env(mp, root)
        settings = Settings()
        ingest_stage(settings, ",".join(SYMBOLS), "packaged", date(2010, 1, 1), date(2018, 12, 31))
        validate_stage(settings)
    return root


@pytest.fixture(scope="module")
def bars(vol_root: Path) -> pd.DataFrame:
    return BarTable(vol_root / "home" / "data" / "validated" / "bars").read(intervals=["1d"])


@pytest.fixture(scope="module")
def dataset(bars: pd.DataFrame) -> Dataset:
    return dataset_from_frames(build_features(bars), bars, 1)


@pytest.fixture(scope="module")
def board(dataset: Dataset, bars: pd.DataFrame) -> VolatilityLeaderboard:
    return evaluate_volatility(dataset, bars, PARAMS, FAMILIES, family_overrides=OVERRIDES)


def pct_returns(bars: pd.DataFrame, symbol: str) -> pd.Series:
    """100 · log return of close per bar time (the first bar dropped)."""
    b = bars[bars["symbol"] == symbol].sort_values("ts")
    r = 100.0 * np.log(b["close"]).diff()
    return pd.Series(r.to_numpy(), index=pd.DatetimeIndex(b["ts"])).iloc[1:]


def symbol_fold_rows(dataset: Dataset, fold_index: int, symbol: str) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, test rows) of `symbol` in fold `fold_index` (positions in the dataset)."""
    fold = walk_forward_splits(
        dataset.event_time, dataset.label_time, PARAMS.folds, PARAMS.test_years, PARAMS.min_train_years
    )[fold_index]
    is_sym = dataset.X["symbol"].to_numpy() == symbol
    return fold.train_idx[is_sym[fold.train_idx]], fold.test_idx[is_sym[fold.test_idx]]


def board_rows(board: VolatilityLeaderboard, symbol: str, times: pd.Series) -> pd.DataFrame:
    """The forecast rows of `symbol` at event times `times`, in that order."""
    f = board.forecasts[board.forecasts["symbol"] == symbol].set_index("event_time")
    return f.loc[pd.DatetimeIndex(pd.to_datetime(times, utc=True))]


@pytest.mark.parametrize(("model", "o"), [("garch", 0), ("gjr_garch", 1)])
@pytest.mark.parametrize("fold_index", [0, 1])
def test_garch_forecasts_equal_a_direct_arch_call(
    board: VolatilityLeaderboard, dataset: Dataset, bars: pd.DataFrame, model: str, o: int, fold_index: int
) -> None:
    train, test = symbol_fold_rows(dataset, fold_index, "^GSPC")
    r = pct_returns(bars, "^GSPC")
    first_target = pd.Timestamp(dataset.label_time.iloc[train[0]])
    last_origin = pd.Timestamp(dataset.event_time.iloc[test[-1]])
    series = r.loc[first_target:last_origin]
    # the training window: the returns that are the training rows' targets
    train_returns = series.to_numpy()[: train.size]
    np.testing.assert_allclose(train_returns, 100.0 * dataset.y_return.iloc[train], rtol=1e-9)
    assert series.index[train.size - 1] == pd.Timestamp(dataset.label_time.iloc[train[-1]])
    spec = {"mean": "Zero", "vol": "GARCH", "p": 1, "o": o, "q": 1, "rescale": False}
    res = arch_model(train_returns, **spec).fit(disp="off", show_warning=False)
    picks = test[[0, 1, test.size // 2, test.size - 1]]
    origins = series.index.get_indexer(pd.DatetimeIndex(dataset.event_time.iloc[picks]))
    fc = arch_model(series.to_numpy(), **spec).fix(res.params).forecast(start=0, horizon=1, reindex=False)
    expected = fc.variance["h.1"].to_numpy()[origins]
    got = board_rows(board, "^GSPC", dataset.event_time.iloc[picks])[model].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_a_return_planted_in_the_test_block_changes_no_earlier_forecast(
    board: VolatilityLeaderboard, dataset: Dataset, bars: pd.DataFrame
) -> None:
    """A 20 % crash at test bar j: every forecast for bars up to and including j (made at j - 1 or before)
    is unchanged, features rebuilt from the planted bars; the forecasts for bar j + 1 (made at j) see it.
    A fall, so that GJR-GARCH (whose alpha may be 0: only falls move it) reacts too."""
    _, test = symbol_fold_rows(dataset, 1, "^GSPC")
    t_j = pd.Timestamp(dataset.event_time.iloc[test[test.size // 2]])
    planted = bars.copy()
    hit = (planted["symbol"] == "^GSPC") & (planted["ts"] >= t_j)
    for col in ("open", "high", "low", "close"):
        planted.loc[hit, col] *= 0.8
    planted_set = dataset_from_frames(build_features(planted), planted, 1)
    after = evaluate_volatility(planted_set, planted, PARAMS, ["ridge"])
    before = board.forecasts
    models = [*BASELINES, "ridge"]
    assert len(after.forecasts) == len(before)
    earlier = (before["event_time"] < t_j).to_numpy()
    assert earlier.sum() > 0 and (before.loc[earlier, "fold"] == 1).any()
    for m in models:
        np.testing.assert_allclose(after.forecasts.loc[earlier, m], before.loc[earlier, m], rtol=1e-12)
    # the target of the row at j - 1 is the planted return, and the forecasts made at j react to it
    sym = (before["symbol"] == "^GSPC").to_numpy()
    at_j = np.flatnonzero(sym & (before["event_time"] == t_j).to_numpy())[0]
    assert after.forecasts["y"].iloc[at_j - 1] > 100 * before["y"].iloc[at_j - 1]
    assert after.forecasts["y"].iloc[at_j - 1] == pytest.approx((100 * math.log(0.8)) ** 2, rel=0.2)
    for m in ("garch", "gjr_garch", "har", "rolling_20"):
        assert after.forecasts[m].iloc[at_j] > 2 * before[m].iloc[at_j]


def test_qlike_and_mse_equal_hand_computations(board: VolatilityLeaderboard) -> None:
    np.testing.assert_allclose(
        qlike([0.0, 1.0, 4.0], [1.0, 2.0, 2.0]), [0.0, math.log(2) + 0.5, math.log(2) + 2]
    )
    np.testing.assert_allclose(squared_error([0.0, 1.0, 4.0], [1.0, 2.0, 2.0]), [1.0, 1.0, 4.0])
    with pytest.raises(ValueError, match="positive"):
        qlike([1.0], [0.0])
    for scope in ("pooled", "^GSPC"):
        rows = board.forecasts if scope == "pooled" else board.forecasts[board.forecasts["symbol"] == scope]
        for model in ("har", "ridge"):
            y, f = rows["y"].tolist(), rows[model].tolist()
            q = sum(math.log(fi) + yi / fi for yi, fi in zip(y, f, strict=True)) / len(y)
            mse = sum((yi - fi) ** 2 for yi, fi in zip(y, f, strict=True)) / len(y)
            row = board.table[(board.table["scope"] == scope) & (board.table["model"] == model)].iloc[0]
            assert row["qlike"] == pytest.approx(q, rel=1e-10)
            assert row["mse"] == pytest.approx(mse, rel=1e-10)
            assert row["mz_r2"] == pytest.approx(np.corrcoef(y, f)[0, 1] ** 2, rel=1e-8)
            assert row["n"] == len(y)


def test_dm_statistic_is_dm_test_of_qlike_against_the_best_baseline(board: VolatilityLeaderboard) -> None:
    table = board.table
    for scope in ("pooled", "000300.SH", "^GSPC"):
        rows = board.forecasts if scope == "pooled" else board.forecasts[board.forecasts["symbol"] == scope]
        part = table[table["scope"] == scope]
        best = part["best_baseline"].iloc[0]
        assert best == part[part["kind"] == "baseline"].sort_values("qlike")["model"].iloc[0]
        y = rows["y"].to_numpy()
        d = pd.Series(qlike(y, rows["ridge"]) - qlike(y, rows[best]))
        daily = d.groupby(pd.to_datetime(rows["event_time"], utc=True).dt.normalize().to_numpy()).mean()
        stat, p = dm_test(daily.to_numpy(), 1, alternative="less")
        ridge = part[part["model"] == "ridge"].iloc[0]
        assert (ridge["dm_stat"], ridge["dm_pvalue"]) == pytest.approx((stat, p), rel=1e-10)
        best_q = part.loc[part["model"] == best, "qlike"].iloc[0]
        assert ridge["beats_best_baseline"] == (p <= board.max_dm_pvalue and ridge["qlike"] < best_q)


def test_har_equals_numpy_lstsq_on_the_same_regressors(
    board: VolatilityLeaderboard, dataset: Dataset, bars: pd.DataFrame
) -> None:
    rv = pct_returns(bars, "^GSPC") ** 2
    times = rv.index

    def design(t: pd.Timestamp) -> list[float]:
        i = times.get_loc(t)
        return [1.0, rv.iloc[i], rv.iloc[i - 4 : i + 1].mean(), rv.iloc[i - 21 : i + 1].mean()]

    for fold_index in (0, 1):
        train, test = symbol_fold_rows(dataset, fold_index, "^GSPC")
        A = np.array([design(pd.Timestamp(t)) for t in dataset.event_time.iloc[train]])
        y = rv.loc[pd.DatetimeIndex(dataset.label_time.iloc[train])].to_numpy()
        beta, *_ = np.linalg.lstsq(A, y, rcond=None)
        B = np.array([design(pd.Timestamp(t)) for t in dataset.event_time.iloc[test]])
        got = board_rows(board, "^GSPC", dataset.event_time.iloc[test])["har"].to_numpy()
        np.testing.assert_allclose(got, B @ beta, rtol=1e-8)


def test_rolling_baseline_is_the_mean_of_the_last_20_squared_returns(
    board: VolatilityLeaderboard, dataset: Dataset, bars: pd.DataFrame
) -> None:
    r = pct_returns(bars, "000300.SH")
    _, test = symbol_fold_rows(dataset, 0, "000300.SH")
    picks = dataset.event_time.iloc[test[[0, 7, test.size - 1]]]
    expected = [float((r.loc[:t].iloc[-20:] ** 2).mean()) for t in pd.DatetimeIndex(picks)]
    got = board_rows(board, "000300.SH", picks)["rolling_20"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_leaderboard_lists_every_baseline_and_family_with_finite_numbers(
    board: VolatilityLeaderboard, dataset: Dataset
) -> None:
    table = board.table
    assert list(table.columns) == TABLE_COLUMNS
    assert list(table["scope"].unique()) == ["pooled", "000300.SH", "^GSPC"]
    models = {*BASELINES, *FAMILIES}
    n_test = sum(
        f.test_idx.size
        for f in walk_forward_splits(
            dataset.event_time, dataset.label_time, PARAMS.folds, PARAMS.test_years, PARAMS.min_train_years
        )
    )
    assert len(board.forecasts) == n_test
    for scope, part in table.groupby("scope"):
        assert set(part["model"]) == models and len(part) == len(models)
        assert part["qlike"].is_monotonic_increasing
        for col in ("qlike", "mse", "mz_r2", "mz_slope"):
            assert np.isfinite(part[col]).all(), (scope, col)
        best = part["best_baseline"].iloc[0]
        assert best in BASELINES and (part["best_baseline"] == best).all()
        others = part[part["model"] != best]
        assert np.isfinite(others["dm_stat"]).all() and others["dm_pvalue"].between(0, 1).all()
        assert part.loc[part["model"] == best, "dm_pvalue"].isna().all()
        best_q = part.loc[part["model"] == best, "qlike"].iloc[0]
        verdict = (others["dm_pvalue"] <= board.max_dm_pvalue) & (others["qlike"] < best_q)
        assert (others["beats_best_baseline"] == verdict).all()
    assert (board.forecasts[list(models)] > 0).all().all()
    assert (board.forecasts.groupby("symbol").size() > 400).all()
    md = board.to_markdown()
    assert "## pooled" in md and "## ^GSPC" in md and "| xgboost |" in md
    json.dumps(board.to_dict(), allow_nan=False, default=str)


def test_garman_klass_proxy(dataset: Dataset, bars: pd.DataFrame) -> None:
    gk_board = evaluate_volatility(dataset, bars, PARAMS, families=[], proxy="gk")
    b = bars[bars["symbol"] == "^GSPC"].sort_values("ts").set_index("ts")
    row = gk_board.forecasts[gk_board.forecasts["symbol"] == "^GSPC"].iloc[10]
    nxt = b.iloc[b.index.get_loc(row["event_time"]) + 1]
    hand = (
        0.5 * math.log(nxt["high"] / nxt["low"]) ** 2
        - (2 * math.log(2) - 1) * math.log(nxt["close"] / nxt["open"]) ** 2
    )
    assert row["y"] == pytest.approx(1e4 * hand, rel=1e-12)
    assert row["r_next"] == pytest.approx(100 * math.log(nxt["close"] / b.loc[row["event_time"], "close"]))
    assert (gk_board.forecasts["y"] >= 0).all()
    assert set(gk_board.table["model"]) == set(BASELINES)
    assert np.isfinite(gk_board.table[["qlike", "mse", "mz_r2"]]).all().all()
    assert any("overnight" in n for n in gk_board.notes)
    with pytest.raises(ValueError, match="proxy"):
        evaluate_volatility(dataset, bars, PARAMS, families=[], proxy="parkinson")  # type: ignore[arg-type]


def test_cli_without_the_pipeline_gives_one_error_line(settings: Settings) -> None:
    result = runner.invoke(app, ["risk", "volatility"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "error:" in text and "finstream pipeline" in text
    assert "Traceback" not in result.output
    bad = runner.invoke(app, ["risk", "volatility", "--proxy", "parkinson"])
    assert bad.exit_code == 2
    bad = runner.invoke(app, ["risk", "volatility", "--families", "nope"])
    assert bad.exit_code == 2 and "unknown model family" in " ".join(bad.output.split())


def test_cli_prints_and_writes_the_leaderboard(
    vol_root: Path, dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command on the module's validated bars, with the Feast training set replaced by the same rows."""
    isolate_env(
        monkeypatch,
        vol_root,
        FINSTREAM_TRAIN__FOLDS="2",
        FINSTREAM_TRAIN__TEST_YEARS="2",
        FINSTREAM_TRAIN__MIN_TRAIN_YEARS="4",
    )
    monkeypatch.setattr(
        "training.store_dataset.load_training_set", lambda s, symbols=None: (dataset, "f" * 32)
    )
    result = runner.invoke(app, ["risk", "volatility", "--families", "ridge", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["proxy"] == "sq" and payload["candidates"] == ["ridge"]
    assert {r["model"] for r in payload["leaderboard"]} == {*BASELINES, "ridge"}
    assert len(payload["folds"]) == 2
    md = Path(payload["files"]["markdown"])
    assert md == vol_root / "home" / "reports" / "volatility.md" and "## pooled" in md.read_text()
    shown = runner.invoke(app, ["risk", "volatility", "-f", "ridge", "--proxy", "gk"])
    assert shown.exit_code == 0, shown.output
    assert "pooled" in shown.output and "rolling_20" in shown.output and "best baseline" in shown.output


# ------------------------------------------------------------------------------ the served model


def rows_of(dataset: Dataset, idx: np.ndarray) -> Dataset:
    """The dataset restricted to rows `idx`."""

    def take(s: pd.Series) -> pd.Series:
        return s.iloc[idx].reset_index(drop=True)

    return Dataset(
        dataset.X.iloc[idx].reset_index(drop=True),
        take(dataset.y_return),
        take(dataset.y_direction),
        take(dataset.event_time),
        take(dataset.label_time),
        dataset.horizon,
    )


@pytest.mark.parametrize("method", [*BASELINES, "ridge"])
def test_the_served_model_fitted_on_a_folds_rows_gives_the_evaluated_forecasts(
    board: VolatilityLeaderboard, dataset: Dataset, bars: pd.DataFrame, method: str
) -> None:
    """fit_volatility_model on fold 1's training rows, then VolatilityModel.variance_path over the bars (the
    served path: filters and HAR from the bars alone, ridge from the feature rows) reproduces the
    walk-forward forecasts of that fold's test rows, for both symbols: what is served is what was judged."""
    from finstream.models.inputs import with_symbol_columns

    fold = walk_forward_splits(
        dataset.event_time, dataset.label_time, PARAMS.folds, PARAMS.test_years, PARAMS.min_train_years
    )[1]
    model = fit_volatility_model(method, rows_of(dataset, fold.train_idx), bars, PARAMS)
    assert model.kind == ("candidate" if method == "ridge" else "baseline")
    X = with_symbol_columns(dataset.X)
    for symbol in SYMBOLS:
        train, test = symbol_fold_rows(dataset, 1, symbol)
        b = bars[bars["symbol"] == symbol].sort_values("ts").reset_index(drop=True)
        first = b.index[b["ts"] == dataset.event_time.iloc[train[0]]][0]  # the bar before the first target
        last = b.index[b["ts"] == dataset.event_time.iloc[test[-1]]][0]
        window = b.iloc[first : last + 1].reset_index(drop=True)
        features = None
        if model.needs_features:
            rows = X.iloc[np.concatenate([train, test])]
            features = pd.DataFrame(
                rows[model.feature_names].to_numpy(),
                index=pd.DatetimeIndex(dataset.event_time.iloc[np.concatenate([train, test])]),
                columns=model.feature_names,
            ).reindex(pd.DatetimeIndex(window["ts"]))
        path = model.variance_path(symbol, window, features)
        at = pd.DatetimeIndex(window["ts"]).get_indexer(pd.DatetimeIndex(dataset.event_time.iloc[test]))
        expected = board_rows(board, symbol, dataset.event_time.iloc[test])[method].to_numpy()
        np.testing.assert_allclose(path[at], expected, rtol=1e-9)


def test_garch_path_is_archs_filter_on_any_window(bars: pd.DataFrame) -> None:
    """The served GJR filter on the last 600 bars equals arch's fixed-parameter forecast on them."""
    from finstream.models.volatility import garch_path

    r = pct_returns(bars, "000300.SH").to_numpy()[-600:]
    spec = {"mean": "Zero", "vol": "GARCH", "p": 1, "o": 1, "q": 1, "rescale": False}
    res = arch_model(r[:400], **spec).fit(disp="off", show_warning=False)
    coef = {k: float(res.params[f"{k}[1]"]) for k in ("alpha", "gamma", "beta")}
    coef["omega"] = float(res.params["omega"])
    expected = arch_model(r, **spec).fix(res.params).forecast(start=0, horizon=1, reindex=False)
    np.testing.assert_allclose(garch_path(r, coef), expected.variance["h.1"].to_numpy(), rtol=1e-10)


def test_volatility_model_round_trips_through_mlflow_pyfunc(
    dataset: Dataset, bars: pd.DataFrame, tmp_path: Path
) -> None:
    """log_volatility_model → mlflow.pyfunc.load_model: the loaded model predicts what the fitted one does
    (bars of two symbols in one frame, one forecast per bar), and unwraps to the same VolatilityModel."""
    import mlflow

    from finstream.models.pyfunc import log_volatility_model, unwrap_volatility_model

    model = fit_volatility_model("gjr_garch", dataset, bars, PARAMS)
    frame = (
        bars.sort_values(["symbol", "ts"])
        .groupby("symbol")
        .tail(300)[["symbol", "open", "high", "low", "close"]]
    ).reset_index(drop=True)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("vol-roundtrip")
    with mlflow.start_run():
        info = log_volatility_model(model, frame)
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    got = np.asarray(loaded.predict(frame))
    for symbol in SYMBOLS:
        rows = (frame["symbol"] == symbol).to_numpy()
        np.testing.assert_allclose(got[rows], model.variance_path(symbol, frame[rows]), rtol=1e-12)
    inner = unwrap_volatility_model(loaded)
    assert inner.method == "gjr_garch" and inner.kind == "baseline" and inner.symbols == model.symbols
    with pytest.raises(KeyError, match=r"fitted on 000300.SH, \^GSPC, not \^IXIC"):
        model.variance_path("^IXIC", frame)


def test_var_backtests_of_the_forecasts_count_exceedances_by_hand(board: VolatilityLeaderboard) -> None:
    """Each model's forecast as a normal VaR: exceedances counted by hand (loss beyond z·σ), Kupiec's and
    Christoffersen's p-values from the risk module's tests on those very hits."""
    from scipy.stats import norm

    from finstream.risk.backtests import christoffersen_independence, kupiec_pof

    table = board.var_backtests
    assert set(table["model"]) == set(board.models) and set(table["level"]) == {0.95, 0.99}
    f = board.forecasts[board.forecasts["symbol"] == "^GSPC"]
    loss = 1.0 - np.exp(f["r_next"].to_numpy() / 100.0)
    var = np.sqrt(f["gjr_garch"].to_numpy()) / 100.0 * norm.ppf(0.99)
    hits = loss > var
    row = table[(table["scope"] == "^GSPC") & (table["model"] == "gjr_garch") & (table["level"] == 0.99)]
    row = row.iloc[0]
    assert row["n"] == len(f) and row["exceedances"] == int(hits.sum())
    assert row["expected"] == pytest.approx(0.01 * len(f))
    assert row["kupiec_pvalue"] == pytest.approx(kupiec_pof(hits, 0.99).pvalue, rel=1e-12)
    assert row["independence_pvalue"] == pytest.approx(christoffersen_independence(hits).pvalue, rel=1e-12)
    assert "## VaR backtests of the forecasts" in board.to_markdown()
