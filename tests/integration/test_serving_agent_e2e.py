"""The served agent end to end: a PPO agent trained and registered on real CSI 300 features, loaded back from
the registry Ray-free, acting on windows read from the features parquet exactly as it did in its evaluation.

One FINSTREAM_HOME (CSI 300 and S&P 500 2008-2018 through ingest → validate → features) and one short PPO run
(1 iteration of 512 steps) serve every test here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests_support import isolate_env

from finstream.config import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYMBOL = "000300.SH"
ENV = {
    "FINSTREAM_RL__SYMBOL": SYMBOL,
    "FINSTREAM_RL__TEST_YEARS": "3",
    "FINSTREAM_RL__EPISODE_LENGTH": "128",
    "FINSTREAM_RL__ACTION_MODE": "long_short",
    "FINSTREAM_RL__PPO": json.dumps(
        {"train_batch_size_per_learner": 512, "minibatch_size": 64, "num_epochs": 2, "lr": 3e-4}
    ),
}


@dataclass
class Trained:
    settings: Settings
    report: Any  # training.rl.agent_stages.AgentReport
    test_config: dict[str, Any]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Iterator[Trained]:
    """Real stages into a fresh home, then `rl_training_flow` (PPO, 1 iteration): a registered agent."""
    from finstream.data_stages import features_stage, ingest_stage, validate_stage
    from flows.rl import rl_training_flow
    from training.rl.env import env_config_from_dataset
    from training.store_dataset import load_training_set

    root = tmp_path_factory.mktemp("served-agent")
    with pytest.MonkeyPatch.context() as mp:
        isolate_env(mp, root, **ENV)
        settings = Settings()
        ingest_stage(settings, f"{SYMBOL},^GSPC", "packaged", date(2008, 1, 1), date(2018, 12, 31))
        validate_stage(settings)
        features_stage(settings)
        report = rl_training_flow(algo="ppo", iterations=1)
        dataset, _ = load_training_set(settings, [SYMBOL])
        test_config = env_config_from_dataset(dataset, SYMBOL, "test", settings.rl, settings.train.costs)
        yield Trained(settings, report, test_config)


def test_load_agent_acts_like_the_exported_policy(trained: Trained) -> None:
    from finstream.models.agent import REGISTERED_AGENT, load_agent
    from finstream.models.policy import load_policy
    from finstream.models.tracking import configure_mlflow
    from training.rl.env import TradingEnv
    from training.rl.evaluate import collect_observations

    agent = load_agent(configure_mlflow(trained.settings), REGISTERED_AGENT, trained.report.version)
    cfg = trained.test_config
    assert (agent.symbol, agent.algo, agent.action_mode, agent.window) == (SYMBOL, "ppo", "long_short", 10)
    assert agent.feature_names == tuple(cfg["feature_names"]) and agent.clip == 10.0
    np.testing.assert_array_equal(agent.mean, np.asarray(cfg["feature_mean"]))  # exact through MLmodel YAML
    np.testing.assert_array_equal(agent.std, np.asarray(cfg["feature_std"]))

    exported = load_policy(trained.report.policy_path)
    obs = collect_observations(cfg, exported, 300)
    np.testing.assert_array_equal(agent.policy.actions(obs), exported.actions(obs))
    env = TradingEnv(cfg)
    for o in obs[:100]:
        action, position = agent.act(o)
        assert action == exported(o) and position == env.position_of(action)


def test_served_observations_from_the_features_parquet_equal_the_envs(trained: Trained) -> None:
    """The key equivalence: FeatureWindows rows (features parquet) == the env's rows (Feast training set).

    Served step by step over the whole held-out period, the agent reproduces its evaluated rollout exactly.
    """
    from finstream.models.agent import REGISTERED_AGENT, load_agent
    from finstream.models.tracking import configure_mlflow
    from finstream.models.windows import FeatureWindows
    from training.rl.env import TradingEnv

    agent = load_agent(configure_mlflow(trained.settings), REGISTERED_AGENT, trained.report.version)
    windows = FeatureWindows(trained.settings)
    cfg = trained.test_config
    times = pd.DatetimeIndex(pd.to_datetime(cfg["times"]).tz_localize("UTC"))
    env = TradingEnv({**cfg, "sequential": True})
    obs, info = env.reset()
    positions = []
    done = False
    while not done:
        t = info["t"]
        rows = windows.latest(SYMBOL, agent.window, columns=agent.feature_names, as_of=times[t])
        assert rows.as_of == times[t].to_pydatetime()
        position, equity = info["position"], info["equity"]
        served = agent.observation(rows.values, position, equity - 1.0)
        np.testing.assert_array_equal(served, obs)
        action, target = agent.act(served)
        positions.append(target)
        obs, _, done, _, info = env.step(action)
        info = {**info, "t": info["t"] + 1}
    evaluated = trained.report.evaluation.rollout
    assert len(positions) == len(evaluated) > 600
    np.testing.assert_array_equal(np.asarray(positions), evaluated["position"].to_numpy())

    # the newest bar has no realised return yet, so no env row: serving decides on it all the same
    signal = agent.signal(windows)
    assert signal.as_of > times[-1].to_pydatetime() and signal.as_of.date() == date(2018, 12, 28)
    assert signal.in_distribution and signal.target_position in (-1.0, 0.0, 1.0)


def test_loads_and_serves_without_ray(trained: Trained) -> None:
    """In a fresh interpreter: registry → agent → signal from the features parquet, and Ray never imported."""
    code = f"""
import sys
from finstream.config import Settings
from finstream.models.agent import REGISTERED_AGENT, load_agent
from finstream.models.windows import FeatureWindows
from finstream.models.tracking import configure_mlflow
settings = Settings()
agent = load_agent(configure_mlflow(settings), REGISTERED_AGENT, {trained.report.version!r})
signal = agent.signal(FeatureWindows(settings), position=1.0)
assert "ray" not in sys.modules, sorted(m for m in sys.modules if m.startswith("ray"))[:5]
print("ok", signal.as_of.date(), signal.target_position)
"""
    env = {**os.environ, "FINSTREAM_HOME": str(trained.settings.paths.home)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=trained.settings.paths.home,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok 2018-12-28"), done.stdout
