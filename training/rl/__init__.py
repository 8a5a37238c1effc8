"""Reinforcement learning: the trading environment, the RLlib stages, export and evaluation.

Names are imported lazily so that importing `training.rl` pulls in neither gymnasium nor Ray.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_ENV_NAMES = {"TradingEnv", "constant_policy", "env_config_from_dataset", "rollout"}

__all__ = sorted(_ENV_NAMES)


def __getattr__(name: str) -> Any:
    if name in _ENV_NAMES:
        return getattr(import_module("training.rl.env"), name)
    raise AttributeError(f"module 'training.rl' has no attribute {name!r}")
