"""finstream.risk.measures against oracles, on the real packaged history (S&P 500, NASDAQ, CSI 300).

Oracles: pandas' quantile and rolling quantile / std (independent implementations), empyrical's
definitions of `value_at_risk` / `conditional_value_at_risk` / `max_drawdown` written out with numpy
(empyrical-reloaded pins peewee<3.17.4 against this stack's 4.x, so it cannot be installed), scipy.stats
(norm / t ppf, numerical `expect` for the expected shortfall, t.logpdf for the likelihood), the standard
library's statistics module and plain loops. The incremental `RollingRisk` must equal the batch `risk_frame`
bar for bar.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from finstream.config import Settings
from finstream.risk.measures import (
    PortfolioWeightsError,
    ewma_covariance,
    ewma_variance,
    exposure,
    fit_t_df,
    frame_columns,
    historical_var_es,
    model_var_es,
    normal_var_es,
    portfolio_frame,
    portfolio_returns,
    portfolio_var_es,
    realised_volatility,
    risk_frame,
    rolling_covariance,
    rolling_drawdown,
    rolling_historical,
    simple_returns,
    student_t_var_es,
    tail_count,
    validate_weights,
    volatility_spike,
)
from finstream.risk.params import RiskParams
from finstream.risk.rolling import RollingPortfolioRisk, RollingRisk
from finstream.sources.packaged import PackagedSource
from finstream.symbols import parse_symbol

LEVELS = (0.95, 0.99)


def _closes(bars: pd.DataFrame, symbol: str) -> pd.Series:
    """Closes indexed by exchange-local trading date."""
    dates = pd.DatetimeIndex(bars["ts"]).tz_convert(parse_symbol(symbol).tz).normalize().tz_localize(None)
    return pd.Series(bars["close"].to_numpy(dtype=float), index=dates, name=symbol)


@pytest.fixture(scope="module")
def closes(sp500: pd.DataFrame, csi300: pd.DataFrame) -> dict[str, pd.Series]:
    nasdaq = PackagedSource(Settings()).fetch(parse_symbol("^IXIC"), None, None)
    return {
        "^GSPC": _closes(sp500, "^GSPC"),
        "^IXIC": _closes(nasdaq, "^IXIC"),
        "000300.SH": _closes(csi300, "000300.SH"),
    }


@pytest.fixture(scope="module")
def returns(closes: dict[str, pd.Series]) -> dict[str, np.ndarray]:
    return {s: simple_returns(c.to_numpy()) for s, c in closes.items()}


# --- historical ------------------------------------------------------------------------------------


def test_historical_on_a_hand_made_series() -> None:
    # sorted: -0.05, -0.02, -0.01, 0.01, 0.03 (n = 5)
    r = [-0.05, -0.02, 0.01, 0.03, -0.01]
    var, es = historical_var_es(r, (0.75, 0.9))
    # 75 %: index (n-1)(1-a) = 1 -> q = -0.02; tail k = floor(1) + 1 = 2 -> ES = (0.05 + 0.02) / 2
    # 90 %: index 0.4 -> q = -0.05 + 0.4 (-0.02 + 0.05) = -0.038; tail k = 1 -> ES = 0.05
    np.testing.assert_allclose(var, [0.02, 0.038], rtol=1e-12)
    np.testing.assert_allclose(es, [0.035, 0.05], rtol=1e-12)


@pytest.mark.parametrize("symbol", ["^GSPC", "^IXIC", "000300.SH"])
def test_historical_matches_pandas_and_empyricals_definitions(returns: dict, symbol: str) -> None:
    r = returns[symbol]
    for window in (r[-250:], r[-1000:], r[2000:2501]):
        var, es = historical_var_es(window, LEVELS)
        for i, level in enumerate(LEVELS):
            cutoff = 1 - level
            assert var[i] == pytest.approx(-pd.Series(window).quantile(cutoff), rel=1e-12)
            # empyrical.value_at_risk: np.percentile(returns, 100 * cutoff)
            assert var[i] == pytest.approx(-np.percentile(window, 100 * cutoff), rel=1e-12)
            # empyrical.conditional_value_at_risk: mean of the int((n-1) * cutoff) + 1 smallest
            cutoff_index = int((len(window) - 1) * cutoff)
            assert tail_count(len(window), level) == cutoff_index + 1
            assert es[i] == pytest.approx(-np.sort(window)[: cutoff_index + 1].mean(), rel=1e-12)
            assert es[i] >= var[i] > 0


def test_rolling_historical_matches_pandas_rolling_quantile(returns: dict) -> None:
    r = returns["^GSPC"]
    var, es = rolling_historical(r, 250, LEVELS)
    for i, level in enumerate(LEVELS):
        oracle = -pd.Series(r).rolling(250).quantile(1 - level, interpolation="linear").to_numpy()
        np.testing.assert_allclose(var[:, i], oracle, rtol=1e-10, equal_nan=True)
    assert np.isnan(var[:249]).all() and np.isfinite(var[249:]).all()
    # one window directly: the estimate at t uses r[t-249 .. t]
    t = 2450
    k = tail_count(250, 0.99)
    assert es[t, 1] == pytest.approx(-np.sort(r[t - 249 : t + 1])[:k].mean(), rel=1e-12)


# --- parametric --------------------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["^GSPC", "^IXIC", "000300.SH"])
def test_normal_matches_scipy(returns: dict, symbol: str) -> None:
    window = returns[symbol][-250:]
    mu, sd = window.mean(), window.std(ddof=1)
    var, es = normal_var_es(mu, sd, LEVELS)
    for i, level in enumerate(LEVELS):
        q = stats.norm.ppf(1 - level, loc=mu, scale=sd)
        tail_mean = stats.norm.expect(lambda x: x, loc=mu, scale=sd, ub=q, conditional=True)
        assert var[i] == pytest.approx(-q, rel=1e-12)
        assert es[i] == pytest.approx(-tail_mean, rel=1e-7)


def test_student_t_df_is_the_likelihood_maximum(returns: dict) -> None:
    """The fitted df maximises scipy's t log-likelihood with the variance held at the sample variance."""
    for symbol in ("^GSPC", "000300.SH"):
        window = returns[symbol][-250:]
        mu, sd = window.mean(), window.std(ddof=1)

        def loglik(nu: float, w: np.ndarray = window, m: float = mu, s: float = sd) -> float:
            return float(stats.t.logpdf(w, nu, loc=m, scale=s * math.sqrt((nu - 2) / nu)).sum())

        df = fit_t_df(window)
        grid = np.linspace(2.2, 20.0, 600)
        best = grid[int(np.argmax([loglik(g) for g in grid]))]
        assert abs(df - best) < 2 * (grid[1] - grid[0])
        assert loglik(df) >= max(loglik(df - 0.01), loglik(df + 0.01))
        assert 2.1 < df < 10  # daily index returns are fat-tailed


