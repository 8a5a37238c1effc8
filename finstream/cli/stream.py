"""`finstream stream`: the real-time pipeline (consumers), `finstream stream replay` (the producer of real
history) and `finstream stream status` (bus counts, dead letters, consumers).

The stream package (Feast, MLflow, the models) is imported inside the commands, so `finstream --help` stays
fast. finstream.cli.main mounts this sub-app.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import date
from typing import TYPE_CHECKING, Annotated, Any

import typer

from finstream.cli.common import cli_errors, console, exit_on_sigterm, load_settings, split_names

if TYPE_CHECKING:
    from finstream.config import Settings
    from stream.config import StreamConfig

# make_app's settings, except that `finstream stream` alone runs the consumers instead of printing help
stream_app = typer.Typer(
    name="stream",
    help="Real-time pipeline: bars on Redis Streams -> features -> online store -> champions -> channels.",
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def check_intervals(value: str | None) -> str | None:
    """Comma-separated bar intervals; anything else is a usage error (exit 2)."""
    from finstream.intervals import INTERVALS

    for name in split_names(value) or []:
        if name not in INTERVALS:
            raise typer.BadParameter(f"{name!r} is no bar interval; use any of {', '.join(INTERVALS)}")
    return value


def check_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (expected YYYY-MM-DD)") from None


def _intervals(settings: Settings, value: str | None) -> list[str]:
    return split_names(value) or [settings.train.interval]


def _config(**overrides: Any) -> StreamConfig:
    from stream.config import StreamConfig

    return StreamConfig(**{k: v for k, v in overrides.items() if v is not None})


IntervalsOpt = Annotated[
    str | None,
    typer.Option(
        "--interval",
        "-i",
        callback=check_intervals,
        metavar="1m,1h,...",
        help="Bar interval(s), comma-separated (default: train.interval). One bus per interval.",
    ),
]
PartitionsOpt = Annotated[
    int | None, typer.Option(min=1, help="Streams per bus (default 16; fixed for the life of a bus).")
]


@stream_app.callback(invoke_without_command=True)
@cli_errors
def stream_main(
    ctx: typer.Context,
    interval: IntervalsOpt = None,
    consumers: Annotated[
        int, typer.Option("--consumers", "-n", min=1, help="Consumer processes (or threads) sharing the bus.")
    ] = 1,
    threads: Annotated[
        bool, typer.Option("--threads", help="Run the consumers as threads of this process (one core).")
    ] = False,
    index: Annotated[
        str | None,
        typer.Option(
            metavar="I,J,...",
            help="Run only these consumer indices of --consumers here (spread one bus over machines).",
        ),
    ] = None,
    partitions: PartitionsOpt = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="XREADGROUP COUNT per partition.")] = None,
    score: Annotated[
        bool, typer.Option("--score/--no-score", help="Score fresh rows with the registry's champions.")
    ] = True,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Prometheus metrics on 127.0.0.1:PORT (default 9109; 0: off)."),
    ] = None,
) -> None:
    """Run the consumers: incremental features, online store, champions, risk and alerts, the channels."""
    if ctx.invoked_subcommand is not None:
        return
    exit_on_sigterm()
    settings = load_settings()
    intervals = _intervals(settings, interval)
    config = _config(partitions=partitions, batch_size=batch_size, score=score, metrics_port=metrics_port)
    try:
        indices = [int(i) for i in split_names(index) or []] if index else None
    except ValueError:
        raise typer.BadParameter(f"--index {index!r}: give consumer numbers such as 0,2") from None
    if indices is not None and any(not 0 <= i < consumers for i in indices):
        raise typer.BadParameter(f"--index {index}: indices run from 0 to {consumers - 1}")
    from stream import exporter
    from stream.runner import Supervisor

    supervisor = Supervisor(settings, config, intervals, consumers, threads=threads, indices=indices)
    exporter.serve(config.metrics_port)
    mode = "threads" if threads else "processes"
    console.print(
        f"stream: {len(supervisor.indices)} consumer {mode} on {', '.join(intervals)} "
        f"(project {settings.feast_project}); channels finstream:{settings.feast_project}:ws:* — Ctrl-C stops"
    )
    if duration is not None:
        timer = threading.Timer(duration, supervisor.stop)
        timer.daemon = True
        timer.start()
    try:
        supervisor.run()
    except KeyboardInterrupt:
        supervisor.shutdown()
    console.print("stream stopped")


@stream_app.command("replay")
@cli_errors
def replay_command(
    symbols: Annotated[
        str | None,
        typer.Option("--symbols", "-s", help="Comma-separated symbols (default: every stored one)."),
    ] = None,
    interval: IntervalsOpt = None,
    source: Annotated[
        str,
        typer.Option(
            metavar="stored|packaged|ticks",
            help="stored validated bars, the packaged history, or ES=F's packaged trade ticks -> bars.",
        ),
    ] = "stored",
    speed: Annotated[
        str | None, typer.Option(metavar="1000x", help="Play market time this many times faster.")
    ] = None,
    rate: Annotated[
        str | None, typer.Option(metavar="20000/s", help="Publish this many bars per second.")
    ] = None,
    max_gap: Annotated[
        float,
        typer.Option(min=0, help="With --speed: longest wall-clock pause between bars (nights, weekends)."),
    ] = 1.0,
    start: Annotated[
        str | None, typer.Option(callback=check_date, metavar="YYYY-MM-DD", help="First trading date.")
    ] = None,
    end: Annotated[
        str | None, typer.Option(callback=check_date, metavar="YYYY-MM-DD", help="Last trading date.")
    ] = None,
    last: Annotated[int | None, typer.Option(min=1, help="Only each series' last N bars.")] = None,
    partitions: PartitionsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Publish real history onto the bus (as fast as possible, at --speed 1000x, or at --rate 20000/s)."""
    from finstream.errors import ConfigError
    from finstream.symbols import parse_symbols
    from stream.replay import Replayer, load_history, parse_rate, parse_speed

    settings = load_settings()
    intervals = _intervals(settings, interval)
    config = _config(partitions=partitions)
    if speed is not None and rate is not None:
        raise ConfigError("give --speed or --rate, not both")
    names = [s.canonical for s in parse_symbols(symbols)] if symbols else None
    series = [(s, i) for i in intervals for s in (names or _default_symbols(settings, source, i))]
    bars = load_history(settings, series, source, start=start, end=end, last=last)  # type: ignore[arg-type]
    buses = {i: config.bus(settings, i) for i in intervals}
    replayer = Replayer(
        buses,
        speed=parse_speed(speed) if speed else None,
        rate=parse_rate(rate) if rate else None,
        max_gap_s=max_gap,
    )
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"replaying {len(bars)} bars", total=len(bars))
        report = replayer.run(bars, progress=lambda n: progress.advance(task, n))
    for bus in buses.values():
        bus.close()
    payload = {
        "bars": report.bars,
        "seconds": round(report.seconds, 3),
        "bars_per_s": round(report.bars_per_s, 1),
        "first": report.first,
        "last": report.last,
        "per_interval": report.per_interval,
        "series": [f"{s} {i}" for s, i in series],
    }
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    console.print(
        f"replayed {report.bars} bars of {len(series)} series ({source}) in {report.seconds:.2f} s "
        f"({report.bars_per_s:,.0f} bars/s): {report.first} … {report.last}"
    )


