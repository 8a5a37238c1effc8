"""rl_training_flow: train an RLlib trading agent, evaluate it held-out, export, register and gate it."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from finstream.config import get_settings
from training.rl.agent_stages import AgentReport


@task(name="train-evaluate-register-agent")
def train_agent_task(algo: str | None, iterations: int | None) -> AgentReport:
    """Train the agent (Ray RLlib), evaluate its exported policy held-out, register it with the gates."""
    from training.rl.agent_stages import train_agent

    report = train_agent(get_settings(), algo=algo, iterations=iterations)
    metrics = report.evaluation.metrics
    get_run_logger().info(
        "%s on %s: held-out Sharpe %.2f (buy-and-hold %.2f); finstream-agent v%s %s: %s",
        report.algo,
        report.symbol,
        metrics["sharpe"],
        metrics["bh_sharpe"],
        report.version,
        "champion" if report.promote else "challenger",
        report.reason,
    )
    return report


@flow(name="rl_training_flow")
def rl_training_flow(algo: str | None = None, iterations: int | None = None) -> AgentReport:
    """Train, evaluate and register a PPO or DQN trading agent on the features in the store."""
    return train_agent_task(algo, iterations)
