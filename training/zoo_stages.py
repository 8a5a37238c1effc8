"""A training run: every family per task, walk-forward evaluated, logged to MLflow, best one registered.

The run is a config (settings.train, settings.promotion) plus a recorder (MLflow): parameters, the data
version (the features file's DVC hash), per-fold and overall metrics, plots and the final model are all
logged with it. The best candidate per task goes through the promotion gates.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from finstream.config import Settings
from training.dataset import Dataset

log = logging.getLogger(__name__)

#: families that are too slow for per-symbol sub-runs on 2 cores unless asked for explicitly
TASK_NAMES = {"regression": "return", "classification": "direction"}


@dataclass
class CandidateResult:
    """One family's walk-forward outcome and where its final model was logged."""

    task: str
    family: str
    scope: str
    metrics: dict[str, float]
    run_id: str
    model_uri: str
    fit_seconds: float
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainingReport:
    """Everything a training run produced: the leaderboard rows and each task's promotion decision."""

    data_version: str
    rows: int
    candidates: list[CandidateResult]
    decisions: dict[str, dict[str, Any]]
    seconds: float

    def leaderboard(self) -> pd.DataFrame:
        rows = [
            {"task": c.task, "scope": c.scope, "family": c.family, **c.metrics, "fit_s": c.fit_seconds}
            for c in self.candidates
        ]
        frame = pd.DataFrame(rows)
        if frame.empty:
            return frame
        return frame.sort_values(["task", "scope", "ic"], ascending=[True, True, False]).reset_index(
            drop=True
        )


def _family_params(settings: Settings, family: str) -> dict[str, Any]:
    params = settings.train
    if family in {"lstm", "transformer", "cnn_lstm"}:
        return {"window": params.window, "epochs": params.epochs, "seed": params.seed}
    if family in {"random_forest", "xgboost", "hist_gb"}:
        return {"random_state": params.seed}
    return {}


def _scopes(dataset: Dataset, settings: Settings) -> list[tuple[str, Dataset]]:
    scopes: list[tuple[str, Dataset]] = []
    if settings.train.pooled:
        scopes.append(("pooled", with_symbol_indicators(dataset)))
    if settings.train.per_symbol:
        scopes += [(sym, dataset.for_symbols([sym])) for sym in sorted(dataset.X["symbol"].unique())]
    return scopes


def with_symbol_indicators(dataset: Dataset) -> Dataset:
    """Pooled training: the symbol as a feature (`finstream.models.inputs.with_symbol_columns`)."""
    from finstream.models.inputs import with_symbol_columns

    return Dataset(
        with_symbol_columns(dataset.X),
        dataset.y_return,
        dataset.y_direction,
        dataset.event_time,
        dataset.label_time,
        dataset.horizon,
    )


