"""VaR backtests: Kupiec and Christoffersen statistics worked by hand, cross-checked against vartests' Kupiec
test and scipy's G-test of independence on a 2x2 table, the edge cases, the Basel zones, and the
walk-forward backtest on real S&P 500 / CSI 300 / NASDAQ history (no look-ahead)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import vartests
from scipy.stats import chi2_contingency

from finstream.risk.backtests import (
    backtest_table,
    backtest_var,
    basel_zone,
    christoffersen_independence,
    conditional_coverage,
    kupiec_pof,
    transition_counts,
    walk_forward,
)
from finstream.risk.measures import historical_var_es, normal_var_es, simple_returns
from finstream.risk.params import RiskParams

#: 20 days, 5 exceedances, two of them in pairs (days 2-3 and 16-17)
HITS = [0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0]


def chi2_sf_1(x: float) -> float:
    """chi2(1) survival function: P(Z^2 > x) = erfc(sqrt(x / 2))."""
    return math.erfc(math.sqrt(x / 2))


def chi2_sf_2(x: float) -> float:
    """chi2(2) survival function: exp(-x / 2)."""
    return math.exp(-x / 2)


def test_kupiec_by_hand() -> None:
    n, x, p = 20, 5, 0.05
    # LR_pof = -2 [ (n-x) ln(1-p) + x ln p - (n-x) ln(1-x/n) - x ln(x/n) ]
    lr = -2 * (
        (n - x) * math.log(1 - p) + x * math.log(p) - (n - x) * math.log(1 - x / n) - x * math.log(x / n)
    )
    assert lr == pytest.approx(9.0027, abs=1e-4)
    test = kupiec_pof(HITS, 0.95)
    assert test.statistic == pytest.approx(lr, rel=1e-12)
    assert test.pvalue == pytest.approx(chi2_sf_1(lr), rel=1e-12)
    assert test.df == 1 and test.informative


def test_christoffersen_by_hand() -> None:
    # pairs (I_{t-1}, I_t) over the 19 consecutive days, counted by hand from HITS
    n00, n01, n10, n11 = 11, 3, 3, 2
    assert transition_counts(HITS) == (n00, n01, n10, n11)
    pi01, pi11, pi = n01 / (n00 + n01), n11 / (n10 + n11), (n01 + n11) / 19  # 3/14, 2/5, 5/19
    null = (n00 + n10) * math.log(1 - pi) + (n01 + n11) * math.log(pi)
    alternative = (
        n00 * math.log(1 - pi01) + n01 * math.log(pi01) + n10 * math.log(1 - pi11) + n11 * math.log(pi11)
    )
    lr_ind = -2 * (null - alternative)
    assert lr_ind == pytest.approx(0.6223, abs=1e-4)
    test = christoffersen_independence(HITS)
    assert test.statistic == pytest.approx(lr_ind, rel=1e-12)
    assert test.pvalue == pytest.approx(chi2_sf_1(lr_ind), rel=1e-12)
    # conditional coverage: LR_cc = LR_pof + LR_ind ~ chi2(2)
    cc = conditional_coverage(HITS, 0.95)
    lr_cc = kupiec_pof(HITS, 0.95).statistic + lr_ind
    assert (cc.statistic, cc.df) == (pytest.approx(lr_cc, rel=1e-12), 2)
    assert cc.pvalue == pytest.approx(chi2_sf_2(lr_cc), rel=1e-12)


def test_independence_is_the_g_test_on_the_transition_table() -> None:
    n00, n01, n10, n11 = transition_counts(HITS)
    g, pvalue, _, _ = chi2_contingency([[n00, n01], [n10, n11]], correction=False, lambda_="log-likelihood")
    test = christoffersen_independence(HITS)
    assert test.statistic == pytest.approx(g, rel=1e-10)
    assert test.pvalue == pytest.approx(pvalue, rel=1e-10)


@pytest.mark.parametrize(
    ("hits", "level"),
    [(HITS, 0.95), ([0] * 250, 0.99), ([1] * 30, 0.99), ([0] * 249 + [1], 0.999), ([1], 0.95), ([0], 0.95)],
)
def test_kupiec_agrees_with_vartests(hits: list[int], level: float) -> None:
    ours = kupiec_pof(hits, level)
    theirs = vartests.kupiec_test(np.array(hits), risk_conf_level=level)
    assert ours.statistic == pytest.approx(theirs["statistic"], rel=1e-12, abs=1e-12)
    assert ours.pvalue == pytest.approx(theirs["p-value"], rel=1e-12)


def test_edge_cases_give_finite_documented_values() -> None:
    n = 250
    zero = kupiec_pof([0] * n, 0.99)  # no exceedance: LR = -2 n ln(1 - p)
    assert zero.statistic == pytest.approx(-2 * n * math.log(0.99), rel=1e-12)
    assert zero.pvalue == pytest.approx(chi2_sf_1(zero.statistic), rel=1e-12)
    every = kupiec_pof([1] * n, 0.99)  # only exceedances: LR = -2 n ln p
    assert every.statistic == pytest.approx(-2 * n * math.log(0.01), rel=1e-12)
    assert every.pvalue == pytest.approx(0.0, abs=1e-300)
    cases = {
        "no exceedance": [0] * n,
        "only exceedances": [1] * n,
        "one bar, no pair": [1],
        "one exceedance, on the last bar": [0] * (n - 1) + [1],
        "one exceedance, on the first bar": [1] + [0] * (n - 1),
    }
    for name, hits in cases.items():
        ind = christoffersen_independence(hits)
        assert (ind.statistic, ind.pvalue) == (0.0, 1.0), name
        cc = conditional_coverage(hits, 0.99)
        assert math.isfinite(cc.statistic) and math.isfinite(cc.pvalue), name
        assert not ind.informative and not cc.informative, name
    with pytest.raises(ValueError, match="non-empty"):
        kupiec_pof([], 0.99)
    with pytest.raises(ValueError, match="0/1"):
        christoffersen_independence([0, 2, 1])


def test_basel_traffic_light() -> None:
    # Basel Committee (1996): 250 days at 99 %: 0-4 green, 5-9 yellow, 10+ red
    zones = [basel_zone(x, 250, 0.99) for x in range(12)]
    assert zones == ["green"] * 5 + ["yellow"] * 5 + ["red"] * 2


def test_backtest_var_leaves_out_missing_forecasts() -> None:
    loss = [0.01, 0.03, -0.01, 0.05, 0.02]
    var = [np.nan, 0.02, 0.02, 0.04, 0.03]
    es = [np.nan, 0.025, 0.025, 0.045, 0.035]
    result = backtest_var(loss, var, 0.95, es, "hand")
    assert (result.observations, result.exceedances) == (4, 2)  # 0.03 > 0.02 and 0.05 > 0.04
    assert result.es_ratio == pytest.approx((0.03 + 0.05) / (0.025 + 0.045))
    assert result.expected == pytest.approx(0.2)
    row = result.as_row()
    assert row["kupiec_pvalue"] == result.kupiec.pvalue and row["method"] == "hand"


# --- walk-forward on real history -------------------------------------------------------------------


def _returns(bars: pd.DataFrame) -> pd.Series:
    return pd.Series(simple_returns(bars["close"].to_numpy()), index=pd.DatetimeIndex(bars["ts"].iloc[1:]))


@pytest.fixture(scope="module")
def sp500_returns(sp500: pd.DataFrame) -> pd.Series:
    return _returns(sp500)


def test_walk_forward_uses_only_the_past(sp500_returns: pd.Series) -> None:
    params = RiskParams(t_df=5.0)
    r = sp500_returns.iloc[:800]
    walk = walk_forward(r, params, methods=("historical", "normal"))
    x = r.to_numpy()
    for t in (250, 400, 799):
        past = x[t - 250 : t]  # the window ends at t-1
        var, es = historical_var_es(past, params.levels)
        row = walk[(walk["method"] == "historical") & (walk["ts"] == r.index[t])]
        assert list(row["var"]) == pytest.approx(list(var), rel=1e-12)
        assert list(row["es"]) == pytest.approx(list(es), rel=1e-12)
        nvar, _ = normal_var_es(past.mean(), past.std(ddof=1), params.levels)
        row = walk[(walk["method"] == "normal") & (walk["ts"] == r.index[t])]
        assert list(row["var"]) == pytest.approx(list(nvar), rel=1e-12)
        assert list(row["ret"]) == [x[t], x[t]]
    # the first forecast is for the bar after the first full window
    assert walk["ts"].min() == r.index[250]
    # changing the return at t leaves the forecast for t as it was
    shocked = r.copy()
    shocked.iloc[600] = -0.5
    again = walk_forward(shocked, params, methods=("historical", "normal"))
    at = again["ts"] == r.index[600]
    assert list(again.loc[at, "var"]) == list(walk.loc[walk["ts"] == r.index[600], "var"])
    assert again.loc[at, "exceedance"].all()


def test_walk_forward_kupiec_agrees_with_vartests_on_real_exceedances(sp500_returns: pd.Series) -> None:
    walk = walk_forward(sp500_returns, RiskParams(), methods=("historical",))
    for level, group in walk.groupby("level"):
        hits = group["exceedance"].to_numpy()
        theirs = vartests.kupiec_test(hits.astype(int), risk_conf_level=float(level))
        ours = kupiec_pof(hits, float(level))
        assert ours.statistic == pytest.approx(theirs["statistic"], rel=1e-10)
        assert ours.pvalue == pytest.approx(theirs["p-value"], rel=1e-10)
        n00, n01, n10, n11 = transition_counts(hits)
        g, pvalue, _, _ = chi2_contingency(
            [[n00, n01], [n10, n11]], correction=False, lambda_="log-likelihood"
        )
        ind = christoffersen_independence(hits)
        assert ind.statistic == pytest.approx(g, rel=1e-10) and ind.pvalue == pytest.approx(pvalue, rel=1e-10)


@pytest.mark.parametrize("symbol", ["^GSPC", "000300.SH"])
def test_backtest_table_on_real_history_shows_known_facts(
    sp500: pd.DataFrame, csi300: pd.DataFrame, symbol: str
) -> None:
    bars = sp500 if symbol == "^GSPC" else csi300
    table = backtest_table(walk_forward(_returns(bars), RiskParams())).set_index(["method", "level"])
    assert len(table) == 8 and table.notna().drop(columns="es_ratio").all().all()
    assert (table["observations"] > 4000).all()
    # fat tails: the normal 99 % VaR is beaten about twice as often as it should be, and Kupiec rejects it
    normal99 = table.loc[("normal", 0.99)]
    assert normal99["exceedances"] > 1.8 * normal99["expected"]
    assert normal99["kupiec_pvalue"] < 1e-6 and normal99["zone"] == "red"
    # the EWMA forecast follows volatility clusters: its 95 % exceedances show no dependence
    assert table.loc[("ewma", 0.95), "independence_pvalue"] > 0.2
    # tail losses on exceedance days run past the ES forecast by less than a quarter
    assert table["es_ratio"].between(0.9, 1.25).all()
