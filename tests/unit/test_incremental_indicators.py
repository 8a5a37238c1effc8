"""The incremental indicator engine against the batch engine, bar by bar, on every packaged series: daily
CSI 300, S&P 500 and NASDAQ Composite (whole history), intraday AAPL 1m and 1h and E-mini S&P 500 futures 1m.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from finstream.config import Settings
from finstream.indicators import DEFAULT_SPEC, Indicator, compute_indicators, feature_names, warmup_bars
from finstream.indicators.incremental import (
    IncrementalIndicators,
    NonFiniteBar,
    StaleBar,
)
from finstream.sources.packaged import PackagedSource
from finstream.symbols import parse_symbol

RTOL, ATOL = 1e-9, 1e-12
OHLCV = ["open", "high", "low", "close", "volume"]
SERIES = {
    "hs300_1d": ("000300.SH", "1d"),
    "gspc_1d": ("^GSPC", "1d"),
    "ixic_1d": ("^IXIC", "1d"),
    "aapl_1m": ("AAPL", "1m"),
    "aapl_1h": ("AAPL", "1h"),
    "es_1m": ("ES=F", "1m"),
}
#: outputs that a bounded window of bars determines (up to rounding): no EMA recursion, no running total
#: from the first bar, and not Bollinger, whose Welford variance carries rounding from the first bar on
WINDOWED = [
    name
    for ind in DEFAULT_SPEC
    if ind.kind not in {"ema", "macd", "rsi", "kdj", "atr", "obv", "bollinger"}
    for name in ind.outputs
]
_CACHE: dict[str, tuple[pd.DataFrame, np.ndarray]] = {}


def _series(name: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The packaged bars of one series (sorted by ts) and the batch engine's outputs for them."""
    if name not in _CACHE:
        symbol, interval = SERIES[name]
        bars = PackagedSource(Settings()).fetch(parse_symbol(symbol), None, None, interval)
        bars = bars[["symbol", "ts", *OHLCV]].sort_values("ts").reset_index(drop=True)
        _CACHE[name] = bars, compute_indicators(bars)[feature_names()].to_numpy()
    return _CACHE[name]


def _assert_parity(got: np.ndarray, want: np.ndarray, names: list[str], where: str) -> None:
    """NaN exactly where the batch engine has NaN; elsewhere equal within RTOL (ATOL near zero)."""
    assert got.shape == want.shape, where
    for j, name in enumerate(names):
        nan_got, nan_want = np.isnan(got[:, j]), np.isnan(want[:, j])
        bad = np.flatnonzero(nan_got != nan_want)
        assert bad.size == 0, f"{where} {name}: NaN differs at rows {bad[:5]}: {got[bad[:5], j]} vs batch"
        np.testing.assert_allclose(
            got[~nan_got, j], want[~nan_want, j], rtol=RTOL, atol=ATOL, err_msg=f"{where} {name}"
        )


@pytest.mark.parametrize("series", SERIES)
def test_every_bar_matches_batch(series: str) -> None:
    bars, want = _series(series)
    engine = IncrementalIndicators(key=series)
    got = engine.replay(bars)
    _assert_parity(got, want, feature_names(), series)
    assert engine.bars == len(bars)
    assert engine.last_ts == bars["ts"].iloc[-1]
    assert not np.isnan(got[warmup_bars() :]).any(), "every output is defined after the warm-up"


