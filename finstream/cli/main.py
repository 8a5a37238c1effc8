"""The `finstream` command line: one command per stage, plus the whole pipeline as a Prefect flow."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from datetime import date
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler

from finstream.config import Settings, get_settings
from finstream.errors import FinstreamError, SymbolError

app = typer.Typer(
    name="finstream",
    help="Real market data to features: ingest with failover, validate, build indicators, load Feast.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., None])

SymbolsOpt = Annotated[
    str | None,
    typer.Option("--symbols", "-s", help="Comma-separated canonical symbols, e.g. 000300.SH,^GSPC."),
]
SourceOpt = Annotated[
    str | None,
    typer.Option(help="auto (failover) | akshare | yfinance | alphavantage | tushare | packaged | csv:PATH"),
]
StartOpt = Annotated[str | None, typer.Option(help="First trading date, YYYY-MM-DD (inclusive).")]
EndOpt = Annotated[str | None, typer.Option(help="Last trading date, YYYY-MM-DD (inclusive).")]


def _date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise SymbolError(f"{option} {value!r} is not a date (expected YYYY-MM-DD)") from None


def _settings() -> Settings:
    try:
        return get_settings()
    except Exception as exc:  # pydantic ValidationError from params.yaml or FINSTREAM_* variables
        raise FinstreamError(f"invalid settings (params.yaml or FINSTREAM_* environment): {exc}") from exc


def cli_errors(fn: F) -> F:
    """Turn finstream's errors into one `error:` line on stderr and exit code 1 (2 for bad arguments)."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> None:
        try:
            fn(*args, **kwargs)
        except SymbolError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(2) from None
        except FinstreamError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
) -> None:
    """finstream: workflow-orchestrated ML platform for market data."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
    )


@app.command()
@cli_errors
def ingest(
    symbols: SymbolsOpt = None, source: SourceOpt = None, start: StartOpt = None, end: EndOpt = None
) -> None:
    """Fetch daily bars through the source router (failover ends at the packaged real history)."""
    from finstream.cli.render import ingest_table
    from finstream.data_stages import ingest_stage

    report = ingest_stage(_settings(), symbols, source, _date(start, "--start"), _date(end, "--end"))
    console.print(ingest_table(report))
    if report.failed:
        raise FinstreamError(f"{len(report.failed)} of {len(report.symbols)} symbols could not be ingested")


@app.command()
@cli_errors
def validate() -> None:
    """Run the Great Expectations suite: clean rows go on, failing rows go to quarantine with reasons."""
    from finstream.cli.render import validate_table
    from finstream.data_stages import validate_stage

    console.print(validate_table(validate_stage(_settings())))


@app.command()
@cli_errors
def features() -> None:
    """Compute every indicator of the spec over the validated bars."""
    from finstream.cli.render import features_table
    from finstream.data_stages import features_stage

    console.print(features_table(features_stage(_settings())))


@app.command()
@cli_errors
def materialize() -> None:
    """Apply the Feast definitions and load the latest features into the online store."""
    from finstream.cli.render import materialize_table
    from finstream.data_stages import materialize_stage

    console.print(materialize_table(materialize_stage(_settings())))


@app.command()
@cli_errors
def pipeline(
    symbols: SymbolsOpt = None, source: SourceOpt = None, start: StartOpt = None, end: EndOpt = None
) -> None:
    """Run the Prefect flow data_pipeline: ingest → validate → features → materialize."""
    settings = _settings()
    from finstream.symbols import parse_symbols

    if symbols is not None:
        parse_symbols(symbols)
    start_d, end_d = _date(start, "--start"), _date(end, "--end")
    from finstream.cli.render import (
        features_table,
        ingest_table,
        materialize_table,
        print_tables,
        validate_table,
    )

    t0 = time.perf_counter()
    with console.status("running Prefect flow data_pipeline …"):
        from flows.data_pipeline import data_pipeline

        result = data_pipeline(symbols=symbols, source=source, start=start_d, end=end_d)
    print_tables(
        console,
        ingest_table(result.ingest),
        validate_table(result.validate),
        features_table(result.features),
        materialize_table(result.materialize),
    )
    console.print(
        f"[bold green]pipeline finished[/] in {time.perf_counter() - t0:.1f} s"
        f" — state in {settings.paths.home}"
    )


FamiliesOpt = Annotated[
    str | None,
    typer.Option("--families", "-f", help="Comma-separated model families (default: params.yaml)."),
]
TasksOpt = Annotated[
    str | None, typer.Option("--tasks", help="regression, classification, or both (default).")
]


@app.command()
@cli_errors
def train(families: FamiliesOpt = None, tasks: TasksOpt = None) -> None:
    """Run the Prefect training_flow: walk-forward evaluate the zoo, log to MLflow, promote winners."""
    from finstream.cli.render import leaderboard_table

    settings = _settings()
    fams = [f.strip() for f in families.split(",")] if families else None
    tsks = [t.strip() for t in tasks.split(",")] if tasks else None
    unknown_tasks = set(tsks or []) - {"regression", "classification"}
    if unknown_tasks:
        raise SymbolError(f"unknown task(s) {sorted(unknown_tasks)}: use regression and/or classification")
    if fams:
        from finstream.models.zoo import FAMILIES

        unknown = sorted(set(fams) - set(FAMILIES))
        if unknown:
            raise SymbolError(f"unknown model families {unknown}; known: {', '.join(FAMILIES)}")
    t0 = time.perf_counter()
    with console.status("running Prefect flow training_flow …"):
        from flows.training import training_flow

        report = training_flow(families=fams, tasks=tsks)
    console.print(leaderboard_table(report.leaderboard()))
    for task_name, d in report.decisions.items():
        role = "[bold green]champion[/]" if d["promote"] else "[yellow]challenger[/]"
        console.print(f"{task_name}: {d['model']} v{d['version']} ({d['family']}) → {role}: {d['reason']}")
    console.print(
        f"trained {len(report.candidates)} candidates on {report.rows} rows "
        f"(data {report.data_version[:10]}) in {time.perf_counter() - t0:.0f} s"
        f" — MLflow: {settings.tracking_uri}"
    )


@app.command()
@cli_errors
def report() -> None:
    """Write and print the leaderboard of the latest training run (markdown + HTML under reports/)."""
    from finstream.cli.render import leaderboard_table
    from training.report import leaderboard_from_mlflow, write_leaderboard

    settings = _settings()
    board = leaderboard_from_mlflow(settings)
    md, html = write_leaderboard(board, settings.paths.reports)
    console.print(leaderboard_table(board))
    console.print(f"written {md} and {html}")


@app.command("sources")
@cli_errors
def list_sources() -> None:
    """List providers, their failover order per market, and the packaged symbols installed here."""
    from rich.table import Table

    from finstream.sources.packaged import CATALOG, installed_symbols
    from finstream.sources.router import DEFAULT_PRIORITY

    table = Table(title="failover order", title_justify="left")
    table.add_column("market")
    table.add_column("providers")
    for market, order in DEFAULT_PRIORITY.items():
        table.add_row(market, " → ".join(order))
    console.print(table)
    have = set(installed_symbols())
    pk = Table(title="packaged real history", title_justify="left")
    for col in ("symbol", "package", "license", "installed"):
        pk.add_column(col)
    for sym, ds in CATALOG.items():
        pk.add_row(sym, ds.package, ds.license, "yes" if sym in have else "no")
    console.print(pk)


def _register_subcommands() -> None:
    from finstream.cli.models import models_app
    from finstream.cli.rl import rl_app
    from finstream.cli.serve import serve

    app.add_typer(models_app, name="models", help="List, promote and roll back registered models.")
    app.add_typer(rl_app, name="rl", help="Train and evaluate Ray RLlib trading agents (PPO, DQN).")
    app.command("serve")(serve)


_register_subcommands()
