"""Promotion gates: whether a registered candidate becomes `champion` or `challenger`, and why.

The gates (enough folds, beats the champion or the naive forecast on the gate metric, Diebold-Mariano
p-value) decide; `finstream.models.registry` moves the alias, records the reason and tells the servers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from mlflow import MlflowClient

from finstream.config import PromotionParams
from finstream.errors import ConfigError
from finstream.models.registry import (
    CHALLENGER,
    CHAMPION,
    DM_METRIC,
    FOLDS_METRIC,
    TAG_KIND,
    alias_version,
    audit_move,
    get_version,
    make_champion,
    record_decision,
    version_metrics,
    version_of,
)

log = logging.getLogger(__name__)

# Gate metrics: direction, and the naive forecast's value when the candidate's metrics do not carry
# `naive_<metric>` (None: the candidate must carry it).
HIGHER_IS_BETTER: dict[str, float | None] = {
    "ic": 0.0,
    "rank_ic": 0.0,
    "oos_r2": 0.0,
    "sharpe": 0.0,
    "auc": 0.5,
    "accuracy": None,
}
LOWER_IS_BETTER: dict[str, float | None] = {
    "mae": None,
    "rmse": None,
    "mse": None,
    "log_loss": None,
    "qlike": None,  # volatility: naive_qlike is the best baseline's
}
_EPS = 1e-12  # float slack so an improvement of exactly min_improvement passes


@dataclass(frozen=True)
class Registration:
    """The best pooled candidate of a task, registered as a new version of the task's model."""

    task: str
    model: str
    version: str
    family: str
    run_id: str


@dataclass(frozen=True)
class GateDecision:
    """The promotion gates' verdict on a registered version: `champion` (promote) or `challenger`."""

    task: str
    model: str
    version: str
    family: str
    promote: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    """The outcome of the promotion gates; `reason` names every gate with its numbers."""

    promote: bool
    reason: str


# --------------------------------------------------------------------------------------------- gates


def decide(
    candidate_metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    params: PromotionParams,
    *,
    champion_version: str | None = None,
    search: bool = False,
) -> Decision:
    """Apply the gates: enough folds, beats the champion (or the naive baseline), DM p-value small enough,
    and with `search` the data-snooping-aware ones (SPA p-value of the run, membership of the MCS).

    Every gate is evaluated so the reason lists all of them; the candidate is promoted only if all pass.
    """
    metric = params.metric
    if metric in HIGHER_IS_BETTER:
        higher, default_baseline = True, HIGHER_IS_BETTER[metric]
    elif metric in LOWER_IS_BETTER:
        higher, default_baseline = False, LOWER_IS_BETTER[metric]
    else:
        known = ", ".join(sorted([*HIGHER_IS_BETTER, *LOWER_IS_BETTER]))
        raise ConfigError(f"promotion.metric {metric!r} is not a gate metric; use one of: {known}")

    gates = [
        _folds_gate(candidate_metrics, params.min_folds),
        _metric_gate(
            candidate_metrics, champion_metrics, metric, higher, default_baseline, params, champion_version
        ),
        _dm_gate(candidate_metrics, params.max_dm_pvalue),
    ]
    if search:
        gates += [_spa_gate(candidate_metrics, params.max_spa_pvalue), _mcs_gate(candidate_metrics, params)]
    promoted = all(ok for ok, _ in gates)
    verdict = "promote" if promoted else "do not promote"
    return Decision(promoted, f"{verdict}: " + "; ".join(text for _, text in gates))


def symbol_passes(metrics: Mapping[str, float], params: PromotionParams) -> tuple[bool, str]:
    """A pooled model's verdict on one symbol: the gate metric beats the naive forecast's there and its DM
    p-value is at most max_dm_pvalue (the folds and the search gates are the model's, not the symbol's)."""
    metric = params.metric
    higher = metric in HIGHER_IS_BETTER
    default = HIGHER_IS_BETTER.get(metric) if higher else LOWER_IS_BETTER.get(metric)
    gates = [
        _metric_gate(metrics, None, metric, higher, default, params, None),
        _dm_gate(metrics, params.max_dm_pvalue),
    ]
    return all(ok for ok, _ in gates), "; ".join(text for _, text in gates)


