"""The pipeline's own channels: `stream-metrics` per interval and `pipeline-status`, from Redis.

Every `metrics_s` the monitor reads each interval bus's committed counts (`Bus.counts`: entries added,
processed, dead letters, pending, lag) and the consumers' heartbeats (`StreamConfig.status_key`), and
publishes one `stream-metrics` message per interval (throughput since the previous one, per-stage cost per
bar over the live consumers) and, when a consumer came up or went down and at least every `status_s`, a
`pipeline-status` message. It reads only Redis, so it can run anywhere (`finstream stream` runs it in the
parent process).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, cast

import redis

from finstream.channels import (
    PIPELINE_STATUS,
    STREAM_METRICS,
    ConsumerStatus,
    PipelineStatusData,
    StreamMetricsData,
)
from finstream.config import Settings
from stream import exporter
from stream.bus import Bus
from stream.config import StreamConfig
from stream.publish import Publisher
from stream.worker import consumer_status

log = logging.getLogger(__name__)


class Monitor:
    """Publishes `stream-metrics` and `pipeline-status` (see the module docstring)."""

    def __init__(
        self, settings: Settings, config: StreamConfig, intervals: list[str], expected_consumers: int = 0
    ) -> None:
        self.settings = settings
        self.config = config
        self.intervals = list(intervals)
        self.expected = expected_consumers
        self.buses: dict[str, Bus] = {i: config.bus(settings, i) for i in intervals}
        self.client = redis.Redis.from_url(config.url(settings), decode_responses=True)
        self.publisher = Publisher(settings.feast_project, config.history_maxlen)
        self._previous: dict[str, tuple[float, int]] = {}
        self._up: set[str] = set()
        self._status_at = 0.0
        self.errors: list[str] = []

    def heartbeats(self) -> list[dict[str, Any]]:
        """Every consumer heartbeat recorded for this project (stale ones included)."""
        raw = cast(dict[str, str], self.client.hgetall(self.config.status_key(self.settings)))
        beats = []
        for name, text in sorted(raw.items()):
            try:
                beats.append(json.loads(text))
            except json.JSONDecodeError:
                log.warning("unreadable heartbeat of %s ignored", name)
        return beats

    def metrics(self, beats: list[dict[str, Any]], now: float) -> list[StreamMetricsData]:
        """One `stream-metrics` payload per interval."""
        out = []
        for interval, bus in self.buses.items():
            total = bus.counts(self.config.group).total
            processed = int(total.get("processed") or 0)
            previous = self._previous.get(interval)
            rate = 0.0
            if previous is not None and now > previous[0]:
                rate = max(0, processed - previous[1]) / (now - previous[0])
            self._previous[interval] = (now, processed)
            live = [
                b
                for b in beats
                if interval in b.get("lanes", {}) and consumer_status(b, now, self.config.down_after_s).up
            ]
            out.append(
                StreamMetricsData(
                    interval=interval,
                    bars_in=int(total.get("in") or 0),
                    processed=processed,
                    dead_lettered=int(total.get("dead_lettered") or 0),
                    duplicates=int(total.get("duplicates") or 0),
                    trimmed=int(total.get("trimmed") or 0),
                    pending=int(total.get("pending") or 0),
                    lag=total.get("lag"),
                    bars_per_s=round(rate, 1),
                    consumers_up=len(live),
                    stage_us_per_bar=_stage_costs(live, interval),
                )
            )
        return out

    def status(self, beats: list[dict[str, Any]], now: float) -> tuple[PipelineStatusData, str | None]:
        """The `pipeline-status` payload, and the event when the set of live consumers changed."""
        consumers: list[ConsumerStatus] = [consumer_status(b, now, self.config.down_after_s) for b in beats]
        up = {c.name for c in consumers if c.up}
        events = [f"consumer_up:{n}" for n in sorted(up - self._up)]
        events += [f"consumer_down:{n}" for n in sorted(self._up - up)]
        self._up = up
        errors = [f"{c.name}: {c.last_error}" for c in consumers if c.last_error]
        for beat in beats:
            errors += [f"{beat['name']}: {k}: {v}" for k, v in beat.get("model_errors", {}).items()]
        # a consumer that stopped cleanly is not missing; one that failed or went silent is
        missing = [
            c.name for c, b in zip(consumers, beats, strict=True) if not c.up and b["state"] != "stopped"
        ]
        if not up:
            state = "starting" if any(b["state"] == "starting" for b in beats) or not beats else "stopped"
        elif missing or len(up) < self.expected:
            state = "degraded"
        else:
            state = "running"
        data = PipelineStatusData(
            state=state,  # type: ignore[arg-type]
            event=", ".join(events) or None,
            message=f"{len(up)} of {max(self.expected, len(consumers))} consumers up",
            consumers=consumers,
            errors=(self.errors + errors)[-20:],
        )
        return data, data.event

    def tick(self) -> tuple[list[StreamMetricsData], PipelineStatusData | None]:
        """Read Redis, publish the metrics (and the status when due); what was published."""
        now = time.time()
        beats = self.heartbeats()
        metrics = self.metrics(beats, now)
        self.publisher.publish(self.client, STREAM_METRICS, metrics)
        status, event = self.status(beats, now)
        exporter.update(metrics, status)
        if event is not None or now - self._status_at >= self.config.status_s:
            self.publisher.publish(self.client, PIPELINE_STATUS, [status])
            self._status_at = now
            return metrics, status
        return metrics, None

    def run(self, stop: threading.Event) -> None:
        """Tick every `metrics_s` until `stop`; Redis errors are logged and retried on the next tick."""
        while not stop.is_set():
            try:
                self.tick()
            except redis.RedisError as exc:
                log.warning("stream monitor: %s", exc)
            stop.wait(self.config.metrics_s)

    def close(self) -> None:
        for bus in self.buses.values():
            bus.close()
        self.client.close()


def _stage_costs(beats: list[dict[str, Any]], interval: str) -> dict[str, float]:
    """Mean µs per bar and stage over the consumers' totals for `interval`."""
    ns: dict[str, int] = {}
    bars: dict[str, int] = {}
    for beat in beats:
        lane = beat["lanes"][interval]
        for stage, value in lane.get("stage_ns", {}).items():
            ns[stage] = ns.get(stage, 0) + int(value)
            bars[stage] = bars.get(stage, 0) + int(lane["stage_bars"].get(stage, 0))
    return {s: round(ns[s] / 1000 / bars[s], 2) for s in ns if bars.get(s)}
