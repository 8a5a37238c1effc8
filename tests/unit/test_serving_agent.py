"""The served agent rebuilds TradingEnv's observations exactly and maps actions as the env does (real CSI 300)

The policies here are tiny TorchScript nets: the policy is not under test, the observation and the
action → position mapping around it are. Agents are built from `training.rl.agent_stages.env_spec`, the spec
training logs with every registered agent.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures_training import real_dataset
from torch import nn

from finstream.config import CostParams, RLParams, Settings
from finstream.feature_table import build_features
from finstream.models.agent import (
    AgentSpecError,
    AgentSymbolMismatch,
    LoadedAgent,
    agent_from_metadata,
    agent_from_model_dir,
)
from finstream.models.policy import META_FILE, Policy, load_policy
from finstream.models.windows import FeatureWindows
from finstream.sources.packaged import PackagedSource
from finstream.storage import write_parquet_atomic
from finstream.symbols import parse_symbol
from training.rl.agent_stages import env_spec
from training.rl.env import TradingEnv, env_config_from_dataset

SYMBOL = "000300.SH"


class ConstantAction(nn.Module):
    """Always the discrete action `action`."""

    def __init__(self, action: int) -> None:
        super().__init__()
        self.action = action

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.full((obs.shape[0],), self.action, dtype=torch.long)


class FirstEntry(nn.Module):
    """Continuous action = the observation's first entry (unclipped: the agent's own clipping is tested)."""

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs[:, :1]


class Linear(nn.Module):
    """Argmax of a seeded linear layer: actions that depend on the observation."""

    def __init__(self, obs_dim: int, n_actions: int) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.lin = nn.Linear(obs_dim, n_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.argmax(self.lin(obs), dim=-1)


def _meta(mode: str, obs_dim: int, low: float = 0.0) -> dict[str, Any]:
    discrete = mode != "continuous"
    return {
        "algo": "ppo",
        "action_mode": mode,
        "head": "argmax_logits" if discrete else "gaussian_mean",
        "obs_dim": obs_dim,
        "n_actions": {"long_flat": 2, "long_short": 3}.get(mode),
        "action_low": None if discrete else [low],
        "action_high": None if discrete else [1.0],
    }


def _config(period: str = "test", mode: str = "long_flat", window: int = 5, **extra: Any) -> dict[str, Any]:
    cfg = env_config_from_dataset(
        real_dataset(), SYMBOL, period, RLParams(action_mode=mode, window=window), CostParams()
    )
    return {**cfg, **extra}


def _agent(cfg: dict[str, Any], net: nn.Module | None = None, low: float = 0.0) -> LoadedAgent:
    """The agent a server would load for an env config: spec via env_spec, policy meta as export writes it."""
    mode = cfg["action_mode"]
    obs_dim = cfg["window"] * len(cfg["feature_names"]) + 2
    if net is None:
        net = (
            Linear(obs_dim, {"long_flat": 2, "long_short": 3}[mode]) if mode != "continuous" else FirstEntry()
        )
    meta = _meta(mode, obs_dim, low)
    policy = Policy(torch.jit.script(net), meta)
    return agent_from_metadata("finstream-agent", "3", {**meta, "env": env_spec(cfg)}, policy)


def _raw_window(cfg: dict[str, Any], row: int) -> np.ndarray:
    """Raw (unstandardised) model inputs of the env's window ending at its row `row`, oldest first."""
    ds = real_dataset()
    X = ds.X[cfg["feature_names"]].to_numpy(np.float64)
    return X[cfg["rows"][row - cfg["window"] + 1 : row + 1]]


@pytest.mark.parametrize(
    ("period", "mode", "window", "clip"),
    [
        ("test", "long_flat", 5, None),
        ("test", "long_short", 3, None),
        ("test", "continuous", 10, None),
        ("train", "long_flat", 1, 1.5),  # a small clip: many standardised values are clipped
        ("train", "long_short", 4, 0.75),
    ],
)
def test_observation_equals_the_envs_along_an_episode(
    period: str, mode: str, window: int, clip: float | None
) -> None:
    cfg = _config(period, mode, window, **({} if clip is None else {"clip": clip}))
    agent = _agent(cfg)
    assert agent.clip == (clip or 10.0) and agent.obs_dim == window * 29 + 2
    env = TradingEnv({**cfg, "sequential": False, "episode_length": 80})
    obs, info = env.reset(options={"start": cfg["start_range"][0] + 40})
    row, position, equity = info["t"], info["position"], info["equity"]
    actions = [1, 0, 2, 2, 1] if mode == "long_short" else [1, 1, 0, 1, 0]
    if mode == "continuous":
        actions = [np.array([v], np.float32) for v in (0.3, 1.7, -0.4, 0.85, 0.0)]
    checked, clipped = 0, False
    for k in range(60):
        served = agent.observation(_raw_window(cfg, row), position, equity - 1.0)
        np.testing.assert_array_equal(served, obs)
        assert served.dtype == np.float32 and served.shape == env.observation_space.shape
        checked += 1
        clipped = clipped or bool((np.abs(served[:-2]) == clip).any())
        obs, _, done, _, info = env.step(actions[k % len(actions)])
        row, position, equity = info["t"] + 1, info["position"], info["equity"]
        if done:
            break
    assert checked == 60
    assert clipped or clip is None  # the small clips were exercised