def _folds_gate(metrics: Mapping[str, float], min_folds: int) -> tuple[bool, str]:
    folds = _number(metrics.get(FOLDS_METRIC))
    if folds is None:
        return False, f"folds FAIL (candidate metrics have no {FOLDS_METRIC}; need ≥ {min_folds})"
    if folds >= min_folds:
        return True, f"folds {folds:g} ≥ {min_folds} PASS"
    return False, f"folds {folds:g} < {min_folds} FAIL"


def _metric_gate(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    metric: str,
    higher: bool,
    default_baseline: float | None,
    params: PromotionParams,
    champion_version: str | None,
) -> tuple[bool, str]:
    value = _number(candidate.get(metric))
    direction = "higher" if higher else "lower"
    if value is None:
        return False, f"{metric} FAIL (candidate metrics have no {metric})"
    if champion is None:
        baseline = _number(candidate.get(f"naive_{metric}"))
        baseline = default_baseline if baseline is None else baseline
        if baseline is None:
            return False, f"{metric} {value:.4g} FAIL (no champion and no naive_{metric} to compare with)"
        ok = value > baseline if higher else value < baseline
        cmp = (">" if higher else "<") if ok else ("≤" if higher else "≥")
        return ok, f"{metric} {value:.4g} {cmp} naive {baseline:.4g} ({direction} is better) " + _pf(ok)
    label = f"champion v{champion_version}" if champion_version else "champion"
    current = _number(champion.get(metric))
    if current is None:
        return False, (
            f"{metric} {value:.4g} FAIL ({label} has no {metric} to compare with;"
            " promote by hand with `finstream models promote` if this candidate should replace it)"
        )
    gain = value - current if higher else current - value
    ok = gain > 0 and gain >= params.min_improvement - _EPS
    return ok, (
        f"{metric} {value:.4g} vs {label} {current:.4g}: improvement {gain:+.4g}"
        f" {'≥' if ok else 'below'} min_improvement {params.min_improvement:g} ({direction} is better) "
        + _pf(ok)
    )


def _dm_gate(metrics: Mapping[str, float], max_pvalue: float) -> tuple[bool, str]:
    pvalue = _number(metrics.get(DM_METRIC))
    if pvalue is None:
        return False, f"DM test FAIL (candidate metrics have no {DM_METRIC}; need ≤ {max_pvalue:g})"
    ok = pvalue <= max_pvalue
    return ok, f"DM p-value {pvalue:.4g} {'≤' if ok else '>'} {max_pvalue:g} vs naive " + _pf(ok)


def _spa_gate(metrics: Mapping[str, float], max_pvalue: float) -> tuple[bool, str]:
    pvalue = _number(metrics.get("spa_pvalue"))
    if pvalue is None:
        return False, f"SPA FAIL (no spa_pvalue: candidates not tested together; need ≤ {max_pvalue:g})"
    ok = pvalue <= max_pvalue
    return ok, f"SPA p-value {pvalue:.4g} {'≤' if ok else '>'} {max_pvalue:g} (all candidates) " + _pf(ok)


def _mcs_gate(metrics: Mapping[str, float], params: PromotionParams) -> tuple[bool, str]:
    member = _number(metrics.get("mcs_member"))
    level = f"{100 * (1 - params.mcs_size):g} % MCS"
    if member is None:
        return False, f"{level} FAIL (no mcs_member)"
    ok = member >= 1.0
    return ok, f"{'in' if ok else 'not in'} the {level} " + _pf(ok)


