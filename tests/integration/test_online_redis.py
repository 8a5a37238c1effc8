"""Materialize real feature rows into the real Redis at 127.0.0.1:6379 and read them back through Feast."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fixtures_features as ff
import numpy as np
import pandas as pd
import pytest
import redis
from tests_support import service_unavailable

from finstream import featurestore as fs
from finstream.config import Settings
from finstream.indicators.spec import feature_names

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/15"  # a db of its own; keys are also scoped by a per-run Feast project
SYMBOLS = ["000300.SH", "^GSPC", "^IXIC"]


VALUE_COLUMNS = [*ff.PRICE_FEATURES, *feature_names()]


def _project_keys(client: redis.Redis, project: str) -> list[bytes]:
    """Feast's Redis keys end with the project name (serialized entity key + project)."""
    return list(client.scan_iter(match=f"*{project}", count=1000))


@pytest.fixture()
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=5)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        reason = f"Redis at {REDIS_URL} does not answer PING ({exc}); start redis-server to run this test"
        service_unavailable(reason)
    yield client
    client.close()


@pytest.fixture()
def redis_store(tmp_path: Path, redis_client: redis.Redis) -> Iterator[tuple]:
    project = f"finstream_it_{uuid.uuid4().hex[:10]}"
    settings = Settings(home=tmp_path, redis_url=REDIS_URL, online_store=None, feast_project=project)
    frame = ff.write_features(settings)
    store = fs.open_store(settings)
    fs.apply_definitions(store)
    try:
        yield store, frame, project
    finally:
        store.teardown()
        leftover = _project_keys(redis_client, project)
        if leftover:
            redis_client.delete(*leftover)
        assert _project_keys(redis_client, project) == []


def _assert_rows_equal(online: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert online["symbol"].tolist() == expected.index.tolist()
    got = online.set_index("symbol")[VALUE_COLUMNS].astype("float64")
    want = expected[VALUE_COLUMNS].astype("float64")
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())  # NaN == NaN (e.g. CSI 300 has no amount)


def test_materialize_into_redis_and_read_back(redis_store, redis_client: redis.Redis) -> None:
    store, frame, project = redis_store
    assert store.config.online_store.type == "redis"
    assert store.config.online_store.connection_string == "127.0.0.1:6379,db=15"

    cutoff = pd.Timestamp("2010-12-31 23:59:59", tz="UTC")
    assert fs.materialize(store, frame["event_timestamp"].min(), cutoff) == 3
    assert len(_project_keys(redis_client, project)) == 3  # one hash per symbol, both views in it
    latest_2010 = frame[frame["event_timestamp"] <= cutoff].groupby("symbol").tail(1).set_index("symbol")
    _assert_rows_equal(fs.online_features(store, SYMBOLS), latest_2010.loc[SYMBOLS])

    assert fs.materialize(store, frame["event_timestamp"].min(), frame["event_timestamp"].max()) == 3
    latest = frame.groupby("symbol").tail(1).set_index("symbol")
    _assert_rows_equal(fs.online_features(store, SYMBOLS), latest.loc[SYMBOLS])

    raw = store.get_online_features(
        features=store.get_feature_service("model_features"), entity_rows=[{"symbol": s} for s in SYMBOLS]
    ).to_dict()
    assert raw["close"] == latest.loc[SYMBOLS, "close"].tolist()
    assert raw["rsi_14"] == latest.loc[SYMBOLS, "rsi_14"].tolist()

    unknown = fs.online_features(store, ["NOPE.SH"], features=["close"])
    assert unknown["close"].isna().all()
