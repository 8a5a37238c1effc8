"""`finstream rl`: train a Ray RLlib trading agent and show its held-out results next to the baselines.

Ray, MLflow, Prefect and the training package are imported inside the command (importing Ray and RLlib
takes seconds); settings, the console and the error handling come from finstream.cli.common.
finstream.cli.main mounts this sub-app.
"""

from __future__ import annotations

import math
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from finstream.cli.common import cli_errors, console, exit_on_sigterm, load_settings, make_app

if TYPE_CHECKING:
    from rich.console import Group

    from training.rl.agent_stages import AgentReport

rl_app = make_app(
    "rl", "Ray RLlib trading agents: train, then compare held-out with buy-and-hold and the supervised model."
)


class Algo(StrEnum):
    """The RLlib algorithms an agent can be trained with."""

    ppo = "ppo"
    dqn = "dqn"


@rl_app.callback()
def rl_main() -> None:
    """Ray RLlib trading agents (settings under `rl:` in params.yaml, FINSTREAM_RL__* variables)."""


@rl_app.command("train")
@cli_errors
def train_command(
    algo: Annotated[
        Algo | None, typer.Option("--algo", case_sensitive=False, help="ppo or dqn (default: rl.algo).")
    ] = None,
    iterations: Annotated[
        int | None,
        typer.Option("--iterations", "-n", min=1, help="Training iterations (default: rl.iterations)."),
    ] = None,
) -> None:
    """Run the Prefect rl_training_flow: train, evaluate held-out, export, register and gate the agent."""
    exit_on_sigterm()
    from training.rl.agent_stages import check_algo

    settings = load_settings()
    name = algo.value if algo is not None else settings.rl.algo
    check_algo(name, settings.rl)
    t0 = time.perf_counter()
    with console.status(f"running Prefect flow rl_training_flow ({name}) …"):
        from flows.rl import rl_training_flow

        report = rl_training_flow(algo=name, iterations=iterations)
    console.print(results_view(report))
    console.print(
        f"trained {report.algo} for {report.iterations} iterations in {report.train_seconds:.0f} s"
        f" (total {time.perf_counter() - t0:.0f} s) — MLflow run {report.run_id}, policy {report.policy_path}"
    )


def _pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:+.1f}%"


def _num(value: float, digits: int = 2) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}f}"


def results_view(report: AgentReport) -> Group:
    """Held-out table (agent vs buy-and-hold vs supervised), segment Sharpes, the verdict, the gates."""
    from rich import box
    from rich.console import Group
    from rich.table import Table

    ev = report.evaluation
    table = Table(
        title=(
            f"[bold]{escape(report.symbol)}[/] held-out {ev.start.date()} .. {ev.end.date()}"
            f" ({len(ev.rollout)} days, costs included)"
        ),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("strategy", no_wrap=True)
    for col in ("return/yr", "Sharpe", "max DD", "turns/yr", "equity"):
        table.add_column(col, justify="right", no_wrap=True)
    for name, row in ev.table().iterrows():
        table.add_row(
            escape(str(name)),
            _pct(row["ann_return"]),
            _num(row["sharpe"]),
            _pct(row["max_drawdown"]),
            _num(row["turnover_per_year"], 1),
            _num(row["final_equity"], 3),
        )
    seg = Table(
        title="Sharpe per held-out segment", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    seg.add_column("segment", no_wrap=True)
    shown = [c for c in ev.segments.columns if c.endswith("_sharpe")]
    names = {
        "agent_sharpe": "agent",
        "buy_and_hold_sharpe": "buy and hold",
        "supervised_sharpe": "supervised",
    }
    for col in shown:
        seg.add_column(names.get(col, col), justify="right", no_wrap=True)
    for _, row in ev.segments.iterrows():
        seg.add_row(f"{row['start'].date()} .. {row['end'].date()}", *(_num(float(row[c])) for c in shown))
    m = ev.metrics
    lines = [verdict(m, ev.supervised)]
    lines.append(f"DM test vs buy-and-hold (one-sided, losses = −returns): p = {_num(m['dm_pvalue'], 3)}")
    if "train_sharpe" in report.train_metrics:
        lines.append(
            f"in-sample (training period) Sharpe {_num(report.train_metrics['train_sharpe'])}"
            " — compare with the held-out figure above for overfitting"
        )
    lines += [f"note: {escape(n)}" for n in ev.notes]
    role = "[bold green]champion[/]" if report.promote else "[yellow]challenger[/]"
    lines.append(f"finstream-agent v{report.version} → {role}: {escape(report.reason)}")
    return Group(table, seg, *lines)


def verdict(metrics: dict[str, float], supervised: str | None) -> str:
    """One plain sentence: did the agent beat buy-and-hold (and the supervised signal) on held-out Sharpe?"""
    sharpe, bh = metrics["sharpe"], metrics["bh_sharpe"]
    parts = [
        f"agent Sharpe {_num(sharpe)} vs buy-and-hold {_num(bh)}: "
        + ("[green]agent ahead[/]" if sharpe > bh else "[red]agent behind[/]")
    ]
    if supervised is not None and "sup_sharpe" in metrics:
        sup = metrics["sup_sharpe"]
        parts.append(
            f"vs supervised {_num(sup)}: "
            + ("[green]agent ahead[/]" if sharpe > sup else "[red]agent behind[/]")
        )
    elif supervised is None:
        parts.append("no supervised champion to compare with")
    return "; ".join(parts)