def _log_candidate(
    settings: Settings, dataset: Dataset, task: str, family: str, scope: str, data_version: str
) -> CandidateResult:
    """Evaluate one family walk-forward, fit it on all rows, log everything to the active MLflow run."""
    import mlflow

    from finstream.models.pyfunc import log_forecaster
    from finstream.models.zoo import make_model
    from training.leakage import check_model_leakage
    from training.plots import equity_plot, feature_importance_plot, prediction_plot
    from training.tune import tune_family
    from training.walk_forward import evaluate

    params = {**_family_params(settings, family), **tune_family(settings, dataset, family, task)}
    mlflow.log_params(
        {"family": family, "task": task, "scope": scope, **{f"model.{k}": v for k, v in params.items()}}
    )
    mlflow.set_tags({"family": family, "task": task, "scope": scope, "data_version": data_version})
    t0 = time.perf_counter()
    result = evaluate(lambda: make_model(family, task, **params), dataset, task, settings.train)
    check_model_leakage(result)
    for fold in result.folds:
        step = int(fold["fold"])
        mlflow.log_metrics(
            {f"fold_{k}": float(v) for k, v in fold.items() if _is_number(v) and k != "fold"}, step=step
        )
    overall = {k: float(v) for k, v in result.overall.items() if _is_number(v)}
    mlflow.log_metrics(overall)
    model = make_model(family, task, **params).fit(dataset.X, dataset.target(task))
    fit_seconds = time.perf_counter() - t0
    mlflow.log_metric("train_seconds", fit_seconds)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        plots = [
            equity_plot(result.equity, out / "equity.png"),
            prediction_plot(result.predictions, task, out / "pred.png"),
        ]
        importance = model.feature_importance()
        if importance is not None:
            plots.append(feature_importance_plot(importance, out / "importance.png"))
        result.predictions.to_parquet(out / "oos_predictions.parquet", index=False)
        for path in [*plots, out / "oos_predictions.parquet"]:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
    info = log_forecaster(model, dataset.X.tail(5))
    run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    log.info(
        "%s/%s/%s: ic=%.4f oos_r2=%.4f sharpe=%.2f",
        task,
        scope,
        family,
        overall.get("ic", float("nan")),
        overall.get("oos_r2", float("nan")),
        overall.get("sharpe", float("nan")),
    )
    return CandidateResult(
        task, family, scope, overall, run_id, info.model_uri, round(fit_seconds, 2), params
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def train(
    settings: Settings, families: list[str] | None = None, tasks: list[str] | None = None
) -> TrainingReport:
    """Train, evaluate, log and register every family for every task; promote winners through the gates."""
    import mlflow

    from finstream.models.registry import REGISTERED_MODELS, register_candidate
    from finstream.models.tracking import configure_mlflow, ensure_experiment
    from training.leakage import check_feature_leakage
    from training.promotion import promote_or_challenge
    from training.store_dataset import load_training_set

    started = time.perf_counter()
    if settings.train.torch_threads:
        import torch

        torch.set_num_threads(settings.train.torch_threads)
    client = configure_mlflow(settings)
    dataset, data_version = load_training_set(settings)
    families = families or settings.train.families
    tasks = tasks or settings.train.tasks
    candidates: list[CandidateResult] = []
    decisions: dict[str, dict[str, Any]] = {}
    for task in tasks:
        check_feature_leakage(dataset, task)
        experiment = ensure_experiment(f"finstream-{TASK_NAMES[task]}", settings)
        for scope, scoped in _scopes(dataset, settings):
            with mlflow.start_run(experiment_id=experiment, run_name=f"{scope}-walk-forward") as parent:
                mlflow.set_tags({"task": task, "scope": scope, "data_version": data_version})
                mlflow.log_params(
                    {
                        "horizon": settings.train.horizon,
                        "folds": settings.train.folds,
                        "test_years": settings.train.test_years,
                        "rows": len(scoped.X),
                        "features": ",".join(scoped.feature_names),
                    }
                )
                for family in families:
                    with mlflow.start_run(
                        experiment_id=experiment,
                        run_name=family,
                        nested=True,
                        parent_run_id=parent.info.run_id,
                    ):
                        candidates.append(_log_candidate(settings, scoped, task, family, scope, data_version))
        pooled = [c for c in candidates if c.task == task and c.scope == "pooled"]
        if not pooled:
            continue
        gate = settings.promotion.metric
        best = max(pooled, key=lambda c: c.metrics.get(gate, float("-inf")) * (-1 if gate == "mae" else 1))
        name = REGISTERED_MODELS[task]
        tags = {
            "features": ",".join(dataset.feature_names),
            "data_version": data_version,
            "family": best.family,
            "task": task,
        }
        version = register_candidate(client, name, best.model_uri, best.run_id, best.metrics, tags)
        decision = promote_or_challenge(client, name, version.version, settings.promotion)
        decisions[task] = {
            "model": name,
            "version": version.version,
            "family": best.family,
            "promote": decision.promote,
            "reason": decision.reason,
        }
    report = TrainingReport(
        data_version, len(dataset.X), candidates, decisions, round(time.perf_counter() - started, 1)
    )
    return report
