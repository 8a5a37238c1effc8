"""Supervised training as stages: training set → leakage check → tuning → walk-forward evaluation of each
family × task → leaderboard → registration → promotion gate.

Each stage is a function of settings and the earlier stages' typed reports; `flows/training.py` orders them,
one Prefect task each, so every family × task shows in the Prefect UI with its own time, logs and retries,
and a family that fails leaves the others, the leaderboard and the registry intact. The run is a config
(settings.train, settings.promotion) plus a recorder (MLflow): parameters, the data version (the features
file's DVC hash), per-fold and overall metrics, plots and the final model are logged with it.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from finstream.config import Settings
from training.dataset import Dataset
from training.promotion import GateDecision, Registration
from training.snooping import SearchTests

log = logging.getLogger(__name__)

TASK_NAMES = {"regression": "return", "classification": "direction"}


@dataclass
class TrainingSet:
    """The point-in-time training set from Feast and the data version (the features file's DVC md5)."""

    dataset: Dataset
    data_version: str

    @property
    def rows(self) -> int:
        return len(self.dataset.X)

    @property
    def symbols(self) -> list[str]:
        return sorted(self.dataset.X["symbol"].unique())


@dataclass
class LeakageReport:
    """The feature-leakage check of one task: the features most correlated with its target (|Spearman|)."""

    task: str
    features: int
    top: dict[str, float]


@dataclass
class WalkForwardRuns:
    """The MLflow parent run of each scope (pooled, per symbol) that a task's family runs nest under."""

    task: str
    experiment_id: str
    parents: dict[str, str]


@dataclass
class Tuning:
    """Ray Tune's best parameters per scope for one family and task ({} per scope when not tuned)."""

    task: str
    family: str
    params: dict[str, dict[str, Any]]


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
    #: pooled candidates: the out-of-sample forecasts (symbol, event_time, y, pred) the search tests use
    predictions: pd.DataFrame | None = field(default=None, repr=False)
    #: pooled candidates: per-symbol metrics (training.walk_forward.symbol_metrics)
    symbol_metrics: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class CandidateFailure:
    """A family × task evaluation that failed, and why (the other candidates are unaffected)."""

    task: str
    family: str
    error: str


@dataclass
class Leaderboard:
    """The run's candidates side by side, written as markdown and HTML, with the failures named."""

    table: pd.DataFrame
    failures: list[CandidateFailure]
    markdown: Path
    html: Path


@dataclass
class TrainingReport:
    """Everything a training run produced: candidates, failures, the leaderboard and each task's decision."""

    data_version: str
    rows: int
    candidates: list[CandidateResult]
    failures: list[CandidateFailure]
    decisions: dict[str, GateDecision]
    leaderboard_path: Path | None
    seconds: float
    volatility: Any = None  # training.volatility_stages.VolatilityEvaluation, when the task ran

    def leaderboard(self) -> pd.DataFrame:
        return candidate_table(self.candidates)


def candidate_table(candidates: Sequence[CandidateResult]) -> pd.DataFrame:
    """One row per candidate (task, scope, family, overall metrics, fit time), best IC first per group."""
    rows = [
        {"task": c.task, "scope": c.scope, "family": c.family, **c.metrics, "train_seconds": c.fit_seconds}
        for c in candidates
    ]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(["task", "scope", "ic"], ascending=[True, True, False]).reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ stages


def load_training(settings: Settings) -> TrainingSet:
    """Stage 1: the point-in-time training set of settings.train.symbols from Feast."""
    from finstream.models.tracking import configure_mlflow
    from training.store_dataset import load_training_set

    configure_mlflow(settings)  # fail fast on an unreachable tracking store
    dataset, data_version = load_training_set(settings)
    return TrainingSet(dataset, data_version)


def check_leakage(training: TrainingSet, task: str, settings: Settings) -> LeakageReport:
    """Stage 2: stop the run (LeakageSuspected) if a feature correlates with the target like a leak."""
    from training.leakage import check_feature_leakage

    scores = check_feature_leakage(
        training.dataset,
        task,  # type: ignore[arg-type]
        test_years=settings.train.test_years,
        min_train_years=settings.train.min_train_years,
    )
    return LeakageReport(task, len(scores), {str(k): round(float(v), 4) for k, v in scores.head(5).items()})


def open_runs(settings: Settings, training: TrainingSet, task: str) -> WalkForwardRuns:
    """Stage 3: one MLflow parent run per scope of `task`, holding the run's parameters."""
    import mlflow

    from finstream.models.tracking import configure_mlflow, ensure_experiment

    configure_mlflow(settings)
    experiment = ensure_experiment(f"finstream-{TASK_NAMES[task]}", settings)
    parents: dict[str, str] = {}
    for scope, scoped in scopes(training.dataset, settings):
        with mlflow.start_run(experiment_id=experiment, run_name=f"{scope}-walk-forward") as parent:
            mlflow.set_tags({"task": task, "scope": scope, "data_version": training.data_version})
            mlflow.log_params(
                {
                    "horizon": settings.train.horizon,
                    "folds": settings.train.folds or "yearly",
                    "test_years": settings.train.test_years or f"after {settings.train.min_train_years}",
                    "rows": len(scoped.X),
                    "features": ",".join(scoped.feature_names),
                }
            )
            parents[scope] = parent.info.run_id
    return WalkForwardRuns(task, experiment, parents)


def tune(settings: Settings, training: TrainingSet, task: str, family: str) -> Tuning:
    """Stage 4: Ray Tune's best parameters for `family` per scope, scored before the test period only."""
    from training.tune import tune_family

    params = {
        scope: tune_family(settings, scoped, family, task)
        for scope, scoped in scopes(training.dataset, settings)
    }
    return Tuning(task, family, params)


def evaluate_candidate(
    settings: Settings,
    training: TrainingSet,
    runs: WalkForwardRuns,
    family: str,
    tuning: Tuning | None = None,
) -> list[CandidateResult]:
    """Stage 5, per family × task: walk-forward evaluate in every scope, fit on all rows, log to MLflow."""
    import mlflow

    from finstream.models.tracking import configure_mlflow

    if settings.train.torch_threads:
        import torch

        torch.set_num_threads(settings.train.torch_threads)
    configure_mlflow(settings)
    results: list[CandidateResult] = []
    for scope, scoped in scopes(training.dataset, settings):
        tuned = tuning.params.get(scope, {}) if tuning is not None else {}
        with mlflow.start_run(
            experiment_id=runs.experiment_id,
            run_name=family,
            nested=True,
            parent_run_id=runs.parents[scope],
        ):
            results.append(
                _log_candidate(settings, scoped, runs.task, family, scope, training.data_version, tuned)
            )
    return results


def test_search(settings: Settings, task: str, candidates: Sequence[CandidateResult]) -> SearchTests | None:
    """Stage 5b: SPA and MCS over every pooled candidate of `task` (`training.snooping`); the results are
    added to each candidate's metrics and its MLflow run. None when no pooled candidate finished."""
    from finstream.models.tracking import configure_mlflow
    from training.snooping import search_tests

    pooled = [c for c in candidates if c.task == task and c.scope == "pooled" and c.predictions is not None]
    if not pooled:
        return None
    promotion = settings.promotion
    tests = search_tests(
        {c.family: c.predictions for c in pooled},  # type: ignore[misc]
        task,
        mcs_size=promotion.mcs_size,
        reps=promotion.bootstrap_reps,
        block_size=promotion.bootstrap_block,
        seed=settings.train.seed,
    )
    client = configure_mlflow(settings)
    for c in pooled:
        extra = tests.metrics(c.family)
        c.metrics.update(extra)
        for key, value in extra.items():
            if _is_number(value):
                client.log_metric(c.run_id, key, value)
    return tests


def write_run_leaderboard(
    settings: Settings, candidates: Sequence[CandidateResult], failures: Sequence[CandidateFailure]
) -> Leaderboard:
    """Stage 6: the leaderboard of this run (markdown + HTML under reports/), failures named."""
    from training.report import write_leaderboard

    table = candidate_table(candidates)
    failed = [(f.task, f.family, f.error) for f in failures]
    md, html = write_leaderboard(table, settings.paths.reports, failed)
    return Leaderboard(table, list(failures), md, html)


def register_best(
    settings: Settings, training: TrainingSet, task: str, candidates: Sequence[CandidateResult]
) -> Registration | None:
    """Stage 7: register the best pooled candidate of `task` (by the gate metric); None if there is none."""
    from finstream.models.registry import REGISTERED_MODELS, TAG_PASSED_SYMBOLS, register_candidate
    from finstream.models.tracking import configure_mlflow
    from training.promotion import symbol_passes

    pooled = [c for c in candidates if c.task == task and c.scope == "pooled"]
    if not pooled:
        return None
    gate = settings.promotion.metric
    best = max(pooled, key=lambda c: c.metrics.get(gate, float("-inf")) * (-1 if gate == "mae" else 1))
    name = REGISTERED_MODELS[task]
    verdicts = {sym: symbol_passes(m, settings.promotion)[0] for sym, m in best.symbol_metrics.items()}
    tags = {
        "features": ",".join(training.dataset.feature_names),
        "data_version": training.data_version,
        "family": best.family,
        "task": task,
        "interval": settings.train.interval,
        TAG_PASSED_SYMBOLS: json.dumps(sorted(s for s, ok in verdicts.items() if ok)),
        "symbol_metrics": json.dumps(
            {
                s: {k: round(v, 6) for k, v in m.items() if k in SYMBOL_METRICS}
                for s, m in best.symbol_metrics.items()
            }
        ),
    }
    client = configure_mlflow(settings)
    version = register_candidate(client, name, best.model_uri, best.run_id, best.metrics, tags)
    return Registration(task, name, str(version.version), best.family, best.run_id)


def gate(settings: Settings, registration: Registration) -> GateDecision:
    """Stage 8: the promotion gates move `champion` to the new version, or make it the `challenger`."""
    from finstream.models.tracking import configure_mlflow
    from training.promotion import gate_registration

    return gate_registration(configure_mlflow(settings), registration, settings.promotion, search=True)


# ----------------------------------------------------------------------------------------------- helpers


def _family_params(settings: Settings, family: str) -> dict[str, Any]:
    params = settings.train
    if family in {"lstm", "transformer", "cnn_lstm"}:
        return {"window": params.window, "epochs": params.epochs, "seed": params.seed}
    if family in {"random_forest", "xgboost", "hist_gb"}:
        return {"random_state": params.seed}
    return {}


def scopes(dataset: Dataset, settings: Settings) -> list[tuple[str, Dataset]]:
    """The datasets a family is evaluated on: pooled (symbols as one-hot columns) and/or each symbol alone."""
    out: list[tuple[str, Dataset]] = []
    if settings.train.pooled:
        out.append(("pooled", with_symbol_indicators(dataset)))
    if settings.train.per_symbol:
        out += [(sym, dataset.for_symbols([sym])) for sym in sorted(dataset.X["symbol"].unique())]
    return out


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


def periods_per_year(symbols: list[str], interval: str) -> float:
    """Bars of `interval` a year, for annualising backtests: by the market of the symbols (their mean when
    markets differ; 252 for daily bars everywhere)."""
    from finstream.intervals import bars_per_year
    from finstream.symbols import parse_symbols

    markets = {s.exchange_market for s in parse_symbols(symbols)}
    return float(statistics.fmean(bars_per_year(interval, m) for m in markets))


def _log_candidate(
    settings: Settings,
    dataset: Dataset,
    task: str,
    family: str,
    scope: str,
    data_version: str,
    tuned: dict[str, Any],
) -> CandidateResult:
    """Evaluate one family walk-forward, fit it on all rows, log everything to the active MLflow run."""
    import mlflow

    from finstream.models.pyfunc import log_forecaster
    from finstream.models.zoo import make_model
    from training.leakage import check_model_leakage
    from training.plots import equity_plot, feature_importance_plot, prediction_plot
    from training.walk_forward import evaluate, symbol_metrics

    params = {**_family_params(settings, family), **tuned}
    interval = settings.train.interval
    mlflow.log_params(
        {
            "family": family,
            "task": task,
            "scope": scope,
            "interval": interval,
            **{f"model.{k}": v for k, v in params.items()},
        }
    )
    mlflow.set_tags(
        {"family": family, "task": task, "scope": scope, "data_version": data_version, "interval": interval}
    )
    t0 = time.perf_counter()
    per_year = periods_per_year(settings.train.symbols, interval)
    result = evaluate(lambda: make_model(family, task, **params), dataset, task, settings.train, per_year)
    check_model_leakage(result)
    for fold in result.folds:
        step = int(fold["fold"])
        mlflow.log_metrics(
            {f"fold_{k}": float(v) for k, v in fold.items() if _is_number(v) and k != "fold"}, step=step
        )
    overall = {k: float(v) for k, v in result.overall.items() if _is_number(v)}
    mlflow.log_metrics(overall)
    per_symbol: dict[str, dict[str, float]] = {}
    if scope == "pooled":
        per_symbol = symbol_metrics(result.predictions, task, dataset.horizon)  # type: ignore[arg-type]
        mlflow.log_metrics(
            {
                f"symbol.{safe_name(sym)}.{k}": v
                for sym, values in per_symbol.items()
                for k, v in values.items()
                if k in SYMBOL_METRICS and _is_number(v)
            }
        )
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
    if result.calibration is not None:
        mlflow.set_tag("calibration", result.calibration.describe())
    info = log_forecaster(model, dataset.X.tail(5), calibration=result.calibration)
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
    predictions = None
    if scope == "pooled":
        predictions = result.predictions[["symbol", "event_time", "y", "pred"]].copy()
    return CandidateResult(
        task, family, scope, overall, run_id, info.model_uri, round(fit_seconds, 2), params, predictions,
        per_symbol,
    )  # fmt: skip


#: the per-symbol figures logged for a pooled candidate and tagged on its registered version
SYMBOL_METRICS = ("ic", "oos_r2", "auc", "dm_pvalue", "n_test")


def safe_name(symbol: str) -> str:
    """A symbol as part of an MLflow metric name (letters, digits, _ . - only)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", symbol)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value
