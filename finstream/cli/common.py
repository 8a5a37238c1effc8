"""What every `finstream` command shares: the Typer app factory, settings, the consoles, one error handler.

The root app (finstream.cli.main) and its sub-apps (models, rl, serve) import this module, never each other,
so the CLI has no import cycle. It stays cheap to import: finstream.config (pydantic-settings) is loaded when
a command first asks for the settings, not when `finstream --help` runs.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from finstream.errors import FinstreamError, SymbolError

if TYPE_CHECKING:
    from finstream.config import Settings

F = TypeVar("F", bound=Callable[..., None])

#: standard output (tables, results) and standard error (error lines, logs); tests may swap them
console = Console()
err_console = Console(stderr=True)

#: exit codes: a runtime error a user can act on, and a bad argument (Click's usage-error code)
EXIT_ERROR = 1
EXIT_USAGE = 2


def make_app(name: str, help_text: str) -> typer.Typer:
    """A Typer app configured like every finstream (sub-)app: help when called bare, plain errors."""
    return typer.Typer(
        name=name,
        help=help_text,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )


def load_settings() -> Settings:
    """The settings (params.yaml + FINSTREAM_* variables); invalid ones become a FinstreamError."""
    from finstream.config import get_settings

    try:
        return get_settings()
    except Exception as exc:  # pydantic ValidationError from params.yaml or FINSTREAM_* variables
        raise FinstreamError(f"invalid settings (params.yaml or FINSTREAM_* environment): {exc}") from exc


def print_error(message: str) -> None:
    """One `error:` line on stderr: the message is printed as given (no markup) and never wrapped."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def cli_errors(fn: F) -> F:
    """Turn finstream's errors into one `error:` line on stderr and a non-zero exit.

    A SymbolError (a symbol that cannot be parsed or served) exits 2 like a bad argument, any other
    FinstreamError exits 1. Click's own usage errors (typer.BadParameter) pass through unchanged.
    """

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> None:
        try:
            fn(*args, **kwargs)
        except SymbolError as exc:
            print_error(str(exc))
            raise typer.Exit(EXIT_USAGE) from None
        except FinstreamError as exc:
            print_error(str(exc))
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit (exit 143) so cleanup runs, as it does for Ctrl-C.

    Python's default SIGTERM ends the process at once, skipping `atexit`: a flow run killed by a supervisor
    then left its temporary Prefect API server listening. With this, the server is stopped on the way out.
    """

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def split_names(value: str | None) -> list[str] | None:
    """A comma-separated option as a list of stripped names; None (use the default) when not given."""
    return [part.strip() for part in value.split(",")] if value else None
