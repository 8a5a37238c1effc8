"""Request and response bodies of the HTTP API (pydantic): what clients send and get back, and `json_response`
that writes a body in one pydantic-core call."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

MAX_SYMBOLS = 100


class PredictRequest(BaseModel):
    """Symbols to forecast, e.g. {"symbols": ["000300.SH", "^GSPC"]}."""

    model_config = ConfigDict(extra="forbid")

    symbols: list[str] = Field(min_length=1, max_length=MAX_SYMBOLS)

    @field_validator("symbols")
    @classmethod
    def _clean(cls, symbols: list[str]) -> list[str]:
        return clean_symbols(symbols)


def clean_symbols(symbols: list[str]) -> list[str]:
    """Stripped, de-duplicated symbols in request order; ValueError for an empty one."""
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
    variant: Literal["champion", "challenger"] = Field(
        "champion", description="Which registry alias answered (A/B split mode sends a share to challenger)."
    )
    symbol_verdict: Literal["passed", "failed"] | None = Field(
        None,
        description="The return model's walk-forward verdict on this symbol (a pooled model is judged per "
        "symbol: gate metric vs naive and DM p-value); null when the version records none.",
    )


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    variant: Literal["champion", "challenger"] = "champion"


class Bar(BaseModel):
    """One daily bar (UTC close time)."""

    ts: datetime
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float | None
    amount: float | None = None


class Quote(Bar):
    """The latest bar of a symbol as held by the online store (price features)."""

    symbol: str
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


class ModelDetail(BaseModel):
    """One registered model: its versions (newest first) and which ones this server serves."""

    name: str
    aliases: dict[str, str]
    serving: dict[str, str] = Field(description="alias -> version loaded by this server")
    versions: list[ModelVersionInfo]


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


class ABSettingsBody(BaseModel):
    """A/B experiment settings: `split` sends `share` of /predict requests to the challenger; `shadow`
    answers with the champion and runs the challenger beside it for the metrics; `off` serves the champion."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["off", "split", "shadow"]
    share: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of requests for the challenger (split mode)."
    )


class ABStatus(BaseModel):
    mode: Literal["off", "split", "shadow"]
    share: float
    updated_by: str | None
    updated_at: float | None
    challengers: dict[str, str | None] = Field(description="challenger version loaded per registered model")


class AuditEntry(BaseModel):
    ts: float
    actor: str
    role: str
    action: str
    outcome: str
    details: dict
    prev: str


class AuditResponse(BaseModel):
    entries: list[AuditEntry]


class SignalRequest(BaseModel):
    """Symbols to decide on, with the position the caller holds in each coming into the bar."""

    model_config = ConfigDict(extra="forbid")

    symbols: list[str] = Field(min_length=1, max_length=MAX_SYMBOLS)
    positions: dict[str, float] = Field(
        default_factory=dict,
        description="Position held per symbol coming into the bar (-1 short .. 1 long); missing symbols: 0.",
    )
    equity_return: float = Field(
        0.0, ge=-1.0, description="The account's return since it started following the agent (agent input)."
    )
    allow_other_symbols: bool = Field(
        False,
        description="Let the agent decide on symbols it was not trained on (flagged in_distribution=false).",
    )

    @field_validator("symbols")
    @classmethod
    def _clean(cls, symbols: list[str]) -> list[str]:
        return clean_symbols(symbols)

    @field_validator("positions")
    @classmethod
    def _positions(cls, positions: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in positions.items() if not -1.0 <= v <= 1.0]
        if bad:
            raise ValueError(f"positions must be between -1 and 1 (check {', '.join(bad)})")
        return {k.strip(): v for k, v in positions.items()}


class SupervisedSignal(BaseModel):
    """Long/flat from the supervised champions, the rule their walk-forward backtest traded."""

    action: Literal["long", "flat"]
    target_position: float
    source: Literal["classifier", "return"] = Field(
        description="P(up) > 0.5 from the direction model, else predicted return > 0."
    )
    predicted_return: float
    probability_up: float | None
    model: ModelRef
    direction_model: ModelRef | None = None


