"""An exported trading policy, Ray-free: the TorchScript file (observation → action) and its MLflow pyfunc.

`training.rl.export.export_policy` writes the file (the checkpoint's RLModule inference path, traced); its
metadata (algo, action mode, spaces) travels inside it as an extra file, so loading needs torch and numpy
only: serving and the stream never import Ray or gymnasium.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

META_FILE = "finstream_policy.json"
ARTIFACT = "policy"
POLICY_FILE = "policy.pt"


@contextmanager
def quiet_jit() -> Iterator[None]:
    """Silence torch.jit's deprecation notices (torch 2.13): TorchScript is still the chosen format here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        yield


class Policy:
    """A loaded TorchScript policy: call it with one observation (→ action) or a batch (→ array of actions).

    Discrete modes return an int per observation; continuous mode a float32 vector clipped to the Box.
    """

    def __init__(self, net: torch.jit.ScriptModule, meta: dict[str, Any]) -> None:
        self.net = net
        self.meta = meta
        self.discrete = meta["n_actions"] is not None
        self.obs_dim = int(meta["obs_dim"])

    def actions(self, obs: np.ndarray) -> np.ndarray:
        """Actions for a batch (n, obs_dim): int64 (n,) for discrete modes, float32 (n, k) for continuous."""
        x = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise ValueError(f"observations must have shape (n, {self.obs_dim}), got {tuple(x.shape)}")
        with torch.inference_mode():
            return self.net(x).numpy()

    def __call__(self, obs: np.ndarray) -> Any:
        arr = np.asarray(obs, dtype=np.float32)
        if arr.ndim == 2:
            return self.actions(arr)
        out = self.actions(arr.reshape(1, -1))[0]
        return int(out) if self.discrete else out


def load_policy(path: str | Path) -> Policy:
    """The exported policy at `path` (torch only: Ray is neither needed nor imported)."""
    extra = {META_FILE: ""}
    with quiet_jit():
        net = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    net.eval()
    return Policy(net, json.loads(extra[META_FILE]))


class PolicyModel:
    """MLflow pyfunc wrapper (a `mlflow.pyfunc.PythonModel`): rows of obs_0…obs_{n-1} → one action per row."""

    def load_context(self, context: Any) -> None:
        self.policy = load_policy(context.artifacts[ARTIFACT])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        return self.policy.actions(np.asarray(model_input, dtype=np.float32))


def __getattr__(name: str) -> Any:
    """`PolicyPyfunc`: PolicyModel as a subclass of mlflow's PythonModel, built on first use.

    Built lazily so that importing this module (and `load_policy`) never imports mlflow; a module attribute
    all the same, so the logged model pickles it by reference and `mlflow.pyfunc.load_model` finds it.
    """
    if name != "PolicyPyfunc":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return policy_pyfunc()


def policy_pyfunc() -> type:
    """The `PolicyPyfunc` class (PolicyModel + mlflow's PythonModel), created once."""
    cls = globals().get("PolicyPyfunc")
    if cls is None:
        from mlflow.pyfunc import PythonModel

        cls = type("PolicyPyfunc", (PolicyModel, PythonModel), {"__module__": __name__})
        globals()["PolicyPyfunc"] = cls
    return cls
