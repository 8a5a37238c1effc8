"""How the real-time pipeline runs: its Redis, bus layout, batch sizes and timings (`StreamConfig`).

One bus per bar interval (`bus_name`): `finstream stream --interval 1m` consumes the 1-minute bus, and the
metrics are per interval. Defaults suit one machine; every field can be set from the CLI.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from finstream.channels import HISTORY_MAXLEN
from finstream.config import Settings
from stream.bus import DEFAULT_MAXLEN, DEFAULT_PARTITIONS, Bus

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def bus_name(interval: str) -> str:
    """The bus of one bar interval: `bars-1m`, `bars-1h`, `bars-1d`."""
    return f"bars-{interval}"


class StreamConfig(BaseModel):
    """Settings of the stream pipeline (consumers, producers and the monitor read the same ones)."""

    model_config = ConfigDict(frozen=True)

    redis_url: str | None = Field(None, description="the bus's Redis (default: settings.redis_url)")
    partitions: int = Field(DEFAULT_PARTITIONS, ge=1, description="streams per bus; fixed for its life")
    group: str = "pipeline"
    batch_size: int = Field(500, ge=1, description="XREADGROUP COUNT per partition")
    block_ms: int = Field(200, ge=1)
    min_idle_ms: int = Field(30_000, ge=1, description="claim a silent consumer's pending bars after this")
    max_deliveries: int = Field(5, ge=1)
    maxlen: int | None = Field(DEFAULT_MAXLEN, description="MAXLEN ~ of each partition stream")
    history_maxlen: int = Field(HISTORY_MAXLEN, ge=0, description="messages kept per channel for reconnects")
    heartbeat_s: float = Field(1.0, gt=0)
    metrics_s: float = Field(1.0, gt=0, description="stream-metrics every this many seconds")
    status_s: float = Field(5.0, gt=0, description="pipeline-status at least every this many seconds")
    score: bool = Field(True, description="score fresh rows with the registry's champions")
    model_poll_s: float = Field(30.0, description="re-read the champions' aliases (0: never; notices still)")
    down_after_s: float = Field(5.0, gt=0, description="a consumer without a heartbeat this long is down")
    metrics_port: int = Field(
        9109, ge=0, le=65535, description="Prometheus metrics of `finstream stream` on 127.0.0.1 (0: off)"
    )

    def url(self, settings: Settings) -> str:
        return self.redis_url or settings.redis_url or DEFAULT_REDIS_URL

    def prefix(self, settings: Settings) -> str:
        """Bus keys live under `finstream:<feast project>`, next to the channels."""
        return f"finstream:{settings.feast_project}"

    def status_key(self, settings: Settings) -> str:
        """The hash of consumer heartbeats (field: consumer name, value: JSON)."""
        return f"finstream:{settings.feast_project}:stream:consumers"

    def bus(self, settings: Settings, interval: str) -> Bus:
        """The bus of `interval`'s bars."""
        return Bus(
            self.url(settings),
            partitions=self.partitions,
            prefix=self.prefix(settings),
            name=bus_name(interval),
            maxlen=self.maxlen,
        )
