"""RL training as stages: prepare → train (Ray RLlib PPO or DQN, new API stack) → export → evaluate → register
→ gate. `flows/rl.py` orders them, one Prefect task each.

A run is `settings.rl` plus a recorder (MLflow experiment `finstream-agent`): the parameters, the learning
curve per iteration (episode return, seconds, env steps), the RLlib checkpoint, the held-out evaluation
(`training.rl.evaluate`) and the exported Ray-free policy (`training.rl.export`), registered as a version of
`finstream-agent` and gated like the supervised models, with Sharpe as the gate metric.

Ray: on one machine `ray.init` gets every core, no dashboard and a temp dir under FINSTREAM_HOME; with
RAY_ADDRESS set it joins that cluster instead. Sampling and learning run in the driver (`num_env_runners=0`,
`num_learners=0`), which is fastest on a few cores; an algo dict may ask for `num_env_runners` on a cluster.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from finstream.config import RLParams, Settings
from finstream.errors import ConfigError
from finstream.models.registry import AGENT_MODEL

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    from training.dataset import Dataset
    from training.promotion import GateDecision, Registration
    from training.rl.evaluate import AgentEvaluation

log = logging.getLogger(__name__)

EXPERIMENT = AGENT_MODEL
REGISTERED_MODEL = AGENT_MODEL
TASK = "trading-agent"
ALGOS = ("ppo", "dqn")
#: algo-dict keys that belong to `.env_runners(...)` and `.reporting(...)`; the rest go to `.training(...)`
ENV_RUNNER_KEYS = frozenset(
    {"rollout_fragment_length", "batch_mode", "num_envs_per_env_runner", "num_env_runners"}
)
REPORTING_KEYS = frozenset(
    {"min_sample_timesteps_per_iteration", "min_time_s_per_iteration", "min_train_timesteps_per_iteration"}
)
INT_KEYS = frozenset(
    {
        "train_batch_size_per_learner", "minibatch_size", "num_epochs", "rollout_fragment_length",
        "num_steps_sampled_before_learning_starts", "target_network_update_freq", "n_step",
        "num_envs_per_env_runner", "num_env_runners", "min_sample_timesteps_per_iteration",
        "min_train_timesteps_per_iteration",
    }
)  # fmt: skip
#: learning-curve metrics per iteration: MLflow name -> path in the RLlib result dict
CURVE_METRICS: dict[str, tuple[str, ...]] = {
    "episode_return_mean": ("env_runners", "episode_return_mean"),
    "episode_len_mean": ("env_runners", "episode_len_mean"),
    "env_steps_sampled": ("env_runners", "num_env_steps_sampled"),
    "env_steps_lifetime": ("env_runners", "num_env_steps_sampled_lifetime"),
    "time_this_iter_s": ("time_this_iter_s",),
    "total_loss": ("learners", "default_policy", "total_loss"),
    "entropy": ("learners", "default_policy", "entropy"),
    "qf_loss": ("learners", "default_policy", "qf_loss"),
}


@dataclass
class AgentRun:
    """Stage 1: what the run trains on (the symbol's training and held-out env configs) and its MLflow run."""

    algo: str
    symbol: str
    action_mode: str
    iterations: int
    run_id: str
    data_version: str
    out: Path
    train_config: dict[str, Any]
    test_config: dict[str, Any]
    dataset: Dataset


@dataclass
class TrainedAgent:
    """Stage 2: the learning curve and the RLlib checkpoint."""

    curve: pd.DataFrame
    checkpoint: Path
    train_seconds: float


@dataclass
class ExportedAgent:
    """Stage 3: the Ray-free TorchScript policy and its in-sample (training period) backtest figures."""

    policy_path: Path
    train_metrics: dict[str, float]


@dataclass
class AgentReport:
    """What an RL training run produced: where everything is, the curve, the evaluation, the decision."""

    algo: str
    symbol: str
    action_mode: str
    iterations: int
    run_id: str
    data_version: str
    checkpoint: Path
    policy_path: Path
    model_uri: str
    version: str
    promote: bool
    reason: str
    curve: pd.DataFrame
    evaluation: AgentEvaluation
    train_metrics: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    seconds: float = 0.0

    def results_table(self) -> pd.DataFrame:
        """Held-out backtest per strategy: agent, buy-and-hold, supervised champion (if any)."""
        return self.evaluation.table()


def check_algo(algo: str, params: RLParams) -> None:
    """Fail early, with a fix, on an unknown algorithm or DQN with continuous actions."""
    if algo not in ALGOS:
        raise ConfigError(f"unknown RL algorithm {algo!r}: use one of {', '.join(ALGOS)}")
    if algo == "dqn" and params.action_mode == "continuous":
        raise ConfigError(
            "DQN needs a discrete action space: set rl.action_mode to long_flat or long_short, or use PPO"
            " for continuous positions"
        )


def _split_settings(algo_settings: dict[str, float | int]) -> tuple[dict, dict, dict]:
    """(training, env_runners, reporting) keyword arguments from an rl.ppo / rl.dqn dict."""
    training: dict[str, Any] = {}
    runners: dict[str, Any] = {}
    reporting: dict[str, Any] = {}
    for key, value in algo_settings.items():
        if key in INT_KEYS:
            if float(value) != int(value):
                raise ConfigError(f"rl setting {key} must be a whole number, got {value}")
            value = int(value)
        target = runners if key in ENV_RUNNER_KEYS else reporting if key in REPORTING_KEYS else training
        target[key] = value
    return training, runners, reporting


def build_algo_config(algo: str, env_config: dict[str, Any], params: RLParams) -> AlgorithmConfig:
    """PPO or DQN config on RLlib's new API stack: TradingEnv, settings from `params.ppo`/`params.dqn`.

    Sampling and learning in the driver (`num_env_runners=0` unless the dict asks otherwise,
    `num_learners=0`), seeded with `params.seed`. Continuous actions are not normalised: the policy's mean,
    clipped to the env's Box, is the position (what `training.rl.export` exports).
    """
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.algorithms.ppo import PPOConfig

    from finstream.logs import adopt_ray
    from training.rl.env import TradingEnv

    adopt_ray()  # importing RLlib installed its own stderr handler

    check_algo(algo, params)
    training, runners, reporting = _split_settings(dict(params.ppo if algo == "ppo" else params.dqn))
    runners.setdefault("num_env_runners", 0)
    env_kwargs: dict[str, Any] = {}
    if params.action_mode == "continuous":
        env_kwargs = {"normalize_actions": False, "clip_actions": True}
    config = (PPOConfig() if algo == "ppo" else DQNConfig()).api_stack(
        enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True
    )
    try:
        config = (
            config.framework("torch")
            .environment(env=TradingEnv, env_config=env_config, **env_kwargs)
            .env_runners(**runners)
            .learners(num_learners=0)
            .training(**training)
            .reporting(**reporting)
            .debugging(seed=params.seed)
        )
    except TypeError as exc:  # an unknown key in rl.ppo / rl.dqn
        raise ConfigError(f"invalid rl.{algo} setting: {exc}") from exc
    return config


def _start_ray(settings: Settings) -> tuple[bool, Path | None]:
    """Start Ray unless it is running: (started here, a scratch temp dir to delete after shutdown or None).

    Ray's session folder goes under FINSTREAM_HOME, or into a fresh short folder under the system temp dir
    when that path is too long for Ray's unix sockets (`training.tune.ray_temp_dir`); the latter is removed
    after `ray.shutdown()` so runs leave nothing behind outside FINSTREAM_HOME.
    """
    import ray

    from finstream.logs import adopt_ray
    from training.tune import ray_temp_dir

    adopt_ray()  # Ray's and RLlib's notices to the log file, not the terminal
    if ray.is_initialized():
        return False, None
    address = os.environ.get("RAY_ADDRESS")
    temp_dir = None if address else ray_temp_dir(settings)
    ray.init(
        address=address,
        num_cpus=None if address else os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=temp_dir,
    )
    home = settings.paths.home.resolve()
    scratch = Path(temp_dir) if temp_dir and not Path(temp_dir).resolve().is_relative_to(home) else None
    return True, scratch


def _lookup(result: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def curve_point(result: dict[str, Any]) -> dict[str, float]:
    """The learning-curve metrics present (and finite) in one `Algorithm.train()` result."""
    point = {name: _lookup(result, path) for name, path in CURVE_METRICS.items()}
    return {k: v for k, v in point.items() if v is not None}


def env_spec(env_config: dict[str, Any]) -> dict[str, Any]:
    """How the env turns feature rows into observations: what serving needs beside the policy itself."""
    keys = ("symbol", "action_mode", "window", "feature_names", "feature_mean", "feature_std", "clip")
    spec = {k: env_config[k] for k in keys if k in env_config}
    spec["observation"] = (
        "window rows of standardised features (oldest first, row-major, NaN -> 0, clipped to ±clip),"
        " then the position held coming into the bar, then episode equity - 1 (training.rl.env)"
    )
    return spec


def _log_params(params: RLParams, algo: str, iterations: int, env_config: dict[str, Any]) -> None:
    import mlflow

    algo_settings = params.ppo if algo == "ppo" else params.dqn
    mlflow.log_params(
        {
            "algo": algo,
            "symbol": params.symbol,
            "action_mode": params.action_mode,
            "window": params.window,
            "episode_length": params.episode_length,
            "risk_penalty": params.risk_penalty,
            "test_years": params.test_years,
            "iterations": iterations,
            "seed": params.seed,
            "obs_features": len(env_config.get("feature_names", [])),
            **{f"{algo}.{k}": v for k, v in algo_settings.items()},
        }
    )


def _train(
    settings: Settings, algo: str, iterations: int, params: RLParams, env_config: dict[str, Any], out: Path
) -> tuple[pd.DataFrame, Path, float]:
    """Build and train the algorithm; log the curve per iteration; save the checkpoint. Ray stops after."""
    import mlflow
    import ray

    started, scratch = _start_ray(settings)
    t0 = time.perf_counter()
    try:
        algorithm = build_algo_config(algo, env_config, params).build_algo()
        try:
            points = []
            for i in range(1, iterations + 1):
                point = curve_point(algorithm.train())
                mlflow.log_metrics(point, step=i)
                points.append({"iteration": i, **point})
                log.info(
                    "%s iteration %d/%d: episode return %s, %.1f s",
                    algo,
                    i,
                    iterations,
                    f"{point['episode_return_mean']:.4f}" if "episode_return_mean" in point else "n/a",
                    point.get("time_this_iter_s", float("nan")),
                )
            checkpoint = Path(algorithm.save_to_path(str(out / "checkpoint")))
        finally:
            algorithm.stop()
    finally:
        if started:
            ray.shutdown()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return pd.DataFrame(points).set_index("iteration"), checkpoint, time.perf_counter() - t0


def prepare_agent(settings: Settings, algo: str | None = None, iterations: int | None = None) -> AgentRun:
    """Stage 1: check the settings, build the env configs from the Feast training set, open the MLflow run."""
    import mlflow

    from finstream.models.tracking import configure_mlflow, ensure_experiment
    from training.rl.env import env_config_from_dataset
    from training.store_dataset import load_training_set

    params = settings.rl
    algo = algo or params.algo
    iterations = params.iterations if iterations is None else iterations
    check_algo(algo, params)
    if iterations < 1:
        raise ConfigError(f"iterations must be >= 1, got {iterations}")
    configure_mlflow(settings)
    dataset, data_version = load_training_set(settings, [params.symbol])
    costs = settings.train.costs
    train_config = env_config_from_dataset(dataset, params.symbol, "train", params, costs)
    test_config = env_config_from_dataset(dataset, params.symbol, "test", params, costs)
    experiment = ensure_experiment(EXPERIMENT, settings)
    with mlflow.start_run(experiment_id=experiment, run_name=f"{algo}-{params.symbol}") as run:
        mlflow.set_tags(
            {
                "algo": algo,
                "symbol": params.symbol,
                "data_version": data_version,
                "task": TASK,
                "family": algo,
            }
        )
        _log_params(params, algo, iterations, train_config)
    run_id = run.info.run_id
    return AgentRun(
        algo=algo,
        symbol=params.symbol,
        action_mode=params.action_mode,
        iterations=iterations,
        run_id=run_id,
        data_version=data_version,
        out=settings.paths.home.resolve() / "agents" / run_id,
        train_config=train_config,
        test_config=test_config,
        dataset=dataset,
    )


def train_policy(settings: Settings, run: AgentRun) -> TrainedAgent:
    """Stage 2: train with RLlib, the curve logged per iteration; save and log the checkpoint."""
    import mlflow

    with mlflow.start_run(run_id=run.run_id):
        curve, checkpoint, seconds = _train(
            settings, run.algo, run.iterations, settings.rl, run.train_config, run.out
        )
        mlflow.log_metric("train_seconds", seconds)
        mlflow.log_artifacts(str(checkpoint), artifact_path="checkpoint")
    return TrainedAgent(curve, checkpoint, seconds)


def export_agent(settings: Settings, run: AgentRun, trained: TrainedAgent) -> ExportedAgent:
    """Stage 3: trace the policy to TorchScript (servable without Ray); book its in-sample rollout."""
    import mlflow

    from finstream.models.policy import POLICY_FILE, load_policy
    from training.rl.evaluate import book_rollout
    from training.rl.export import export_policy

    policy_path = export_policy(trained.checkpoint, run.out / POLICY_FILE, run.algo, run.action_mode)
    in_sample = book_rollout(run.train_config, load_policy(policy_path), settings.train.costs).result
    metrics = {"train_sharpe": in_sample.sharpe, "train_ann_return": in_sample.ann_return}
    with mlflow.start_run(run_id=run.run_id):
        mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
    return ExportedAgent(policy_path, metrics)


def evaluate_held_out(settings: Settings, run: AgentRun, exported: ExportedAgent) -> AgentEvaluation:
    """Stage 4: the exported policy's held-out rollout against buy-and-hold and the supervised champion."""
    import mlflow

    from finstream.models.policy import load_policy
    from finstream.models.tracking import configure_mlflow
    from training.rl.evaluate import evaluate_agent, log_evaluation

    evaluation = evaluate_agent(
        load_policy(exported.policy_path),
        run.test_config,
        settings.train.costs,
        algo=run.algo,
        dataset=run.dataset,
        client=configure_mlflow(settings),
        data_version=run.data_version,
    )
    with mlflow.start_run(run_id=run.run_id):
        log_evaluation(evaluation)
    return evaluation


def register_agent(
    settings: Settings, run: AgentRun, exported: ExportedAgent, evaluation: AgentEvaluation
) -> Registration:
    """Stage 5: log the policy as a pyfunc model (with its env spec) and register it as `finstream-agent`."""
    import mlflow

    from finstream.models.policy import load_policy
    from finstream.models.registry import register_candidate
    from finstream.models.tracking import configure_mlflow
    from training.promotion import Registration
    from training.rl.evaluate import collect_observations
    from training.rl.export import log_policy

    spec = env_spec(run.train_config)
    examples = collect_observations(run.test_config, load_policy(exported.policy_path), 5)
    with mlflow.start_run(run_id=run.run_id):
        mlflow.log_dict(spec, "policy_env.json")
        info = log_policy(exported.policy_path, examples, env_spec=spec)
    tags = {
        "features": ",".join(run.train_config.get("feature_names", [])),
        "data_version": run.data_version,
        "family": run.algo,
        "task": TASK,
        "symbol": run.symbol,
        "action_mode": run.action_mode,
    }
    client = configure_mlflow(settings)
    version = register_candidate(
        client, REGISTERED_MODEL, info.model_uri, run.run_id, evaluation.metrics, tags
    )
    return Registration(TASK, REGISTERED_MODEL, str(version.version), run.algo, run.run_id)


def gate_agent(settings: Settings, registration: Registration) -> GateDecision:
    """Stage 6: the supervised models' gates with Sharpe as the metric (baseline: buy-and-hold)."""
    import mlflow

    from finstream.models.tracking import configure_mlflow
    from training.promotion import gate_registration

    gates = settings.promotion.model_copy(update={"metric": "sharpe"})
    decision = gate_registration(configure_mlflow(settings), registration, gates)
    with mlflow.start_run(run_id=registration.run_id):
        mlflow.set_tags({"promotion.decision": "champion" if decision.promote else "challenger"})
    return decision
