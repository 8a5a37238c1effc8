"""Registry notices over the real Redis pub/sub: published by promotion code, received by subscribers."""

from __future__ import annotations

import queue
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from tests_support import service_unavailable

from finstream.config import Settings
from finstream.models import notices

pytestmark = pytest.mark.integration

URL = "redis://127.0.0.1:6379/15"


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Settings]:
    try:
        redis.Redis.from_url(URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        service_unavailable(f"Redis at {URL} does not answer PING ({exc}); start redis-server")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FINSTREAM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FINSTREAM_REDIS_URL", URL)
    monkeypatch.setenv("FINSTREAM_FEAST_PROJECT", f"events_{uuid.uuid4().hex[:8]}")
    yield Settings()


def test_subscribers_receive_what_is_published(settings: Settings) -> None:
    received: queue.Queue[dict[str, Any]] = queue.Queue()

    def handler(event: dict[str, Any]) -> None:
        if event.get("action") == "boom":
            raise RuntimeError("a handler bug")
        received.put(event)

    subscriber = notices.Subscriber(settings, handler)
    subscriber.start()
    try:
        assert subscriber.subscribed.wait(10)
        assert received.get(timeout=5) == {"action": "subscribed"}  # catch up on what was missed
        with redis.Redis.from_url(URL) as client:
            client.publish(notices.channel(settings), b"{not json")
        assert notices.publish({"action": "boom"}, settings)  # the handler raises: still listening
        assert notices.publish({"model": "finstream-return", "action": "manual", "version": "3"})
        assert received.get(timeout=5) == {"model": "finstream-return", "action": "manual", "version": "3"}
    finally:
        subscriber.stop()
    assert received.empty()


def test_promotion_announces_alias_moves(settings: Settings, tmp_path: Any) -> None:
    """training.promotion publishes every alias move it makes."""
    import mlflow

    from finstream.models.registry import promote
    from finstream.models.tracking import configure_mlflow

    received: queue.Queue[dict[str, Any]] = queue.Queue()
    subscriber = notices.Subscriber(settings, received.put)
    subscriber.start()
    try:
        assert subscriber.subscribed.wait(10)
        assert received.get(timeout=5) == {"action": "subscribed"}
        client = configure_mlflow(settings)
        with mlflow.start_run() as run:
            mlflow.log_text("what the version points at does not matter to the notice", "model/README.txt")
        client.create_registered_model("finstream-return")
        version = client.create_model_version(
            "finstream-return", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
        )
        promote(client, "finstream-return", version.version, reason="notice test")
        event = received.get(timeout=5)
    finally:
        subscriber.stop()
    assert event == {"model": "finstream-return", "action": "manual", "version": str(version.version)}


def test_publish_without_redis_sends_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FINSTREAM_REDIS_URL", raising=False)
    assert notices.publish({"action": "reload"}, Settings()) is False
    dead = Settings(redis_url="redis://127.0.0.1:1/0")
    assert notices.publish({"action": "reload"}, dead) is False  # logged, never raised


def test_a_subscriber_cut_off_reconnects_and_catches_up(settings: Settings) -> None:
    """Redis drops the subscriber's connection: it subscribes again and says so (the handler re-reads)."""
    received: queue.Queue[dict[str, Any]] = queue.Queue()
    subscriber = notices.Subscriber(settings, received.put)
    subscriber.start()
    try:
        assert received.get(timeout=10) == {"action": "subscribed"}
        with redis.Redis.from_url(URL) as client:
            killed = client.client_kill_filter(_type="pubsub")
        assert killed >= 1
        assert received.get(timeout=15) == {"action": "subscribed"}
        assert notices.publish({"action": "reload"}, settings)
        assert received.get(timeout=5) == {"action": "reload"}
    finally:
        subscriber.stop()