def _default_symbols(settings: Settings, source: str, interval: str) -> list[str]:
    """Every stored symbol of `interval` (stored), or every packaged one (packaged, ticks)."""
    from finstream.errors import NoDataError

    if source == "stored":
        from finstream.storage import BarTable

        table = BarTable(settings.paths.validated_bars)
        found = sorted({p.symbol for p in table.partitions(intervals=[interval])})
        if not found:
            raise NoDataError(
                f"no validated {interval} bars: run `finstream ingest` and `finstream validate`"
            )
        return found
    from finstream.sources.packaged import packaged_series

    found = sorted(s for s, i in packaged_series(installed_only=True) if i == interval)
    if source == "ticks":
        found = [s for s in found if s == "ES=F"]
    if not found:
        raise NoDataError(f"no packaged {interval} history to replay from {source}")
    return found


@stream_app.command("status")
@cli_errors
def status_command(
    interval: IntervalsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Bus counts per interval (in, processed, dead letters, pending, lag) and the consumers' heartbeats."""
    from stream.monitor import Monitor

    settings = load_settings()
    intervals = _intervals(settings, interval)
    monitor = Monitor(settings, _config(), intervals)
    now = time.time()
    beats = monitor.heartbeats()
    metrics = monitor.metrics(beats, now)
    status, _ = monitor.status(beats, now)
    dead = {
        i: [
            {"id": d.message_id, "kind": d.kind, "reason": d.reason}
            for d in monitor.buses[i].dead_letters(monitor.config.group, count=20)
        ][-20:]
        for i in intervals
    }
    monitor.close()
    if as_json:
        payload = {
            "metrics": [m.model_dump(mode="json") for m in metrics],
            "status": status.model_dump(mode="json"),
            "dead_letters": dead,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"stream {settings.feast_project}", title_justify="left")
    for col in ("interval", "in", "processed", "dead", "duplicates", "pending", "lag", "consumers up"):
        table.add_column(col, justify="right" if col != "interval" else "left")
    for m in metrics:
        table.add_row(
            m.interval,
            str(m.bars_in),
            str(m.processed),
            str(m.dead_lettered),
            str(m.duplicates),
            str(m.pending),
            "-" if m.lag is None else str(m.lag),
            str(m.consumers_up),
        )
    console.print(table)
    console.print(f"pipeline: {status.state} ({status.message})")
    for interval_name, letters in dead.items():
        for letter in letters[-5:]:
            console.print(
                f"dead letter {interval_name} {letter['id']} [{letter['kind']}]: {letter['reason']}"
            )
