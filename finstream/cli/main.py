"""The `finstream` command line: one command per stage, plus the whole pipeline as a Prefect flow.

This is the top layer: it mounts the sub-apps (models, rl, serve), which share finstream.cli.common with it
and never import this module. Heavy packages (flows, training, serving, Feast, MLflow, torch, Ray) are
imported inside the commands, so `finstream --help` stays fast.
"""

from __future__ import annotations

import logging
import time
from datetime import date
from typing import Annotated

import typer

from finstream.cli.common import (
    cli_errors,
    console,
    err_console,
    exit_on_sigterm,
    load_settings,
    make_app,
    split_names,
)
from finstream.cli.models import models_app
from finstream.cli.risk import risk_app
from finstream.cli.rl import rl_app
from finstream.cli.serve import serve
from finstream.cli.stream import stream_app
from finstream.errors import FinstreamError

app = make_app(
    "finstream",
    "Real market data to features: ingest with failover, validate, build indicators, load Feast.",
)

#: the tasks `finstream train --tasks` accepts (finstream.models.zoo's Task, without importing the zoo)
TASKS = ("regression", "classification", "volatility")


def iso_date(value: str) -> date:
    """Parse a YYYY-MM-DD option value; anything else is a usage error (exit 2) naming the option."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (expected YYYY-MM-DD)") from None


def check_families(value: str | None) -> str | None:
    """Reject unknown model families while the arguments are parsed (a usage error, exit 2).

    The zoo (torch, xgboost: about 2 s) is imported only when --families is given: training imports it anyway.
    """
    names = split_names(value)
    if names:
        from finstream.models.zoo import FAMILIES

        unknown = sorted(set(names) - set(FAMILIES))
        if unknown:
            raise typer.BadParameter(f"unknown model families {unknown}; known: {', '.join(FAMILIES)}")
    return value


def check_interval_option(value: str | None) -> str | None:
    """A bar interval (1m, 5m, 15m, 30m, 1h, 1d); anything else is a usage error."""
    from finstream.intervals import INTERVALS

    if value is not None and value not in INTERVALS:
        raise typer.BadParameter(f"{value!r} is no bar interval; use one of {', '.join(INTERVALS)}")
    return value


def check_bar_time(value: str) -> str:
    if value not in ("open", "close"):
        raise typer.BadParameter(f"{value!r}: use open or close")
    return value


def check_tasks(value: str | None) -> str | None:
    """Reject tasks other than regression, classification and volatility (a usage error, exit 2)."""
    unknown = sorted(set(split_names(value) or []) - set(TASKS))
    if unknown:
        raise typer.BadParameter(f"unknown task(s) {unknown}: use any of {', '.join(TASKS)}")
    return value


SymbolsOpt = Annotated[
    str | None,
    typer.Option("--symbols", "-s", help="Comma-separated canonical symbols, e.g. 000300.SH,^GSPC."),
]
SourceOpt = Annotated[
    str | None,
    typer.Option(help="auto (failover) | akshare | yfinance | alphavantage | tushare | packaged | csv:PATH"),
]
StartOpt = Annotated[
    date | None,
    typer.Option(parser=iso_date, metavar="YYYY-MM-DD", help="First trading date, YYYY-MM-DD (inclusive)."),
]
EndOpt = Annotated[
    date | None,
    typer.Option(parser=iso_date, metavar="YYYY-MM-DD", help="Last trading date, YYYY-MM-DD (inclusive)."),
]
IntervalOpt = Annotated[
    str | None,
    typer.Option(
        "--interval",
        "-i",
        callback=check_interval_option,
        metavar="1m|5m|15m|30m|1h|1d",
        help="Bar interval to fetch (default: ingest.interval; a csv:PATH file: what it holds).",
    ),
]
FamiliesOpt = Annotated[
    str | None,
    typer.Option(
        "--families",
        "-f",
        callback=check_families,
        help="Comma-separated model families (default: params.yaml).",
    ),
]
TasksOpt = Annotated[
    str | None,
    typer.Option(
        "--tasks", callback=check_tasks, help="regression, classification, volatility (default: train.tasks)."
    ),
]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
) -> None:
    """finstream: workflow-orchestrated ML platform for market data."""
    from rich.logging import RichHandler

    from finstream import logs

    level = logging.INFO if verbose else logging.WARNING
    if logs.console_handler is not None:  # `run`: the file takes everything, the terminal ours
        logs.console_handler.setLevel(level)
        return
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
    )


def run() -> None:
    """The `finstream` command: every log record to FINSTREAM_HOME/logs/finstream.log, finstream's own
    warnings (and anyone's errors) to the terminal; third-party chatter and progress bars stay out of it."""
    from rich.logging import RichHandler

    from finstream import logs
    from finstream.config import get_settings

    try:
        path = get_settings().paths.home / "logs" / "finstream.log"
    except Exception:  # invalid settings: the command reports them; no log file then
        path = None
    if path is not None:
        console = RichHandler(console=err_console, show_path=False, rich_tracebacks=False)
        console.setFormatter(logging.Formatter("%(message)s"))
        logs.setup(path, console)
    app()


@app.command()
@cli_errors
def ingest(
    symbols: SymbolsOpt = None,
    source: SourceOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    interval: IntervalOpt = None,
    resample: Annotated[
        str | None,
        typer.Option(
            callback=check_interval_option,
            metavar="5m|15m|30m|1h|1d",
            help="csv:PATH: aggregate its bars to this coarser interval (a mismatch is refused without it).",
        ),
    ] = None,
    tz: Annotated[
        str | None,
        typer.Option(help="Zone of a CSV's naive timestamps (default: the market's exchange zone)."),
    ] = None,
    bar_time: Annotated[
        str,
        typer.Option(
            callback=check_bar_time,
            metavar="open|close",
            help="Whether a CSV's intraday rows are stamped by the bar's open (default) or close time.",
        ),
    ] = "open",
) -> None:
    """Fetch bars of one interval through the source router (failover ends at the packaged real history)."""
    from finstream.cli.render import ingest_table
    from finstream.data_stages import ingest_stage

    report = ingest_stage(
        load_settings(),
        symbols,
        source,
        start,
        end,
        resample=resample,
        interval=interval,
        tz=tz,
        bar_time=bar_time,
    )
    console.print(ingest_table(report))
    if report.failed:
        raise FinstreamError(f"{len(report.failed)} of {len(report.symbols)} symbols could not be ingested")


@app.command()
@cli_errors
def validate() -> None:
    """Run the Great Expectations suite: clean rows go on, failing rows go to quarantine with reasons."""
    from finstream.cli.render import validate_table
    from finstream.data_stages import validate_stage

    console.print(validate_table(validate_stage(load_settings())))


@app.command()
@cli_errors
def features() -> None:
    """Compute every indicator of the spec over the validated bars."""
    from finstream.cli.render import features_table
    from finstream.data_stages import features_stage

    console.print(features_table(features_stage(load_settings())))


@app.command()
@cli_errors
def materialize() -> None:
    """Apply the Feast definitions and load the latest features into the online store."""
    from finstream.cli.render import materialize_table
    from finstream.data_stages import materialize_stage

    console.print(materialize_table(materialize_stage(load_settings())))


@app.command()
@cli_errors
def pipeline(
    symbols: SymbolsOpt = None,
    source: SourceOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    interval: IntervalOpt = None,
) -> None:
    """Run the Prefect flow data_pipeline: ingest → validate → features → materialize."""
    exit_on_sigterm()
    settings = load_settings()
    from finstream.symbols import parse_symbols

    if symbols is not None:
        parse_symbols(symbols)
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

        result = data_pipeline(symbols=symbols, source=source, start=start, end=end, interval=interval)
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


@app.command()
@cli_errors
def train(
    families: FamiliesOpt = None,
    tasks: TasksOpt = None,
    refresh_data: Annotated[
        bool,
        typer.Option(
            "--refresh-data",
            help="Run the data pipeline first (the Prefect retrain_flow: data_pipeline, then training_flow).",
        ),
    ] = False,
) -> None:
    """Run the Prefect training_flow: walk-forward evaluate the zoo, log to MLflow, promote winners."""
    exit_on_sigterm()
    from rich.markup import escape

    from finstream.cli.render import leaderboard_table

    settings = load_settings()
    fams, tsks = split_names(families), split_names(tasks)
    t0 = time.perf_counter()
    name = "retrain_flow" if refresh_data else "training_flow"
    with console.status(f"running Prefect flow {name} …"):
        from flows.training import retrain_flow, training_flow

        flow_fn = retrain_flow if refresh_data else training_flow
        report = flow_fn(families=fams, tasks=tsks)
    if not report.leaderboard().empty or report.volatility is None:
        console.print(leaderboard_table(report.leaderboard()))
    if report.volatility is not None:
        from finstream.cli.risk import volatility_view

        vol = report.volatility
        console.print(
            volatility_view(
                vol.table,
                settings.train.volatility_proxy,
                settings.promotion.max_dm_pvalue,
                scopes=["pooled"],
            )
        )
        console.print(f"volatility leaderboard per symbol: {vol.markdown}")
    for task_name, d in report.decisions.items():
        role = "[bold green]champion[/]" if d.promote else "[yellow]challenger[/]"
        console.print(f"{task_name}: {d.model} v{d.version} ({d.family}) → {role}: {escape(d.reason)}")
    for failure in report.failures:
        console.print(f"[bold red]failed[/] {failure.task}/{failure.family}: {escape(failure.error)}")
    what = [f"{len(report.candidates)} candidates"] if report.candidates or report.failures else []
    if report.volatility is not None:
        what.append(f"{report.volatility.table['model'].nunique()} volatility models")
    board = f"; leaderboard: {report.leaderboard_path}" if report.leaderboard_path else ""
    console.print(
        f"trained {' and '.join(what)} on {report.rows} rows (data {report.data_version[:10]}) in "
        f"{time.perf_counter() - t0:.0f} s — MLflow: {settings.tracking_uri}{board}"
    )


@app.command()
@cli_errors
def report() -> None:
    """Write and print the leaderboard of the latest training run (markdown + HTML under reports/)."""
    from finstream.cli.render import leaderboard_table
    from training.report import leaderboard_from_mlflow, write_leaderboard

    settings = load_settings()
    board = leaderboard_from_mlflow(settings)
    md, html = write_leaderboard(board, settings.paths.reports)
    console.print(leaderboard_table(board))
    console.print(f"written {md} and {html}")


@app.command("hash-password")
@cli_errors
def hash_password_command() -> None:
    """Print the Argon2id hash of a password typed at the prompt, for FINSTREAM_USERS (sign-in)."""
    from serving.tokens import hash_password

    password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    typer.echo(hash_password(password))


@app.command("sources")
@cli_errors
def list_sources() -> None:
    """List providers, their failover order per market, and the packaged symbols installed here."""
    from rich.table import Table

    from finstream.sources.packaged import CATALOG, INTRADAY, packaged_series
    from finstream.sources.router import DEFAULT_PRIORITY

    table = Table(title="failover order", title_justify="left")
    table.add_column("market")
    table.add_column("providers")
    for market, order in DEFAULT_PRIORITY.items():
        table.add_row(market, " → ".join(order))
    console.print(table)
    have = set(packaged_series(installed_only=True))
    pk = Table(title="packaged real history", title_justify="left")
    for col in ("symbol", "interval", "package", "license", "installed"):
        pk.add_column(col)
    for sym, ds in CATALOG.items():
        pk.add_row(sym, "1d", ds.package, ds.license, "yes" if (sym, "1d") in have else "no")
    for (sym, interval), series in INTRADAY.items():
        installed = "yes" if (sym, interval) in have else "no"
        pk.add_row(sym, interval, f"{series.package} {series.version}", series.license, installed)
    console.print(pk)


app.add_typer(models_app, name="models", help="List, promote and roll back registered models.")
app.add_typer(rl_app, name="rl", help="Train and evaluate Ray RLlib trading agents (PPO, DQN).")
app.add_typer(risk_app, name="risk", help="Risk report: VaR/ES, backtests and alerts from validated bars.")
app.add_typer(stream_app, name="stream", help="Real-time pipeline on Redis Streams, and the replay producer.")
app.command("serve")(serve)
