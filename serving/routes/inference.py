"""Forecasts and trading signals on the latest online features: POST /predict, POST /signal (trader key).

Both are `async` and never leave the event loop: one non-blocking Redis read (which also spends the rate-limit
token) and the models' predict in place (tabular models take ~0.01-0.6 ms).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response

from finstream.errors import StoreUnavailable
from finstream.models.agent import AgentSymbolMismatch
from finstream.models.champions import AGENT_TASK, DIRECTION_TASK, RETURN_TASK, LoadedModel
from finstream.models.inputs import FeatureRows, input_matrix
from finstream.models.registry import CHALLENGER, CHAMPION
from finstream.models.windows import InsufficientHistory
from serving.payloads import (
    AgentDecision,
    ModelRef,
    Prediction,
    PredictRequest,
    PredictResponse,
    SignalRequest,
    SignalResponse,
    SupervisedSignal,
    SymbolSignal,
    json_response,
)
from serving.routes.access import ReadingTrader
from serving.runtime import Runtime, ServingRuntime
from serving.telemetry import FEATURE_AGE, PREDICTIONS, SHADOW_GAP

log = logging.getLogger(__name__)

router = APIRouter()


@router.post("/predict", response_model=PredictResponse)
async def predict(body: PredictRequest, caller: ReadingTrader, runtime: Runtime) -> Response:
    """Next-period return and direction per symbol, on the latest online features.

    The champions answer, or in A/B split mode the challengers for a configured share of requests
    (`variant` says which); in shadow mode the challengers predict too, for the metrics only.
    """
    ab = runtime.models.ab
    rows = await runtime.read(caller, body.symbols)
    variant, returns, direction, predicted, p_up = _forecast(runtime, rows, ab.variant())
    if ab.mode == "shadow":
        _shadow(runtime, rows, ((RETURN_TASK, returns, predicted), (DIRECTION_TASK, direction, p_up)))
    ages = rows.ages()
    out = []
    for i, symbol in enumerate(rows.symbols):
        value = float(predicted[i])
        prob = None if p_up is None else float(p_up[i])
        up = prob >= 0.5 if prob is not None else value >= 0.0
        FEATURE_AGE.labels(symbol=symbol).set(float(ages[i]))
        out.append(
            Prediction(
                symbol=symbol,
                predicted_return=value,
                direction="up" if up else "down",
                probability_up=prob,
                direction_source="classifier" if prob is not None else "return_sign",
                model=_ref(returns),
                direction_model=_ref(direction) if direction is not None else None,
                feature_timestamp=rows.timestamp(i),
                feature_age_seconds=float(ages[i]),
                stale=runtime.is_stale(ages[i]),
                variant=variant,  # type: ignore[arg-type]
                symbol_verdict=returns.verdict(symbol),
            )
        )
    return json_response(PredictResponse(predictions=out, variant=variant))  # type: ignore[arg-type]


@router.post("/signal", response_model=SignalResponse)
async def signal(body: SignalRequest, caller: ReadingTrader, runtime: Runtime) -> Response:
    """Trading signals per symbol: the supervised champions' long/flat and the RL agent's position.

    The supervised signal is the rule the walk-forward backtest traded (long when P(up) > 0.5, else
    when the predicted return > 0; flat otherwise). The agent (the `finstream-agent` champion) decides
    from its window of features ending at the latest bar, the position given for the symbol and
    `equity_return`; it answers only for the symbol it was trained on unless `allow_other_symbols`.
    """
    rows = await runtime.read(caller, body.symbols)
    _, returns, direction, predicted, p_up = _forecast(runtime, rows, CHAMPION)
    agent = runtime.models.get(AGENT_TASK)
    ages = rows.ages()
    out = []
    for i, symbol in enumerate(rows.symbols):
        value = float(predicted[i])
        prob = None if p_up is None else float(p_up[i])
        long = prob > 0.5 if prob is not None else value > 0.0
        position = float(body.positions.get(symbol, 0.0))
        decision, note = _agent_decision(runtime, agent, symbol, rows.timestamp(i), position, body)
        out.append(
            SymbolSignal(
                symbol=symbol,
                position=position,
                feature_timestamp=rows.timestamp(i),
                stale=runtime.is_stale(ages[i]),
                supervised=SupervisedSignal(
                    action="long" if long else "flat",
                    target_position=1.0 if long else 0.0,
                    source="classifier" if prob is not None else "return",
                    predicted_return=value,
                    probability_up=prob,
                    model=_ref(returns),
                    direction_model=_ref(direction) if direction is not None else None,
                ),
                agent=decision,
                agent_note=note,
            )
        )
    return json_response(SignalResponse(signals=out))


def _forecast(
    runtime: ServingRuntime, rows: FeatureRows, variant: str
) -> tuple[str, Any, Any, np.ndarray, Any]:
    """(variant, return model, direction model or None, predicted returns, P(up) or None) for `rows`.

    Each model reference is read once: a reload cannot swap it in the middle of the request.
    """
    models = runtime.models
    returns = models.get(RETURN_TASK, variant) if variant == CHALLENGER else None
    if returns is None:  # no challenger loaded: the champion answers
        variant = CHAMPION
        returns = models.require(RETURN_TASK)
    direction = models.get(DIRECTION_TASK, variant) or models.get(DIRECTION_TASK)
    predicted = _predict(runtime, returns, rows)
    p_up = _predict(runtime, direction, rows) if direction is not None else None
    n = len(rows.symbols)
    PREDICTIONS.labels(model=returns.name, version=returns.version, variant=variant).inc(n)
    if direction is not None:
        PREDICTIONS.labels(model=direction.name, version=direction.version, variant=variant).inc(n)
    return variant, returns, direction, predicted, p_up


def _predict(runtime: ServingRuntime, model: LoadedModel, rows: FeatureRows) -> np.ndarray:
    if model.window is None:
        return model.predict(_inputs(rows, model), rows.symbols)
    bars = [rows.timestamp(i) for i in range(len(rows.symbols))]
    return model.predict_windows(runtime.windows, rows.symbols, bars)


def _inputs(rows: FeatureRows, model: LoadedModel) -> np.ndarray:
    A = input_matrix(rows, model.columns)
    bad = np.isnan(A).any(axis=1)
    if bad.any():
        symbols = ", ".join(s for s, b in zip(rows.symbols, bad, strict=True) if b)
        raise StoreUnavailable(f"incomplete features for {symbols} in the online store: rematerialize them")
    return A


def _shadow(runtime: ServingRuntime, rows: FeatureRows, served: tuple[tuple[str, Any, Any], ...]) -> None:
    """Run each task's challenger on the same rows; record how far it is from what was served."""
    for task, model, answer in served:
        shadow = runtime.models.get(task, CHALLENGER)
        if shadow is None or model is None or answer is None:
            continue
        try:
            other = _predict(runtime, shadow, rows)
        except Exception as exc:  # a shadow failure must never fail the request
            log.warning("shadow %s v%s failed: %s", shadow.name, shadow.version, exc)
            continue
        PREDICTIONS.labels(model=shadow.name, version=shadow.version, variant="shadow").inc(len(other))
        gap = SHADOW_GAP.labels(
            model=shadow.name, champion_version=model.version, challenger_version=shadow.version
        )
        for d in np.abs(np.asarray(other) - np.asarray(answer)):
            gap.observe(float(d))


