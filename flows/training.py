"""training_flow (train → evaluate → register/promote → leaderboard) and retrain_flow (data first)."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from finstream.config import get_settings
from flows.data_pipeline import data_pipeline
from training.zoo_stages import TrainingReport


@task(name="train-evaluate-promote")
def train_task(families: list[str] | None, tasks: list[str] | None) -> TrainingReport:
    """Walk-forward evaluate every family, log to MLflow, register the best per task and apply the gates."""
    from training.zoo_stages import train

    report = train(get_settings(), families=families, tasks=tasks)
    logger = get_run_logger()
    for task_name, decision in report.decisions.items():
        logger.info(
            "%s: %s v%s (%s) — %s",
            task_name,
            decision["model"],
            decision["version"],
            "champion" if decision["promote"] else "challenger",
            decision["reason"],
        )
    return report


@task(name="leaderboard")
def leaderboard_task() -> str:
    """Write the leaderboard (markdown + HTML) from MLflow."""
    from training.report import leaderboard_from_mlflow, write_leaderboard

    settings = get_settings()
    md, _ = write_leaderboard(leaderboard_from_mlflow(settings), settings.paths.reports)
    get_run_logger().info("leaderboard: %s", md)
    return str(md)


@flow(name="training_flow")
def training_flow(families: list[str] | None = None, tasks: list[str] | None = None) -> TrainingReport:
    """Train and evaluate the model zoo on the features in the store; promote winners."""
    report = train_task(families, tasks)
    leaderboard_task(wait_for=[report])
    return report


@flow(name="retrain_flow")
def retrain_flow(families: list[str] | None = None, tasks: list[str] | None = None) -> TrainingReport:
    """Scheduled retraining: refresh the data (ingest → validate → features → materialize), then train."""
    data_pipeline()
    return training_flow(families=families, tasks=tasks)
