"""`finstream risk`: the risk report of the validated bars (VaR / ES, backtests, alerts), logged to MLflow.

The risk module, matplotlib and MLflow are imported inside the command; settings, the console and the error
handling come from finstream.cli.common. finstream.cli.main mounts this sub-app.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from finstream.cli.common import cli_errors, console, load_settings, make_app, split_names

if TYPE_CHECKING:
    from rich.console import Group

    from finstream.config import Settings
    from finstream.risk.report import RiskReport

risk_app = make_app("risk", "Risk of the stored bars: VaR / ES per method, VaR backtests, alerts.")

#: the MLflow experiment every risk report is logged to
EXPERIMENT = "finstream-risk"
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def check_interval(value: str) -> str:
    """A bar interval finstream stores; anything else is a usage error (exit 2)."""
    from finstream.intervals import INTERVALS

    if value not in INTERVALS:
        raise typer.BadParameter(f"{value!r} is no bar interval; use one of {', '.join(INTERVALS)}")
    return value


@risk_app.callback()
def risk_main() -> None:
    """Risk reports (settings under `risk:` in params.yaml, FINSTREAM_RISK__* variables)."""


@risk_app.command("report")
@cli_errors
def report_command(
    symbols: Annotated[
        str | None,
        typer.Option(
            "--symbols",
            "-s",
            help="Comma-separated symbols (default: ingest.symbols that have validated bars).",
        ),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            "-w",
            metavar="SYMBOL=WEIGHT,...",
            help='Portfolio weights summing to 1, e.g. "000300.SH=0.4,^GSPC=0.6".',
        ),
    ] = None,
    interval: Annotated[
        str,
        typer.Option(
            "--interval", "-i", callback=check_interval, metavar="1m|5m|15m|30m|1h|1d", help="Bar interval."
        ),
    ] = "1d",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable JSON summary instead of tables.")
    ] = False,
    mlflow_log: Annotated[
        bool,
        typer.Option("--mlflow/--no-mlflow", help=f"Log the report to the MLflow experiment {EXPERIMENT}."),
    ] = True,
) -> None:
    """Latest VaR / ES per symbol (and portfolio), walk-forward VaR backtests, alerts; markdown + HTML."""
    from finstream.risk.report import parse_weights, risk_report, write_report

    settings = load_settings()
    w_map = parse_weights(weights) if weights is not None else None
    report = risk_report(settings, split_names(symbols), w_map, interval)
    md, page, plots = write_report(report, settings.paths.reports / "risk")
    run_id = log_to_mlflow(settings, report, [md, page, *plots]) if mlflow_log else None
    if as_json:
        payload = report.to_dict()
        payload["files"] = {"markdown": str(md), "html": str(page), "plots": [str(p) for p in plots]}
        payload["mlflow"] = {"experiment": EXPERIMENT, "run_id": run_id} if run_id else None
        typer.echo(json.dumps(payload, indent=2, allow_nan=False))
        return
    console.print(report_view(report))
    console.print(f"written {md}\n        {page}\n        {len(plots)} exceedance plot(s) next to them")
    if run_id:
        console.print(f"MLflow: run {run_id} in experiment {EXPERIMENT} ({settings.tracking_uri})")


def _pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:.2f}%"


def report_view(report: RiskReport) -> Group:
    """Rich tables: latest risk per series and method, backtest verdicts, active alerts and recent counts."""
    from rich import box
    from rich.console import Group
    from rich.table import Table

    from finstream.risk.report import (
        SIGNIFICANCE,
        alert_window_text,
        alerts_display,
        backtest_display,
        latest_display,
        summary_display,
    )

    def table(title: str, frame: Any, numeric: set[str], styles: list[str] | None = None) -> Table:
        t = Table(
            title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
        )
        for col in frame.columns:
            t.add_column(
                str(col),
                justify="right" if col in numeric else "left",
                no_wrap=col not in ("message", "verdict"),
            )
        for i, row in enumerate(frame.itertuples(index=False)):
            cells = []
            for col, value in zip(frame.columns, row, strict=True):
                text = escape(str(value))
                if col == "verdict":
                    text = f"[green]{text}[/]" if value == "pass" else f"[red]{text}[/]"
                cells.append(text)
            t.add_row(*cells, style=styles[i] if styles else None)
        return t

    summary = summary_display(report).drop(columns=["EWMA vol", "t df"])
    latest = latest_display(report)
    backtests = backtest_display(report).drop(columns=["bars", "zone"])
    backtests = backtests.rename(
        columns={"expected": "exp.", "observed": "obs.", "Kupiec p": "Kup. p", "Christoffersen p": "Chr. p"}
    )
    backtests["verdict"] = backtests["verdict"].str.replace(f" at {SIGNIFICANCE * 100:g} %", "", regex=False)
    for frame in (latest, backtests):  # the series name on its first row only
        frame["series"] = frame["series"].where(frame["series"] != frame["series"].shift(), "")
    level_cols = {c for c in latest.columns if c.startswith(("VaR", "ES"))}
    parts: list[Any] = [
        table(
            f"[bold]latest risk[/] ({report.interval} bars; VaR / ES = forecast loss of the next bar)",
            summary,
            {"bars", "price", "vol", "drawdown", "max DD", "spike"},
        ),
        table("[bold]VaR / ES per method[/]", latest, level_cols),
        table(
            f"[bold]VaR backtests[/] (walk-forward, whole history; reject at {SIGNIFICANCE * 100:g} %)",
            backtests,
            {"level", "exp.", "obs.", "Kup. p", "Chr. p", "CC p"},
        ),
    ]
    active = alerts_display(report.last_alerts(), report.interval)
    if len(active):
        styles = [SEVERITY_STYLE[s] for s in active["severity"]]
        parts.append(table("[bold]alerts on the last bar[/]", active, set(), styles))
    else:
        parts.append("[green]no alert on the last bar[/]")
    counts = report.alert_counts()
    if len(counts):
        styles = [SEVERITY_STYLE[s] for s in counts["severity"]]
        parts.append(
            table(f"[bold]alerts over the last {report.alert_window} bars[/]", counts, {"count"}, styles)
        )
    parts.append(f"[dim]{escape(alert_window_text(report))}[/]")
    parts += [f"note: {escape(n)}" for n in report.notes]
    return Group(*parts)


def mlflow_metrics(report: RiskReport) -> dict[str, float]:
    """Finite metrics per series ("^GSPC" as "_GSPC"): latest VaR / ES and measures, backtest p-values and
    exceedance counts, alert counts."""
    from finstream.risk.measures import es_column, level_tag, var_column
    from finstream.risk.report import file_tag

    out: dict[str, float] = {}
    for name, s in report.series.items():
        tag = file_tag(name)
        last = s.latest
        for method in report.methods:
            for level in report.params.levels:
                for column in (var_column(method, level), es_column(method, level)):
                    out[f"{tag}/{column}"] = float(last[column])
        for key in ("vol", "ewma_vol", "drawdown", "max_drawdown", "vol_spike", "t_df"):
            out[f"{tag}/{key}"] = float(last[key])
        for row in s.backtests.to_dict("records"):
            suffix = f"{row['method']}_{level_tag(row['level'])}"
            out[f"{tag}/kupiec_p_{suffix}"] = row["kupiec_pvalue"]
            out[f"{tag}/christoffersen_p_{suffix}"] = row["independence_pvalue"]
            out[f"{tag}/cc_p_{suffix}"] = row["conditional_coverage_pvalue"]
            out[f"{tag}/exceedances_{suffix}"] = row["exceedances"]
            out[f"{tag}/expected_exceedances_{suffix}"] = row["expected"]
        out[f"{tag}/alerts_last_bar"] = len(s.last_alerts)
        out[f"{tag}/alerts_recent"] = len(s.recent_alerts)
    return {k: float(v) for k, v in out.items() if math.isfinite(float(v))}


def log_to_mlflow(settings: Settings, report: RiskReport, files: list[Path]) -> str:
    """Log `report` as one run of the MLflow experiment "finstream-risk": params, metrics, verdict tags and
    `files` (markdown, HTML, plots) as artifacts under report/; returns the run id."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    from finstream.models.tracking import configure_mlflow, ensure_experiment

    with quiet_mlflow():
        configure_mlflow(settings)
        experiment_id = ensure_experiment(EXPERIMENT, settings)
        return _log_run(mlflow, experiment_id, report, files)


