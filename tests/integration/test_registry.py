"""The model registry end to end on MLflow over SQLite (tmp_path) and over the real PostgreSQL.

Real sklearn models fitted on the packaged CSI 300 history are logged, registered and moved between the
`champion` and `challenger` aliases by the promotion gates, rolled back, loaded by alias and driven
through the `finstream models` CLI. The gate metrics are stated by each test so the scenario is fixed.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
import psycopg2
import pytest
from psycopg2 import sql
from rich.console import Console
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression, Ridge
from tests_support import service_unavailable
from typer.testing import CliRunner

from finstream.cli import main as cli_main
from finstream.cli import models as models_cli
from finstream.config import PromotionParams, Settings
from finstream.models.registry import (
    CHALLENGER,
    CHAMPION,
    REGISTERED_MODELS,
    RegistryError,
    list_models,
    register_candidate,
    rollback,
)
from finstream.models.tracking import configure_mlflow, ensure_experiment, tracking_uri
from training.promotion import promote_or_challenge

pytestmark = pytest.mark.integration

# server to create the per-session test database on (trust auth on the CI / dev machine)
POSTGRES_ADMIN_URL = os.environ.get(
    "FINSTREAM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PARAMS = PromotionParams(metric="ic", min_improvement=0.005, max_dm_pvalue=0.10, min_folds=3)
FEATURES = ["ret_lag1", "ret_lag2", "ret_lag5"]
RETURN_MODEL = REGISTERED_MODELS["regression"]
DIRECTION_MODEL = REGISTERED_MODELS["classification"]


@dataclass(frozen=True)
class Frame:
    """Lagged log-return features and next-day targets of a slice of the real CSI 300 history."""

    X: pd.DataFrame
    y: pd.Series
    data_version: str


@pytest.fixture(scope="module")
def csi300_frame(csi300: pd.DataFrame) -> Frame:
    bars = csi300[(csi300["ts"] >= "2014-01-01") & (csi300["ts"] < "2018-01-01")].sort_values("ts")
    ret = np.log(bars["close"].astype("float64")).diff()
    frame = pd.DataFrame(
        {"ret_lag1": ret, "ret_lag2": ret.shift(1), "ret_lag5": ret.shift(4), "target": ret.shift(-1)}
    ).dropna()
    version = hashlib.md5(
        pd.util.hash_pandas_object(bars[["ts", "close"]], index=False).to_numpy()
    ).hexdigest()
    assert len(frame) > 900  # about four years of trading days
    return Frame(frame[FEATURES].reset_index(drop=True), frame["target"].reset_index(drop=True), version)


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    """A fresh database on the real PostgreSQL for this test session, dropped afterwards."""
    try:
        admin = psycopg2.connect(POSTGRES_ADMIN_URL, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        detail = " ".join(str(exc).split())
        reason = (
            f"PostgreSQL at {POSTGRES_ADMIN_URL} does not answer ({detail}); start it or set "
            "FINSTREAM_TEST_POSTGRES_URL to run the registry tests on PostgreSQL"
        )
        service_unavailable(reason)
    admin.autocommit = True
    database = f"finstream_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
    finally:
        with admin.cursor() as cur:  # MLflow's pooled connections are still open: force them off
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_settings(
    request: pytest.FixtureRequest, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """Settings (also in the environment, for the CLI) whose tracking store is SQLite or PostgreSQL."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # mlflow.set_*_uri export them: restore after
        monkeypatch.delenv(var, raising=False)
    if request.param == "postgresql":
        monkeypatch.setenv("FINSTREAM_MLFLOW_TRACKING_URI", request.getfixturevalue("postgres_uri"))
    current = Settings()
    assert current.tracking_uri.startswith(request.param)
    yield current
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    mlflow.set_registry_uri(None)  # type: ignore[arg-type]


def _log_and_register(
    client: mlflow.MlflowClient,
    experiment_id: str,
    name: str,
    model: BaseEstimator,
    frame: Frame,
    metrics: dict[str, float],
) -> str:
    """Log a fitted sklearn model in a run and register it with its metrics; returns the version."""
    family = "ridge" if isinstance(model, Ridge) else "logistic"
    task = "regression" if name == RETURN_MODEL else "classification"
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_metrics(metrics)
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    tags = {
        "features": ",".join(FEATURES),
        "data_version": frame.data_version,
        "family": family,
        "task": task,
    }
    mv = register_candidate(client, name, info.model_uri, run.info.run_id, metrics, tags)
    assert mv.tags["metric.ic"] == repr(metrics["ic"]) and mv.tags["data_version"] == frame.data_version
    return str(mv.version)


