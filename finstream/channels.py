"""The real-time channels: their Redis names and JSON messages (the stream publishes, serving relays).

The stream pipeline publishes every message as one JSON envelope ``{type, channel, seq, ts, data}``:

``channel``  one of `CHANNELS` (the WebSocket path is ``/ws/<channel>``);
``type``     what `data` holds (`MESSAGE_TYPES[channel]`);
``seq``      per channel, 1, 2, 3, ... in publication order, over every consumer process (a Redis counter
             incremented in the same transaction that publishes, so no number is used twice or skipped
             by a committed message);
``ts``       when the message was published (UTC, ISO 8601);
``data``     the channel's payload model below.

Redis keys, for feast project ``p`` (`channel_key`, `history_key`, `seq_key`)::

    finstream:<p>:ws:<channel>           pub/sub channel: every message, as it is published
    finstream:<p>:ws:<channel>:history   stream (XADD, MAXLEN ~ N): the last ~N messages, field "m" = JSON,
                                         field "seq"; a client reconnecting with its last seq gets the rest
                                         from here (XREVRANGE until seq <= last)
    finstream:<p>:ws:<channel>:seq       the channel's counter

Delivery: `ai-predictions`, `risk-alerts` and `enhanced` messages are queued in the consumer's bus transaction
(the one that acknowledges the bars), so they are published exactly once per bar, also after crashes and
redeliveries (a redelivered bar publishes nothing). `stream-metrics` and `pipeline-status` are periodic
snapshots, published outside any transaction.

Coalescing: per consumer batch, `enhanced` and `ai-predictions` carry the latest bar of each symbol (the row
written to the online store); when a backlog is drained, intermediate bars of a symbol are folded into the
latest one. Live, with one bar per symbol and interval per bar period, every bar is published. `risk-alerts`
carries every alert of every bar.

Floats that are NaN (an indicator still warming up) are ``null``. This module is core: serving imports it
without importing the stream.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

ENHANCED = "enhanced"
STREAM_METRICS = "stream-metrics"
PIPELINE_STATUS = "pipeline-status"
AI_PREDICTIONS = "ai-predictions"
RISK_ALERTS = "risk-alerts"
#: every channel, in the order of the WebSocket paths
CHANNELS: tuple[str, ...] = (ENHANCED, STREAM_METRICS, PIPELINE_STATUS, AI_PREDICTIONS, RISK_ALERTS)
#: the envelope `type` of each channel's messages
MESSAGE_TYPES: dict[str, str] = {
    ENHANCED: "bar",
    STREAM_METRICS: "metrics",
    PIPELINE_STATUS: "status",
    AI_PREDICTIONS: "prediction",
    RISK_ALERTS: "alert",
}
#: messages each channel's history stream keeps (MAXLEN ~): the reconnect window
HISTORY_MAXLEN = 10_000


def channel_key(project: str, channel: str) -> str:
    """The pub/sub channel of `channel` for Feast project `project`: ``finstream:<project>:ws:<channel>``."""
    if channel not in MESSAGE_TYPES:
        raise ValueError(f"unknown channel {channel!r}; channels: {', '.join(CHANNELS)}")
    return f"finstream:{project}:ws:{channel}"


def history_key(project: str, channel: str) -> str:
    """The stream holding the last messages of `channel` (the reconnect window)."""
    return channel_key(project, channel) + ":history"


def seq_key(project: str, channel: str) -> str:
    """The counter that numbers `channel`'s messages."""
    return channel_key(project, channel) + ":seq"


class _Payload(BaseModel):
    """NaN and infinite floats are written as null (JSON has neither)."""

    model_config = ConfigDict(ser_json_inf_nan="null", extra="forbid")


class ModelRef(_Payload):
    """A registry version that produced a forecast, and how it became champion."""

    name: str
    version: str
    family: str | None = None
    promotion: Literal["gates", "manual", "rollback", "baseline", "unknown"] = Field(
        description="how the version got the champion alias: it passed the promotion gates, it was promoted "
        "by hand (gates bypassed), restored by a rollback, or served as the best volatility baseline"
    )
    gate_passed: bool = Field(description="True only when the version became champion by passing the gates")


class BarValues(_Payload):
    open: float
    high: float
    low: float
    close: float
    volume: float
    amount: float | None = None


class VolatilityForecast(_Payload):
    """The volatility champion's forecast, made at this bar, of the next bar's volatility."""

    model: ModelRef
    variance: float | None = Field(description="next-bar variance of the log return, in squared percent")
    volatility: float | None = Field(description="next-bar volatility as a fraction (sqrt(variance) / 100)")


class EnhancedData(_Payload):
    """`enhanced`: a bar with its fresh feature row (as written to the online store) and its risk measures."""

    symbol: str
    interval: str
    bar_ts: datetime = Field(description="the bar's close time (UTC)")
    entry_id: str = Field(description="the bar's entry ID on the bus")
    bar: BarValues
    features: dict[str, float | None] = Field(description="every indicator of the spec, by name")
    feature_row: bool = Field(
        description="whether this row is a feature row (the series has its warm-up bars behind it): only "
        "feature rows are written to the online store and scored"
    )
    risk: dict[str, float | None] = Field(
        description="the risk measures of `finstream.risk` at this bar (VaR / ES per method and level, "
        "volatilities, drawdown, spike score)"
    )
    volatility_forecast: VolatilityForecast | None = None


