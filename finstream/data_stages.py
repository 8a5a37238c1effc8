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

import pandas as pd

from finstream.config import Settings
from finstream.errors import NoDataError, SchemaError
from finstream.storage import data_lock, read_bars, upsert_bars, write_parquet_atomic
from finstream.symbols import parse_symbol, parse_symbols

log = logging.getLogger(__name__)


@dataclass
class SymbolIngest:
    """One symbol's ingest outcome."""

    symbol: str
    provider: str | None
    rows: int
    first: str | None
    last: str | None
    attempts: list[dict[str, object]] = field(default_factory=list)
    error: str | None = None


@dataclass
class IngestReport:
    """What an ingest run fetched and stored."""

    symbols: list[SymbolIngest]
    stored_rows: int
    changed_rows: int
    path: str

    @property
    def failed(self) -> list[SymbolIngest]:
        return [s for s in self.symbols if s.error]


def ingest_stage(
    settings: Settings,
    symbols: str | list[str] | None = None,
    source: str | None = None,
    start: date | None = None,
    end: date | None = None,
    resample: str | None = None,
) -> IngestReport:
    """Fetch each symbol through the router and upsert into the raw bars file.

    A symbol no provider can serve is reported, not fatal, unless no symbol at all could be fetched.
    `resample="1d"` lets a csv:PATH source of intraday bars aggregate them to days (else it is refused).
    """
    from finstream.sources.router import SourceRouter

    params = settings.ingest
    wanted = parse_symbols(symbols if symbols is not None else params.symbols)
    source = source or params.source
    start = start if start is not None else params.start
    end = end if end is not None else params.end
    if start and end and start > end:
        raise NoDataError(f"start {start} is after end {end}")
    if source.startswith("csv:"):
        from finstream.sources.csvfile import CsvSource

        router = SourceRouter(settings, sources={"csv": CsvSource(settings, source[4:], resample)})
        source = "csv"
    else:
        router = SourceRouter(settings)
    results: list[SymbolIngest] = []
    frames: list[pd.DataFrame] = []
    for sym in wanted:
        try:
            routed = router.fetch(sym, start, end, source=source)
        except NoDataError as exc:
            log.error("%s", exc)
            results.append(SymbolIngest(sym.canonical, None, 0, None, None, error=str(exc)))
            continue
        bars = routed.bars
        frames.append(bars)
        results.append(
            SymbolIngest(
                sym.canonical,
                routed.provider,
                len(bars),
                str(bars["ts"].min().date()),
                str(bars["ts"].max().date()),
                [asdict(a) for a in routed.attempts],
            )
        )
    if not frames:
        raise NoDataError("; ".join(r.error or "" for r in results))
    with data_lock(settings.paths.data):
        stored, changed = upsert_bars(settings.paths.raw_bars, pd.concat(frames, ignore_index=True))
    report = IngestReport(results, len(stored), changed, str(settings.paths.raw_bars))
    _write_json(settings.paths.reports / "ingest.json", asdict(report))
    return report


@dataclass
class ValidateReport:
    """Counts of a validation run: input rows = clean + quarantined, always."""

    input: int
    clean: int
    quarantined: int
    retained: int
    failures: dict[str, int]
    per_symbol: list[dict[str, object]]
    report_path: str


def validate_stage(settings: Settings, now: pd.Timestamp | None = None) -> ValidateReport:
    """Run the Great Expectations suite over the raw bars; write validated bars, quarantine and a report."""
    from expectations.loader import BarValidationError, validate_bars, write_report

    paths = settings.paths
    with data_lock(paths.data):
        raw = read_bars(paths.raw_bars, required=True, hint="run `finstream ingest` first")
        limits = settings.validation.move_limits
        move_limits = {}
        for sym in raw["symbol"].unique():
            klass = parse_symbol(sym).limit_class
            if klass in limits:
                move_limits[sym] = limits[klass]
        try:
            result = validate_bars(raw, move_limits=move_limits, now=now)
        except BarValidationError as exc:
            raise SchemaError(f"cannot validate {paths.raw_bars}: {exc}") from exc
        previous = read_bars(paths.validated_bars)
        clean, retained = _retain_previous(result.clean, result.quarantine, previous)
        write_parquet_atomic(clean, paths.validated_bars)
        write_parquet_atomic(result.quarantine, paths.quarantine)
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
    )
    _write_json(paths.reports / "validation.json", asdict(report))
    return report


def _retain_previous(
    clean: pd.DataFrame, quarantine: pd.DataFrame, previous: pd.DataFrame
) -> tuple[pd.DataFrame, int]:
    """Keep the previously validated bar for a (symbol, ts) whose new version was quarantined.

    Bad input never destroys good stored data: the bad row goes to quarantine with its reasons, and the
    last good version of that bar stays in the validated file.
    """
    if previous.empty or quarantine.empty:
        return clean, 0
    keys = ["symbol", "ts"]
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


@dataclass
class FeaturesReport:
    """Rows and columns of the feature file."""

    rows: int
    symbols: dict[str, int]
    features: list[str]
    path: str


def features_stage(settings: Settings) -> FeaturesReport:
    """Compute every indicator of the spec over the validated bars and write the feature parquet."""
    from finstream.feature_table import build_features
    from finstream.indicators import feature_names

    paths = settings.paths
    with data_lock(paths.data):
        bars = read_bars(paths.validated_bars, required=True, hint="run `finstream validate` first")
        frame = build_features(bars)
        if frame.empty:
            raise NoDataError(
                "no feature rows: every symbol has fewer validated bars than the indicator warm-up"
            )
        write_parquet_atomic(frame, paths.features)
    counts = {str(k): int(v) for k, v in frame.groupby("symbol").size().items()}
    report = FeaturesReport(len(frame), counts, feature_names(), str(paths.features))
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

    features = settings.paths.features
    if not features.exists():
        raise NoDataError(f"no features at {features}: run `finstream features` first")
    ts = pd.read_parquet(features, columns=["symbol", "event_timestamp"])
    start = ts["event_timestamp"].min().to_pydatetime()
    end = (ts["event_timestamp"].max() + pd.Timedelta(seconds=1)).to_pydatetime()
    store = featurestore.open_store(settings)
    featurestore.apply_definitions(store)
    written = featurestore.materialize(store, start, end)
    symbols = sorted(ts["symbol"].unique())
    online = featurestore.online_features(
        store, symbols, features=["price_features:close", "technical_features:rsi_14"]
    )
    latest = online.to_dict(orient="records")
    report = MaterializeReport(settings.online_store_type, str(start), str(end), written, latest)
    _write_json(settings.paths.reports / "materialize.json", asdict(report))
    return report


def _write_json(path: Path, payload: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