@pytest.mark.parametrize("series", SERIES)
def test_snapshot_restore_continues_exactly(series: str) -> None:
    """Split inside the warm-up and mid-series: snapshot through JSON, restore, go on to the end."""
    bars, want = _series(series)
    for split in (30, len(bars) * 2 // 5):
        engine = IncrementalIndicators(key=series)
        engine.replay(bars.iloc[:split])
        text = json.dumps(engine.snapshot())
        assert len(text) < 8_000, f"snapshot of {len(text)} bytes"
        restored = IncrementalIndicators.restore(json.loads(text))
        assert (restored.bars, restored.last_ts, restored.key) == (split, bars["ts"].iloc[split - 1], series)
        got = restored.replay(bars.iloc[split:])
        _assert_parity(got, want[split:], feature_names(), f"{series} split={split}")


def test_restore_then_catch_up_from_the_store() -> None:
    """A restart: restore the last snapshot, then replay the stored series, skipping what it has seen."""
    bars, want = _series("es_1m")
    split = 1000
    state = IncrementalIndicators.from_history(bars.iloc[:split]).snapshot()
    engine = IncrementalIndicators.restore(state)
    got = engine.replay(bars, skip_processed=True)
    _assert_parity(got, want[split:], feature_names(), "catch-up")


def test_from_history_of_the_whole_series_gives_parity() -> None:
    bars, want = _series("aapl_1h")
    split = 2000
    engine = IncrementalIndicators.from_history(bars.iloc[:split])
    rows = [engine.update(*bar) for bar in bars.iloc[split:][["ts", *OHLCV]].itertuples(index=False)]
    _assert_parity(np.array(rows), want[split:], feature_names(), "from_history")


def test_a_tail_of_history_warms_up_the_windowed_outputs_only() -> None:
    """`warmup_bars + 1` bars define every output, but only windowed ones equal the batch values: EMA-type
    indicators depend on every bar since the first, OBV counts from it, and Bollinger %B amplifies the
    rounding pandas' rolling variance carries from it (hence snapshots, or a replay of the whole series)."""
    bars, want = _series("gspc_1d")
    split = 3000
    tail = bars.iloc[split - warmup_bars() - 1 : split]
    engine = IncrementalIndicators.from_history(tail)
    got = engine.replay(bars.iloc[split:])
    columns = [feature_names().index(n) for n in WINDOWED]
    _assert_parity(got[:, columns], want[split:, columns], WINDOWED, "tail warm-up")
    obv = feature_names().index("obv")
    assert not np.allclose(got[:, obv], want[split:, obv]), "OBV's level depends on the first bar"
    pctb = feature_names().index("bb_pctb_20")
    assert not np.allclose(got[:, pctb], want[split:, pctb], rtol=RTOL, atol=ATOL), "Bollinger %B"


def _edge_bars() -> pd.DataFrame:
    """CSI 300 bars with a suspended stretch (flat prices), zero volumes, a zero-range bar."""
    bars, _ = _series("hs300_1d")
    bars = bars.iloc[:160].copy()
    flat = bars.index[40:75]
    bars.loc[flat, ["open", "high", "low", "close"]] = bars.loc[flat[0], "close"]
    bars.loc[bars.index[60:90], "volume"] = 0.0
    bars.loc[bars.index[100], ["open", "high", "low"]] = bars.loc[bars.index[100], "close"]
    bars.loc[bars.index[120:126], "close"] = bars.loc[bars.index[119], "close"]
    return bars


def test_edge_cases_match_batch() -> None:
    """Windows of identical values (std exactly 0, %B NaN, KDJ neutral, Williams %R NaN), zero volumes."""
    bars = _edge_bars()
    want = compute_indicators(bars)[feature_names()].to_numpy()
    _assert_parity(IncrementalIndicators().replay(bars), want, feature_names(), "edge cases")
    bb_std = want[:, feature_names().index("bb_upper_20")] - want[:, feature_names().index("bb_mid_20")]
    assert (bb_std[60:75] == 0).all(), "the flat stretch gives a zero band in the batch engine too"


def test_zero_and_negative_values_match_batch() -> None:
    """Prices through zero into negative (as WTI futures in April 2020) and negative volumes: finite, so
    processed, with the batch engine's inf / NaN where it divides by zero or takes the log of a negative."""
    bars, _ = _series("gspc_1d")
    bars = bars.iloc[:300].copy()
    bars.loc[bars.index[100:130], ["open", "high", "low", "close"]] -= 1450.0
    bars.loc[bars.index[130], ["open", "high", "low", "close"]] = 0.0
    bars.loc[bars.index[131:135], "close"] = -0.0
    bars.loc[bars.index[140:150], "volume"] = -5.0
    with np.errstate(all="ignore"):
        want = compute_indicators(bars)[feature_names()].to_numpy()
    got = IncrementalIndicators().replay(bars)
    assert np.isinf(want).any() and np.isinf(got).any()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)  # NaN and inf where batch has them


CUSTOM_SPEC = (
    Indicator("sma", {"window": 1}, ("sma_1",)),
    Indicator("sma", {"window": 3}, ("sma_3",)),
    Indicator("ema", {"window": 1}, ("ema_1",)),
    Indicator("ema", {"window": 3}, ("ema_3",)),
    Indicator("wma", {"window": 2}, ("wma_2",)),
    Indicator("rsi", {"window": 2}, ("rsi_2",)),
    Indicator("macd", {"fast": 3, "slow": 3, "signal": 1}, ("m", "ms", "mh")),
    Indicator("kdj", {"window": 3, "k_smooth": 1, "d_smooth": 2}, ("k", "d", "j")),
    Indicator("kdj", {"window": 3, "k_smooth": 1, "d_smooth": 2}, ("k2", "d2", "j2")),
    Indicator("willr", {"window": 3}, ("willr_3",)),
    Indicator("bollinger", {"window": 3, "k": 1.5}, ("bm", "bu", "bl", "bp", "bw")),
    Indicator("atr", {"window": 1}, ("atr_1",)),
    Indicator("ret_std", {"window": 2}, ("ret_std_2",)),
    Indicator("vwap", {"window": 1}, ("vwap_1",)),
    Indicator("volume_ratio", {"window": 1}, ("vr_1",)),
    Indicator("momentum", {"window": 1}, ("mom_1",)),
    Indicator("roc", {"window": 3}, ("roc_3",)),
    Indicator("log_return", {"horizon": 2}, ("lr_2",)),
)


