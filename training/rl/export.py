"""A trained RLlib agent as a Ray-free policy: TorchScript file (obs → action) and an MLflow pyfunc model.

`export_policy` wraps the checkpoint's RLModule inference path in a small `nn.Module` and traces it:

* PPO, discrete actions: argmax of `action_dist_inputs` (the most likely action);
* PPO, continuous actions: the Gaussian mean (first half of `action_dist_inputs`), clipped to the Box;
* DQN: argmax of the Q-values (`compute_q_values`), what RLlib's greedy `forward_inference` picks.

The TorchScript file carries its metadata (algo, action mode, spaces) as an extra file, so `load_policy`
needs torch, numpy and pandas: this module never imports Ray at import time (only `export_policy` does).
"""

from __future__ import annotations

import json
import logging
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from finstream.models.policy import ARTIFACT, META_FILE, POLICY_FILE, load_policy, policy_pyfunc, quiet_jit

log = logging.getLogger(__name__)

MODULE_ID = "default_policy"
EXAMPLE_ROWS = 5


def module_checkpoint(checkpoint_dir: str | Path) -> Path:
    """The RLModule folder inside an `Algorithm.save_to_path` checkpoint (loads without Ray running)."""
    return Path(checkpoint_dir) / "learner_group" / "learner" / "rl_module" / MODULE_ID


class PolicyNet(nn.Module):
    """obs (batch, obs_dim) float32 → greedy action per row, through the RLModule's inference path."""

    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, module: Any, kind: str, low: np.ndarray | None, high: np.ndarray | None) -> None:
        super().__init__()
        if kind not in {"argmax_logits", "gaussian_mean", "argmax_q"}:
            raise ValueError(f"unknown policy head {kind!r}")
        self.module = module
        self.kind = kind
        dim = 1 if low is None else int(np.asarray(low).size)
        self.action_dim = dim
        self.register_buffer("low", torch.as_tensor(np.full(dim, -np.inf) if low is None else low).float())
        self.register_buffer("high", torch.as_tensor(np.full(dim, np.inf) if high is None else high).float())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.kind == "argmax_q":
            q = self.module.compute_q_values({"obs": obs})["qf_preds"]
            return torch.argmax(q, dim=-1)
        logits = self.module.forward_inference({"obs": obs})["action_dist_inputs"]
        if self.kind == "argmax_logits":
            return torch.argmax(logits, dim=-1)
        mean = logits[..., : self.action_dim]
        return torch.maximum(torch.minimum(mean, self.high), self.low)


def export_policy(checkpoint_dir: str | Path, path: str | Path, algo: str, action_mode: str) -> Path:
    """Trace the checkpoint's RLModule into a TorchScript policy file at `path`; returns the path.

    Imports RLlib (to rebuild the module from its checkpoint) but needs no running Ray.
    """
    import gymnasium as gym
    from ray.rllib.core.rl_module.rl_module import RLModule

    module: Any = RLModule.from_checkpoint(str(module_checkpoint(checkpoint_dir)))
    module.eval()
    action_space = module.action_space
    obs_space = module.observation_space
    if obs_space is None or obs_space.shape is None or len(obs_space.shape) != 1:
        raise ValueError(f"expected a flat Box observation space, got {obs_space}")
    low = high = None
    if isinstance(action_space, gym.spaces.Discrete):
        kind = "argmax_q" if algo == "dqn" else "argmax_logits"
        n_actions: int | None = int(action_space.n)
    elif isinstance(action_space, gym.spaces.Box):
        if algo == "dqn":
            raise ValueError("DQN has no continuous-action policy to export")
        kind, n_actions = "gaussian_mean", None
        low = np.asarray(action_space.low, dtype="float32").ravel()
        high = np.asarray(action_space.high, dtype="float32").ravel()
    else:
        raise ValueError(f"unsupported action space {action_space}")
    net = PolicyNet(module, kind, low, high).eval()
    example = torch.as_tensor(
        np.stack([obs_space.sample() for _ in range(2)]).astype("float32")  # batch of 2: no baked-in size
    )
    with torch.no_grad(), quiet_jit():
        traced = torch.jit.trace(net, example, strict=False)
    meta = {
        "algo": algo,
        "action_mode": action_mode,
        "head": kind,
        "obs_dim": int(obs_space.shape[0]),
        "n_actions": n_actions,
        "action_low": None if low is None else low.tolist(),
        "action_high": None if high is None else high.tolist(),
        "torch": torch.__version__,
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with quiet_jit():
        torch.jit.save(traced, str(out), _extra_files={META_FILE: json.dumps(meta)})
    log.info("exported %s policy (%s) to %s", algo, kind, out, extra={"algo": algo, "path": str(out)})
    return out


def _pin(dist: str) -> str:
    try:
        return f"{dist}=={version(dist).split('+')[0]}"  # drop local labels such as +cpu
    except PackageNotFoundError:
        raise RuntimeError(f"{dist} is not installed: cannot pin it for the logged policy") from None


def pip_requirements() -> list[str]:
    """What serving the logged policy needs: torch and mlflow pinned, numpy and pandas (no Ray)."""
    return [_pin("torch"), _pin("mlflow"), "numpy", "pandas"]


def obs_columns(obs_dim: int) -> list[str]:
    return [f"obs_{i}" for i in range(obs_dim)]


def log_policy(
    policy_path: str | Path,
    example_obs: np.ndarray,
    name: str = "policy",
    env_spec: dict[str, Any] | None = None,
) -> Any:
    """Log the TorchScript policy into the active MLflow run as a pyfunc model; returns its ModelInfo.

    Input: a DataFrame of float32 columns obs_0…obs_{n-1} (one observation per row, as the environment
    builds it); output: the action per row. `example_obs` (real observations) give signature and example.
    `env_spec` (feature names, their standardisation, window, ...) goes into the model's metadata, so a
    server can build observations the way the environment did.
    """
    import mlflow
    from mlflow.models import infer_signature

    if mlflow.active_run() is None:
        raise RuntimeError("log_policy logs into the active run: call it inside mlflow.start_run()")
    policy = load_policy(policy_path)
    rows = np.asarray(example_obs, dtype=np.float32)[:EXAMPLE_ROWS]
    frame = pd.DataFrame(rows, columns=obs_columns(policy.obs_dim))
    signature = infer_signature(frame, policy.actions(rows))
    with tempfile.TemporaryDirectory() as tmp:
        # a stable artifact name inside the model folder, whatever the local file is called
        staged = Path(tmp) / POLICY_FILE
        staged.write_bytes(Path(policy_path).read_bytes())
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=policy_pyfunc()(),
            artifacts={ARTIFACT: str(staged)},
            signature=signature,
            input_example=frame,
            pip_requirements=pip_requirements(),
            metadata={**{k: v for k, v in policy.meta.items() if v is not None}, "env": env_spec or {}},
        )
    log.info("logged policy %s as %s", policy_path, info.model_uri)
    return info