def _agent_decision(
    runtime: ServingRuntime, agent: Any, symbol: str, bar: Any, position: float, body: SignalRequest
) -> tuple[AgentDecision | None, str | None]:
    """The RL agent's decision for one symbol, or None and why (no agent served, wrong symbol, short
    history)."""
    if agent is None:
        why = runtime.models.errors.get(AGENT_TASK) or "no champion"
        return None, (
            f"no RL agent is served ({why}): train one with `finstream rl train` and promote it "
            f"with `finstream models promote {runtime.models.names[AGENT_TASK]} VERSION`"
        )
    try:
        got = agent.signal(
            runtime.windows,
            symbol,
            position,
            body.equity_return,
            allow_other_symbol=body.allow_other_symbols,
            as_of=bar,
        )
    except (AgentSymbolMismatch, InsufficientHistory) as exc:
        return None, str(exc)
    PREDICTIONS.labels(model=agent.name, version=agent.version, variant=CHAMPION).inc()
    return (
        AgentDecision(
            action=got.action,
            target_position=got.target_position,
            action_mode=got.action_mode,
            trained_on=got.trained_on,
            in_distribution=got.in_distribution,
            as_of=got.as_of,
            model=ModelRef(name=got.agent, version=got.version, family=got.algo),
        ),
        None,
    )


def _ref(model: LoadedModel) -> ModelRef:
    return ModelRef(name=model.name, version=model.version, family=model.family)
