"""The stream's Prometheus metrics (stream/exporter.py): one monitor tick's counts, as gauges per interval,
served over HTTP by prometheus_client on the configured port. The registry is the process's and earlier
tests' pipelines set the 1m / 1h series: this test uses intervals of its own."""

from __future__ import annotations

import socket

import httpx

from finstream.channels import ConsumerStatus, PipelineStatusData, StreamMetricsData
from stream import exporter


def _metrics(interval: str, processed: int, dead: int, lag: int | None) -> StreamMetricsData:
    return StreamMetricsData(
        interval=interval, bars_in=processed + dead + 3, processed=processed, dead_lettered=dead,
        duplicates=0, trimmed=0, pending=3, lag=lag, bars_per_s=12.5, consumers_up=2,
        stage_us_per_bar={"risk": 85.0, "indicators": 31.0},
    )  # fmt: skip


def test_a_tick_sets_every_gauge_and_http_serves_them() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exporter.serve(port)
    down = ConsumerStatus.model_construct(up=False)
    up = ConsumerStatus.model_construct(up=True)
    status = PipelineStatusData.model_construct(state="degraded", consumers=[up, down])
    exporter.update([_metrics("5m", 120, 1, 0), _metrics("15m", 40, 0, None)], status)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for line in (
        'finstream_stream_processed{interval="5m"} 120.0',
        'finstream_stream_dead_lettered{interval="5m"} 1.0',
        'finstream_stream_bars_in{interval="5m"} 124.0',
        'finstream_stream_pending{interval="15m"} 3.0',
        'finstream_stream_lag{interval="5m"} 0.0',
        'finstream_stream_bars_per_second{interval="15m"} 12.5',
        'finstream_stream_stage_us_per_bar{interval="5m",stage="risk"} 85.0',
        "finstream_stream_consumers_up 1.0",  # from the status: one of two consumers is up
    ):
        assert line in text, line
    assert 'finstream_stream_lag{interval="15m"}' not in text  # unknown lag is not reported as 0
    exporter.serve(0)  # 0 serves nothing (and does not fail)
