"""The volatility task as training stages: walk-forward evaluation → MLflow → final fit → register → gate.

`flows/training.py` runs `evaluate_volatility_task` and `register_volatility` as Prefect tasks after the
return and direction tasks, on the same training set and folds. The evaluation (`training.volatility`) puts
the econometric baselines (GARCH, GJR-GARCH, HAR, rolling variance) and the zoo candidates
(`train.volatility_families`) side by side; every model is an MLflow run (experiment `finstream-volatility`)
under one parent. The pooled winner is registered as `finstream-volatility`: the candidate with the lowest
QLIKE among those that beat the best baseline (QLIKE lower, DM p ≤ promotion.max_dm_pvalue), else the best
baseline itself, tagged `kind=baseline`; `training.promotion.gate_volatility` decides its alias.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from finstream.config import Settings
from training.promotion import GateDecision, Registration
from training.zoo_stages import TrainingSet

log = logging.getLogger(__name__)

TASK = "volatility"
EXPERIMENT = "finstream-volatility"
#: leaderboard columns logged as MLflow metrics of each model's run
METRIC_COLUMNS = ("qlike", "mse", "mz_r2", "mz_intercept", "mz_slope", "dm_stat", "dm_pvalue")


@dataclass
class VolatilityEvaluation:
    """The walk-forward leaderboard of the volatility task, where it went, and the pooled winner."""

    table: pd.DataFrame  # training.volatility.TABLE_COLUMNS, every scope
    var_backtests: pd.DataFrame  # training.volatility.VAR_COLUMNS: each model's forecasts as a VaR
    markdown: Path
    run_ids: dict[str, str]  # model -> its MLflow run
    parent_run_id: str
    winner: str
    winner_kind: str  # "candidate" or "baseline"
    best_baseline: str
    folds: int
    seconds: float

    def pooled(self) -> pd.DataFrame:
        return self.table[self.table["scope"] == "pooled"].reset_index(drop=True)

    def row(self, model: str, scope: str = "pooled") -> dict[str, Any]:
        frame = self.table[(self.table["scope"] == scope) & (self.table["model"] == model)]
        return frame.iloc[0].to_dict()


def _bars(settings: Settings, symbols: list[str]) -> pd.DataFrame:
    from finstream.storage import BarTable

    interval = settings.train.interval
    return BarTable(settings.paths.validated_bars).read(
        symbols=symbols,
        intervals=[interval],
        required=True,
        hint=f"run `finstream pipeline` for {interval} bars",
    )


def metric_key(scope: str, name: str) -> str:
    """An MLflow metric name for `name` in `scope` ("pooled": the bare name; a symbol: `<symbol>.<name>`)."""
    return name if scope == "pooled" else f"{re.sub(r'[^A-Za-z0-9_.-]', '_', scope)}.{name}"


def pick_winner(pooled: pd.DataFrame) -> tuple[str, str]:
    """(model, kind): the lowest-QLIKE candidate that beats the best baseline, else the best baseline."""
    winners = pooled[(pooled["kind"] == "candidate") & pooled["beats_best_baseline"]]
    if not winners.empty:
        return str(winners.sort_values("qlike").iloc[0]["model"]), "candidate"
    return str(pooled["best_baseline"].iloc[0]), "baseline"


def evaluate_volatility_task(settings: Settings, training: TrainingSet) -> VolatilityEvaluation:
    """Walk-forward evaluate baselines and candidates; log every model to MLflow; pick the pooled winner."""
    import mlflow

    from finstream.models.tracking import configure_mlflow, ensure_experiment
    from training.volatility import evaluate_volatility

    t0 = time.perf_counter()
    params = settings.train
    bars = _bars(settings, training.symbols)
    board = evaluate_volatility(
        training.dataset,
        bars,
        params,
        params.volatility_families,
        params.volatility_proxy,
        settings.promotion.max_dm_pvalue,
        var_levels=settings.risk.levels,
    )
    markdown = board.write_markdown(settings.paths.reports / "volatility.md")
    pooled = board.scope("pooled")
    winner, kind = pick_winner(pooled)
    best = str(pooled["best_baseline"].iloc[0])
    configure_mlflow(settings)
    experiment = ensure_experiment(EXPERIMENT, settings)
    run_ids: dict[str, str] = {}
    with mlflow.start_run(experiment_id=experiment, run_name="pooled-walk-forward") as parent:
        mlflow.set_tags({"task": TASK, "scope": "pooled", "data_version": training.data_version})
        mlflow.log_params(
            {
                "proxy": params.volatility_proxy,
                "baselines": ",".join(board.baselines),
                "candidates": ",".join(board.candidates),
                "folds": len(board.folds),
                "test_years": params.test_years,
                "interval": params.interval,
                "max_dm_pvalue": settings.promotion.max_dm_pvalue,
            }
        )
        best_qlike = float(pooled.loc[pooled["model"] == best, "qlike"].iloc[0])
        mlflow.log_metrics({"best_baseline_qlike": best_qlike, "n_folds": len(board.folds)})
        mlflow.set_tags({"best_baseline": best, "winner": winner, "winner_kind": kind})
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            board.table.to_csv(out / "leaderboard.csv", index=False)
            board.var_backtests.to_csv(out / "var_backtests.csv", index=False)
            board.forecasts.to_parquet(out / "oos_forecasts.parquet", index=False)
            files = ("leaderboard.csv", "var_backtests.csv", "oos_forecasts.parquet")
            for path in (markdown, *(out / f for f in files)):
                mlflow.log_artifact(str(path), artifact_path="evaluation")
        for model in board.models:
            rows = board.table[board.table["model"] == model]
            with mlflow.start_run(
                experiment_id=experiment, run_name=model, nested=True, parent_run_id=parent.info.run_id
            ) as run:
                model_kind = "baseline" if model in board.baselines else "candidate"
                mlflow.set_tags(
                    {
                        "task": TASK,
                        "family": model,
                        "kind": model_kind,
                        "scope": "pooled",
                        "data_version": training.data_version,
                        "interval": params.interval,
                    }
                )
                metrics: dict[str, float] = {"n_folds": float(len(board.folds))}
                for r in rows.to_dict("records"):
                    for name in METRIC_COLUMNS:
                        value = float(r[name])
                        if math.isfinite(value):
                            metrics[metric_key(str(r["scope"]), name)] = value
                for r in board.var_backtests[board.var_backtests["model"] == model].to_dict("records"):
                    tag = f"var{round(100 * float(r['level']))}"
                    metrics[metric_key(str(r["scope"]), f"{tag}_exceedances")] = float(r["exceedances"])
                    metrics[metric_key(str(r["scope"]), f"{tag}_kupiec_p")] = float(r["kupiec_pvalue"])
                    metrics[metric_key(str(r["scope"]), f"{tag}_independence_p")] = float(
                        r["independence_pvalue"]
                    )
                mlflow.log_metrics(metrics)
                run_ids[model] = run.info.run_id
    seconds = time.perf_counter() - t0
    log.info("volatility: best baseline %s, winner %s (%s), %.0f s", best, winner, kind, seconds)
    return VolatilityEvaluation(
        table=board.table,
        var_backtests=board.var_backtests,
        markdown=markdown,
        run_ids=run_ids,
        parent_run_id=parent.info.run_id,
        winner=winner,
        winner_kind=kind,
        best_baseline=best,
        folds=len(board.folds),
        seconds=round(seconds, 1),
    )


def register_volatility(
    settings: Settings, training: TrainingSet, evaluation: VolatilityEvaluation
) -> Registration:
    """Fit the pooled winner on every row, log it into its run, register it as `finstream-volatility`."""
    import mlflow

    from finstream.models.pyfunc import log_volatility_model
    from finstream.models.registry import REGISTERED_MODELS, TAG_KIND, register_candidate
    from finstream.models.tracking import configure_mlflow
    from training.volatility import fit_volatility_model

    params = settings.train
    bars = _bars(settings, training.symbols)
    model = fit_volatility_model(evaluation.winner, training.dataset, bars, params, params.volatility_proxy)
    row = evaluation.row(evaluation.winner)
    best_row = evaluation.row(evaluation.best_baseline)
    metrics = {
        "qlike": float(row["qlike"]),
        "mse": float(row["mse"]),
        "mz_r2": float(row["mz_r2"]),
        "naive_qlike": float(best_row["qlike"]),
        "n_folds": float(evaluation.folds),
    }
    if math.isfinite(float(row["dm_pvalue"])):
        metrics["dm_pvalue"] = float(row["dm_pvalue"])
    example = _example(bars, model)
    client = configure_mlflow(settings)
    run_id = evaluation.run_ids[evaluation.winner]
    with mlflow.start_run(run_id=run_id):
        info = log_volatility_model(model, example)
    features = ",".join(model.feature_names) if model.needs_features else "open,high,low,close"
    tags = {
        "features": features,
        "data_version": training.data_version,
        "family": evaluation.winner,
        "task": TASK,
        "interval": params.interval,
        TAG_KIND: evaluation.winner_kind,
        "proxy": params.volatility_proxy,
        "best_baseline": evaluation.best_baseline,
    }
    version = register_candidate(client, REGISTERED_MODELS[TASK], info.model_uri, run_id, metrics, tags)
    return Registration(TASK, REGISTERED_MODELS[TASK], str(version.version), evaluation.winner, run_id)


def _example(bars: pd.DataFrame, model: Any) -> pd.DataFrame:
    """An input example: the last 30 bars of the first symbol (candidates: with NaN feature columns)."""
    symbol = sorted(model.symbols)[0]
    frame = bars[bars["symbol"] == symbol].sort_values("ts").tail(30)
    example = frame[["symbol", "open", "high", "low", "close"]].reset_index(drop=True)
    for name in model.feature_names:
        example[name] = float("nan")
    return example


def gate_volatility_version(settings: Settings, registration: Registration, kind: str) -> GateDecision:
    """`training.promotion.gate_volatility` with the run's settings."""
    from finstream.models.tracking import configure_mlflow
    from training.promotion import gate_volatility

    return gate_volatility(configure_mlflow(settings), registration, kind, settings.promotion)
