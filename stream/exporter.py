"""The stream's Prometheus metrics: what the monitor reads from Redis each tick, on its own /metrics.

`finstream stream` serves them on `StreamConfig.metrics_port` (127.0.0.1; 0 turns it off), next to the
service's own; `ops/prometheus/prometheus.yml` scrapes both and `ops/prometheus/alerts.yml` alerts on lag,
dead letters and consumers down. Values are the committed counts of the bus (`stream.bus.Bus.counts`),
so every process that runs a monitor reports the same numbers. A registry of its own keeps them apart from
any other metrics of the process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from finstream.channels import PipelineStatusData, StreamMetricsData

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)


def _gauge(name: str, text: str, labels: Sequence[str] = ("interval",)) -> Gauge:
    return Gauge(name, text, list(labels), registry=REGISTRY)


STREAM_IN = _gauge("finstream_stream_bars_in", "entries ever added to the interval's bus")
STREAM_PROCESSED = _gauge("finstream_stream_processed", "bars processed by the pipeline")
STREAM_DEAD = _gauge("finstream_stream_dead_lettered", "bars sent to the dead-letter streams")
STREAM_PENDING = _gauge("finstream_stream_pending", "bars read by a consumer and not acknowledged yet")
STREAM_LAG = _gauge("finstream_stream_lag", "bars on the bus not read by the group yet")
STREAM_RATE = _gauge("finstream_stream_bars_per_second", "bars processed per second since the last tick")
STREAM_STAGE = _gauge(
    "finstream_stream_stage_us_per_bar",
    "mean handler time per bar and stage (microseconds), over the live consumers",
    ("interval", "stage"),
)
CONSUMERS_UP = _gauge("finstream_stream_consumers_up", "consumers with a recent heartbeat", ())


def serve(port: int) -> None:
    """Serve the metrics on 127.0.0.1:`port` (a daemon thread); 0 serves nothing."""
    if port > 0:
        start_http_server(port, addr="127.0.0.1", registry=REGISTRY)
        log.info("stream metrics on http://127.0.0.1:%d/metrics", port)


def update(metrics: Sequence[StreamMetricsData], status: PipelineStatusData | None = None) -> None:
    """Set every gauge from one monitor tick."""
    for m in metrics:
        STREAM_IN.labels(m.interval).set(m.bars_in)
        STREAM_PROCESSED.labels(m.interval).set(m.processed)
        STREAM_DEAD.labels(m.interval).set(m.dead_lettered)
        STREAM_PENDING.labels(m.interval).set(m.pending)
        if m.lag is not None:
            STREAM_LAG.labels(m.interval).set(m.lag)
        STREAM_RATE.labels(m.interval).set(m.bars_per_s)
        for stage, us in m.stage_us_per_bar.items():
            STREAM_STAGE.labels(m.interval, stage).set(us)
        CONSUMERS_UP.set(m.consumers_up)
    if status is not None:
        CONSUMERS_UP.set(sum(1 for c in status.consumers if c.up))
