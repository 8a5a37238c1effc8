"""Request and response bodies of the HTTP API (pydantic): what clients send and get back."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_SYMBOLS = 100


class PredictRequest(BaseModel):
    """Symbols to forecast, e.g. {"symbols": ["000300.SH", "^GSPC"]}."""

    model_config = ConfigDict(extra="forbid")

    symbols: list[str] = Field(min_length=1, max_length=MAX_SYMBOLS)

    @field_validator("symbols")
    @classmethod
    def _clean(cls, symbols: list[str]) -> list[str]:
        cleaned = [s.strip() for s in symbols]
        if any(not s for s in cleaned):
            raise ValueError("symbols must be non-empty strings")
        return list(dict.fromkeys(cleaned))


class ModelRef(BaseModel):
    """Which registered model version answered."""

    name: str
    version: str
    family: str | None = None


class Prediction(BaseModel):
    """The next-period forecast for one symbol from the champion models."""

    symbol: str
    predicted_return: float = Field(description="Predicted next-period log return of close.")
    direction: Literal["up", "down"]
    probability_up: float | None = Field(
        None, description="P(up) from the direction champion; null when no direction model is loaded."
    )
    direction_source: Literal["classifier", "return_sign"]
    model: ModelRef
    direction_model: ModelRef | None = None
    feature_timestamp: datetime
    feature_age_seconds: float
    stale: bool = Field(description="Features older than max_feature_age: the forecast may be outdated.")


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class Quote(BaseModel):
    """The latest bar of a symbol as held by the online store (price features)."""

    symbol: str
    ts: datetime
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float | None
    amount: float | None = None
    stale: bool


class QuotesResponse(BaseModel):
    quotes: list[Quote]


class ModelVersionInfo(BaseModel):
    """One registered model version with its aliases and evidence."""

    name: str
    version: str
    aliases: list[str]
    family: str | None
    task: str | None
    metrics: dict[str, float]
    decision: str | None
    created: str
    serving: bool = Field(description="This version is the one loaded by this server.")


class ModelsResponse(BaseModel):
    models: list[ModelVersionInfo]


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    online_store: str
    models: dict[str, str]


class ReloadResponse(BaseModel):
    """What a reload found: the version served per registered model, and which ones changed."""

    models: dict[str, str | None]
    changed: list[str]
    errors: dict[str, str]


class ErrorResponse(BaseModel):
    detail: str