@pytest.mark.parametrize("symbol", ["^GSPC", "^IXIC", "000300.SH"])
def test_student_t_matches_scipy_with_matched_variance(returns: dict, symbol: str) -> None:
    window = returns[symbol][-250:]
    mu, sd = window.mean(), window.std(ddof=1)
    df = fit_t_df(window)
    scale = sd * math.sqrt((df - 2) / df)
    assert stats.t.var(df, scale=scale) == pytest.approx(sd**2, rel=1e-12)  # the variance matches
    var, es = student_t_var_es(mu, sd, df, LEVELS)
    for i, level in enumerate(LEVELS):
        q = stats.t.ppf(1 - level, df, loc=mu, scale=scale)
        tail_mean = stats.t.expect(lambda x: x, args=(df,), loc=mu, scale=scale, ub=q, conditional=True)
        assert var[i] == pytest.approx(-q, rel=1e-10)
        assert es[i] == pytest.approx(-tail_mean, rel=1e-6)
    # fat tails: at 99 % the t VaR lies beyond the normal one with the same variance
    assert var[1] > normal_var_es(mu, sd, LEVELS)[0][1]


def test_model_var_from_a_volatility_forecast(returns: dict) -> None:
    r = returns["000300.SH"]
    sigma = np.sqrt(ewma_variance(r, 0.94, 20))[-5:]
    var, es = model_var_es(sigma, LEVELS)
    np.testing.assert_allclose(var, -stats.norm.ppf(1 - np.array(LEVELS)) * sigma[:, None], rtol=1e-12)
    tvar, tes = model_var_es(sigma, LEVELS, "t", df=5.0)
    oracle = -stats.t.ppf(1 - np.array(LEVELS), 5.0) * math.sqrt(3 / 5) * sigma[:, None]
    np.testing.assert_allclose(tvar, oracle, rtol=1e-10)
    assert (es > var).all() and (tes > tvar).all()
    with pytest.raises(ValueError, match="needs df"):
        model_var_es(sigma, LEVELS, "t")