def _pf(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _number(value: object) -> float | None:
    """A finite float, or None for missing, non-numeric, NaN or infinite values."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def promote_or_challenge(
    client: MlflowClient, name: str, version: str | int, params: PromotionParams, search: bool = False
) -> Decision:
    """Gate version `version` against the current champion: it becomes `champion` or `challenger`."""
    candidate = get_version(client, name, version)
    champion = alias_version(client, name, CHAMPION)
    if champion is not None and champion.version == candidate.version:
        decision = Decision(True, f"v{candidate.version} is already the champion of {name}; nothing changed")
        log.info(
            "%s v%s is already champion",
            name,
            candidate.version,
            extra={"model": name, "version": candidate.version},
        )
        return decision
    decision = decide(
        version_metrics(candidate),
        version_metrics(champion) if champion is not None else None,
        params,
        champion_version=version_of(champion),
        search=search,
    )
    if decision.promote:
        make_champion(client, name, candidate, champion, "promote", decision.reason)
    else:
        client.set_registered_model_alias(name, CHALLENGER, candidate.version)
        record_decision(client, name, candidate.version, CHALLENGER, decision.reason)
        audit_move(client, name, "challenge", candidate.version, None, decision.reason)
    log.info(
        "%s v%s -> %s: %s",
        name,
        candidate.version,
        CHAMPION if decision.promote else CHALLENGER,
        decision.reason,
        extra={
            "model": name,
            "version": candidate.version,
            "alias": CHAMPION if decision.promote else CHALLENGER,
            "champion_before": version_of(champion),
            "reason": decision.reason,
        },
    )
    return decision


def gate_registration(
    client: MlflowClient, registration: Registration, params: PromotionParams, search: bool = False
) -> GateDecision:
    """`promote_or_challenge` for a registered candidate, as a typed stage report (`search`: with the SPA
    and MCS gates, for a candidate chosen among a run's many)."""
    decision = promote_or_challenge(client, registration.model, registration.version, params, search)
    return GateDecision(
        registration.task,
        registration.model,
        registration.version,
        registration.family,
        decision.promote,
        decision.reason,
    )


def gate_volatility(
    client: MlflowClient, registration: Registration, kind: str, params: PromotionParams
) -> GateDecision:
    """The volatility task's gate: its benchmark is the best econometric baseline, not zero.

    A candidate (zoo model) carries QLIKE, `naive_qlike` (the best baseline's) and the DM p-value against
    that baseline: the ordinary gates with metric QLIKE decide, against the current champion when that is
    a candidate too, else against the baseline. A baseline is registered only when no candidate beat it:
    it becomes champion when there is none or the champion is a baseline (a refit on newer data), and
    challenger when a candidate that passed its gates is champion.
    """
    name, version = registration.model, registration.version
    candidate = get_version(client, name, version)
    champion = alias_version(client, name, CHAMPION)
    champion_kind = None if champion is None else (champion.tags or {}).get(TAG_KIND, "candidate")
    if kind == "candidate":
        vs_champion = champion if champion_kind == "candidate" else None
        decision = decide(
            version_metrics(candidate),
            version_metrics(vs_champion) if vs_champion is not None else None,
            params.model_copy(update={"metric": "qlike"}),
            champion_version=version_of(vs_champion),
        )
        promote = decision.promote
        reason = decision.reason.replace("vs naive", "vs the best baseline").replace("naive", "best baseline")
    else:
        metrics = version_metrics(candidate)
        qlike = metrics.get("qlike", math.nan)
        promote = champion_kind != "candidate"
        reason = (
            f"no candidate beat the best baseline (QLIKE lower and DM p ≤ {params.max_dm_pvalue:g}): "
            f"{registration.family} (QLIKE {qlike:.4f}) "
            + (
                "is served as champion, labelled baseline"
                if promote
                else f"stays challenger: v{version_of(champion)}, a candidate that passed its gates, "
                "is champion"
            )
        )
    if promote:
        make_champion(client, name, candidate, champion, "promote", reason)
    else:
        client.set_registered_model_alias(name, CHALLENGER, candidate.version)
        record_decision(client, name, candidate.version, CHALLENGER, reason)
        audit_move(client, name, "challenge", candidate.version, None, reason)
    log.info("%s v%s (%s %s) -> %s: %s", name, version, kind, registration.family,
             CHAMPION if promote else CHALLENGER, reason)  # fmt: skip
    return GateDecision(registration.task, name, version, registration.family, promote, reason)
