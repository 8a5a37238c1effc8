"""The leaderboard: every family's walk-forward metrics side by side, read back from MLflow."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from finstream.config import Settings
from finstream.errors import NoDataError

#: columns of the leaderboard, in order (missing ones are skipped)
COLUMNS = [
    "task",
    "scope",
    "family",
    "ic",
    "raw_ic",
    "rank_ic",
    "oos_r2",
    "raw_oos_r2",
    "calibration_slope",
    "hit_rate",
    "mae",
    "auc",
    "log_loss",
    "sharpe",
    "ann_return",
    "max_drawdown",
    "turnover",
    "bh_sharpe",
    "dm_stat",
    "dm_pvalue",
    "raw_dm_pvalue",
    "spa_pvalue",
    "mcs_member",
    "n_folds",
    "train_seconds",
]


def leaderboard_from_mlflow(settings: Settings) -> pd.DataFrame:
    """The latest walk-forward run per (task, scope): one row per family with its overall metrics."""
    import mlflow

    from finstream.models.tracking import configure_mlflow

    configure_mlflow(settings)
    frames = []
    for task_name in ("return", "direction"):
        experiment = mlflow.get_experiment_by_name(f"finstream-{task_name}")
        if experiment is None:
            continue
        runs = mlflow.search_runs([experiment.experiment_id], order_by=["start_time DESC"])
        if runs.empty:
            continue
        if "tags.mlflow.parentRunId" not in runs or "tags.scope" not in runs:
            continue
        parent_ids = runs["tags.mlflow.parentRunId"]
        for scope, group in runs[parent_ids.isna()].groupby("tags.scope"):
            latest = group.iloc[0]["run_id"]
            children = runs[parent_ids == latest].copy()
            children["task"] = children["tags.task"]
            children["scope"] = scope
            children["family"] = children["tags.family"]
            children.columns = [c.removeprefix("metrics.") for c in children.columns]
            frames.append(children)
    if not frames:
        raise NoDataError("no training runs in MLflow yet: run `finstream train` first")
    board = pd.concat(frames, ignore_index=True)
    cols = [c for c in COLUMNS if c in board.columns]
    return (
        board[cols].sort_values(["task", "scope", "ic"], ascending=[True, True, False]).reset_index(drop=True)
    )


def write_leaderboard(
    board: pd.DataFrame, folder: Path, failures: Sequence[tuple[str, str, str]] = ()
) -> tuple[Path, Path]:
    """Markdown and HTML leaderboards under `folder`; `failures` (task, family, error) are listed too."""
    folder.mkdir(parents=True, exist_ok=True)
    md, html = folder / "leaderboard.md", folder / "leaderboard.html"
    lines = ["# finstream leaderboard (walk-forward, out-of-sample)", ""]
    failed = pd.DataFrame(list(failures), columns=["task", "family", "error"])
    if not board.empty:
        board = board[[c for c in COLUMNS if c in board.columns]]
    for (task, scope), group in board.groupby(["task", "scope"], sort=False) if not board.empty else []:
        lines += [
            f"## {task} — {scope}",
            "",
            group.drop(columns=["task", "scope"]).to_markdown(index=False, floatfmt=".4f"),
            "",
        ]
    lines += [
        "ic / rank_ic: Pearson / Spearman correlation of forecasts with realised next-day returns; "
        "oos_r2: Campbell–Thompson R² against the historical-mean forecast; "
        "sharpe, ann_return, max_drawdown, turnover: long/flat backtest after costs; "
        "bh_sharpe: buy-and-hold; dm_pvalue: Diebold–Mariano vs the zero forecast.",
    ]
    if not failed.empty:
        lines[2:2] = ["## failed candidates", "", failed.to_markdown(index=False), ""]
    md.write_text("\n".join(lines), encoding="utf-8")
    body = board.to_html(index=False, float_format=lambda v: f"{v:.4f}")
    if not failed.empty:
        body = "<h2>failed candidates</h2>" + failed.to_html(index=False) + body
    html.write_text(body, encoding="utf-8")
    return md, html
