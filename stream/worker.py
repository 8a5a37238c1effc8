"""One consumer of the pipeline (a process, or a thread group in one): for each interval it serves, a
`BarPipeline` fed by a bus `Consumer` of its share of the partitions, and a heartbeat in Redis.

Consumer `c<index>` of `count` owns partitions index, index + count, ... of every interval's bus
(`stream.bus.assign_partitions`). Its name is stable, so a restarted consumer settles what it left pending
at once, and a consumer that died is replaced by starting the same index again (anywhere: on another
machine too). At start it loads the champions, opens the online store and warms up the state of every
stored series in its partitions; then it announces itself on `pipeline-status`, consumes, and writes a
heartbeat (`StreamConfig.status_key`) every `heartbeat_s` that the monitor turns into the channels.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from finstream.channels import PIPELINE_STATUS, ConsumerStatus, PipelineStatusData
from finstream.config import Settings
from stream.bus import Batch, Bus, Consumer, assign_partitions
from stream.config import StreamConfig
from stream.online import RedisOnlineWriter, open_writer
from stream.pipeline import BarPipeline
from stream.publish import Publisher
from stream.scoring import Scorer

log = logging.getLogger(__name__)


def consumer_name(index: int) -> str:
    return f"c{index}"


@dataclass
class _Lane:
    """One interval inside a worker: its bus, pipeline and consumer."""

    interval: str
    bus: Bus
    pipeline: BarPipeline
    consumer: Consumer
    scorer: Scorer | None
    thread: threading.Thread | None = None
    errors: list[str] = field(default_factory=list)


class StreamWorker:
    """Consumer `index` of `count` for `intervals` (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        config: StreamConfig,
        intervals: list[str],
        index: int = 0,
        count: int = 1,
    ) -> None:
        self.settings = settings
        self.config = config
        self.intervals = list(intervals)
        self.index = index
        self.count = count
        self.name = consumer_name(index)
        #: the heartbeat's name: runs of other intervals have consumers named c0 too
        self.label = f"{self.name}@{','.join(self.intervals)}"
        self.publisher = Publisher(settings.feast_project, config.history_maxlen)
        self.client = redis.Redis.from_url(config.url(settings), decode_responses=True)
        self.lanes: list[_Lane] = []
        self.started_at = datetime.now(UTC)
        self.state = "starting"
        self.last_error: str | None = None
        self._stop = threading.Event()

    # setup ------------------------------------------------------------------------------------------
    def setup(self) -> StreamWorker:
        """Open every interval's bus, online store and champions; warm up the states. Takes seconds."""
        for interval in self.intervals:
            self.lanes.append(self._lane(interval))
        self.state = "running"
        self.heartbeat()
        warmed = sum(lane.pipeline.warmed for lane in self.lanes)
        self.announce("consumer_up", f"{self.label} up: {warmed} series warmed up from stored bars")
        return self

    def _lane(self, interval: str) -> _Lane:
        settings, config = self.settings, self.config
        bus = config.bus(settings, interval)
        scorer = None
        if config.score:
            scorer = Scorer(settings, interval, config.model_poll_s)
            scorer.start()
        writer = open_writer(settings, interval)
        same_redis = isinstance(writer, RedisOnlineWriter) and (settings.redis_url or "") == bus.url
        pipeline = BarPipeline(
            settings, interval, self.publisher, writer=writer, scorer=scorer, online_in_transaction=same_redis
        )
        owned = assign_partitions(config.partitions, self.count, self.index)
        symbols = [s for s in pipeline.stored_symbols() if bus.partition_of(s) in owned]
        pipeline.warm_up(symbols)
        consumer = Consumer(
            bus,
            config.group,
            self.name,
            owned,
            self._guard(pipeline),
            batch_size=config.batch_size,
            block_ms=config.block_ms,
            min_idle_ms=config.min_idle_ms,
            max_deliveries=config.max_deliveries,
        )
        bus.ensure_group(config.group)
        log.info(
            "%s: consuming %s (partitions %s, %d series warmed up, online store %s)",
            self.name,
            bus.name,
            owned,
            len(symbols),
            "in the bus transaction" if same_redis else type(writer).__name__,
        )
        return _Lane(interval, bus, pipeline, consumer, scorer)

    def _guard(self, pipeline: BarPipeline) -> Any:
        """The pipeline as a handler that records its last error (the consumer retries, then dead-letters)."""

        def handle(batch: Batch) -> None:
            try:
                pipeline(batch)
            except redis.ConnectionError:
                raise
            except Exception as exc:
                self.last_error = f"{pipeline.interval}: {type(exc).__name__}: {exc}"
                raise

        return handle

    # running ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Consume in background threads (one per interval)."""
        for lane in self.lanes:
            lane.thread = threading.Thread(
                target=self._consume, args=(lane,), name=f"finstream-{self.name}-{lane.interval}", daemon=True
            )
            lane.thread.start()

    def _consume(self, lane: _Lane) -> None:
        try:
            lane.consumer.run(self._stop)
        except Exception as exc:  # reconnect timeout, partition contention: the supervisor restarts us
            self.last_error = f"{lane.interval}: {type(exc).__name__}: {exc}"
            log.exception("%s: consumer of %s stopped", self.name, lane.bus.name)
            self.state = "failed"
            self._stop.set()

    def run(self, stop: threading.Event | None = None) -> None:
        """Consume until `stop` (or `self.stop()`), writing heartbeats; then announce the stop."""
        self.start()
        try:
            while not self._stop.wait(self.config.heartbeat_s):
                if stop is not None and stop.is_set():
                    break
                self.heartbeat()
        finally:
            self.stop()
            self.join()
            self.state = "stopped" if self.state != "failed" else self.state
            self.heartbeat()
            self.announce("consumer_down", f"{self.label} stopped ({self.state})")
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 10.0) -> None:
        for lane in self.lanes:
            if lane.thread is not None:
                lane.thread.join(timeout)

    def close(self) -> None:
        for lane in self.lanes:
            if lane.scorer is not None:
                lane.scorer.stop()
            lane.consumer.close()
            lane.bus.close()
            close = getattr(lane.pipeline.writer, "close", None)
            if close is not None:
                close()
        self.client.close()

    # reporting --------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What the heartbeat carries: the ConsumerStatus fields, plus per-interval counts and stage times."""
        stats = [lane.consumer.stats for lane in self.lanes]
        errors = {
            f"{lane.interval} {task}": why
            for lane in self.lanes
            if lane.scorer
            for task, why in lane.scorer.errors.items()
        }
        for lane in self.lanes:
            if lane.pipeline.last_scoring_error:
                errors[f"{lane.interval} scoring"] = lane.pipeline.last_scoring_error
        return {
            "name": self.label,
            "intervals": self.intervals,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "state": self.state,
            "started_at": self.started_at.isoformat(),
            "heartbeat_at": time.time(),
            "warmed_series": sum(lane.pipeline.warmed for lane in self.lanes),
            "processed": sum(s.processed for s in stats),
            "dead_lettered": sum(s.dead_lettered for s in stats),
            "handler_errors": sum(s.handler_errors for s in stats),
            "reconnects": sum(s.reconnects for s in stats),
            "last_error": self.last_error,
            "model_errors": errors,
            "lanes": {
                lane.interval: {**lane.pipeline.stats(), "consumer": lane.consumer.stats.as_dict()}
                for lane in self.lanes
            },
        }

    def heartbeat(self) -> None:
        try:
            self.client.hset(self.config.status_key(self.settings), self.label, json.dumps(self.status()))
        except redis.RedisError as exc:
            log.warning("%s: heartbeat not written: %s", self.name, exc)

    def announce(self, event: str, message: str) -> None:
        """A `pipeline-status` message about this consumer (best effort: Redis may be down)."""
        status = consumer_status(self.status(), time.time(), self.config.down_after_s)
        data = PipelineStatusData(
            state="running"
            if self.state == "running"
            else "degraded"
            if self.state == "failed"
            else "stopped",
            event=event,
            message=message,
            consumers=[status],
            errors=[self.last_error] if self.last_error else [],
        )
        try:
            self.publisher.publish(self.client, PIPELINE_STATUS, [data])
        except redis.RedisError as exc:
            log.warning("%s: %s not announced: %s", self.name, event, exc)


def consumer_status(beat: dict[str, Any], now: float, down_after_s: float) -> ConsumerStatus:
    """A heartbeat as the `pipeline-status` model."""
    age = max(0.0, now - float(beat["heartbeat_at"]))
    return ConsumerStatus(
        name=beat["name"],
        intervals=beat["intervals"],
        pid=beat["pid"],
        host=beat["host"],
        up=beat["state"] == "running" and age < down_after_s,
        started_at=beat["started_at"],
        heartbeat_age_s=round(age, 3),
        warmed_series=beat["warmed_series"],
        processed=beat["processed"],
        dead_lettered=beat["dead_lettered"],
        handler_errors=beat["handler_errors"],
        reconnects=beat["reconnects"],
        last_error=beat.get("last_error"),
    )
