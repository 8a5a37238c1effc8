"""The four data stages (ingest, validate, features, materialize), each reading and writing its files.

The CLI runs one stage at a time (and so does `dvc repro`, stage by stage); the Prefect flow in
`flows/data_pipeline.py` is what sequences them into a pipeline.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from finstream.config import Settings
from finstream.errors import ConfigError, NoDataError, SchemaError
from finstream.intervals import DAILY, INTERVALS, check_interval, session_move_limit
from finstream.schema import BAR_COLUMNS, BAR_KEY, empty_bars
from finstream.storage import (
    BarTable,
    Partition,
    data_lock,
    file_md5,
    write_parquet_atomic,
    write_text_atomic,
)
from finstream.symbols import parse_symbol, parse_symbols

log = logging.getLogger(__name__)


@dataclass
class SymbolIngest:
    """One series' ingest outcome: rows read from the provider, rows of the series stored after the run,
    and how many of the read rows were new keys or changed values (the rest were already stored as is)."""

    symbol: str
    interval: str
    provider: str | None
    read: int
    stored: int = 0
    new: int = 0
    changed: int = 0
    first: str | None = None
    last: str | None = None
    attempts: list[dict[str, object]] = field(default_factory=list)
    error: str | None = None


@dataclass
class IngestReport:
    """What an ingest run fetched and stored."""

    symbols: list[SymbolIngest]
    partitions_written: int
    path: str

    @property
    def failed(self) -> list[SymbolIngest]:
        return [s for s in self.symbols if s.error]

    @property
    def new_or_changed(self) -> int:
        return sum(s.new + s.changed for s in self.symbols)


def ingest_stage(
    settings: Settings,
    symbols: str | list[str] | None = None,
    source: str | None = None,
    start: date | None = None,
    end: date | None = None,
    resample: str | None = None,
    interval: str | None = None,
    tz: str | None = None,
    bar_time: str = "open",
) -> IngestReport:
    """Fetch each symbol through the router and upsert into the raw bar table (only changed partitions).

    interval: the bar length to fetch (default `ingest.interval`; a csv:PATH source defaults to what the
    file holds). resample: let a csv:PATH source aggregate its bars to this coarser interval (refused
    otherwise). tz: the zone of a CSV's naive timestamps (default: the market's); bar_time: whether a CSV's
    intraday rows are stamped by the bar's open (default) or close time.
    A symbol no provider can serve is reported, not fatal, unless no symbol at all could be fetched.
    """
    from finstream.sources.router import SourceRouter

    params = settings.ingest
    wanted = parse_symbols(symbols if symbols is not None else params.symbols)
    source = source or params.source
    start = start if start is not None else params.start
    end = end if end is not None else params.end
    if interval is not None:
        check_interval(interval)
    if start and end and start > end:
        raise NoDataError(f"start {start} is after end {end}")
    if source.startswith("csv:"):
        from finstream.sources.csvfile import CsvSource

        csv = CsvSource(settings, source[4:], resample, tz=tz or params.tz, bar_time=bar_time)
        router = SourceRouter(settings, sources={"csv": csv})
        source = "csv"
    else:
        if resample is not None:
            raise ConfigError("--resample applies to csv:PATH sources only (providers serve each interval)")
        router = SourceRouter(settings)
        interval = interval or params.interval
    results: list[SymbolIngest] = []
    frames: list[pd.DataFrame] = []
    for sym in wanted:
        try:
            routed = router.fetch(sym, start, end, source=source, interval=interval)
        except NoDataError as exc:
            log.error("%s", exc)
            results.append(SymbolIngest(sym.canonical, interval or "?", None, 0, error=str(exc)))
            continue
        bars = routed.bars
        frames.append(bars)
        local = bars["ts"].dt.tz_convert(sym.tz).dt.tz_localize(None)
        shown = "%Y-%m-%d" if bars["interval"].iloc[0] == DAILY else "%Y-%m-%d %H:%M"
        results.append(
            SymbolIngest(
                sym.canonical,
                str(bars["interval"].iloc[0]),
                routed.provider,
                len(bars),
                first=local.min().strftime(shown),
                last=local.max().strftime(shown),
                attempts=[asdict(a) for a in routed.attempts],
            )
        )
    if not frames:
        raise NoDataError("; ".join(r.error or "" for r in results))
    table = BarTable(settings.paths.raw_bars)
    with data_lock(settings.paths.data):
        upsert = table.upsert(pd.concat(frames, ignore_index=True))
    for result in results:
        counts = upsert.series.get((result.symbol, result.interval))
        if counts is not None:
            result.stored, result.new, result.changed = counts.stored, counts.new, counts.changed
    report = IngestReport(results, len(upsert.written), str(settings.paths.raw_bars))
    _write_json(settings.paths.reports / "ingest.json", asdict(report))
    return report


@dataclass
class ValidateReport:
    """Counts of a validation run over the partitions that changed since the last one:
    input rows = clean + quarantined, always."""

    input: int
    clean: int
    quarantined: int
    retained: int
    failures: dict[str, int]
    per_symbol: list[dict[str, object]]
    report_path: str
    partitions_validated: int = 0
    partitions_unchanged: int = 0
    session_gaps: dict[str, int] = field(default_factory=dict)


#: raw partition -> md5 of the raw file its validated and quarantined partitions were made from
VALIDATED_FROM = "validated_from.json"


def validate_stage(settings: Settings, now: pd.Timestamp | None = None) -> ValidateReport:
    """Run the Great Expectations suite over the raw bars that changed since the last run; write validated
    bars, quarantine and a report.

    A series is revalidated from its first changed partition to its end (a corrected bar changes the moves
    after it); the first of those bars is measured against the last clean bar before it. Partitions whose
    raw file is unchanged are not read, so the cost follows the new data, not the history.
    """
    from expectations.loader import BarValidationError, validate_bars, write_report

    paths = settings.paths
    raw_table = BarTable(paths.raw_bars)
    validated = BarTable(paths.validated_bars)
    quarantine = BarTable(paths.quarantine)
    manifest_path = paths.validated_bars / VALIDATED_FROM
    with data_lock(paths.data):
        parts = raw_table.partitions()
        if not parts:
            raise NoDataError(f"no data under {paths.raw_bars}: run `finstream ingest` first")
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        digests = {p: file_md5(raw_table.path(p)) for p in parts}
        todo = _partitions_to_validate(parts, manifest, digests)
        frame = pd.concat([raw_table.read_partition(p) for p in todo], ignore_index=True) if todo else None
        if frame is not None:
            limits, session_limits, sessions = _move_limits(settings, frame)
            references = _references(validated, todo)
            try:
                result = validate_bars(
                    frame,
                    move_limits=limits,
                    session_move_limits=session_limits,
                    sessions=sessions,
                    references=references,
                    now=now,
                )
            except BarValidationError as exc:
                raise SchemaError(f"cannot validate {paths.raw_bars}: {exc}") from exc
            retained = _write_validated(validated, quarantine, todo, result.clean, result.quarantine)
        gone = [key for key in manifest if key not in {p.relative for p in parts}]
        for key in gone:  # raw partition removed: so are its validated and quarantined bars
            (paths.validated_bars / key).unlink(missing_ok=True)
            (paths.quarantine / key).unlink(missing_ok=True)
        text = json.dumps({p.relative: digests[p] for p in parts}, indent=1, sort_keys=True) + "\n"
        if not manifest_path.exists() or manifest_path.read_text() != text:
            write_text_atomic(text, manifest_path)
    if frame is None:
        report = ValidateReport(0, 0, 0, 0, {}, [], "", 0, len(parts))
        log.info("validate: all %d partitions unchanged since the last validation", len(parts))
        _write_json(paths.reports / "validation.json", asdict(report))
        return report
    stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%SZ")
    report_path = write_report(result, paths.reports / "validation" / f"{stamp}.md")
    counts = result.counts
    report = ValidateReport(
        input=int(counts["input"]),
        clean=int(counts["clean"]),
        quarantined=int(counts["quarantined"]),
        retained=retained,
        failures={k: int(v) for k, v in counts.get("failures", {}).items()},
        per_symbol=result.per_symbol.to_dict(orient="records"),
        report_path=str(report_path),
        partitions_validated=len(todo),
        partitions_unchanged=len(parts) - len(todo),
        session_gaps=_session_gaps(result.clean),
    )
    _write_json(paths.reports / "validation.json", asdict(report))
    return report


def _partitions_to_validate(
    parts: list[Partition], manifest: dict[str, str], digests: dict[Partition, str]
) -> list[Partition]:
    """Per series, every partition from the first one whose raw file changed since its last validation."""
    todo: list[Partition] = []
    dirty_series: set[tuple[str, str]] = set()
    for part in parts:  # sorted by (interval, symbol, part): each series' partitions in time order
        if part.series in dirty_series or manifest.get(part.relative) != digests[part]:
            dirty_series.add(part.series)
            todo.append(part)
    return todo


def _move_limits(
    settings: Settings, frame: pd.DataFrame
) -> tuple[dict[str, float], dict[tuple[str, str], float], np.ndarray]:
    """Daily move limit per symbol, within-session limit per series, and each row's session number."""
    params = settings.validation
    limits: dict[str, float] = {}
    session_limits: dict[tuple[str, str], float] = {}
    sessions = np.full(len(frame), -1, dtype="int64")
    for (symbol, interval), rows in frame.groupby(["symbol", "interval"], sort=False):
        sym = parse_symbol(str(symbol))
        market = sym.exchange_market
        sessions[rows.index.to_numpy()] = market.session_of(rows["ts"])
        daily = params.move_limits.get(sym.limit_class)
        if daily is None:
            continue
        limits[sym.canonical] = daily
        session_limits[(sym.canonical, str(interval))] = session_move_limit(
            daily, str(interval), market, params.intraday_scale
        )
    return limits, session_limits, sessions