class AgentDecision(BaseModel):
    """The RL agent's action at the close of `as_of`: the position to hold until the next close."""

    action: int | list[float]
    target_position: float
    action_mode: str
    trained_on: str
    in_distribution: bool
    as_of: datetime
    model: ModelRef = Field(description="finstream-agent version; family is the RL algorithm")


class SymbolSignal(BaseModel):
    symbol: str
    position: float = Field(description="The position held coming into the bar, as given.")
    feature_timestamp: datetime
    stale: bool
    supervised: SupervisedSignal
    agent: AgentDecision | None
    agent_note: str | None = Field(None, description="Why `agent` is null, when it is.")


class SignalResponse(BaseModel):
    signals: list[SymbolSignal]


class HistoryResponse(BaseModel):
    """Validated bars, ascending: the latest `limit` of the range (`truncated` when older ones were cut)."""

    symbol: str
    bars: list[Bar]
    total: int = Field(description="Bars in the range before the limit.")
    truncated: bool


def json_response(body: BaseModel, status: int = 200) -> Response:
    """`body` serialised by pydantic-core in one call (FastAPI's response_model pass is skipped)."""
    return Response(body.model_dump_json(), status_code=status, media_type="application/json")


class VaREstimate(BaseModel):
    """Value at risk and expected shortfall of one method at one confidence level, as positive fractions of
    position value lost over the next bar (simple returns); `model` is from the volatility champion."""

    method: Literal["historical", "normal", "student_t", "ewma", "model"]
    level: float
    var: float | None
    es: float | None


class RiskAlert(BaseModel):
    """A risk rule firing on the latest bar (see finstream.risk.alerts)."""

    severity: Literal["info", "warning", "critical"]
    rule: str
    value: float
    limit: float
    symbol: str
    bar_time: datetime
    message: str


class VolatilityForecast(BaseModel):
    """The `finstream-volatility` champion's forecast of the next bar: a baseline (GARCH, GJR-GARCH, HAR,
    rolling variance) when no zoo candidate beat it, labelled by `kind`."""

    model: str
    version: str
    family: str
    kind: Literal["baseline", "candidate"]
    gate: str | None = Field(None, description="the promotion gate's reason recorded on the version")
    variance: float = Field(description="next bar's log-return variance, in squared percent")
    volatility: float = Field(description="its standard deviation, a fraction (0.01 = 1 %)")
    annualised: float = Field(description="volatility × sqrt(bars per year)")


class RiskSummary(BaseModel):
    """The current risk of one symbol or of a portfolio, at its latest validated bar."""

    name: str
    as_of: datetime
    bars: int
    var: list[VaREstimate]
    volatility: float | None
    ewma_volatility: float | None
    drawdown: float | None
    max_drawdown: float | None
    volatility_spike: float | None
    volatility_forecast: VolatilityForecast | None = None
    alerts: list[RiskAlert]


class RiskResponse(BaseModel):
    interval: str
    risk: list[RiskSummary]


class PortfolioRequest(BaseModel):
    """Portfolio weights by symbol, e.g. {"weights": {"000300.SH": 0.4, "^GSPC": 0.6}}; they must sum to 1
    and be non-negative unless risk.allow_short."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(min_length=1, max_length=MAX_SYMBOLS)


class PortfolioRiskResponse(BaseModel):
    interval: str
    weights: dict[str, float]
    risk: RiskSummary


class SignInRequest(BaseModel):
    """A configured user's name and password (FINSTREAM_USERS)."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class TokenResponse(BaseModel):
    """A signed JWT: send it as `Authorization: Bearer <access_token>` (or as a WebSocket's first message
    `{"token": ...}`) until it expires."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds the token is valid for")
    expires_at: float = Field(description="when it expires, Unix time")
    role: Literal["viewer", "trader", "admin"]
    username: str
