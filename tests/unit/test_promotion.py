"""The promotion gates as a pure function: folds, gate metric vs champion or naive, Diebold-Mariano."""

from __future__ import annotations

import math

import pytest

from finstream.config import PromotionParams
from finstream.errors import ConfigError, FinstreamError
from finstream.models.registry import RegistryError
from training.promotion import Decision, decide

PARAMS = PromotionParams(metric="ic", min_improvement=0.005, max_dm_pvalue=0.10, min_folds=3)


def metrics(**values: float) -> dict[str, float]:
    """A candidate that passes the folds and DM gates unless a test overrides them."""
    return {"n_folds": 5, "dm_pvalue": 0.02, **values}


def test_first_candidate_that_beats_naive_is_promoted() -> None:
    decision = decide(metrics(ic=0.031), None, PARAMS)
    assert decision == Decision(True, decision.reason)
    assert decision.reason.startswith("promote:")
    assert "ic 0.031 > naive 0" in decision.reason
    assert "folds 5 ≥ 3 PASS" in decision.reason
    assert "DM p-value 0.02 ≤ 0.1" in decision.reason


def test_first_candidate_no_better_than_naive_is_not_promoted() -> None:
    for ic in (0.0, -0.012):
        decision = decide(metrics(ic=ic), None, PARAMS)
        assert not decision.promote
        assert "≤ naive 0" in decision.reason and "FAIL" in decision.reason


def test_better_candidate_replaces_champion() -> None:
    decision = decide(metrics(ic=0.045), metrics(ic=0.030), PARAMS, champion_version="2")
    assert decision.promote
    assert "ic 0.045 vs champion v2 0.03: improvement +0.015 ≥ min_improvement 0.005" in decision.reason


def test_worse_candidate_never_replaces_champion() -> None:
    decision = decide(metrics(ic=0.020, dm_pvalue=0.001, n_folds=10), metrics(ic=0.030), PARAMS)
    assert not decision.promote
    assert decision.reason.startswith("do not promote:")
    assert "improvement -0.01 below min_improvement 0.005" in decision.reason


def test_tie_is_not_an_improvement_even_without_a_margin() -> None:
    no_margin = PARAMS.model_copy(update={"min_improvement": 0.0})
    assert not decide(metrics(ic=0.03), metrics(ic=0.03), no_margin).promote
    assert decide(metrics(ic=0.0301), metrics(ic=0.03), no_margin).promote


def test_min_improvement_is_inclusive_and_exact() -> None:
    assert 0.015 - 0.010 < 0.005  # in floats; the gate must still count it as exactly min_improvement
    assert decide(metrics(ic=0.015), metrics(ic=0.010), PARAMS).promote
    assert not decide(metrics(ic=0.0349), metrics(ic=0.030), PARAMS).promote


def test_too_few_folds_blocks_promotion() -> None:
    decision = decide(metrics(ic=0.05, n_folds=2), None, PARAMS)
    assert not decision.promote
    assert "folds 2 < 3 FAIL" in decision.reason
    missing = decide({"ic": 0.05, "dm_pvalue": 0.01}, None, PARAMS)
    assert not missing.promote and "no n_folds" in missing.reason


def test_dm_gate_applies_with_and_without_champion() -> None:
    first = decide(metrics(ic=0.05, dm_pvalue=0.25), None, PARAMS)
    assert not first.promote
    assert "DM p-value 0.25 > 0.1 vs naive FAIL" in first.reason
    later = decide(metrics(ic=0.05, dm_pvalue=0.25), metrics(ic=0.01), PARAMS)
    assert not later.promote
    assert "improvement +0.04" in later.reason and "PASS" in later.reason  # the metric gate itself passed
    assert decide(metrics(ic=0.05, dm_pvalue=0.10), None, PARAMS).promote  # the bound is inclusive
    no_dm = decide({"ic": 0.05, "n_folds": 5}, None, PARAMS)
    assert not no_dm.promote and "no dm_pvalue" in no_dm.reason


def test_lower_is_better_metric() -> None:
    mae = PARAMS.model_copy(update={"metric": "mae", "min_improvement": 0.0001})
    assert decide(metrics(mae=0.0090), metrics(mae=0.0095), mae).promote
    worse = decide(metrics(mae=0.0100), metrics(mae=0.0095), mae)
    assert not worse.promote and "lower is better" in worse.reason
    # no champion: the naive forecast's MAE must be logged with the candidate, and beaten
    assert decide(metrics(mae=0.0090, naive_mae=0.0093), None, mae).promote
    assert not decide(metrics(mae=0.0095, naive_mae=0.0093), None, mae).promote
    unknown_baseline = decide(metrics(mae=0.0090), None, mae)
    assert not unknown_baseline.promote and "no naive_mae" in unknown_baseline.reason


@pytest.mark.parametrize("metric", ["oos_r2", "sharpe"])
def test_other_higher_is_better_metrics(metric: str) -> None:
    params = PARAMS.model_copy(update={"metric": metric, "min_improvement": 0.01})
    assert decide(metrics(**{metric: 0.02}), None, params).promote
    assert not decide(metrics(**{metric: -0.02}), None, params).promote
    assert decide(metrics(**{metric: 0.50}), metrics(**{metric: 0.40}), params).promote
    assert not decide(metrics(**{metric: 0.405}), metrics(**{metric: 0.40}), params).promote


def test_missing_or_nan_metrics_never_promote() -> None:
    assert not decide(metrics(), None, PARAMS).promote
    assert not decide(metrics(ic=math.nan), None, PARAMS).promote
    champion_without_ic = decide(metrics(ic=0.05), metrics(oos_r2=0.01), PARAMS, champion_version="4")
    assert not champion_without_ic.promote
    assert "champion v4 has no ic" in champion_without_ic.reason
    assert "finstream models promote" in champion_without_ic.reason


def test_every_gate_is_reported() -> None:
    reason = decide(metrics(ic=-0.01, n_folds=1, dm_pvalue=0.5), metrics(ic=0.02), PARAMS).reason
    assert reason.count("FAIL") == 3


def test_unknown_gate_metric_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"promotion\.metric 'profit' is not a gate metric"):
        decide(metrics(profit=1.0), None, PARAMS.model_copy(update={"metric": "profit"}))


def test_registry_error_is_a_finstream_error() -> None:
    assert issubclass(RegistryError, FinstreamError)
