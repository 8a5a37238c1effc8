"""CLI: help on each command, usage errors (exit 2) for bad options, one clear error line for the rest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from datetime import date
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from finstream.cli.common import cli_errors, make_app
from finstream.cli.main import app
from finstream.config import Settings
from finstream.errors import ConfigError, FinstreamError, SymbolError

runner = CliRunner()

#: the frame Typer draws around a usage error; removed so a message wrapped inside it reads as one line
BOX_CHARS = re.compile("[│╭╮╰╯─]")


def plain(output: str) -> str:
    """Output without the error box and with every run of whitespace as one space."""
    return " ".join(BOX_CHARS.sub(" ", output).split())


@pytest.mark.parametrize(
    "command",
    [
        "ingest",
        "validate",
        "features",
        "materialize",
        "pipeline",
        "sources",
        "train",
        "report",
        "serve",
        "models",
        "models list",
        "models promote",
        "models rollback",
        "rl",
        "rl train",
    ],
)
def test_help(command: str) -> None:
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "--symbols", "NOT A SYMBOL"], "cannot parse symbol 'NOT A SYMBOL'"),
        (["ingest", "--symbols", "600036"], "needs an exchange suffix"),
        (["ingest", "--source", "csv:/nonexistent/file.csv", "--symbols", "600036.SH"], "CSV file not found"),
        (["ingest", "--source", "bloomberg", "--symbols", "AAPL"], "unknown source 'bloomberg'"),
        (["ingest", "--symbols", "600519.SH", "--source", "packaged"], "no packaged history for 600519.SH"),
        (["validate"], "run `finstream ingest` first"),
        (["features"], "run `finstream validate` first"),
        (["materialize"], "run `finstream features` first"),
        (["report"], "run `finstream train` first"),
        (["models", "rollback", "finstream-return"], "unknown model 'finstream-return'"),
    ],
)
def test_bad_input_gives_one_error_line(settings: Settings, args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "--start", "2020-13-45"], "Invalid value for '--start': '2020-13-45' is not a date"),
        (
            ["ingest", "--end", "yesterday"],
            "Invalid value for '--end': 'yesterday' is not a date (expected YYYY",
        ),
        (["pipeline", "--start", "2020-02-30"], "Invalid value for '--start': '2020-02-30' is not a date"),
        (["pipeline", "--end", "31.12.2024"], "Invalid value for '--end': '31.12.2024' is not a date"),
        (
            ["train", "--families", "ridge,deepmagic"],
            "Invalid value for '--families' / '-f': unknown model families ['deepmagic']; known: ridge,",
        ),
        (
            ["train", "--tasks", "forecasting"],
            "Invalid value for '--tasks': unknown task(s) ['forecasting']: use any of regression,"
            " classification, volatility",
        ),
        (
            ["ingest", "--resample", "2h"],
            "Invalid value for '--resample': '2h' is no bar interval; use one of",
        ),
        (["ingest", "--interval", "1w"], "Invalid value for '--interval' / '-i': '1w' is no bar interval"),
        (["ingest", "--bar-time", "middle"], "Invalid value for '--bar-time': 'middle': use open or close"),
        (["rl", "train", "--algo", "foo"], "Invalid value for '--algo'"),
        (["rl", "train", "--iterations", "0"], "Invalid value for '--iterations' / '-n'"),
        (["serve", "--port", "0"], "Invalid value for '--port'"),
    ],
)
def test_bad_option_is_a_usage_error(settings: Settings, args: list[str], message: str) -> None:
    """Rejected while the arguments are parsed: Click's usage error (exit 2), before the command runs."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    text = plain(result.output)
    assert text.startswith(f"Usage: finstream {args[0]}"), result.output
    assert message in text
    assert "error:" not in result.output  # not the runtime path (cli_errors' `error:` line)
    assert "Traceback" not in result.output


def test_usage_error_lists_what_is_allowed(settings: Settings) -> None:
    families = plain(runner.invoke(app, ["train", "-f", "xgboost,nope"]).output)
    assert "known: ridge, random_forest, hist_gb, xgboost" in families
    assert "['nope']" in families and "xgboost'" not in families  # only the unknown name is reported
    assert "'ppo', 'dqn'" in plain(runner.invoke(app, ["rl", "train", "--algo", "a2c"]).output)