def test_ewma_variance_matches_pandas_ewm_and_a_loop(returns: dict) -> None:
    r = returns["^GSPC"]
    lam, seed = 0.94, 20
    ours = ewma_variance(r, lam, seed)
    start = np.mean(r[:seed] ** 2)
    seeded = pd.Series(np.concatenate([[start], r[seed:] ** 2]))
    oracle = seeded.ewm(alpha=1 - lam, adjust=False).mean().to_numpy()
    np.testing.assert_allclose(ours[seed - 1 :], oracle, rtol=1e-12)
    assert np.isnan(ours[: seed - 1]).all()
    v = start
    for t in range(seed, seed + 50):
        v = lam * v + (1 - lam) * r[t] ** 2
        assert ours[t] == pytest.approx(v, rel=1e-13)


def test_realised_volatility_matches_pandas(returns: dict) -> None:
    r = returns["^IXIC"]
    oracle = pd.Series(r).rolling(20).std(ddof=1).to_numpy()
    np.testing.assert_allclose(realised_volatility(r, 20), oracle, rtol=1e-9, equal_nan=True)


# --- drawdown and spikes ---------------------------------------------------------------------------


def test_rolling_drawdown_on_a_hand_made_series() -> None:
    prices = [100.0, 120.0, 90.0, 110.0, 80.0, 130.0]
    current, maximum = rolling_drawdown(prices, 3)
    # windows: [100] [100 120] [100 120 90] [120 90 110] [90 110 80] [110 80 130]
    np.testing.assert_allclose(current, [0, 0, 0.25, 1 - 110 / 120, 1 - 80 / 110, 0])
    np.testing.assert_allclose(maximum, [0, 0, 0.25, 0.25, 1 - 80 / 110, 1 - 80 / 110])


def _max_drawdown_loop(prices: np.ndarray) -> float:
    peak, worst = -math.inf, 0.0
    for price in prices:
        peak = max(peak, price)
        worst = max(worst, 1 - price / peak)
    return worst


def _empyrical_max_drawdown(rets: np.ndarray) -> float:
    """empyrical.max_drawdown: cumulative wealth from a start of 100, min of wealth / running max - 1."""
    wealth = 100 * np.cumprod(1 + np.concatenate([[0.0], rets]))
    return float(np.min(wealth / np.maximum.accumulate(wealth) - 1))


@pytest.mark.parametrize("symbol", ["^GSPC", "000300.SH"])
def test_rolling_drawdown_matches_loops_and_empyrical(closes: dict, symbol: str) -> None:
    p = closes[symbol].to_numpy()
    current, maximum = rolling_drawdown(p, 250)
    for t in range(0, len(p), 97):
        window = p[max(0, t - 249) : t + 1]
        assert current[t] == pytest.approx(1 - p[t] / window.max(), abs=1e-15)
        assert maximum[t] == pytest.approx(_max_drawdown_loop(window), abs=1e-15)
        assert maximum[t] == pytest.approx(-_empyrical_max_drawdown(simple_returns(window)), abs=1e-12)


def test_volatility_spike_matches_the_statistics_module(returns: dict) -> None:
    vol = realised_volatility(returns["000300.SH"], 20)
    z = volatility_spike(vol, 250, "zscore")
    ratio = volatility_spike(vol, 250, "ratio")
    assert np.isnan(z[: 19 + 250]).all() and np.isfinite(z[19 + 250 :]).all()
    for t in range(19 + 250, len(vol), 113):
        history = list(vol[t - 250 : t])
        expected = (vol[t] - statistics.fmean(history)) / statistics.stdev(history)
        assert z[t] == pytest.approx(expected, rel=1e-9)
        assert ratio[t] == pytest.approx(vol[t] / statistics.median(history), rel=1e-12)


# --- portfolio ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def asset_returns(closes: dict[str, pd.Series]) -> pd.DataFrame:
    """Daily simple returns of the three indexes on the dates all three traded (calendar-date join)."""
    prices = pd.concat(closes, axis=1, join="inner")
    return prices.pct_change().iloc[1:]


