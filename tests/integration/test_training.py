"""Training end to end on real packaged history: Feast training set → walk-forward → MLflow → registry."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from finstream.cli.main import app
from finstream.config import Settings
from finstream.data_stages import features_stage, ingest_stage, materialize_stage, validate_stage

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = {
    "FINSTREAM_TRAIN__SYMBOLS": '["000300.SH", "^GSPC"]',
    "FINSTREAM_TRAIN__FOLDS": "3",
    "FINSTREAM_TRAIN__TEST_YEARS": "3",
    "FINSTREAM_TRAIN__MIN_TRAIN_YEARS": "4",
    "FINSTREAM_TRAIN__EPOCHS": "1",
    "FINSTREAM_TRAIN__TUNE_SAMPLES": "0",
}


@pytest.fixture
def trained_home(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A FINSTREAM_HOME with CSI 300 and S&P 500 2008-2018 features in the store, and fast training params."""
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    ingest_stage(
        s, "000300.SH,^GSPC", "packaged", pd.Timestamp("2008-01-01").date(), pd.Timestamp("2018-12-31").date()
    )
    validate_stage(s)
    features_stage(s)
    materialize_stage(s)
    return s


def test_train_logs_evaluates_registers_and_gates(trained_home: Settings) -> None:
    from finstream.models.registry import REGISTERED_MODELS
    from finstream.models.tracking import configure_mlflow
    from training.store_dataset import file_md5
    from training.zoo_stages import train

    report = train(
        trained_home, families=["ridge", "xgboost", "lstm"], tasks=["regression", "classification"]
    )
    assert {(c.task, c.family) for c in report.candidates} == {
        (t, f) for t in ("regression", "classification") for f in ("ridge", "xgboost", "lstm")
    }
    assert report.data_version == file_md5(trained_home.paths.features)
    client = configure_mlflow(trained_home)
    for task, name in REGISTERED_MODELS.items():
        decision = report.decisions[task]
        assert decision["version"] == 1
        assert "folds 3" in decision["reason"] and "DM p-value" in decision["reason"]
        version = client.get_model_version(name, "1")
        assert version.tags["data_version"] == report.data_version
        assert version.tags["promotion.decision"] == ("champion" if decision["promote"] else "challenger")
        alias = "champion" if decision["promote"] else "challenger"
        assert int(client.get_model_version_by_alias(name, alias).version) == 1
        model = mlflow.pyfunc.load_model(f"models:/{name}/1")
        assert model.metadata.get_input_schema() is not None
    child = next(c for c in report.candidates if c.family == "xgboost" and c.task == "regression")
    run = client.get_run(child.run_id)
    for metric in (
        "ic",
        "rank_ic",
        "oos_r2",
        "hit_rate",
        "mae",
        "sharpe",
        "max_drawdown",
        "dm_pvalue",
        "n_folds",
    ):
        assert metric in run.data.metrics, metric
    assert run.data.metrics["n_folds"] == 3
    assert {"fold_ic"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(child.run_id, "evaluation")}
    assert {"evaluation/equity.png", "evaluation/pred.png", "evaluation/importance.png"} <= artifacts
    board = report.leaderboard()
    assert set(board["family"]) == {"ridge", "xgboost", "lstm"}

    result = CliRunner().invoke(app, ["report"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    md = (trained_home.paths.reports / "leaderboard.md").read_text()
    assert "xgboost" in md and "oos_r2" in md
    listed = CliRunner().invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "finstream-return" in listed.output


def test_ray_tune_tracks_every_trial_and_never_sees_the_test_period(trained_home: Settings) -> None:
    from finstream.models.tracking import configure_mlflow
    from training.store_dataset import load_training_set
    from training.tune import tune_family, tuning_window

    settings = trained_home.model_copy(
        update={"train": trained_home.train.model_copy(update={"tune_samples": 2, "test_years": 3})}
    )
    dataset, _ = load_training_set(settings)
    window = tuning_window(dataset, settings.train)
    oos_start = dataset.event_time.max() - pd.Timedelta(days=365.25 * settings.train.test_years)
    assert window.label_time.max() < oos_start
    best = tune_family(settings, dataset, "xgboost", "regression")
    assert set(best) == {"max_depth", "learning_rate", "n_estimators", "subsample"}
    configure_mlflow(settings)
    experiment = mlflow.get_experiment_by_name("finstream-tune-regression")
    assert experiment is not None
    runs = mlflow.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    assert runs["metrics.ic"].notna().all()


def test_retrain_flow_runs_data_and_training(trained_home: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from flows.training import retrain_flow

    monkeypatch.setenv("FINSTREAM_INGEST__SYMBOLS", '["000300.SH", "^GSPC"]')
    monkeypatch.setenv("FINSTREAM_INGEST__SOURCE", "packaged")
    monkeypatch.setenv("FINSTREAM_INGEST__START", "2008-01-01")
    monkeypatch.setenv("FINSTREAM_INGEST__END", "2018-12-31")
    monkeypatch.setenv("FINSTREAM_TRAIN__PER_SYMBOL", "true")
    with prefect_test_harness(server_startup_timeout=120):
        report = retrain_flow(families=["ridge"], tasks=["regression"])
    assert report.decisions["regression"]["family"] == "ridge"
    assert {c.scope for c in report.candidates} == {"pooled", "000300.SH", "^GSPC"}
    pooled = next(c for c in report.candidates if c.scope == "pooled")
    alone = next(c for c in report.candidates if c.scope == "^GSPC")
    assert pooled.metrics["n_test"] > alone.metrics["n_test"]
    assert Path(trained_home.paths.reports / "leaderboard.md").is_file()
    assert os.environ["FINSTREAM_HOME"] == str(trained_home.paths.home)