def test_good_options_reach_the_command(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid dates arrive as dates; families and tasks pass the check and reach training_flow as lists."""
    import finstream.data_stages

    seen: dict[str, object] = {}

    def fake_ingest(_settings: Settings, *args: object, **kwargs: object) -> None:
        seen["ingest"] = (*args, kwargs)
        raise FinstreamError("stop here")

    def fake_training_flow(**kwargs: object) -> None:
        seen["train"] = kwargs
        raise FinstreamError("stop here")

    def fake_retrain_flow(**kwargs: object) -> None:
        seen["retrain"] = kwargs
        raise FinstreamError("stop here")

    # stand-ins for the flows package: importing the real one starts configuring Prefect
    flows_training = types.ModuleType("flows.training")
    flows_training.training_flow = fake_training_flow  # type: ignore[attr-defined]
    flows_training.retrain_flow = fake_retrain_flow  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "flows", types.ModuleType("flows"))
    monkeypatch.setitem(sys.modules, "flows.training", flows_training)
    monkeypatch.setattr(finstream.data_stages, "ingest_stage", fake_ingest)
    result = runner.invoke(app, ["ingest", "-s", "AAPL", "--start", "2020-01-02", "--end", "2020-12-31"])
    assert result.exit_code == 1 and "error: stop here" in result.output
    plain = {"resample": None, "interval": None, "tz": None, "bar_time": "open"}
    assert seen["ingest"] == ("AAPL", None, date(2020, 1, 2), date(2020, 12, 31), plain)
    args = ["ingest", "-s", "AAPL", "--source", "csv:x.csv", "--resample", "1d", "--tz", "UTC", "-i", "1h"]
    result = runner.invoke(app, [*args, "--bar-time", "close"])
    asked = {"resample": "1d", "interval": "1h", "tz": "UTC", "bar_time": "close"}
    assert result.exit_code == 1 and seen["ingest"] == ("AAPL", "csv:x.csv", None, None, asked)
    result = runner.invoke(app, ["train", "-f", "ridge, xgboost", "--tasks", "classification"])
    assert result.exit_code == 1 and "error: stop here" in result.output
    assert seen["train"] == {"families": ["ridge", "xgboost"], "tasks": ["classification"]}
    result = runner.invoke(app, ["train", "--refresh-data"])
    assert result.exit_code == 1 and seen["retrain"] == {"families": None, "tasks": None}


def _app_raising(exc: Exception) -> typer.Typer:
    """A one-command app whose command raises `exc` through cli_errors."""
    test_app = make_app("t", "test")

    @test_app.command()
    @cli_errors
    def boom() -> None:
        raise exc

    @test_app.command()
    def other() -> None:  # a second command, so `boom` is a sub-command as in finstream
        """Unused."""

    return test_app


@pytest.mark.parametrize(
    ("exc", "code"),
    [(FinstreamError("no data"), 1), (ConfigError("bad setting"), 1), (SymbolError("bad symbol"), 2)],
)
def test_cli_errors_prints_one_error_line(exc: FinstreamError, code: int) -> None:
    result = runner.invoke(_app_raising(exc), ["boom"])
    assert result.exit_code == code
    assert result.output == f"error: {exc}\n"
    assert isinstance(result.exception, SystemExit)  # typer.Exit, not the FinstreamError


def test_cli_errors_keeps_long_messages_and_brackets_on_one_line() -> None:
    message = "x" * 30 + " [bold]not markup[/] " + " ".join(["word"] * 40)  # far wider than 80 columns
    result = runner.invoke(_app_raising(FinstreamError(message)), ["boom"])
    assert result.exit_code == 1
    assert result.output == f"error: {message}\n"


def test_cli_errors_lets_other_exceptions_through() -> None:
    result = runner.invoke(_app_raising(RuntimeError("a bug")), ["boom"])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)
    assert "error:" not in result.output


@pytest.mark.parametrize(
    "args",
    [["validate"], ["ingest", "-s", "AAPL"], ["serve"], ["models", "list"], ["rl", "train"]],
)
def test_every_app_shares_the_error_handling(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """Invalid settings: one `error:` line and exit 1 from the root app and every sub-app."""
    monkeypatch.setenv("FINSTREAM_TRAIN", "not json [")
    monkeypatch.setattr(os, "execve", lambda *a, **k: pytest.fail("serve started a server"))
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: invalid settings (params.yaml or FINSTREAM_* environment)")
    assert len(result.output.splitlines()) == 1


def test_runtime_config_error_from_a_sub_app(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINSTREAM_RL__ACTION_MODE", "continuous")
    result = runner.invoke(app, ["rl", "train", "--algo", "DQN"])
    assert result.exit_code == 1
    assert result.output.startswith("error: DQN needs a discrete action space")


def test_cli_imports_no_heavy_package_and_sub_apps_not_main() -> None:
    """`finstream --help` stays fast, and the sub-apps depend on finstream.cli.common, never on main."""
    heavy = ("flows", "training", "serving", "feast", "mlflow", "torch", "ray", "prefect", "pandas")
    code = (
        "import sys\n"
        "import finstream.cli.models, finstream.cli.rl, finstream.cli.serve\n"
        "assert 'finstream.cli.main' not in sys.modules, 'a sub-app imported finstream.cli.main'\n"
        "import finstream.cli.main\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r} or m == 'finstream.config'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


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