@pytest.mark.parametrize(
    ("weights", "allow_short", "problem"),
    [
        ({"^GSPC": 0.5, "^IXIC": 0.4}, False, r"sum to 0\.9, not 1"),
        ({"^GSPC": 0.5, "^DJI": 0.5}, False, r"unknown symbols \['\^DJI'\]"),
        (
            {"^GSPC": 1.2, "^IXIC": -0.2},
            False,
            r"negative weights \{'\^IXIC': -0\.2\}.*shorting is not allowed",
        ),
        ({"^GSPC": math.nan, "^IXIC": 0.5}, False, r"not finite"),
        ({}, False, r"empty"),
    ],
)
def test_weights_are_validated_with_a_message_naming_the_problem(
    weights: dict, allow_short: bool, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem) as caught:
        validate_weights(weights, ["^GSPC", "^IXIC", "000300.SH"], allow_short=allow_short)
    assert isinstance(caught.value, PortfolioWeightsError)


def test_weights_accept_shorts_when_allowed_and_rounding_within_tolerance() -> None:
    symbols = ["^GSPC", "^IXIC"]
    assert validate_weights({"^GSPC": 1.2, "^IXIC": -0.2}, symbols, allow_short=True) == {
        "^GSPC": 1.2,
        "^IXIC": -0.2,
    }
    assert validate_weights({"^GSPC": 1 / 3, "^IXIC": 2 / 3 + 1e-9}, symbols)
    with pytest.raises(ValueError, match="sum to"):
        validate_weights({"^GSPC": 0.5, "^IXIC": 0.5 + 1e-3}, symbols, tolerance=1e-4)


def test_portfolio_var_matches_covariance_and_scipy_oracles(asset_returns: pd.DataFrame) -> None:
    weights = {"^GSPC": 0.4, "^IXIC": 0.3, "000300.SH": 0.3}
    params = RiskParams()
    risk = portfolio_var_es(asset_returns, weights, params)
    w = np.array(list(weights.values()))
    window = asset_returns[list(weights)].to_numpy()[-250:]
    port = window @ w
    # rolling-window covariance: w' S w equals the variance of the weighted returns
    assert risk.sigma["sample"] == pytest.approx(np.std(port, ddof=1), rel=1e-12)
    assert risk.sigma["sample"] == pytest.approx(math.sqrt(w @ np.cov(window.T) @ w), rel=1e-12)
    for i, level in enumerate(params.levels):
        assert risk.var["historical"][i] == pytest.approx(-pd.Series(port).quantile(1 - level), rel=1e-12)
        q = stats.norm.ppf(1 - level, loc=port.mean(), scale=np.std(port, ddof=1))
        assert risk.var["normal"][i] == pytest.approx(-q, rel=1e-12)
        assert risk.var["ewma"][i] == pytest.approx(
            -stats.norm.ppf(1 - level) * math.sqrt(w @ risk.covariance["ewma"] @ w), rel=1e-12
        )
    # diversification: the portfolio's normal VaR is below the weighted sum of the assets' own
    single = [normal_var_es(c.mean(), c.std(ddof=1), LEVELS)[0][1] for c in window.T]
    assert risk.var["normal"][1] < float(np.dot(w, single))
    assert list(portfolio_returns(asset_returns, weights).iloc[-250:]) == pytest.approx(list(port))


def test_ewma_and_rolling_covariance_match_loops(asset_returns: pd.DataFrame) -> None:
    x = asset_returns.to_numpy()
    lam, seed = 0.94, 20
    ewma = ewma_covariance(x, lam, seed)
    s = np.mean([np.outer(row, row) for row in x[:seed]], axis=0)
    np.testing.assert_allclose(ewma[seed - 1], s, rtol=1e-13)
    for t in range(seed, len(x)):
        s = lam * s + (1 - lam) * np.outer(x[t], x[t])
    np.testing.assert_allclose(ewma[-1], s, rtol=1e-10)
    rolling = rolling_covariance(x, 60)
    for t in (59, 1000, len(x) - 1):
        np.testing.assert_allclose(rolling[t], np.cov(x[t - 59 : t + 1].T), rtol=1e-10)
    assert np.isnan(rolling[:59]).all()


def test_exposure() -> None:
    assert exposure({"A": 1.3, "B": -0.3}) == pytest.approx({"A": 1.3, "B": 0.3, "gross": 1.6, "net": 1.0})


# --- incremental == batch ----------------------------------------------------------------------------


