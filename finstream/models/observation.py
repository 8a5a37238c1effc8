"""The one RL observation: how the trading environment (training) and the served agent see a bar.

Observation = the last `window` rows of standardised model inputs (NaN → 0, ±inf and values beyond ±clip →
±clip, float32, row-major oldest first), then the position held coming into the bar, then equity − 1 clipped
to [−1, clip]. Actions map to target positions by `target_position`. `training.rl.env.TradingEnv` and
`finstream.models.agent.LoadedAgent` both call these functions, so a served observation is the trained one.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

ActionMode = Literal["long_flat", "long_short", "continuous"]
ACTION_MODES: tuple[str, ...] = ("long_flat", "long_short", "continuous")
#: target position of each discrete action
DISCRETE_POSITIONS: dict[str, tuple[float, ...]] = {"long_flat": (0.0, 1.0), "long_short": (-1.0, 0.0, 1.0)}
DEFAULT_CLIP = 10.0


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x − mean) / std in float64, stored as float32 (the training rows' statistics)."""
    return ((np.asarray(x, dtype=np.float64) - mean) / std).astype(np.float32)


def clean_features(x: np.ndarray, clip: float) -> np.ndarray:
    """Standardised features as float32 [T, F]: NaN → 0, ±inf → ±clip, everything clipped to ±clip."""
    raw = np.asarray(x, dtype=np.float64)
    return np.clip(np.nan_to_num(raw, nan=0.0, posinf=clip, neginf=-clip), -clip, clip).astype(np.float32)


def observation(rows: np.ndarray, position: float, equity_return: float, clip: float) -> np.ndarray:
    """The observation (float32, window·F + 2) from `window` cleaned feature rows, oldest first."""
    obs = np.empty(rows.size + 2, np.float32)
    obs[:-2] = rows.reshape(-1)
    obs[-2] = position
    obs[-1] = min(max(equity_return, -1.0), clip)
    return obs


def target_position(action: Any, positions: tuple[float, ...] | None, low: float) -> float:
    """The position an action asks for: a discrete action's position, a continuous one clipped to [low, 1]."""
    if positions is not None:
        i = int(action) if isinstance(action, int | np.integer) else int(np.asarray(action).item())
        if not 0 <= i < len(positions):
            raise ValueError(f"action {action!r} is not in 0..{len(positions) - 1}")
        return positions[i]
    value = np.asarray(action, dtype=np.float64)
    if value.size != 1 or not np.isfinite(value).all():
        raise ValueError(f"continuous action must be one finite number, got {action!r}")
    return min(max(float(value.reshape(-1)[0]), low), 1.0)
