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
