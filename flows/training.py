"""training_flow (the supervised zoo, stage by stage) and retrain_flow (the data pipeline first).

Stages (training.zoo_stages), one Prefect task each: training set → leakage check per task → MLflow parent
runs per task → Ray Tune per tuned family × task → walk-forward evaluation (calibrated) per family × task
→ SPA / MCS over each task's candidates → leaderboard → register and gate per task; then the volatility
task (training.volatility_stages): baselines and candidates walk-forward on the same folds → register the
winner (or the best baseline) → its gate.

The evaluations run side by side in `train.workers` processes (Prefect's
ProcessPoolTaskRunner: separate processes keep torch's global RNG and MLflow's run stack per family); with
one worker they run one after another in the flow's own process. A family that fails (after its retry) is
named in the report and the leaderboard; the others are still evaluated, registered and gated.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.states import State
from prefect.task_runners import ProcessPoolTaskRunner

from finstream.config import Settings, get_settings
from finstream.errors import ConfigError
from flows.data_pipeline import data_pipeline
from training.volatility_stages import (
    VolatilityEvaluation,
    evaluate_volatility_task,
    gate_volatility_version,
    register_volatility,
)
from training.zoo_stages import (
    CandidateFailure,
    CandidateResult,
    GateDecision,
    Leaderboard,
    LeakageReport,
    Registration,
    TrainingReport,
    TrainingSet,
    Tuning,
    WalkForwardRuns,
    check_leakage,
    evaluate_candidate,
    gate,
    load_training,
    open_runs,
    register_best,
    test_search,
    tune,
    write_run_leaderboard,
)

TASKS = ("regression", "classification", "volatility")
ZOO_TASKS = ("regression", "classification")


@task(name="training-set", task_run_name="training-set", cache_policy=NONE)
def training_set_task(settings: Settings) -> TrainingSet:
    """Point-in-time training set from Feast (get_historical_features at every validated bar)."""
    training = load_training(settings)
    get_run_logger().info(
        "training set: %d rows of %s, data version %s",
        training.rows,
        ", ".join(training.symbols),
        training.data_version[:10],
    )
    return training


@task(name="leakage-check", task_run_name="leakage-check-{task_name}", cache_policy=NONE)
def leakage_task(training: TrainingSet, task_name: str, settings: Settings) -> LeakageReport:
    """Stop the run if a feature correlates with the target like a leak."""
    report = check_leakage(training, task_name, settings)
    get_run_logger().info("%s: %d features, largest |rho| %s", task_name, report.features, report.top)
    return report


@task(name="walk-forward-runs", task_run_name="walk-forward-runs-{task_name}", cache_policy=NONE)
def runs_task(settings: Settings, training: TrainingSet, task_name: str) -> WalkForwardRuns:
    """The MLflow parent run per scope that the task's family runs nest under."""
    return open_runs(settings, training, task_name)


@task(name="tune", task_run_name="tune-{task_name}-{family}", cache_policy=NONE)
def tune_task(settings: Settings, training: TrainingSet, task_name: str, family: str) -> Tuning:
    """Ray Tune search for one family (every trial an MLflow run), scored before the test period."""
    tuning = tune(settings, training, task_name, family)
    get_run_logger().info("tuned %s/%s: %s", task_name, family, tuning.params)
    return tuning


@task(
    name="evaluate",
    task_run_name="evaluate-{runs.task}-{family}",
    cache_policy=NONE,
    retries=1,
    retry_delay_seconds=5,
)
def evaluate_task(
    settings: Settings, training: TrainingSet, runs: WalkForwardRuns, family: str, tuning: Tuning | None
) -> list[CandidateResult]:
    """Walk-forward evaluation of one family on one task, its final model logged to MLflow."""
    results = evaluate_candidate(settings, training, runs, family, tuning)
    logger = get_run_logger()
    for r in results:
        logger.info(
            "%s/%s/%s: ic %.4f, oos_r2 %.4f, sharpe %.2f, DM p %.3f (%.0f s)",
            r.task, r.scope, r.family, r.metrics.get("ic", float("nan")),
            r.metrics.get("oos_r2", float("nan")), r.metrics.get("sharpe", float("nan")),
            r.metrics.get("dm_pvalue", float("nan")), r.fit_seconds,
        )  # fmt: skip
    return results


