"""Registry change notices over Redis pub/sub: an alias move reaches every serving worker at once.

Promotion code (`training.promotion`) publishes one small JSON message per alias move, and the server
publishes on `/admin/reload` and A/B changes; each serving worker subscribes and re-reads the registry when
a notice arrives. The registry stays the source of truth and servers keep polling it: a notice lost while
Redis is down only delays a change until the next poll. Without `FINSTREAM_REDIS_URL` nothing is sent.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from finstream.config import Settings, get_settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 0.5
RETRY_S = 2.0
HEALTH_CHECK_S = 5.0
SUBSCRIBED = "subscribed"  # the action of the notice a subscriber gives itself on each (re)subscription


def channel(settings: Settings) -> str:
    """One channel per Feast project (a deployment), e.g. `finstream:finstream:registry`."""
    return f"finstream:{settings.feast_project}:registry"


def publish(event: dict[str, Any], settings: Settings | None = None) -> bool:
    """Send `event` to the subscribed servers; False (logged) when there is no Redis or it is down."""
    settings = settings or get_settings()
    if not settings.redis_url:
        return False
    import redis

    try:
        with redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=1.0
        ) as client:
            receivers = client.publish(channel(settings), json.dumps(event, sort_keys=True))
    except redis.RedisError as exc:
        log.warning("registry notice not sent (%s): servers will see the change at their next poll", exc)
        return False
    log.debug("registry notice %s reached %d subscribers", event, receivers)
    return True


class Subscriber:
    """Calls `on_event(event)` for every notice on the settings' channel, from a daemon thread.

    Reconnects every RETRY_S while Redis is unreachable, and PINGs an idle link every HEALTH_CHECK_S to find
    a dead one; after each (re)subscription it delivers {"action": "subscribed"} so the handler can catch up
    on what it missed. `stop` ends the thread within about a second.
    """

    def __init__(self, settings: Settings, on_event: Callable[[dict[str, Any]], None]) -> None:
        if not settings.redis_url:
            raise ValueError("registry notices need FINSTREAM_REDIS_URL")
        self.url = settings.redis_url
        self.channel = channel(settings)
        self.on_event = on_event
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.subscribed = threading.Event()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="finstream-registry-events", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        import redis

        while not self._stop.is_set():
            try:
                client = redis.Redis.from_url(
                    self.url,
                    socket_connect_timeout=CONNECT_TIMEOUT_S,
                    socket_timeout=HEALTH_CHECK_S,  # a PING unanswered this long means a dead link
                    health_check_interval=HEALTH_CHECK_S,
                )
                with client, client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    pubsub.subscribe(self.channel)
                    self.subscribed.set()
                    log.info("listening for registry notices on %s", self.channel)
                    # notices sent while this worker was not subscribed are gone: catch up once
                    self._deliver(json.dumps({"action": SUBSCRIBED}))
                    while not self._stop.is_set():
                        message = pubsub.get_message(timeout=1.0)
                        if message is not None:
                            self._deliver(message.get("data"))
            except redis.RedisError as exc:
                self.subscribed.clear()
                log.warning("registry notices unavailable (%s); retrying in %.0f s", exc, RETRY_S)
                self._stop.wait(RETRY_S)

    def _deliver(self, data: Any) -> None:
        try:
            event = json.loads(data)
        except (TypeError, ValueError):
            log.warning("ignoring a malformed registry notice: %r", data)
            return
        try:
            self.on_event(event)
        except Exception:  # a failing handler must not end the subscription
            log.exception("registry notice handler failed for %s", event)