def test_nan_and_inf_inputs_are_mapped_like_the_env() -> None:
    """NaN → 0 and ±inf → ±clip after standardisation (rows training drops; the env still defines them)."""
    cfg = _config("test", "long_flat", 3)
    agent = _agent(cfg)
    raw = np.concatenate([_raw_window(cfg, r)[-1:] for r in range(10, 16)])  # six consecutive real rows
    raw[2, 4], raw[3, 0], raw[4, 7] = np.nan, np.inf, -np.inf
    mean, std = np.asarray(cfg["feature_mean"]), np.asarray(cfg["feature_std"])
    env = TradingEnv(
        {
            "features": ((raw - mean) / std).astype(np.float32),  # as env_config_from_dataset standardises
            "returns": np.zeros(6),
            "symbol": SYMBOL,
            "window": 3,
            "episode_length": 1,
            "start_range": (2, 6),
        }
    )
    for start in range(2, 6):
        obs, _ = env.reset(options={"start": start})
        np.testing.assert_array_equal(agent.observation(raw[start - 2 : start + 1], 0.0), obs)
    served = agent.observation(raw[1:4], 0.0)
    assert served[29 + 4] == 0.0 and served[2 * 29] == 10.0


def test_position_and_equity_entries() -> None:
    cfg = _config("test", "long_short", 2)
    agent = _agent(cfg)
    raw = _raw_window(cfg, 30)
    obs = agent.observation(raw, -1.0, 0.125)
    assert obs[-2] == -1.0 and obs[-1] == 0.125
    assert agent.observation(raw, 1.0, -3.0)[-1] == -1.0  # equity - 1 is clipped to [-1, clip]
    assert agent.observation(raw, 0.0, 99.0)[-1] == 10.0
    with pytest.raises(ValueError, match="shape \\(2, 29\\)"):
        agent.observation(raw[:1], 0.0)
    with pytest.raises(ValueError, match="position must be a number in \\[-1, 1\\]"):
        agent.observation(raw, 1.5)
    long_flat = _agent(_config("test", "long_flat", 2))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        long_flat.observation(raw, -1.0)
    with pytest.raises(ValueError, match="finite"):
        agent.observation(raw, 0.0, float("nan"))


@pytest.mark.parametrize("mode", ["long_flat", "long_short"])
def test_discrete_actions_map_to_the_envs_positions(mode: str) -> None:
    cfg = _config("test", mode, 2)
    env = TradingEnv(cfg)
    obs = _agent(cfg).observation(_raw_window(cfg, 20), 0.0)
    for action in range(env.action_space.n):
        agent = _agent(cfg, ConstantAction(action))
        assert agent.act(obs) == (action, env.position_of(action))
    with pytest.raises(Exception, match="answered action 5"):
        _agent(cfg, ConstantAction(5)).act(obs)


@pytest.mark.parametrize("low", [0.0, -1.0])
def test_continuous_actions_are_clipped_into_the_box(low: float) -> None:
    cfg = _config("test", "continuous", 2)
    env = TradingEnv({**cfg, "allow_short": low < 0})
    agent = _agent(cfg, FirstEntry(), low=low)
    obs = agent.observation(_raw_window(cfg, 20), 0.0)
    for value in (-3.0, -0.5, 0.0, 0.25, 1.0, 2.5):
        obs[0] = value
        action, position = agent.act(obs)
        assert action == [value] and position == env.position_of(np.array([value], np.float32))


