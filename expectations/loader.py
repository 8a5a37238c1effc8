"""Run a bar expectation suite (JSON under `expectations/suites/`) with Great Expectations.

The split is row-level: every row that fails at least one expectation goes to quarantine with the
readable names (each expectation's `description`) of everything it failed; the rest is clean.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.core.validation_definition import ValidationDefinition
    from great_expectations.data_context import EphemeralDataContext

log = logging.getLogger(__name__)

SUITES_DIR = Path(__file__).resolve().parent / "suites"
# The Bar schema's columns (finstream.schema.BAR_COLUMNS; expectations/ imports no project code).
BAR_COLUMNS = [
    "symbol",
    "interval",
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "amount",
    "source",
    "ingested_at",
]
ROW_ID = "row_id"
NOW_PARAMETER = "now"
DATASOURCE, ASSET, BATCH = "finstream_frames", "bars", "whole_frame"
RESULT_FORMAT = {"result_format": "COMPLETE", "unexpected_index_column_names": [ROW_ID]}
MOVE_REASON = "abs(close / prev_close - 1) <= move limit"  # the move expectation's description
SERIES = ["symbol", "interval"]
#: (close, session) of the last clean bar before the frame, per series (symbol, interval)
Reference = tuple[float, int]

_gx_lock = threading.Lock()  # one shared GX context; validation runs are serialised through it


class BarValidationError(ValueError):
    """The frame, the parameters or the suite cannot be validated; the message says what to fix."""


@dataclass
class ValidationResult:
    """Clean and quarantined bars of one validation run, with the counts that reconcile them."""

    clean: pd.DataFrame
    quarantine: pd.DataFrame
    counts: dict
    per_symbol: pd.DataFrame
    suite: str
    success: bool
    validated_at: pd.Timestamp | None = None
    parameters: dict = field(default_factory=dict)


@cache
def _context() -> EphemeralDataContext:
    """The process-wide ephemeral GX context (built once: importing GX takes seconds)."""
    # GX logs dozens of "Skipping registering function ..." lines at INFO while importing.
    logging.getLogger("great_expectations._docs_decorators").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    asset = context.data_sources.add_pandas(DATASOURCE).add_dataframe_asset(ASSET)
    asset.add_batch_definition_whole_dataframe(BATCH)
    return context


def load_suite_dict(suite: str) -> dict[str, Any]:
    """Read `suites/<suite>.json` and check every expectation has a unique description (its reason)."""
    path = SUITES_DIR / f"{suite}.json"
    if not path.is_file():
        available = sorted(p.stem for p in SUITES_DIR.glob("*.json"))
        raise BarValidationError(
            f"no expectation suite {suite!r} ({path} is missing); available: {available}"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("name") != suite:
        raise BarValidationError(f"{path} names its suite {data.get('name')!r}; expected {suite!r}")
    descriptions = [e.get("description") for e in data.get("expectations", [])]
    if not all(descriptions) or len(set(descriptions)) != len(descriptions):
        raise BarValidationError(
            f"{path}: every expectation needs a unique 'description' (the quarantine reason)"
        )
    return data


@cache
def _validation_definition(suite: str) -> tuple[ValidationDefinition, tuple[str, ...]]:
    """The suite's ValidationDefinition on the whole-dataframe batch, and its reasons in suite order."""
    import great_expectations as gx

    data = load_suite_dict(suite)
    context = _context()
    gx_suite = context.suites.add(gx.ExpectationSuite(**data))
    batch_definition = context.data_sources.get(DATASOURCE).get_asset(ASSET).get_batch_definition(BATCH)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite}__{BATCH}", data=batch_definition, suite=gx_suite)
    )
    return definition, tuple(e["description"] for e in data["expectations"])


