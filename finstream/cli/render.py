"""Rich tables for the stage reports the CLI prints."""

from __future__ import annotations

import pandas as pd
from rich.console import Console, Group
from rich.table import Table

from finstream.data_stages import FeaturesReport, IngestReport, MaterializeReport, ValidateReport


def ingest_table(report: IngestReport) -> Table:
    table = Table(title=f"ingest → {report.path}", title_justify="left", min_width=76)
    numbers = ("read", "new", "changed", "stored")
    table.add_column("series", no_wrap=True)
    table.add_column("provider")
    for col in numbers:
        table.add_column(col, justify="right")
    table.add_column("period", no_wrap=True)
    skipped = []
    for s in report.symbols:
        tried = ", ".join(f"{a['provider']} {a['outcome']}" for a in s.attempts if a["outcome"] != "ok")
        if tried and not s.error:
            skipped.append(f"{s.symbol}: {tried}")
        period = f"{s.first}…{s.last}" if s.first else f"[red]{s.error}[/]"
        series = f"{s.symbol} {s.interval}"
        table.add_row(series, s.provider or "[red]none[/]", *(str(getattr(s, n)) for n in numbers), period)
    written = report.partitions_written
    lines = [f"{report.new_or_changed} bars new or changed; {written} partition file(s) rewritten"]
    lines += [f"failover: {line}" for line in skipped]
    table.caption = "\n".join(lines)
    return table


def validate_table(report: ValidateReport) -> Table:
    table = Table(title="validate (Great Expectations suite 'bars')", title_justify="left", min_width=76)
    for col in ("symbol", "interval", "input", "clean", "quarantined"):
        table.add_column(col, justify="left" if col in ("symbol", "interval") else "right")
    for row in report.per_symbol:
        table.add_row(
            str(row["symbol"]),
            str(row["interval"]),
            str(row["input"]),
            str(row["clean"]),
            str(row["quarantined"]),
        )
    if not report.partitions_validated:
        table.caption = (
            f"nothing changed since the last validation ({report.partitions_unchanged} partitions)"
        )
        return table
    failures = ", ".join(f"{k}: {v}" for k, v in report.failures.items() if v) or "none"
    kept = f"; {report.retained} earlier good versions kept" if report.retained else ""
    gaps = ", ".join(f"{k}: {v}" for k, v in report.session_gaps.items())
    table.caption = (
        f"{report.input} in = {report.clean} clean + {report.quarantined} quarantined{kept} "
        f"({report.partitions_validated} partitions validated, {report.partitions_unchanged} unchanged)\n"
        f"failures: {failures}\n"
        + (f"missing bars inside sessions: {gaps}\n" if gaps else "")
        + f"report: {report.report_path}"
    )
    return table


def features_table(report: FeaturesReport) -> Table:
    table = Table(title="features", title_justify="left", min_width=76)
    table.add_column("symbol")
    table.add_column("interval")
    table.add_column("rows", justify="right")
    for interval, by_symbol in report.intervals.items():
        for sym, n in by_symbol.items():
            table.add_row(sym, interval, str(n))
    table.caption = f"{report.rows} rows x {len(report.features)} indicators → " + ", ".join(
        report.paths.values()
    )
    return table


def materialize_table(report: MaterializeReport) -> Table:
    table = Table(
        title=f"materialize → Feast online store ({report.online_store})", title_justify="left", min_width=76
    )
    if report.latest:
        for col in report.latest[0]:
            table.add_column(col)
        for row in report.latest:
            table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    table.caption = f"{report.keys_written} entity keys written, window {report.start} .. {report.end}"
    return table


def print_tables(console: Console, *tables: Table) -> None:
    for table in tables:
        console.print(table)


LEADERBOARD_COLUMNS = {
    "family": "family",
    "ic": "IC",
    "oos_r2": "R²",
    "raw_oos_r2": "raw R²",
    "auc": "AUC",
    "dm_pvalue": "DM p",
    "raw_dm_pvalue": "raw DM p",
    "spa_pvalue": "SPA p",
    "mcs_member": "MCS",
}


def _cell(column: str, value: object) -> str:
    if column == "mcs_member":
        return "in" if value == 1.0 else "out"
    if isinstance(value, float):
        return f"{value:.4f}" if column in ("oos_r2", "raw_oos_r2") else f"{value:.3f}"
    return str(value)


def leaderboard_table(board: pd.DataFrame) -> Group:
    """One compact table per (task, scope) with the headline walk-forward metrics: calibrated, and raw beside
    them where calibration changes the verdict (R², DM p); the full table is in reports/leaderboard.md."""
    tables = []
    if board.empty:
        return Group("[red]no candidate finished its walk-forward evaluation[/]")
    for (task, scope), group in board.groupby(["task", "scope"], sort=False):
        table = Table(title=f"{task} — {scope} (walk-forward, out-of-sample)", title_justify="left")
        cols = [c for c in LEADERBOARD_COLUMNS if c in group.columns and group[c].notna().any()]
        for col in cols:
            left = col == "family"
            table.add_column(LEADERBOARD_COLUMNS[col], justify="left" if left else "right", no_wrap=left)
        for _, row in group.iterrows():
            table.add_row(*(_cell(c, row[c]) for c in cols))
        tables.append(table)
    return Group(*tables)