def test_spec_problems_are_named() -> None:
    cfg = _config("test", "long_flat", 2)
    obs_dim = 2 * 29 + 2
    policy = Policy(torch.jit.script(Linear(obs_dim, 2)), _meta("long_flat", obs_dim))
    spec = env_spec(cfg)
    with pytest.raises(AgentSpecError, match="no environment spec"):
        agent_from_metadata("a", "1", {"algo": "ppo"}, policy)
    for key in ("feature_std", "window", "symbol"):
        with pytest.raises(AgentSpecError, match=key):
            agent_from_metadata("a", "1", {"env": {k: v for k, v in spec.items() if k != key}}, policy)
    with pytest.raises(AgentSpecError, match="29 feature names but 28 means"):
        agent_from_metadata("a", "1", {"env": {**spec, "feature_mean": spec["feature_mean"][1:]}}, policy)
    with pytest.raises(AgentSpecError, match="takes 60 inputs, the spec implies 3×29\\+2 = 89"):
        agent_from_metadata("a", "1", {"env": {**spec, "window": 3}}, policy)
    with pytest.raises(AgentSpecError, match="acts in 'long_flat' but its spec says 'long_short'"):
        agent_from_metadata("a", "1", {"env": {**spec, "action_mode": "long_short"}}, policy)


def test_loads_from_an_mlflow_model_folder(tmp_path: Path) -> None:
    """The folder `log_policy` writes: MLmodel metadata (policy meta + env) and the TorchScript file."""
    import mlflow

    from finstream.models.policy import ARTIFACT
    from finstream.models.policy import __getattr__ as export_attr

    cfg = _config("test", "long_short", 4)
    obs_dim = 4 * 29 + 2
    meta = _meta("long_short", obs_dim)
    scripted = torch.jit.script(Linear(obs_dim, 3))
    policy_file = tmp_path / "policy.pt"
    torch.jit.save(scripted, str(policy_file), _extra_files={META_FILE: json.dumps(meta)})
    mlflow.pyfunc.save_model(
        str(tmp_path / "model"),
        python_model=export_attr("PolicyPyfunc")(),
        artifacts={ARTIFACT: str(policy_file)},
        pip_requirements=["torch", "numpy", "pandas"],
        metadata={**{k: v for k, v in meta.items() if v is not None}, "env": env_spec(cfg)},
    )
    agent = agent_from_model_dir(tmp_path / "model", "finstream-agent", "7")
    assert (agent.name, agent.version, agent.algo, agent.action_mode) == (
        "finstream-agent",
        "7",
        "ppo",
        "long_short",
    )
    assert agent.symbol == SYMBOL and agent.window == 4 and agent.feature_names == tuple(cfg["feature_names"])
    np.testing.assert_array_equal(agent.mean, np.asarray(cfg["feature_mean"]))
    np.testing.assert_array_equal(agent.std, np.asarray(cfg["feature_std"]))
    obs = agent.observation(_raw_window(cfg, 12), 1.0)
    assert agent.act(obs)[0] == load_policy(policy_file)(obs)
    with pytest.raises(AgentSpecError, match="not an MLflow model folder"):
        agent_from_model_dir(tmp_path, "finstream-agent", "7")


def test_signal_from_feature_windows_matches_the_env(settings: Settings) -> None:
    """Windows from the features parquet give the env's observation at that bar; other symbols are refused."""
    src = PackagedSource(Settings())
    bars = pd.concat(
        [src.fetch(parse_symbol(s), date(2010, 1, 1), date(2018, 12, 31)) for s in (SYMBOL, "^GSPC")],
        ignore_index=True,
    )
    write_parquet_atomic(build_features(bars), settings.paths.features)
    windows = FeatureWindows(settings)
    cfg = _config("test", "long_short", 5)
    agent = _agent(cfg)
    env = TradingEnv({**cfg, "sequential": False, "episode_length": 1})
    times = pd.DatetimeIndex(pd.to_datetime(cfg["times"]).tz_localize("UTC"))
    lo, hi = cfg["start_range"]
    for row in (lo, lo + 1, (lo + hi) // 2, hi - 1):
        obs, _ = env.reset(options={"start": row})
        rows = windows.latest(SYMBOL, agent.window, columns=agent.feature_names, as_of=times[row])
        np.testing.assert_array_equal(agent.observation(rows.values, 0.0), obs)
        signal = agent.signal(windows, SYMBOL, as_of=times[row])
        assert signal.as_of == times[row].to_pydatetime()
        assert signal.action == agent.policy(obs) and signal.in_distribution
        assert signal.target_position == env.position_of(signal.action)
    latest = agent.signal(windows, position=1.0, equity_return=0.05)
    assert latest.as_of > times[-1].to_pydatetime() and latest.symbol == SYMBOL and latest.position == 1.0
    with pytest.raises(AgentSymbolMismatch, match=r"trained and evaluated on 000300\.SH, not \^GSPC"):
        agent.signal(windows, "^GSPC")
    other = agent.signal(windows, "^GSPC", allow_other_symbol=True)
    assert not other.in_distribution and other.trained_on == SYMBOL and other.symbol == "^GSPC"