@task(name="search-tests", task_run_name="search-tests-{task_name}", cache_policy=NONE)
def search_task(
    settings: Settings, task_name: str, candidates: list[CandidateResult]
) -> list[CandidateResult]:
    """SPA and MCS over the task's pooled candidates: the gates that account for trying many models."""
    tests = test_search(settings, task_name, candidates)
    if tests is not None:
        members = sorted(name for name, ok in tests.mcs_members.items() if ok)
        get_run_logger().info(
            "%s: SPA p %.3f over %d candidates (%d days); MCS %s%s",
            task_name, tests.spa_pvalue, len(tests.mcs_members), tests.days, members,
            " + naive" if tests.benchmark_in_mcs else "",
        )  # fmt: skip
    return candidates


@task(name="leaderboard", task_run_name="leaderboard", cache_policy=NONE)
def leaderboard_task(
    settings: Settings, candidates: list[CandidateResult], failures: list[CandidateFailure]
) -> Leaderboard:
    """Write the run's leaderboard (markdown + HTML), failed candidates named."""
    board = write_run_leaderboard(settings, candidates, failures)
    get_run_logger().info("leaderboard: %s (%d failed candidates)", board.markdown, len(failures))
    return board


@task(name="register", task_run_name="register-{task_name}", cache_policy=NONE)
def register_task(
    settings: Settings, training: TrainingSet, task_name: str, candidates: list[CandidateResult]
) -> Registration | None:
    """Register the task's best pooled candidate as a new version of its model."""
    registration = register_best(settings, training, task_name, candidates)
    if registration is not None:
        get_run_logger().info(
            "%s: registered %s v%s (%s)",
            task_name,
            registration.model,
            registration.version,
            registration.family,
        )
    return registration


@task(name="gate", task_run_name="gate-{registration.task}", cache_policy=NONE)
def gate_task(settings: Settings, registration: Registration) -> GateDecision:
    """The promotion gates: champion or challenger, with every gate's numbers in the reason."""
    decision = gate(settings, registration)
    get_run_logger().info(
        "%s: %s v%s (%s) — %s",
        decision.task,
        decision.model,
        decision.version,
        "champion" if decision.promote else "challenger",
        decision.reason,
    )
    return decision


@task(name="volatility-evaluate", task_run_name="volatility-evaluate", cache_policy=NONE)
def volatility_evaluate_task(settings: Settings, training: TrainingSet) -> VolatilityEvaluation:
    """Walk-forward next-bar variance: GARCH / GJR / HAR / rolling baselines vs the zoo candidates."""
    evaluation = evaluate_volatility_task(settings, training)
    best = evaluation.row(evaluation.best_baseline)
    get_run_logger().info(
        "volatility: best baseline %s (QLIKE %.4f); winner %s (%s); %d folds, %.0f s",
        evaluation.best_baseline, float(best["qlike"]), evaluation.winner, evaluation.winner_kind,
        evaluation.folds, evaluation.seconds,
    )  # fmt: skip
    return evaluation


@task(name="volatility-register", task_run_name="volatility-register", cache_policy=NONE)
def volatility_register_task(
    settings: Settings, training: TrainingSet, evaluation: VolatilityEvaluation
) -> GateDecision:
    """Fit the winner on every row, register it as finstream-volatility and gate it against the baseline."""
    registration = register_volatility(settings, training, evaluation)
    decision = gate_volatility_version(settings, registration, evaluation.winner_kind)
    get_run_logger().info(
        "volatility: %s v%s (%s, %s) — %s",
        decision.model, decision.version, decision.family, evaluation.winner_kind,
        "champion" if decision.promote else "challenger",
    )  # fmt: skip
    return decision


def _check_names(families: Sequence[str], tasks: Sequence[str], volatility_families: Sequence[str]) -> None:
    """Unknown names fail before any work starts, naming what is allowed."""
    from finstream.models.zoo import FAMILIES, family_class

    if "volatility" in tasks:
        wrong = [f for f in volatility_families if f not in FAMILIES or family_class(f).sequential]
        if wrong:
            raise ConfigError(
                f"train.volatility_families {wrong}: the volatility task takes tabular zoo families"
            )

    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ConfigError(f"unknown model families {unknown}: use any of {', '.join(FAMILIES)}")
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise ConfigError(f"unknown tasks {bad}: use any of {', '.join(TASKS)}")


