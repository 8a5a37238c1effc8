"""The registered RL trading agent: its exported policy, and observations built exactly as in training.

Training (`training.rl.agent_stages`) registers each agent as a version of `finstream-agent`: a pyfunc model
whose artifact is the Ray-free TorchScript policy (`finstream.models.policy`) and whose metadata holds the
policy's own meta plus `env`, the environment spec (symbol, action_mode, window, feature_names,
feature_mean, feature_std, clip). `load_agent` downloads the version, loads the policy (torch only: Ray and
gymnasium are never imported) and checks the spec.

Observation and action mapping are `finstream.models.observation`, the functions the training environment
uses: the last `window` rows of raw model inputs (`finstream.models.windows.FeatureWindows`, the rows
training used), standardised with the training rows' statistics, then the position held coming into the
bar, then equity − 1. Episode equity has no meaning for a live account: callers pass their own return since
they started following the agent, 0 by default (the state every training and held-out episode starts in).
`clip` defaults to 10.0, the env's default, when the spec lacks it. The position is the one to hold from
this bar's close to the next (decisions are made at the close).

Symbol policy. An agent is trained, evaluated and promoted on one symbol (`trained_on`): its standardisation
is that symbol's training-period mean/std, its reward booked that symbol's costs (stamp duty, T+1), and the
promotion gate compared its held-out Sharpe with that symbol's buy-and-hold. Nothing is known about its
behaviour elsewhere, so `signal` refuses another symbol with AgentSymbolMismatch unless the caller opts in
(`allow_other_symbol=True`), and then the answer carries `in_distribution=False`. An out-of-sample quant
would rather get a 4xx than an unevaluated position that looks like the evaluated one.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from finstream.errors import FinstreamError
from finstream.models.observation import (
    ACTION_MODES,
    DEFAULT_CLIP,
    DISCRETE_POSITIONS,
    clean_features,
    observation,
    standardise,
    target_position,
)
from finstream.models.policy import ARTIFACT, POLICY_FILE, Policy, load_policy
from finstream.models.registry import AGENT_MODEL as REGISTERED_AGENT

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from finstream.models.windows import FeatureWindows

__all__ = [
    "REGISTERED_AGENT",
    "AgentSignal",
    "AgentSpecError",
    "AgentSymbolMismatch",
    "LoadedAgent",
    "agent_from_metadata",
    "agent_from_model_dir",
    "load_agent",
]

log = logging.getLogger(__name__)

REQUIRED_SPEC = ("symbol", "action_mode", "window", "feature_names", "feature_mean", "feature_std")


class AgentSpecError(FinstreamError):
    """A registered agent lacks what a server needs to rebuild its observations (names what is missing)."""


class AgentSymbolMismatch(FinstreamError):
    """The agent was trained on another symbol and the caller did not allow serving it elsewhere."""

    def __init__(self, symbol: str, trained_on: str, agent: str) -> None:
        super().__init__(
            f"{agent} was trained and evaluated on {trained_on}, not {symbol}: ask for {trained_on}, or "
            "allow other symbols explicitly to get an out-of-distribution signal"
        )
        self.symbol, self.trained_on = symbol, trained_on


@dataclass(frozen=True)
class AgentSignal:
    """The agent's decision at the close of bar `as_of`: the position to hold until the next close."""

    symbol: str
    trained_on: str
    in_distribution: bool
    as_of: datetime  # UTC bar close of the newest feature row in the window
    action: int | list[float]
    target_position: float
    position: float  # the position held coming into the bar (part of the observation)
    equity_return: float  # equity - 1 as observed (before clipping)
    agent: str
    version: str
    algo: str
    action_mode: str


