"""rl_training_flow: prepare → train (RLlib) → export → evaluate held-out → register → gate, one task each."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from finstream.config import Settings, get_settings
from training.promotion import GateDecision, Registration
from training.rl.agent_stages import (
    AgentReport,
    AgentRun,
    ExportedAgent,
    TrainedAgent,
    evaluate_held_out,
    export_agent,
    gate_agent,
    prepare_agent,
    register_agent,
    train_policy,
)
from training.rl.evaluate import AgentEvaluation


@task(name="prepare-agent", task_run_name="prepare-agent", cache_policy=NONE)
def prepare_task(settings: Settings, algo: str | None, iterations: int | None) -> AgentRun:
    """Env configs of rl.symbol's training and held-out periods from Feast; the MLflow run."""
    run = prepare_agent(settings, algo, iterations)
    get_run_logger().info(
        "%s on %s for %d iterations (MLflow run %s)", run.algo, run.symbol, run.iterations, run.run_id
    )
    return run


@task(name="train-agent", task_run_name="train-agent", cache_policy=NONE)
def train_task(settings: Settings, run: AgentRun) -> TrainedAgent:
    """Ray RLlib training, the learning curve logged per iteration."""
    trained = train_policy(settings, run)
    get_run_logger().info("trained in %.1f s, checkpoint %s", trained.train_seconds, trained.checkpoint)
    return trained


@task(name="export-agent", task_run_name="export-agent", cache_policy=NONE)
def export_task(settings: Settings, run: AgentRun, trained: TrainedAgent) -> ExportedAgent:
    """TorchScript policy, servable without Ray."""
    exported = export_agent(settings, run, trained)
    get_run_logger().info("exported %s; in-sample %s", exported.policy_path, exported.train_metrics)
    return exported


@task(name="evaluate-agent", task_run_name="evaluate-agent", cache_policy=NONE)
def evaluate_task(settings: Settings, run: AgentRun, exported: ExportedAgent) -> AgentEvaluation:
    """Held-out rollout booked by the backtest, against buy-and-hold and the supervised champion."""
    evaluation = evaluate_held_out(settings, run, exported)
    metrics = evaluation.metrics
    get_run_logger().info("held-out Sharpe %.2f (buy-and-hold %.2f)", metrics["sharpe"], metrics["bh_sharpe"])
    return evaluation


@task(name="register-agent", task_run_name="register-agent", cache_policy=NONE)
def register_task(
    settings: Settings, run: AgentRun, exported: ExportedAgent, evaluation: AgentEvaluation
) -> Registration:
    """Log the policy with its env spec and register it as a version of finstream-agent."""
    registration = register_agent(settings, run, exported, evaluation)
    get_run_logger().info("registered %s v%s", registration.model, registration.version)
    return registration


@task(name="gate-agent", task_run_name="gate-agent", cache_policy=NONE)
def gate_task(settings: Settings, registration: Registration) -> GateDecision:
    """The promotion gates on held-out Sharpe."""
    decision = gate_agent(settings, registration)
    get_run_logger().info(
        "%s v%s %s: %s",
        decision.model,
        decision.version,
        "champion" if decision.promote else "challenger",
        decision.reason,
    )
    return decision


@flow(name="rl_training_flow")
def rl_training_flow(algo: str | None = None, iterations: int | None = None) -> AgentReport:
    """Train, export, evaluate, register and gate a PPO or DQN trading agent on the features in the store."""
    started = time.perf_counter()
    settings = get_settings()
    run = prepare_task(settings, algo, iterations)
    trained = train_task(settings, run)
    exported = export_task(settings, run, trained)
    evaluation = evaluate_task(settings, run, exported)
    registration = register_task(settings, run, exported, evaluation)
    decision = gate_task(settings, registration)
    return AgentReport(
        algo=run.algo,
        symbol=run.symbol,
        action_mode=run.action_mode,
        iterations=run.iterations,
        run_id=run.run_id,
        data_version=run.data_version,
        checkpoint=trained.checkpoint,
        policy_path=exported.policy_path,
        model_uri=f"models:/{registration.model}/{registration.version}",
        version=registration.version,
        promote=decision.promote,
        reason=decision.reason,
        curve=trained.curve,
        evaluation=evaluation,
        train_metrics=exported.train_metrics,
        train_seconds=round(trained.train_seconds, 1),
        seconds=round(time.perf_counter() - started, 1),
    )