def _references(validated: BarTable, todo: list[Partition]) -> dict[tuple[str, str], tuple[float, int]]:
    """(close, session) of the last validated bar before each revalidated series' first partition."""
    out: dict[tuple[str, str], tuple[float, int]] = {}
    firsts: dict[tuple[str, str], Partition] = {}
    for part in todo:
        firsts.setdefault(part.series, part)
    for (symbol, interval), first in firsts.items():
        earlier = [
            p for p in validated.partitions(symbols=[symbol], intervals=[interval]) if p.part < first.part
        ]
        if not earlier:
            continue
        last = validated.read_partition(earlier[-1]).iloc[-1]
        session = parse_symbol(symbol).exchange_market.session_of(pd.Series([last["ts"]]))[0]
        out[(symbol, interval)] = (float(last["close"]), int(session))
    return out


def _write_validated(
    validated: BarTable,
    quarantine: BarTable,
    todo: list[Partition],
    clean: pd.DataFrame,
    bad: pd.DataFrame,
) -> int:
    """Replace the validated and quarantined partitions in `todo`; returns previously validated bars kept."""
    clean_parts = validated.split(clean)
    bad_parts = quarantine.split(bad[BAR_COLUMNS]) if not bad.empty else {}
    retained = 0
    for part in todo:
        rows = clean_parts.get(part, empty_bars())
        bad_rows = bad.iloc[0:0]
        if part in bad_parts:
            keys = bad_parts[part][BAR_KEY]
            bad_rows = bad.merge(keys, on=BAR_KEY, how="inner")
        rows, kept = _retain_previous(rows, bad_rows, validated.read_partition(part))
        retained += kept
        validated.write_partition(part, rows)
        quarantine.write_partition(part, bad_rows)
    return retained