@dataclass(frozen=True, eq=False)
class LoadedAgent:
    """One registered agent version ready to act; immutable, so a reload swaps the whole object."""

    name: str
    version: str
    algo: str
    action_mode: str
    symbol: str  # the symbol it was trained on
    window: int
    feature_names: tuple[str, ...]
    mean: np.ndarray = field(repr=False)  # float64 (F,)
    std: np.ndarray = field(repr=False)  # float64 (F,)
    clip: float
    policy: Policy = field(repr=False)
    loaded_at: float

    @property
    def trained_on(self) -> str:
        return self.symbol

    @property
    def obs_dim(self) -> int:
        return self.window * len(self.feature_names) + 2

    @property
    def positions(self) -> tuple[float, ...] | None:
        """The position of each discrete action; None for continuous actions."""
        return DISCRETE_POSITIONS.get(self.action_mode)

    @property
    def low(self) -> float:
        """The lowest position the agent can take (the env's action-space low)."""
        if self.positions is not None:
            return self.positions[0]
        box = self.policy.meta.get("action_low")
        return float(box[0]) if box else 0.0

    def observation(
        self, window_features: np.ndarray, position: float, equity_return: float = 0.0
    ) -> np.ndarray:
        """The env's observation (float32, window·F + 2) from raw model inputs [window, F], oldest first.

        `window_features` columns are in `feature_names` order (FeatureWindows.latest(..., columns=...));
        `position` is the one held coming into the bar, `equity_return` equity − 1 (see the module doc).
        """
        x = np.asarray(window_features, dtype=np.float64)
        if x.shape != (self.window, len(self.feature_names)):
            raise ValueError(
                f"window_features must have shape ({self.window}, {len(self.feature_names)}), got {x.shape}"
            )
        position, equity_return = float(position), float(equity_return)
        if not (math.isfinite(position) and self.low <= position <= 1.0):
            raise ValueError(f"position must be a number in [{self.low:g}, 1], got {position}")
        if not math.isfinite(equity_return):
            raise ValueError(f"equity_return must be a finite number, got {equity_return}")
        rows = clean_features(standardise(x, self.mean, self.std), self.clip)
        return observation(rows, position, equity_return, self.clip)

    def act(self, obs: np.ndarray) -> tuple[int | list[float], float]:
        """(greedy action, target position) for one observation, mapped as TradingEnv.position_of does."""
        raw = self.policy(np.asarray(obs, dtype=np.float32))
        try:
            target = target_position(raw, self.positions, self.low)
        except ValueError as exc:
            raise FinstreamError(f"{self.name} v{self.version} answered action {raw!r}: {exc}") from None
        if self.positions is not None:
            return int(raw), target
        return [float(v) for v in np.asarray(raw, dtype=np.float64).reshape(-1)], target

    def check_symbol(self, symbol: str, allow_other_symbol: bool = False) -> bool:
        """True if `symbol` is the one the agent was trained on; AgentSymbolMismatch unless allowed."""
        if symbol == self.symbol:
            return True
        if not allow_other_symbol:
            raise AgentSymbolMismatch(symbol, self.symbol, f"{self.name} v{self.version}")
        return False

    def signal(
        self,
        windows: FeatureWindows,
        symbol: str | None = None,
        position: float = 0.0,
        equity_return: float = 0.0,
        *,
        allow_other_symbol: bool = False,
        as_of: datetime | pd.Timestamp | None = None,
    ) -> AgentSignal:
        """The decision at the newest bar of `symbol` (default: the trained symbol), or at `as_of`."""
        symbol = symbol or self.symbol
        rows = windows.latest(symbol, self.window, columns=self.feature_names, as_of=as_of)
        in_distribution = self.check_symbol(rows.symbol, allow_other_symbol)
        obs = self.observation(rows.values, position, equity_return)
        action, target = self.act(obs)
        return AgentSignal(
            symbol=rows.symbol,
            trained_on=self.symbol,
            in_distribution=in_distribution,
            as_of=rows.as_of,
            action=action,
            target_position=target,
            position=float(position),
            equity_return=float(equity_return),
            agent=self.name,
            version=self.version,
            algo=self.algo,
            action_mode=self.action_mode,
        )


def load_agent(client: MlflowClient, name: str, version: str) -> LoadedAgent:
    """Download `name` version `version` from the registry and load it (torch only, never Ray)."""
    import mlflow

    mv = client.get_model_version(name, str(version))
    uri = client.get_model_version_download_uri(name, str(version))
    with tempfile.TemporaryDirectory(prefix="finstream-agent-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=tmp, tracking_uri=client.tracking_uri
        )
        agent = agent_from_model_dir(local, name, str(mv.version), family=mv.tags.get("family"))
    log.info(
        "loaded agent %s v%s (%s, %s on %s)",
        name,
        agent.version,
        agent.algo,
        agent.action_mode,
        agent.symbol,
        extra={"model": name, "version": agent.version, "symbol": agent.symbol},
    )
    return agent