def _assert_same(incremental: pd.DataFrame, batch: pd.DataFrame) -> None:
    assert list(incremental.columns) == list(batch.columns)
    for column in batch.columns:
        np.testing.assert_allclose(
            incremental[column].to_numpy(), batch[column].to_numpy(), rtol=1e-9, atol=1e-14,
            equal_nan=True, err_msg=column,
        )  # fmt: skip


@pytest.mark.parametrize("symbol", ["^GSPC", "^IXIC", "000300.SH"])
def test_rolling_risk_equals_the_batch_frame(closes: dict, symbol: str) -> None:
    close = closes[symbol]
    params = RiskParams()
    batch = risk_frame(close, params)
    rolling = RollingRisk(params)
    incremental = pd.DataFrame([rolling.update(ts, c).values for ts, c in close.items()], index=close.index)
    _assert_same(incremental, batch)
    assert batch.iloc[-1].notna().all()
    assert rolling.t_df == batch["t_df"].iloc[-1]


def test_rolling_risk_equals_the_batch_frame_with_other_settings(closes: dict, returns: dict) -> None:
    """Fixed Student-t df, t-distributed EWMA and model VaR, EWMA-sourced ratio spikes, other windows."""
    close = closes["000300.SH"].iloc[-1200:]
    forecast = np.sqrt(ewma_variance(returns["000300.SH"], 0.97, 30))[-1200:]  # a real forecast per bar
    params = RiskParams(
        levels=(0.9, 0.975, 0.99),
        window=120,
        t_df=4.5,
        model_dist="t",
        vol_source="ewma",
        spike_kind="ratio",
        spike_warning=1.5,
        spike_critical=2.0,
        drawdown_window=60,
        vol_window=10,
        spike_lookback=50,
    )
    batch = risk_frame(close, params, vol_forecast=forecast)
    rolling = RollingRisk(params, model=True)
    rows = [rolling.update(ts, c, f).values for (ts, c), f in zip(close.items(), forecast, strict=True)]
    _assert_same(pd.DataFrame(rows, index=close.index), batch)
    assert list(batch.columns) == frame_columns(params, model=True)
    assert (batch["t_df"].iloc[1:] == 4.5).all()  # from the first return on


def test_rolling_portfolio_equals_the_batch_portfolio(asset_returns: pd.DataFrame) -> None:
    weights = {"^GSPC": 0.5, "^IXIC": 0.2, "000300.SH": 0.3}
    # df fixed: a refit's optimiser path (tolerance 1e-5) reacts to the last-bit differences between a
    # vectorised and a per-bar weighted sum; the fitted-df path is compared on single series above
    params = RiskParams(t_df=6.0)
    data = asset_returns.iloc[-800:]
    batch = portfolio_frame(data, weights, params)
    rolling = RollingPortfolioRisk(weights, params)
    rows = [rolling.update(ts, row.to_dict()).values for ts, row in data.iterrows()]
    _assert_same(pd.DataFrame(rows, index=data.index), batch.iloc[1:])
    cov = ewma_covariance(data[list(weights)].to_numpy(), params.ewma_lambda, params.vol_window)[-1]
    np.testing.assert_allclose(rolling.covariance, cov, rtol=1e-10)
    var, _ = rolling.ewma_var_es({"^GSPC": 1.0, "^IXIC": 0.0, "000300.SH": 0.0})
    assert var[0] == pytest.approx(-stats.norm.ppf(0.05) * math.sqrt(cov[0, 0]), rel=1e-10)
    with pytest.raises(ValueError, match="no return for"):
        rolling.update(data.index[-1], {"^GSPC": 0.0})


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="finite positive"):
        risk_frame(pd.Series([100.0, math.nan, 101.0]))
    with pytest.raises(ValueError, match="NaN"):
        historical_var_es([0.01, math.nan, -0.02], LEVELS)
    with pytest.raises(ValueError, match=r"levels must lie in \(0.5, 1\)"):
        historical_var_es([0.01, -0.02, 0.03], (0.95, 1.0))
    with pytest.raises(ValueError, match="positive"):
        RollingRisk().update(pd.Timestamp("2024-01-02"), 0.0)
    with pytest.raises(ValueError, match="ascending"):
        RiskParams(levels=(0.99, 0.95))
    with pytest.raises(ValueError, match="drawdown_warning"):
        RiskParams(drawdown_warning=0.3, drawdown_critical=0.2)
