"""Data-snooping-aware tests over every candidate of a run: Hansen's SPA test and the Model Confidence Set.

A run tries many families (and tuning trials) against one benchmark; the best of them beating the naive
forecast at p ≤ 0.10 on its own DM test is expected by luck alone. Both tests here look at all candidates
of a task together, on the same out-of-sample rows, with `arch.bootstrap` (stationary bootstrap of the
daily loss series, seeded so a run is reproducible):

* SPA (Hansen 2005; `arch.bootstrap.SPA`, studentized, the "consistent" p-value): H0 = no candidate beats
  the benchmark (the naive forecast: return 0, or P(up) ½). One p-value per run and task.
* MCS (Hansen, Lunde and Nason 2011; `arch.bootstrap.MCS`, range statistic): the set of models, the
  benchmark included, that contains the best one with probability 1 − `size`. A champion must be in it.

A candidate whose daily losses equal the benchmark's or another candidate's exactly (a forecast calibrated
to zero on every fold is the naive forecast) is tested once, as that twin, and shares its result.

Losses are squared errors (of the return, or of P(up) against the 0/1 outcome: the Brier score), averaged
over symbols per UTC date, as the DM test does: same-day errors of different markets are not independent
evidence. Candidates are aligned on the dates all of them cover.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

log = logging.getLogger(__name__)

BENCHMARK = "naive"


@dataclass(frozen=True)
class SearchTests:
    """The run-level SPA p-value, and each candidate's MCS membership and MCS p-value."""

    spa_pvalue: float
    mcs_members: dict[str, bool]
    mcs_pvalues: dict[str, float]
    benchmark_in_mcs: bool
    days: int

    def metrics(self, name: str) -> dict[str, float]:
        """What a candidate's metrics carry: spa_pvalue, mcs_member (1/0) and mcs_pvalue."""
        return {
            "spa_pvalue": self.spa_pvalue,
            "mcs_member": float(self.mcs_members.get(name, False)),
            "mcs_pvalue": self.mcs_pvalues.get(name, math.nan),
        }


def naive_forecast(task: str) -> float:
    return 0.5 if task == "classification" else 0.0


def daily_losses(predictions: pd.DataFrame, pred: str = "pred") -> pd.Series:
    """Squared error of column `pred` against `y`, averaged per UTC date (index: dates)."""
    loss = (predictions["y"].to_numpy(dtype="float64") - predictions[pred].to_numpy(dtype="float64")) ** 2
    day = pd.to_datetime(predictions["event_time"], utc=True).dt.normalize()
    return pd.Series(loss).groupby(day.to_numpy()).mean()


def loss_table(predictions: Mapping[str, pd.DataFrame], task: str) -> tuple[pd.DataFrame, pd.Series]:
    """(daily losses per candidate, the benchmark's) on the dates every candidate covers."""
    if not predictions:
        raise ValueError("no candidate forecasts to test")
    daily = {name: daily_losses(frame) for name, frame in predictions.items()}
    table = pd.concat(daily, axis=1, join="inner")
    first = next(iter(predictions.values()))
    naive = first.assign(pred=naive_forecast(task))
    bench = daily_losses(naive).reindex(table.index)
    if bench.isna().any() or table.isna().to_numpy().any() or len(table) < 3:
        raise ValueError(f"the candidates share {len(table)} complete days of forecasts: too few to test")
    return table, bench.rename(BENCHMARK)


def _twins(table: pd.DataFrame) -> dict[str, str]:
    """Each column → the first column (the benchmark first) with exactly the same values, itself when none:
    the bootstrap tests divide by the variance of loss differences, which is zero between identical series."""
    first: dict[bytes, str] = {}
    out: dict[str, str] = {}
    for column in [BENCHMARK, *[c for c in table.columns if c != BENCHMARK]]:
        key = table[column].to_numpy(dtype="float64").tobytes()
        out[str(column)] = first.setdefault(key, str(column))
    return out


def search_tests(
    predictions: Mapping[str, pd.DataFrame],
    task: str,
    *,
    mcs_size: float = 0.10,
    reps: int = 1000,
    block_size: int | None = None,
    seed: int = 42,
) -> SearchTests:
    """SPA p-value and MCS membership of every candidate (name → its out-of-sample forecasts: event_time,
    symbol, y, pred) against the naive forecast."""
    from arch.bootstrap import MCS, SPA

    losses, bench = loss_table(predictions, task)
    table = pd.concat([losses, bench], axis=1)
    twin = _twins(table)  # columns with equal losses (a forecast calibrated to zero is the naive one)
    distinct = [c for c in table.columns if twin[c] == c]
    models = [c for c in distinct if c != BENCHMARK]
    spa_p = 1.0  # no candidate differs from the benchmark: none can beat it
    if models:
        spa = SPA(bench, losses[models], block_size=block_size, reps=reps, seed=seed)
        spa.compute()
        spa_p = float(spa.pvalues["consistent"])
    included, pvalues = set(distinct), dict.fromkeys(distinct, 1.0)
    if len(distinct) > 1:
        mcs = MCS(table[distinct], size=mcs_size, reps=reps, block_size=block_size, seed=seed)
        mcs.compute()
        included = {str(c) for c in mcs.included}
        pvalues = {str(k): float(v) for k, v in mcs.pvalues["Pvalue"].items()}
    included |= {c for c in table.columns if twin[c] in included}
    pvalues = {c: pvalues[twin[c]] for c in table.columns}
    result = SearchTests(
        spa_pvalue=spa_p,
        mcs_members={name: name in included for name in losses.columns},
        mcs_pvalues={name: pvalues.get(name, math.nan) for name in losses.columns},
        benchmark_in_mcs=BENCHMARK in included,
        days=len(losses),
    )
    log.info(
        "%s: SPA p %.3f over %d candidates and %d days; MCS %s",
        task, spa_p, losses.shape[1], len(losses), sorted(included),
    )  # fmt: skip
    return result