def test_custom_spec_with_tiny_windows_matches_batch() -> None:
    """Windows of 1 (pandas restarts its sums there), shared and duplicated kernels, odd parameters."""
    bars = _edge_bars()
    want = compute_indicators(bars, CUSTOM_SPEC)[feature_names(CUSTOM_SPEC)].to_numpy()
    engine = IncrementalIndicators(CUSTOM_SPEC)
    head = engine.replay(bars.iloc[:77])
    tail = IncrementalIndicators.restore(engine.snapshot(), CUSTOM_SPEC).replay(bars.iloc[77:])
    _assert_parity(np.vstack([head, tail]), want, feature_names(CUSTOM_SPEC), "custom spec")


def _bar(day: int, close: float = 10.0) -> tuple[pd.Timestamp, float, float, float, float, float]:
    return pd.Timestamp(2024, 1, day, 16, tz="UTC"), close, close + 1, close - 1, close, 1000.0


def test_stale_bars_are_rejected_and_leave_the_state_alone() -> None:
    engine, clean = IncrementalIndicators(key="X"), IncrementalIndicators()
    for day in range(1, 6):
        engine.update(*_bar(day, 10.0 + day))
        clean.update(*_bar(day, 10.0 + day))
    for day in (5, 3):
        with pytest.raises(StaleBar, match=r"X: bar at 2024-01-0\d.*is not after the last bar"):
            engine.update(*_bar(day, 99.0))
    assert engine.bars == 5
    np.testing.assert_array_equal(engine.update(*_bar(6)), clean.update(*_bar(6)))
    assert issubclass(StaleBar, ValueError)


@pytest.mark.parametrize("column", OHLCV)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected(column: str, value: float) -> None:
    engine = IncrementalIndicators()
    engine.update(*_bar(1))
    ts, *prices = _bar(2)
    prices[OHLCV.index(column)] = value
    with pytest.raises(NonFiniteBar, match=f"non-finite {{'{column}'"):
        engine.update(ts, *prices)
    assert engine.bars == 1 and engine.last_ts == _bar(1)[0]
    engine.update(*_bar(2))  # the same ts with good values is still accepted


def test_ts_forms() -> None:
    """Timestamps, aware datetimes, numpy datetime64 (UTC), int nanoseconds; naive datetimes are refused."""
    ts = pd.Timestamp("2024-01-02 21:00:00.000000123", tz="UTC")
    forms = {ts: ts, ts.to_datetime64(): ts, ts.value: ts}
    forms[ts.to_pydatetime(warn=False)] = ts.floor("us")
    for form, expected in forms.items():
        engine = IncrementalIndicators()
        assert engine.update(form, 1.0, 2.0, 0.5, 1.5, 10.0)[feature_names().index("obv")] == 0.0
        assert engine.last_ts == expected
    with pytest.raises(ValueError, match="naive"):
        IncrementalIndicators().update(datetime(2024, 1, 2), 1.0, 2.0, 0.5, 1.5, 10.0)
    for bad in ("2024-01-02", pd.NaT, np.datetime64("NaT"), 1.7e18):
        with pytest.raises(ValueError, match=r"timezone-aware datetime or int nanoseconds|is NaT"):
            IncrementalIndicators().update(bad, 1.0, 2.0, 0.5, 1.5, 10.0)
    engine = IncrementalIndicators()
    engine.update(datetime(2024, 1, 2, tzinfo=UTC), 1.0, 2.0, 0.5, 1.5, 10.0)
    with pytest.raises(StaleBar):
        engine.update(pd.Timestamp("2024-01-02", tz="UTC").value, 1.0, 2.0, 0.5, 1.5, 10.0)


def test_restore_refuses_foreign_or_damaged_snapshots() -> None:
    engine = IncrementalIndicators()
    engine.update(*_bar(1))
    state = engine.snapshot()
    with pytest.raises(ValueError, match="another indicator spec"):
        IncrementalIndicators.restore(state, DEFAULT_SPEC[:-1])
    with pytest.raises(ValueError, match="format"):
        IncrementalIndicators.restore({**state, "format": "x"})
    packed = base64.b64decode(state["state"])
    for damaged in (packed[:800], packed[:803], packed + packed[:8]):
        with pytest.raises(ValueError, match="state is damaged"):
            IncrementalIndicators.restore({**state, "state": base64.b64encode(damaged).decode()})


def test_clear_errors_for_bad_specs_and_frames() -> None:
    with pytest.raises(ValueError, match="no incremental form"):
        IncrementalIndicators((Indicator("supertrend", {}, ("st",)),))
    with pytest.raises(ValueError, match="yields 3 outputs"):
        IncrementalIndicators((Indicator("macd", {}, ("macd",)),))
    with pytest.raises(ValueError, match="window must be a whole number"):
        IncrementalIndicators((Indicator("sma", {"window": 0}, ("x",)),))
    bars, _ = _series("hs300_1d")
    two = pd.concat([bars.iloc[:5], bars.iloc[:5].assign(symbol="^GSPC")])
    with pytest.raises(ValueError, match="several symbols"):
        IncrementalIndicators().replay(two)
    with pytest.raises(ValueError, match=r"lack column\(s\) \['volume'\]"):
        IncrementalIndicators().replay(bars.drop(columns="volume"))
