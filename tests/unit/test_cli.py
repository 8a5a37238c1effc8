"""CLI: help on each command, one clear error line and a non-zero exit for bad arguments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finstream.cli.main import app
from finstream.config import Settings

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    ["ingest", "validate", "features", "materialize", "pipeline", "sources", "train", "report", "models"],
)
def test_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "--symbols", "NOT A SYMBOL"], "cannot parse symbol 'NOT A SYMBOL'"),
        (["ingest", "--symbols", "600036"], "needs an exchange suffix"),
        (["ingest", "--start", "2020-13-01"], "--start '2020-13-01' is not a date"),
        (["ingest", "--source", "csv:/nonexistent/file.csv", "--symbols", "600036.SH"], "CSV file not found"),
        (["ingest", "--source", "bloomberg", "--symbols", "AAPL"], "unknown source 'bloomberg'"),
        (["ingest", "--symbols", "600519.SH", "--source", "packaged"], "no packaged history for 600519.SH"),
        (["validate"], "run `finstream ingest` first"),
        (["features"], "run `finstream validate` first"),
        (["materialize"], "run `finstream features` first"),
        (["train", "--families", "ridge,deepmagic"], "unknown model families ['deepmagic']"),
        (["train", "--tasks", "forecasting"], "unknown task(s) ['forecasting']"),
        (["report"], "run `finstream train` first"),
        (["models", "rollback", "finstream-return"], "unknown model 'finstream-return'"),
    ],
)
def test_bad_input_gives_one_error_line(settings: Settings, args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("finstream")
    proc = subprocess.run(
        [str(exe), "ingest", "--symbols", "600036", "--source", "packaged"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"FINSTREAM_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines()[0].startswith("error:")
