"""Training end to end on real packaged history: Feast training set → walk-forward → MLflow → registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
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
    "FINSTREAM_TRAIN__WORKERS": "1",
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


def test_train_logs_evaluates_registers_and_gates(trained_home: Settings, prefect_api: str) -> None:
    from finstream.models.calibration import CalibratedForecaster, fit_calibration
    from finstream.models.pyfunc import unwrap_forecaster
    from finstream.models.registry import REGISTERED_MODELS
    from finstream.models.tracking import configure_mlflow
    from finstream.storage import file_md5
    from flows.training import training_flow

    report = training_flow(families=["ridge", "xgboost", "lstm"], tasks=["regression", "classification"])
    assert report.failures == []
    assert {(c.task, c.family) for c in report.candidates} == {
        (t, f) for t in ("regression", "classification") for f in ("ridge", "xgboost", "lstm")
    }
    assert report.data_version == file_md5(trained_home.paths.features)
    client = configure_mlflow(trained_home)
    for task in ("regression", "classification"):
        name = REGISTERED_MODELS[task]
        decision = report.decisions[task]
        assert decision.version == "1"
        assert "folds 3" in decision.reason and "DM p-value" in decision.reason
        assert "SPA p-value" in decision.reason and "MCS" in decision.reason
        version = client.get_model_version(name, "1")
        assert version.tags["data_version"] == report.data_version
        assert version.tags["promotion.decision"] == ("champion" if decision.promote else "challenger")
        alias = "champion" if decision.promote else "challenger"
        assert int(client.get_model_version_by_alias(name, alias).version) == 1
        model = mlflow.pyfunc.load_model(f"models:/{name}/1")
        assert model.metadata.get_input_schema() is not None
        # the served model carries the final calibration: fitted on every out-of-sample pair it was judged on
        served = unwrap_forecaster(model)
        assert isinstance(served, CalibratedForecaster)
        oos = pd.read_parquet(client.download_artifacts(version.run_id, "evaluation/oos_predictions.parquet"))
        assert served.calibration == fit_calibration(task, oos["pred_raw"], oos["y"])
        assert 0 <= float(version.tags["metric.spa_pvalue"]) <= 1
        assert version.tags["metric.mcs_member"] in ("0.0", "1.0")
        passed = json.loads(version.tags["passed_symbols"])
        assert set(passed) <= {"000300.SH", "^GSPC"}
        assert set(json.loads(version.tags["symbol_metrics"])) == {"000300.SH", "^GSPC"}
    child = next(c for c in report.candidates if c.family == "xgboost" and c.task == "regression")
    run = client.get_run(child.run_id)
    for metric in (
        "ic",
        "raw_ic",
        "raw_oos_r2",
        "raw_dm_pvalue",
        "calibration_slope",
        "spa_pvalue",
        "mcs_member",
        "symbol._GSPC.ic",
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
    oos_start = oos_start.normalize()
    assert window.label_time.max() < oos_start
    best = tune_family(settings, dataset, "xgboost", "regression")
    assert set(best) == {"max_depth", "learning_rate", "n_estimators", "subsample"}
    configure_mlflow(settings)
    experiment = mlflow.get_experiment_by_name("finstream-tune-regression")
    assert experiment is not None
    runs = mlflow.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    assert runs["metrics.ic"].notna().all()


def test_retrain_flow_runs_data_and_training(
    trained_home: Settings, monkeypatch: pytest.MonkeyPatch, prefect_api: str
) -> None:
    from flows.training import retrain_flow

    monkeypatch.setenv("FINSTREAM_INGEST__SYMBOLS", '["000300.SH", "^GSPC"]')
    monkeypatch.setenv("FINSTREAM_INGEST__SOURCE", "packaged")
    monkeypatch.setenv("FINSTREAM_INGEST__START", "2008-01-01")
    monkeypatch.setenv("FINSTREAM_INGEST__END", "2018-12-31")
    monkeypatch.setenv("FINSTREAM_TRAIN__PER_SYMBOL", "true")
    report = retrain_flow(families=["ridge"], tasks=["regression"])
    assert report.decisions["regression"].family == "ridge"
    assert {c.scope for c in report.candidates} == {"pooled", "000300.SH", "^GSPC"}
    pooled = next(c for c in report.candidates if c.scope == "pooled")
    alone = next(c for c in report.candidates if c.scope == "^GSPC")
    assert pooled.metrics["n_test"] > alone.metrics["n_test"]
    assert Path(trained_home.paths.reports / "leaderboard.md").is_file()
    assert os.environ["FINSTREAM_HOME"] == str(trained_home.paths.home)


def _task_runs(api: str, flow_run_id: object) -> dict[str, str]:
    """Task run name -> final state type of one flow run, read back from the Prefect server's API."""
    body = {"flow_runs": {"id": {"any_": [str(flow_run_id)]}}, "limit": 200}
    runs = httpx.post(f"{api}/task_runs/filter", json=body, timeout=30).json()
    return {r["name"]: r["state_type"] for r in runs}


