"""Where log records go: finstream's progress to the terminal, third-party chatter to a log file.

The CLI calls `setup` once: every record (finstream's at INFO, everyone's warnings) is appended to
`FINSTREAM_HOME/logs/finstream.log`, while the terminal shows finstream's own warnings and errors (and its
rich tables and progress). Libraries that install their own console handlers (MLflow at import, Ray,
Great Expectations) and Python warnings (MLflow's pickling notices, sklearn's convergence warnings) are
sent to the file only; artifact-download and other tqdm progress bars are switched off by environment
variables that worker processes inherit. Worker processes (Prefect's process pool, Ray) find the file
through `FINSTREAM_LOG_FILE` and call `adopt_process`; `adopt` re-routes a library's logger after the
library (re)configured it.
"""

from __future__ import annotations

import logging
import os
from logging.handlers import WatchedFileHandler
from pathlib import Path

LOG_FILE_ENV = "FINSTREAM_LOG_FILE"
#: loggers of libraries that talk too much for a terminal (their records go to the file)
THIRD_PARTY = (
    "mlflow",
    "alembic",
    "sqlalchemy",
    "urllib3",
    "httpx",
    "great_expectations",
    "feast",
    "ray",
    "py.warnings",
    "matplotlib",
    "numba",
    "git",
)
#: environment switches that keep progress bars and telemetry off, in this process and its children
QUIET_ENV = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TQDM_DISABLE": "1",
    "RAY_DEDUP_LOGS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",  # Ray Tune's boxed progress tables
    # Prefect's console handler (its banners, flow and task run lines): warnings and errors only; the
    # records still reach the Prefect API (the UI shows every run's log) and, via `reattach`, the file
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
}
FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"

_handler: logging.Handler | None = None


console_handler: logging.Handler | None = None


def setup(path: Path, console: logging.Handler | None = None, console_level: int = logging.WARNING) -> Path:
    """Send every record to the log file at `path`, and only finstream's (at `console_level`) to
    `console`; third-party loggers and Python warnings go to the file alone. Returns the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.environ[LOG_FILE_ENV] = str(path)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    handler = _file_handler(path)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    if console is not None:
        global console_handler
        console.setLevel(console_level)
        console.addFilter(_OwnRecords())
        root.addHandler(console)
        console_handler = console
    logging.captureWarnings(True)
    for name in THIRD_PARTY:
        adopt(name)
    return path


def reattach() -> None:
    """Put the file handler back on the root logger after a library replaced the root's handlers (Prefect
    applies its logging config with dictConfig when it is imported)."""
    handler = _handler or _from_environment()
    root = logging.getLogger()
    if handler is not None and handler not in root.handlers:
        root.addHandler(handler)
        root.setLevel(min(root.level, logging.INFO) if root.level else logging.INFO)
    for name in THIRD_PARTY:
        adopt(name)


def adopt(name: str) -> None:
    """Route logger `name` to the log file only (after its library installed its own handlers)."""
    handler = _handler or _from_environment()
    if handler is None:
        return
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False


#: Ray's loggers with handlers of their own (installed when ray is imported)
RAY_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.air", "ray.data", "ray.rllib")


def adopt_ray() -> None:
    """Route Ray's loggers to the log file: call right after `import ray` (it installs stderr handlers)."""
    for name in RAY_LOGGERS:
        adopt(name)


def adopt_process() -> None:
    """In a worker process started by a finstream command: send its warnings and third-party records to
    the command's log file (no-op when there is none)."""
    if _from_environment() is None:
        return
    logging.captureWarnings(True)
    for name in THIRD_PARTY:
        adopt(name)


def _file_handler(path: Path) -> logging.Handler:
    global _handler
    if _handler is None or getattr(_handler, "baseFilename", None) != str(path.resolve()):
        _handler = WatchedFileHandler(path, encoding="utf-8", delay=True)
        _handler.setFormatter(logging.Formatter(FORMAT))
        _handler.setLevel(logging.INFO)
    return _handler


def _from_environment() -> logging.Handler | None:
    configured = os.environ.get(LOG_FILE_ENV)
    return _file_handler(Path(configured)) if configured else None


class _OwnRecords(logging.Filter):
    """Lets finstream's own records (its top-level packages) through to the terminal, and anyone's errors."""

    OWN = ("finstream", "training", "serving", "flows", "expectations", "stream", "__main__")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.name.split(".", 1)[0] in self.OWN