def _evaluate_all(
    settings: Settings,
    training: TrainingSet,
    runs: dict[str, WalkForwardRuns],
    pairs: list[tuple[str, str]],
    tunings: dict[tuple[str, str], Tuning],
) -> list[tuple[str, str, State]]:
    """Run every family × task evaluation (in parallel processes when train.workers > 1); final states."""
    args = [
        {
            "settings": settings,
            "training": training,
            "runs": runs[t],
            "family": f,
            "tuning": tunings.get((t, f)),
        }
        for t, f in pairs
    ]
    if settings.train.workers <= 1 or len(pairs) == 1:
        return [(t, f, evaluate_task(**a, return_state=True)) for (t, f), a in zip(pairs, args, strict=True)]
    with _api_for_children(), ProcessPoolTaskRunner(max_workers=settings.train.workers) as runner:
        futures = [runner.submit(evaluate_task, parameters=a) for a in args]
        for future in futures:
            future.wait()
        return [(t, f, fut.state) for (t, f), fut in zip(pairs, futures, strict=True)]


@contextmanager
def _api_for_children() -> Iterator[None]:
    """Point spawned task processes at this run's API through the environment they inherit (with the
    ephemeral API, the server this process started), else each child starts a temporary server of its own.

    Prefect forwards the children's task-run events from a thread that reads the root settings, so an API
    URL set only in a temporary settings context (a test harness) does not reach it: set PREFECT_API_URL in
    the environment, as `prefect server` users do, or run with train.workers = 1.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        server = SubprocessASGIServer()
        url = server.api_url if server.server_process is not None else None
    if not url or "PREFECT_API_URL" in os.environ:
        yield
        return
    os.environ["PREFECT_API_URL"] = str(url)
    try:
        yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)


@flow(name="training_flow")
def training_flow(families: list[str] | None = None, tasks: list[str] | None = None) -> TrainingReport:
    """Train and evaluate the model zoo on the features in the store; register and gate each task's best."""
    started = time.perf_counter()
    settings = get_settings()
    families = list(families or settings.train.families)
    tasks = list(tasks or settings.train.tasks)
    _check_names(families, tasks, settings.train.volatility_families)
    logger = get_run_logger()
    training = training_set_task(settings)
    zoo_tasks = [t for t in tasks if t in ZOO_TASKS]
    for t in zoo_tasks:
        leakage_task(training, t, settings)
    runs = {t: runs_task(settings, training, t) for t in zoo_tasks}
    tunings = {
        (t, f): tune_task(settings, training, t, f)
        for t in zoo_tasks
        for f in families
        if f in settings.train.tune_families and settings.train.tune_samples > 0
    }
    pairs = [(t, f) for t in zoo_tasks for f in families]
    candidates: list[CandidateResult] = []
    failures: list[CandidateFailure] = []
    for t, f, state in _evaluate_all(settings, training, runs, pairs, tunings):
        if state.is_completed():
            candidates += state.result()
        else:
            error = str(state.result(raise_on_failure=False) or "").strip()
            failures.append(CandidateFailure(t, f, error.splitlines()[0] if error else str(state.name)))
            logger.error("%s/%s failed: %s", t, f, failures[-1].error)
    for t in zoo_tasks:
        candidates = search_task(settings, t, candidates)
    board = leaderboard_task(settings, candidates, failures) if zoo_tasks else None
    decisions: dict[str, GateDecision] = {}
    for t in zoo_tasks:
        registration = register_task(settings, training, t, [c for c in candidates if c.task == t])
        if registration is not None:
            decisions[t] = gate_task(settings, registration)
    volatility = None
    if "volatility" in tasks:
        volatility = volatility_evaluate_task(settings, training)
        decisions["volatility"] = volatility_register_task(settings, training, volatility)
    return TrainingReport(
        training.data_version,
        training.rows,
        candidates,
        failures,
        decisions,
        board.markdown if board is not None else None,
        round(time.perf_counter() - started, 1),
        volatility,
    )


@flow(name="retrain_flow")
def retrain_flow(families: list[str] | None = None, tasks: list[str] | None = None) -> TrainingReport:
    """Scheduled retraining: refresh the data (ingest → validate → features → materialize), then train."""
    data_pipeline()
    return training_flow(families=families, tasks=tasks)