def _retain_previous(
    clean: pd.DataFrame, quarantine: pd.DataFrame, previous: pd.DataFrame
) -> tuple[pd.DataFrame, int]:
    """Keep the previously validated bar for a (symbol, ts) whose new version was quarantined.

    Bad input never destroys good stored data: the bad row goes to quarantine with its reasons, and the
    last good version of that bar stays in the validated file.
    """
    if previous.empty or quarantine.empty:
        return clean, 0
    keys = BAR_KEY
    bad = quarantine[keys].drop_duplicates()
    keep = previous.merge(bad, on=keys, how="inner")
    keep = keep.merge(clean[keys], on=keys, how="left", indicator=True)
    keep = keep.loc[keep["_merge"] == "left_only", list(previous.columns)]
    if keep.empty:
        return clean, 0
    merged = pd.concat([clean, keep[list(clean.columns)]], ignore_index=True)
    merged = merged.sort_values(keys, kind="stable").reset_index(drop=True)
    log.warning("kept %d previously validated bars whose new version was quarantined", len(keep))
    return merged, len(keep)


def _session_gaps(clean: pd.DataFrame) -> dict[str, int]:
    """Missing intraday bars inside trading sessions, per series ("symbol interval"): reported, not fixed."""
    gaps: dict[str, int] = {}
    for (symbol, interval), rows in clean.groupby(["symbol", "interval"], sort=True):
        if interval == DAILY:
            continue
        market = parse_symbol(str(symbol)).exchange_market
        session = market.session_of(rows["ts"])
        step = INTERVALS[str(interval)]
        ts = rows["ts"].reset_index(drop=True)
        same = session[1:] == session[:-1]
        missing = ((ts.diff().iloc[1:] / step).round() - 1).clip(lower=0).to_numpy()
        count = int(missing[same & (session[1:] >= 0)].sum())
        if count:
            gaps[f"{symbol} {interval}"] = count
    return gaps


