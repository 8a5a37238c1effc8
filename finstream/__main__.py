"""`python -m finstream` runs the CLI."""

from finstream.cli.main import run

run()