@contextlib.contextmanager
def quiet_mlflow() -> Iterator[None]:
    """MLflow's own INFO lines (database set-up, migrations) and warnings off the terminal (not with -v)."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    if not logging.getLogger().isEnabledFor(logging.INFO):
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
            yield
    finally:
        logger.setLevel(level)


def _log_run(mlflow: Any, experiment_id: str, report: RiskReport, files: list[Path]) -> str:
    from finstream.risk.measures import level_tag
    from finstream.risk.report import file_tag

    params = report.params
    run_name = f"risk-{report.created.strftime('%Y%m%dT%H%M%SZ')}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params(
            {
                "symbols": ",".join(report.symbols),
                "weights": json.dumps(report.weights) if report.weights else "none",
                "interval": report.interval,
                "levels": ",".join(level_tag(v) for v in params.levels),
                "window": params.window,
                "ewma_lambda": params.ewma_lambda,
                "alert_method": params.alert_method,
                "drawdown_window": params.drawdown_window,
                "vol_window": params.vol_window,
            }
        )
        mlflow.log_metrics(mlflow_metrics(report))
        tags = {"finstream.kind": "risk-report"}
        for name, s in report.series.items():
            for row in s.backtests.to_dict("records"):
                tags[f"verdict.{file_tag(name)}.{row['method']}_{level_tag(row['level'])}"] = row["verdict"]
        mlflow.set_tags(tags)
        for path in files:
            mlflow.log_artifact(str(path), artifact_path="report")
        return str(run.info.run_id)


# ------------------------------------------------------------------------------------------- volatility


def check_proxy(value: str) -> str:
    """A variance proxy of training.volatility ("sq" or "gk"); anything else is a usage error (exit 2)."""
    if value not in ("sq", "gk"):
        raise typer.BadParameter(
            f"{value!r} is no variance proxy; use sq (squared return) or gk (Garman–Klass)"
        )
    return value


@risk_app.command("volatility")
@cli_errors
def volatility_command(
    families: Annotated[
        str | None,
        typer.Option(
            "--families",
            "-f",
            help="Comma-separated zoo families to evaluate as candidates (default: ridge,xgboost).",
        ),
    ] = None,
    symbols: Annotated[
        str | None,
        typer.Option("--symbols", "-s", help="Comma-separated symbols (default: train.symbols)."),
    ] = None,
    proxy: Annotated[
        str,
        typer.Option(
            "--proxy",
            callback=check_proxy,
            metavar="sq|gk",
            help="Next-bar variance proxy: squared close-to-close return (sq) or Garman–Klass (gk).",
        ),
    ] = "sq",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable JSON summary instead of tables.")
    ] = False,
) -> None:
    """Walk-forward next-bar variance forecasts: GARCH / GJR / HAR / rolling baselines vs zoo families.

    QLIKE, MSE, Mincer–Zarnowitz R², DM test vs the best baseline; needs `finstream pipeline` first.
    """
    from finstream.errors import ConfigError
    from finstream.models.zoo import family_class
    from finstream.storage import BarTable
    from training.store_dataset import load_training_set
    from training.volatility import DEFAULT_FAMILIES, evaluate_volatility

    settings = load_settings()
    fams = split_names(families) or list(DEFAULT_FAMILIES)
    for family in fams:
        try:
            family_class(family)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--families") from None
    interval = settings.train.interval
    dataset, version = load_training_set(settings, split_names(symbols))
    bars = BarTable(settings.paths.validated_bars).read(
        symbols=sorted(dataset.X["symbol"].unique()),
        intervals=[interval],
        required=True,
        hint=f"run `finstream pipeline` for {interval} bars",
    )
    try:
        board = evaluate_volatility(
            dataset,
            bars,
            settings.train,
            fams,
            proxy,  # type: ignore[arg-type]
            settings.promotion.max_dm_pvalue,
        )
    except ValueError as exc:
        raise ConfigError(f"volatility evaluation failed: {exc}") from exc
    md = board.write_markdown(settings.paths.reports / "volatility.md")
    if as_json:
        payload = board.to_dict()
        payload["data_version"] = version
        payload["files"] = {"markdown": str(md)}
        typer.echo(json.dumps(payload, indent=2, allow_nan=False, default=str))
        return
    console.print(volatility_view(board.table, board.proxy, board.max_dm_pvalue, board.notes))
    console.print(
        f"data {version[:10]}, {len(board.forecasts)} test rows in {board.seconds:.1f} s — written {md}"
    )


def volatility_view(
    table: Any, proxy: str, max_dm_pvalue: float, notes: Any = (), scopes: Any = None
) -> Group:
    """Rich tables of a volatility leaderboard (training.volatility.TABLE_COLUMNS): one per scope."""
    from rich import box
    from rich.console import Group
    from rich.table import Table

    def num(value: float, digits: int) -> str:
        return "-" if not math.isfinite(float(value)) else f"{float(value):.{digits}f}"

    parts: list[Any] = []
    for scope in scopes if scopes is not None else table["scope"].unique():
        frame = table[table["scope"] == scope].reset_index(drop=True)
        best = frame["best_baseline"].iloc[0]
        t = Table(
            title=f"[bold]{escape(str(scope))}[/] next-bar variance ({proxy} proxy, %²), "
            f"best baseline {best}",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            collapse_padding=True,
        )
        for col in ("model", "kind", "QLIKE", "MSE", "MZ R²", "MZ b", "n", "DM", "DM p", "beats"):
            t.add_column(col, justify="left" if col in ("model", "kind", "beats") else "right", no_wrap=True)
        for r in frame.itertuples(index=False):
            beats = "[green]yes[/]" if r.beats_best_baseline else "no"
            t.add_row(
                escape(str(r.model)),
                "base" if r.kind == "baseline" else "cand",
                num(r.qlike, 4),
                num(r.mse, 2),
                num(r.mz_r2, 3),
                num(r.mz_slope, 2),
                str(r.n),
                num(r.dm_stat, 2),
                num(r.dm_pvalue, 3),
                beats,
                style="bold" if r.model == best else None,
            )
        parts.append(t)
    parts.append(
        "[dim]base = baseline, cand = zoo candidate; QLIKE = log f + y/f, MSE = (y − f)²; MZ b = slope of y"
        f" on f; DM: one-sided vs the best baseline; beats = lower QLIKE, DM p ≤ {max_dm_pvalue:g}[/]"
    )
    parts += [f"note: {escape(n)}" for n in notes]
    return Group(*parts)
