"""`finstream serve`: run the BentoML HTTP service (forecasts, quotes, models, health, metrics).

The command execs into `python -m bentoml serve serving.service:FinstreamService` with the environment
(FINSTREAM_HOME, FINSTREAM_API_KEYS, FINSTREAM_SERVE_*): the process a supervisor started *is* the BentoML
server, so SIGTERM or SIGINT to it stops BentoML and its workers (no orphan keeps the port), and importing
this module stays cheap. finstream.cli.main registers it with `app.command("serve")(serve)`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from finstream.cli.common import cli_errors, load_settings
from finstream.errors import FinstreamError

SERVICE = "serving.service:FinstreamService"
REPO_ROOT = Path(__file__).resolve().parents[2]


def serve_command(host: str, port: int) -> list[str]:
    """The bentoml command line that serves the finstream service on host:port."""
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        SERVICE,
        "--host",
        host,
        "--port",
        str(port),
        "--working-dir",
        str(REPO_ROOT),
    ]


@cli_errors
def serve(
    host: Annotated[
        str, typer.Option(help="Address to bind (0.0.0.0 to listen on every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 3000,
    reload_interval: Annotated[
        float | None,
        typer.Option(
            help="Seconds between registry polls for a new champion (0: only on POST /admin/reload)."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes (one per core is the usual choice; each loads the models). "
            "Default: FINSTREAM_SERVE_WORKERS, else 1.",
        ),
    ] = None,
) -> None:
    """Serve forecasts and quotes over HTTP from the champion models and the online feature store."""
    from serving.auth import API_KEYS_ENV, parse_api_keys

    settings = load_settings()  # fail here on invalid settings, not inside a worker
    if not parse_api_keys(os.environ.get(API_KEYS_ENV)):
        typer.echo(
            f"warning: {API_KEYS_ENV} is not set: all but /health, /ready, /metrics answer 401",
            err=True,
        )
    env = dict(os.environ)
    env.setdefault("FINSTREAM_HOME", str(settings.paths.home))
    if reload_interval is not None:
        env["FINSTREAM_SERVE_RELOAD_INTERVAL_S"] = str(reload_interval)
    if workers is not None:
        env["FINSTREAM_SERVE_WORKERS"] = str(workers)  # read by the @bentoml.service declaration
    command = serve_command(host, port)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(command[0], command, env)  # returns only on failure
    except OSError as exc:
        raise FinstreamError(f"cannot start the BentoML server: {exc}") from exc