def agent_from_model_dir(path: str | Path, name: str, version: str, family: str | None = None) -> LoadedAgent:
    """A LoadedAgent from a downloaded MLflow model folder (MLmodel + artifacts/policy.pt)."""
    from mlflow.models import Model

    folder = Path(path)
    try:
        model = Model.load(str(folder / "MLmodel"))
    except Exception as exc:  # no MLmodel file, unreadable YAML
        raise AgentSpecError(f"{name} v{version} is not an MLflow model folder ({folder}): {exc}") from exc
    meta = dict(model.metadata or {})
    artifacts = (model.flavors.get("python_function") or {}).get("artifacts") or {}
    relative = (artifacts.get(ARTIFACT) or {}).get("path") or f"artifacts/{POLICY_FILE}"
    policy_file = folder / relative
    if not policy_file.is_file():
        raise AgentSpecError(
            f"{name} v{version} has no policy file at {relative}: it was not logged by training.rl.export"
        )
    policy = load_policy(policy_file)
    return agent_from_metadata(name, version, meta, policy, family)


def agent_from_metadata(
    name: str, version: str, meta: dict[str, Any], policy: Policy, family: str | None = None
) -> LoadedAgent:
    """The agent from its MLflow model metadata (policy meta + `env` spec), checked against the policy."""
    label = f"{name} v{version}"
    spec = meta.get("env")
    if not isinstance(spec, dict) or not spec:
        raise AgentSpecError(
            f"{label} has no environment spec in its MLflow metadata ('env'): retrain it with "
            "`finstream rl train` so a server can rebuild its observations"
        )
    missing = [k for k in REQUIRED_SPEC if spec.get(k) is None]
    if missing:
        raise AgentSpecError(
            f"{label}'s environment spec lacks {missing}: retrain it with `finstream rl train`"
        )
    names = tuple(str(n) for n in spec["feature_names"])
    mean = np.asarray(spec["feature_mean"], dtype=np.float64)
    std = np.asarray(spec["feature_std"], dtype=np.float64)
    window = int(spec["window"])
    clip = float(spec.get("clip", DEFAULT_CLIP))
    mode = str(spec["action_mode"])
    if not names or mean.shape != (len(names),) or std.shape != (len(names),):
        raise AgentSpecError(
            f"{label}: {len(names)} feature names but {mean.size} means and {std.size} stds in its spec"
        )
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise AgentSpecError(f"{label}: its feature means/stds must be finite and the stds positive")
    if window < 1 or not clip > 0:
        raise AgentSpecError(f"{label}: window {window} and clip {clip} must be positive")
    if mode not in ACTION_MODES:
        raise AgentSpecError(f"{label}: unknown action_mode {mode!r} (expected one of {ACTION_MODES})")
    if policy.meta.get("action_mode", mode) != mode:
        raise AgentSpecError(
            f"{label}: the policy acts in {policy.meta['action_mode']!r} but its spec says {mode!r}"
        )
    if policy.discrete != (mode in DISCRETE_POSITIONS):
        raise AgentSpecError(
            f"{label}: a {'discrete' if policy.discrete else 'continuous'} policy for {mode}"
        )
    if policy.discrete and int(policy.meta["n_actions"]) != len(DISCRETE_POSITIONS[mode]):
        raise AgentSpecError(f"{label}: {policy.meta['n_actions']} actions for {mode}")
    expected = window * len(names) + 2
    if policy.obs_dim != expected:
        raise AgentSpecError(
            f"{label}: the policy takes {policy.obs_dim} inputs, the spec implies {window}×{len(names)}+2 = "
            f"{expected}"
        )
    return LoadedAgent(
        name=name,
        version=str(version),
        algo=str(meta.get("algo") or policy.meta.get("algo") or family or "unknown"),
        action_mode=mode,
        symbol=str(spec["symbol"]),
        window=window,
        feature_names=names,
        mean=mean,
        std=std,
        clip=clip,
        policy=policy,
        loaded_at=time.time(),
    )