def _aliases(client: mlflow.MlflowClient, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


def _gate_metrics(ic: float, dm_pvalue: float = 0.03, n_folds: int = 5) -> dict[str, float]:
    return {"ic": ic, "dm_pvalue": dm_pvalue, "n_folds": n_folds, "oos_r2": ic / 10}


def test_champion_challenger_and_rollback(
    registry_settings: Settings, csi300_frame: Frame, request: pytest.FixtureRequest
) -> None:
    client = configure_mlflow(registry_settings)
    experiment = ensure_experiment(f"registry-{uuid.uuid4().hex[:8]}", registry_settings)
    assert client.get_experiment(experiment).artifact_location == registry_settings.artifact_location
    X, y = csi300_frame.X, csi300_frame.y
    half = len(X) // 2
    fits = {  # three genuinely different fits: other windows and penalties
        "1": Ridge(alpha=1e-4).fit(X[:half], y[:half]),
        "2": Ridge(alpha=1e-2).fit(X[half:], y[half:]),
        "3": Ridge(alpha=1e-3).fit(X, y),
    }

    v1 = _log_and_register(client, experiment, RETURN_MODEL, fits["1"], csi300_frame, _gate_metrics(0.030))
    first = promote_or_challenge(client, RETURN_MODEL, v1, PARAMS)
    assert first.promote and "ic 0.03 > naive 0" in first.reason
    assert _aliases(client, RETURN_MODEL) == {CHAMPION: v1}

    v2 = _log_and_register(client, experiment, RETURN_MODEL, fits["2"], csi300_frame, _gate_metrics(0.020))
    worse = promote_or_challenge(client, RETURN_MODEL, v2, PARAMS)
    assert not worse.promote and f"vs champion v{v1} 0.03" in worse.reason
    assert _aliases(client, RETURN_MODEL) == {CHAMPION: v1, CHALLENGER: v2}
    tags2 = client.get_model_version(RETURN_MODEL, v2).tags
    assert tags2["promotion.decision"] == CHALLENGER and tags2["promotion.reason"] == worse.reason

    v3 = _log_and_register(client, experiment, RETURN_MODEL, fits["3"], csi300_frame, _gate_metrics(0.041))
    better = promote_or_challenge(client, RETURN_MODEL, v3, PARAMS)
    assert better.promote and "improvement +0.011" in better.reason
    assert _aliases(client, RETURN_MODEL) == {CHAMPION: v3, CHALLENGER: v2}
    assert client.get_model_version(RETURN_MODEL, v3).tags["previous_champion"] == v1

    def champion_predictions() -> np.ndarray:
        return mlflow.pyfunc.load_model(f"models:/{RETURN_MODEL}@{CHAMPION}").predict(X.tail(50))

    np.testing.assert_allclose(champion_predictions(), fits["3"].predict(X.tail(50)))

    restored = rollback(client, RETURN_MODEL)
    assert str(restored.version) == v1
    assert _aliases(client, RETURN_MODEL) == {CHAMPION: v1, CHALLENGER: v2}
    assert client.get_model_version(RETURN_MODEL, v3).tags["promotion.decision"] == "rolled_back"
    np.testing.assert_allclose(champion_predictions(), fits["1"].predict(X.tail(50)))
    with pytest.raises(RegistryError, match=f"nothing to roll back to: champion v{v1} of {RETURN_MODEL}"):
        rollback(client, RETURN_MODEL)

    audit = json.loads(client.get_registered_model(RETURN_MODEL).tags["promotion.audit"])
    assert [(e["action"], e["version"], e["previous"]) for e in audit] == [
        ("promote", v1, None),
        ("challenge", v2, None),
        ("promote", v3, v1),
        ("rollback", v1, v3),
    ]
    rows = {row["version"]: row for row in list_models(client) if row["name"] == RETURN_MODEL}
    assert sorted(rows) == [v1, v2, v3]
    assert rows[v1]["aliases"] == [CHAMPION] and rows[v2]["aliases"] == [CHALLENGER]
    assert rows[v3]["aliases"] == [] and rows[v3]["metrics"]["ic"] == 0.041
    assert rows[v1]["family"] == "ridge" and rows[v1]["data_version"] == csi300_frame.data_version

    with pytest.raises(RegistryError, match=r"unknown model 'finstream-nope' \(registered models: .*"):
        promote_or_challenge(client, "finstream-nope", 1, PARAMS)
    with pytest.raises(RegistryError, match=f"{RETURN_MODEL} has no version 9 \\(versions: 1, 2, 3\\)"):
        promote_or_challenge(client, RETURN_MODEL, 9, PARAMS)


def test_models_cli(
    registry_settings: Settings, csi300_frame: Frame, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = configure_mlflow(registry_settings)
    experiment = ensure_experiment(f"cli-{uuid.uuid4().hex[:8]}", registry_settings)
    X, up = csi300_frame.X, (csi300_frame.y > 0).astype(int)
    half = len(X) // 2
    v1 = _log_and_register(
        client,
        experiment,
        DIRECTION_MODEL,
        LogisticRegression().fit(X[:half], up[:half]),
        csi300_frame,
        _gate_metrics(0.025),
    )
    v2 = _log_and_register(
        client,
        experiment,
        DIRECTION_MODEL,
        LogisticRegression(C=0.1).fit(X, up),
        csi300_frame,
        _gate_metrics(0.026),  # +0.001 is below min_improvement: challenger
    )
    assert promote_or_challenge(client, DIRECTION_MODEL, v1, PARAMS).promote
    assert not promote_or_challenge(client, DIRECTION_MODEL, v2, PARAMS).promote

    # wide consoles: the table unwrapped, and each error message on the one line it is printed as
    monkeypatch.setattr(models_cli, "console", Console(width=200))
    monkeypatch.setattr(cli_main, "err_console", Console(stderr=True, width=300))
    runner = CliRunner()
    listed = runner.invoke(models_cli.models_app, ["list"])
    assert listed.exit_code == 0, listed.output
    title = f"{DIRECTION_MODEL} (classification)"  # one table per registered model, titled by it
    section = listed.output.split(title, 1)[1].split("finstream-", 1)[0]  # on PostgreSQL others follow
    lines = {line.split()[0]: line for line in section.splitlines() if line.strip()[:1].isdigit()}
    assert sorted(lines) == [v1, v2]
    assert CHAMPION in lines[v1] and "0.025" in lines[v1] and "logistic" in lines[v1]
    assert CHALLENGER in lines[v2] and "0.026" in lines[v2]

    promoted = runner.invoke(
        models_cli.models_app, ["promote", DIRECTION_MODEL, v2, "--reason", "desk review"]
    )
    assert promoted.exit_code == 0, promoted.output
    assert f"v{v2} is champion (was v{v1})" in promoted.output
    assert _aliases(client, DIRECTION_MODEL) == {CHAMPION: v2}
    assert "desk review" in client.get_model_version(DIRECTION_MODEL, v2).tags["promotion.reason"]

    again = runner.invoke(models_cli.models_app, ["promote", DIRECTION_MODEL, v2])
    assert again.exit_code == 0 and f"v{v2} is already champion; nothing changed" in again.output

    rolled = runner.invoke(models_cli.models_app, ["rollback", DIRECTION_MODEL])
    assert rolled.exit_code == 0, rolled.output
    assert f"v{v1} is champion again" in rolled.output
    assert _aliases(client, DIRECTION_MODEL) == {CHAMPION: v1}

    for args, message in [
        (["promote", "finstream-nope", "1"], "error: unknown model 'finstream-nope'"),
        (["rollback", "finstream-nope"], "error: unknown model 'finstream-nope'"),
        (["promote", DIRECTION_MODEL, "7"], f"error: {DIRECTION_MODEL} has no version 7"),
        (["rollback", DIRECTION_MODEL], "error: nothing to roll back to"),
    ]:
        result = runner.invoke(models_cli.models_app, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.output.strip().startswith(message), (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_bare_postgresql_uri_gets_the_installed_driver(settings: Settings) -> None:
    """SQLAlchemy 2.1 maps postgresql:// to psycopg 3; finstream ships psycopg2-binary."""
    uri = tracking_uri(Settings(mlflow_tracking_uri="postgres://u@db:5432/mlflow"))
    assert uri == "postgresql+psycopg2://u@db:5432/mlflow"
    explicit = "postgresql+psycopg2://u@db/mlflow"
    assert tracking_uri(Settings(mlflow_tracking_uri=explicit)) == explicit
    assert tracking_uri(settings) == settings.tracking_uri  # SQLite under FINSTREAM_HOME, unchanged


def test_unreachable_tracking_store_is_one_clear_error(settings: Settings) -> None:
    bad = Settings(mlflow_tracking_uri="postgresql://finstream:secret@127.0.0.1:1/nowhere")
    with pytest.raises(
        RegistryError, match=r"cannot open the MLflow store at postgresql\+?\w*://finstream:\*\*\*@"
    ):
        configure_mlflow(bad)


def test_missing_postgres_database_is_one_clear_error(settings: Settings, postgres_uri: str) -> None:
    missing = postgres_uri.rsplit("/", 1)[0] + f"/finstream_missing_{uuid.uuid4().hex[:8]}"
    with pytest.raises(
        RegistryError, match=r'cannot open the MLflow store at .*database "finstream_missing_'
    ):
        configure_mlflow(Settings(mlflow_tracking_uri=missing))
