"""Single-symbol trading environment for Ray RLlib, booked with exactly the supervised backtest's cost model.

Timing (as in `training.backtest`): at the close of bar t the agent sees features up to bar t, picks the
position p[t] held over t → t+1, pays the cost of moving from p[t−1] to p[t] and earns `returns[t]`, the log
return from close t to close t+1 (`Dataset.y_return`, horizon 1). Episodes start flat (p = 0, equity 1).

Observation, float32, shape (window·F + 2,):
  [0 : window·F]   the feature rows t−window+1 … t, oldest first, row-major (entries k·F … k·F+F−1 hold
                   row t−window+1+k, in the config's feature order); NaN → 0, ±inf and values beyond
                   ±clip → ±clip; rows before the first one are zeros.
  [window·F]       the current position p[t−1] (the one held coming into bar t, before this step's trade).
  [window·F + 1]   episode equity − 1 at close t, before this step's trade, clipped to [−1, clip].
After the last step the observation repeats the last decision row's window with the final position/equity.

Reward of the step at bar t (c the cost, R = exp(returns[t]) − 1 the simple return):
  net[t]    = (1 − c)·(1 + p[t]·R) − 1                         (the backtest's net period return)
  reward[t] = log(1 + net[t]) − λ·max(dd[t] − dd[t−1], 0)
  c         = (commission + slippage)·|p[t] − p[t−1]| + stamp_duty·max(max(p[t−1], 0) − max(p[t], 0), 0)
with the stamp term only where stamp duty applies. So with λ = 0 the rewards of an episode sum to its log
equity, equity = Π(1 + net) is the backtest's equity for the same positions, and for p ∈ {0, 1} the reward is
p·returns[t] + log(1 − c) ≈ p·returns[t] − c.

Risk penalty: dd[t] = log(peak equity so far in the episode, start 1 included) − log(equity[t]), the drawdown
in log units; λ (`risk_penalty`) times its increase is subtracted. The increase equals the step's log loss
whenever equity falls, and is 0 when it rises, so λ is a downside (loss-aversion) weight in reward units:
λ = 0.5 counts each log-loss 1.5 times. Chosen over the squared step return, which is ~100× smaller than the
reward at daily scale and penalises gains as much as losses.

T+1 (`t_plus_1`, default True for China symbols): shares bought at close t may first be sold on the next
trading day. The agent decides once per daily bar, so a position bought at close t can at the earliest be
reduced at close t+1, the next trading day: daily close-to-close rebalancing always satisfies T+1, and the env
enforces nothing extra. The flag is kept in the config for the record; `env_config_from_dataset` refuses a
China symbol with more than one bar per day, where T+1 would bind.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from finstream.config import CostParams, RLParams
from finstream.errors import SymbolError
from finstream.models.observation import (
    DEFAULT_CLIP,
    DISCRETE_POSITIONS,
    clean_features,
    observation,
    standardise,
    target_position,
)
from finstream.symbols import parse_symbol
from training.backtest import stamp_duty_applies, trade_cost
from training.dataset import Dataset
from training.walk_forward import oos_period_start

log = logging.getLogger(__name__)

Policy = Callable[[np.ndarray], Any]
#: config keys the env reads (others, e.g. feature statistics from `env_config_from_dataset`, are kept)
ENV_KEYS = frozenset(
    {
        "features", "returns", "symbol", "action_mode", "allow_short", "window", "episode_length",
        "start_range", "sequential", "costs", "stamp_duty", "t_plus_1", "risk_penalty", "seed", "clip",
    }
)  # fmt: skip
DATASET_KEYS = frozenset({"times", "rows", "period", "feature_names", "feature_mean", "feature_std"})
#: reward of a step that wipes out the equity (only a short over a > 100 % one-day rise can); ends the episode
RUIN_REWARD = math.log(1e-6)


def _china(symbol: str) -> bool:
    """True for China A-share market symbols (.SH/.SZ/.BJ)."""
    try:
        return parse_symbol(symbol).market == "CN"
    except SymbolError:
        return False


def _features(raw: Any, clip: float) -> np.ndarray:
    """Features as float32 [T, F] (`clean_features`); warns when they look unscaled."""
    x = np.asarray(raw, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"features must be a non-empty [T, F] array, got shape {x.shape}")
    beyond = float(np.mean(np.abs(np.nan_to_num(x)) > clip))
    if beyond > 0.01:
        log.warning(
            "%.1f%% of feature values are beyond ±%g and get clipped: standardise them first "
            "(env_config_from_dataset does)",
            100 * beyond,
            clip,
        )
    return clean_features(x, clip)


class TradingEnv(gym.Env):
    """One symbol, one position, daily decisions at the close; RLlib constructs it as TradingEnv(env_config).

    See the module docstring for the observation layout, reward and cost model. `reset(options={"start": s})`
    starts an episode at row s (within start_range, the whole episode fitting before its end).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's class attribute

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        cfg = dict(config or {})
        if "features" not in cfg or "returns" not in cfg or "symbol" not in cfg:
            raise ValueError("TradingEnv needs config keys 'features', 'returns' and 'symbol'")
        unknown = set(cfg) - ENV_KEYS - DATASET_KEYS
        if unknown:
            log.warning("TradingEnv ignores unknown config keys %s", sorted(unknown))
        self.symbol = str(cfg["symbol"])
        self.clip = float(cfg.get("clip", DEFAULT_CLIP))
        feats = _features(cfg["features"], self.clip)
        simple = np.expm1(np.asarray(cfg["returns"], dtype=np.float64).ravel())
        n_rows, n_feat = feats.shape
        if simple.size != n_rows:
            raise ValueError(f"features have {n_rows} rows but returns {simple.size}")
        self.window = int(cfg.get("window", 10))
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        self._padded = np.concatenate([np.zeros((self.window - 1, n_feat), np.float32), feats])
        lo, hi = (int(v) for v in cfg.get("start_range", (0, n_rows)))
        if not 0 <= lo < hi <= n_rows:
            raise ValueError(f"start_range {(lo, hi)} must satisfy 0 <= lo < hi <= {n_rows} (rows)")
        if not np.all(np.isfinite(simple[lo:hi])):
            raise ValueError(
                "returns must be finite inside start_range (drop rows without a realised return)"
            )
        self.start_range = (lo, hi)
        self._simple: list[float] = simple.tolist()  # python floats: the per-step arithmetic is scalar
        self.sequential = bool(cfg.get("sequential", False))
        self.episode_length = hi - lo if self.sequential else int(cfg.get("episode_length", 252))
        if not 1 <= self.episode_length <= hi - lo:
            raise ValueError(
                f"episode_length {self.episode_length} must be between 1 and the start_range span {hi - lo}"
            )
        self.action_mode: str = cfg.get("action_mode", "long_flat")
        self.allow_short = bool(cfg.get("allow_short", False)) or self.action_mode == "long_short"
        self.action_space, self._positions, self._low = self._action_space()
        costs = CostParams(**dict(cfg.get("costs") or {}))
        stamp = cfg.get("stamp_duty")
        self.stamp_duty = stamp_duty_applies(self.symbol) if stamp is None else bool(stamp)
        self.t_plus_1 = _china(self.symbol) if cfg.get("t_plus_1") is None else bool(cfg["t_plus_1"])
        self.costs = costs
        self.risk_penalty = float(cfg.get("risk_penalty", 0.0))
        if not self.risk_penalty >= 0.0:
            raise ValueError(f"risk_penalty must be >= 0, got {self.risk_penalty}")
        self._seed = cfg.get("seed")
        low = np.concatenate([np.full(self.window * n_feat, -self.clip), [self._low, -1.0]])
        high = np.concatenate([np.full(self.window * n_feat, self.clip), [1.0, self.clip]])
        self.observation_space = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self._t = self._end = lo
        self._position, self._equity, self._log_equity, self._log_peak = 0.0, 1.0, 0.0, 0.0

    def _action_space(self) -> tuple[spaces.Space[Any], tuple[float, ...] | None, float]:
        """The action space, the discrete actions' positions (None if continuous) and the lowest position."""
        if self.action_mode in DISCRETE_POSITIONS:
            positions = DISCRETE_POSITIONS[self.action_mode]
            return spaces.Discrete(len(positions)), positions, positions[0]
        if self.action_mode == "continuous":
            low = -1.0 if self.allow_short else 0.0
            return spaces.Box(np.float32(low), np.float32(1.0), shape=(1,), dtype=np.float32), None, low
        raise ValueError(
            f"action_mode must be 'long_flat', 'long_short' or 'continuous', got {self.action_mode!r}"
        )

    def position_of(self, action: Any) -> float:
        """The target position an action asks for (continuous actions are clipped into the action space)."""
        return target_position(action, self._positions, self._low)

    def trade_cost(self, prev: float, pos: float) -> float:
        """Cost of moving from `prev` to `pos` as a fraction of equity (the backtest's own formula)."""
        return float(trade_cost(prev, pos, self.costs, self.stamp_duty))

    def _observe(self) -> np.ndarray:
        row = min(self._t, self._end - 1)
        return observation(
            self._padded[row : row + self.window], self._position, self._equity - 1.0, self.clip
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start flat with equity 1 at a start row: options["start"], else lo (sequential) or uniform."""
        if seed is None and self._np_random is None and self._seed is not None:
            seed = int(self._seed)
        super().reset(seed=seed)
        lo, hi = self.start_range
        last_start = hi - self.episode_length
        start = (options or {}).get("start")
        if start is None:
            start = lo if self.sequential else int(self.np_random.integers(lo, last_start + 1))
        elif not lo <= int(start) <= last_start:
            raise ValueError(f"start {start} must be in [{lo}, {last_start}] so the episode ends by row {hi}")
        self._t = int(start)
        self._end = hi if self.sequential else self._t + self.episode_length
        self._position, self._equity, self._log_equity, self._log_peak = 0.0, 1.0, 0.0, 0.0
        return self._observe(), {"t": self._t, "position": 0.0, "equity": 1.0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Hold the position `action` asks for over bar t → t+1; see the module docstring for the reward."""
        t = self._t
        if t >= self._end:
            raise RuntimeError("the episode is over: call reset() first")
        pos = self.position_of(action)
        cost = self.trade_cost(self._position, pos)
        net = (1.0 - cost) * (1.0 + pos * self._simple[t]) - 1.0
        ruined = net <= -1.0
        drawdown = self._log_peak - self._log_equity
        if ruined:
            self._equity, reward = 0.0, RUIN_REWARD
        else:
            self._equity *= 1.0 + net
            step_log = math.log1p(net)
            self._log_equity += step_log
            self._log_peak = max(self._log_peak, self._log_equity)
            increase = self._log_peak - self._log_equity - drawdown
            reward = step_log - self.risk_penalty * max(increase, 0.0)
        self._position = pos
        self._t = t + 1
        terminated = bool(ruined or self._t >= self._end)
        info = {
            "t": t,
            "position": pos,
            "equity": self._equity,
            "cost": cost,
            "step_return": net,
            "drawdown": -math.expm1(self._log_equity - self._log_peak) if not ruined else 1.0,
        }
        return self._observe(), float(reward), terminated, False, info


def constant_policy(env_config: Mapping[str, Any], position: float) -> Policy:
    """A policy that always asks for `position` (e.g. 1.0: buy-and-hold), in the config's action mode."""
    mode = env_config.get("action_mode", "long_flat")
    if mode in DISCRETE_POSITIONS:
        if float(position) not in DISCRETE_POSITIONS[mode]:
            raise ValueError(f"position {position} is none of {mode}'s {DISCRETE_POSITIONS[mode]}")
        action: Any = DISCRETE_POSITIONS[mode].index(float(position))
    else:
        action = np.array([position], dtype=np.float32)
    return lambda obs: action


def rollout(env_config: Mapping[str, Any], policy: Policy) -> pd.DataFrame:
    """One deterministic sequential pass over start_range: per decision row its position, reward, equity.

    Indexed by the decision rows' `times` when the config has them (else the row number `t`); columns t,
    position, reward, equity (after the bar), cost, step_return (net simple return).
    """
    env = TradingEnv({**env_config, "sequential": True})
    obs, _ = env.reset(seed=env_config.get("seed"))
    records: list[tuple[int, float, float, float, float, float]] = []
    done = False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        records.append(
            (info["t"], info["position"], reward, info["equity"], info["cost"], info["step_return"])
        )
        done = terminated or truncated
    frame = pd.DataFrame(records, columns=["t", "position", "reward", "equity", "cost", "step_return"])
    times = env_config.get("times")
    if times is not None:
        frame.index = pd.DatetimeIndex(
            pd.to_datetime(np.asarray(times)[frame["t"].to_numpy()], utc=True), name="time"
        )
    return frame


def _symbol_rows(dataset: Dataset, symbol: str, t_plus_1: bool) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Positional rows of `symbol` (time order) and their UTC event times; checks horizon and bar spacing."""
    if dataset.horizon != 1:
        raise ValueError(
            f"the env compounds one-bar returns: build the dataset with horizon 1, not {dataset.horizon}"
        )
    rows = np.flatnonzero(dataset.X["symbol"].to_numpy() == symbol)
    if rows.size == 0:
        have = sorted(dataset.X["symbol"].unique())
        raise ValueError(f"no rows for {symbol} in the dataset (symbols: {have})")
    times = pd.DatetimeIndex(pd.to_datetime(dataset.event_time.iloc[rows], utc=True))
    if not times.is_monotonic_increasing:
        raise ValueError(f"{symbol}'s rows are not in time order: sort the Dataset by symbol and time")
    if t_plus_1 and times.normalize().has_duplicates:
        raise ValueError(f"{symbol} has several bars a day: T+1 would bind and the env does not enforce it")
    labels = pd.DatetimeIndex(pd.to_datetime(dataset.label_time.iloc[rows], utc=True))
    gaps = int(np.count_nonzero(labels[:-1] != times[1:]))
    if gaps:
        log.warning("%s: %d rows' next bar is not in the dataset; their returns span a gap", symbol, gaps)
    return rows, times


def env_config_from_dataset(
    dataset: Dataset,
    symbol: str,
    period: Literal["train", "test"],
    params: RLParams,
    costs: CostParams,
    test_years: float | None = None,
) -> dict[str, Any]:
    """TradingEnv config for one symbol's training period or its held-out last `test_years`.

    Train rows end one row before the test period (purge: the last one's return is realised at the first test
    close). Features are standardised with the training rows' mean and std in both periods (kept in the config
    as feature_mean/feature_std, to log with the agent). Train: random starts, episodes inside the training
    rows from the first row with a full window. Test: `sequential`, from the first test row to the last, the
    window reaching back into earlier (feature-only) rows.
    """
    if period not in ("train", "test"):
        raise ValueError(f"period must be 'train' or 'test', got {period!r}")
    years = params.test_years if test_years is None else test_years
    t_plus_1 = _china(symbol)
    rows, times = _symbol_rows(dataset, symbol, t_plus_1)
    test_lo = int(np.searchsorted(times, oos_period_start(pd.Series(times), years)))
    train_end = test_lo - 1
    window = params.window
    if test_lo >= rows.size or train_end < window:
        raise ValueError(
            f"{symbol}: {train_end} training and {rows.size - test_lo} test rows with test_years={years}: "
            f"need a test period and more than window={window} training rows"
        )
    names = dataset.feature_names
    x = dataset.X[names].iloc[rows].to_numpy(dtype=np.float64)
    mean = np.nanmean(x[:train_end], axis=0)
    std = np.nanstd(x[:train_end], axis=0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    if period == "train":
        first, last = 0, train_end
        lo, hi = window - 1, train_end
        length = params.episode_length
        if length > hi - lo:
            log.warning(
                "%s: episode_length %d exceeds the %d training rows; using %d",
                symbol,
                length,
                hi - lo,
                hi - lo,
            )
            length = hi - lo
    else:
        first, last = max(test_lo - (window - 1), 0), rows.size
        lo, hi = test_lo - first, rows.size - first
        length = hi - lo
    part = slice(first, last)
    log.info("%s %s env: rows %d..%d, decisions from %d", symbol, period, first, last - 1, first + lo)
    return {
        "features": standardise(x[part], mean, std),
        "returns": dataset.y_return.iloc[rows[part]].to_numpy(dtype=np.float64),
        "symbol": symbol,
        "action_mode": params.action_mode,
        "allow_short": False,
        "window": window,
        "episode_length": int(length),
        "start_range": (int(lo), int(hi)),
        "sequential": period == "test",
        "costs": costs.model_dump(),
        "stamp_duty": stamp_duty_applies(symbol),
        "t_plus_1": t_plus_1,
        "risk_penalty": float(params.risk_penalty),
        "seed": int(params.seed),
        "period": period,
        "times": times[part].tz_localize(None).to_numpy(dtype="datetime64[ns]"),
        "rows": rows[part].astype(np.int64),
        "feature_names": list(names),
        "feature_mean": mean.tolist(),
        "feature_std": std.tolist(),
    }