class PredictionData(_Payload):
    """`ai-predictions`: the champions' forecast made on a fresh online row."""

    symbol: str
    interval: str
    bar_ts: datetime = Field(description="the close time of the bar whose features were scored (UTC)")
    predicted_return: float | None = Field(description="next-bar log return (the return champion)")
    probability_up: float | None = Field(description="P(next return > 0) (the direction champion), if any")
    direction: Literal["up", "down"]
    direction_source: Literal["classifier", "return_sign"]
    signal: Literal["long", "flat"] = Field(
        description="the backtested rule: long when P(up) > 0.5, else (no classifier) when the return > 0"
    )
    model: ModelRef = Field(description="the return champion")
    direction_model: ModelRef | None = None


class AlertData(_Payload):
    """`risk-alerts`: one alert rule firing on one bar (`finstream.risk.alerts.Alert`)."""

    severity: Literal["info", "warning", "critical"]
    rule: str
    value: float | None
    limit: float | None
    symbol: str
    interval: str
    bar_time: datetime
    message: str


class StreamMetricsData(_Payload):
    """`stream-metrics`: one interval's bus and pipeline counts (committed in Redis), sent periodically."""

    interval: str
    bars_in: int = Field(description="entries ever added to the interval's bus")
    processed: int
    dead_lettered: int
    duplicates: int
    trimmed: int
    pending: int = Field(description="read by a consumer and not yet acknowledged")
    lag: int | None = Field(description="entries not yet read by the group (null when Redis cannot tell)")
    bars_per_s: float = Field(description="processed bars per second since the previous metrics message")
    consumers_up: int
    stage_us_per_bar: dict[str, float] = Field(
        default_factory=dict, description="mean handler time per bar and stage, over the live consumers"
    )


class ConsumerStatus(_Payload):
    name: str
    intervals: list[str]
    pid: int
    host: str
    up: bool = Field(description="its heartbeat is recent")
    started_at: datetime
    heartbeat_age_s: float
    warmed_series: int = Field(description="series whose state was warmed up from stored bars")
    processed: int
    dead_lettered: int
    handler_errors: int
    reconnects: int
    last_error: str | None = None


class PipelineStatusData(_Payload):
    """`pipeline-status`: the consumers and what happened; periodic, and on every change of state."""

    state: Literal["starting", "running", "degraded", "stopped"]
    event: str | None = Field(None, description="what changed, when this message reports a change")
    message: str | None = None
    consumers: list[ConsumerStatus] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list, description="the latest errors, newest last")


class _Envelope(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="null")

    seq: int
    ts: datetime


class EnhancedMessage(_Envelope):
    type: Literal["bar"] = "bar"
    channel: Literal["enhanced"] = "enhanced"
    data: EnhancedData


class PredictionMessage(_Envelope):
    type: Literal["prediction"] = "prediction"
    channel: Literal["ai-predictions"] = "ai-predictions"
    data: PredictionData


class AlertMessage(_Envelope):
    type: Literal["alert"] = "alert"
    channel: Literal["risk-alerts"] = "risk-alerts"
    data: AlertData


class MetricsMessage(_Envelope):
    type: Literal["metrics"] = "metrics"
    channel: Literal["stream-metrics"] = "stream-metrics"
    data: StreamMetricsData


class StatusMessage(_Envelope):
    type: Literal["status"] = "status"
    channel: Literal["pipeline-status"] = "pipeline-status"
    data: PipelineStatusData


Message = Annotated[
    EnhancedMessage | PredictionMessage | AlertMessage | MetricsMessage | StatusMessage,
    Field(discriminator="channel"),
]
_MESSAGE: TypeAdapter[Any] = TypeAdapter(Message)
#: the payload model of each channel
PAYLOADS: dict[str, type[_Payload]] = {
    ENHANCED: EnhancedData,
    STREAM_METRICS: StreamMetricsData,
    PIPELINE_STATUS: PipelineStatusData,
    AI_PREDICTIONS: PredictionData,
    RISK_ALERTS: AlertData,
}


def parse_message(
    raw: str | bytes,
) -> EnhancedMessage | PredictionMessage | AlertMessage | MetricsMessage | StatusMessage:
    """A published message, validated against its channel's model (pydantic ValidationError otherwise)."""
    return _MESSAGE.validate_json(raw)  # type: ignore[no-any-return]


def envelope_parts(channel: str, data: _Payload, now: datetime | None = None) -> tuple[str, str]:
    """The JSON of a message split around its seq: `head + str(seq) + tail` is the whole envelope.

    The publisher numbers messages inside Redis (a Lua script), so the JSON is built before seq is known.
    """
    if not isinstance(data, PAYLOADS[channel]):
        raise TypeError(
            f"channel {channel!r} carries {PAYLOADS[channel].__name__}, not {type(data).__name__}"
        )
    stamp = (now or datetime.now(UTC)).isoformat()
    head = f'{{"type":"{MESSAGE_TYPES[channel]}","channel":"{channel}","ts":"{stamp}","seq":'
    return head, ',"data":' + data.model_dump_json() + "}"
