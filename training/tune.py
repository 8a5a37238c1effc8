"""Hyperparameter search with Ray Tune; every trial is an MLflow run; the final test period is never seen.

Trials are scored by walk-forward evaluation *inside* the tuning window: the data before the outer
evaluation's first test block. The outer walk-forward then judges the chosen parameters on data the
search never touched.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import pandas as pd

from finstream.config import Settings, TrainParams
from training.dataset import Dataset
from training.walk_forward import YEAR, test_period_start

log = logging.getLogger(__name__)

#: search spaces per family (Ray Tune sample functions are built lazily: importing ray is slow)
SPACES: dict[str, dict[str, tuple[str, Any]]] = {
    "xgboost": {
        "max_depth": ("choice", [2, 3, 4]),
        "learning_rate": ("loguniform", (0.01, 0.2)),
        "n_estimators": ("choice", [100, 200, 400]),
        "subsample": ("uniform", (0.6, 1.0)),
    },
    "ridge": {"alpha": ("loguniform", (0.1, 1000.0))},
    "random_forest": {
        "min_samples_leaf": ("choice", [20, 50, 100, 200]),
        "max_features": ("choice", [0.3, 0.6]),
    },
    "hist_gb": {"learning_rate": ("loguniform", (0.01, 0.2)), "max_leaf_nodes": ("choice", [7, 15, 31])},
}
GATE_METRIC = {"regression": "ic", "classification": "ic"}


def tuning_window(dataset: Dataset, params: TrainParams) -> Dataset:
    """The rows strictly before the outer walk-forward's test period (labels known before it starts)."""
    cutoff = test_period_start(dataset.event_time, params.test_years, params.min_train_years)
    return dataset.subset((pd.to_datetime(dataset.label_time, utc=True) < cutoff).to_numpy())


def inner_split(window: Dataset) -> dict[str, float | int]:
    """The inner walk-forward of the tuning window: its last third in 2 folds, the rest to train on."""
    times = pd.to_datetime(window.event_time, utc=True)
    span = (times.max() - times.min()) / YEAR
    return {"test_years": span / 3, "folds": 2, "min_train_years": span / 2}


def ray_temp_dir(settings: Settings) -> str:
    """Ray's session folder: under FINSTREAM_HOME, unless that path is too long for Ray's unix sockets.

    Ray puts sockets ~70 characters deep into its temp dir and AF_UNIX paths are capped at 107 bytes.
    """
    preferred = settings.paths.home.resolve() / "ray"
    if len(str(preferred)) <= 32:
        return str(preferred)
    return tempfile.mkdtemp(prefix="finstream-ray-")


def _space(family: str) -> dict[str, Any]:
    from ray import tune

    makers = {
        "choice": tune.choice,
        "uniform": lambda b: tune.uniform(*b),
        "loguniform": lambda b: tune.loguniform(*b),
    }
    return {name: makers[kind](arg) for name, (kind, arg) in SPACES[family].items()}


def _trial(
    config: dict[str, Any], dataset: Dataset, family: str, task: str, params: TrainParams
) -> dict[str, float]:
    from finstream.models.zoo import make_model
    from training.walk_forward import evaluate

    inner = params.model_copy(update=inner_split(dataset))
    result = evaluate(lambda: make_model(family, task, **config), dataset, task, inner, calibrate=False)
    return {k: float(v) for k, v in result.overall.items() if isinstance(v, int | float)}


def tune_family(settings: Settings, dataset: Dataset, family: str, task: str) -> dict[str, Any]:
    """Best parameters for `family` by inner walk-forward IC; {} when tuning is off or not defined."""
    params = settings.train
    if params.tune_samples <= 0 or family not in params.tune_families or family not in SPACES:
        return {}
    import ray
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from finstream.logs import adopt_ray
    from finstream.models.tracking import tracking_uri

    adopt_ray()  # Ray's and Tune's notices to the log file, not the terminal
    window = tuning_window(dataset, params)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(
            address=os.environ.get("RAY_ADDRESS"),
            num_cpus=None if os.environ.get("RAY_ADDRESS") else os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            _temp_dir=None if os.environ.get("RAY_ADDRESS") else ray_temp_dir(settings),
        )
    try:
        metric = GATE_METRIC[task]
        tuner = tune.Tuner(
            tune.with_parameters(_trial, dataset=window, family=family, task=task, params=params),
            param_space=_space(family),
            tune_config=tune.TuneConfig(
                metric=metric,
                mode="max",
                num_samples=params.tune_samples,
                search_alg=BasicVariantGenerator(random_state=params.seed),  # same seed, same trials
            ),
            run_config=tune.RunConfig(
                name=f"tune-{family}-{task}",
                storage_path=str(settings.paths.home.resolve() / "ray_results"),
                callbacks=[
                    MLflowLoggerCallback(
                        tracking_uri=tracking_uri(settings),
                        experiment_name=f"finstream-tune-{task}",
                        tags={"family": family, "task": task},
                    )
                ],
                verbose=0,
            ),
        )
        best = tuner.fit().get_best_result()
        log.info("tuned %s/%s: %s = %.4f with %s", family, task, metric, best.metrics[metric], best.config)
        return dict(best.config)
    finally:
        if started_ray:
            ray.shutdown()