def test_training_flow_shows_one_task_run_per_family_and_task(
    trained_home: Settings, prefect_api: str
) -> None:
    """`finstream train` against a real Prefect server (PREFECT_API_URL, as a user runs it): every stage is a
    task run, each family x task its own, the evaluations in 2 processes."""
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "FINSTREAM_TRAIN__WORKERS": "2",
        "FINSTREAM_TRAIN__TUNE_SAMPLES": "0",
    }
    families, tasks = ("ridge", "hist_gb"), ("regression", "classification")
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "finstream"),
            "train",
            "-f",
            ",".join(families),
            "--tasks",
            ",".join(tasks),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    flow_runs = httpx.post(
        f"{prefect_api}/flow_runs/filter",
        json={"flows": {"name": {"any_": ["training_flow"]}}, "sort": "START_TIME_DESC", "limit": 1},
        timeout=30,
    ).json()
    assert flow_runs and flow_runs[0]["state_type"] == "COMPLETED"
    runs = _task_runs(prefect_api, flow_runs[0]["id"])
    evaluations = {name for name in runs if name.startswith("evaluate-")}
    assert evaluations == {f"evaluate-{t}-{f}" for t in tasks for f in families}
    assert all(runs[name] == "COMPLETED" for name in evaluations), runs
    for stage in ("training-set", "leakage-check-regression", "walk-forward-runs-classification",
                  "register-regression", "gate-classification"):  # fmt: skip
        assert runs.get(stage) == "COMPLETED", (stage, runs)
    assert runs.get("leaderboard") == "COMPLETED"
    assert "failed" not in done.stdout


def test_a_failing_family_leaves_the_others_registered_and_is_named(
    trained_home: Settings, prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hist_gb is made to fail (in-process run, so the fault can be injected): ridge is still evaluated,
    registered and gated for both tasks, and the leaderboard names the failure."""
    import flows.training
    from finstream.models.tracking import configure_mlflow
    from training import zoo_stages

    monkeypatch.setenv("FINSTREAM_TRAIN__WORKERS", "1")
    real = zoo_stages._log_candidate

    def failing(settings: Settings, dataset: object, task: str, family: str, *args: object) -> object:
        if family == "hist_gb":
            raise RuntimeError("injected failure: hist_gb cannot fit")
        return real(settings, dataset, task, family, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(zoo_stages, "_log_candidate", failing)
    state = flows.training.training_flow(
        families=["ridge", "hist_gb"], tasks=["regression", "classification"], return_state=True
    )
    assert state.is_completed(), state
    report = state.result()
    assert {(f.task, f.family) for f in report.failures} == {
        ("regression", "hist_gb"),
        ("classification", "hist_gb"),
    }
    assert all("injected failure" in f.error for f in report.failures)
    assert {(c.task, c.family) for c in report.candidates} == {
        ("regression", "ridge"),
        ("classification", "ridge"),
    }
    client = configure_mlflow(trained_home)
    for decision in report.decisions.values():
        assert decision.family == "ridge"
        assert client.get_model_version(decision.model, decision.version).tags["family"] == "ridge"
    assert set(report.decisions) == {"regression", "classification"}
    runs = _task_runs(prefect_api, state.state_details.flow_run_id)
    assert (
        runs["evaluate-regression-hist_gb"] == "FAILED" and runs["evaluate-regression-ridge"] == "COMPLETED"
    )
    md = (trained_home.paths.reports / "leaderboard.md").read_text()
    assert "failed candidates" in md and "hist_gb" in md and "injected failure" in md
    assert "ridge" in md
