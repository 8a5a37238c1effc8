"""`finstream models`: list the registry, promote a version by hand, roll the champion back.

MLflow is imported inside the commands (importing it takes about a second); settings, the console and the
error handling come from finstream.cli.common. finstream.cli.main mounts this sub-app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from finstream.cli.common import cli_errors, console, load_settings, make_app

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from rich.console import Group

models_app = make_app(
    "models", "The model registry: champion / challenger per task, manual promotion and rollback."
)

#: metrics shown in `models list` when any version carries them, in this order
KEY_METRICS = ("ic", "oos_r2", "sharpe", "mae", "accuracy", "dm_pvalue", "n_folds")
METRIC_HEADERS = {"dm_pvalue": "DM p", "n_folds": "folds"}
CHAMPION_ALIAS = "champion"

NameArg = Annotated[
    str, typer.Argument(help="Registered model, e.g. finstream-return or finstream-direction.")
]


def _client() -> MlflowClient:
    """An MLflow client on the configured tracking and registry URIs."""
    from finstream.models.tracking import configure_mlflow

    return configure_mlflow(load_settings())


@models_app.command("list")
@cli_errors
def list_models_command() -> None:
    """Every registered model and version with aliases, family, key metrics and the promotion decision."""
    from finstream.models.registry import list_models

    rows = list_models(_client())
    if not rows:
        console.print("no registered models yet: train and register a model first")
        return
    console.print(models_table(rows))


@models_app.command("promote")
@cli_errors
def promote_command(
    name: NameArg,
    version: Annotated[str, typer.Argument(help="Version number to make champion.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the version's tags and the audit).")] = "manual",
) -> None:
    """Make VERSION the champion of NAME now, bypassing the gates (the old champion can be rolled back to)."""
    from finstream.models.registry import champion_version, promote

    client = _client()
    before = champion_version(client, name)
    mv = promote(client, name, version, reason=reason)
    if before == str(mv.version):
        console.print(f"{escape(name)}: v{mv.version} is already champion; nothing changed")
        return
    was = f" (was v{before})" if before else ""
    console.print(f"{escape(name)}: v{mv.version} is champion{was}")


@models_app.command("rollback")
@cli_errors
def rollback_command(name: NameArg) -> None:
    """Give the champion alias of NAME back to the version the current champion replaced."""
    from finstream.models.registry import TAG_REASON, rollback

    mv = rollback(_client(), name)
    console.print(f"{escape(name)}: v{mv.version} is champion again ({escape(mv.tags.get(TAG_REASON, ''))})")


def models_table(rows: list[dict[str, Any]]) -> Group:
    """One compact table per registered model, a row per version; metric columns only where some version has
    the metric, so it stays readable in an 80-column terminal."""
    from rich import box
    from rich.console import Group
    from rich.table import Table

    tables: list[Table] = []
    for name in dict.fromkeys(row["name"] for row in rows):
        versions = [row for row in rows if row["name"] == name]
        shown = [m for m in KEY_METRICS if any(m in row["metrics"] for row in versions)]
        task = next((row["task"] for row in versions if row["task"]), None)
        title = f"[bold]{escape(name)}[/]" + (f" ({escape(task)})" if task else "")
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("v", justify="right", no_wrap=True)
        table.add_column("aliases", no_wrap=True)
        table.add_column("family", no_wrap=True)
        for metric in shown:
            table.add_column(METRIC_HEADERS.get(metric, metric), justify="right", no_wrap=True)
        table.add_column("decision", no_wrap=True)
        for row in versions:
            aliases = ", ".join(row["aliases"])
            style = "bold green" if CHAMPION_ALIAS in row["aliases"] else "yellow"
            table.add_row(
                str(row["version"]),
                f"[{style}]{escape(aliases)}[/]" if aliases else "-",
                escape(row["family"] or "-"),
                *(_fmt(row["metrics"].get(m)) for m in shown),
                escape(row["decision"] or "-"),
            )
        tables.append(table)
    return Group(*tables)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