@dataclass
class FeaturesReport:
    """Rows of each interval's feature file, per symbol."""

    rows: int
    intervals: dict[str, dict[str, int]]  # interval -> symbol -> feature rows
    features: list[str]
    paths: dict[str, str]  # interval -> feature file


def features_stage(settings: Settings) -> FeaturesReport:
    """Compute every indicator of the spec over the validated bars, one feature file per bar interval.

    Indicators run over each series (symbol, interval) in time order; a feature file is replaced only when
    its content changed, so DVC sees no change when nothing did.
    """
    from finstream.feature_table import build_features
    from finstream.indicators import feature_names

    paths = settings.paths
    validated = BarTable(paths.validated_bars)
    counts: dict[str, dict[str, int]] = {}
    written: dict[str, str] = {}
    with data_lock(paths.data):
        intervals = sorted({p.interval for p in validated.partitions()}, key=lambda i: INTERVALS[i])
        if not intervals:
            raise NoDataError(
                f"no validated bars under {paths.validated_bars}: run `finstream validate` first"
            )
        for interval in intervals:
            frame = build_features(validated.read(intervals=[interval]))
            if frame.empty:
                log.warning(
                    "no %s feature rows: every symbol has fewer bars than the indicator warm-up", interval
                )
                continue
            target = paths.features_for(interval)
            if not target.exists() or not pd.read_parquet(target).equals(frame):
                write_parquet_atomic(frame, target)
            counts[interval] = {str(k): int(v) for k, v in frame.groupby("symbol").size().items()}
            written[interval] = str(target)
        if not counts:
            raise NoDataError(
                "no feature rows: every symbol has fewer validated bars than the indicator warm-up"
            )
        for stale in paths.features_dir.glob("*.parquet"):  # intervals with no validated bars any more
            if stale.stem not in counts:
                stale.unlink()
    rows = sum(sum(by_symbol.values()) for by_symbol in counts.values())
    report = FeaturesReport(rows, counts, feature_names(), written)
    _write_json(paths.reports / "features.json", asdict(report))
    return report


@dataclass
class MaterializeReport:
    """What was loaded into the online store, and a read-back of it."""

    online_store: str
    start: str
    end: str
    keys_written: int
    latest: list[dict[str, object]]


def materialize_stage(settings: Settings) -> MaterializeReport:
    """Register the Feast definitions and load the latest feature row per symbol into the online store."""
    from finstream import featurestore

    files = sorted(settings.paths.features_dir.glob("*.parquet"))
    if not files:
        raise NoDataError(f"no features under {settings.paths.features_dir}: run `finstream features` first")
    stamps = {f.stem: pd.read_parquet(f, columns=["symbol", "event_timestamp"]) for f in files}
    ts = pd.concat(stamps.values())
    start = ts["event_timestamp"].min().to_pydatetime()
    end = (ts["event_timestamp"].max() + pd.Timedelta(seconds=1)).to_pydatetime()
    store = featurestore.open_store(settings)
    featurestore.apply_definitions(store)
    written = featurestore.materialize(store, start, end)
    latest = []
    for interval, frame in sorted(stamps.items(), key=lambda item: INTERVALS.get(item[0], INTERVALS[DAILY])):
        refs = featurestore.view_refs(["price_features:close", "technical_features:rsi_14"], interval)
        symbols = sorted(frame["symbol"].unique())
        online = featurestore.online_features(store, symbols, features=refs, interval=interval)
        online.insert(1, "interval", interval)
        latest += online.to_dict(orient="records")
    report = MaterializeReport(settings.online_store_type, str(start), str(end), written, latest)
    _write_json(settings.paths.reports / "materialize.json", asdict(report))
    return report


def _write_json(path: Path, payload: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
