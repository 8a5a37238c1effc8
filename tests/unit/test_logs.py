"""Log routing of the `finstream` command: finstream's own records (and anyone's errors) on the terminal,
everything else only in the log file, worker processes included."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from finstream import logs


@pytest.fixture
def routed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, io.StringIO]]:
    for key in (logs.LOG_FILE_ENV, *logs.QUIET_ENV):  # setup sets them: restored (removed) afterwards
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    third = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
        for name in logs.THIRD_PARTY
    }
    terminal = io.StringIO()
    logging.captureWarnings(False)  # undo an earlier capture, so setup's takes over pytest's recorder
    path = logs.setup(tmp_path / "logs" / "finstream.log", logging.StreamHandler(terminal))
    try:
        yield path, terminal
    finally:
        logging.captureWarnings(False)
        root.handlers, root.level = saved
        for name, (handlers, propagate) in third.items():
            logging.getLogger(name).handlers, logging.getLogger(name).propagate = handlers, propagate
        logs._handler, logs.console_handler = None, None


def test_third_party_records_and_warnings_go_to_the_file_only(routed: tuple[Path, io.StringIO]) -> None:
    path, terminal = routed
    logging.getLogger("mlflow.pyfunc").warning("serialized using CloudPickle")
    logging.getLogger("ray.tune.utils.util").warning("may be a performance bottleneck")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library's UserWarning", UserWarning, stacklevel=1)
    logging.getLogger("finstream.data_stages").warning("kept 2 previously validated bars")
    logging.getLogger("some.library").error("the disk is full")
    logging.getLogger("finstream.sources").info("served AAPL from packaged")
    for handler in logging.getLogger().handlers:
        handler.flush()
    shown = terminal.getvalue()
    assert "kept 2 previously validated bars" in shown and "the disk is full" in shown
    assert "CloudPickle" not in shown and "bottleneck" not in shown and "UserWarning" not in shown
    assert "served AAPL" not in shown  # INFO only with -v
    written = path.read_text()
    for text in ("CloudPickle", "bottleneck", "a library's UserWarning", "kept 2 previously", "served AAPL"):
        assert text in written


def test_worker_processes_append_to_the_same_file(routed: tuple[Path, io.StringIO]) -> None:
    path, _ = routed
    code = (
        "import logging, warnings\n"
        "logging.getLogger('mlflow').warning('stderr handler installed')\n"
        "from finstream.logs import adopt_process\n"
        "adopt_process()\n"
        "logging.getLogger('mlflow').handlers = [logging.StreamHandler()]  # as MLflow does at import\n"
        "from finstream.logs import adopt\n"
        "adopt('mlflow')\n"
        "logging.getLogger('mlflow').warning('from the worker')\n"
        "warnings.warn('worker warning', UserWarning, stacklevel=1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "from the worker" not in done.stderr and "worker warning" not in done.stderr
    written = path.read_text()
    assert "from the worker" in written and "worker warning" in written