def _utc(value: Any, name: str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise BarValidationError(
            f"{name} must be timezone-aware (e.g. pd.Timestamp.now(tz='UTC')), got {value!r}"
        )
    return stamp.tz_convert("UTC").as_unit("ns")


def _checked_limits(move_limits: Mapping[str, float] | None) -> dict[str, float]:
    limits = dict(move_limits or {})
    bad = {
        s: v for s, v in limits.items() if not isinstance(v, int | float) or not math.isfinite(v) or v <= 0
    }
    if bad:
        raise BarValidationError(f"move_limits must be positive fractions (0.11 = 11%); invalid: {bad}")
    return {s: float(v) for s, v in limits.items()}


def _bar_frame(bars: pd.DataFrame) -> pd.DataFrame:
    """The input's Bar columns, positionally indexed, timestamps in UTC."""
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise BarValidationError(f"bars frame lacks Bar schema column(s) {missing}; got {list(bars.columns)}")
    frame = bars[BAR_COLUMNS].reset_index(drop=True)
    for col in ("ts", "ingested_at"):
        if not isinstance(frame[col].dtype, pd.DatetimeTZDtype):
            raise BarValidationError(
                f"column {col!r} must be timezone-aware datetimes, got {frame[col].dtype}"
            )
        frame[col] = frame[col].dt.tz_convert("UTC")
    return frame


def _with_derived_columns(
    frame: pd.DataFrame,
    limits: dict[str, float],
    session_limits: Mapping[tuple[str, str], float],
    sessions: np.ndarray | None,
    references: Mapping[tuple[str, str], Reference],
    failing_other: np.ndarray | None = None,
) -> pd.DataFrame:
    """Add row_id, key_repeat, session, abs_move and move_limit: the columns the suite checks besides the Bar.

    key_repeat: 0 for the first copy of a (symbol, interval, ts) key in ingested_at order (ties: input
    order), 1, 2, ... for later copies. session: the caller's session number of each bar (-1 = outside
    every trading session; NaN = not checked). abs_move: |close / reference - 1|, where the reference is the
    series' previous *clean* close (`_moves`): bars with a usable close (keyed, not a repeat, close > 0) in
    time order, a bar becoming the reference only if it passes the move check and is not in `failing_other`
    (row ids failing any other expectation); the series starts from `references` when given (incremental
    runs), else with no reference (NaN). So one corrupt close is one quarantined bar, not two.
    move_limit: the limit applied to that move: the series' session limit when the reference is in the same
    session, the symbol's (daily) limit across sessions; NaN (not checked) for symbols without a limit.
    """
    work = frame.copy()
    work[ROW_ID] = np.arange(len(work), dtype="int64")
    keyed = work["symbol"].notna() & work["interval"].notna() & work["ts"].notna()
    by_ingest = work.loc[keyed].sort_values("ingested_at", kind="stable", na_position="last")
    repeat = pd.Series(0, index=work.index, dtype="int64")
    repeat.loc[by_ingest.index] = by_ingest.groupby([*SERIES, "ts"], sort=False).cumcount().to_numpy()
    work["key_repeat"] = repeat
    session = np.full(len(work), np.nan) if sessions is None else np.asarray(sessions, dtype="float64")
    if session.shape != (len(work),):
        raise BarValidationError(f"sessions must hold one number per bar ({len(work)}), got {session.shape}")
    work["session"] = session
    daily = work["symbol"].map(limits).astype("float64")
    within = pd.Series(
        [session_limits.get((s, i), np.nan) for s, i in zip(work["symbol"], work["interval"], strict=True)],
        index=work.index,
        dtype="float64",
    ).fillna(daily)

    usable = keyed & repeat.eq(0) & work["close"].gt(0)
    chain = (
        work.loc[usable, [*SERIES, "ts", "close", "session", ROW_ID]]
        .assign(daily=daily, within=within)
        .sort_values([*SERIES, "ts"], kind="stable")
    )
    may_lead = np.ones(len(work), dtype=bool)
    if failing_other is not None:
        may_lead[failing_other] = False
    series = (chain["symbol"] + "\x00" + chain["interval"]).to_numpy()
    starts = {f"{s}\x00{i}": ref for (s, i), ref in references.items()}
    moves, applied = _moves(
        series,
        chain["close"].to_numpy(dtype="float64"),
        chain["session"].to_numpy(dtype="float64"),
        chain["daily"].to_numpy(dtype="float64"),
        chain["within"].to_numpy(dtype="float64"),
        may_lead[chain[ROW_ID].to_numpy()],
        starts,
    )
    abs_move = pd.Series(np.nan, index=work.index, dtype="float64")
    abs_move.loc[chain.index] = moves
    move_limit = daily.copy()
    move_limit.loc[chain.index] = applied
    work["abs_move"] = abs_move
    work["move_limit"] = move_limit
    return work


def _moves(
    series: np.ndarray,
    close: np.ndarray,
    session: np.ndarray,
    daily: np.ndarray,
    within: np.ndarray,
    may_lead: np.ndarray,
    starts: Mapping[str, Reference],
) -> tuple[np.ndarray, np.ndarray]:
    """(|close / reference - 1|, the limit applied) per bar (sorted by series, time); the reference is the
    last close that passed. The limit is `within` when the bar and its reference share a session (both
    known and equal), `daily` otherwise.

    A bar passes when it has no reference yet, its limit is NaN, or the move is within the limit; it then
    becomes the reference if `may_lead` (it fails no other check). One pass, O(n).
    """
    out = np.full(close.size, np.nan)
    applied = daily.copy()
    reference, reference_session = math.nan, math.nan
    previous = None
    for i in range(close.size):
        if series[i] != previous:
            previous = series[i]
            reference, reference_session = starts.get(previous, (math.nan, math.nan))
        same_session = session[i] == reference_session and session[i] >= 0
        limit = within[i] if same_session else daily[i]
        applied[i] = limit
        passed = True
        if not math.isnan(reference):
            out[i] = abs(close[i] / reference - 1.0)
            passed = math.isnan(limit) or limit >= out[i]
        if passed and may_lead[i]:
            reference, reference_session = close[i], session[i]
    return out, applied


def _exception_message(info: dict | None) -> str | None:
    """GX reports an expectation that could not run in exception_info, flat or keyed by metric."""
    if not info:
        return None
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info["raised_exception"] else None
    messages = [
        str(v.get("exception_message"))
        for v in info.values()
        if isinstance(v, dict) and v.get("raised_exception")
    ]
    return "; ".join(messages) or None


def _failing_row_ids(raw: ExpectationSuiteValidationResult, suite: str) -> dict[str, np.ndarray]:
    """Row ids failing each expectation, keyed by its description; refuses partial or broken results."""
    failing: dict[str, np.ndarray] = {}
    for item in raw.results:
        reason = item.expectation_config.description
        error = _exception_message(item.exception_info)
        if error:
            raise BarValidationError(f"suite {suite!r}: expectation {reason!r} could not run: {error}")
        result = item.result or {}
        count = int(result.get("unexpected_count") or 0)
        ids = np.array([row[ROW_ID] for row in result.get("unexpected_index_list") or []], dtype="int64")
        if len(ids) != count or (not item.success and count == 0):
            raise BarValidationError(
                f"suite {suite!r}: expectation {reason!r} failed {count} rows but GX named {len(ids)}; "
                "only row-level (map) expectations can be used to quarantine rows"
            )
        failing[reason] = ids
    return failing


def _reasons_by_row(failing: dict[str, np.ndarray], order: tuple[str, ...]) -> dict[int, str]:
    """Row id -> '; '-joined reasons in suite order."""
    per_row: dict[int, list[str]] = {}
    for reason in order:
        for row_id in failing.get(reason, ()):
            per_row.setdefault(int(row_id), []).append(reason)
    return {row_id: "; ".join(reasons) for row_id, reasons in per_row.items()}


def _per_symbol(frame: pd.DataFrame, is_bad: np.ndarray) -> pd.DataFrame:
    """Input, clean and quarantined rows per series (symbol, interval)."""
    counts = (
        pd.DataFrame(
            {"symbol": frame["symbol"].to_numpy(), "interval": frame["interval"].to_numpy(), "bad": is_bad}
        )
        .groupby(SERIES, dropna=False, sort=True)["bad"]
        .agg(input="size", quarantined="sum")
        .reset_index()
    )
    counts["input"] = counts["input"].astype("int64")
    counts["quarantined"] = counts["quarantined"].astype("int64")
    counts["clean"] = counts["input"] - counts["quarantined"]
    return counts[[*SERIES, "input", "clean", "quarantined"]]


def _check_reconciles(
    n_input: int, clean: pd.DataFrame, quarantine: pd.DataFrame, per_symbol: pd.DataFrame
) -> None:
    """The invariant: every input row is either clean or quarantined, once, overall and per symbol."""
    if len(clean) + len(quarantine) != n_input:
        raise AssertionError(f"{n_input} input rows != {len(clean)} clean + {len(quarantine)} quarantined")
    if int(per_symbol["input"].sum()) != n_input or int(per_symbol["clean"].sum()) != len(clean):
        raise AssertionError(f"per-symbol counts do not add up to {n_input} input / {len(clean)} clean rows")


def _run_suite(
    work: pd.DataFrame, suite: str, now_utc: pd.Timestamp
) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """Row ids failing each expectation of `suite` on the frame with derived columns, and the suite order."""
    with _gx_lock:
        definition, order = _validation_definition(suite)
        raw = definition.run(
            batch_parameters={"dataframe": work},
            expectation_parameters={NOW_PARAMETER: now_utc},
            result_format=RESULT_FORMAT,
        )
    return _failing_row_ids(raw, suite), order


def validate_bars(
    bars: pd.DataFrame,
    *,
    move_limits: Mapping[str, float] | None = None,
    session_move_limits: Mapping[tuple[str, str], float] | None = None,
    sessions: np.ndarray | None = None,
    references: Mapping[tuple[str, str], Reference] | None = None,
    now: pd.Timestamp | None = None,
    suite: str = "bars",
) -> ValidationResult:
    """Validate a Bar-schema frame with the suite; split it into clean rows and quarantined rows with reasons.

    move_limits: symbol -> max |close / prev_close - 1| (fraction) from one session to the next (the daily
    limit); symbols not in it are not move-checked. session_move_limits: (symbol, interval) -> the limit
    within one session (intraday bars; default: the daily limit). sessions: one number per input row naming
    its trading session (-1: outside every session, quarantined; None: not checked). references: the
    (close, session) of the last clean bar before this frame per series, for validating new bars after
    already validated ones.
    now: bars stamped after it fail "ts <= now" (default: the current time); passed as the suite
    parameter "now". Duplicated (symbol, ts): the first copy by ingested_at is kept, later copies fail.
    """
    validated_at = pd.Timestamp.now(tz="UTC").as_unit("ns")
    now_utc = _utc(now, "now") if now is not None else validated_at
    limits = _checked_limits(move_limits)
    within = {key: float(v) for key, v in (session_move_limits or {}).items()}
    _checked_limits({f"{s}@{i}": v for (s, i), v in within.items()})
    starts = dict(references or {})
    frame = _bar_frame(bars)

    def derived(failing_other: np.ndarray | None = None) -> pd.DataFrame:
        return _with_derived_columns(frame, limits, within, sessions, starts, failing_other)

    failing, order = _run_suite(derived(), suite, now_utc)
    other = [ids for reason, ids in failing.items() if reason != MOVE_REASON]
    if any(ids.size for ids in other):
        # a bar that fails another check is no reference for the next bar's move: measure again
        failing_other = np.unique(np.concatenate(other))
        failing, order = _run_suite(derived(failing_other), suite, now_utc)
    reasons = _reasons_by_row(failing, order)

    n_input = len(frame)
    is_bad = np.zeros(n_input, dtype=bool)
    is_bad[list(reasons)] = True
    clean = frame.loc[~is_bad].sort_values([*SERIES, "ts"], kind="stable").reset_index(drop=True)
    quarantine = frame.loc[is_bad].copy()
    quarantine["reasons"] = pd.Series(reasons, dtype="object").reindex(quarantine.index)
    quarantine["validated_at"] = pd.Series(validated_at, index=quarantine.index, dtype="datetime64[ns, UTC]")
    quarantine = quarantine.sort_values([*SERIES, "ts"], kind="stable").reset_index(drop=True)
    per_symbol = _per_symbol(frame, is_bad)
    _check_reconciles(n_input, clean, quarantine, per_symbol)

    counts = {
        "input": n_input,
        "clean": len(clean),
        "quarantined": len(quarantine),
        "failures": {reason: len(failing.get(reason, ())) for reason in order},
    }
    parameters = {"now": now_utc, "move_limits": limits}
    if within:
        parameters["session_move_limits"] = {f"{s} {i}": v for (s, i), v in sorted(within.items())}
    failed = {k: v for k, v in counts["failures"].items() if v}
    level = logging.WARNING if failed else logging.INFO
    log.log(
        level,
        "suite %s: %d rows, %d clean, %d quarantined %s",
        suite,
        n_input,
        len(clean),
        len(quarantine),
        failed or "",
        extra={"suite": suite, "input": n_input, "clean": len(clean), "quarantined": len(quarantine)},
    )
    return ValidationResult(
        clean=clean,
        quarantine=quarantine,
        counts=counts,
        per_symbol=per_symbol,
        suite=suite,
        success=len(quarantine) == 0,
        validated_at=validated_at,
        parameters=parameters,
    )


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def write_report(result: ValidationResult, path: Path, *, max_rows: int = 50) -> Path:
    """Write a markdown report of one run: totals, per symbol, failures per expectation, quarantined rows.

    A directory path gets a file named by suite and validation time, so each run keeps its own report.
    """
    path = Path(path)
    stamp = result.validated_at or pd.Timestamp.now(tz="UTC")
    if path.is_dir():
        path = path / f"{result.suite}-{stamp:%Y%m%dT%H%M%S}Z.md"
    path.parent.mkdir(parents=True, exist_ok=True)

    counts = result.counts
    verdict = "PASSED" if result.success else f"FAILED: {counts['quarantined']} row(s) quarantined"
    lines = [
        f"# Bar validation report: suite `{result.suite}`",
        "",
        f"- validated at: {stamp.isoformat()}",
        f"- result: {verdict}",
    ]
    lines += [f"- parameter `{k}`: {_cell(v)}" for k, v in result.parameters.items()]
    lines += [
        "",
        "## Totals",
        "",
        *_table(["input", "clean", "quarantined"], [[counts[k] for k in ("input", "clean", "quarantined")]]),
    ]
    lines += [
        "",
        "## Per symbol",
        "",
        *_table(list(result.per_symbol.columns), result.per_symbol.to_numpy().tolist()),
    ]
    failures = [[reason, n] for reason, n in counts["failures"].items()]
    lines += ["", "## Failures per expectation", "", *_table(["expectation", "failing rows"], failures)]
    shown = result.quarantine.head(max_rows)
    lines += ["", f"## Quarantined rows (first {len(shown)} of {len(result.quarantine)})", ""]
    if len(shown):
        columns = ["symbol", "interval", "ts", "open", "high", "low", "close", "volume", "source", "reasons"]
        lines += _table(columns, shown[columns].astype("object").to_numpy().tolist())
    else:
        lines.append("None.")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("wrote validation report %s", path, extra={"suite": result.suite, "report": str(path)})
    return path
