"""The channel names and message schemas the stream publishes and serving relays (finstream.channels)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from finstream.channels import (
    CHANNELS,
    MESSAGE_TYPES,
    PAYLOADS,
    AlertData,
    BarValues,
    EnhancedData,
    ModelRef,
    PredictionData,
    StreamMetricsData,
    channel_key,
    envelope_parts,
    history_key,
    parse_message,
    seq_key,
)

BAR_TS = datetime(2026, 8, 6, 14, 30, tzinfo=UTC)


def _enhanced() -> EnhancedData:
    return EnhancedData(
        symbol="AAPL",
        interval="1h",
        bar_ts=BAR_TS,
        entry_id="1785331860000-0",
        bar=BarValues(open=314.34, high=315.0, low=313.1, close=313.5, volume=7772052.0, amount=None),
        features={"sma_5": 310.3940368652344, "rsi_14": math.nan},
        feature_row=True,
        risk={"var_historical_99": 0.0123, "vol_spike": math.inf},
    )


def test_every_channel_has_a_key_a_type_and_a_payload() -> None:
    assert CHANNELS == ("enhanced", "stream-metrics", "pipeline-status", "ai-predictions", "risk-alerts")
    assert set(MESSAGE_TYPES) == set(PAYLOADS) == set(CHANNELS)
    assert channel_key("finstream", "ai-predictions") == "finstream:finstream:ws:ai-predictions"
    assert history_key("p", "enhanced") == "finstream:p:ws:enhanced:history"
    assert seq_key("p", "enhanced") == "finstream:p:ws:enhanced:seq"
    with pytest.raises(ValueError, match="unknown channel 'quotes'"):
        channel_key("p", "quotes")


def test_an_envelope_round_trips_with_nan_as_null_and_floats_exact() -> None:
    head, tail = envelope_parts("enhanced", _enhanced(), BAR_TS)
    raw = head + "41" + tail
    body = json.loads(raw)
    assert list(body) == ["type", "channel", "ts", "seq", "data"]
    assert body["data"]["features"]["rsi_14"] is None and body["data"]["risk"]["vol_spike"] is None
    message = parse_message(raw)
    assert (message.type, message.channel, message.seq) == ("bar", "enhanced", 41)
    assert message.data.features["sma_5"] == 310.3940368652344  # shortest round-trip repr
    assert message.data.bar_ts == BAR_TS


def test_a_payload_goes_only_on_its_own_channel() -> None:
    with pytest.raises(TypeError, match="carries PredictionData"):
        envelope_parts("ai-predictions", _enhanced())
    head, tail = envelope_parts("stream-metrics", _metrics())
    assert parse_message(head + "1" + tail).data.interval == "1m"
    with pytest.raises(ValidationError):  # a message whose data does not match its channel
        parse_message(head.replace("stream-metrics", "risk-alerts") + "1" + tail)


def _metrics() -> StreamMetricsData:
    return StreamMetricsData(
        interval="1m",
        bars_in=10,
        processed=9,
        dead_lettered=1,
        duplicates=0,
        trimmed=0,
        pending=0,
        lag=0,
        bars_per_s=12.5,
        consumers_up=2,
    )


def test_prediction_and_alert_payloads_check_their_fields() -> None:
    ref = ModelRef(name="finstream-return", version="3", family="ridge", promotion="gates", gate_passed=True)
    prediction = PredictionData(
        symbol="AAPL",
        interval="1h",
        bar_ts=BAR_TS,
        predicted_return=0.001,
        probability_up=0.61,
        direction="up",
        direction_source="classifier",
        signal="long",
        model=ref,
    )
    assert json.loads(prediction.model_dump_json())["model"]["gate_passed"] is True
    with pytest.raises(ValidationError):
        PredictionData(**{**prediction.model_dump(), "signal": "short"})
    with pytest.raises(ValidationError):
        AlertData(
            severity="fatal",
            rule="drawdown",
            value=0.3,
            limit=0.2,
            symbol="AAPL",
            interval="1h",
            bar_time=BAR_TS,
            message="",
        )
