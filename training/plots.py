"""Evaluation figures as PNG files (matplotlib's Agg canvas, no pyplot global state, safe in workers)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from training.walk_forward import WalkForwardResult

log = logging.getLogger(__name__)

_LABELS = {
    "strategy": "strategy (long/flat)",
    "long_short": "long/short",
    "buy_and_hold": "buy and hold",
    "naive": "naive zero forecast",
}


def _new_figure(width: float = 8.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    log.debug("figure written: %s", path)
    return path


def equity_plot(equity: pd.DataFrame, path: Path, title: str = "Out-of-sample equity") -> Path:
    """Equity curves (strategy vs buy-and-hold vs naive, and whatever other columns `equity` has)."""
    fig = _new_figure()
    ax = fig.add_subplot()
    for col in equity.columns:
        ax.plot(equity.index, equity[col].to_numpy(), label=_LABELS.get(str(col), str(col)), linewidth=1.2)
    ax.axhline(1.0, color="grey", linewidth=0.6, linestyle=":")
    ax.set_title(title)
    ax.set_ylabel("equity (start = 1)")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def prediction_plot(predictions: pd.DataFrame, task: str, path: Path, bins: int = 10) -> Path:
    """Regression: predicted vs realised return scatter with a least-squares line.

    Classification: calibration curve (mean P(up) vs realised up-frequency per quantile bin of P(up)).
    """
    fig = _new_figure(6.0, 5.0)
    ax = fig.add_subplot()
    pred = predictions["pred"].to_numpy(dtype="float64")
    y = predictions["y"].to_numpy(dtype="float64")
    if task == "classification":
        binned = pd.qcut(pd.Series(pred), q=bins, duplicates="drop")
        table = pd.DataFrame({"p": pred, "y": y}).groupby(binned.to_numpy(), observed=True).mean()
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
        ax.plot(table["p"], table["y"], marker="o", label="model")
        lo, hi = min(table["p"].min(), table["y"].min()), max(table["p"].max(), table["y"].max())
        pad = 0.05
        ax.set_xlim(max(0.0, lo - pad), min(1.0, hi + pad))
        ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))
        ax.set_xlabel("predicted P(up)")
        ax.set_ylabel("realised up-frequency")
        ax.set_title("Calibration (out-of-sample)")
    else:
        ax.scatter(pred, y, s=4, alpha=0.3, label="test rows")
        if np.std(pred) > 0:
            slope, intercept = np.polyfit(pred, y, 1)
            xs = np.linspace(pred.min(), pred.max(), 50)
            ax.plot(xs, slope * xs + intercept, color="C1", label=f"fit (slope {slope:.2f})")
        ax.axhline(0.0, color="grey", linewidth=0.6)
        ax.axvline(0.0, color="grey", linewidth=0.6)
        ax.set_xlabel("predicted log return")
        ax.set_ylabel("realised log return")
        ax.set_title("Predicted vs realised (out-of-sample)")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def feature_importance_plot(importance: pd.Series, path: Path, top: int = 20) -> Path:
    """Horizontal bar chart of the `top` features by absolute importance (signed values kept)."""
    if importance.empty:
        raise ValueError("no feature importance to plot")
    chosen = importance.reindex(importance.abs().sort_values(ascending=False).index[:top])[::-1]
    fig = _new_figure(7.0, max(2.5, 0.3 * len(chosen) + 1.0))
    ax = fig.add_subplot()
    colors = ["C0" if v >= 0 else "C3" for v in chosen.to_numpy()]
    ax.barh([str(i) for i in chosen.index], chosen.to_numpy(), color=colors)
    ax.set_xlabel("importance")
    ax.set_title("Feature importance")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def evaluation_plots(
    result: WalkForwardResult, out_dir: Path, importance: pd.Series | None = None, prefix: str = ""
) -> list[Path]:
    """All evaluation figures of a walk-forward result into `out_dir`; returns the written paths."""
    out = Path(out_dir)
    paths = [
        equity_plot(result.equity, out / f"{prefix}equity.png"),
        prediction_plot(
            result.predictions,
            result.task,
            out / f"{prefix}{'calibration' if result.task == 'classification' else 'pred_vs_realised'}.png",
        ),
    ]
    if importance is not None and not importance.empty:
        paths.append(feature_importance_plot(importance, out / f"{prefix}feature_importance.png"))
    return paths
