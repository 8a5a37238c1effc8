"""Helpers tests share (tests/ is not a package; pytest puts this folder on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]


def services_required() -> bool:
    """In CI the real services must be up: a missing one fails the test instead of skipping it."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def service_unavailable(reason: str) -> NoReturn:
    """A real service (Redis, PostgreSQL) does not answer: fail in CI, skip with the reason elsewhere."""
    if services_required():
        pytest.fail(reason)
    pytest.skip(reason)


def isolate_env(mp: pytest.MonkeyPatch, root: Path, **env: str) -> None:
    """Run from `root` (no params.yaml there) with no FINSTREAM_* variables but FINSTREAM_HOME=root/home
    and the given ones."""
    mp.chdir(root)
    for key in list(os.environ):
        if key.startswith("FINSTREAM_"):
            mp.delenv(key)
    mp.setenv("FINSTREAM_HOME", str(root / "home"))
    for key, value in env.items():
        mp.setenv(key, value)
